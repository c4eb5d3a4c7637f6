import json
import shutil

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from nirvis import data as data_mod
from nirvis.cli import app

runner = CliRunner()


@pytest.mark.parametrize("cmd", [[], ["demo"], ["evaluate"], ["align"]])
def test_help_everywhere(cmd):
    res = runner.invoke(app, [*cmd, "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage" in res.output


def test_demo_explains_where_to_put_the_data(monkeypatch):
    monkeypatch.delenv("NIRVIS_DATA", raising=False)
    monkeypatch.setattr(data_mod, "DEFAULT_CANDIDATES", ())
    res = runner.invoke(app, ["demo"])
    assert res.exit_code == 1
    assert "No data folder found: pass --data DIR, or set NIRVIS_DATA=DIR" in " ".join(res.output.split())


def test_evaluate_names_a_missing_data_folder(tmp_path):
    res = runner.invoke(app, ["evaluate", "--dataset", "rap3df", "--data", str(tmp_path / "nowhere")])
    assert res.exit_code == 2
    assert "nowhere: no such folder" in " ".join(res.output.split())


@pytest.mark.data
def test_evaluate_folder_writes_the_documented_json(small_folder, tmp_path):
    out = tmp_path / "res.json"
    res = runner.invoke(app, ["evaluate", "--dataset", "folder", "--data", str(small_folder), "--json", str(out),
                              "--cache-dir", str(tmp_path / "cache")])
    assert res.exit_code == 0, res.output
    assert "rank-1" in res.output and "raw" in res.output
    rep = json.loads(out.read_text())
    assert rep["protocol"] == "folder"
    row = rep["results"][0]
    assert row["config"] == "raw"
    for key in ("rank1_mean", "rank1_std", "vr_far_1e-2", "vr_far_1e-3", "n_probes", "n_failed_alignment"):
        assert key in row
    assert row["n_probes"] == 7  # 6 good probes + the corrupt one, which is counted, not dropped
    assert row["n_failed_alignment"] >= 1
    assert row["rank1_mean"] <= 6 / 7
    assert 0 <= rep["alignment"]["nir_rate"] < 1 and rep["alignment"]["vis_rate"] == 1.0
    assert any("broken.png" in f["path"] for f in rep["alignment"]["failures"])
    assert "image(s) gave no features and count as misses" in res.output
    assert "broken.png: unreadable or corrupt image" in res.output  # named on the console, not only in the JSON


@pytest.mark.data
def test_align_writes_a_contact_sheet(small_folder, tmp_path):
    out = tmp_path / "sheet.png"
    res = runner.invoke(app, ["align", str(small_folder), "-o", str(out), "--cols", "4"])
    assert res.exit_code == 0, res.output
    assert "aligned 9 of 10 images; failed 1" in res.output
    sheet = np.asarray(Image.open(out))
    assert sheet.shape == (3 * (160 + 16), 4 * 160, 3)


@pytest.mark.data
def test_align_embedder_draws_and_saves_what_the_network_sees(small_folder, tmp_path):
    from nirvis.features.models import ChecksumError, ModelNotFoundError, find_model

    try:
        find_model("edgeface-xs")
    except (ModelNotFoundError, ChecksumError) as exc:
        pytest.skip(f"edgeface-xs not available: {exc}")
    saved = tmp_path / "saved"
    res = runner.invoke(app, ["align", str(small_folder), "-o", str(tmp_path / "s.png"), "--embedder", "edgeface-xs",
                              "--save-dir", str(saved)])
    assert res.exit_code == 0, res.output
    assert "research use only" in res.output  # the licence is said once
    crops = sorted(saved.rglob("*.png"))
    assert len(crops) == 9 and all(Image.open(c).size == (112, 112) for c in crops)
    res = runner.invoke(app, ["align", str(small_folder), "-o", str(tmp_path / "d.png"), "--embedder", "dlib",
                              "--save-dir", str(tmp_path / "dlib")])
    assert res.exit_code == 0 and {Image.open(c).size for c in (tmp_path / "dlib").rglob("*.png")} == {(150, 150)}
    res = runner.invoke(app, ["align", str(small_folder), "--embedder", "nonet"])
    assert res.exit_code != 0 and "--embedder nonet" in res.output


@pytest.mark.data
def test_fit_embedding_then_evaluate_with_it_and_refuse_another_embedder(small_folder, tmp_path):
    cache = ["--cache-dir", str(tmp_path / "cache")]
    model = tmp_path / "pca"
    first = sorted(p for p in small_folder.iterdir())[0]
    shutil.copy(first / "vis" / "a.bmp", first / "vis" / "b.bmp")  # a second VIS image: not in the protocol
    res = runner.invoke(app, ["fit-embedding", "--method", "pca", "--dataset", "folder", "--data",
                              str(small_folder), "-o", str(model), *cache])
    assert res.exit_code == 0, res.output
    assert "fitted pca on 10 vectors of 3 people" in res.output  # every aligned image, the extra VIS included
    meta = json.loads((tmp_path / "pca.json").read_text())
    assert meta["method"] == "pca" and meta["embedder_fingerprint"].startswith("dlib-resnet128:")
    assert meta["train_people"] == sorted(p.name for p in small_folder.iterdir())
    out = tmp_path / "res.json"
    # Fitted on the very people the folder tests: refused (it used to score them, inflated).
    res = runner.invoke(app, ["evaluate", "--dataset", "folder", "--data", str(small_folder), "--model", str(model),
                              "--json", str(out), *cache])
    assert res.exit_code == 2 and "fitted on 3 people that split" in " ".join(res.output.split())
    assert not out.exists()
    # A file saved before the people were recorded is applied, with a note that it cannot be checked.
    del meta["train_people"]
    (tmp_path / "pca.json").write_text(json.dumps(meta))
    res = runner.invoke(app, ["evaluate", "--dataset", "folder", "--data", str(small_folder), "--model", str(model),
                              "--json", str(out), *cache])
    assert res.exit_code == 0, res.output
    assert "does not record who it was fitted on" in " ".join(res.output.split())
    rows = {r["config"]: r for r in json.loads(out.read_text())["results"]}
    assert set(rows) == {"raw", "saved:pca"}
    # A full-rank PCA is a rotation about the mean: same people, same probes, counted the same way.
    assert rows["saved:pca"]["n_probes"] == rows["raw"]["n_probes"]
    # The same model claimed by another embedder is refused, with both fingerprints named.
    meta["embedder_fingerprint"] = "arcface:0000000000"
    (tmp_path / "pca.json").write_text(json.dumps(meta))
    res = runner.invoke(app, ["evaluate", "--dataset", "folder", "--data", str(small_folder), "--model", str(model),
                              *cache])
    assert res.exit_code == 2
    assert "arcface:0000000000" in " ".join(res.output.split())


def _tiny_hallucination_model(path, train_people):
    import torch

    from nirvis.hallucination import ChannelNetSpec, HallucinationModel, HallucinationNets, save_model

    torch.manual_seed(0)
    nets = HallucinationNets({c: ChannelNetSpec(4, 4, 2, 3, residual=c == "y") for c in ("y", "cb", "cr")})
    ref = {"nir_mean": 110.0, "nir_std": 60.0, "vis_mean": [110.0] * 3, "vis_std": [60.0] * 3}
    save_model(path, HallucinationModel(nets, ref, {"train_people": train_people, "store_people": train_people}))


@pytest.mark.data
def test_evaluate_with_hallucination_adds_rows_and_refuses_a_model_that_saw_test_people(small_folder, tmp_path):
    cache = ["--cache-dir", str(tmp_path / "cache")]
    model = tmp_path / "hal"
    _tiny_hallucination_model(model, ["somebody-else"])
    out = tmp_path / "res.json"
    res = runner.invoke(app, ["evaluate", "--dataset", "folder", "--data", str(small_folder), "--hallucination",
                              str(model), "--json", str(out), *cache])
    assert res.exit_code == 0, res.output
    rows = {r["config"]: r for r in json.loads(out.read_text())["results"]}
    assert set(rows) == {"raw", "H"}
    assert rows["H"]["n_probes"] == rows["raw"]["n_probes"] == 7
    leaky = tmp_path / "leaky"
    _tiny_hallucination_model(leaky, [sorted(p.name for p in small_folder.iterdir())[0]])
    res = runner.invoke(app, ["evaluate", "--dataset", "folder", "--data", str(small_folder), "--hallucination",
                              str(leaky), *cache])
    assert res.exit_code == 2
    assert "trained on 1 test people" in " ".join(res.output.split())


@pytest.mark.parametrize("protocol, message", [("bogus", "unknown CASIA protocol 'bogus'"),
                                               ("view2:x", "view2:K must be 1..10, got 'x'"),
                                               ("view2:11", "view2:K must be 1..10, got '11'")])
def test_bad_casia_protocol_is_a_message_not_a_traceback(tmp_path, protocol, message):
    res = runner.invoke(app, ["evaluate", "-d", "casia", "--data", str(tmp_path), "--protocol", protocol])
    assert res.exit_code == 2 and message in " ".join(res.output.split())
    assert not isinstance(res.exception, ValueError)


@pytest.mark.parametrize("args, message", [
    (["-d", "rap3df", "--protocol", "view2"], "RAP3DF has one protocol, 'splits'"),
    (["-d", "folder", "--protocol", "view1"], "a folder dataset has no protocols"),
    (["-d", "casia", "--train-data", "elsewhere"], "CASIA's protocols say who trains"),
])
def test_a_protocol_option_the_dataset_has_not_is_refused(tmp_path, args, message):
    # These options were silently ignored before: a user asking for another protocol got the default one.
    res = runner.invoke(app, ["evaluate", *args, "--data", str(tmp_path)])
    assert res.exit_code == 2 and message in " ".join(res.output.split())


def test_align_refuses_a_bad_channel_and_fails_when_nothing_aligns(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    res = runner.invoke(app, ["align", str(tmp_path), "--channel", "reed"])
    assert res.exit_code == 2 and "--channel 'reed': use gray, red, green or blue" in res.output
    res = runner.invoke(app, ["align", str(tmp_path / "a.png"), "-o", str(tmp_path / "sheet.png")])
    assert res.exit_code == 1 and "aligned 0 of 1 images; failed 1" in res.output


def test_align_never_overwrites_an_input_and_says_when_it_cuts_the_list(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / name)
    before = (tmp_path / "a.png").read_bytes()
    res = runner.invoke(app, ["align", str(tmp_path / "a.png"), "-o", str(tmp_path / "a.png")])
    assert res.exit_code == 2 and "is one of the input images" in " ".join(res.output.split())
    assert (tmp_path / "a.png").read_bytes() == before
    res = runner.invoke(app, ["align", str(tmp_path), "-o", str(tmp_path / "out" / "s.png"), "--limit", "2"])
    assert "note: 3 images found; aligning the first 2 (--limit)" in res.output
    assert "aligned 0 of 2 images" in res.output


def test_the_results_table_never_cuts_a_configuration_name(monkeypatch):
    import rich.console

    from nirvis.cli import _print_report
    from nirvis.evaluation.protocols import EvaluationReport

    row = {"rank1_mean": 0.5, "rank1_std": 0.0, "vr_far_1e-2": 0.5, "vr_far_1e-3": float("nan"), "n_probes": 4,
           "n_failed_alignment": 0, "n_gallery_failed": 0, "n_splits": 1}
    rep = EvaluationReport("toy", [dict(row, config="saved:a_rather_long_model_name_one"),
                                   dict(row, config="saved:a_rather_long_model_name_two")],
                           {"nir_rate": 1.0, "nir_images": 4, "vis_rate": 1.0, "vis_images": 2})
    console = rich.console.Console(width=80, record=True)  # a pipe or a log: 80 columns
    monkeypatch.setattr(rich.console, "Console", lambda *a, **k: console)
    _print_report(rep)
    text = console.export_text()
    assert "saved:a_rather_long_model_name_one" in text and "saved:a_rather_long_model_name_two" in text
    assert "n/a" in text


@pytest.mark.data
def test_align_save_dir_keeps_the_folders_and_bad_outputs_are_messages(small_folder, tmp_path):
    saved = tmp_path / "saved"
    res = runner.invoke(app, ["align", str(small_folder), "-o", str(tmp_path / "s.png"), "--save-dir", str(saved)])
    assert res.exit_code == 0, res.output
    # every person has vis/a.bmp: one file each, not one a.png overwritten three times
    assert len(list(saved.rglob("vis/a.png"))) == 3 and len(list(saved.rglob("*.png"))) == 9
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = runner.invoke(app, ["align", str(small_folder / sorted(p.name for p in small_folder.iterdir())[0]),
                              "-o", str(blocker / "s.png")])
    assert res.exit_code == 2 and "is a file, not a folder" in " ".join(res.output.split())  # before aligning
    res = runner.invoke(app, ["fit-embedding", "--method", "pca", "--dataset", "folder", "--data", str(small_folder),
                              "-o", str(blocker / "m"), "--cache-dir", str(tmp_path / "cache")])
    assert res.exit_code == 2 and "is a file, not a folder" in " ".join(res.output.split())  # before fitting


def test_two_models_with_one_name_and_save_dir_over_the_inputs_are_refused(tmp_path):
    data = tmp_path / "data"
    for m in ("nir", "vis"):
        (data / "p1" / m).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(data / "p1" / m / "0.png")
    res = runner.invoke(app, ["evaluate", "--dataset", "folder", "--data", str(data), "--model",
                              str(tmp_path / "a" / "lr"), "--model", str(tmp_path / "b" / "lr")])
    assert res.exit_code == 2 and "another --model is also named 'lr'" in " ".join(res.output.split())
    img = tmp_path / "faces" / "x.png"
    img.parent.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    res = runner.invoke(app, ["align", str(img.parent), "-o", str(tmp_path / "s.png"), "--save-dir", str(img.parent)])
    assert res.exit_code == 2 and "would overwrite the input image" in " ".join(res.output.split())
    assert Image.open(img).size == (8, 8)


def test_unusable_outputs_fail_before_any_work(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    res = runner.invoke(app, ["evaluate", "--dataset", "folder", "--data", str(tmp_path / "nowhere"),
                              "--json", str(folder)])
    assert res.exit_code == 2 and "--json" in res.output and "is a folder" in res.output  # before the data
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = runner.invoke(app, ["fit-embedding", "--dataset", "folder", "--data", str(tmp_path / "nowhere"),
                              "-o", str(blocker / "m")])
    assert res.exit_code == 2 and "is a file, not a folder" in " ".join(res.output.split())
    res = runner.invoke(app, ["mine", "--dataset", "folder", "--data", str(tmp_path / "nowhere"), "-o", str(folder)])
    assert res.exit_code == 1 and "is a folder; give the store's file name" in " ".join(res.output.split())


def test_demo_with_a_missing_data_folder_says_so_and_fit_embedding_refuses_a_folder_as_output(tmp_path):
    res = runner.invoke(app, ["demo", "--data", str(tmp_path / "nowhere")])
    assert res.exit_code == 1 and "nowhere: no such folder" in " ".join(res.output.split())
    res = runner.invoke(app, ["fit-embedding", "-o", str(tmp_path), "-d", "folder", "--data", str(tmp_path)])
    assert res.exit_code == 2 and "is a folder; give the model's file stem" in " ".join(res.output.split())


# -- known models and --embedder (issue 12) ---------------------------------------------------------------

@pytest.fixture()
def fake_known_model(tmp_path, monkeypatch):
    """A registered research-only model "fake-net" (a few known bytes) and the file holding them."""
    import hashlib
    from dataclasses import replace

    from nirvis.features import models as reg

    payload = b"a registered file\n" * 100
    spec = replace(reg.KNOWN_MODELS["edgeface-xs"], name="fake-net", filename="fake_net.onnx",
                   sha256=hashlib.sha256(payload).hexdigest(), size_bytes=len(payload), url=None)
    monkeypatch.setitem(reg.KNOWN_MODELS, "fake-net", spec)
    src = tmp_path / "download" / "fake_net.onnx"
    src.parent.mkdir()
    src.write_bytes(payload)
    return spec, src


@pytest.mark.parametrize("cmd", [["models"], ["models", "list"], ["models", "add"], ["models", "fetch"]])
def test_models_help(cmd):
    res = runner.invoke(app, [*cmd, "--help"])
    assert res.exit_code == 0 and "Usage" in res.output


def test_models_list_add_and_list_again(no_models, fake_known_model):
    spec, src = fake_known_model
    dest = no_models / "models"
    res = runner.invoke(app, ["models", "list", "--models-dir", str(dest)])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "edgeface-xs" in text and "edgeface-xxs" in text and "research use only" in text
    assert "missing (fake_net.onnx)" in text and str(dest) in text
    bad = no_models / "bad.onnx"
    bad.write_bytes(b"something else")
    res = runner.invoke(app, ["models", "add", "fake-net", str(bad), "--models-dir", str(dest)])
    assert res.exit_code == 2
    text = "".join(res.output.split())  # digests may be wrapped
    assert spec.sha256 in text and hashlib_hex(b"something else") in text and "notadded" in text
    res = runner.invoke(app, ["models", "add", "fake-net", str(src), "--models-dir", str(dest)])
    assert res.exit_code == 0, res.output
    assert (dest / "fake_net.onnx").read_bytes() == src.read_bytes()
    assert "research use only" in res.output
    res = runner.invoke(app, ["models", "list", "--models-dir", str(dest)])
    assert f"file: installed: {dest / 'fake_net.onnx'}" in res.output
    res = runner.invoke(app, ["models", "add", "no-such-net", str(src)])
    assert res.exit_code == 2 and "unknown model 'no-such-net'; known models:" in " ".join(res.output.split())


def hashlib_hex(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_models_fetch_from_a_local_server_and_without_network(no_models, fake_known_model, monkeypatch):
    import http.server
    import socket
    import threading
    from dataclasses import replace

    from nirvis.features import models as reg

    spec, src = fake_known_model
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(src.parent)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/fake_net.onnx"
        monkeypatch.setitem(reg.KNOWN_MODELS, "fake-net", replace(spec, url=url))
        monkeypatch.setenv("NIRVIS_MODELS", str(no_models / "models"))
        res = runner.invoke(app, ["models", "fetch", "fake-net", "--timeout", "5"])
        assert res.exit_code == 0, res.output
        assert (no_models / "models" / "fake_net.onnx").read_bytes() == src.read_bytes()
    finally:
        httpd.shutdown()
        httpd.server_close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setitem(reg.KNOWN_MODELS, "fake-net", replace(spec, url=f"http://127.0.0.1:{port}/x.onnx"))
    res = runner.invoke(app, ["models", "fetch", "fake-net", "--models-dir", str(no_models / "m2"), "--timeout", "2"])
    assert res.exit_code == 1 and "cannot reach" in res.output and "no network" in " ".join(res.output.split())
    res = runner.invoke(app, ["models", "fetch", "edgeface-xs", "--models-dir", str(no_models / "m2")])
    text = " ".join(res.output.split())
    assert res.exit_code == 1 and "no download address is known" in text and "nirvis models add edgeface-xs" in text


def test_embedder_option_refuses_unknown_names_and_names_a_missing_model(no_models):
    data = no_models / "data"
    for m in ("nir", "vis"):
        (data / "p1" / m).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(data / "p1" / m / "0.png")
    base = ["evaluate", "--dataset", "folder", "--data", str(data), "--no-cache"]
    res = runner.invoke(app, [*base, "--embedder", "arcface"])
    text = " ".join(res.output.split())
    assert res.exit_code == 2
    assert "unknown embedder 'arcface'; use one of: dlib, dlib-noflip, edgeface-xs, edgeface-xxs" in text
    res = runner.invoke(app, [*base, "--embedder", "edgeface-xxs", "--models-dir", str(no_models / "mine")])
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and "file edgeface_xxs.onnx not found" in text
    assert str(no_models / "mine") in text and "nirvis models add edgeface-xxs" in text
    res = runner.invoke(app, ["fit-embedding", "-o", str(no_models / "m"), "-d", "folder", "--data", str(data),
                              "--embedder", f"onnx:{no_models / 'nowhere.onnx'}"])
    assert res.exit_code == 2 and "nowhere.onnx: no such file" in " ".join(res.output.split())
    for cmd in ("demo", "evaluate", "fit-embedding"):
        assert "--embedder" in runner.invoke(app, [cmd, "--help"]).output


@pytest.mark.data
def test_evaluate_and_fit_embedding_with_edgeface_say_the_licence_once_and_key_models_by_network(small_folder,
                                                                                                  tmp_path):
    from nirvis.features.models import ModelNotFoundError, find_model

    try:
        find_model("edgeface-xxs")
    except ModelNotFoundError as exc:
        pytest.skip(f"edgeface-xxs not available: {exc}")
    cache = ["--cache-dir", str(tmp_path / "cache")]
    out = tmp_path / "res.json"
    res = runner.invoke(app, ["evaluate", "--dataset", "folder", "--data", str(small_folder), "--embedder",
                              "edgeface-xxs", "--json", str(out), *cache])
    assert res.exit_code == 0, res.output
    assert " ".join(res.output.split()).count("research use only") == 1
    row = json.loads(out.read_text())["results"][0]
    assert row["n_probes"] == 7 and row["rank1_mean"] >= 5 / 7  # 6 aligned NIR probes of 3 people
    model = tmp_path / "pca"
    res = runner.invoke(app, ["fit-embedding", "--method", "pca", "--dataset", "folder", "--data", str(small_folder),
                              "--embedder", "edgeface-xxs", "-o", str(model), *cache])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "pca.json").read_text())["embedder_fingerprint"].startswith("edgeface-xxs:")
    # dlib's features are not EdgeFace's: the model is refused
    res = runner.invoke(app, ["evaluate", "--dataset", "folder", "--data", str(small_folder), "--model", str(model),
                              *cache])
    assert res.exit_code == 2 and "edgeface-xxs:" in " ".join(res.output.split())
    assert "research use only" not in res.output  # dlib: no notice
