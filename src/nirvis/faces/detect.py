"""Face detection for NIR and VIS: a cascade of dlib detectors over contrast variants.

The RAP3DF faces are small (50-70 px wide) and often turned away; NIR images have other contrast than the
VIS images the detectors were trained on. The cascade therefore upsamples small images and tries, in
order, cheap to expensive: HOG, HOG with a lowered threshold, the MMOD CNN detector, then the same on a
CLAHE-equalised image. The first step that finds a face wins, and its name is recorded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real

import cv2
import numpy as np

from nirvis.faces import models

__all__ = ["Detection", "DetectorConfig", "detect_faces", "DEFAULT_CASCADE", "MIN_DETECT_SIDE"]

#: Shorter side (pixels) below which a cascade step does not run, after the step's resizing. dlib's
#: detectors raise or corrupt the heap on images of a few pixels a side (MMOD failed at 8x8 and 6x800, HOG
#: on 4x200 corrupted the heap), and no face fits there anyway: HOG's window is 80 px, MMOD's about 40.
MIN_DETECT_SIDE = 16

#: Cascade steps, in order: ``<detector>[-<variant>]``. Detectors: ``hog`` (threshold 0), ``hogl``
#: (HOG, lowered threshold), ``mmod`` (CNN). Variants: none (gray as is) or ``clahe``.
DEFAULT_CASCADE: tuple[str, ...] = ("hog", "hogl", "mmod", "hog-clahe", "hogl-clahe", "mmod-clahe")


@dataclass(frozen=True)
class DetectorConfig:
    """Settings of the detection cascade.

    Attributes
    ----------
    cascade
        Steps tried in order (see :data:`DEFAULT_CASCADE`).
    min_side
        Images whose shorter side is below this many pixels are upsampled to it before HOG (dlib's HOG
        finds faces of about 80 px and larger).
    max_upsample
        Largest upsampling factor.
    mmod_side
        Shorter side the image is resized to (at most ``max_upsample`` times) before the MMOD detector;
        smaller than ``min_side`` because MMOD's cost grows with the area.
    max_side, mmod_max_side
        Larger images are downscaled so that their longer side is at most this many pixels before HOG and
        before MMOD: detection time grows with the area, and a 3000x3000 image with no face ran for minutes
        through the cascade. Faces of at least 80 px in the downscaled image are still found.
    hog_low_threshold
        Score threshold of the ``hogl`` steps (dlib's default is 0).
    clahe_clip, clahe_grid
        CLAHE settings of the ``clahe`` variant.
    """

    cascade: tuple[str, ...] = DEFAULT_CASCADE
    min_side: int = 360
    max_upsample: float = 4.0
    mmod_side: int = 240
    max_side: int = 1600
    mmod_max_side: int = 800
    hog_low_threshold: float = -0.6
    clahe_clip: float = 2.0
    clahe_grid: int = 8

    def __post_init__(self) -> None:
        for name in ("min_side", "mmod_side", "max_side", "mmod_max_side", "clahe_grid"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, Integral) or v < 1:
                raise ValueError(f"DetectorConfig: {name} must be a positive int (pixels), got {v!r}")
        for name, ok, expected in (("max_upsample", lambda v: v >= 1, " >= 1"), ("clahe_clip", lambda v: v > 0, " > 0"),
                                   ("hog_low_threshold", lambda v: True, "")):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(v) or not ok(v):
                raise ValueError(f"DetectorConfig: {name} must be a finite number{expected}, got {v!r}")
        for step in self.cascade:
            det, _, variant = step.partition("-")
            if det not in ("hog", "hogl", "mmod") or variant not in ("", "clahe"):
                raise ValueError(f"unknown cascade step {step!r}; steps are hog|hogl|mmod with optional -clahe")
        if not self.cascade:
            raise ValueError("cascade must have at least one step")


@dataclass(frozen=True)
class Detection:
    """A face box in source-image pixels ``(left, top, right, bottom)``, the step that found it, and its score."""

    box: tuple[float, float, float, float]
    method: str
    score: float


def _scale_for(shape: tuple[int, ...], side: int, max_up: float, max_side: int) -> float:
    """Upsample small images so that the shorter side reaches ``side`` (at most ``max_up`` times); downscale
    large ones so that the longer side is at most ``max_side``."""
    short, long = min(shape[0], shape[1]), max(shape[0], shape[1])
    return float(min(np.clip(side / max(short, 1), 1.0, max_up), max_side / max(long, 1)))


def _variant(gray: np.ndarray, variant: str, cfg: DetectorConfig) -> np.ndarray:
    if variant == "clahe":
        clahe = cv2.createCLAHE(clipLimit=cfg.clahe_clip, tileGridSize=(cfg.clahe_grid, cfg.clahe_grid))
        return clahe.apply(gray)
    return gray


def _resize(img: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return img
    return cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA)


def detect_faces(gray: np.ndarray, config: DetectorConfig | None = None) -> list[Detection]:
    """Detect faces in a gray uint8 image with the cascade; best score first.

    Parameters
    ----------
    gray
        ``(H, W)`` uint8 image (NIR intensity, or the luminance of a VIS image).
    config
        Cascade settings; the defaults work for NIR and VIS.

    Returns
    -------
    list of Detection
        Every face found by the first step of the cascade that finds any, in source pixels, sorted by
        score (highest first). Empty when no step finds a face.
    """
    cfg = config or DetectorConfig()
    if gray.ndim != 2 or gray.dtype != np.uint8:
        raise ValueError(f"detect_faces needs a (H, W) uint8 image, got shape {gray.shape} dtype {gray.dtype}")
    for step in cfg.cascade:
        det, _, variant = step.partition("-")
        if det in ("hog", "hogl"):
            s = _scale_for(gray.shape, cfg.min_side, cfg.max_upsample, cfg.max_side)
        else:
            s = _scale_for(gray.shape, cfg.mmod_side, cfg.max_upsample, cfg.mmod_max_side)
        if min(gray.shape) * s < MIN_DETECT_SIDE:  # e.g. a long thin strip, downscaled for its length
            continue
        img = _resize(_variant(gray, variant, cfg), s)
        if det in ("hog", "hogl"):
            thr = 0.0 if det == "hog" else cfg.hog_low_threshold
            rects, scores, _ = models.hog_detector().run(img, 0, thr)
            found = [((r.left(), r.top(), r.right(), r.bottom()), float(sc)) for r, sc in zip(rects, scores)]
        else:
            dets = models.mmod_detector()(img, 0)
            found = [((d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()), float(d.confidence)) for d in dets]
        if found:
            out = [Detection(tuple(v / s for v in box), step, sc) for box, sc in found]
            return sorted(out, key=lambda d: -d.score)
    return []
