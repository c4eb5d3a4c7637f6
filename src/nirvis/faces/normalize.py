"""Photometric normalisation (paper Sec. 3.1)."""

from __future__ import annotations

import numpy as np

__all__ = ["match_mean_std", "reference_stats"]


def reference_stats(reference: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of a reference image, each shape ``(C,)`` (``(1,)`` for gray).

    ``mask``: optional ``(H, W)`` boolean mask of the pixels to measure (e.g. those inside the source image).
    """
    ref = np.asarray(reference, dtype=np.float64)
    ref = ref[..., None] if ref.ndim == 2 else ref
    pix = ref[mask] if mask is not None else ref.reshape(-1, ref.shape[2])
    return pix.mean(axis=0), pix.std(axis=0)


def match_mean_std(
    image: np.ndarray,
    mean: float | np.ndarray,
    std: float | np.ndarray,
    *,
    mask: np.ndarray | None = None,
    out_dtype: type = np.uint8,
) -> np.ndarray:
    """Set each channel's mean and std to the reference's (paper Sec. 3.1).

    "We set the mean and standard deviation of the NIR channel and of each colour channel to those of a
    fixed reference image chosen from the training set."

    Parameters
    ----------
    image
        ``(H, W)`` or ``(H, W, C)`` array, any numeric dtype.
    mean, std
        Target per-channel statistics, scalars or shape ``(C,)`` (see :func:`reference_stats`).
    mask
        Optional ``(H, W)`` boolean mask of the pixels whose statistics are measured (e.g. the face).
    out_dtype
        ``np.uint8`` (clipped to 0..255 and rounded) or a float type (no clipping).

    Returns
    -------
    numpy.ndarray of the same shape as ``image``.
    """
    img = np.asarray(image, dtype=np.float64)
    squeeze = img.ndim == 2
    if squeeze:
        img = img[..., None]
    if img.ndim != 3:
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {np.shape(image)}")
    c = img.shape[2]
    mean = np.broadcast_to(np.asarray(mean, dtype=np.float64).reshape(-1), (c,))
    std = np.broadcast_to(np.asarray(std, dtype=np.float64).reshape(-1), (c,))
    pix = img[mask] if mask is not None else img.reshape(-1, c)
    mu, sd = pix.mean(axis=0), pix.std(axis=0)
    # A flat channel (sd == 0) cannot be stretched: it only gets the target mean.
    scale = np.where(sd > 1e-8, std / np.maximum(sd, 1e-8), 0.0)
    out = (img - mu) * scale + mean
    if squeeze:
        out = out[..., 0]
    if np.issubdtype(out_dtype, np.integer):
        return np.clip(np.rint(out), 0, 255).astype(out_dtype)
    return out.astype(out_dtype)
