"""Geometric mining of simultaneous frames: offsets, one shared warp, the defect masks, the window tests."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from nirvis.faces.types import Face
from nirvis.mining.config import MiningConfig
from nirvis.mining.registered import (REJECT_KINDS, defect_mask, face_mask, mine_registered_pair, register_frames,
                                      shifted_matrix, warp_registered)


def _texture(shape=(150, 120), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.uniform(0, 255, shape).astype(np.float32), (0, 0), 2.0)
    img = (img - img.min()) / (img.max() - img.min()) * 200 + 30
    return img.astype(np.uint8)


def _face(points_src: np.ndarray) -> Face:
    """A face whose alignment is a 2x scale (source -> template), landmarks given in source pixels."""
    m = np.array([[2.0, 0, -10.0], [0, 2.0, -20.0]])
    lm = points_src @ m[:, :2].T + m[:, 2]
    return Face(np.zeros((224, 224), np.uint8), lm.astype(np.float32), lm[:3].astype(np.float32), m, "test", 1.0)


POINTS = np.array([[40.0, 60], [52, 60], [80, 60], [68, 60], [60, 85]])


def test_shifted_matrix_maps_the_nir_point_where_the_vis_point_goes() -> None:
    m = np.array([[1.9, -0.2, 5.0], [0.2, 1.9, -3.0]])
    d = (-11.0, -5.5)
    p = np.array([30.0, 40.0])
    np.testing.assert_allclose(shifted_matrix(m, d) @ np.r_[p + d, 1], m @ np.r_[p, 1])


def test_face_mask_covers_the_face_and_not_the_corners() -> None:
    m = face_mask(224)
    assert m[92, 80] and m[92, 144] and m[163, 112] and m[124, 112]  # eyes, mouth, centre
    assert not m[0, 0] and not m[223, 223] and not m[5, 112]
    assert (m != m[:, ::-1]).mean() < 0.01  # symmetric in x, but for the half-pixel of the centre
    assert face_mask(112).sum() == pytest.approx(m.sum() / 4, rel=0.05)


def test_defect_mask_finds_holes_and_wrap_around_bands() -> None:
    nir = np.full((40, 40), 120, np.uint8)
    nir[5, 5] = 0                      # a depth hole
    nir[20:, 30:] = 250                # a wrap-around step (120 -> 250)
    vis = np.full((40, 40, 3), 90, np.uint8)
    vis[35, 2] = 0                     # a black VIS pixel
    holes, bands = defect_mask(nir, vis)
    assert holes[5, 5] and holes[4, 6] and holes[35, 2] and not holes[20, 20]
    assert bands[25, 29] and bands[25, 30] and bands[19, 35] and not bands[10, 10] and not bands[30, 35]


def test_register_frames_recovers_the_offset_beyond_landmark_noise() -> None:
    vis = _texture()
    d = np.array([-4.0, 3.0])
    nir = cv2.warpAffine(vis, np.array([[1, 0, d[0]], [0, 1, d[1]]], np.float64), vis.shape[::-1],
                         borderMode=cv2.BORDER_REFLECT)
    nir = np.clip(255 - nir.astype(np.float32) * 0.8, 0, 255).astype(np.uint8)  # another spectrum: inverted, dimmer
    noise = np.array([[1.5, -1.0], [-1.0, 1.2], [0.8, 1.1], [-1.3, -0.7], [1.0, 1.4]])
    cfg = MiningConfig()
    reg = register_frames(nir, vis, _face(POINTS + d + noise), _face(POINTS), cfg)
    assert reg.refined
    np.testing.assert_allclose(reg.offset, d, atol=0.35)
    assert np.abs(np.array(reg.landmark_offset) - d).max() > 0.5  # the landmarks alone were off
    assert reg.residual == pytest.approx(np.linalg.norm(noise + d - np.array(reg.offset), axis=1).mean())


def test_registered_pair_mining_counts_every_window_once() -> None:
    vis_gray = _texture((224, 224), seed=1)
    rgb = np.repeat(vis_gray[:, :, None], 3, axis=2)
    nir = 255 - vis_gray
    nir[100:110, 100:110] = 0          # a hole in the middle of the face
    cfg = MiningConfig(geometric_stride=12, simultaneous="geometric")
    faces = warp_registered(nir, rgb, np.array([[1.0, 0, 0], [0, 1.0, 0]]), (0.0, 0.0))
    ycc = cv2.cvtColor(faces.rgb, cv2.COLOR_RGB2YCrCb)
    rows, counts = mine_registered_pair(faces.nir, ycc, faces, cfg)
    assert counts["windows"] == 14 * 14 == counts["kept"] + sum(counts[k] for k in REJECT_KINDS)
    assert counts["hole"] > 0 and counts["not_face"] > 0 and counts["kept"] > 0
    grid = cfg.location_grid()
    for patch, li in zip(rows["nir"], rows["loc_index"]):
        y0, x0 = grid[li]
        np.testing.assert_array_equal(patch, faces.nir[y0 + 10:y0 + 50, x0 + 10:x0 + 50])
        assert not faces.holes[y0 + 10:y0 + 50, x0 + 10:x0 + 50].any()
        assert face_mask()[y0 + 30, x0 + 30]
    # NIR is the inverted VIS here: the patches correlate perfectly, negatively (recorded, not tested)
    assert max(rows["s1"]) < -0.9


def test_location_grid_holds_both_window_grids() -> None:
    cfg = MiningConfig(simultaneous="geometric")
    fine = {tuple(c) for c in cfg.location_grid().tolist()}
    assert cfg.location_step == 6 and len(fine) == 28 * 28
    assert {(y, x) for y in range(0, 165, 12) for x in range(0, 165, 12)} <= fine
    assert MiningConfig().location_grid().shape == (196, 2)
    assert MiningConfig.from_dict({"stride": 12, "_fingerprint": "x"}).simultaneous == "paper"  # an older store
