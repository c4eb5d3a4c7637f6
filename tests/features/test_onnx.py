"""OnnxEmbedder against tiny ONNX models built here, checked against a numpy reimplementation."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from nirvis.faces.types import Face  # noqa: E402
from nirvis.faces.align import similarity_transform
from nirvis.features.onnx import (  # noqa: E402
    ARCFACE_DLIB5_TEMPLATE,
    OnnxEmbedder,
    OnnxPreprocess,
    dlib5_keypoints,
)

POOL = 16  # the test model averages 16x16 blocks, so it sees where things are, not only their mean
DIM = 8


def make_model(
    path: Path,
    *,
    size: tuple[int, int] = (112, 112),
    layout: str = "NCHW",
    batch: int | str = "N",
    out_dim: int | str = DIM,
    seed: int = 0,
    two_inputs: bool = False,
    out_4d: bool = False,
) -> tuple[Path, np.ndarray, np.ndarray]:
    """Image batch -> [transpose to NCHW] -> 16x16 average pool -> flatten -> x @ W + b. Returns (path, W, b)."""
    width, height = size
    feat_in = 3 * (height // POOL) * (width // POOL)
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((feat_in, DIM)).astype(np.float32)
    b = rng.standard_normal(DIM).astype(np.float32)
    in_shape = [batch, 3, height, width] if layout == "NCHW" else [batch, height, width, 3]
    inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, in_shape)]
    nodes = []
    x = "image"
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", [x], ["nchw"], perm=[0, 3, 1, 2]))
        x = "nchw"
    nodes += [
        helper.make_node("AveragePool", [x], ["pooled"], kernel_shape=[POOL, POOL], strides=[POOL, POOL]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "W"], ["proj"]),
        helper.make_node("Add", ["proj", "b"], ["features"]),
    ]
    out_shape: list[int | str] = [batch, out_dim]
    if two_inputs:
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT, [batch, DIM]))
        nodes.append(helper.make_node("Mul", ["features", "mask"], ["masked"]))
        out_name = "masked"
    elif out_4d:
        nodes.append(helper.make_node("Unsqueeze", ["features", "axes"], ["features4d"]))
        out_name = "features4d"
        out_shape = [batch, out_dim, 1, 1]
    else:
        out_name = "features"
    initializers = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")]
    if out_4d:
        initializers.append(numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes"))
    graph = helper.make_graph(nodes, "tiny_face_net", inputs,
                              [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, out_shape)], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path, w, b


def make_face(seed: int = 0, *, gray: bool = False, angle_deg: float = 4.0) -> Face:
    """A 224x224 synthetic face with dlib's 5 points, slightly rotated, shifted and scaled off the template."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:224, 0:224].astype(np.float32)
    base = np.stack([xx, yy, 224 - xx], axis=2) * (255 / 224)
    noise = cv2.GaussianBlur(rng.uniform(0, 255, (224, 224, 3)).astype(np.float32), (0, 0), 3)
    rgb = np.clip(0.5 * base + 0.5 * noise + rng.uniform(-20, 20, 3), 0, 255).astype(np.uint8)
    image = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if gray else rgb
    # dlib order: eye_r_outer, eye_r_inner, eye_l_outer, eye_l_inner, nose_base ("r" = image right).
    pts = np.array([[154, 94], [138, 94], [70, 94], [86, 94], [112, 140]], dtype=np.float64)
    t = np.deg2rad(angle_deg)
    rot = 1.05 * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    pts = (pts - 112) @ rot.T + 112 + rng.uniform(-3, 3, 2) + rng.normal(0, 0.7, (5, 2))
    return Face(image=image, landmarks=pts.astype(np.float32), anchors=np.zeros((3, 2), np.float32),
                matrix=np.eye(2, 3), method="synthetic", score=1.0, source=f"synthetic-{seed}")


def expected_features(face: Face, pre: OnnxPreprocess, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Independent reimplementation: keypoints, lstsq similarity, warp, colour order, normalisation, model."""
    lm = face.landmarks.astype(np.float64)
    eye_a, eye_b = lm[0:2].mean(axis=0), lm[2:4].mean(axis=0)
    left, right = (eye_a, eye_b) if eye_a[0] < eye_b[0] else (eye_b, eye_a)
    src = np.array([left, right, lm[4]])
    dst = np.array(pre.template, dtype=np.float64)
    # x' = a x - b y + tx ; y' = b x + a y + ty, solved by generic least squares.
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src, dst):
        rows += [[x, -y, 1, 0], [y, x, 0, 1]]
        rhs += [u, v]
    a, bb, tx, ty = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0]
    matrix = np.array([[a, -bb, tx], [bb, a, ty]])
    width, height = pre.input_size
    rgb = face.image if face.image.ndim == 3 else np.dstack([face.image] * 3)
    crop = cv2.warpAffine(rgb, matrix, (width, height), flags=cv2.INTER_LINEAR, borderValue=0).astype(np.float64)
    if pre.color_order == "BGR":
        crop = crop[:, :, ::-1]
    crop = (crop - np.array(pre.mean)) / np.array(pre.std)
    chw = crop.transpose(2, 0, 1)
    pooled = chw.reshape(3, height // POOL, POOL, width // POOL, POOL).mean(axis=(2, 4))
    feat = pooled.reshape(-1) @ w.astype(np.float64) + b
    return feat / np.linalg.norm(feat)


@pytest.fixture
def model(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    return make_model(tmp_path / "tiny.onnx")


@pytest.mark.parametrize(
    "layout, color_order, size, template",
    [
        ("NCHW", "RGB", (112, 112), ARCFACE_DLIB5_TEMPLATE),
        ("NHWC", "BGR", (96, 128), ((30.0, 60.0), (66.0, 58.0), (48.0, 92.0))),  # width 96, height 128
    ],
)
def test_embed_matches_numpy_reference(tmp_path, layout, color_order, size, template):
    path, w, b = make_model(tmp_path / "m.onnx", size=size, layout=layout)
    pre = OnnxPreprocess(input_size=size, mean=(120.0, 110.0, 100.0), std=(60.0, 70.0, 80.0),
                         color_order=color_order, layout=layout, template=template)
    face = make_face(3)
    got = OnnxEmbedder(path, pre).embed([face])
    assert got.shape == (1, DIM) and got.dtype == np.float32
    np.testing.assert_allclose(got[0], expected_features(face, pre, w, b), atol=2e-5)


def test_similarity_transform_maps_keypoints_onto_template():
    face = make_face(1, angle_deg=-7.0)
    kp = dlib5_keypoints(face.landmarks)
    assert kp[0, 0] < kp[1, 0]  # image-left eye first, whatever dlib calls it
    # Keypoints that are an exact similarity of the template are mapped onto it exactly.
    tpl = np.array(ARCFACE_DLIB5_TEMPLATE)
    t = np.deg2rad(10)
    src = 2.1 * tpl @ np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]]) + [40.0, -7.0]
    m = similarity_transform(src, tpl)
    np.testing.assert_allclose(np.c_[src, np.ones(3)] @ m.T, tpl, atol=1e-9)


def test_eye_order_is_taken_from_x_not_from_dlib_names():
    face = make_face(2)
    swapped = face.landmarks[[2, 3, 0, 1, 4]]
    np.testing.assert_array_equal(dlib5_keypoints(face.landmarks), dlib5_keypoints(swapped))


def test_batches_shape_dtype_unit_norm_and_match_single_faces(model):
    path, _, _ = model
    faces = [make_face(s) for s in range(5)]
    emb = OnnxEmbedder(path, batch_size=2)
    feats = emb.embed(faces)
    assert feats.shape == (5, DIM) and feats.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-6)
    singles = np.vstack([emb.embed([f]) for f in faces])
    np.testing.assert_allclose(feats, singles, atol=1e-6)
    assert not np.allclose(feats[0], feats[1])  # different faces, different features


def test_empty_input_gives_zero_rows(model):
    out = OnnxEmbedder(model[0]).embed([])
    assert out.shape == (0, DIM) and out.dtype == np.float32


def test_color_order_changes_features_of_colour_faces_only(model):
    path, _, _ = model
    rgb = OnnxEmbedder(path, OnnxPreprocess(color_order="RGB"))
    bgr = OnnxEmbedder(path, OnnxPreprocess(color_order="BGR"))
    colour, gray = make_face(4), make_face(4, gray=True)
    assert np.abs(rgb.embed([colour]) - bgr.embed([colour])).max() > 1e-2
    np.testing.assert_allclose(rgb.embed([gray]), bgr.embed([gray]), atol=1e-6)


def test_gray_nir_face_is_replicated_to_three_channels(model):
    path, w, b = model
    gray = make_face(5, gray=True)
    replicated = Face(image=np.dstack([gray.image] * 3), landmarks=gray.landmarks, anchors=gray.anchors,
                      matrix=gray.matrix, method=gray.method, score=gray.score)
    emb = OnnxEmbedder(path)
    np.testing.assert_allclose(emb.embed([gray]), emb.embed([replicated]), atol=1e-6)
    np.testing.assert_allclose(emb.embed([gray])[0], expected_features(gray, OnnxPreprocess(), w, b), atol=2e-5)


def test_fixed_batch_one_model_handles_many_faces(tmp_path):
    dynamic, _, _ = make_model(tmp_path / "dyn.onnx")
    fixed, _, _ = make_model(tmp_path / "fixed.onnx", batch=1)
    faces = [make_face(s) for s in range(3)]
    got = OnnxEmbedder(fixed, batch_size=32).embed(faces)
    assert got.shape == (3, DIM)
    np.testing.assert_allclose(got, OnnxEmbedder(dynamic).embed(faces), atol=1e-6)


def test_symbolic_output_dim_is_read_by_running_the_model(tmp_path):
    path, _, _ = make_model(tmp_path / "sym.onnx", out_dim="D")
    assert OnnxEmbedder(path).dim == DIM


def test_fingerprint_tracks_model_bytes_and_preprocessing(tmp_path):
    for sub in "abc":
        (tmp_path / sub).mkdir()
    a, _, _ = make_model(tmp_path / "a" / "net.onnx")
    shutil.copy(a, tmp_path / "b" / "net.onnx")
    c, _, _ = make_model(tmp_path / "c" / "net.onnx", seed=1)  # same name and shapes, other weights
    base = OnnxEmbedder(a).fingerprint
    assert base.startswith("onnx-net:")
    assert OnnxEmbedder(tmp_path / "b" / "net.onnx").fingerprint == base  # same bytes, same features
    assert OnnxEmbedder(c).fingerprint != base
    assert OnnxEmbedder(a, OnnxPreprocess(color_order="BGR")).fingerprint != base
    assert OnnxEmbedder(a, OnnxPreprocess(mean=(0.0, 0.0, 0.0))).fingerprint != base
    moved = ((38.0, 53.2), (73.7, 53.0), (55.8, 80.8))
    assert OnnxEmbedder(a, OnnxPreprocess(template=moved)).fingerprint != base
    cfg = OnnxEmbedder(a).config()
    assert len(cfg["model_sha256"]) == 16 and cfg["preprocess"]["input_size"] == (112, 112)


def test_missing_model_file_is_named(tmp_path):
    missing = tmp_path / "nowhere" / "arcface.onnx"
    with pytest.raises(FileNotFoundError, match="arcface.onnx"):
        OnnxEmbedder(missing)


def test_model_with_two_inputs_is_rejected(tmp_path):
    path, _, _ = make_model(tmp_path / "two.onnx", two_inputs=True)
    emb = OnnxEmbedder(path)  # lazy: nothing is opened yet
    with pytest.raises(ValueError, match=r"two\.onnx must have exactly one input .*found 2: image .*mask"):
        emb.load()


def test_model_with_4d_output_is_rejected(tmp_path):
    path, _, _ = make_model(tmp_path / "conv.onnx", out_4d=True)
    with pytest.raises(ValueError, match=r"conv\.onnx: output 'features4d' must be 2-D"):
        OnnxEmbedder(path).dim


def test_input_size_mismatch_is_reported(model):
    with pytest.raises(ValueError, match=r"input shape \['N', 3, 112, 112\] does not match.*128x128"):
        OnnxEmbedder(model[0], OnnxPreprocess(input_size=(128, 128), template=ARCFACE_DLIB5_TEMPLATE)).load()
    with pytest.raises(ValueError, match="NHWC"):
        OnnxEmbedder(model[0], OnnxPreprocess(layout="NHWC")).load()


def test_corrupt_model_file_names_the_file(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a protobuf")
    with pytest.raises(ValueError, match=r"broken\.onnx: ONNX Runtime cannot load it"):
        OnnxEmbedder(bad).load()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"color_order": "rgb"}, "color_order"),
        ({"layout": "CHW"}, "layout"),
        ({"std": (1.0, 0.0, 1.0)}, "std"),
        ({"input_size": (112,)}, "input_size"),
        ({"template": ((38.0, 51.0), (73.0, 51.0))}, "3 points"),
        ({"input_size": (64, 64)}, "outside the 64x64 input"),
        ({"template": ((73.0, 51.0), (38.0, 51.0), (56.0, 80.0))}, "image-left eye"),
    ],
)
def test_preprocess_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OnnxPreprocess(**kwargs)


def test_bad_batch_size_and_degenerate_landmarks(model):
    with pytest.raises(ValueError, match="batch_size"):
        OnnxEmbedder(model[0], batch_size=0)
    face = make_face(0)
    flat = Face(image=face.image, landmarks=np.full((5, 2), 100.0, np.float32), anchors=face.anchors,
                matrix=face.matrix, method="x", score=0.0, source="bad.png")
    with pytest.raises(ValueError, match=r"face 0 \(source 'bad.png'\).*coincide"):
        OnnxEmbedder(model[0]).embed([flat])


def test_registered_as_onnx(model):
    from nirvis.features.base import available_embedders, get_embedder

    assert "onnx" in available_embedders()
    emb = get_embedder("onnx", model_path=model[0], batch_size=4)
    assert isinstance(emb, OnnxEmbedder) and emb.dim == DIM


def test_flip_adds_the_mirrored_faces_output(model):
    from nirvis.features.onnx import preprocess_faces

    path, w, b = model
    faces = [make_face(s) for s in range(3)]
    plain, flipped = OnnxEmbedder(path), OnnxEmbedder(path, flip=True)
    x = preprocess_faces(faces, plain.preprocess).astype(np.float64)
    raw = x.reshape(3, 3, 112 // POOL, POOL, 112 // POOL, POOL).mean(axis=(3, 5)).reshape(3, -1) @ w + b
    mx = x[:, :, :, ::-1]
    mirrored = mx.reshape(3, 3, 112 // POOL, POOL, 112 // POOL, POOL).mean(axis=(3, 5)).reshape(3, -1) @ w + b
    want = (raw + mirrored) / np.linalg.norm(raw + mirrored, axis=1, keepdims=True)
    np.testing.assert_allclose(flipped.embed(faces), want, atol=1e-5)
    assert not np.allclose(flipped.embed(faces), plain.embed(faces), atol=1e-3)
    assert flipped.fingerprint != plain.fingerprint and "flip" not in plain.config()
    with pytest.raises(ValueError, match="flip must be True or False"):
        OnnxEmbedder(path, flip="yes")


def test_arcface5_crop_maps_the_faces_keypoints_onto_the_five_point_template(model):
    from nirvis.features.onnx import ARCFACE_112_TEMPLATE, crop_faces

    face = make_face(1)
    # Five keypoints placed by a known similarity off the template: the crop must undo it exactly.
    t = np.deg2rad(7.0)
    m = 1.6 * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    kp = np.array(ARCFACE_112_TEMPLATE) @ m.T + [20.0, 15.0]
    face.meta["keypoints5"] = kp.astype(np.float32)
    pre = OnnxPreprocess(keypoints="arcface5")
    crop = crop_faces([face], pre)[0]
    inverse = cv2.invertAffineTransform(np.hstack([m, [[20.0], [15.0]]]))
    want = cv2.warpAffine(face.image, inverse, (112, 112), flags=cv2.INTER_LINEAR, borderValue=0)
    assert np.abs(crop.astype(int) - want.astype(int)).max() <= 1
    # the dlib-5 crop of the same face is another crop
    assert np.abs(crop_faces([face], OnnxPreprocess())[0].astype(int) - crop.astype(int)).mean() > 5


def test_arcface5_face_without_keypoints_falls_back_to_dlib5_with_one_warning(model, caplog):
    from nirvis.features import onnx as onnx_mod

    onnx_mod._WARNED_NO_KEYPOINTS = False
    face = make_face(2)
    emb5 = OnnxEmbedder(model[0], OnnxPreprocess(keypoints="arcface5"))
    with caplog.at_level("WARNING", logger="nirvis.features.onnx"):
        got = emb5.embed([face, face])
    np.testing.assert_allclose(got, OnnxEmbedder(model[0]).embed([face, face]), atol=1e-6)
    assert sum("no ArcFace keypoints" in r.message for r in caplog.records) == 1


def test_keypoint_mode_sets_landmark_model_and_fingerprint_but_default_keeps_old_fingerprint(model):
    from dataclasses import asdict

    plain = OnnxEmbedder(model[0])
    arc = OnnxEmbedder(model[0], OnnxPreprocess(keypoints="arcface5"))
    assert (plain.landmark_model, arc.landmark_model) == ("shape5", "shape68")
    assert arc.fingerprint != plain.fingerprint
    # features made before the keypoint fields existed keep their fingerprint
    assert "keypoints" not in plain.config()["preprocess"]
    assert set(plain.config()["preprocess"]) == set(asdict(OnnxPreprocess())) - {"keypoints", "template5"}
    with pytest.raises(ValueError, match="keypoints must be 'dlib5' or 'arcface5'"):
        OnnxPreprocess(keypoints="arcface")
    with pytest.raises(ValueError, match="template5 .* outside the 112x112 input"):
        OnnxPreprocess(template5=((38.0, 51.0), (73.0, 51.0), (56.0, 71.0), (41.0, 92.0), (200.0, 92.0)))
