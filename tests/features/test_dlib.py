import json

import numpy as np
import pytest

from nirvis._io import read_image
from nirvis.faces.align import FaceAligner
from nirvis.features.base import available_embedders, get_embedder
from nirvis.features.dlib_resnet import DlibResNetEmbedder, dlib_chip

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def faces(rap3df_root):
    """Front NIR and VIS faces of three people, aligned once."""
    db = json.loads((rap3df_root / "rap3df_data_02" / "database.json").read_text())
    aligner = FaceAligner()
    out = []
    for person in sorted(db)[:3]:
        cap = db[person]["front"][0]
        out.append((person,
                    aligner.align(read_image(rap3df_root / cap["rgb"])),
                    aligner.align(read_image(rap3df_root / cap["ir_with_bg"], channel="red"))))
    return out


def test_chip_is_dlibs_150px_rgb_input(faces):
    chip = dlib_chip(faces[0][2])  # a gray NIR face, replicated to RGB
    assert chip.shape == (150, 150, 3) and chip.dtype == np.uint8
    assert (chip[..., 0] == chip[..., 1]).all()


def test_features_are_unit_128d_and_deterministic(faces):
    emb = get_embedder("dlib")
    x = emb.embed([f for _, v, n in faces for f in (v, n)])
    assert x.shape == (6, 128) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(x, emb.embed([f for _, v, n in faces for f in (v, n)]))


def test_same_person_across_spectra_is_closer_than_other_people(faces):
    emb = DlibResNetEmbedder()
    vis = emb.embed([v for _, v, _ in faces])
    nir = emb.embed([n for _, _, n in faces])
    s = nir @ vis.T
    assert (np.argmax(s, axis=1) == np.arange(3)).all(), s


def test_fingerprint_tracks_settings_and_registry_lists_names():
    assert DlibResNetEmbedder(flip=True).fingerprint != DlibResNetEmbedder(flip=False).fingerprint
    assert DlibResNetEmbedder().fingerprint == DlibResNetEmbedder().fingerprint
    assert {"dlib", "onnx"} <= set(available_embedders())
    with pytest.raises(ValueError,
                       match="unknown embedder 'vgg'; available: dlib, dlib-noflip, edgeface-xs, edgeface-xxs, onnx"):
        get_embedder("vgg")
    with pytest.raises(ValueError, match="num_jitters must be >= 0"):
        DlibResNetEmbedder(num_jitters=-1)


def test_fingerprint_tracks_the_weights_bytes(tmp_path, monkeypatch):
    import nirvis.features.dlib_resnet as mod

    base = DlibResNetEmbedder().fingerprint
    other = tmp_path / mod.models.model_path("resnet").name  # same file name, other bytes
    other.write_bytes(b"other weights")
    monkeypatch.setattr(mod.models, "model_path", lambda name: other)
    mod._weights_id.cache_clear()
    try:
        assert DlibResNetEmbedder().fingerprint != base
    finally:
        mod._weights_id.cache_clear()


def test_empty_batch():
    assert DlibResNetEmbedder().embed([]).shape == (0, 128)


def test_bad_settings_and_registry_names_are_clear():
    import nirvis.features as features

    for padding in (-1, float("nan")):
        with pytest.raises(ValueError, match="padding must be a finite number >= 0"):
            DlibResNetEmbedder(padding=padding)
    with pytest.raises(ValueError, match="embedder 'onnx' cannot be built from no arguments: .*model_path"):
        get_embedder("onnx")
    assert features.OnnxEmbedder.__name__ == "OnnxEmbedder" and features.Embedder is not None
