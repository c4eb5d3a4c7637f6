"""Image quality of hallucinated faces against the true VIS face: PSNR and SSIM (paper Sec. 5.2).

Both are computed by scikit-image; a mask restricts them to the pixels that both aligned faces took from
inside their source images (the warp's fill is left out).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["psnr_ssim"]


def psnr_ssim(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None,
              data_range: float = 255.0) -> tuple[float, float]:
    """PSNR (dB) and mean SSIM of ``pred`` against ``target``.

    Parameters
    ----------
    pred, target
        ``(H, W)`` or ``(H, W, 3)`` arrays in the same units (8-bit by default).
    mask
        Optional ``(H, W)`` bool: only these pixels count (PSNR: their mean squared error; SSIM: the mean
        of the SSIM map over them).
    data_range
        Dynamic range of the values (255 for 8-bit).

    Returns
    -------
    ``(psnr, ssim)``; PSNR is ``inf`` for identical images.
    """
    from skimage.metrics import structural_similarity

    p = np.asarray(pred, np.float64)
    t = np.asarray(target, np.float64)
    if p.shape != t.shape or p.ndim not in (2, 3):
        raise ValueError(f"psnr_ssim: pred {p.shape} and target {t.shape} must be the same (H, W) or (H, W, C)")
    m = np.ones(p.shape[:2], bool) if mask is None else np.asarray(mask, bool)
    if m.shape != p.shape[:2] or not m.any():
        raise ValueError(f"psnr_ssim: mask must be a non-empty {p.shape[:2]} boolean array, got {m.shape}")
    mse = float(((p - t) ** 2)[m].mean())
    psnr = math.inf if mse == 0 else 10.0 * math.log10(data_range ** 2 / mse)
    _, smap = structural_similarity(p, t, data_range=data_range, full=True,
                                    channel_axis=2 if p.ndim == 3 else None)
    if smap.ndim == 3:
        smap = smap.mean(axis=2)
    return psnr, float(smap[m].mean())
