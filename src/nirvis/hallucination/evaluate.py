"""Hallucination in the evaluation protocol: the configurations ``H`` and ``H+LR`` (paper Sec. 5.2).

The NIR faces of a split (its training people's and its probes) are hallucinated by the model trained
on that split's training people, then embedded; VIS faces are embedded as they are. A model that has
seen any of the split's test people is refused.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from nirvis.datasets.base import Split
from nirvis.errors import NirvisError
from nirvis.hallucination.blend import BlendConfig
from nirvis.hallucination.infer import HallucinatedFaces, Hallucinator
from nirvis.hallucination.io import CONFIG, HallucinationModel, load_model
from nirvis.pipeline import FeatureSet, Recognizer

__all__ = ["LeakError", "model_for_split", "check_model_people", "models_for_splits", "hallucinated_features"]


class LeakError(NirvisError, ValueError):
    """A hallucination model was trained on people of the split it would be evaluated on."""


def check_model_people(model: HallucinationModel | dict, split: Split, source: str = "model") -> None:
    """Raise :class:`LeakError` if ``model`` (or a model's ``config.json`` content) was trained (or validated)
    on any test person of ``split``."""
    meta = model.meta if isinstance(model, HallucinationModel) else model
    seen = set(meta.get("store_people") or []) | set(meta.get("train_people") or [])
    if not seen:
        raise LeakError(f"{source}: records no training people, so it cannot be shown to exclude the test people "
                        f"of {split.name}")
    leaked = sorted(seen & set(split.test_people))
    if leaked:
        raise LeakError(f"{source}: trained on {len(leaked)} test people of {split.name} (e.g. {leaked[:3]}); "
                        "train one model per split on its training people (nirvis train-hallucination --split)")


def model_for_split(path: str | os.PathLike, split: Split) -> Path:
    """The model folder for ``split``: ``path/<split name>/`` when it exists, else ``path`` itself.

    Raises
    ------
    NirvisError
        If neither is a model folder (naming both places looked at).
    """
    path = Path(path)
    per_split = path / split.name
    if (per_split / CONFIG).is_file():
        return per_split
    if (path / CONFIG).is_file():
        return path
    raise NirvisError(f"no hallucination model for split {split.name}: neither {per_split}/{CONFIG} nor {path}/{CONFIG} "
                      "exists")


def models_for_splits(path: str | os.PathLike, splits: list[Split]) -> dict[str, Path]:
    """The model folder of every split (:func:`model_for_split`), each checked against its split's test people
    from its ``config.json`` alone (no weights read): a missing or leaking model is found before any work.

    Raises
    ------
    NirvisError, LeakError
        Naming the split and the folder.
    """
    from nirvis._io import read_json

    out = {}
    for split in splits:
        folder = model_for_split(path, split)
        meta = read_json(folder / CONFIG, NirvisError)
        if not isinstance(meta, dict):
            raise NirvisError(f"{folder / CONFIG}: not a hallucination model config")
        check_model_people(meta, split, str(folder))
        out[split.name] = folder
    return out


def hallucinated_features(rec: Recognizer, base: FeatureSet, model_of: Callable[[Split], str | os.PathLike],
                          *, blend: BlendConfig | None = BlendConfig(), method: str = "fft",
                          progress: Callable[[int], None] | None = None) -> Callable[[Split], FeatureSet]:
    """``features(split)`` for :class:`~nirvis.evaluation.protocols.SplitConfig`: ``base`` with the rows of
    the split's NIR samples (training and probes) replaced by features of their hallucinated faces.

    ``model_of(split)`` gives the model folder; the model is checked against the split's test people.
    Results are kept per split name, so ``H`` and ``H+LR`` hallucinate once. Features are cached by
    ``rec.cache`` under the hallucinator's fingerprint. Runs in this process: the CNNs use torch's threads
    (worker processes would each receive a copy of the model and recompute its kernel spectra).
    """
    memo: dict[str, FeatureSet] = {}

    def features(split: Split) -> FeatureSet:
        if split.name not in memo:
            path = Path(model_of(split))
            model = load_model(path)
            check_model_people(model, split, str(path))
            hal = HallucinatedFaces(Hallucinator(model, blend, method))
            hrec = Recognizer(rec.embedder, align=rec.aligner.config, cache=rec.cache, nir_transform=hal)
            nir = [s for s in (*split.train, *split.probes) if s.modality == "nir"]
            memo[split.name] = base.updated(hrec.featurize(nir, progress=progress))
        return memo[split.name]

    return features
