"""Sliding windows over the aligned 224x224 face (paper Sec. 3.1)."""

from __future__ import annotations

import numpy as np

__all__ = ["window_grid", "mirror_x", "centre_crop"]


def window_grid(size: int = 224, window: int = 60, stride: int = 12) -> np.ndarray:
    """Top-left corners of the windows, row-major, ``(L, 2)`` int16 ``(y, x)``.

    Paper Sec. 3.1: "60x60 windows with stride 12, at the same location in both images". For
    224/60/12 the corners are 0, 12, ..., 156 on each axis (14 x 14 = 196 locations).
    """
    if window > size:
        raise ValueError(f"window {window} is larger than the image side {size}")
    starts = np.arange(0, size - window + 1, stride, dtype=np.int16)
    yy, xx = np.meshgrid(starts, starts, indexing="ij")
    return np.stack([yy.ravel(), xx.ravel()], axis=1)


def mirror_x(x: np.ndarray | int, size: int = 224, window: int = 60) -> np.ndarray | int:
    """Left edge of the horizontally mirrored window: ``size - window - x``.

    Mirrored corners need not lie on the stride grid (224 - 60 - 0 = 164 is not a multiple of 12).
    """
    return size - window - x


def centre_crop(a: np.ndarray, patch: int) -> np.ndarray:
    """The centre ``patch x patch`` of a square window (first two axes)."""
    m = (a.shape[0] - patch) // 2
    return a[m:m + patch, m:m + patch]
