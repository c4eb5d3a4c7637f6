"""The real EdgeFace networks (../shared/models) on real RAP3DF faces: OnnxEmbedder gives exactly what ONNX
Runtime gives when run directly on the same input; features behave like face features. Skipped, with the
reason, when the model files or the data are absent."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nirvis._io import read_image
from nirvis.faces.align import FaceAligner
from nirvis.features.models import ChecksumError, ModelNotFoundError, find_model, get_model_spec, known_embedder
from nirvis.features.onnx import OnnxEmbedder, preprocess_faces

pytestmark = pytest.mark.data


def _model(name: str):
    try:
        return find_model(name)
    except (ModelNotFoundError, ChecksumError) as exc:
        pytest.skip(f"{name} not available: {exc}")


@pytest.fixture(scope="module")
def faces(rap3df_root):
    """Front VIS and NIR faces of three people, then a side NIR face of the first, aligned once."""
    db = json.loads((rap3df_root / "rap3df_data_02" / "database.json").read_text())
    aligner = FaceAligner()
    out = []
    for person in sorted(db)[:3]:
        cap = db[person]["front"][0]
        out.append(aligner.align(read_image(rap3df_root / cap["rgb"]), source=cap["rgb"]))
        out.append(aligner.align(read_image(rap3df_root / cap["ir_with_bg"], channel="red"), source=cap["ir_with_bg"]))
    return out


@pytest.mark.parametrize("name", ["edgeface-xs", "edgeface-xxs"])
def test_embedder_equals_onnxruntime_run_directly(faces, name):
    import onnxruntime as ort

    path = _model(name)
    spec = get_model_spec(name)
    emb = OnnxEmbedder(path, spec.preprocess(), name=name, batch_size=4, intra_op_num_threads=1)
    got = emb.embed(faces)  # two batches: 4 + 2

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input"] and sess.get_outputs()[0].name == "embedding"
    x = preprocess_faces(faces, spec.preprocess())
    assert x.shape == (len(faces), 3, 112, 112) and x.dtype == np.float32
    assert -1.0 <= x.min() and x.max() <= 1.0  # (pixel - 127.5) / 127.5
    raw = np.vstack([sess.run(["embedding"], {"input": x[i:i + 1]})[0] for i in range(len(x))])
    assert raw.shape == (len(faces), spec.dim) and not np.allclose(np.linalg.norm(raw, axis=1), 1.0)  # not normalised
    want = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    # Batched (4 + 2) against one face at a time: the same numbers up to float rounding.
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
    # The same batch through both: identical.
    direct = sess.run(["embedding"], {"input": x[:4]})[0]
    np.testing.assert_array_equal(emb.embed(faces[:4]), (direct / np.linalg.norm(direct, axis=1, keepdims=True))
                                  .astype(np.float32))


def test_known_embedder_features_separate_people(faces):
    _model("edgeface-xs")
    emb = known_embedder("edgeface-xs")
    assert emb.name == "edgeface-xs" and emb.dim == 512 and emb.fingerprint.startswith("edgeface-xs:")
    f = emb.embed(faces)
    assert f.shape == (6, 512) and f.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, atol=1e-5)
    sim = f @ f.T
    vis, nir = f[0::2], f[1::2]
    cross = vis @ nir.T  # rows: VIS of each person, columns: NIR of each person
    # each NIR face is closest to the VIS face of its own person
    assert (cross.argmax(axis=0) == np.arange(3)).all(), np.round(cross, 3)
    assert sim[0, 2] < sim[0, 0]


def test_crops_are_what_each_network_sees(faces):
    """EdgeFace's crop is its 112x112 input before normalisation; dlib's is its 150x150 chip; both put the eyes
    where their templates do."""
    from nirvis.features.dlib_resnet import DlibResNetEmbedder, dlib_chip
    from nirvis.features.onnx import ARCFACE_DLIB5_TEMPLATE

    spec = get_model_spec("edgeface-xs")
    emb = OnnxEmbedder(_model("edgeface-xs"), spec.preprocess(), name="edgeface-xs")
    crops = emb.crops(faces)
    assert all(c.shape == (112, 112, 3) and c.dtype == np.uint8 for c in crops)
    x = preprocess_faces(faces, spec.preprocess())
    np.testing.assert_allclose(x, (np.stack(crops).astype(np.float32).transpose(0, 3, 1, 2) - 127.5) / 127.5,
                               atol=1e-6)
    # the landmarks land on the template: the eye row of the crop is darker than the cheek row below it
    eye_y = int(round(ARCFACE_DLIB5_TEMPLATE[0][1]))
    assert np.mean([c[eye_y - 2:eye_y + 3].mean() < c[eye_y + 14:eye_y + 19].mean() for c in crops]) >= 0.5
    chips = DlibResNetEmbedder().crops(faces[:2])
    assert all(c.shape == (150, 150, 3) for c in chips)
    np.testing.assert_array_equal(chips[0], dlib_chip(faces[0]))
