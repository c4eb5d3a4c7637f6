"""The gallery's decision threshold: from an evaluation's ROC, or a built-in default.

A probe is declared to be its best-matching person when that cosine score is at least the threshold.

**From an evaluation.** ``nirvis evaluate --json`` keeps, for each configuration and split, the ROC sampled
at the log-spaced FARs of :data:`nirvis.evaluation.metrics.FAR_GRID` (1e-5 .. 1): for each target FAR, the
threshold of the operating point with the highest verification rate whose FAR does not exceed the target.
:func:`threshold_from_results` takes, in each split, the grid entry with the **largest target FAR not above
the requested FAR** (no interpolation: the threshold is never looser than the request), and averages the
thresholds over the splits. Splits where no operating point reaches that FAR (threshold ``inf``) are left
out and counted.

**Default.** A new gallery of a plain pipeline (no embedding, no hallucination model) whose embedder is in
:data:`DEFAULT_THRESHOLDS` starts with that threshold; any other gallery starts with none, and
identification then ranks without deciding (``decision.person`` is ``null``) until a threshold is set.

The FAR is per comparison: in a gallery of ``N`` people a stranger is accepted as *someone* with a
probability of up to about ``N x FAR``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from nirvis.gallery.errors import GalleryError, PipelineMismatchError

__all__ = ["DEFAULT_THRESHOLDS", "ThresholdChoice", "threshold_from_results", "default_threshold"]


#: Built-in thresholds at FAR = 1%, keyed by embedder fingerprint: ``nirvis evaluate --json`` on RAP3DF (10
#: splits, NIR probes against a VIS gallery, configuration ``raw``), chosen by :func:`threshold_from_results`.
DEFAULT_THRESHOLDS: dict[str, dict[str, Any]] = {
    "dlib-resnet128:ff355b2f75": {
        "threshold": 0.9203, "far": 0.01,
        "source": "built-in: nirvis evaluate on RAP3DF (10 splits, raw, dlib), FAR 1%, mean over splits"},
    "edgeface-xs:21cc6a0ee8": {
        "threshold": 0.1966, "far": 0.01,
        "source": "built-in: nirvis evaluate on RAP3DF (10 splits, raw, edgeface-xs), FAR 1%, mean over splits"},
}


def default_threshold(record: dict[str, Any]) -> dict[str, Any]:
    """The threshold a new gallery of pipeline ``record`` starts with (``threshold`` ``None`` when none is
    known for it)."""
    if record.get("embedding") or record.get("hallucination"):
        return {"threshold": None, "far": None, "source": None}
    d = DEFAULT_THRESHOLDS.get(record.get("embedder_fingerprint", ""))
    return dict(d) if d else {"threshold": None, "far": None, "source": None}


@dataclass(frozen=True)
class ThresholdChoice:
    """A threshold taken from an evaluation.

    Attributes
    ----------
    threshold
        Mean over splits of each split's threshold (cosine score).
    far
        The FAR asked for.
    far_target
        The grid FAR used (the largest not above ``far``).
    far_measured, vr
        Mean over splits of the operating points' actual FAR and verification rate.
    config
        The configuration (row) of the results used.
    n_splits, n_skipped
        Splits averaged, and splits left out because no operating point reached the FAR.
    source
        The results file.
    """

    threshold: float
    far: float
    far_target: float
    far_measured: float
    vr: float
    config: str
    n_splits: int
    n_skipped: int
    source: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _config_kind(name: str) -> tuple[bool, str | None]:
    """``(hallucinated, embedding part)`` of a results row name: ``raw`` -> (False, None); ``H`` -> (True, None);
    ``H+LR`` -> (True, "LR"); ``saved:m`` -> (False, "saved:m"); ``LR`` -> (False, "LR")."""
    for prefix in ("H(id)", "H"):
        if name == prefix:
            return True, None
        if name.startswith(prefix + "+"):
            return True, name[len(prefix) + 1:]
    return False, (None if name == "raw" else name)


def _check_config(name: str, record: dict[str, Any], where: str) -> None:
    hal, emb = _config_kind(name)
    problems = []
    if hal and not record.get("hallucination"):
        problems.append("it hallucinates the NIR probes, and this gallery has no hallucination model")
    if not hal and record.get("hallucination"):
        problems.append("it does not hallucinate the NIR probes, and this gallery does")
    if emb is not None and not record.get("embedding"):
        problems.append(f"it applies an embedding ({emb}), and this gallery has none")
    if emb is None and record.get("embedding"):
        problems.append("it applies no embedding model, and this gallery applies one")
    if emb is not None and emb.startswith("saved:") and record.get("embedding"):
        given = emb[len("saved:"):]
        for ext in (".json", ".npz"):
            given = given.removesuffix(ext)
        mine = record["embedding"]["file"].rsplit("/", 1)[-1].removesuffix(".json")
        if given != mine:
            problems.append(f"its saved embedding {given!r} is not the gallery's ({mine!r})")
    if problems:
        raise PipelineMismatchError(f"{where}: configuration {name!r} was measured with another pipeline than the "
                                    f"gallery's: {'; '.join(problems)}. Pick the matching row with --config")


def _provenance(results: dict[str, Any], row: dict[str, Any]) -> str | None:
    """The embedder fingerprint the results record: ``{"embedder": {"name", "fingerprint"}}`` (what
    ``nirvis evaluate --json`` writes), or an ``embedder_fingerprint`` key; ``None`` when they record none."""
    for d in (row, results):
        emb = d.get("embedder")
        if isinstance(emb, dict) and isinstance(emb.get("fingerprint"), str) and emb["fingerprint"]:
            return emb["fingerprint"]
        v = d.get("embedder_fingerprint")
        if isinstance(v, str) and v:
            return v
    return None


def threshold_from_results(results: Any, far: float, record: dict[str, Any], config: str | None = None,
                           source: str = "results") -> ThresholdChoice:
    """The threshold at ``far`` from ``nirvis evaluate --json`` output (see the module docstring).

    Parameters
    ----------
    results
        The parsed JSON: ``{"results": [{"config": ..., "splits": [{"roc": {...}}, ...]}, ...],
        "embedder": {"name", "fingerprint"}, ...}`` (the embedder is checked when recorded).
    far
        Target false-accept rate, in (0, 1].
    record
        The gallery's pipeline record: the configuration must match it (hallucination, embedding), and so must
        the embedder's fingerprint when the results record it.
    config
        The row to use; default: the only row, else ``raw`` for a plain gallery.
    source
        Name of the results (file) for messages.

    Raises
    ------
    GalleryError
        For a file that is not evaluation output, has no ROC (written before nirvis kept it), has no such
        configuration, or no split reaching ``far``.
    PipelineMismatchError
        When the results were measured with another embedder or configuration than the gallery's pipeline.
    """
    if not (isinstance(far, (int, float)) and not isinstance(far, bool) and math.isfinite(far) and 0 < far <= 1):
        raise GalleryError(f"--far {far!r}: must be a false-accept rate in (0, 1], e.g. 0.01")
    rows = results.get("results") if isinstance(results, dict) else None
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) and "config" in r for r in rows):
        raise GalleryError(f"{source}: not the output of `nirvis evaluate --json` (no 'results' list of configurations)")
    names = [str(r["config"]) for r in rows]
    if config is None:
        if len(rows) == 1:
            config = names[0]
        elif not record.get("embedding") and not record.get("hallucination") and "raw" in names:
            config = "raw"
        else:
            raise GalleryError(f"{source}: holds configurations {', '.join(names)}; say which one matches the "
                               "gallery's pipeline with --config NAME")
    if config not in names:
        raise GalleryError(f"{source}: no configuration {config!r}; it holds {', '.join(names)}")
    row = rows[names.index(config)]
    if "error" in row:
        raise GalleryError(f"{source}: configuration {config!r} failed in that evaluation ({row['error']})")
    _check_config(config, record, source)
    fp = _provenance(results, row)
    if fp is not None and fp != record.get("embedder_fingerprint"):
        raise PipelineMismatchError(f"{source}: measured with embedder {fp}, but the gallery uses "
                                    f"{record.get('embedder_fingerprint')}; scores of different networks are not "
                                    "comparable")
    splits = row.get("splits")
    if not isinstance(splits, list) or not splits:
        raise GalleryError(f"{source}: configuration {config!r} has no per-split results")
    thresholds, fars, vrs, target, skipped = [], [], [], None, 0
    for s in splits:
        roc = s.get("roc") if isinstance(s, dict) else None
        if not isinstance(roc, dict) or not all(isinstance(roc.get(k), list) for k in ("far_target", "threshold")):
            raise GalleryError(f"{source}: split {s.get('split', '?') if isinstance(s, dict) else '?'} of "
                               f"{config!r} has no ROC (written by an older nirvis, or a split without impostor "
                               "pairs); run `nirvis evaluate --json` again")
        ft = np.asarray(roc["far_target"], dtype=np.float64)
        ok = np.flatnonzero(ft <= far * (1 + 1e-9))
        if ok.size == 0:
            raise GalleryError(f"--far {far:g}: below the smallest FAR the results sample ({ft.min():g})")
        i = int(ok[np.argmax(ft[ok])])
        target = float(ft[i])
        t = float(roc["threshold"][i])
        if not math.isfinite(t):
            skipped += 1
            continue
        thresholds.append(t)
        fars.append(float(roc["far"][i]) if "far" in roc else float("nan"))
        vrs.append(float(roc["vr"][i]) if "vr" in roc else float("nan"))
    if not thresholds:
        raise GalleryError(f"{source}: in no split of {config!r} does any threshold reach FAR {far:g} (too few "
                           "impostor pairs); ask for a larger --far")
    return ThresholdChoice(threshold=float(np.mean(thresholds)), far=float(far), far_target=float(target),
                           far_measured=float(np.mean(fars)), vr=float(np.mean(vrs)), config=config,
                           n_splits=len(thresholds), n_skipped=skipped, source=source)
