"""Post-processing of the hallucinated luminance with the NIR image: equation (1) of the paper (Sec. 3.2).

The extracted text reads ``Y = Ŷ − α·G2σ ∗ (Nir − Ŷ)`` with σ = 1 and α = 0.6. Two readings are
implemented (PAPER-NOTES, "Post-processing, equation (1)"):

``reading="log"`` (ours, the default)
    The "2" is the remains of a Laplacian: ``Y = Ŷ − α·∇²G_σ ∗ (Nir − Ŷ) = Ŷ + α·∇²G_σ∗Ŷ − α·∇²G_σ∗Nir``.
    ``∇²G_σ∗f`` (scipy's ``gaussian_laplace``) is negative on bright peaks, so ``Ŷ + α·∇²G_σ∗Ŷ`` is one
    explicit step of the heat equation: it smooths the CNN output (frequency response
    ``1 − α|ω|² exp(−σ²|ω|²/2)``, between 1 − 0.74α and 1 for σ = 1), removing its artefacts; and
    ``−α·∇²G_σ∗Nir`` adds the NIR image's band-passed detail (response ``+α|ω|² exp(−σ²|ω|²/2)``).
    This is what the text says the blend does: it "smooths the result of the hallucination and maintains
    valid information from the pure NIR image".
``reading="gaussian"`` (the literal text)
    ``Y = Ŷ − α·G_σ∗G_σ∗(Nir − Ŷ)``: a low-pass of the difference subtracted, which pushes the result *away*
    from the NIR image. Kept to let the α sweep on real data decide.

Only the luminance is blended; Cb and Cr come from their CNNs, and :func:`ycrcb_to_rgb` converts for the
recognition network.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from numbers import Real

import cv2
import numpy as np
from scipy import ndimage

__all__ = ["BlendConfig", "READINGS", "blend_luminance", "ycrcb_to_rgb"]

#: Readings of equation (1): Laplacian of Gaussian (ours) or Gaussian applied twice (literal text).
READINGS = ("log", "gaussian")


#: Largest σ accepted, pixels: a quarter of the 224-px face. Filters grow with σ (σ = 1e5 took a minute per
#: face) while the paper uses 1.
MAX_SIGMA = 56.0


@dataclass(frozen=True)
class BlendConfig:
    """Settings of equation (1) (paper Sec. 3.2).

    Attributes
    ----------
    alpha
        Weight α of the NIR term (paper: 0.6; its Fig. 7 finds 0.6-0.7 best). ``0`` returns Ŷ unchanged.
    sigma
        σ of the Gaussian, pixels of the 224x224 aligned face (paper: 1).
    reading
        ``"log"`` (Laplacian of Gaussian, our reading) or ``"gaussian"`` (the literal text); see the module
        docstring.
    """

    alpha: float = 0.6
    sigma: float = 1.0
    reading: str = "log"

    def __post_init__(self) -> None:
        def number(v) -> bool:  # numpy scalars too; not bools
            return isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v)

        if not (number(self.alpha) and self.alpha >= 0):
            raise ValueError(f"BlendConfig.alpha must be a finite number >= 0, got {self.alpha!r}")
        if not (number(self.sigma) and 0 < self.sigma <= MAX_SIGMA):
            raise ValueError(f"BlendConfig.sigma must be a number in (0, {MAX_SIGMA}] pixels (paper: 1), "
                             f"got {self.sigma!r}")
        if self.reading not in READINGS:
            raise ValueError(f"BlendConfig.reading must be one of {READINGS}, got {self.reading!r}")

    def to_dict(self) -> dict:
        return {"alpha": float(self.alpha), "sigma": float(self.sigma), "reading": self.reading}

    def fingerprint(self) -> str:
        """Short digest of the settings (part of the hallucination cache key)."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def blend_luminance(y_hat: np.ndarray, nir: np.ndarray, config: BlendConfig | None = None) -> np.ndarray:
    """Equation (1): blend the hallucinated luminance ``Ŷ`` with the NIR image.

    Parameters
    ----------
    y_hat
        CNN luminance ``Ŷ``, ``(H, W)`` or a batch ``(B, H, W)``, float.
    nir
        The (photometrically normalised) NIR image the CNN was given, same shape and units as ``y_hat``.
    config
        α, σ and the reading (default: :class:`BlendConfig()`, α = 0.6, σ = 1, Laplacian of Gaussian).

    Returns
    -------
    numpy.ndarray
        ``Y``, same shape, float32 (float64 if an input is float64). Equation (1) is linear, so the output is in
        the inputs' units: give both in 8-bit units (0..255) or both in [0, 1]. Not clipped. Image borders
        are extended by reflection; images of a batch are filtered independently.

    Raises
    ------
    ValueError
        If the shapes differ or are not 2-D or 3-D.
    """
    cfg = config or BlendConfig()
    y_hat = np.asarray(y_hat)
    nir = np.asarray(nir)
    if y_hat.shape != nir.shape or y_hat.ndim not in (2, 3):
        raise ValueError(f"blend_luminance needs y_hat and nir of one shape, (H, W) or (B, H, W); got "
                         f"{y_hat.shape} and {nir.shape}")
    dtype = np.result_type(y_hat.dtype, nir.dtype, np.float32)
    y_hat = y_hat.astype(dtype, copy=False)
    if cfg.alpha == 0:
        return y_hat.copy()
    diff = nir.astype(dtype, copy=False) - y_hat
    if diff.ndim == 3:  # image by image: nothing may mix across the batch
        kernel_out = np.stack([_kernel(d, cfg) for d in diff]) if len(diff) else diff
    else:
        kernel_out = _kernel(diff, cfg)
    return y_hat - cfg.alpha * kernel_out


def _kernel(image: np.ndarray, cfg: BlendConfig) -> np.ndarray:
    """``∇²G_σ ∗ image`` or ``G_σ ∗ G_σ ∗ image`` for one 2-D image (borders reflected)."""
    if cfg.reading == "log":
        return ndimage.gaussian_laplace(image, sigma=cfg.sigma, mode="reflect")
    return ndimage.gaussian_filter(ndimage.gaussian_filter(image, sigma=cfg.sigma, mode="reflect"),
                                   sigma=cfg.sigma, mode="reflect")


def ycrcb_to_rgb(y: np.ndarray, cr: np.ndarray, cb: np.ndarray) -> np.ndarray:
    """RGB image(s) from luminance and chroma planes with OpenCV's ``COLOR_YCrCb2RGB`` (8-bit full range,
    the inverse of the ``COLOR_RGB2YCrCb`` used to make the training targets).

    Parameters
    ----------
    y, cr, cb
        ``(H, W)`` or ``(B, H, W)`` planes in 8-bit units (0..255), any numeric dtype; note the argument
        order Y, Cr, Cb (OpenCV's). Values are rounded and clipped to 0..255 first.

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` or ``(B, H, W, 3)`` uint8 RGB.
    """
    planes = [np.asarray(a) for a in (y, cr, cb)]
    if len({p.shape for p in planes}) != 1 or planes[0].ndim not in (2, 3):
        raise ValueError(f"ycrcb_to_rgb needs three planes of one shape, (H, W) or (B, H, W); got "
                         f"{[p.shape for p in planes]}")
    ycc = np.stack([np.clip(np.rint(p), 0, 255).astype(np.uint8) for p in planes], axis=-1)
    if ycc.ndim == 3:
        return cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB)
    return np.stack([cv2.cvtColor(np.ascontiguousarray(im), cv2.COLOR_YCrCb2RGB) for im in ycc])
