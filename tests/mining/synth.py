"""Synthetic aligned 224x224 faces for the mining tests: a textured NIR image and a VIS image whose
luminance is a slightly affinely warped copy of it (with a black template border)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

SIZE = 224


def texture(seed: int, size: int = SIZE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0), 2.5)
    return cv2.normalize(img, None, 20, 235, cv2.NORM_MINMAX).astype(np.uint8)


def warped_vis(nir: np.ndarray, seed: int) -> np.ndarray:
    """RGB image whose luminance is ``nir`` under a small affine warp, with a colour tint."""
    rng = np.random.default_rng(seed + 1000)
    m = np.array([[1.0 + rng.uniform(-0.01, 0.01), rng.uniform(-0.01, 0.01), rng.uniform(-1.5, 1.5)],
                  [rng.uniform(-0.01, 0.01), 1.0 + rng.uniform(-0.01, 0.01), rng.uniform(-1.5, 1.5)]], np.float32)
    y = cv2.warpAffine(nir, m, (nir.shape[1], nir.shape[0]), borderMode=cv2.BORDER_REFLECT).astype(np.float32)
    rgb = np.stack([y * 0.9 + 20, y * 0.8 + 10, y * 0.6], axis=-1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def with_border(img: np.ndarray, width: int = 24) -> np.ndarray:
    out = img.copy()
    out[:width] = 0
    return out


def write_folder(root: Path, people: list[str], n_nir: int = 1, n_vis: int = 1, seed: int = 0) -> Path:
    """``<root>/<person>/{nir,vis}/*.png`` of synthetic aligned faces (the folder dataset layout)."""
    for pi, person in enumerate(people):
        (root / person / "nir").mkdir(parents=True, exist_ok=True)
        (root / person / "vis").mkdir(parents=True, exist_ok=True)
        base = texture(seed + 10 * pi)
        for k in range(n_nir):
            nir = with_border(np.roll(base, k, axis=1))
            cv2.imwrite(str(root / person / "nir" / f"n{k}.png"), nir)
        for k in range(n_vis):
            vis = with_border(warped_vis(base, seed + 10 * pi + k))
            cv2.imwrite(str(root / person / "vis" / f"v{k}.png"), cv2.cvtColor(vis, cv2.COLOR_RGB2BGR))
    return root
