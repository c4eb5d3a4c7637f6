"""The decision threshold from ``nirvis evaluate --json`` output (its per-split ROC)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from nirvis.cli import app
from nirvis.datasets.base import Sample, Split
from nirvis.evaluation.metrics import FAR_GRID
from nirvis.evaluation.protocols import evaluate_splits
from nirvis.gallery import Gallery, GalleryError, PipelineMismatchError, threshold_from_results
from nirvis.pipeline import FeatureSet

runner = CliRunner()
PLAIN = {"embedder_fingerprint": "test-pixels:b358ac1319", "embedding": None, "hallucination": None}


def evaluation_results(n_splits: int = 3, seed: int = 0) -> dict:
    """What `nirvis evaluate --json` writes, made by the evaluation code itself on synthetic features:
    20 people, one VIS gallery vector and 3 noisy NIR probes each, split 10/10 three ways."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, 16))
    samples, feats = [], []
    for p in range(20):
        samples.append(Sample(f"s{p:02d}", "vis", Path(f"v{p}.png"), f"v{p}"))
        feats.append(centres[p] + 0.3 * rng.standard_normal(16))
        for k in range(3):
            samples.append(Sample(f"s{p:02d}", "nir", Path(f"n{p}_{k}.png"), f"n{p}_{k}"))
            feats.append(centres[p] + 0.8 * rng.standard_normal(16))
    X = np.asarray(feats, np.float32)
    fs = FeatureSet(samples, X / np.linalg.norm(X, axis=1, keepdims=True), np.ones(len(samples), bool),
                    ["hog"] * len(samples))
    splits = []
    for s in range(n_splits):
        test = set(rng.permutation([f"s{p:02d}" for p in range(20)])[:10].tolist())
        splits.append(Split(f"split{s}", tuple(x for x in samples if x.person not in test),
                            tuple(x for x in samples if x.person in test and x.modality == "vis"),
                            tuple(x for x in samples if x.person in test and x.modality == "nir")))
    return json.loads(json.dumps(evaluate_splits("synthetic", splits, fs).to_dict()))


def test_threshold_is_the_grid_point_at_or_below_the_far_averaged_over_splits():
    res = evaluation_results()
    choice = threshold_from_results(res, 0.01, PLAIN, source="r.json")
    i = int(np.flatnonzero(np.isclose(FAR_GRID, 0.01))[0])
    expected = np.mean([s["roc"]["threshold"][i] for s in res["results"][0]["splits"]])
    assert choice.threshold == pytest.approx(expected)
    assert choice.far == 0.01 and choice.far_target == pytest.approx(0.01)
    assert choice.config == "raw" and choice.n_splits == 3 and choice.n_skipped == 0
    assert choice.far_measured <= 0.01 + 1e-12 and 0 <= choice.vr <= 1
    # between two grid points: the smaller one (never a looser threshold than asked)
    mid = threshold_from_results(res, 0.012, PLAIN)
    assert mid.far_target == pytest.approx(0.01) and mid.threshold == pytest.approx(expected)
    looser = threshold_from_results(res, 0.1, PLAIN)
    assert looser.threshold <= choice.threshold


def test_splits_without_an_operating_point_are_left_out_and_counted():
    res = evaluation_results()
    i = int(np.flatnonzero(np.isclose(FAR_GRID, 1e-3))[0])
    splits = res["results"][0]["splits"]
    splits[0]["roc"]["threshold"][i] = math.inf
    choice = threshold_from_results(res, 1e-3, PLAIN)
    assert choice.n_splits == 2 and choice.n_skipped == 1
    for s in splits:
        s["roc"]["threshold"][i] = math.inf
    with pytest.raises(GalleryError, match="does any threshold reach FAR 0.001"):
        threshold_from_results(res, 1e-3, PLAIN)


def test_bad_results_are_refused_with_the_reason():
    res = evaluation_results()
    with pytest.raises(GalleryError, match="below the smallest FAR"):
        threshold_from_results(res, 1e-6, PLAIN)
    with pytest.raises(GalleryError, match=r"--far 0: must be a false-accept rate in \(0, 1\]"):
        threshold_from_results(res, 0, PLAIN)
    with pytest.raises(GalleryError, match="not the output of `nirvis evaluate --json`"):
        threshold_from_results({"something": 1}, 0.01, PLAIN, source="x.json")
    old = json.loads(json.dumps(res))
    for s in old["results"][0]["splits"]:
        del s["roc"]
    with pytest.raises(GalleryError, match="has no ROC"):
        threshold_from_results(old, 0.01, PLAIN)
    with pytest.raises(GalleryError, match="no configuration 'LR'; it holds raw"):
        threshold_from_results(res, 0.01, PLAIN, config="LR")
    failed = json.loads(json.dumps(res))
    failed["results"][0]["error"] = "boom"
    with pytest.raises(GalleryError, match="failed in that evaluation"):
        threshold_from_results(failed, 0.01, PLAIN)


def test_results_of_another_pipeline_are_refused():
    res = evaluation_results()
    two = json.loads(json.dumps(res))
    h = json.loads(json.dumps(res["results"][0]))
    h["config"] = "H"
    two["results"].append(h)
    assert threshold_from_results(two, 0.01, PLAIN).config == "raw"  # a plain gallery picks raw
    with pytest.raises(PipelineMismatchError, match="this gallery has no hallucination model"):
        threshold_from_results(two, 0.01, PLAIN, config="H")
    hal = {**PLAIN, "hallucination": {"weights_sha256": "0" * 64}}
    with pytest.raises(GalleryError, match="say which one matches"):
        threshold_from_results(two, 0.01, hal)
    assert threshold_from_results(two, 0.01, hal, config="H").config == "H"
    with pytest.raises(PipelineMismatchError, match="does not hallucinate"):
        threshold_from_results(two, 0.01, hal, config="raw")
    emb = {**PLAIN, "embedding": {"file": "models/embedding/lr.json", "method": "lowrank", "npz_sha256": "0" * 64}}
    saved = json.loads(json.dumps(res))
    saved["results"][0]["config"] = "saved:other"
    with pytest.raises(PipelineMismatchError, match="its saved embedding 'other' is not the gallery's"):
        threshold_from_results(saved, 0.01, emb)
    saved["results"][0]["config"] = "saved:lr.json"
    assert threshold_from_results(saved, 0.01, emb).config == "saved:lr.json"
    with pytest.raises(PipelineMismatchError, match="applies no embedding model"):
        threshold_from_results(res, 0.01, emb)
    tagged = {**res, "embedder": {"name": "dlib-resnet128", "fingerprint": "dlib-resnet128:ff355b2f75"}}
    with pytest.raises(PipelineMismatchError, match="measured with embedder dlib-resnet128:ff355b2f75"):
        threshold_from_results(tagged, 0.01, PLAIN)
    ours = {**res, "embedder": {"name": "test-pixels", "fingerprint": PLAIN["embedder_fingerprint"]}}
    assert threshold_from_results(ours, 0.01, PLAIN).config == "raw"


def test_cli_sets_shows_and_clears_the_threshold(tmp_path):
    Gallery.create(tmp_path / "g", embedder="test-pixels").close()
    path = tmp_path / "results.json"
    path.write_text(json.dumps(evaluation_results()))
    r = runner.invoke(app, ["gallery", "threshold", "-g", str(tmp_path / "g")])
    assert r.exit_code == 0 and "no threshold" in r.output
    r = runner.invoke(app, ["gallery", "threshold", "-g", str(tmp_path / "g"), "--far", "0.01", "--from", str(path)])
    assert r.exit_code == 0, r.output
    assert "at FAR 0.01" in r.output and "mean over 3 split(s) of 'raw'" in r.output
    expected = threshold_from_results(json.loads(path.read_text()), 0.01, PLAIN).threshold
    with Gallery.open(tmp_path / "g") as g:
        t = g.threshold
        assert t["threshold"] == pytest.approx(expected) and t["far"] == 0.01 and t["source"] == str(path)
        assert t["config"] == "raw" and t["n_splits"] == 3
    r = runner.invoke(app, ["gallery", "threshold", "-g", str(tmp_path / "g")])
    assert f"threshold {expected:.4f} at FAR 0.01" in r.output
    r = runner.invoke(app, ["gallery", "threshold", "-g", str(tmp_path / "g"), "--far", "1e-7", "--from", str(path)])
    assert r.exit_code == 2 and "below the smallest FAR" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["gallery", "threshold", "-g", str(tmp_path / "g"), "--from", str(path)])
    assert r.exit_code == 2 and "--from needs --far" in r.output
    (tmp_path / "bad.json").write_text("{not json")
    r = runner.invoke(app, ["gallery", "threshold", "-g", str(tmp_path / "g"), "--far", "0.01", "--from",
                            str(tmp_path / "bad.json")])
    assert r.exit_code == 2 and "not valid JSON" in r.output
    r = runner.invoke(app, ["gallery", "threshold", "-g", str(tmp_path / "g"), "--value", "0.7", "--far", "0.001"])
    assert r.exit_code == 0
    with Gallery.open(tmp_path / "g") as g:
        assert g.threshold["threshold"] == 0.7 and g.threshold["far"] == 0.001
    r = runner.invoke(app, ["gallery", "threshold", "-g", str(tmp_path / "g"), "--value", "3"])
    assert r.exit_code == 2 and "must be a cosine score in [-1, 1]" in r.output
    r = runner.invoke(app, ["gallery", "threshold", "-g", str(tmp_path / "g"), "--clear"])
    assert r.exit_code == 0
    with Gallery.open(tmp_path / "g") as g:
        assert g.threshold["threshold"] is None
