"""Affine registration of a VIS luminance window to its NIR window (paper Sec. 3.1).

Uses OpenCV's enhanced-correlation-coefficient maximisation (``cv2.findTransformECC``; Evangelidis &
Psarakis, PAMI 2008): by default a translation first, then an affine refinement from it
(:attr:`MiningConfig.motion`). ECC is invariant to gain and bias of the
intensities, which is what an NIR/VIS pair needs: the two spectra differ photometrically but share edges.
"""

from __future__ import annotations

import cv2
import numpy as np

from nirvis.mining.config import MiningConfig

__all__ = ["register_window", "warp_window", "FAIL_FLAT", "FAIL_ECC", "FAIL_IMPLAUSIBLE"]

#: Failure kinds counted in the summary.
FAIL_FLAT = "flat"
FAIL_ECC = "ecc_error"
FAIL_IMPLAUSIBLE = "implausible"


def register_window(nir: np.ndarray, y: np.ndarray, config: MiningConfig) -> tuple[np.ndarray | None, str | None]:
    """Affine warp registering the VIS Y window to the NIR window.

    Parameters
    ----------
    nir, y
        ``(window, window)`` float32 windows at the same location.
    config
        Iteration cap, tolerance and plausibility bounds.

    Returns
    -------
    (warp, None) on success, with ``warp`` a ``(2, 3)`` float32 matrix to apply to ``y`` with
    :func:`warp_window`; ``(None, kind)`` on failure, ``kind`` one of :data:`FAIL_FLAT`,
    :data:`FAIL_ECC` (OpenCV raised: NaN, or the correlation went down) or :data:`FAIL_IMPLAUSIBLE`.
    """
    if float(nir.std()) < config.min_window_std or float(y.std()) < config.min_window_std:
        return None, FAIL_FLAT
    start = np.eye(2, 3, dtype=np.float32)
    if config.motion == "affine":
        return _ecc(nir, y, start, cv2.MOTION_AFFINE, config)
    warp, fail = _ecc(nir, y, start, cv2.MOTION_TRANSLATION, config)
    if warp is None or config.motion == "translation":
        return warp, fail
    refined, _ = _ecc(nir, y, warp.copy(), cv2.MOTION_AFFINE, config)
    return (refined if refined is not None else warp), None


def _ecc(nir: np.ndarray, y: np.ndarray, start: np.ndarray, motion: int, config: MiningConfig
         ) -> tuple[np.ndarray | None, str | None]:
    """One bounded ``findTransformECC`` run from ``start``, with the plausibility checks."""
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, int(config.ecc_iterations), float(config.ecc_eps))
    try:
        _, warp = cv2.findTransformECC(nir, y, start, motion, criteria, None, int(config.ecc_blur))
    except cv2.error:
        return None, FAIL_ECC
    if not np.all(np.isfinite(warp)):
        return None, FAIL_ECC
    if (np.abs(warp[:, 2]).max() > config.max_shift
            or np.abs(warp[:, :2] - np.eye(2, dtype=np.float32)).max() > config.max_linear):
        return None, FAIL_IMPLAUSIBLE
    return warp, None


def warp_window(window: np.ndarray, warp: np.ndarray) -> np.ndarray:
    """Resample ``window`` (``(w, w)`` or ``(w, w, C)``) onto the NIR window's grid with ``warp``.

    ``findTransformECC`` returns the map from template (NIR) to input (VIS) coordinates, so it is applied
    with ``WARP_INVERSE_MAP``. Borders are replicated; they fall outside the centre crop for shifts up to
    the window margin.
    """
    w = window.shape[0]
    return cv2.warpAffine(window, warp, (w, w), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)
