"""Alignment of NIR and VIS faces to the canonical 224x224 template (paper Sec. 3.1).

The paper aligns by three landmarks: both eye centres and the mouth centre. nirvis finds dlib's 5 points
(eye corners and nose base; the 5-point model, unlike the 68-point one, has no non-commercial terms),
takes the eye centres as the mean of each eye's corners, and predicts the mouth centre from the eyes and
the nose by a linear model fitted once against dlib's 68-point mouth (``benchmarks/calibrate_mouth.py``).
A least-squares similarity transform then maps the three anchors to :data:`TEMPLATE_ANCHORS`.

A network trained on ArcFace's five-point crop (EdgeFace) is cut from the eye centres, the nose tip and the
mouth corners, which dlib's 5 points do not give. ``AlignConfig(landmark_model="shape68")`` runs dlib's
68-point model instead (its training data, iBUG 300-W, allows research use only): the face is aligned from
the same five dlib-5 points, read off the 68, and each :class:`Face` also carries the five ArcFace keypoints
(``face.meta["keypoints5"]``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from numbers import Integral
from os import PathLike

import cv2
import numpy as np

from nirvis.errors import ImageError, NoFaceError
from nirvis.faces import models
from nirvis.faces.detect import Detection, DetectorConfig, detect_faces
from nirvis.faces.types import TEMPLATE_ANCHORS, TEMPLATE_SIZE, Face

__all__ = ["AlignConfig", "FaceAligner", "anchors_from_landmarks", "arcface_keypoints", "similarity_transform",
           "warp_to_template", "as_gray", "valid_mask", "LANDMARK_MODELS", "DLIB5_OF_68", "MIN_IMAGE_SIDE",
           "IMAGE_ERRORS"]

#: Errors of one image that a batch job records and goes on from: an unusable file (:class:`ImageError`,
#: ``OSError``), or an image that dlib (``RuntimeError``) or OpenCV (``cv2.error``) cannot take.
IMAGE_ERRORS = (ImageError, OSError, RuntimeError, cv2.error)

#: Smallest image side (pixels) the detectors are given: no face can be found below it, and dlib's
#: detectors fail on images of one or two pixels a side (a RuntimeError, or heap corruption for 50x1).
MIN_IMAGE_SIDE = 8

#: Mouth centre from the eyes and nose, in units of the inter-eye distance, in the frame of the eyes
#: (x along the eye line, y perpendicular, downwards): ``mouth = MOUTH_COEF.T @ [nose_x, nose_y, 1]``.
#: Fitted by least squares on 502 celeba-faces images against the mean of dlib's 68-point mouth
#: (residual std 0.04 x, 0.08 y inter-eye distances).
MOUTH_COEF = np.array([[0.677, -0.065], [-0.002, 0.899], [0.005, 0.412]])

#: Landmark models of :class:`AlignConfig`: ``shape5`` (dlib's 5 points, no licence restriction; the default)
#: and ``shape68`` (dlib's 68 points, research use only; adds the ArcFace keypoints).
LANDMARK_MODELS = ("shape5", "shape68")

#: dlib's 5 points (:data:`~nirvis.faces.types.LANDMARK_NAMES_5` order) among the 68: the image-right eye's
#: outer and inner corners, the image-left eye's outer and inner corners, the nose base. Checked on RAP3DF faces:
#: each of the 5-point model's points is nearest to this one of the 68-point model's.
DLIB5_OF_68 = (45, 42, 36, 39, 33)


def arcface_keypoints(points68: np.ndarray) -> np.ndarray:
    """ArcFace's five keypoints from dlib's 68 points, ``(5, 2)`` float64: the image-left eye centre, the
    image-right eye centre (each the mean of the eye's six points), the nose tip (point 30), the image-left
    and the image-right mouth corner (points 48 and 54): the order of ArcFace's 112x112 template."""
    p = np.asarray(points68, dtype=np.float64)
    if p.shape != (68, 2):
        raise ValueError(f"points68 must be (68, 2), got shape {p.shape}")
    return np.stack([p[36:42].mean(axis=0), p[42:48].mean(axis=0), p[30], p[48], p[54]])


@dataclass(frozen=True)
class AlignConfig:
    """Settings of alignment.

    Attributes
    ----------
    size
        Side of the aligned face (the paper's 224).
    template
        ``(3, 2)`` anchor positions (eye centre image-left, eye centre image-right, mouth centre).
    detector
        Settings of the detection cascade.
    landmark_side
        The face box is upscaled so that its width is at least this many pixels before the landmark model
        runs (small faces get more precise landmarks).
    landmark_model
        ``"shape5"`` (dlib's 5 points; default) or ``"shape68"`` (dlib's 68 points, research use only: each
        face also carries ArcFace's five keypoints, which networks trained on ArcFace's crop are cut from).
    """

    size: int = TEMPLATE_SIZE
    template: tuple[tuple[float, float], ...] = tuple(map(tuple, TEMPLATE_ANCHORS.tolist()))
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    landmark_side: int = 160
    landmark_model: str = "shape5"

    def __post_init__(self) -> None:
        for name in ("size", "landmark_side"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, Integral) or v < MIN_IMAGE_SIDE:
                raise ValueError(f"AlignConfig: {name} must be an int >= {MIN_IMAGE_SIDE} (pixels), got {v!r}")
        t = np.asarray(self.template, dtype=np.float64)
        if t.shape != (3, 2) or not np.isfinite(t).all():
            raise ValueError(f"AlignConfig: template must be 3 finite (x, y) points (eye, eye, mouth), "
                             f"got {self.template!r}")
        if np.linalg.matrix_rank(t[1:] - t[0]) < 2:
            raise ValueError(f"AlignConfig: the template's 3 points must not be on one line, got {self.template!r}")
        if not isinstance(self.detector, DetectorConfig):
            raise TypeError(f"AlignConfig: detector must be a DetectorConfig, got {self.detector!r}")
        if self.landmark_model not in LANDMARK_MODELS:
            raise ValueError(f"AlignConfig: landmark_model must be one of {', '.join(LANDMARK_MODELS)}, "
                             f"got {self.landmark_model!r}")

    def fingerprint(self) -> str:
        d = asdict(self)
        if d["landmark_model"] == "shape5":  # the default leaves the fingerprint of earlier alignments as it was
            del d["landmark_model"]
        blob = json.dumps(d, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def as_gray(image: np.ndarray, source: str | None = None) -> np.ndarray:
    """Validate an 8-bit image and return its gray version ``(H, W)`` uint8.

    Raises
    ------
    ImageError
        On a wrong dtype (e.g. 16-bit) or channel count; the message names ``source`` when given.
    """
    where = f"{source}: " if source else ""
    arr = np.asarray(image)
    if arr.size == 0:
        raise ImageError(f"{where}empty image (shape {arr.shape})")
    if arr.dtype != np.uint8:
        raise ImageError(f"{where}image dtype is {arr.dtype}; nirvis needs 8-bit (uint8) images: map a deeper "
                         "one with nirvis._io.to_8bit, as read_image does for 16-bit files")
    if arr.ndim == 2:
        return arr
    if arr.ndim == 3 and arr.shape[2] == 1:
        return arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] == 3:
        return cv2.cvtColor(arr, cv2.COLOR_RGB2GRAY)
    if arr.ndim == 3 and arr.shape[2] == 4:
        raise ImageError(f"{where}image has 4 channels (alpha?); give a gray or RGB image (read_image drops "
                         "an opaque alpha channel)")
    raise ImageError(f"{where}image of shape {arr.shape}; expected (H, W) gray or (H, W, 3) RGB")


def anchors_from_landmarks(points: np.ndarray) -> np.ndarray:
    """Eye centres (image-left, image-right) and mouth centre from dlib's 5 points, ``(3, 2)`` float64."""
    p = np.asarray(points, dtype=np.float64)
    e1, e2 = p[0:2].mean(axis=0), p[2:4].mean(axis=0)
    left, right = (e1, e2) if e1[0] <= e2[0] else (e2, e1)
    centre = (left + right) / 2
    ex = right - left
    dist = float(np.hypot(*ex)) or 1.0
    ux = ex / dist
    uy = np.array([-ux[1], ux[0]])
    nose = p[4] - centre
    mouth_local = np.array([nose @ ux / dist, nose @ uy / dist, 1.0]) @ MOUTH_COEF
    mouth = centre + dist * (mouth_local[0] * ux + mouth_local[1] * uy)
    return np.stack([left, right, mouth])


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) mapping ``src`` to ``dst``.

    Parameters
    ----------
    src, dst
        ``(n, 2)`` corresponding points, ``n >= 2``.

    Returns
    -------
    numpy.ndarray
        ``(2, 3)`` float64 matrix ``M`` with ``dst ~ M @ [x, y, 1]``, as used by ``cv2.warpAffine``.
        Closed form of Umeyama (1991) restricted to 2-D.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape or len(src) < 2:
        raise ValueError(f"src and dst must be two (n, 2) arrays with n >= 2, got {src.shape} and {dst.shape}")
    src_c = src - src.mean(axis=0)
    dst_c = dst - dst.mean(axis=0)
    spread = float((src_c**2).sum())
    if spread <= 1e-12:
        raise ValueError(f"cannot fit a similarity transform: the source points all coincide ({src.tolist()})")
    a = float((src_c * dst_c).sum()) / spread
    b = float((src_c[:, 0] * dst_c[:, 1] - src_c[:, 1] * dst_c[:, 0]).sum()) / spread
    linear = np.array([[a, -b], [b, a]])
    shift = dst.mean(axis=0) - linear @ src.mean(axis=0)
    return np.hstack([linear, shift[:, None]])


def warp_to_template(image: np.ndarray, matrix: np.ndarray, size: int = TEMPLATE_SIZE) -> np.ndarray:
    """Warp ``image`` (gray or RGB uint8) with the ``(2, 3)`` ``matrix`` into a ``size`` x ``size`` face."""
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0)


def _apply(matrix: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return np.asarray(pts, dtype=np.float64) @ matrix[:, :2].T + matrix[:, 2]


def valid_mask(matrix: np.ndarray, source_shape: tuple[int, int], size: int = TEMPLATE_SIZE) -> np.ndarray:
    """``(size, size)`` bool mask of the aligned pixels that come from inside the source image.

    The rest is the warp's fill, whose straight edges would otherwise count as image content (e.g. in
    photometric statistics or in NIR/VIS correlations). The interpolated rim is dropped (3x3 erosion).
    """
    ones = np.full(tuple(source_shape), 255, np.uint8)
    valid = cv2.warpAffine(ones, np.asarray(matrix, np.float64), (size, size), flags=cv2.INTER_NEAREST, borderValue=0)
    return cv2.erode(valid, np.ones((3, 3), np.uint8)) > 0


class FaceAligner:
    """Detect -> 5-point landmarks -> align to the 224x224 template.

    Examples
    --------
    >>> aligner = FaceAligner()                          # doctest: +SKIP
    >>> face = aligner.align(nir_image, source="a.bmp")  # doctest: +SKIP
    >>> face.image.shape, face.method                    # doctest: +SKIP
    ((224, 224), 'hog')
    """

    def __init__(self, config: AlignConfig | None = None) -> None:
        self.config = config or AlignConfig()

    @property
    def fingerprint(self) -> str:
        return self.config.fingerprint()

    def landmarks(self, gray: np.ndarray, det: Detection) -> np.ndarray:
        """dlib's 5 points for one detection, ``(5, 2)`` float64 in source pixels (with ``shape68``, read off
        the 68: :data:`DLIB5_OF_68`)."""
        return self._predict(gray, det)[0]

    def _predict(self, gray: np.ndarray, det: Detection) -> tuple[np.ndarray, np.ndarray | None]:
        """dlib's 5 points and, with ``shape68``, ArcFace's 5 keypoints (else ``None``), in source pixels."""
        import dlib

        l, t, r, b = det.box
        s = float(np.clip(self.config.landmark_side / max(r - l, 1.0), 1.0, 4.0))
        img = gray if s == 1.0 else cv2.resize(gray, None, fx=s, fy=s, interpolation=cv2.INTER_CUBIC)
        rect = dlib.rectangle(int(round(l * s)), int(round(t * s)), int(round(r * s)), int(round(b * s)))
        shape = models.shape_predictor(self.config.landmark_model)(img, rect)
        points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64) / s
        if self.config.landmark_model == "shape68":
            return points[list(DLIB5_OF_68)], arcface_keypoints(points)
        return points, None

    def align_landmarks(self, image: np.ndarray, points: np.ndarray, *, method: str = "given",
                        score: float = float("nan"), source: str | None = None,
                        keypoints: np.ndarray | None = None) -> Face:
        """Align ``image`` given its 5 landmarks in source pixels (no detection); ArcFace's 5 ``keypoints``
        in source pixels, when given, are kept in ``face.meta["keypoints5"]`` (aligned pixels)."""
        image = np.asarray(image)
        template = np.asarray(self.config.template, dtype=np.float64)
        anchors = anchors_from_landmarks(points)
        matrix = similarity_transform(anchors, template)
        aligned = warp_to_template(np.ascontiguousarray(image), matrix, self.config.size)
        meta: dict = {"source_shape": tuple(int(v) for v in image.shape[:2])}
        if keypoints is not None:
            meta["keypoints5"] = _apply(matrix, keypoints).astype(np.float32)
        return Face(image=aligned, landmarks=_apply(matrix, points).astype(np.float32),
                    anchors=_apply(matrix, anchors).astype(np.float32), matrix=matrix, method=method,
                    score=float(score), source=source, meta=meta)

    def _align_detection(self, image: np.ndarray, gray: np.ndarray, det: Detection, source: str | None) -> Face:
        points, keypoints = self._predict(gray, det)
        return self.align_landmarks(image, points, method=det.method, score=det.score, source=source,
                                    keypoints=keypoints)

    def detect(self, image: np.ndarray, *, source: str | None = None) -> list[Face]:
        """Every face found by the cascade, aligned; best detection score first. Empty if none (also for an
        image too small to hold a face)."""
        image = np.asarray(image)
        gray = as_gray(image, source)
        return [self._align_detection(image, gray, d, source) for d in detect_faces(gray, self.config.detector)]

    def align(self, image: np.ndarray, *, source: str | None = None) -> Face:
        """The best-scoring face of ``image``, aligned.

        Raises
        ------
        NoFaceError
            When no step of the cascade finds a face, or the image is smaller than :data:`MIN_IMAGE_SIDE`
            on a side; the message names ``source``.
        """
        image = np.asarray(image)
        gray = as_gray(image, source)
        if min(gray.shape[:2]) < MIN_IMAGE_SIDE:
            raise NoFaceError(f"{source or 'image'}: {gray.shape[1]}x{gray.shape[0]} px is too small to hold a face "
                              f"(at least {MIN_IMAGE_SIDE} px on each side)")
        dets = detect_faces(gray, self.config.detector)
        if not dets:
            raise NoFaceError(f"{source or 'image'}: no face found (tried {', '.join(self.config.detector.cascade)})")
        return self._align_detection(image, gray, dets[0], source)

    def align_file(self, path: str | PathLike, *, channel: str | None = None) -> Face:
        """Read an image file (see :func:`nirvis._io.read_image`) and align its best face."""
        from nirvis._io import read_image

        return self.align(read_image(path, channel=channel), source=str(path))
