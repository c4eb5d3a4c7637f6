"""The embedder interface: a frozen VIS face network behind a small contract, plus a registry."""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from nirvis.faces.types import Face

__all__ = ["Embedder", "register_embedder", "get_embedder", "available_embedders", "l2_normalize"]


class Embedder(ABC):
    """A frozen face network: aligned faces in, L2-normalised float32 features out.

    Subclasses set :attr:`name` and :attr:`dim`, implement :meth:`embed`, and return every setting that
    changes the output from :meth:`config`, so that :attr:`fingerprint` identifies the features.
    NIR (gray) faces are given to RGB networks as the gray channel replicated 3 times (:meth:`Face.rgb`).
    """

    name: str = "embedder"
    dim: int = 0
    #: The landmark model the faces must be aligned with (:attr:`nirvis.faces.align.AlignConfig.landmark_model`):
    #: ``"shape5"`` for every network cut from dlib's 5 points; ``"shape68"`` for one cut from ArcFace's
    #: keypoints. :class:`~nirvis.pipeline.Recognizer` aligns with it.
    landmark_model: str = "shape5"

    @abstractmethod
    def embed(self, faces: Sequence[Face]) -> np.ndarray:
        """Features of ``faces``, shape ``(n, dim)``, float32, each row of unit L2 norm."""

    def config(self) -> dict[str, Any]:
        """Every setting that changes the features (weights file digest, preprocessing, ...)."""
        return {}

    def crops(self, faces: Sequence[Face]) -> list[np.ndarray]:
        """What the network sees of each face, before its own normalisation: ``(h, w, 3)`` uint8 RGB each (each
        network cuts its own crop from the aligned face and its landmarks; by default the aligned face as is).
        ``nirvis align --embedder`` draws these, to check a network's alignment by eye."""
        return [np.ascontiguousarray(f.rgb()) for f in faces]

    @property
    def fingerprint(self) -> str:
        """Short stable id of this embedder and its configuration, e.g. ``dlib-resnet128:3f2a9c01d4``."""
        blob = json.dumps({"name": self.name, "dim": self.dim, **self.config()}, sort_keys=True, default=str)
        return f"{self.name}:{hashlib.sha256(blob.encode()).hexdigest()[:10]}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim})"


_REGISTRY: dict[str, Callable[..., Embedder]] = {}


def register_embedder(name: str) -> Callable[[Callable[..., Embedder]], Callable[..., Embedder]]:
    """Class decorator: make an embedder constructible by name with :func:`get_embedder`."""

    def deco(factory: Callable[..., Embedder]) -> Callable[..., Embedder]:
        _REGISTRY[name] = factory
        return factory

    return deco


#: Built-in embedders, imported only when asked for by name (keeps ``import nirvis`` light).
_BUILTINS: dict[str, str] = {"dlib": "nirvis.features.dlib_resnet", "dlib-noflip": "nirvis.features.dlib_resnet",
                             "onnx": "nirvis.features.onnx",
                             # known ONNX networks (nirvis.features.models.KNOWN_MODELS), files found by name
                             "edgeface-xs": "nirvis.features.models", "edgeface-xxs": "nirvis.features.models"}


def available_embedders() -> list[str]:
    return sorted(set(_REGISTRY) | set(_BUILTINS))


def get_embedder(name: str, **kwargs: Any) -> Embedder:
    """Build the embedder registered as ``name``; an unknown name lists the valid ones."""
    if name not in _REGISTRY and name in _BUILTINS:
        importlib.import_module(_BUILTINS[name])  # registers it
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown embedder {name!r}; available: {', '.join(available_embedders())}") from None
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as exc:  # e.g. "onnx" without its model file
        raise ValueError(f"embedder {name!r} cannot be built from {kwargs or 'no arguments'}: {exc}; give its "
                         f"arguments (get_embedder({name!r}, ...)) or build {factory.__name__} yourself") from None
    return factory(**kwargs)


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm, as float32."""
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(n, eps)).astype(np.float32)
