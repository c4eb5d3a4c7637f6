"""Geometric mining of simultaneous NIR/VIS frames (beyond the paper; see docs/BENCHMARKS.md).

The paper pairs every NIR image with every VIS image of a person, aligns each by its own landmarks, and
keeps the windows whose registration and correlations pass its tests (Sec. 3.1). When the two frames were
taken at the same moment by two cameras side by side (RAP3DF's Kinect), they differ by one offset, the
cameras' parallax, so the whole pair can be registered at once:

1. **Offset.** Each frame's own 5 landmarks give a first estimate (the median of their differences, in
   source pixels); the peak of the normalised cross-correlation of the two frames' gradient magnitudes
   over the face, searched within :attr:`MiningConfig.max_refine` pixels of that start, refines it.
2. **One warp.** Both frames are warped to the template with the VIS face's alignment, the NIR frame
   shifted by the offset, so the two aligned faces start registered, up to the offset's error.
3. **Every face window is a pair.** The paper's correlation tests reject most true correspondences here
   (flat skin under active IR; docs/BENCHMARKS.md), so they are not applied. Only broken windows are
   rejected, by cheap tests: the depth sensor's holes (zero pixels of either frame), the 2017 set's
   8-bit wrap-around bands (jumps between neighbouring NIR pixels), flat and saturated windows, and
   windows outside the face region (:func:`face_mask`).

:func:`register_frames` does 1, :func:`warp_registered` 2 and :func:`mine_registered_pair` 3.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from nirvis.faces.align import valid_mask, warp_to_template
from nirvis.faces.types import Face
from nirvis.mining.config import MiningConfig
from nirvis.mining.score import gradient_magnitude, score_pair
from nirvis.mining.windows import centre_crop, window_grid

__all__ = ["PairRegistration", "face_mask", "register_frames", "shifted_matrix", "warp_registered",
           "defect_mask", "mine_registered_pair", "REJECT_KINDS"]

#: Why a window of a registered pair is rejected (counted in the store's summary).
REJECT_KINDS = ("outside", "not_face", "hole", "band", "flat", "saturated")

#: Gray levels between two neighbouring NIR source pixels above which the step is a wrap-around band
#: (the 2017 IR frames: 8-bit sensor values that wrapped past 255), not image content.
BAND_STEP = 100


@dataclass(frozen=True)
class PairRegistration:
    """Registration of one simultaneous NIR/VIS frame pair.

    Attributes
    ----------
    offset
        ``(dx, dy)``: a point at ``p`` in the VIS frame is at ``p + offset`` in the NIR frame (source pixels).
    landmark_offset
        The first estimate, from the two frames' landmarks alone.
    refined
        Whether the correlation refinement was kept (else ``offset == landmark_offset``).
    residual
        Mean distance, in source pixels, between the NIR landmarks and the VIS landmarks moved by ``offset``:
        the registration error as far as the landmark detector can see it (its own noise included).
    """

    offset: tuple[float, float]
    landmark_offset: tuple[float, float]
    refined: bool
    residual: float


@functools.lru_cache(maxsize=4)
def face_mask(size: int = 224) -> np.ndarray:
    """``(size, size)`` bool mask of the face region of the template (an ellipse through the forehead, the
    cheeks and the chin, from the template's anchors: eyes at y = 92, mouth at y = 163 for 224). Read-only:
    computed once per size."""
    s = size / 224.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    mask = ((xx - 112 * s) / (66 * s)) ** 2 + ((yy - 124 * s) / (84 * s)) ** 2 <= 1.0
    mask.flags.writeable = False
    return mask


def _source_points(face: Face) -> np.ndarray:
    """The face's 5 landmarks in source pixels (``face.landmarks`` are in template pixels)."""
    m = np.vstack([face.matrix, [0.0, 0.0, 1.0]])
    pts = np.hstack([face.landmarks.astype(np.float64), np.ones((len(face.landmarks), 1))])
    return (pts @ np.linalg.inv(m).T)[:, :2]


def _gradient(gray: np.ndarray) -> np.ndarray:
    """Gradient magnitude of the slightly blurred frame, float32 (:func:`~nirvis.mining.score.gradient_magnitude`:
    the same for any memory address, so that a store does not depend on the worker that mined it)."""
    return gradient_magnitude(cv2.GaussianBlur(gray.astype(np.float32), (0, 0), 1.0)).astype(np.float32)


def register_frames(nir: np.ndarray, vis_gray: np.ndarray, nir_face: Face, vis_face: Face,
                    config: MiningConfig) -> PairRegistration:
    """The offset of the NIR frame against the VIS frame (see the module docstring).

    The landmark estimate ``d0`` is refined by normalised cross-correlation (``cv2.matchTemplate``) of the
    two frames' gradient magnitudes over the VIS face's box, searched within ``config.max_refine`` pixels
    of ``d0``, with sub-pixel peak interpolation. The NIR frame's defects (:func:`defect_mask`) are left
    out of its gradients, since the VIS frame has no such edges. The refinement is kept when its peak is
    inside the search range (not on its border) and correlates at least 0.2.

    Parameters
    ----------
    nir, vis_gray
        The source frames, ``(H, W)`` uint8 (VIS as luminance).
    nir_face, vis_face
        Each frame's own alignment (its landmarks).
    """
    pn, pv = _source_points(nir_face), _source_points(vis_face)
    d0 = np.median(pn - pv, axis=0)
    offset, refined = d0, False
    lo, hi = pv.min(axis=0), pv.max(axis=0)
    pad = 0.6 * float(hi[0] - lo[0]) + 4.0
    x0, y0 = np.floor(lo - pad).astype(int)
    x1, y1 = np.ceil(hi + pad).astype(int)
    r = int(np.ceil(config.max_refine))
    di = np.rint(d0).astype(int)
    h, w = nir.shape[:2]
    # The box must lie inside both frames, with the search margin inside the NIR frame.
    x0, y0 = max(x0, 0, r - di[0]), max(y0, 0, r - di[1])
    x1, y1 = min(x1, w, vis_gray.shape[1], w - r - di[0]), min(y1, h, vis_gray.shape[0], h - r - di[1])
    if x1 - x0 >= 16 and y1 - y0 >= 16:
        holes, bands = defect_mask(nir, nir)
        gn = np.where(holes | bands, 0.0, _gradient(nir)).astype(np.float32)
        template = _gradient(vis_gray)[y0:y1, x0:x1]
        search = gn[y0 + di[1] - r:y1 + di[1] + r, x0 + di[0] - r:x1 + di[0] + r]
        res = cv2.matchTemplate(search, template, cv2.TM_CCOEFF_NORMED)
        py, px = np.unravel_index(int(np.argmax(res)), res.shape)
        if 0 < px < res.shape[1] - 1 and 0 < py < res.shape[0] - 1 and res[py, px] >= 0.2:

            def vertex(a: float, b: float, c: float) -> float:  # sub-pixel peak of a parabola through 3 points
                den = a - 2 * b + c
                return 0.0 if abs(den) < 1e-12 else float(np.clip(0.5 * (a - c) / den, -0.5, 0.5))

            sx = vertex(res[py, px - 1], res[py, px], res[py, px + 1])
            sy = vertex(res[py - 1, px], res[py, px], res[py + 1, px])
            offset, refined = np.array([di[0] - r + px + sx, di[1] - r + py + sy]), True
    residual = float(np.linalg.norm(pn - (pv + offset), axis=1).mean())
    return PairRegistration((float(offset[0]), float(offset[1])), (float(d0[0]), float(d0[1])), refined, residual)


def shifted_matrix(matrix: np.ndarray, offset: tuple[float, float]) -> np.ndarray:
    """The alignment of the NIR frame: the VIS frame's ``(2, 3)`` ``matrix`` applied to ``p - offset``."""
    m = np.array(matrix, dtype=np.float64)
    m[:, 2] = m[:, 2] - m[:, :2] @ np.asarray(offset, np.float64)
    return m


def defect_mask(nir: np.ndarray, vis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(holes, bands)``: bool masks, in source pixels, of the depth sensor's holes (a zero NIR pixel, or a
    black VIS pixel) and of the wrap-around bands (a NIR step above :data:`BAND_STEP` to a neighbour), each
    grown by one pixel."""
    n = nir.astype(np.int16)
    v = vis.reshape(vis.shape[0], vis.shape[1], -1)
    holes = (n <= 1) | (v.max(axis=2) <= 1)
    bands = np.zeros(n.shape, bool)
    dx = np.abs(np.diff(n, axis=1)) > BAND_STEP
    dy = np.abs(np.diff(n, axis=0)) > BAND_STEP
    bands[:, 1:] |= dx
    bands[:, :-1] |= dx
    bands[1:] |= dy
    bands[:-1] |= dy
    grow = np.ones((3, 3), np.uint8)
    return (cv2.dilate(holes.astype(np.uint8), grow) > 0), (cv2.dilate(bands.astype(np.uint8), grow) > 0)


def _warp_mask(mask: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    return cv2.warpAffine(mask.astype(np.uint8), np.asarray(matrix, np.float64), (size, size),
                          flags=cv2.INTER_NEAREST, borderValue=0) > 0


@dataclass(frozen=True)
class RegisteredFaces:
    """Both frames of a pair warped with one alignment (see :func:`warp_registered`).

    ``nir`` ``(size, size)`` uint8, ``rgb`` ``(size, size, 3)`` uint8, and ``(size, size)`` bool masks:
    ``valid`` (inside both frames), ``holes``, ``bands``, ``saturated`` (a NIR value of 255).
    """

    nir: np.ndarray
    rgb: np.ndarray
    valid: np.ndarray
    holes: np.ndarray
    bands: np.ndarray
    saturated: np.ndarray


def warp_registered(nir: np.ndarray, rgb: np.ndarray, vis_matrix: np.ndarray, offset: tuple[float, float],
                    size: int = 224) -> RegisteredFaces:
    """Warp a simultaneous pair to the template with the VIS frame's alignment, the NIR frame shifted by
    ``offset`` (:func:`shifted_matrix`), and carry the defect masks along."""
    m_nir = shifted_matrix(vis_matrix, offset)
    holes, bands = defect_mask(nir, rgb)
    return RegisteredFaces(
        nir=warp_to_template(np.ascontiguousarray(nir), m_nir, size),
        rgb=warp_to_template(np.ascontiguousarray(rgb), vis_matrix, size),
        valid=valid_mask(m_nir, nir.shape[:2], size) & valid_mask(vis_matrix, rgb.shape[:2], size),
        holes=_warp_mask(holes, m_nir, size) | _warp_mask(holes, vis_matrix, size),
        bands=_warp_mask(bands, m_nir, size),
        saturated=_warp_mask(nir >= 255, m_nir, size),
    )


def mine_registered_pair(nir: np.ndarray, ycrcb: np.ndarray, faces: RegisteredFaces, config: MiningConfig
                         ) -> tuple[dict[str, list], dict[str, int]]:
    """Every unbroken face window of a registered pair (the geometric mode; module docstring).

    Parameters
    ----------
    nir, ycrcb
        The registered, photometrically normalised faces: ``(size, size)`` uint8 NIR and ``(size, size, 3)``
        uint8 VIS in OpenCV's YCrCb order.
    faces
        The masks of :func:`warp_registered`.

    Returns
    -------
    Rows and counters as :func:`nirvis.mining.miner.mine_pair` (window locations on the
    ``config.geometric_stride`` grid, as indices of :meth:`MiningConfig.location_grid`), with the
    counters ``windows``, ``kept`` and one per :data:`REJECT_KINDS`. The centre ``patch x patch`` of each
    window is the pair; its s1 and s2 are recorded (not tested).
    """
    size, w, p = config.size, config.window, config.patch
    m = (w - p) // 2
    fine = config.location_indices()
    inside_face = face_mask(size)
    rows: dict[str, list] = {k: [] for k in ("nir", "ycc", "loc_index", "s1", "s2", "scored_s1", "scored_s2")}
    counts = {"windows": 0, "kept": 0, **{k: 0 for k in REJECT_KINDS}}
    for y0, x0 in window_grid(size, w, config.geometric_stride).tolist():
        counts["windows"] += 1
        c = (slice(y0 + m, y0 + m + p), slice(x0 + m, x0 + m + p))
        if not faces.valid[y0:y0 + w, x0:x0 + w].all():
            kind = "outside"
        elif not inside_face[y0 + w // 2, x0 + w // 2]:
            kind = "not_face"
        elif faces.holes[c].any():
            kind = "hole"
        elif faces.bands[c].any():
            kind = "band"
        elif faces.saturated[c].mean() > 0.05:
            kind = "saturated"
        elif float(nir[c].std()) < config.min_window_std or float(ycrcb[c][..., 0].std()) < config.min_window_std:
            kind = "flat"
        else:
            kind = None
        if kind is not None:
            counts[kind] += 1
            continue
        s1, s2 = score_pair(nir[y0:y0 + w, x0:x0 + w], ycrcb[y0:y0 + w, x0:x0 + w, 0], p)
        rows["scored_s1"].append(s1)
        rows["scored_s2"].append(s2)
        counts["kept"] += 1
        rows["nir"].append(np.ascontiguousarray(centre_crop(nir[y0:y0 + w, x0:x0 + w], p)))
        rows["ycc"].append(np.ascontiguousarray(centre_crop(ycrcb[y0:y0 + w, x0:x0 + w], p)))
        rows["loc_index"].append(fine[(y0, x0)])
        rows["s1"].append(s1)
        rows["s2"].append(s2)
    return rows, counts
