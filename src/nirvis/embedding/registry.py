"""The embeddings by name: an explicit registry (STYLE habit 4) and :func:`make_embedding`."""

from __future__ import annotations

from typing import Any

from nirvis.embedding.baselines import IdentityEmbedding, ITMLEmbedding, LMNNEmbedding, ModalityShift, PCAEmbedding
from nirvis.embedding.lowrank import LowRankTransform, LowRankTransformCV

__all__ = ["EMBEDDINGS", "available_embeddings", "make_embedding", "method_name"]

#: method name -> estimator class. ``lowrank`` chooses its hyper-parameters on held-out training people
#: (:class:`LowRankTransformCV`); ``lowrank-fixed`` is the transform with the settings it is given.
EMBEDDINGS: dict[str, type] = {
    "none": IdentityEmbedding,
    "ms": ModalityShift,
    "pca": PCAEmbedding,
    "lowrank": LowRankTransformCV,
    "lowrank-fixed": LowRankTransform,
    "itml": ITMLEmbedding,
    "lmnn": LMNNEmbedding,
}


def available_embeddings() -> list[str]:
    """The names :func:`make_embedding` accepts."""
    return list(EMBEDDINGS)


def make_embedding(method: str, **params: Any):
    """A new (unfitted) embedding by name.

    Parameters
    ----------
    method : {"none", "ms", "pca", "lowrank", "lowrank-fixed", "itml", "lmnn"}
    **params
        Hyper-parameters of that estimator (e.g. ``n_components``, ``max_iter``).

    Raises
    ------
    ValueError
        For an unknown name (the message lists the valid ones) or an unknown parameter (the
        message lists the estimator's parameters).
    """
    try:
        cls = EMBEDDINGS[method]
    except (KeyError, TypeError):
        raise ValueError(f"unknown embedding method {method!r}; valid: {', '.join(EMBEDDINGS)}") from None
    valid = cls().get_params()
    bad = sorted(set(params) - set(valid))
    if bad:
        raise ValueError(f"{cls.__name__} ({method!r}) has no parameter {', '.join(bad)}; "
                         f"valid: {', '.join(sorted(valid)) or '(none)'}")
    return cls(**params)


def method_name(model: Any) -> str:
    """The registry name of an embedding estimator, e.g. ``"lowrank"`` for a LowRankTransformCV."""
    for name, cls in EMBEDDINGS.items():
        if type(model) is cls:
            return name
    raise ValueError(f"{type(model).__name__} is not a nirvis embedding estimator; valid: "
                     f"{', '.join(c.__name__ for c in EMBEDDINGS.values())}")
