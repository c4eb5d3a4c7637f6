"""dlib's face-recognition ResNet in PyTorch against dlib itself."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from nirvis.features.dlib_torch import DlibWeightsError, load_dlib_resnet, read_dlib_weights


def _chips(n: int = 4, seed: int = 0) -> np.ndarray:
    """Smooth random RGB 150x150 chips (dlib's network takes any image of that size)."""
    rng = np.random.default_rng(seed)
    out = [cv2.GaussianBlur(rng.uniform(0, 255, (150, 150, 3)).astype(np.float32), (0, 0), 3) for _ in range(n)]
    return np.stack([cv2.normalize(c, None, 10, 245, cv2.NORM_MINMAX) for c in out]).astype(np.uint8)


def test_port_gives_dlibs_descriptors() -> None:
    import dlib
    import face_recognition_models

    ref_net = dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location())
    chips = _chips()
    ref = np.array([np.array(ref_net.compute_face_descriptor(c)) for c in chips])
    net = load_dlib_resnet()
    with torch.no_grad():
        out = net(torch.from_numpy(chips).permute(0, 3, 1, 2).float()).numpy()
    assert out.shape == (4, 128)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    assert not any(p.requires_grad for p in net.parameters())


def test_gradients_reach_the_input() -> None:
    net = load_dlib_resnet()
    x = torch.from_numpy(_chips(2)).permute(0, 3, 1, 2).float().requires_grad_(True)
    net(x).pow(2).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_the_weights_file_is_parsed_and_a_wrong_file_refused(tmp_path) -> None:
    import face_recognition_models

    w = read_dlib_weights(face_recognition_models.face_recognition_model_location())
    assert [len(w[k]) for k in ("con", "affine", "fc")] == [29, 29, 1]
    assert w["con"][0].size == 7 * 7 * 3 * 32 + 32 and w["fc"][0].size == 256 * 128
    np.testing.assert_allclose(w["input_mean"][0], [122.782, 117.001, 104.298], atol=1e-3)
    bad = tmp_path / "model.dat"
    bad.write_bytes(b"\x01\x01 not a network")
    with pytest.raises(DlibWeightsError, match="not dlib's face-recognition ResNet"):
        load_dlib_resnet(bad)
    with pytest.raises(DlibWeightsError, match="cannot read"):
        load_dlib_resnet(tmp_path / "missing.dat")
