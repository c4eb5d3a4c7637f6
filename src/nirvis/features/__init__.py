"""Frozen VIS face networks behind one small interface (paper Sec. 3: the network is never retrained).

- :class:`Embedder` (:mod:`~nirvis.features.base`): ``embed(faces) -> (n, dim)`` unit-length features, with a
  ``fingerprint`` that keys caches and saved embeddings; :func:`register_embedder` / :func:`get_embedder`.
- :class:`DlibResNetEmbedder` (:mod:`~nirvis.features.dlib_resnet`): the default, dlib's 128-D ResNet.
- :class:`OnnxEmbedder`, :class:`OnnxPreprocess` (:mod:`~nirvis.features.onnx`): any ONNX face network.
- :mod:`~nirvis.features.models`: the known ONNX networks (EdgeFace-XS, -XXS) by name, with checksums, licences
  and where their files are found (``get_embedder("edgeface-xs")``, ``nirvis models list``).
- :class:`FeatureCache` (:mod:`~nirvis.features.cache`): features and alignments on disk.

The network modules are imported on first use, so ``import nirvis.features`` loads neither dlib nor onnxruntime.
"""

from __future__ import annotations

import importlib
from typing import Any

from nirvis.features.base import Embedder, available_embedders, get_embedder, l2_normalize, register_embedder
from nirvis.features.cache import FeatureCache

_LAZY = {"DlibResNetEmbedder": "dlib_resnet", "OnnxEmbedder": "onnx", "OnnxPreprocess": "onnx"}

__all__ = ["Embedder", "FeatureCache", "available_embedders", "get_embedder", "l2_normalize", "register_embedder",
           *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"nirvis.features.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'nirvis.features' has no attribute {name!r}")
