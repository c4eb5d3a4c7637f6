"""Scores of a registered NIR/VIS window pair (paper Sec. 3.1)."""

from __future__ import annotations

import math

import cv2
import numpy as np

from nirvis.mining.config import MiningConfig
from nirvis.mining.windows import centre_crop

__all__ = ["correlation", "gradient_magnitude", "score_pair", "accept"]

_EPS = 1e-6


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two same-shape arrays.

    A flat array (std below 1e-6) has no defined correlation; it is scored 0.0, which every acceptance
    threshold of the paper rejects, so no NaN reaches the scores. Sums are exact (``math.fsum``), so the
    score does not depend on memory alignment, SIMD paths or BLAS threads: a store is bit-identical
    for any number of workers.
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    n = a.size
    da = a - math.fsum(a.tolist()) / n
    db = b - math.fsum(b.tolist()) / n
    saa, sbb = math.fsum((da * da).tolist()), math.fsum((db * db).tolist())
    if saa < (_EPS ** 2) * n or sbb < (_EPS ** 2) * n:
        return 0.0
    return float(min(1.0, max(-1.0, math.fsum((da * db).tolist()) / math.sqrt(saa * sbb))))


def gradient_magnitude(image: np.ndarray) -> np.ndarray:
    """Sobel (3x3) gradient magnitude, float64, same shape.

    Computed in float64 on a fresh contiguous copy and with NumPy's correctly rounded ``sqrt``:
    ``cv2.magnitude`` on float32 gives results that differ in the last bit with the array's address
    (SIMD body against scalar tail), which made a store depend on the worker that mined it.
    """
    img = np.array(image, dtype=np.float64, order="C", copy=True)
    gx = cv2.Sobel(img, cv2.CV_64F, 1, 0, ksize=3)
    gy = cv2.Sobel(img, cv2.CV_64F, 0, 1, ksize=3)
    return np.sqrt(gx * gx + gy * gy)


def score_pair(nir_window: np.ndarray, y_window: np.ndarray, patch: int) -> tuple[float, float]:
    """``(s1, s2)`` of a registered window pair.

    s1 is the correlation of the centre ``patch x patch`` crops, s2 the correlation of their gradient
    magnitudes (paper Sec. 3.1). Gradients are computed on the whole window and then cropped, so the
    crop's border pixels see real neighbours.
    """
    s1 = correlation(centre_crop(nir_window, patch), centre_crop(y_window, patch))
    s2 = correlation(centre_crop(gradient_magnitude(nir_window), patch),
                     centre_crop(gradient_magnitude(y_window), patch))
    return s1, s2


def accept(s1: float | np.ndarray, s2: float | np.ndarray, config: MiningConfig) -> bool | np.ndarray:
    """Paper Sec. 3.1: keep when ``s1 + s2 > 1``, ``s1 >= 0.4`` and ``s2 >= 0.4`` (configurable)."""
    return (s1 + s2 > config.min_sum) & (s1 >= config.min_s1) & (s2 >= config.min_s2)
