"""Run an evaluation protocol: featurize once, then score every split and every configuration (Sec. 5)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from inspect import signature
from typing import Any, Protocol

import numpy as np

from nirvis.datasets.base import Split
from nirvis.errors import NirvisError
from nirvis.evaluation.metrics import evaluate_identification, mean_std
from nirvis.pipeline import FeatureSet

__all__ = ["Transformer", "SplitConfig", "alignment_summary", "evaluate_splits", "EvaluationReport",
           "oracle_vis_features"]


class Transformer(Protocol):
    """A learned feature map (low-rank transform, ITML, LMNN, PCA): scikit-learn ``fit`` / ``transform``."""

    def fit(self, X: np.ndarray, y: np.ndarray) -> Any: ...

    def transform(self, X: np.ndarray) -> np.ndarray: ...


#: A configuration: ``None`` for raw features, else a function that fits a fresh transformer on a
#: split's training features ``X (n, d)``, person labels ``y (n,)`` and modalities (``"nir"``/``"vis"``)
#: and returns it fitted.
ConfigFactory = Callable[[np.ndarray, np.ndarray, np.ndarray], Transformer] | None


@dataclass(frozen=True)
class SplitConfig:
    """A configuration whose features depend on the split, e.g. ``H``: NIR probes hallucinated by the
    model trained on that split's training people (paper Sec. 3, 5.2).

    Attributes
    ----------
    features
        ``features(split)`` -> the :class:`FeatureSet` of that split's samples (training, gallery, probes).
    fit
        As a plain configuration: ``None`` or a factory fitted on the split's training features.
    """

    features: Callable[[Split], FeatureSet]
    fit: ConfigFactory = None


def oracle_vis_features(fs: FeatureSet) -> Callable[[Split], FeatureSet]:
    """``features(split)`` for the ``oracle-VIS`` row: every probe is replaced by the VIS frame taken at the same
    moment (:attr:`Sample.pair_id`), which is what a perfect hallucination would produce. It bounds what ``H``
    can gain with this network on this data. Needs a simultaneous VIS frame in ``fs`` for every probe (RAP3DF);
    a probe whose VIS frame failed to align fails likewise.

    Raises
    ------
    ValueError
        When some probe has no simultaneous VIS frame (e.g. CASIA NIR-VIS 2.0), naming one.
    """
    idx = fs.index()

    def features(split: Split) -> FeatureSet:
        missing = [p for p in split.probes if p.pair_id is None or p.pair_id not in idx]
        if missing:
            raise ValueError(f"oracle-VIS needs the VIS frame taken with each probe; {len(missing)} probes of "
                             f"{split.name} have none (e.g. {missing[0].capture_id})")
        rows = [idx[p.capture_id] for p in split.probes]
        pairs = [idx[p.pair_id] for p in split.probes]
        out = replace(fs, features=fs.features.copy(), ok=fs.ok.copy())
        out.features[rows], out.ok[rows] = fs.features[pairs], fs.ok[pairs]
        return out

    return features


@dataclass
class EvaluationReport:
    """Results in the JSON layout of ``nirvis evaluate --json``."""

    protocol: str
    results: list[dict[str, Any]]
    alignment: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "results": self.results, "alignment": self.alignment}


def alignment_summary(fs: FeatureSet) -> dict[str, Any]:
    """Fraction of NIR and VIS images aligned, and which cascade step found the faces."""
    out: dict[str, Any] = {}
    for mod in ("nir", "vis"):
        rows = [i for i, s in enumerate(fs.samples) if s.modality == mod]
        n_ok = int(fs.ok[rows].sum()) if rows else 0
        out[f"{mod}_rate"] = n_ok / len(rows) if rows else float("nan")
        out[f"{mod}_images"] = len(rows)
        out[f"{mod}_failed"] = len(rows) - n_ok
        out[f"{mod}_methods"] = dict(Counter(fs.methods[i] or "failed" for i in rows))
    out["failures"] = [f.__dict__ for f in fs.failures]
    return out


def _split_features(fs: FeatureSet, split: Split) -> tuple:
    """Gallery features/labels/ok-mask and probe features/labels/ok-mask. Failed images are kept, marked not
    ok: a failed probe is a miss, a failed gallery image cannot be matched, and in verification the pairs of
    either are counted and never accepted (:mod:`nirvis.evaluation.metrics`)."""
    gX, gok = fs.take(split.gallery)
    g_labels = np.array([s.person for s in split.gallery])
    pX, pok = fs.take(split.probes)
    p_labels = np.array([s.person for s in split.probes])
    return gX, g_labels, gok, pX, p_labels, pok


def evaluate_splits(protocol: str, splits: Sequence[Split], fs: FeatureSet,
                    configs: dict[str, ConfigFactory | SplitConfig] | None = None,
                    progress: Callable[[str], None] | None = None, on_error: str = "raise") -> EvaluationReport:
    """Score every configuration on every split.

    Parameters
    ----------
    protocol
        Name written in the report.
    splits
        The protocol's splits; every sample they name must be in ``fs``.
    fs
        Features of the samples (failed ones included, marked not ok).
    configs
        ``{"raw": None, "LR": fit_function, "H": SplitConfig(...), ...}``; default raw only. A fit function
        gets the split's aligned training samples: features, person labels, modalities. A
        :class:`SplitConfig` brings its own features for each split.
    on_error
        ``"raise"``: a configuration that fails (its fit, its transform, or non-finite features) raises
        ``ValueError`` naming the split and configuration. ``"record"``: its row gets ``"error"`` (that
        message) and NaN metrics, and the other configurations go on (the command line does this).
    """
    if on_error not in ("raise", "record"):
        raise ValueError(f"on_error must be 'raise' or 'record', got {on_error!r}")
    configs = configs if configs is not None else {"raw": None}
    results = []
    for name, config in configs.items():
        try:
            results.append(_evaluate_config(protocol, splits, fs, name, config, progress))
        except _ConfigError as exc:
            if on_error == "raise":
                raise ValueError(str(exc)) from exc.__cause__
            nan = float("nan")
            results.append({"config": name, "error": str(exc), "rank1_mean": nan, "rank1_std": nan,
                            "vr_far_1e-2": nan, "vr_far_1e-2_std": nan, "vr_far_1e-3": nan, "vr_far_1e-3_std": nan,
                            "n_probes": 0, "n_failed_alignment": 0, "n_gallery_failed": 0, "n_splits": len(splits),
                            "splits": []})
    return EvaluationReport(protocol, results, alignment_summary(fs))


def _transform(model: Transformer, X: np.ndarray, samples: Sequence) -> np.ndarray:
    """``model.transform(X)``, with each row's modality when the transform takes it (``MS``, shifted ``LR``)."""
    if "modality" in signature(model.transform).parameters:
        return model.transform(X, modality=np.array([s.modality for s in samples]))
    return model.transform(X)


class _ConfigError(Exception):
    """One configuration failed on one split (its message names both)."""


def _evaluate_config(protocol: str, splits: Sequence[Split], fs: FeatureSet, name: str,
                     config: ConfigFactory | SplitConfig, progress: Callable[[str], None] | None) -> dict[str, Any]:
    """The result row of one configuration over every split."""
    per_split = []
    for split in splits:
        factory, sfs = config, fs
        if isinstance(config, SplitConfig):
            factory, sfs = config.fit, config.features(split)
        gX, gy, gok, pX, py, pok = _split_features(sfs, split)
        if not gok.any():
            raise ValueError(f"{protocol} split {split.name}: the gallery is empty ({len(split.gallery)} VIS "
                             "gallery image(s), none aligned); nothing to identify against")
        try:
            if factory is not None:
                tX, tok = sfs.take(split.train)
                tr_ok = [s for s, o in zip(split.train, tok) if o]
                model = factory(tX[tok], np.array([s.person for s in tr_ok]),
                                np.array([s.modality for s in tr_ok]))
                gX = np.where(gok[:, None], _transform(model, np.nan_to_num(gX), split.gallery), np.nan)
                pX = np.where(pok[:, None], _transform(model, np.nan_to_num(pX), split.probes), np.nan)
            r = evaluate_identification(pX, py, gX, gy, pok, gallery_ok=gok)
        except (ValueError, NirvisError) as exc:
            raise _ConfigError(f"{protocol} split {split.name}, configuration {name!r}: {exc}") from exc
        per_split.append({"split": split.name, "rank1": r.rank1, "rank5": r.rank5, "vr_far_1e-2": r.vr_far_1e2,
                          "vr_far_1e-3": r.vr_far_1e3, "n_probes": r.n_probes, "n_failed": r.n_failed,
                          "n_gallery": r.n_gallery, "n_gallery_failed": r.n_gallery_failed,
                          "cmc": [float(c) for c in r.cmc], "roc": r.roc})
        if progress:
            progress(f"{name} {split.name}: rank-1 {100 * r.rank1:.1f}%")
    r1 = mean_std([p["rank1"] for p in per_split])
    v2 = mean_std([p["vr_far_1e-2"] for p in per_split])
    v3 = mean_std([p["vr_far_1e-3"] for p in per_split])
    return {
        "config": name, "rank1_mean": r1[0], "rank1_std": r1[1],
        "vr_far_1e-2": v2[0], "vr_far_1e-2_std": v2[1], "vr_far_1e-3": v3[0], "vr_far_1e-3_std": v3[1],
        "n_probes": int(sum(p["n_probes"] for p in per_split)),
        "n_failed_alignment": int(sum(p["n_failed"] for p in per_split)),
        "n_gallery_failed": int(sum(p["n_gallery_failed"] for p in per_split)),
        "n_splits": len(per_split), "splits": per_split,
    }
