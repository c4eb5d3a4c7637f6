"""Hallucinator (normalise -> CNNs -> eq. (1) -> RGB) and the `nirvis hallucinate` command, with tiny models
whose output is known."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from nirvis.cli import app

from nirvis.faces.align import valid_mask
from nirvis.faces.normalize import match_mean_std
from nirvis.faces.types import Face
from nirvis.hallucination.blend import BlendConfig, blend_luminance
from nirvis.hallucination.fastconv import FFTConv2d
from nirvis.hallucination.infer import HallucinatedFaces, Hallucination, HallucinationInputError, Hallucinator
from nirvis.hallucination.io import CONFIG, WEIGHTS, HallucinationModel, ModelFileError, load_model, save_model
from nirvis.hallucination.nets import ChannelNetSpec, HallucinationNets

REFERENCE = {"nir_mean": 100.0, "nir_std": 30.0, "vis_mean": [100.0, 100.0, 100.0], "vis_std": [40.0, 40.0, 40.0]}
CB, CR = 0.40, 0.65  # constant chroma of the known model, [0, 1]


def known_model(channels: tuple[str, ...] = ("y", "cb", "cr"), kernel: int = 5, wide: int = 4,
                narrow: int = 3) -> HallucinationModel:
    """Y = normalised NIR (residual net with a zero last layer), Cb = 0.40, Cr = 0.65 everywhere."""
    spec = ChannelNetSpec(layers=4, wide=wide, narrow=narrow, kernel=kernel)
    specs = {"y": ChannelNetSpec(layers=4, wide=wide, narrow=narrow, kernel=kernel, residual=True), "cb": spec,
             "cr": spec}
    torch.manual_seed(0)
    nets = HallucinationNets(specs, channels=channels).eval()
    with torch.no_grad():
        for c, value in (("y", 0.0), ("cb", CB), ("cr", CR)):
            if c in nets.nets:
                last = nets.nets[c].body[-1]
                last.weight.zero_()
                last.bias.fill_(value)
    return HallucinationModel(nets=nets, reference=dict(REFERENCE), meta={"note": "test"})


def faces(n: int = 3, size: int = 32, seed: int = 0) -> np.ndarray:
    """``(n, size, size)`` uint8 smooth random textures spanning 20..235."""
    rng = np.random.default_rng(seed)
    blur = [cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0), 2) for _ in range(n)]
    return np.stack([cv2.normalize(b, None, 20, 235, cv2.NORM_MINMAX) for b in blur]).round().astype(np.uint8)


def test_known_model_normalisation_and_no_blend() -> None:
    nir = faces()
    out = Hallucinator(known_model(), blend=None, method="direct").hallucinate(nir)
    assert isinstance(out, Hallucination) and len(out) == 3
    assert out.rgb.shape == (3, 32, 32, 3) and out.rgb.dtype == np.uint8
    assert out.y.dtype == out.y_raw.dtype == out.cb.dtype == np.float32
    norm = np.stack([match_mean_std(im, 100.0, 30.0) for im in nir])
    np.testing.assert_array_equal(out.nir, norm)                        # exactly as mining normalises
    assert abs(norm.mean() - 100) < 1.5 and abs(norm.std() - 30) < 1.5
    np.testing.assert_allclose(out.y_raw, norm / 255.0, atol=1e-6)     # Y net = identity on the NIR
    np.testing.assert_allclose(out.cb, CB, atol=1e-6)
    np.testing.assert_allclose(out.cr, CR, atol=1e-6)
    ycc = np.stack([norm, np.full_like(norm, round(CR * 255)), np.full_like(norm, round(CB * 255))], -1)
    expected = np.stack([cv2.cvtColor(im, cv2.COLOR_YCrCb2RGB) for im in ycc])
    np.testing.assert_array_equal(out.rgb, expected)                    # OpenCV's order: Y, Cr, Cb
    np.testing.assert_array_equal(out.rgb, out.rgb_raw)


def test_blend_alpha_zero_equals_raw_and_alpha_applies_eq1() -> None:
    model, nir = known_model(), faces()
    raw = Hallucinator(model, blend=BlendConfig(alpha=0.0), method="direct").hallucinate(nir)
    np.testing.assert_array_equal(raw.rgb, raw.rgb_raw)
    # With Y_raw = NIR, eq. (1) leaves Y = NIR whatever α: give the Y net a constant offset instead.
    with torch.no_grad():
        model.nets.nets["y"].body[-1].bias.fill_(0.1)
    out = Hallucinator(model, blend=BlendConfig(alpha=0.6), method="direct").hallucinate(nir)
    norm01 = out.nir / 255.0
    np.testing.assert_allclose(out.y_raw, norm01 + 0.1, atol=1e-6)
    np.testing.assert_allclose(out.y, np.clip(blend_luminance(out.y_raw, norm01.astype(np.float32)), 0, 1), atol=1e-6)
    assert not np.array_equal(out.rgb, out.rgb_raw)


def test_valid_mask_restricts_the_statistics() -> None:
    nir = faces(1)[0]
    nir[:, :8] = 0  # the alignment warp's black fill
    valid = np.ones(nir.shape, bool)
    valid[:, :8] = False
    hal = Hallucinator(known_model(), blend=None, method="direct")
    out = hal.hallucinate(nir, valid)  # (H, W) in, batch of 1 out
    assert out.rgb.shape == (1, 32, 32, 3)
    np.testing.assert_array_equal(out.nir[0], match_mean_std(nir, 100.0, 30.0, mask=valid))
    assert abs(out.nir[0][valid].mean() - 100) < 1.5
    np.testing.assert_array_equal(hal.normalize(nir, valid), out.nir[0])


def test_fft_equals_direct_and_batching() -> None:
    model = known_model(kernel=11, wide=16, narrow=16)  # wide enough for FFT to pay off (16 -> 16 layers)
    with torch.no_grad():  # make every layer matter
        for c in ("y", "cb", "cr"):
            model.nets.nets[c].body[-1].weight.normal_(0, 0.05)
    nir = faces(5, size=40)
    direct = Hallucinator(model, method="direct", batch_size=8).hallucinate(nir)
    fast = Hallucinator(model, method="fft", batch_size=2, keep_memory=False)
    assert any(isinstance(m, FFTConv2d) for m in fast.nets.modules())
    fft = fast.hallucinate(nir)
    for name in ("y_raw", "cb", "cr", "y"):
        np.testing.assert_allclose(getattr(fft, name), getattr(direct, name), atol=1e-5)
    # Planes are rounded to 8 bits before YCrCb -> RGB: a 1e-5 difference can flip one level of Cb, which
    # moves B by 1.77 levels, so the RGB images may differ by 2 where a plane sits on a rounding boundary.
    assert np.abs(fft.rgb.astype(int) - direct.rgb).max() <= 2


def test_missing_chroma_is_gray_and_model_from_folder(tmp_path: Path) -> None:
    folder = save_model(tmp_path / "m", known_model(channels=("y",)))
    hal = Hallucinator(folder, blend=None, keep_memory=False)
    assert hal.channels == ("y",)
    out = hal.hallucinate(faces(2))
    np.testing.assert_allclose(out.cb, 128 / 255)
    np.testing.assert_allclose(out.cr, 128 / 255)
    assert (out.rgb[..., 0] == out.rgb[..., 1]).all() and (out.rgb[..., 1] == out.rgb[..., 2]).all()


def test_model_folder_errors_name_the_file(tmp_path: Path) -> None:
    folder = save_model(tmp_path / "m", known_model())
    good = json.loads((folder / CONFIG).read_text())
    assert load_model(folder).reference == REFERENCE
    with pytest.raises(TypeError, match=r"save_model\(path, model\) takes the folder first"):
        save_model(known_model(), tmp_path / "swapped")

    def broken(edit, match: str) -> None:
        cfg = json.loads(json.dumps(good))
        edit(cfg)
        (folder / CONFIG).write_text(json.dumps(cfg))
        with pytest.raises(ModelFileError, match=match):
            load_model(folder)

    broken(lambda c: c.update(version=99), "version 99 is not supported")
    broken(lambda c: c["nets"]["y"].update(kernal=5), f"{CONFIG}: bad or missing 'nets'.*kernal")
    broken(lambda c: c.pop("reference"), f"{CONFIG}: bad or missing .*reference")
    broken(lambda c: c["reference"].update(nir_mean="abc"), "'nir_mean' must hold finite numbers, got 'abc'")
    broken(lambda c: c["reference"].update(nir_std=float("nan")), "'nir_std' must hold finite numbers")
    (folder / CONFIG).write_text(json.dumps(good))
    weights = bytearray((folder / WEIGHTS).read_bytes())
    weights[-3] ^= 0xFF
    (folder / WEIGHTS).write_bytes(bytes(weights))
    with pytest.raises(ModelFileError, match="weights do not match"):
        load_model(folder)
    (folder / WEIGHTS).unlink()
    with pytest.raises(ModelFileError, match=f"missing {WEIGHTS}"):
        load_model(folder)


def test_fingerprint_keys_model_and_blend() -> None:
    model = known_model()
    fp = Hallucinator(model).fingerprint
    assert fp == Hallucinator(model).fingerprint and fp != model.fingerprint
    assert fp != Hallucinator(model, blend=BlendConfig(alpha=0.7)).fingerprint
    assert fp != Hallucinator(model, blend=BlendConfig(reading="gaussian")).fingerprint
    assert fp != Hallucinator(model, blend=None).fingerprint
    assert fp != Hallucinator(model, method="direct").fingerprint
    other = known_model()
    with torch.no_grad():
        other.nets.nets["cb"].body[-1].bias.fill_(0.5)
    assert fp != Hallucinator(other).fingerprint


def test_input_errors() -> None:
    hal = Hallucinator(known_model(), method="direct")
    with pytest.raises(HallucinationInputError, match="uint8 .*got dtype float64"):
        hal.hallucinate(np.zeros((32, 32)))
    with pytest.raises(HallucinationInputError, match="convert to gray"):
        hal.hallucinate(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(HallucinationInputError, match="smaller than the networks' 5x5 kernels"):
        hal.hallucinate(np.zeros((2, 4, 32), np.uint8))
    with pytest.raises(HallucinationInputError, match="bool mask of the faces' shape"):
        hal.hallucinate(np.zeros((2, 32, 32), np.uint8), np.ones((32, 32), bool))
    with pytest.raises(HallucinationInputError, match=r"faces \[0\] select no pixel"):
        hal.hallucinate(np.zeros((32, 32), np.uint8), np.zeros((32, 32), bool))
    with pytest.raises(ValueError, match="method must be one of"):
        Hallucinator(known_model(), method="winograd")
    for device in ("bogus", "meta"):
        with pytest.raises(ValueError, match=f"device '{device}'"):
            Hallucinator(known_model(), method="direct", device=device)
    with pytest.raises(HallucinationInputError, match="a batch of 0 faces"):
        hal.hallucinate(np.zeros((0, 32, 32), np.uint8))
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 2.5"):
        Hallucinator(known_model(), method="direct", batch_size=2.5)


@pytest.mark.parametrize("reference, message", [
    ({"nir_mean": float("nan"), "nir_std": 30.0}, "'nir_mean' must hold finite numbers"),
    ({"nir_mean": "100", "nir_std": 30.0}, "'nir_mean' must hold finite numbers"),
    ({"nir_mean": 100.0, "nir_std": 0.0}, "'nir_std' must be > 0"),
    ({"nir_std": 30.0}, "KeyError: 'nir_mean'"),
])
def test_a_model_built_in_memory_has_its_reference_checked(reference, message) -> None:
    model = known_model()
    bad = HallucinationModel(nets=model.nets, reference=reference)
    with pytest.raises(HallucinationInputError, match=message):
        Hallucinator(bad, method="direct")
    ok = HallucinationModel(nets=model.nets, reference={"nir_mean": np.float32(100), "nir_std": np.float64(30)})
    Hallucinator(ok, method="direct")  # numpy numbers are fine


def test_net_specs_refuse_wrong_types_and_channel_lists() -> None:
    with pytest.raises(ValueError, match="residual must be true or false, got 'no'"):
        ChannelNetSpec(layers=4, wide=4, narrow=2, kernel=3, residual="no")
    with pytest.raises(ValueError, match="layers must be an int, got 4.5"):
        ChannelNetSpec(layers=4.5, wide=4, narrow=2, kernel=3)
    with pytest.raises(ValueError, match="kernel must be an int, got 3.0"):
        ChannelNetSpec(layers=4, wide=4, narrow=2, kernel=3.0)
    for channels in (("y", "y"), ()):
        with pytest.raises(ValueError, match="each once"):
            HallucinationNets("cpu", channels=channels)


def test_hallucinated_faces_transform() -> None:
    nir = faces(2, size=32)
    recs = [Face(image=im, landmarks=np.zeros((5, 2), np.float32), anchors=np.zeros((3, 2), np.float32),
                 matrix=np.array([[1.0, 0, 0], [0, 1.0, 0]]), method="hog", score=1.0, source=f"f{i}.png",
                 meta={"source_shape": (32, 20)}) for i, im in enumerate(nir)]
    hal = Hallucinator(known_model(), blend=None, method="direct")
    tr = HallucinatedFaces(hal)
    assert tr.fingerprint == hal.fingerprint
    out = tr(recs)
    assert [f.image.shape for f in out] == [(32, 32, 3)] * 2 and out[0].method == "hog"
    assert out[0].meta["hallucination"] == hal.fingerprint and out[0].meta["source_shape"] == (32, 20)
    # Only the 20 source columns (less the eroded rim) count in the statistics: the same as the masked call,
    # not as the unmasked one.
    mask = valid_mask(recs[0].matrix, (32, 20), 32)
    assert 0 < mask.sum() < mask.size
    np.testing.assert_array_equal(out[0].image, hal.hallucinate(nir[:1], mask[None]).rgb[0])
    assert not np.array_equal(out[0].image, hal.hallucinate(nir[:1]).rgb[0])


# -- the command ------------------------------------------------------------------------------------------


def test_command_folder_sheet_and_failures(tmp_path: Path) -> None:
    model = save_model(tmp_path / "model", known_model())
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    for name, im in zip(("a.png", "sub/b.png"), faces(2, size=224)):
        cv2.imwrite(str(src / name), im)
    (src / "broken.png").write_bytes(b"not an image")
    (tmp_path / "vis").mkdir()
    cv2.imwrite(str(tmp_path / "vis" / "a.png"), np.full((224, 224, 3), 90, np.uint8))
    out, sheet = tmp_path / "out", tmp_path / "sheet.png"
    res = CliRunner().invoke(app, ["hallucinate", str(src), "-o", str(out), "--model", str(model), "--aligned",
                                      "--alpha", "0.5", "--sheet", str(sheet), "--vis", str(tmp_path / "vis")])
    assert res.exit_code == 0, res.output
    assert "hallucinated 2 of 3 images; failed 1" in res.output and "broken.png" in res.output
    a = cv2.imread(str(out / "a.png"), cv2.IMREAD_UNCHANGED)
    assert a.shape == (224, 224, 3) and (out / "sub" / "b.png").is_file()
    expected = Hallucinator(known_model(), BlendConfig(alpha=0.5)).hallucinate(faces(2, size=224)[:1]).rgb[0]
    assert np.abs(cv2.cvtColor(a, cv2.COLOR_BGR2RGB).astype(int) - expected).max() <= 1
    s = cv2.imread(str(sheet))
    assert s.shape == (18 + 2 * 224, 4 * 224, 3)  # title bar + 2 rows of NIR | CNN | blended | VIS


def test_command_sheet_never_replaces_an_input_or_an_output(tmp_path: Path) -> None:
    model = save_model(tmp_path / "model", known_model())
    img = tmp_path / "probe.png"
    cv2.imwrite(str(img), faces(1, size=224)[0])
    before = img.read_bytes()
    for sheet, out in ((img, tmp_path / "out.png"), (tmp_path / "same.png", tmp_path / "same.png")):
        res = CliRunner().invoke(app, ["hallucinate", str(img), "-o", str(out), "--model", str(model), "--aligned",
                                          "--sheet", str(sheet)])
        assert res.exit_code != 0 and "is an input image or one of the outputs" in " ".join(res.output.split())
    assert img.read_bytes() == before and not (tmp_path / "same.png").exists()


def test_command_single_file_and_all_failing(tmp_path: Path) -> None:
    model = save_model(tmp_path / "model", known_model(channels=("y",)))
    img = tmp_path / "probe.bmp"
    cv2.imwrite(str(img), faces(1, size=224)[0])
    res = CliRunner().invoke(app, ["hallucinate", str(img), "-o", str(tmp_path / "probe_vis.png"),
                                      "--model", str(model), "--aligned", "--method", "direct"])
    assert res.exit_code == 0, res.output
    assert cv2.imread(str(tmp_path / "probe_vis.png")).shape == (224, 224, 3)
    res = CliRunner().invoke(app, ["hallucinate", str(img), "-o", str(tmp_path / "probe_vis.jpg"),
                                   "--model", str(model), "--aligned", "--method", "direct"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "probe_vis.jpg").read_bytes()[:2] == b"\xff\xd8"  # JPEG, as the name says
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.zeros((50, 60), np.uint8))
    res = CliRunner().invoke(app, ["hallucinate", str(small), "-o", str(tmp_path / "o.png"), "--model",
                                      str(model), "--aligned"])
    assert res.exit_code == 1 and "--aligned needs 224x224 aligned faces, got 60x50" in res.output
    res = CliRunner().invoke(app, ["hallucinate", str(small), "-o", str(tmp_path / "o.png"), "--model", str(model)])
    assert res.exit_code == 1 and "small.png: no face found" in res.output  # detection, not --aligned
    assert "nothing written" in res.output and not (tmp_path / "o.png").exists()
    inplace = tmp_path / "inplace"
    inplace.mkdir()
    cv2.imwrite(str(inplace / "f.png"), faces(1, size=224)[0])
    before = (inplace / "f.png").read_bytes()
    res = CliRunner().invoke(app, ["hallucinate", str(inplace), "-o", str(inplace), "--model", str(model),
                                   "--aligned"])
    assert res.exit_code == 1 and "would overwrite the input image" in res.output
    assert (inplace / "f.png").read_bytes() == before
    res = CliRunner().invoke(app, ["hallucinate", str(img), "-o", str(tmp_path / "o.png"), "--model",
                                      str(tmp_path / "nope"), "--aligned"])
    assert res.exit_code == 1 and "no such hallucination model folder" in res.output
    res = CliRunner().invoke(app, ["hallucinate", str(tmp_path / "missing.png"), "-o", str(tmp_path / "o.png"),
                                      "--model", str(model)])
    assert res.exit_code == 1 and "missing.png: no such image file or folder" in res.output


def test_every_split_model_is_found_and_checked_before_any_work(tmp_path: Path) -> None:
    from nirvis.datasets.base import Sample, Split
    from nirvis.errors import NirvisError
    from nirvis.hallucination.evaluate import LeakError, models_for_splits

    def split(name: str, test: str) -> Split:
        return Split(name, (), (Sample(test, "vis", Path("g.png"), f"{name}/g"),),
                     (Sample(test, "nir", Path("p.png"), f"{name}/p"),))

    splits = [split("s0", "t0"), split("s1", "t1")]
    save_model(tmp_path / "m" / "s0", HallucinationModel(nets=known_model().nets, reference=dict(REFERENCE),
                                                         meta={"train_people": ["a"], "store_people": ["a"]}))
    with pytest.raises(NirvisError, match="no hallucination model for split s1"):
        models_for_splits(tmp_path / "m", splits)
    save_model(tmp_path / "m" / "s1", HallucinationModel(nets=known_model().nets, reference=dict(REFERENCE),
                                                         meta={"train_people": ["t0"], "store_people": ["t0"]}))
    assert models_for_splits(tmp_path / "m", splits[1:]) == {"s1": tmp_path / "m" / "s1"}
    with pytest.raises(LeakError, match=r"trained on 1 test people of s0"):
        models_for_splits(tmp_path / "m" / "s1", splits)  # one model for both: it saw s0's test person


def test_a_face_region_reference_normalises_over_the_face() -> None:
    from nirvis.mining.registered import face_mask

    model = known_model()
    model.reference["region"] = "face"
    nir = faces(2, size=224)
    nir[:, :20] = 0  # a dark background band outside the face: it must not count
    out = Hallucinator(model, blend=None, method="direct").hallucinate(nir)
    fm = face_mask(224)
    np.testing.assert_array_equal(out.nir, np.stack([match_mean_std(im, 100.0, 30.0, mask=fm) for im in nir]))
    frame = Hallucinator(known_model(), blend=None, method="direct").hallucinate(nir)
    assert not np.array_equal(frame.nir, out.nir)
    valid = np.ones_like(nir, bool)
    valid[:, :, 150:] = False
    masked = Hallucinator(model, blend=None, method="direct").hallucinate(nir, valid)
    np.testing.assert_array_equal(masked.nir[0], match_mean_std(nir[0], 100.0, 30.0, mask=fm & valid[0]))


@pytest.mark.data
def test_command_embedder_scores_each_face_against_its_vis_image(small_folder: Path, tmp_path: Path) -> None:
    """With a model that is the identity (Y = the NIR as it is, neutral chroma, no blend), the hallucinated face is
    the NIR face, so its cosine to the VIS image through the network equals the NIR face's."""
    from nirvis.hallucination.identity import identity_nets

    ref = {"nir_mean": 100.0, "nir_std": 40.0, "vis_mean": [120.0] * 3, "vis_std": [50.0] * 3, "normalize": False}
    model = save_model(tmp_path / "model", HallucinationModel(identity_nets("cpu"), ref))
    person = sorted(small_folder.iterdir())[1]
    res = CliRunner().invoke(app, ["hallucinate", str(person / "nir"), "-o", str(tmp_path / "out"), "--model",
                                   str(model), "--alpha", "0", "--vis", str(person / "vis" / "a.bmp"),
                                   "--embedder", "dlib"])
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.output.splitlines() if "cosine to the VIS image through dlib-resnet128" in ln]
    assert len(lines) == 2, res.output
    for ln in lines:
        nir, hal = (float(ln.split(k)[1].split(",")[0]) for k in ("NIR ", "hallucinated "))
        assert 0.5 < nir < 1 and abs(hal - nir) < 0.01, ln
    assert "closer to their VIS images for" in res.output
    res = CliRunner().invoke(app, ["hallucinate", str(person / "nir"), "-o", str(tmp_path / "o2"), "--model",
                                   str(model), "--embedder", "dlib"])
    assert res.exit_code != 0 and "give --vis" in " ".join(res.output.split())
