import json

import cv2
import numpy as np
import pytest

from nirvis._io import read_image
from nirvis.errors import ImageError, NoFaceError
from nirvis.faces.align import FaceAligner, anchors_from_landmarks, as_gray, similarity_transform
from nirvis.faces.detect import DetectorConfig
from nirvis.faces.types import TEMPLATE_ANCHORS


def test_similarity_transform_recovers_a_known_map():
    rng = np.random.default_rng(1)
    src = rng.random((5, 2)) * 100
    a, t = 1.7 * np.array([[np.cos(0.3), -np.sin(0.3)], [np.sin(0.3), np.cos(0.3)]]), np.array([12.0, -4.0])
    M = similarity_transform(src, src @ a.T + t)
    np.testing.assert_allclose(M, np.c_[a, t], atol=1e-9)


def test_anchors_do_not_depend_on_eye_order():
    pts = np.array([[150, 90], [134, 92], [74, 92], [90, 92], [112, 125]], float)
    a = anchors_from_landmarks(pts)
    b = anchors_from_landmarks(pts[[2, 3, 0, 1, 4]])
    np.testing.assert_allclose(a, b)
    assert a[0, 0] < a[1, 0]  # image-left eye first
    assert a[2, 1] > pts[4, 1]  # the mouth is below the nose


def test_as_gray_rejects_wrong_channels_and_depth():
    with pytest.raises(ImageError, match="x.png: image has 4 channels"):
        as_gray(np.zeros((5, 5, 4), np.uint8), "x.png")
    with pytest.raises(ImageError, match="uint16"):
        as_gray(np.zeros((5, 5), np.uint16))
    with pytest.raises(ImageError, match=r"shape \(5, 5, 2\)"):
        as_gray(np.zeros((5, 5, 2), np.uint8))


def test_no_face_error_names_the_source():
    img = np.full((120, 100), 128, np.uint8)
    with pytest.raises(NoFaceError, match="blank.png: no face found"):
        FaceAligner().align(img, source="blank.png")


@pytest.mark.parametrize("shape", [(1, 1), (50, 1), (1, 1, 3), (7, 40)])
def test_images_too_small_for_a_face_are_no_face_not_a_dlib_crash(shape):
    # (50, 1) corrupted the heap inside dlib's detector before the size check; (1, 1) raised a RuntimeError.
    with pytest.raises(NoFaceError, match=r"tiny\.png: \d+x\d+ px is too small to hold a face"):
        FaceAligner().align(np.zeros(shape, np.uint8), source="tiny.png")


@pytest.mark.parametrize("shape", [(12, 1601), (8, 3000), (9, 3000, 3), (3000, 10), (50, 1), (0, 5)])
def test_long_thin_images_never_reach_dlib_too_small(shape):
    # Downscaled for their length before detection, these left a side of 2-6 px: dlib raised a RuntimeError
    # ("Filter windows must be small enough ...") and (3000, 10) killed the process (SIGSEGV).
    aligner = FaceAligner()
    if min(shape[:2]) >= 8:
        with pytest.raises(NoFaceError, match="strip.png: no face found"):
            aligner.align(np.zeros(shape, np.uint8), source="strip.png")
    if min(shape[:2]) > 0:
        assert aligner.detect(np.zeros(shape, np.uint8)) == []
    else:
        with pytest.raises(ImageError, match="empty image"):
            aligner.detect(np.zeros(shape, np.uint8))


def test_a_pil_image_is_taken_like_its_array():
    from PIL import Image

    with pytest.raises(NoFaceError, match="no face found"):
        FaceAligner().align(Image.fromarray(np.full((100, 100), 128, np.uint8)))


@pytest.mark.parametrize("kwargs, message", [
    (dict(size=0), "size must be an int >= 8"), (dict(size=2.5), "size must be an int >= 8"),
    (dict(landmark_side=-1), "landmark_side must be an int"),
    (dict(template=((0, 0), (0, 0), (0, 0))), "must not be on one line"),
    (dict(template=((0, 0), (1, 1))), "template must be 3 finite"),
    (dict(landmark_model="shape7"), "landmark_model must be one of shape5, shape68, got 'shape7'"),
])
def test_bad_align_config_is_refused(kwargs, message):
    from nirvis.faces.align import AlignConfig

    with pytest.raises(ValueError, match=message):
        AlignConfig(**kwargs)


@pytest.mark.parametrize("kwargs, message", [
    (dict(max_upsample=0), "max_upsample must be a finite number >= 1"), (dict(min_side=0), "min_side must be"),
    (dict(clahe_clip=0.0), "clahe_clip must be a finite number > 0"),
    (dict(hog_low_threshold=float("nan")), "hog_low_threshold must be a finite number, got nan"),
])
def test_bad_detector_config_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DetectorConfig(**kwargs)


def test_bad_cascade_step_is_refused():
    with pytest.raises(ValueError, match="unknown cascade step 'haar'"):
        DetectorConfig(cascade=("hog", "haar"))


def _captures(rap3df_root, n):
    db = json.loads((rap3df_root / "rap3df_data_02" / "database.json").read_text())
    caps = [c for person in sorted(db) for pose in ("front", "left", "down") for c in (db[person].get(pose) or [])]
    return caps[: n]


@pytest.mark.data
def test_real_nir_and_vis_faces_align_to_the_template(rap3df_root):
    aligner = FaceAligner()
    caps = _captures(rap3df_root, 12)
    n_ok = {"nir": 0, "vis": 0}
    for cap in caps:
        for mod, key, ch in (("vis", "rgb", None), ("nir", "ir_with_bg", "red")):
            try:
                face = aligner.align(read_image(rap3df_root / cap[key], channel=ch), source=cap[key])
            except NoFaceError:
                continue
            n_ok[mod] += 1
            assert face.image.shape == ((224, 224) if mod == "nir" else (224, 224, 3))
            assert face.image.dtype == np.uint8
            # The eyes and mouth land on the template: least squares puts their centroid exactly on the
            # template's, and each within a face's natural variation of proportions.
            np.testing.assert_allclose(face.anchors.mean(axis=0), TEMPLATE_ANCHORS.mean(axis=0), atol=0.5)
            assert np.abs(face.anchors - TEMPLATE_ANCHORS).max() < 12
            assert face.method in ("hog", "hogl", "mmod", "hog-clahe", "hogl-clahe", "mmod-clahe")
    assert n_ok["nir"] >= 10 and n_ok["vis"] >= 10, n_ok


@pytest.mark.data
def test_nir_and_vis_landmarks_agree_through_the_sensor_registration(rap3df_root):
    """RAP3DF's IR and RGB frames differ by one fixed similarity transform of the sensor (measured here:
    scale about 0.88, shift about 10 px). Landmarks found independently on NIR and on VIS must agree
    with it: the same scale in every capture and a small residual."""
    aligner = FaceAligner()
    scales, residuals = [], []
    for cap in _captures(rap3df_root, 10):
        try:
            v = aligner.align(read_image(rap3df_root / cap["rgb"]))
            n = aligner.align(read_image(rap3df_root / cap["ir_with_bg"], channel="red"))
        except NoFaceError:
            continue
        pts = []
        for face in (n, v):
            inv = cv2.invertAffineTransform(face.matrix)
            pts.append(face.landmarks @ inv[:, :2].T + inv[:, 2])  # back to source pixels
        M = similarity_transform(pts[0], pts[1])
        scales.append(np.hypot(*M[:, 0]))
        residuals.append(np.abs(pts[0] @ M[:, :2].T + M[:, 2] - pts[1]).max())
    assert len(scales) >= 8
    assert np.std(scales) < 0.05 and 0.8 < np.median(scales) < 0.95
    assert np.median(residuals) < 4.0  # source pixels; faces are ~60 px wide, misses are 10+ px


def test_the_default_landmark_model_keeps_the_fingerprint_of_earlier_alignments():
    from nirvis.faces.align import AlignConfig

    # b062d76bd4fe keys every alignment cached before the landmark model became a setting
    assert AlignConfig().fingerprint() == AlignConfig(landmark_model="shape5").fingerprint() == "b062d76bd4fe"
    assert AlignConfig(landmark_model="shape68").fingerprint() != "b062d76bd4fe"


@pytest.mark.data
def test_the_68_point_model_gives_the_same_alignment_points_and_arcface_keypoints(rap3df_root):
    from nirvis.faces.align import AlignConfig

    five, sixty_eight = FaceAligner(), FaceAligner(AlignConfig(landmark_model="shape68"))
    n = 0
    for cap in _captures(rap3df_root, 6):
        image = read_image(rap3df_root / cap["rgb"])
        try:
            a = five.align(image)
        except NoFaceError:
            continue
        b = sixty_eight.align(image)
        n += 1
        assert "keypoints5" not in a.meta and b.meta["keypoints5"].shape == (5, 2)
        # dlib's 5 points read off the 68 align the face nearly as the 5-point model does
        assert np.abs(a.anchors - b.anchors).max() < 6
        kp = b.meta["keypoints5"]
        eyes = b.landmarks[:4].reshape(2, 2, 2).mean(axis=1)
        eyes = eyes[np.argsort(eyes[:, 0])]
        assert np.abs(kp[:2] - eyes).max() < 4  # eye centres: six points against two corners
        assert kp[2, 1] < b.landmarks[4, 1]  # the nose tip is above the nose base
        assert kp[3, 0] < kp[4, 0] and min(kp[3, 1], kp[4, 1]) > b.landmarks[4, 1]  # mouth corners, below the nose
    assert n >= 4
