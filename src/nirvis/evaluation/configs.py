"""Evaluation configurations: which learned embedding, if any, is applied to the features.

The row names of the evaluation table follow the paper: ``raw`` (plain cosine), ``LR`` (low-rank
embedding, Sec. 4, its settings chosen on held-out training people), and the baselines ``pca``, ``itml``,
``lmnn``; ``MS`` is the two-means yardstick (each modality's training mean removed) and ``LR-fixed`` the
transform with fixed settings. Every learned embedding is fitted on the split's training people only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nirvis.evaluation.protocols import ConfigFactory

__all__ = ["CONFIG_NAMES", "DEFAULT_PARAMS", "embedding_fitter", "fit_embedding"]

#: embedding method -> row name in the evaluation table
CONFIG_NAMES = {"none": "raw", "ms": "MS", "pca": "pca", "lowrank": "LR", "lowrank-fixed": "LR-fixed", "itml": "itml",
                "lmnn": "lmnn"}

#: Defaults used by ``nirvis evaluate`` / ``fit-embedding``. The low-rank transform stops early on
#: held-out *training* people (NIR->VIS rank-1), never on the test people.
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "none": {},
    # center=False everywhere: on dlib features the training mean carries identity-neutral signal that
    # cosine matching relies on; subtracting it cost rank-1 on RAP3DF (docs/BENCHMARKS.md). The baselines
    # get the same setting as the low-rank transform, so that the rows differ only by what is learned.
    "pca": {"center": False},
    # lowrank: LowRankTransformCV's own defaults (shift or not, full or 64-D PCA, uncentred, early stopping).
    "lowrank-fixed": {"center": False, "early_stopping": True, "validation_fraction": 0.2, "max_iter": 200,
                      "n_iter_no_change": 20, "random_state": 0},
    # metric-learn's default of 20 * n_classes**2 pairs makes ITML take hours at 90 classes (its sweeps
    # loop in Python over the pairs); it is replaced by a fixed 5000 pairs of each kind.
    "itml": {"center": False, "n_constraints": 5000, "max_iter": 50, "random_state": 0},
    "lmnn": {"center": False, "max_iter": 50, "random_state": 0},
}


def fit_embedding(method: str, X: np.ndarray, y: np.ndarray, modality: np.ndarray | None = None,
                  **params: Any):
    """A fitted embedding of ``method`` (see :func:`nirvis.embedding.make_embedding`) with the defaults above."""
    from inspect import signature

    from nirvis.embedding import make_embedding

    known = make_embedding(method).get_params()
    defaults = {k: v for k, v in DEFAULT_PARAMS.get(method, {}).items() if k in known}
    model = make_embedding(method, **{**defaults, **params})  # a misspelt parameter is refused there
    if modality is not None and "modality" in signature(model.fit).parameters:
        return model.fit(X, y, modality=modality)
    return model.fit(X, y)


def embedding_fitter(method: str, **params: Any) -> ConfigFactory:
    """A configuration for :func:`~nirvis.evaluation.protocols.evaluate_splits` (``None`` for ``"none"``)."""
    if method == "none":
        return None

    def fit(X: np.ndarray, y: np.ndarray, modality: np.ndarray):
        if len(X) < 2:
            raise ValueError(f"{method}: {len(X)} aligned training samples; this split has nothing to learn from "
                             "(for a folder dataset, give --train-data)")
        return fit_embedding(method, X, y, modality, **params)

    return fit
