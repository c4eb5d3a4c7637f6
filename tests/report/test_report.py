"""nirvis report: the page, its images and its numbers, from a synthetic results file (no data needed), and
end to end from a real evaluation (with data)."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from nirvis.cli import app
from nirvis.report.page import ReportConfig, write_report
from nirvis.report.results import ResultsError, load_results
from nirvis.report.summary import compare, verdict

runner = CliRunner()

FAR_GRID = [float(v) for v in np.logspace(-5, 0, 26)]


def _split(name: str, rank1: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    cmc = np.minimum(1.0, rank1 + np.cumsum(np.r_[0.0, rng.uniform(0.0, 0.03, 19)]))
    vr = np.clip(rank1 * 0.8 + 0.15 * (np.log10(FAR_GRID) + 5) / 5, 0, 1)
    far = [0.0 if t < 3e-4 else t * 0.9 for t in FAR_GRID]  # no false accept below one impostor pair
    return {"split": name, "rank1": rank1, "rank5": float(cmc[4]), "vr_far_1e-2": float(vr[15]),
            "vr_far_1e-3": float(vr[10]), "n_probes": 100, "n_failed": 2, "n_gallery": 20, "n_gallery_failed": 0,
            "cmc": [float(c) for c in cmc], "roc": {"far_target": FAR_GRID, "far": far, "vr": [float(v) for v in vr],
                                                    "threshold": [0.9 - 0.02 * i for i in range(26)]}}


def _row(name: str, rank1s: list[float]) -> dict:
    splits = [_split(f"s{i}", r, seed=i + 7 * len(name)) for i, r in enumerate(rank1s)]
    r1 = np.array(rank1s)
    v2 = np.array([s["vr_far_1e-2"] for s in splits])
    v3 = np.array([s["vr_far_1e-3"] for s in splits])
    return {"config": name, "rank1_mean": float(r1.mean()), "rank1_std": float(r1.std()),
            "vr_far_1e-2": float(v2.mean()), "vr_far_1e-2_std": float(v2.std()),
            "vr_far_1e-3": float(v3.mean()), "vr_far_1e-3_std": float(v3.std()),
            "n_probes": 100 * len(splits), "n_failed_alignment": 2 * len(splits), "n_gallery_failed": 0,
            "n_splits": len(splits), "splits": splits}


RAW = [0.60, 0.62, 0.58, 0.64, 0.61]
H = [0.66, 0.69, 0.63, 0.70, 0.68]       # better on every split: helped
LR = [0.61, 0.60, 0.60, 0.63, 0.62]      # +0.2 points, mixed: no clear difference
HLR = [0.55, 0.57, 0.52, 0.58, 0.56]     # worse on every split: hurt


@pytest.fixture()
def results_file(tmp_path):
    """A results file of evaluate --json's layout, with four rows, a failed one, a name to escape, and
    alignment failures: an RGB image, a NIR image kept in the red channel, a corrupt file and a missing one."""
    imgs = tmp_path / "images"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (149, 119, 3)).astype(np.uint8)).save(imgs / "rgb_A.bmp")
    ir = np.zeros((149, 119, 3), np.uint8)
    ir[..., 0] = rng.integers(0, 256, (149, 119))
    Image.fromarray(ir).save(imgs / "ir_B.bmp")
    (imgs / "broken.png").write_bytes(b"not a png")
    failures = [
        {"capture_id": "p1/A/vis", "path": str(imgs / "rgb_A.bmp"), "reason": f"{imgs / 'rgb_A.bmp'}: no face found"},
        {"capture_id": "p2/B/nir", "path": "images/ir_B.bmp", "reason": "images/ir_B.bmp: no face found <tried>"},
        {"capture_id": "p3/C/nir", "path": str(imgs / "broken.png"), "reason": "unreadable or corrupt image"},
        {"capture_id": "p4/D/vis", "path": str(tmp_path / "gone.bmp"), "reason": "no such image file"},
    ]
    data = {"protocol": "synthetic-5x", "results": [
        _row("raw", RAW), _row("H", H), _row("LR", LR), _row("H+LR", HLR), _row('<b>x</b> & "q"', RAW),
        {"config": "itml", "error": "synthetic-5x split s0, configuration 'itml': too few training people",
         "rank1_mean": float("nan"), "n_probes": 0, "n_failed_alignment": 0, "n_splits": 5, "splits": []}],
        "alignment": {"nir_rate": 0.98, "nir_images": 100, "nir_failed": 2, "vis_rate": 0.99, "vis_images": 100,
                      "vis_failed": 1, "failures": failures},
        "command": "nirvis evaluate --dataset rap3df -e lowrank --json r.json", "cwd": str(tmp_path),
        "created": "2025-01-02T03:04:05+00:00", "versions": {"python": "3.11.7", "nirvis": "0.1.0"},
        "embedder": {"name": "dlib-resnet128", "fingerprint": "dlib-resnet128:abc"}}
    p = tmp_path / "results.json"
    p.write_text(json.dumps(data))  # NaN written as JSON's NaN literal, as atomic_write_json does
    return p


def _table_cells(page: str) -> dict[str, list[str]]:
    table = page[page.index('<table class="results">'):page.index("</table>")]
    rows = re.findall(r"<tr>(.*?)</tr>", table)
    out = {}
    for r in rows[1:]:
        cells = re.findall(r"<td>(.*?)</td>", r)
        out[cells[0]] = cells[1:]
    return out


def test_report_writes_the_page_its_images_and_the_numbers(results_file, tmp_path):
    out = tmp_path / "report"
    res = runner.invoke(app, ["report", "--from", str(results_file), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert f"wrote {out / 'index.html'}" in res.output
    page = (out / "index.html").read_text(encoding="utf-8")
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert srcs == ["figures/cmc.png", "figures/roc.png", "failures/0000.png", "failures/0001.png"]
    for src in srcs:
        with Image.open(out / src) as im:
            assert im.format == "PNG" and min(im.size) > 50
    assert sorted(p.name for p in out.iterdir()) == ["failures", "figures", "index.html"]
    assert not list(out.rglob(".*"))  # no temporary files left
    assert not re.search(r'(src|href)="(https?:)?//', page) and "<script" not in page  # readable offline
    # Table 2 holds the file's numbers: rank-1 mean ± std, VR@1%, VR@0.1% (%), probes, failures
    cells = _table_cells(page)
    raw = json.loads(results_file.read_text())["results"][0]
    assert cells["raw"] == [f"{100 * raw['rank1_mean']:.1f} ± {100 * raw['rank1_std']:.1f}",
                            f"{100 * raw['vr_far_1e-2']:.1f} ± {100 * raw['vr_far_1e-2_std']:.1f}",
                            f"{100 * raw['vr_far_1e-3']:.1f} ± {100 * raw['vr_far_1e-3_std']:.1f}", "500", "10 / 0"]
    assert cells["raw"][0] == "61.0 ± 2.0" and cells["H"][0] == "67.2 ± 2.5"
    assert list(cells) == ["raw", "H", "LR", "H+LR", "&lt;b&gt;x&lt;/b&gt; &amp; &quot;q&quot;"]
    assert "failed: synthetic-5x split s0, configuration &#x27;itml&#x27;: too few training people" in page
    assert "<b>x</b>" not in page and "<tried>" not in page and "&lt;tried&gt;" in page  # all text escaped
    # the sentence, from the numbers
    assert "On this data, H helped: rank-1 went from 61.0% (raw) to 67.2% (H), +6.2 points on average over 5 " \
           "splits, better on 5, worse on 0" in page
    assert "LR made no clear difference" in page and "H+LR hurt" in page and "H on top of LR hurt" in page
    # how it was made
    assert "nirvis evaluate --dataset rap3df -e lowrank --json r.json" in page
    assert "dlib-resnet128:abc" in page and "3.11.7" in page and "2025-01-02T03:04:05+00:00" in page
    # failures: two thumbnails with reasons, the corrupt and the missing file as text
    assert "ir_B.bmp" in page and "no face found &lt;tried&gt;" in page
    assert "broken.png" in page and "(cannot be shown:" in page
    assert "gone.bmp" in page and "(file not found now)" in page
    assert "keep it to yourself" in page
    with Image.open(out / "failures" / "0001.png") as im:
        assert im.mode == "L"  # the NIR kept in the red channel is shown in gray


def test_report_is_reproducible_and_replaces_its_own_files(results_file, tmp_path):
    out = tmp_path / "report"
    write_report(results_file, out)
    first = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    write_report(results_file, out)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == first
    write_report(results_file, out, ReportConfig(max_failures=1))  # fewer thumbnails: the old one goes
    assert sorted(p.name for p in (out / "failures").iterdir()) == ["0000.png"]
    page = (out / "index.html").read_text()
    assert "1 shown, 3 listed below" in page and "ir_B.bmp" in page


def test_blur_faces_blurs_every_face(results_file, tmp_path):
    import cv2

    plain, blurred = tmp_path / "plain", tmp_path / "blurred"
    write_report(results_file, plain)
    res = runner.invoke(app, ["report", "--from", str(results_file), "-o", str(blurred), "--blur-faces"])
    assert res.exit_code == 0, res.output
    assert "(faces blurred)" in res.output
    page = (blurred / "index.html").read_text()
    assert "Every face image in this report is blurred." in page and "2 shown (blurred)" in page
    for name in ("0000.png", "0001.png"):
        a = np.asarray(Image.open(plain / "failures" / name), dtype=np.float64)
        b = np.asarray(Image.open(blurred / "failures" / name), dtype=np.float64)
        assert a.shape == b.shape
        sharp, soft = cv2.Laplacian(a, cv2.CV_64F).var(), cv2.Laplacian(b, cv2.CV_64F).var()
        assert soft < sharp / 100, (name, sharp, soft)  # no detail left, only the overall tone
        assert abs(a.mean() - b.mean()) < 5


def test_report_refuses_a_folder_that_is_not_a_report_and_bad_results(results_file, tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    res = runner.invoke(app, ["report", "--from", str(results_file), "-o", str(busy)])
    assert res.exit_code == 2
    assert "the folder is not empty and holds no nirvis report" in " ".join(res.output.split())
    assert (busy / "notes.txt").read_text() == "mine" and not (busy / "index.html").exists()
    res = runner.invoke(app, ["report", "--from", str(tmp_path / "none.json"), "-o", str(tmp_path / "o")])
    assert res.exit_code == 2 and "none.json: no such results file" in " ".join(res.output.split())
    bad = tmp_path / "bad.json"
    bad.write_text('{"protocol": "x"}')
    with pytest.raises(ResultsError, match=r"bad\.json: not a results file of 'nirvis evaluate --json'"):
        load_results(bad)
    bad.write_text("{not json")
    with pytest.raises(ResultsError, match=r"bad\.json: not a readable JSON results file"):
        load_results(bad)
    res = runner.invoke(app, ["report", "--from", str(results_file), "-o", str(bad)])
    assert res.exit_code == 2 and "bad.json: is a file, not a folder" in " ".join(res.output.split())


def test_old_results_without_curves_or_provenance_still_make_a_page(results_file, tmp_path):
    data = json.loads(results_file.read_text())
    for key in ("command", "cwd", "created", "versions", "embedder"):
        del data[key]
    for row in data["results"]:
        for s in row.get("splits", []):
            del s["cmc"], s["roc"]
    data["alignment"]["failures"] = []
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data))
    page = write_report(old, tmp_path / "r").read_text()
    assert "does not record its command" in page and "not recorded in the results file" in page
    assert "holds no CMC or ROC per split" in page and "Every image was aligned." in page
    assert "<img" not in page and "keep it to yourself" not in page


def test_verdict_rules(results_file):
    res = load_results(results_file)
    c = compare(res.row("H"), res.row("raw"))
    assert (c.outcome, c.n_splits, c.better, c.worse) == ("helped", 5, 5, 0)
    assert math.isclose(c.mean_diff, np.mean(np.array(H) - np.array(RAW)))
    assert compare(res.row("LR"), res.row("raw")).outcome == "no clear difference"
    assert compare(res.row("H+LR"), res.row("raw")).outcome == "hurt"
    assert res.row("itml") is None  # a failed row is never compared
    one = load_results(results_file)
    import dataclasses

    rows = tuple(dataclasses.replace(r, splits=r.splits[:1]) for r in one.rows if r.config in ("raw", "LR"))
    sentence, comps = verdict(dataclasses.replace(one, rows=rows))
    assert [c.outcome for c in comps] == ["one split"]
    assert "cannot tell an effect from chance" in sentence
    sentence, comps = verdict(dataclasses.replace(one, rows=rows[:1]))
    assert comps == [] and "hold no H or LR row" in sentence


def test_run_info_records_the_command_versions_and_embedder(monkeypatch, tmp_path):
    from nirvis.report.provenance import command_line, run_info

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["/usr/bin/nirvis", "evaluate", "--data", "my data", "--json", "r.json"])

    class Emb:
        name, fingerprint = "dlib-resnet128", "dlib-resnet128:0123456789"

    info = run_info(Emb())
    assert info["command"] == "nirvis evaluate --data 'my data' --json r.json"
    assert info["cwd"] == str(tmp_path)
    assert info["embedder"] == {"name": "dlib-resnet128", "fingerprint": "dlib-resnet128:0123456789"}
    assert {"python", "nirvis", "numpy"} <= set(info["versions"])
    assert command_line(["/venv/lib/python3.11/site-packages/nirvis/cli.py", "demo"]) == "nirvis demo"
    assert command_line(["/usr/bin/pytest", "-q"]) is None  # another program: unknown, never pytest's argv


def test_every_image_of_the_report_loads_in_chromium(results_file, tmp_path, chromium):
    out = tmp_path / "report"
    write_report(results_file, out, ReportConfig(blur_faces=True))
    chromium.get((out / "index.html").as_uri())
    images = chromium.execute_script(
        "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
    assert [src for src, _, _ in images] == ["figures/cmc.png", "figures/roc.png", "failures/0000.png",
                                             "failures/0001.png"]
    assert all(done and width > 0 for _, done, width in images), images
    assert chromium.title == "nirvis report: synthetic-5x"
    cell = chromium.execute_script("return document.querySelector('table.results tbody tr td:nth-child(2)').innerText")
    assert cell == "61.0 ± 2.0"
    assert "<b>x</b>" in chromium.find_element("css selector", "table.results").text  # shown as text, not markup


@pytest.mark.data
def test_report_from_a_real_evaluation(small_folder, tmp_path, monkeypatch):
    first = sorted(small_folder.iterdir())[0] / "nir"
    Image.fromarray(np.full((120, 100), 90, np.uint8)).save(first / "blank.png")  # a probe with no face
    out = tmp_path / "res.json"
    argv = ["nirvis", "evaluate", "--dataset", "folder", "--data", str(small_folder), "--json", str(out),
            "--cache-dir", str(tmp_path / "cache")]
    monkeypatch.setattr("sys.argv", argv)
    res = runner.invoke(app, argv[1:])
    assert res.exit_code == 0, res.output
    rep = json.loads(out.read_text())
    assert rep["command"] == " ".join(argv) and rep["embedder"]["name"] and rep["versions"]["nirvis"]
    res = runner.invoke(app, ["report", "--from", str(out), "-o", str(tmp_path / "report"), "--blur-faces"])
    assert res.exit_code == 0, res.output
    page = (tmp_path / "report" / "index.html").read_text()
    assert _table_cells(page)["raw"][0] == f"{100 * rep['results'][0]['rank1_mean']:.1f}"  # one split: no ±
    assert "blank.png" in page and "no face found" in page  # thumbnail, blurred
    assert "broken.png" in page and "(cannot be shown:" in page
    assert (tmp_path / "report" / "failures" / "0000.png").is_file()
    assert (tmp_path / "report" / "figures" / "cmc.png").is_file()


# -- sections drawn from the demo's stages: mining and training, Fig. 5 -------------------------------------------

def _patch_store(path, n: int = 40, patch: int = 40):
    """A small complete patch store with what the mining report reads (summary, config, scores)."""
    import cv2
    import h5py

    from nirvis.mining.config import MiningConfig
    from nirvis.mining.store import FORMAT, VERSION, append_pairs, create_store

    cfg = MiningConfig()
    n_loc = len(cfg.location_grid())
    rng = np.random.default_rng(1)
    nir = np.stack([cv2.GaussianBlur(rng.random((patch, patch)).astype(np.float32), (0, 0), 1.0)
                    for _ in range(n)])
    nir = cv2.normalize(nir, None, 10, 245, cv2.NORM_MINMAX).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as h5:
        create_store(h5, patch, 8)
        append_pairs(h5, {"nir": nir, "y": 255 - nir, "cb": np.full_like(nir, 110), "cr": np.full_like(nir, 150),
                          "person": np.arange(n, dtype=np.int32) % 2, "nir_id": np.array([b"n"] * n),
                          "vis_id": np.array([b"v"] * n), "loc": np.zeros((n, 2), np.int16),
                          "s1": np.full(n, 0.7, np.float32), "s2": np.full(n, 0.6, np.float32),
                          "flip": np.arange(n) % 2 == 1, "mode": np.zeros(n, np.uint8)})
        append_pairs(h5, {"scored/s1": rng.uniform(-1, 1, 500).astype(np.float16),
                          "scored/s2": rng.uniform(-1, 1, 500).astype(np.float16)})
        h5.attrs.update(format=FORMAT, version=VERSION, people=json.dumps(["Q0", "Q1"]),
                        config=json.dumps(cfg.to_dict()), reference=json.dumps({}), meta=json.dumps({}),
                        summary=json.dumps({"pairs_stored": n, "prune_cap_per_location": 5,
                                            "kept_per_location": rng.integers(0, 9, n_loc).tolist(),
                                            "kept_per_location_after_prune": rng.integers(0, 5, n_loc).tolist()}),
                        complete=True)
    return path


@pytest.fixture()
def demo_results(results_file, tmp_path):
    """The synthetic results file as nirvis demo --json writes it: with its "demo" section, whose stage folders
    hold a patch store and an (identity) hallucination model with its training history."""
    from nirvis.hallucination.identity import identity_nets
    from nirvis.hallucination.io import HallucinationModel, save_model

    stages = tmp_path / "stages"
    _patch_store(stages / "mine" / "k-mine" / "patches.h5")
    model = stages / "train" / "k-train" / "model"
    ref = {"nir_mean": 100.0, "nir_std": 40.0, "vis_mean": [120.0] * 3, "vis_std": [50.0] * 3}
    save_model(model, HallucinationModel(identity_nets("cpu"), ref, {"train_people": ["Q1"], "val_people": ["Q0"],
                                                                     "store_people": ["Q0", "Q1"]}))
    steps = list(range(10, 110, 10))
    (model / "history.json").write_text(json.dumps({
        "channels": ["y", "cb", "cr"],
        "log": [{"step": s, "epoch": 0, "train": {c: 0.05 / s ** 0.3 for c in ("y", "cb", "cr")}} for s in steps],
        "val": [{"step": s, "epoch": 0, "val": {c: 0.06 / s ** 0.2 for c in ("y", "cb", "cr")}} for s in steps[4::5]],
        "epochs": []}))
    data = json.loads(results_file.read_text())
    data["demo"] = {"mode": "quick", "config": {"splits": [0], "alpha": 0.6, "reading": "log"},
                    "hallucination_model": str(model), "stage_cache": str(stages),
                    "stages": [{"stage": "mine", "key": "k-mine", "info": {"pairs_stored": 40}},  # no path: found by key
                               {"stage": "train", "key": "k-train", "path": str(model.parent),
                                "info": {"steps": 100, "train_people": 1, "val_people": 1}}]}
    p = tmp_path / "demo.json"
    p.write_text(json.dumps(data))
    return p


def _synthetic_faces(n: int = 4):
    """Aligned faces as the feature cache keeps them: (person, gray NIR face, RGB VIS face)."""
    import cv2

    from nirvis.faces.types import Face

    rng = np.random.default_rng(5)
    out = []
    for k in range(n):
        img = cv2.GaussianBlur(rng.random((224, 224)).astype(np.float32), (0, 0), 3.0)
        img = cv2.normalize(img, None, 20, 235, cv2.NORM_MINMAX).astype(np.uint8)
        face = dict(landmarks=np.zeros((5, 2), np.float32), anchors=np.zeros((3, 2), np.float32),
                    matrix=np.eye(2, 3), method="hog", score=1.0)
        out.append((f"P{k:02d}", Face(image=img, **face),
                    Face(image=np.stack([img, 255 - img, img // 2], axis=2), **face)))
    return out


def test_demo_sections_show_mining_training_and_fig5(demo_results, tmp_path, monkeypatch):
    import cv2

    from nirvis.report import demo as report_demo

    monkeypatch.setattr(report_demo, "fig5_faces", lambda demo, n=4: (_synthetic_faces(n), ["P09: no face found"]))
    plain, blurred = tmp_path / "plain", tmp_path / "blurred"
    write_report(demo_results, plain)
    write_report(demo_results, blurred, ReportConfig(blur_faces=True))
    page = (plain / "index.html").read_text()
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert srcs == ["figures/cmc.png", "figures/roc.png", "figures/fig5.png", "figures/mining_heatmap.png",
                    "figures/mining_scores.png", "figures/mining_sheet.png", "figures/training.png",
                    "failures/0000.png", "failures/0001.png"]
    for src in srcs:
        with Image.open(plain / src) as im:
            assert im.format == "PNG" and min(im.size) > 50
    assert '<section id="fig5"><h2>Fig. 5: hallucinated faces of test people</h2>' in page
    assert "Test people P00, P01, P02, P03" in page and "Left out: P09: no face found" in page
    assert '<section id="mining"><h2>Mining and training</h2>' in page and "100 steps" in page
    assert "keep it to yourself" in page
    # Fig. 5: a title bar, then 4 rows of NIR | CNN output | blended | VIS, 224 pixels each
    fig5 = np.asarray(Image.open(plain / "figures" / "fig5.png").convert("RGB"))
    assert fig5.shape == (18 + 4 * 224, 4 * 224, 3)
    vis = fig5[18:18 + 224, 3 * 224:]
    assert np.array_equal(vis, _synthetic_faces(1)[0][2].image)  # the real VIS face, as aligned
    # --blur-faces: every face of the Fig. 5 sheet and every patch of the mining sheet is blurred
    assert "Every face image in this report is blurred." in (blurred / "index.html").read_text()
    for name in ("fig5.png", "mining_sheet.png"):
        a = np.asarray(Image.open(plain / "figures" / name).convert("L"), dtype=np.float64)
        b = np.asarray(Image.open(blurred / "figures" / name).convert("L"), dtype=np.float64)
        assert a.shape == b.shape
        if name == "fig5.png":
            a, b = a[18:], b[18:]  # below the titles
        else:  # the first pair's NIR patch (40 pixels, enlarged 3 times, inside a 2-pixel border)
            a, b = a[2:122:3, 2:122:3], b[2:122:3, 2:122:3]
        sharp, soft = cv2.Laplacian(a, cv2.CV_64F).var(), cv2.Laplacian(b, cv2.CV_64F).var()
        assert soft < sharp / 3, (name, sharp, soft)
    # the heat map, histograms and curves hold no face: the same either way
    for name in ("mining_heatmap.png", "mining_scores.png", "training.png"):
        assert (plain / "figures" / name).read_bytes() == (blurred / "figures" / name).read_bytes()


def test_demo_sections_are_left_out_or_explained_when_their_inputs_are_absent(demo_results, results_file,
                                                                              tmp_path, monkeypatch):
    import shutil as sh

    # not a demo's results: no such section
    write_report(results_file, tmp_path / "r0")
    page = (tmp_path / "r0" / "index.html").read_text()
    assert 'id="fig5"' not in page and 'id="mining"' not in page
    # a demo's results without the data folder recorded (an older demo): Fig. 5 says why; the store is gone
    sh.rmtree(tmp_path / "stages" / "mine")
    write_report(demo_results, tmp_path / "r1")
    page = (tmp_path / "r1" / "index.html").read_text()
    assert "does not record the demo&#x27;s data folder" in page
    assert "patch store is not in its stage cache any more" in page
    assert (tmp_path / "r1" / "figures" / "training.png").is_file()
    assert not (tmp_path / "r1" / "figures" / "fig5.png").exists()
    # every stage gone: both sections left out
    sh.rmtree(tmp_path / "stages")
    write_report(demo_results, tmp_path / "r2")
    page = (tmp_path / "r2" / "index.html").read_text()
    assert 'id="fig5"' not in page and 'id="mining"' not in page


def test_every_image_of_a_demo_report_loads_in_chromium(demo_results, tmp_path, chromium, monkeypatch):
    from nirvis.report import demo as report_demo

    monkeypatch.setattr(report_demo, "fig5_faces", lambda demo, n=4: (_synthetic_faces(n), []))
    out = tmp_path / "report"
    write_report(demo_results, out, ReportConfig(blur_faces=True))
    chromium.get((out / "index.html").as_uri())
    images = chromium.execute_script(
        "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
    assert len(images) == 9 and "figures/fig5.png" in [s for s, _, _ in images]
    assert all(done and width > 0 for _, done, width in images), images


@pytest.mark.data
def test_fig5_from_real_faces(rap3df_root, demo_results, tmp_path):
    """Fig. 5 of 4 test people of split 0, aligned from the real images (through a fresh feature cache)."""
    data = json.loads(demo_results.read_text())
    data["demo"].update(data_root=str(rap3df_root.parent), feature_cache=str(tmp_path / "cache"))
    p = tmp_path / "real.json"
    p.write_text(json.dumps(data))
    res = runner.invoke(app, ["report", "--from", str(p), "-o", str(tmp_path / "report"), "--blur-faces"])
    assert res.exit_code == 0, res.output
    page = (tmp_path / "report" / "index.html").read_text()
    people = re.search(r"Test people ([^(]+) \(one row each", page)
    assert people and len(people.group(1).split(", ")) == 4, page[page.index('id="fig5"'):][:2000]
    with Image.open(tmp_path / "report" / "figures" / "fig5.png") as im:
        assert im.size == (4 * 224, 18 + 4 * 224)
    assert any((tmp_path / "cache" / "align").rglob("*.npz"))  # aligned through the feature cache
