"""Detector scaling: small images are upsampled, large ones downscaled before the cascade."""

import numpy as np
import pytest

from nirvis.faces import detect
from nirvis.faces.detect import DetectorConfig, detect_faces


def test_scale_upsamples_small_and_downscales_large_images():
    cfg = DetectorConfig()
    assert detect._scale_for((149, 119), cfg.min_side, cfg.max_upsample, cfg.max_side) == pytest.approx(360 / 119)
    assert detect._scale_for((40, 30), cfg.min_side, cfg.max_upsample, cfg.max_side) == 4.0  # capped upsampling
    assert detect._scale_for((1000, 500), cfg.min_side, cfg.max_upsample, cfg.max_side) == 1.0
    assert detect._scale_for((3000, 2000), cfg.min_side, cfg.max_upsample, cfg.max_side) == pytest.approx(1600 / 3000)
    mmod = detect._scale_for((3000, 2000), cfg.mmod_side, cfg.max_upsample, cfg.mmod_max_side)
    assert mmod == pytest.approx(800 / 3000)


def test_detectors_see_at_most_max_side_pixels(monkeypatch):
    seen = []

    class Fake:
        def run(self, img, *_):
            seen.append(img.shape)
            return [], [], []

        def __call__(self, img, *_):
            seen.append(img.shape)
            return []

    monkeypatch.setattr(detect.models, "hog_detector", lambda: Fake())
    monkeypatch.setattr(detect.models, "mmod_detector", lambda: Fake())
    assert detect_faces(np.zeros((3000, 2400), np.uint8)) == []
    assert len(seen) == 6 and max(max(s) for s in seen) <= 1600
    assert max(seen[2]) <= 800 and max(seen[5]) <= 800  # the two MMOD steps
