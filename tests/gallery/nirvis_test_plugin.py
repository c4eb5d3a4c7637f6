"""A cheap embedder for the gallery's tests, registered as ``test-pixels``.

Imported by name through ``$NIRVIS_PLUGINS=nirvis_test_plugin`` (with this folder on ``PYTHONPATH``), the
documented plug-in hook of :mod:`nirvis.gallery.pipeline`, so that ``nirvis enroll`` in a subprocess embeds
hundreds of images per second. Also: synthetic "aligned faces" (smooth random textures), one per seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from nirvis.faces.types import Face
from nirvis.features.base import Embedder, l2_normalize, register_embedder

DIM = 32


@register_embedder("test-pixels")
class PixelEmbedder(Embedder):
    """The aligned face (gray), shrunk to 16x16, centred, projected to 32-D by a fixed random matrix."""

    name = "test-pixels"
    dim = DIM

    def __init__(self) -> None:
        self._proj = np.random.default_rng(1234).standard_normal((256, DIM)).astype(np.float32)

    def config(self) -> dict:
        return {"version": 1}

    def embed(self, faces: Sequence[Face]) -> np.ndarray:
        if not faces:
            return np.zeros((0, DIM), np.float32)
        rows = []
        for f in faces:
            g = f.image if f.image.ndim == 2 else cv2.cvtColor(f.image, cv2.COLOR_RGB2GRAY)
            small = cv2.resize(g, (16, 16), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
            rows.append((small - small.mean()) @ self._proj)
        return l2_normalize(np.stack(rows))


def texture(seed: int, size: int = 224, color: bool = True) -> np.ndarray:
    """A smooth random uint8 image, ``(size, size, 3)`` RGB (or gray): one synthetic aligned face."""
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.random((8, 8)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    img = cv2.normalize(base, None, 20, 235, cv2.NORM_MINMAX).astype(np.uint8)
    return np.repeat(img[:, :, None], 3, axis=2) if color else img


def noisy(image: np.ndarray, seed: int, sigma: float = 6.0) -> np.ndarray:
    """``image`` plus Gaussian noise (a probe of the same synthetic face)."""
    rng = np.random.default_rng(seed)
    return np.clip(image.astype(np.float32) + rng.normal(0, sigma, image.shape), 0, 255).astype(np.uint8)


def write_png(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path


def people_folder(root: Path, n_people: int, per_person: int, seed0: int = 0, color: bool = True
                  ) -> dict[str, list[Path]]:
    """``root/p000/img00.png`` ...: ``per_person`` distinct textures per person. Returns person -> files."""
    out: dict[str, list[Path]] = {}
    for p in range(n_people):
        person = f"p{p:03d}"
        out[person] = [write_png(root / person / f"img{i:02d}.png", texture(seed0 + 1000 * p + i, color=color))
                       for i in range(per_person)]
    return out
