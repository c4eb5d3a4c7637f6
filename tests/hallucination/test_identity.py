"""Hallucination trained through the frozen dlib network (H(id))."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from nirvis.errors import NirvisError
from nirvis.faces.types import TEMPLATE_SIZE, Face
from nirvis.features.dlib_resnet import dlib_chip
from nirvis.hallucination.identity import (IdentityTrainConfig, chip_matrix, identity_nets, prepare_faces,
                                           train_identity_hallucination)
from nirvis.hallucination.infer import Hallucinator
from nirvis.hallucination.io import load_model

# dlib's 5 points of a frontal face in the 224 template, in dlib's order (eye corners, then the nose base)
LANDMARKS = np.array([[150.0, 95], [128, 92], [64, 88], [94, 90], [112, 145]], np.float32)


def _face(seed: int) -> Face:
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.uniform(0, 255, (TEMPLATE_SIZE, TEMPLATE_SIZE)).astype(np.float32), (0, 0), 4)
    img = cv2.normalize(img, None, 20, 235, cv2.NORM_MINMAX).astype(np.uint8)
    jitter = rng.normal(0, 2, LANDMARKS.shape).astype(np.float32)
    return Face(img, LANDMARKS + jitter, LANDMARKS[:3], np.eye(2, 3), "test", 1.0,
                meta={"source_shape": (TEMPLATE_SIZE, TEMPLATE_SIZE)})


def test_chip_matrix_reproduces_dlibs_chip() -> None:
    f = _face(0)
    m = chip_matrix(f)
    assert 1.0 < m[0, 0] < 1.5 and abs(m[0, 1]) < 0.05  # upright, the chip a little wider than the template
    rgb = np.repeat(f.image[:, :, None], 3, axis=2)
    mine = cv2.warpAffine(rgb, m, (150, 150), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    theirs = dlib_chip(f)
    # dlib interpolates a little differently (about 1-3 gray levels on real faces; descriptors agree to 0.999)
    assert np.abs(mine.astype(int) - theirs.astype(int))[5:-5, 5:-5].mean() < 3.0
    shifted = cv2.warpAffine(rgb, m + [[0, 0, 2], [0, 0, 0]], (150, 150), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    assert np.abs(shifted.astype(int) - theirs.astype(int))[5:-5, 5:-5].mean() > 6.0  # 2 px off is visible


def test_identity_nets_start_as_the_nir_face() -> None:
    nets = identity_nets("cpu").eval()
    x = torch.rand(1, 1, 40, 40)
    with torch.no_grad():
        out = nets(x)
    torch.testing.assert_close(out[:, 0], x[:, 0])
    torch.testing.assert_close(out[:, 1:], torch.full_like(out[:, 1:], 128 / 255))


def test_training_saves_a_model_that_evaluate_can_use(tmp_path) -> None:
    faces = [_face(s) for s in range(8)]
    people = [f"p{i // 2}" for i in range(8)]
    reference = {"nir_mean": 110.0, "nir_std": 40.0, "region": "face"}
    batch = prepare_faces(faces, people, reference)
    assert batch.nir.shape == (8, 224, 224) and batch.grids.shape == (8, 150, 150, 2)
    cents = np.random.default_rng(0).normal(size=(4, 128)).astype(np.float32)
    cfg = IdentityTrainConfig(max_steps=2, batch_size=2, val_every=1, val_fraction=0.5, lr=1e-2)
    rec = train_identity_hallucination(batch, cents, reference, tmp_path / "m", cfg,
                                       meta={"train_people": sorted(set(people))})
    assert rec["steps"] == 2 and len(rec["history"]["val_rank1"]) == 3  # step 0, 1, 2
    model = load_model(tmp_path / "m")
    assert model.meta["training"]["kind"] == "identity" and len(model.meta["val_people"]) == 2
    assert model.reference["region"] == "face"
    out = Hallucinator(model, blend=None, method="direct").hallucinate(faces[0].image)
    assert out.rgb.shape == (1, 224, 224, 3)
    with pytest.raises(ValueError, match="batch_size, max_steps and val_every must be >= 1"):
        IdentityTrainConfig(batch_size=0)


def test_validation_people_come_from_the_candidates(tmp_path) -> None:
    """``val_candidates`` (the 2019 set's people on RAP3DF) are the only people held out; the others all train."""
    faces = [_face(s) for s in range(12)]
    people = [f"p{i // 2}" for i in range(12)]
    reference = {"nir_mean": 110.0, "nir_std": 40.0, "region": "face", "normalize": False}
    batch = prepare_faces(faces, people, reference)
    cents = np.random.default_rng(0).normal(size=(6, 128)).astype(np.float32)
    cfg = IdentityTrainConfig(max_steps=1, batch_size=2, val_every=1, val_fraction=0.5)
    for seed in range(3):
        train_identity_hallucination(batch, cents, reference, tmp_path / f"m{seed}", IdentityTrainConfig(
            **{**cfg.__dict__, "seed": seed}), val_candidates=["p3", "p4", "p5"])
        held = load_model(tmp_path / f"m{seed}").meta["val_people"]
        assert len(held) == 2 and set(held) <= {"p3", "p4", "p5"}  # half of the 3 candidates, rounded up
    with pytest.raises(NirvisError, match="1 of the training people may validate, 2 are needed"):
        train_identity_hallucination(batch, cents, reference, tmp_path / "x", cfg, val_candidates=["p0"])


def test_without_normalisation_step_0_is_the_nir_face_as_it_is() -> None:
    from nirvis.hallucination.io import HallucinationModel

    faces = [_face(s) for s in range(2)]
    stats = {"nir_mean": 110.0, "nir_std": 40.0, "region": "face"}
    kept = prepare_faces(faces, ["a", "b"], {**stats, "normalize": False})
    np.testing.assert_array_equal(kept.nir, np.stack([f.image for f in faces]))
    assert not np.array_equal(prepare_faces(faces, ["a", "b"], stats).nir, kept.nir)  # the default normalises
    hal = Hallucinator(HallucinationModel(identity_nets("cpu").eval(), {**stats, "normalize": False}), blend=None,
                       method="direct")
    out = hal.hallucinate(faces[0].image)
    # neutral chroma: an RGB gray equal to the NIR, up to the YCrCb round trip
    assert np.abs(out.rgb[0].astype(int) - faces[0].image[:, :, None].astype(int)).max() <= 1


def test_evaluate_names_identity_rows_and_takes_their_blend(tmp_path) -> None:
    import json

    import typer

    from nirvis.cli import _hallucination_kind

    def model(name: str, meta: dict):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(meta))
        return tmp_path / name

    ident = model("a", {"training": {"kind": "identity"}, "alpha": 0.0})
    patch = model("b", {"training": {"epochs": 1}})
    assert _hallucination_kind({"s0": ident}) == ("H(id)", 0.0)
    assert _hallucination_kind({"s0": patch}) == ("H", 0.6)
    with pytest.raises(typer.Exit) as err:
        _hallucination_kind({"s0": ident, "s1": patch})
    assert err.value.exit_code == 2


@pytest.mark.data
@pytest.mark.slow
def test_command_trains_a_model_on_real_faces(rap3df_root, tmp_path) -> None:
    """`nirvis train-hallucination-id` on a small folder dataset made of real RAP3DF captures."""
    from typer.testing import CliRunner

    from nirvis._io import read_image
    from nirvis.cli import app
    from nirvis.datasets.rap3df import load_rap3df

    samples = load_rap3df(rap3df_root)["2019"]
    people = sorted({s.person for s in samples})[:7]
    for root, chosen in (("train", people[:5]), ("test", people[5:])):
        for s in samples:
            if s.person in chosen and s.meta["index"] == 0 and s.pose in ("front", "left"):
                d = tmp_path / root / s.person / s.modality
                d.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(d / f"{s.pose}.png"), read_image(s.path, channel="red") if s.modality == "nir"
                            else cv2.cvtColor(read_image(s.path), cv2.COLOR_RGB2BGR))
    out = tmp_path / "model"
    res = CliRunner().invoke(app, ["train-hallucination-id", "--dataset", "folder", "--data", str(tmp_path / "test"),
                                   "--train-data", str(tmp_path / "train"), "--split", "all", "-o", str(out),
                                   "--max-minutes", "0.05", "--val-every", "1", "--batch-size", "2"])
    assert res.exit_code == 0, res.output
    model = load_model(out)
    assert sorted(model.meta["train_people"]) == people[:5] and not set(model.meta["train_people"]) & set(people[5:])
    assert model.meta["training"]["kind"] == "identity" and model.reference["region"] == "face"
    assert model.reference["normalize"] is False  # the default: the NIR faces as they are
    # --train-set keeps one RAP3DF capture set's people; a folder dataset has no sets, and says so
    res = CliRunner().invoke(app, ["train-hallucination-id", "--dataset", "folder", "--data", str(tmp_path / "test"),
                                   "--train-data", str(tmp_path / "train"), "--split", "all", "-o",
                                   str(tmp_path / "m2"), "--train-set", "2019", "--max-minutes", "0.05"])
    assert res.exit_code != 0 and "--train-set 2019: 0 training people" in res.output
    assert not (tmp_path / "m2").exists()


@pytest.mark.data
def test_command_trains_on_the_test_peoples_capture_set_by_default(rap3df_root, monkeypatch) -> None:
    """On RAP3DF, H(id) trains on the split's training people of 2019 (the test people's NIR camera) unless told
    otherwise; the faces it would train on are caught before any training."""
    from typer.testing import CliRunner

    from nirvis.cli import app
    from nirvis.errors import NirvisError
    from nirvis.hallucination import identity

    seen = []

    def caught(rec, train, normalize=False):
        seen.append(train)
        raise NirvisError("stop here")

    monkeypatch.setattr(identity, "training_data", caught)
    for extra in ([], ["--train-set", "any"]):
        res = CliRunner().invoke(app, ["train-hallucination-id", "--data", str(rap3df_root.parent),
                                       "-o", "/nonexistent/m", *extra])
        assert res.exit_code == 1 and "stop here" in res.output
    default, every = seen
    assert {s.meta["set"] for s in default} == {"2019"} and len({s.person for s in default}) == 24
    assert {s.meta["set"] for s in every} == {"2017", "2019"} and len({s.person for s in every}) > 24
