"""Equation (1) (paper Sec. 3.2): both readings, the sign of the Laplacian of Gaussian, and YCrCb -> RGB."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy import ndimage

from nirvis.hallucination.blend import BlendConfig, blend_luminance, ycrcb_to_rgb


def _highpass_energy(img: np.ndarray) -> float:
    return float(((img - ndimage.gaussian_filter(img, 2.0)) ** 2).sum())


def _smooth_face(seed: int = 0, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.random((size, size)), 4.0) * 400 + 20


def test_alpha_zero_is_identity_and_config_defaults() -> None:
    cfg = BlendConfig()
    assert (cfg.alpha, cfg.sigma, cfg.reading) == (0.6, 1.0, "log")
    y = np.random.default_rng(1).random((2, 16, 16))
    for reading in ("log", "gaussian"):
        np.testing.assert_array_equal(blend_luminance(y, y + 3.0, BlendConfig(alpha=0.0, reading=reading)), y)


def test_log_smooths_the_cnn_output() -> None:
    """With NIR = Ŷ the result is Ŷ + α ∇²G∗Ŷ: one heat-equation step, so high frequencies lose energy."""
    rng = np.random.default_rng(0)
    y_hat = _smooth_face() + rng.normal(0, 10, (64, 64))
    out = blend_luminance(y_hat, np.zeros_like(y_hat) + y_hat.mean(), BlendConfig(alpha=0.6))
    # NIR flat: only the smoothing terms act (∇²G of a constant is 0).
    assert _highpass_energy(out) < 0.7 * _highpass_energy(y_hat)
    # A cosine at the peak of |ω|² exp(-σ²|ω|²/2) (|ω| = √2/σ) is damped by 1 - α·2/e ≈ 0.56.
    x = np.arange(128)
    wave = np.cos(np.sqrt(2.0) * x)[None, :].repeat(128, 0)
    damped = blend_luminance(wave, np.zeros_like(wave), BlendConfig(alpha=0.6))
    # NIR = 0 adds -α ∇²G∗(0 - Ŷ) = +α ∇²G∗Ŷ: the same smoothing term.
    gain = np.abs(damped[:, 20:-20]).max() / np.abs(wave[:, 20:-20]).max()
    assert gain == pytest.approx(1 - 0.6 * 2 / np.e, abs=0.05)


def test_log_brings_the_nir_detail_in() -> None:
    """Ŷ lacks the NIR's fine detail; Y - Ŷ = -α ∇²G∗(NIR - Ŷ) is that detail, with the right sign."""
    rng = np.random.default_rng(2)
    nir = _smooth_face(3) + ndimage.gaussian_filter(rng.normal(0, 30, (64, 64)), 1.0)
    y_hat = ndimage.gaussian_filter(nir, 3.0)
    out = blend_luminance(y_hat, nir, BlendConfig(alpha=0.6))
    added, missing = (out - y_hat)[8:-8, 8:-8].ravel(), (nir - y_hat)[8:-8, 8:-8].ravel()
    assert np.corrcoef(added, missing)[0, 1] > 0.5
    assert _highpass_energy(out - nir) < 0.8 * _highpass_energy(y_hat - nir)


def test_gaussian_reading_pushes_away_from_nir() -> None:
    """The literal reading subtracts a low-pass of (NIR - Ŷ): the result moves away from NIR (PAPER-NOTES)."""
    nir = _smooth_face(4)
    y_hat = nir - 10.0
    out = blend_luminance(y_hat, nir, BlendConfig(alpha=0.6, reading="gaussian"))
    np.testing.assert_allclose(out, y_hat - 6.0, atol=1e-6)  # G∗G∗10 = 10 (borders reflected)
    assert np.abs(out - nir).mean() > np.abs(y_hat - nir).mean()


def test_batch_units_and_linearity() -> None:
    rng = np.random.default_rng(5)
    y_hat, nir = rng.random((3, 20, 24)), rng.random((3, 20, 24))
    for reading in ("log", "gaussian"):
        cfg = BlendConfig(alpha=0.7, sigma=1.5, reading=reading)
        batch = blend_luminance(y_hat, nir, cfg)
        single = np.stack([blend_luminance(a, b, cfg) for a, b in zip(y_hat, nir)])
        np.testing.assert_allclose(batch, single, rtol=1e-12)  # images filtered independently
        np.testing.assert_allclose(blend_luminance(255 * y_hat, 255 * nir, cfg), 255 * batch, rtol=1e-10)
    assert blend_luminance(y_hat.astype(np.float32), nir.astype(np.float32)).dtype == np.float32


def test_errors_name_the_bad_value() -> None:
    with pytest.raises(ValueError, match="reading must be one of.*'laplace'"):
        BlendConfig(reading="laplace")
    with pytest.raises(ValueError, match=r"sigma must be a number in \(0, 56.0\] pixels .*got 1000.0"):
        BlendConfig(sigma=1000.0)  # a huge filter ran for minutes per face
    with pytest.raises(ValueError, match=r"sigma must be a number in \(0, 56.0\].*got 0"):
        BlendConfig(sigma=0)
    with pytest.raises(ValueError, match="alpha must be .* >= 0, got -1"):
        BlendConfig(alpha=-1)
    with pytest.raises(ValueError, match=r"\(4, 4\) and \(4, 5\)"):
        blend_luminance(np.zeros((4, 4)), np.zeros((4, 5)))
    assert BlendConfig().fingerprint() != BlendConfig(reading="gaussian").fingerprint()
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0, got True"):
        BlendConfig(alpha=True)
    # numpy numbers are numbers (np.int64(1) was refused with a message saying 1 was out of range)
    assert BlendConfig(alpha=np.float32(0.6), sigma=np.int64(1)).to_dict() == pytest.approx(
        {"alpha": 0.6, "sigma": 1.0, "reading": "log"})


def test_ycrcb_to_rgb_inverts_opencv() -> None:
    rng = np.random.default_rng(6)
    rgb = rng.integers(0, 256, (2, 8, 9, 3), dtype=np.uint8)
    ycc = np.stack([cv2.cvtColor(im, cv2.COLOR_RGB2YCrCb) for im in rgb]).astype(np.float32)
    back = ycrcb_to_rgb(ycc[..., 0], ycc[..., 1], ycc[..., 2])
    assert back.shape == rgb.shape and back.dtype == np.uint8
    assert np.abs(back.astype(int) - rgb).max() <= 3  # 8-bit YCrCb round trip
    gray = ycrcb_to_rgb(np.full((4, 4), 300.0), np.full((4, 4), 128.0), np.full((4, 4), 128.0))
    assert gray.shape == (4, 4, 3) and (gray == 255).all()  # clipped, neutral chroma
