"""Aligned-face record and the canonical 224x224 template (paper Sec. 3.1)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Side of the aligned face, in pixels (paper Sec. 3.1: "crop to 224x224").
TEMPLATE_SIZE = 224

#: The paper's three alignment anchors in the 224x224 template, pixels ``(x, y)``:
#: the eye centre on the image's left, the eye centre on the image's right, the mouth centre.
TEMPLATE_ANCHORS = np.array([[80.0, 92.0], [144.0, 92.0], [112.0, 163.0]], dtype=np.float32)

#: dlib's 5-point landmark order, as written in :attr:`Face.landmarks`.
LANDMARK_NAMES_5 = ("eye_r_outer", "eye_r_inner", "eye_l_outer", "eye_l_inner", "nose_base")


@dataclass(frozen=True, eq=False)
class Face:
    """One face aligned to the template.

    Attributes
    ----------
    image
        Aligned face, ``(224, 224)`` uint8 for NIR (gray) or ``(224, 224, 3)`` uint8 RGB for VIS.
    landmarks
        ``(5, 2)`` float32, dlib's 5 points (:data:`LANDMARK_NAMES_5`) in aligned pixel coordinates.
        Later stages (embedder chips, patch mining) use them and never detect again.
    anchors
        ``(3, 2)`` float32, the eye centres and mouth centre in aligned coordinates (close to
        :data:`TEMPLATE_ANCHORS` when alignment succeeded).
    matrix
        ``(2, 3)`` float64 affine map from source-image pixels to aligned pixels.
    method
        Which step of the detector cascade found the face (e.g. ``"hog"``, ``"mmod"``, ``"hog-clahe"``).
    score
        Detection quality: the detector's confidence, higher is better. Not comparable across methods.
    source
        Path of the source image, when known.
    """

    image: np.ndarray
    landmarks: np.ndarray
    anchors: np.ndarray
    matrix: np.ndarray
    method: str
    score: float
    source: str | None = None
    meta: dict = field(default_factory=dict)

    @property
    def is_gray(self) -> bool:
        return self.image.ndim == 2

    def rgb(self) -> np.ndarray:
        """The aligned face as ``(224, 224, 3)`` uint8 RGB; a gray (NIR) face is replicated 3 times."""
        if self.image.ndim == 2:
            return np.repeat(self.image[:, :, None], 3, axis=2)
        return self.image
