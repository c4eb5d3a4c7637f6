"""Windows, registration and scoring (paper Sec. 3.1) on synthetic images."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from nirvis.mining.config import MiningConfig
from nirvis.mining.miner import mine_pair
from nirvis.mining.register import FAIL_FLAT, register_window, warp_window
from nirvis.mining.score import accept, correlation, score_pair
from nirvis.mining.windows import centre_crop, mirror_x, window_grid

from .synth import texture, warped_vis


def _ycrcb(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)


def test_window_grid_is_the_papers() -> None:
    grid = window_grid(224, 60, 12)
    assert grid.shape == (196, 2)
    assert grid[:, 0].max() == 156 and grid[1].tolist() == [0, 12]
    assert mirror_x(0) == 164 and mirror_x(156) == 8
    assert centre_crop(np.zeros((60, 60)), 40).shape == (40, 40)


def test_correlation_of_flat_patch_is_zero_not_nan() -> None:
    flat = np.full((40, 40), 7.0)
    other = np.random.default_rng(0).random((40, 40))
    assert correlation(flat, other) == 0.0
    s1, s2 = score_pair(np.full((60, 60), 9, np.float32), np.full((60, 60), 3, np.float32), 40)
    assert (s1, s2) == (0.0, 0.0) and not accept(s1, s2, MiningConfig())
    assert correlation(other, 2 * other + 1) == pytest.approx(1.0)


def test_acceptance_thresholds_are_configurable() -> None:
    cfg = MiningConfig()
    assert accept(0.6, 0.5, cfg) and not accept(0.5, 0.5, cfg) and not accept(0.9, 0.35, cfg)
    assert accept(0.3, 0.3, MiningConfig(min_sum=0.5, min_s1=0.2, min_s2=0.2))
    with pytest.raises(ValueError, match="min_sum must be a finite number, got nan"):
        MiningConfig(min_sum=float("nan"))  # would silently keep no pair


def test_flat_window_is_a_counted_failure_without_nan() -> None:
    warp, kind = register_window(np.zeros((60, 60), np.float32), np.ones((60, 60), np.float32), MiningConfig())
    assert warp is None and kind == FAIL_FLAT


def test_registration_recovers_a_small_affine_warp() -> None:
    a = texture(1)[80:140, 80:140].astype(np.float32)
    m = np.array([[1.02, 0.01, 1.2], [-0.01, 0.99, -0.8]], np.float32)
    b = cv2.warpAffine(a, m, (60, 60), borderMode=cv2.BORDER_REFLECT)
    warp, kind = register_window(a, b, MiningConfig())
    assert kind is None
    np.testing.assert_allclose(warp, m, atol=0.05)
    s1, s2 = score_pair(a, warp_window(b, warp), 40)
    assert s1 > 0.98 and s2 > 0.95


@pytest.mark.parametrize("motion", ["translation+affine", "affine", "translation"])
def test_every_motion_recovers_a_shift(motion: str) -> None:
    a = texture(2)[80:140, 80:140].astype(np.float32)
    m = np.array([[1, 0, 2.5], [0, 1, -1.5]], np.float32)
    b = cv2.warpAffine(a, m, (60, 60), borderMode=cv2.BORDER_REFLECT)
    warp, kind = register_window(a, b, MiningConfig(motion=motion))
    assert kind is None
    np.testing.assert_allclose(warp[:, 2], m[:, 2], atol=0.2)


def test_translation_only_keeps_the_linear_part_at_identity() -> None:
    a = texture(1)[80:140, 80:140].astype(np.float32)
    m = np.array([[1.02, 0.01, 1.2], [-0.01, 0.99, -0.8]], np.float32)
    b = cv2.warpAffine(a, m, (60, 60), borderMode=cv2.BORDER_REFLECT)
    warp, _ = register_window(a, b, MiningConfig(motion="translation"))
    np.testing.assert_array_equal(warp[:, :2], np.eye(2, dtype=np.float32))
    with pytest.raises(ValueError, match="motion must be one of .* got 'homography'"):
        MiningConfig(motion="homography")


def test_warped_copy_is_accepted_and_noise_rejected() -> None:
    cfg = MiningConfig(stride=24)
    nir = texture(3)
    rows, counts = mine_pair(nir, _ycrcb(warped_vis(nir, 3)), cfg)
    assert counts["windows"] == 49
    assert counts["kept"] >= 45
    assert min(rows["s1"]) >= 0.4 and min(rows["s2"]) >= 0.4
    noise = np.random.default_rng(5).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    rows, counts = mine_pair(nir, _ycrcb(noise), cfg)
    assert counts["kept"] == 0
    assert not np.isnan(rows["scored_s1"]).any()
    assert counts["windows"] == counts["outside"] + counts["registered"] + counts["flat"] + counts["ecc_error"] + counts["implausible"]


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="window - patch must be even"):
        MiningConfig(window=61)
    with pytest.raises(ValueError, match="prune_quantile"):
        MiningConfig(prune_quantile=0.0)


def test_gradient_magnitude_does_not_depend_on_memory_address() -> None:
    # cv2.magnitude on float32 differed in the last bit with the buffer's alignment; a store must not.
    from nirvis.mining.score import gradient_magnitude

    img = np.random.default_rng(0).integers(0, 256, (60, 60)).astype(np.uint8)
    base = gradient_magnitude(img)
    for off in range(1, 16):
        buf = np.empty(60 * 60 + 64, np.uint8)
        view = np.frombuffer(buf[off:off + 3600].data, np.uint8).reshape(60, 60)
        view[:] = img
        np.testing.assert_array_equal(gradient_magnitude(view), base)
        f32 = np.frombuffer(np.empty(3600 * 4 + 64, np.uint8)[off * 4 % 16:off * 4 % 16 + 3600 * 4].data,
                            np.float32).reshape(60, 60)
        f32[:] = img
        np.testing.assert_array_equal(gradient_magnitude(f32), base)
