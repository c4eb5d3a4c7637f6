import numpy as np

from nirvis.faces.normalize import match_mean_std, reference_stats


def test_matches_reference_statistics():
    rng = np.random.default_rng(0)
    img = rng.normal(50, 10, (32, 32, 3))
    ref = rng.normal(120, 30, (32, 32, 3))
    out = match_mean_std(img, *reference_stats(ref), out_dtype=np.float64)
    np.testing.assert_allclose(out.mean(axis=(0, 1)), ref.mean(axis=(0, 1)), atol=1e-9)
    np.testing.assert_allclose(out.std(axis=(0, 1)), ref.std(axis=(0, 1)), atol=1e-9)


def test_flat_channel_gets_the_mean_and_no_nan():
    out = match_mean_std(np.full((8, 8), 3.0), 100.0, 20.0)
    assert out.dtype == np.uint8 and (out == 100).all()


def test_uint8_output_is_clipped():
    out = match_mean_std(np.arange(64, dtype=float).reshape(8, 8), 250.0, 60.0)
    assert out.max() == 255 and out.dtype == np.uint8


def test_reference_stats_can_measure_inside_a_mask():
    img = np.zeros((4, 4, 3))
    img[:2] = 100.0  # only the masked half is face
    mask = np.zeros((4, 4), bool)
    mask[:2] = True
    mean, std = reference_stats(img, mask)
    np.testing.assert_allclose(mean, 100.0)
    np.testing.assert_allclose(std, 0.0)
    assert reference_stats(img)[0][0] == 50.0
