"""``nirvis demo``: the stage cache, which stages a run redoes, the sentence under the table, and ``--quick`` end
to end on the real data."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from nirvis.demo import pipeline as demo_pipeline
from nirvis.demo.cache import STAGE_RECORD, StageCache, stage_key
from nirvis.demo.pipeline import DemoConfig, run_demo
from nirvis.faces.align import AlignConfig

runner = CliRunner()
REAL_FIT = demo_pipeline._fit_task


# -- the stage cache -----------------------------------------------------------------------------------------

def test_a_stage_is_computed_once_and_its_key_follows_its_config_and_inputs(tmp_path):
    cache = StageCache(tmp_path / "demo")
    calls = []

    def compute(work: Path) -> dict:
        calls.append(work)
        (work / "out.txt").write_text("done")
        return {"n": 3}

    a = cache.run("mine", {"k": 2}, ["data-1"], compute)
    assert not a.cached and a.info == {"n": 3} and (a.path / "out.txt").read_text() == "done"
    assert a.path == tmp_path / "demo" / "mine" / stage_key("mine", {"k": 2}, ["data-1"])
    assert json.loads((a.path / STAGE_RECORD).read_text())["config"] == {"k": 2}
    b = cache.run("mine", {"k": 2}, ["data-1"], compute)
    assert b.cached and b.path == a.path and b.info == {"n": 3} and len(calls) == 1
    assert b.computed_seconds == pytest.approx(a.computed_seconds, abs=1e-3)
    # another setting, or another input, is another stage; so is everything computed from it
    assert cache.run("mine", {"k": 3}, ["data-1"], compute).key != a.key
    assert cache.run("mine", {"k": 2}, ["data-2"], compute).key != a.key
    assert len(calls) == 3
    t1 = cache.run("train", {"steps": 5}, [a.key], compute)
    t2 = cache.run("train", {"steps": 5}, [stage_key("mine", {"k": 3}, ["data-1"])], compute)
    assert t1.key != t2.key and len(calls) == 5
    # the order of a config's entries does not matter; the order of inputs does
    assert stage_key("s", {"a": 1, "b": 2}, ["x", "y"]) == stage_key("s", {"b": 2, "a": 1}, ["x", "y"])
    assert stage_key("s", {}, ["x", "y"]) != stage_key("s", {}, ["y", "x"])


def test_an_interrupted_stage_is_continued_and_only_a_finished_one_is_found(tmp_path):
    cache = StageCache(tmp_path)

    def killed(work: Path) -> dict:
        (work / "person-1.npz").write_text("mined")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.run("mine", {}, [], killed)
    key = stage_key("mine", {}, [])
    assert cache.lookup("mine", key) is None  # half a stage is never a stage
    assert (tmp_path / "mine" / f"{key}.partial" / "person-1.npz").is_file()
    seen = []

    def resumed(work: Path) -> dict:
        seen.append(sorted(p.name for p in work.iterdir()))
        (work / "person-2.npz").write_text("mined")
        return {}

    r = cache.run("mine", {}, [], resumed)
    assert seen == [["person-1.npz"]] and not r.cached
    assert sorted(p.name for p in r.path.iterdir()) == ["person-1.npz", "person-2.npz", STAGE_RECORD]
    assert not (tmp_path / "mine" / f"{key}.partial").exists()
    # a record damaged by hand: the stage is computed again, not trusted
    (r.path / STAGE_RECORD).write_text("{not json")
    assert cache.lookup("mine", key) is None and not r.path.exists()
    # a folder that commit() did not write is not a stage either
    (tmp_path / "mine" / "0123").mkdir()
    assert cache.lookup("mine", "0123") is None


def test_a_second_run_on_the_same_cache_waits_for_the_first(tmp_path):
    cache = StageCache(tmp_path)
    told, order = [], []
    with cache.lock():
        t = threading.Thread(target=lambda: (cache.lock(told.append).__enter__(), order.append("second")))
        t.start()
        time.sleep(0.3)
        order.append("first done")
    t.join(5)
    assert order == ["first done", "second"]
    assert told and "another run is using the stage cache" in told[0]


def test_an_unwritable_cache_says_so(tmp_path):
    from nirvis.demo.cache import StageCacheError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StageCacheError, match="cannot be written"):
        with StageCache(blocker / "demo").lock():
            pass


# -- which stages a run redoes (the heavy work replaced by fakes, on a RAP3DF-shaped tree of empty files) -------

def _fake_rap3df(root: Path, n2019: int = 30, n2017: int = 5) -> Path:
    d19, d17 = root / "rap3df" / "rap3df_data_02", root / "rap3df" / "rap3df_data"
    db = {}
    for i in range(n2019):
        p = f"P{i:02d}"
        (d19 / p).mkdir(parents=True)
        caps = {}
        for pose, codes in (("front", ("A", "B")), ("left", ("C",))):
            caps[pose] = []
            for c in codes:
                for f in (f"rgb_{c}.bmp", f"ir_rmBg_{c}.bmp"):
                    (d19 / p / f).write_bytes(b"BM")
                caps[pose].append({"rgb": f"rap3df_data_02/{p}/rgb_{c}.bmp",
                                   "ir_with_bg": f"rap3df_data_02/{p}/ir_rmBg_{c}.bmp"})
        db[p] = caps
    (d19 / "database.json").write_text(json.dumps(db))
    for i in range(n2017):
        p = d17 / f"Q{i}"
        (p / "tests").mkdir(parents=True)
        for f in ("k1_box_xy.bmp", "k1_box_xy_ir_view.bmp", "tests/Xk1_box_xy.bmp", "tests/Xk1_box_xy_ir_view.bmp"):
            (p / f).write_bytes(b"BM")
    return root


def _vector(seed: str, dim: int = 16) -> np.ndarray:
    return np.random.default_rng(abs(hash(seed)) % 2**32).normal(size=dim)


@pytest.fixture()
def fakes(monkeypatch):
    """The stages' heavy work replaced by fast fakes that count their calls."""
    from nirvis.pipeline import FeatureSet

    calls = {"featurize": 0, "mine": 0, "train": 0, "hallucinate": 0, "fit": 0}
    counts = ("featurize", "mine", "train", "hallucinate", "fit")

    def features(samples, shift: float = 0.0) -> FeatureSet:
        X = np.stack([_vector(s.person) + 0.3 * _vector(s.capture_id) + (shift + (s.modality == "nir"))
                      for s in samples]).astype(np.float32)
        X /= np.linalg.norm(X, axis=1, keepdims=True)
        return FeatureSet(list(samples), X, np.ones(len(samples), bool), ["fake"] * len(samples))

    def featurize(rec, samples, workers, progress):
        calls["featurize"] += 1
        progress(len(samples))
        return features(samples)

    def mine(jobs, store, mining, workers, parts, progress):
        calls["mine"] += 1
        store.write_text(json.dumps([j.person for j in jobs]))
        progress(len(jobs), len(jobs), "")
        return {"people": len(jobs), "windows_tried": 10, "pairs_kept": 5, "pairs_stored": 10}

    def train(store, out, config, forbidden, progress):
        from nirvis.hallucination.identity import identity_nets
        from nirvis.hallucination.io import HallucinationModel, save_model

        calls["train"] += 1
        calls["forbidden"] = sorted(forbidden)
        people = json.loads(store.read_text())
        resumed = calls["resumed"] = (out / "checkpoint").is_file()
        out.mkdir(parents=True, exist_ok=True)
        (out / "checkpoint").write_text("step 1")
        if config.max_steps == 13 and not resumed:
            raise KeyboardInterrupt  # killed in the middle of training
        ref = {"nir_mean": 100.0, "nir_std": 40.0, "vis_mean": [120.0] * 3, "vis_std": [50.0] * 3}
        save_model(out, HallucinationModel(identity_nets("cpu"), ref, {"train_people": people[1:],
                                                                       "val_people": people[:1],
                                                                       "store_people": people}))
        return {"steps": config.max_steps, "epochs_completed": 1, "train_people": len(people) - 1,
                "val_people": 1, "val": {"y": 0.1}, "resumed": resumed}

    def hallucinate(rec, model, nir, blend, own, progress, workers=1):
        calls["hallucinate"] += 1
        progress(len(nir))
        return features(nir, shift=blend.alpha)

    def fit(task):
        calls["fit"] += 1
        return REAL_FIT(task)

    monkeypatch.setattr(demo_pipeline, "_featurize", featurize)
    monkeypatch.setattr(demo_pipeline, "_mine", mine)
    monkeypatch.setattr(demo_pipeline, "_train", train)
    monkeypatch.setattr(demo_pipeline, "_hallucinate", hallucinate)
    monkeypatch.setattr(demo_pipeline, "_fit_task", fit)
    return SimpleNamespace(calls=calls, counts=lambda: {k: calls[k] for k in counts})


def _demo(root: Path, cache: StageCache, config: DemoConfig, workers: int = 1):
    return run_demo(root, config, stage_cache=cache, recognizer=_fake_rec(), workers=workers)


def _cached(out) -> dict[str, bool]:
    return {s["stage"]: s["cached"] for s in out.results["demo"]["stages"]}


def test_a_second_run_redoes_nothing_and_a_changed_setting_redoes_its_stage_and_those_after(tmp_path, fakes):
    root = _fake_rap3df(tmp_path / "data")
    cache = StageCache(tmp_path / "demo")
    cfg = DemoConfig(splits=(0, 1), embeddings=("lowrank", "ms"), train_max_steps=7, oracle=True)
    first = _demo(root, cache, cfg)
    rows = [r["config"] for r in first.results["results"]]
    assert rows == ["raw", "H", "LR", "H+LR", "MS", "oracle-VIS"]
    assert all("error" not in r for r in first.results["results"]), first.results["results"]
    assert not any(_cached(first).values())
    assert fakes.counts() == {"featurize": 1, "mine": 1, "train": 1, "hallucinate": 1, "fit": 6}  # (LR, MS, H+LR) x 2
    assert "5 people of the 2017 set" in first.notes[0] and "has seen no test person" in first.notes[0]

    again = _demo(root, cache, cfg)
    assert all(_cached(again).values())
    assert fakes.counts() == {"featurize": 1, "mine": 1, "train": 1, "hallucinate": 1, "fit": 6}
    assert again.results["results"] == first.results["results"]

    # training changes: the model, the hallucinated faces, H+LR and the table are computed again, nothing else
    fewer = _demo(root, cache, replace_cfg(cfg, train_max_steps=8))
    assert _cached(fewer) == {"features": True, "mine": True, "train": False, "hallucinate": False, "fit": False,
                              "evaluate": False}
    assert fakes.counts() == {"featurize": 1, "mine": 1, "train": 2, "hallucinate": 2, "fit": 8}
    fit = next(s for s in fewer.results["demo"]["stages"] if s["stage"] == "fit")
    assert fit["info"]["fits"] == 6 and fit["info"]["cached"] == 4 and fit["info"]["failed"] == 0

    # mining changes: everything from mining on (the features stay)
    _demo(root, cache, replace_cfg(cfg, captures_per_person=1))
    assert fakes.counts() == {"featurize": 1, "mine": 2, "train": 3, "hallucinate": 3, "fit": 10}

    # only the blend changes: the model is kept
    blend = _demo(root, cache, replace_cfg(cfg, alpha=0.3))
    assert _cached(blend)["train"] and not _cached(blend)["hallucinate"]
    assert fakes.calls["train"] == 3 and fakes.calls["hallucinate"] == 4

    # an image changes (its content): features, and what depends on them, not mining
    img = root / "rap3df" / "rap3df_data_02" / "P00" / "rgb_A.bmp"
    img.write_bytes(img.read_bytes() + b"edited")
    before = fakes.counts()
    touched = _demo(root, cache, cfg)
    assert _cached(touched) == {"features": False, "mine": True, "train": True, "hallucinate": False,
                                "fit": False, "evaluate": False}
    assert fakes.calls["featurize"] == before["featurize"] + 1 and fakes.calls["mine"] == before["mine"]


def test_fits_in_background_processes_give_the_same_table(tmp_path, fakes, monkeypatch):
    """With two workers the fits of raw features run in a background process from stage 1 on, and the fits of
    hallucinated features in two processes; the table is the one computed in this process."""
    monkeypatch.setattr(demo_pipeline, "_fit_task", REAL_FIT)  # worker processes run the module's own
    root = _fake_rap3df(tmp_path / "data")
    cfg = DemoConfig(splits=(0, 1, 2), embeddings=("lowrank", "ms"), oracle=False)
    here = _demo(root, StageCache(tmp_path / "here"), cfg, workers=1)
    there = _demo(root, StageCache(tmp_path / "there"), cfg, workers=2)
    assert there.results["results"] == here.results["results"]
    fit = next(s for s in there.results["demo"]["stages"] if s["stage"] == "fit")
    assert fit["info"]["fits"] == 9 and fit["info"]["failed"] == 0 and not fit["cached"]
    again = _demo(root, StageCache(tmp_path / "there"), cfg, workers=2)
    assert all(_cached(again).values())


def test_a_fit_that_fails_is_a_failed_row_and_is_tried_again(tmp_path, fakes, monkeypatch):
    root = _fake_rap3df(tmp_path / "data")
    cache = StageCache(tmp_path / "demo")
    cfg = DemoConfig(splits=(0,), embeddings=("lowrank", "ms"), oracle=False)
    def broken(task):
        if task[0] == "ms":
            raise ValueError("ms: singular")
        return REAL_FIT(task)

    monkeypatch.setattr(demo_pipeline, "_fit_task", broken)
    out = _demo(root, cache, cfg)
    ms = next(r for r in out.results["results"] if r["config"] == "MS")
    assert "configuration 'MS': fitting failed (ValueError: ms: singular)" in ms["error"]
    assert all("error" not in r for r in out.results["results"] if r["config"] != "MS")
    monkeypatch.setattr(demo_pipeline, "_fit_task", REAL_FIT)
    fixed = _demo(root, cache, cfg)
    assert all("error" not in r for r in fixed.results["results"])
    assert _cached(fixed) == {"features": True, "mine": True, "train": True, "hallucinate": True, "fit": False,
                              "evaluate": False}


def test_a_run_killed_while_training_goes_on_from_its_checkpoint(tmp_path, fakes):
    root = _fake_rap3df(tmp_path / "data")
    cache = StageCache(tmp_path / "demo")
    cfg = DemoConfig(splits=(0,), embeddings=("lowrank",), train_max_steps=13, oracle=False)
    with pytest.raises(KeyboardInterrupt):
        _demo(root, cache, cfg)
    assert fakes.counts() == {"featurize": 1, "mine": 1, "train": 1, "hallucinate": 0, "fit": 0}
    assert fakes.calls["resumed"] is False
    out = _demo(root, cache, cfg)
    assert _cached(out) == {"features": True, "mine": True, "train": False, "hallucinate": False, "fit": False,
                            "evaluate": False}
    # the second run trained in the folder the first one left, from its checkpoint
    assert fakes.calls["resumed"] is True
    assert fakes.counts() == {"featurize": 1, "mine": 1, "train": 2, "hallucinate": 1, "fit": 2}  # LR, H+LR


def test_the_model_is_refused_when_a_split_tests_one_of_its_people(tmp_path, fakes, monkeypatch):
    from nirvis.hallucination.evaluate import LeakError

    root = _fake_rap3df(tmp_path / "data")
    cfg = DemoConfig(splits=(0,), embeddings=("lowrank",), oracle=False)
    _demo(root, StageCache(tmp_path / "ok"), cfg)
    # training is told every person that some split tests (2019 people), whichever splits are evaluated
    from nirvis.datasets import load_protocol

    _, splits, _ = load_protocol("rap3df", root)
    tested = sorted(set().union(*(sp.test_people for sp in splits)))
    assert fakes.calls["forbidden"] == tested and all(p.startswith("P") for p in tested)
    # a model that has seen a 2019 person (a test person of some split) is refused before any face is hallucinated
    monkeypatch.setattr(demo_pipeline, "model_people", lambda every, splits, n: ["P00", "Q0", "Q1"])
    with pytest.raises(LeakError, match=r"trained on 1 test people of rap3df-seed\d.*P00"):
        _demo(root, StageCache(tmp_path / "demo"), cfg)
    assert fakes.calls["hallucinate"] == 1


def test_fits_keep_their_embedding_and_the_report_projects_through_them_and_draws_the_sweep(tmp_path, fakes):
    """Each fit keeps the map it learned (it reproduces the features the table was scored with); the report's
    Fig. 6 projects test people through those maps and Fig. 7 draws the alpha sweep of stage 7."""
    from nirvis.datasets import load_protocol
    from nirvis.embedding.io import load_embedding
    from nirvis.report.demo import fig6_projection
    from nirvis.report.page import write_report

    root = _fake_rap3df(tmp_path / "data")
    cache = StageCache(tmp_path / "demo")
    cfg = DemoConfig(splits=(0,), embeddings=("lowrank", "itml"), oracle=False, alpha_sweep=(0.0, 0.5, 1.0))
    out = _demo(root, cache, cfg)
    demo = out.results["demo"]
    split = out.results["results"][0]["splits"][0]["split"]
    assert sorted((f["row"], f["split"]) for f in demo["fits"]) == [("H+LR", split), ("LR", split), ("itml", split)]
    lr_folder = Path(next(f["path"] for f in demo["fits"] if f["row"] == "LR"))
    lr = load_embedding(lr_folder / "embedding")
    assert lr.embedder_fingerprint == "fake-embedder" and "P00" not in lr.train_people and len(lr.train_people) > 20
    _, _, every = load_protocol("rap3df", root)
    modality_of = {s.capture_id: s.modality for s in every}
    feats = next(Path(s["path"]) for s in demo["stages"] if s["stage"] == "features") / "features.npz"
    with np.load(feats) as z, np.load(lr_folder / "transformed.npz") as t:
        row = {c: i for i, c in enumerate(z["capture_id"].tolist())}
        ids = t["capture_id"].tolist()
        X = z["features"][[row[c] for c in ids]]
        modality = np.array([modality_of[c] for c in ids])
        assert np.allclose(lr.transform(X, modality=modality), t["features"], atol=1e-5)

    # Fig. 6: five test people, raw and through ITML and LR; the fake NIR offset is what LR removes
    proj, why = fig6_projection(demo)
    assert proj is not None, why
    assert [row for row, _, _ in proj.panels] == ["raw", "itml", "LR"] and not proj.problems
    assert len(set(proj.person.tolist())) == 5 and {"nir", "vis"} == set(proj.modality.tolist())
    assert all(pts.shape == (len(proj.person), 2) for _, pts, _ in proj.panels)
    gap = {row: g for row, _, g in proj.panels}
    assert gap["LR"] < 0.5 * gap["raw"], gap
    older = {k: v for k, v in demo.items() if k != "fits"}  # results of a demo that did not keep its fits
    proj, _ = fig6_projection(older)
    assert [row for row, _, _ in proj.panels] == ["raw"] and "older nirvis demo" in proj.problems[0]

    # stage 7: both readings at every alpha, alpha 0 computed once; a second run finds it in the cache
    sweep = demo["alpha_sweep"]
    assert sweep["alphas"] == [0.0, 0.5, 1.0] and set(sweep["readings"]) == {"log", "gaussian"}
    assert sweep["readings"]["log"]["rank1"][0] == sweep["readings"]["gaussian"]["rank1"][0]
    assert all(len(c["per_split_rank1"]) == 3 and all(0 <= v <= 1 for v in c["rank1"])
               for c in sweep["readings"].values())
    assert fakes.calls["hallucinate"] == 1 + 5  # stage 4, then (log: 0, .5, 1; gaussian: .5, 1)
    again = _demo(root, cache, cfg)
    assert all(_cached(again).values()) and fakes.calls["hallucinate"] == 6
    assert again.results["demo"]["alpha_sweep"] == sweep
    # the demo's own alpha and reading are stage 4's features, not hallucinated again
    own = _demo(root, StageCache(tmp_path / "own"), replace_cfg(cfg, alpha=0.5))
    assert fakes.calls["hallucinate"] == 6 + 1 + 4
    assert own.results["demo"]["alpha_sweep"]["readings"]["log"]["rank1"][1] == next(
        r["rank1_mean"] for r in own.results["results"] if r["config"] == "H")

    results = tmp_path / "demo.json"
    results.write_text(json.dumps(out.results))
    page = write_report(results, tmp_path / "report").read_text()
    assert 'src="figures/fig6.png"' in page and 'src="figures/fig7.png"' in page
    assert f"5 test people of split {split}" in page and "log: best" in page and "gaussian: best" in page


# -- CASIA NIR-VIS 2.0: the real protocol lists over a generated tree of tiny images (stages faked) ------------

@pytest.fixture(scope="module")
def casia_root(tmp_path_factory) -> Path:
    """``base/NIR-VIS-2.0/s*/...`` holding every file of View 2 fold 1 and of View 1's training lists (about
    15,000 tiny images), and ``base/protocols``: the real lists."""
    import shutil

    from casia_tree import LISTS, raw_entries, write_images

    if not (LISTS / "vis_gallery_1.txt").is_file():
        pytest.skip(f"CASIA protocol lists not found at {LISTS}: set NIRVIS_DATA")
    base = tmp_path_factory.mktemp("casia")
    write_images(base / "NIR-VIS-2.0", [rel for name in ("vis_gallery_1.txt", "nir_probe_1.txt", "vis_train_dev.txt",
                                                         "nir_train_dev.txt") for rel in raw_entries(name)])
    shutil.copytree(LISTS, base / "protocols")
    return base


#: Small versions of the CASIA demo's two runs: View 2 fold 1, and the first two of the six folds.
SMALL_VIEW2 = DemoConfig(name="casia-view2", splits=(0,), embeddings=("itml", "lmnn", "lowrank"), oracle=False,
                         fit_people=12, hallucination=False)
SMALL_SIXFOLD = DemoConfig(name="casia-sixfold", splits=(0, 1), embeddings=("lowrank",), oracle=False, fit_people=12,
                           mine_people=5)


@pytest.mark.data
def test_casia_view2_fits_the_baselines_and_the_sixfold_protocol_trains_one_model_per_fold(casia_root, tmp_path,
                                                                                         fakes):
    from nirvis.datasets import load_protocol

    cache = StageCache(tmp_path / "demo")
    view2 = run_demo(casia_root, SMALL_VIEW2, stage_cache=cache, recognizer=_fake_rec(), workers=1, dataset="casia",
                     protocol="view2")
    assert [r["config"] for r in view2.results["results"]] == ["raw", "LR", "itml", "lmnn"]
    assert all("error" not in r for r in view2.results["results"]), view2.results["results"]
    fold1 = view2.results["results"][0]
    assert fold1["n_probes"] == 6208 and fold1["splits"][0]["split"] == "view2-fold1"  # the list's probes
    assert [s["stage"] for s in view2.results["demo"]["stages"]] == ["features", "fit", "evaluate"]
    assert fakes.calls["mine"] == fakes.calls["train"] == fakes.calls["hallucinate"] == 0
    assert view2.results["protocol"].startswith("casia-view2") and "first 12 training people" in view2.results["protocol"]

    six = run_demo(casia_root, SMALL_SIXFOLD, stage_cache=cache, recognizer=_fake_rec(), workers=1,
                   dataset="casia", protocol="sixfold")
    assert [r["config"] for r in six.results["results"]] == ["raw", "H", "LR", "H+LR"]
    assert all("error" not in r and r["n_splits"] == 2 for r in six.results["results"]), six.results["results"]
    # one model per fold, each trained on 5 of that fold's training people, told that fold's test people
    assert fakes.calls["mine"] == fakes.calls["train"] == fakes.calls["hallucinate"] == 2
    _, folds, _ = load_protocol("casia", casia_root, "sixfold")
    assert fakes.calls["forbidden"] == sorted(folds[1].test_people)
    stages = [(s["stage"]) for s in six.results["demo"]["stages"]]
    assert stages == ["features", "mine", "train", "hallucinate", "mine", "train", "hallucinate", "fit", "evaluate"]
    assert "one hallucination model per split" in six.notes[0]


@pytest.mark.data
def test_casia_demo_command_prints_both_tables_and_reports_them(casia_root, tmp_path, fakes, monkeypatch):
    from nirvis.cli import app

    monkeypatch.setattr(demo_pipeline, "CASIA_VIEW2", SMALL_VIEW2)
    monkeypatch.setattr(demo_pipeline, "CASIA_SIXFOLD", SMALL_SIXFOLD)
    out, report = tmp_path / "casia.json", tmp_path / "report"
    res = runner.invoke(app, ["demo", "--dataset", "casia", "--data", str(casia_root), "--cache-dir",
                              str(tmp_path / "cache"), "--workers", "1", "--json", str(out), "--report", str(report)])
    assert res.exit_code == 0, res.output
    assert res.output.index("Table 3 (casia-view2") < res.output.index("Table 2 (casia-sixfold")
    data = json.loads(out.read_text())
    assert [r["config"] for r in data["results"]] == ["raw", "H", "LR", "H+LR"]
    assert data["tables"][0]["title"].startswith("Table 3") and \
        [r["config"] for r in data["tables"][0]["results"]] == ["raw", "LR", "itml", "lmnn"]
    assert data["demo"]["dataset"] == "casia" and data["demo"]["view2"]["mode"] == "casia-view2"
    page = (report / "index.html").read_text()
    assert "Table 3: CASIA NIR-VIS 2.0 View 2" in page and "<td>lmnn</td>" in page
    assert "rap3df" not in data["protocol"] and "rap3df" not in data["tables"][0]["protocol"]
    # no --data: CASIA is licensed and never found by default; the message says where it was looked for
    res = runner.invoke(app, ["demo", "--dataset", "casia", "--quick"])
    assert res.exit_code != 0 and "--quick: RAP3DF only" in res.output


def _fake_rec():
    return SimpleNamespace(embedder=SimpleNamespace(fingerprint="fake-embedder"),
                           aligner=SimpleNamespace(fingerprint="fake-aligner", config=AlignConfig()), cache=None)


def replace_cfg(cfg: DemoConfig, **changes) -> DemoConfig:
    from dataclasses import replace

    return replace(cfg, **changes)


# -- the sentence under the table ----------------------------------------------------------------------------

def _results_file(tmp_path: Path, rows: dict[str, list[float]]) -> Path:
    res = [{"config": name, "rank1_mean": float(np.mean(r1)), "rank1_std": float(np.std(r1)),
            "splits": [{"split": f"s{i}", "rank1": v} for i, v in enumerate(r1)]} for name, r1 in rows.items()]
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"protocol": "p", "results": res, "alignment": {}}))
    return path


def test_the_sentence_is_computed_from_the_numbers(tmp_path):
    from nirvis.cli import _demo_sentence

    raw = [0.60, 0.62, 0.58, 0.61, 0.63]
    s = _demo_sentence(_results_file(tmp_path, {
        "raw": raw, "H": [v - 0.10 + 0.005 * i for i, v in enumerate(raw)], "LR": [v + 0.001 * (-1) ** i for i, v in
                                                                                 enumerate(raw)],
        "H+LR": [v + 0.05 + 0.003 * i for i, v in enumerate(raw)]}))
    assert s.startswith("On this data, ")
    assert "H hurt: rank-1 went from 60.8% (raw) to 51.8% (H)" in s
    assert "LR made no clear difference" in s
    assert "H+LR helped" in s and "better on 5, worse on 0" in s
    one = _demo_sentence(_results_file(tmp_path, {"raw": [0.6], "H": [0.7]}))
    assert "on the one split scored, which cannot tell an effect from chance" in one


# -- --quick, end to end on the real data ---------------------------------------------------------------------

@pytest.mark.data
@pytest.mark.slow
def test_quick_demo_runs_every_stage_then_finds_them_all_in_the_cache(rap3df_root, tmp_path):
    """The feature cache of the machine ($NIRVIS_CACHE, else ~/.cache/nirvis) is shared, as in CI after
    `nirvis demo`; the stages are computed into a fresh folder."""
    stages, out = tmp_path / "stages", tmp_path / "quick.json"
    args = ["demo", "--quick", "--data", str(rap3df_root.parent), "--stage-cache", str(stages)]
    t0 = time.perf_counter()
    res = runner.invoke(app_(), [*args, "--json", str(out)])
    cold = time.perf_counter() - t0
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    for title in ("[1/6] align + embed", "[2/6] mine patches", "[3/6] train H", "[4/6] hallucinate",
                  "[5/6] fit LR, MS, ITML", "[6/6] evaluate"):
        assert title in text
    data = json.loads(out.read_text())
    assert [r["config"] for r in data["results"]] == ["raw", "H", "LR", "H+LR"]
    for r in data["results"]:
        assert "error" not in r and r["n_splits"] == 1 and r["n_probes"] > 100
        assert 0.3 < r["rank1_mean"] <= 1 and len(r["splits"][0]["cmc"]) == 20 and r["splits"][0]["roc"]
    assert data["demo"]["mode"] == "quick" and not any(s["cached"] for s in data["demo"]["stages"])
    assert data["demo"]["landmark_model"] == "shape5"  # dlib: the report aligns its faces as the demo did
    assert data["demo"]["sentence"].startswith("On this data, ") and data["demo"]["sentence"] in text
    assert "one hallucination model serves every split" in text
    assert data["versions"]["nirvis"] and data["protocol"].startswith("rap3df-quick")

    t0 = time.perf_counter()
    res = runner.invoke(app_(), [*args, "--json", str(out), "--report", str(tmp_path / "report")])
    warm = time.perf_counter() - t0
    assert res.exit_code == 0, res.output
    again = json.loads(out.read_text())
    assert all(s["cached"] for s in again["demo"]["stages"])
    assert again["results"] == data["results"]
    assert (tmp_path / "report" / "index.html").is_file()
    assert warm < 60 and warm < cold / 2, (cold, warm)


def app_():
    from nirvis.cli import app

    return app


def test_stage_inputs_are_keyed_by_content_not_by_file_times(tmp_path):
    # This machine's data folder gets new modification times every session; keyed by them, every stage after
    # the first was computed again.
    import os

    from nirvis.datasets.base import Sample
    from nirvis.demo.pipeline import _samples_digest

    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(b"first image")
    b.write_bytes(b"second image")
    samples = [Sample("p", "nir", a, "a"), Sample("p", "vis", b, "b")]
    key = _samples_digest(samples)
    os.utime(a, (1_000_000_000, 1_000_000_000))
    assert _samples_digest(samples) == key
    a.write_bytes(b"first image, edited")
    assert _samples_digest(samples) != key
    assert _samples_digest([Sample("p", "nir", tmp_path / "gone.png", "a"), samples[1]]) != key
