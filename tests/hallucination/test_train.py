"""Training the hallucination CNNs: learning, person split, refusal of test people, checkpoints and resume
(in process, after SIGKILL), distributed data parallel on CPU, and the command."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from nirvis.cli import app

from nirvis.hallucination.io import load_model
from nirvis.hallucination.nets import ChannelNetSpec
from nirvis.hallucination.train import (CHECKPOINT, CHECKPOINT_JSON, HISTORY, LOSS_PLOT, TrainConfig, TrainingError,
                                        train_hallucination)
from nirvis.mining.store import StorePeopleError

from .synth_store import REFERENCE, make_store

SCRIPT = Path(__file__).with_name("_train_script.py")
PEOPLE = [f"p{i:02d}" for i in range(12)]
TINY = ChannelNetSpec(layers=4, wide=4, narrow=2, kernel=3)
SPECS = {"y": replace(TINY, residual=True), "cb": TINY, "cr": TINY}
CFG = TrainConfig(preset="cpu", specs=SPECS, epochs=3, batch_size=16, lr=1e-2, log_every=4, threads=1,
                  checkpoint_every=5)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("train") / "s.h5", PEOPLE, 45)  # 540 pairs, 16x16


@pytest.fixture(scope="module")
def reference_run(store: Path, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("ref") / "model"
    return out, train_hallucination(store, out, replace(CFG, val_at_start=True))


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "weights.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def no_temporaries(folder: Path) -> bool:
    return not [p.name for p in folder.iterdir() if p.name.startswith(".") or ".tmp" in p.name]


def test_training_learns_and_writes_the_model_folder(store: Path, reference_run: tuple[Path, dict]) -> None:
    out, summary = reference_run
    assert summary["complete"] and summary["epochs_completed"] == 3 and summary["stopped"] is None
    assert summary["train_people"] == 10 and summary["val_people"] == 2
    steps_per_epoch = -(-10 * 45 // 16)
    assert summary["steps"] == summary["total_steps"] == 3 * steps_per_epoch
    assert summary["samples"] == 3 * 450
    hist = json.loads((out / HISTORY).read_text())
    start, end = hist["val"][0], hist["val"][-1]
    assert start["step"] == 0 and end["step"] == summary["steps"]
    for c in ("y", "cb", "cr"):  # the mapping (Y = 1 - NIR, Cb, Cr affine in NIR) is learnt
        assert end["val"][c] < 0.2 * start["val"][c], (c, start, end)
        assert hist["log"][-1]["train"][c] < 0.2 * hist["log"][0]["train"][c]
    assert [e["epoch"] for e in hist["epochs"]] == [0, 1, 2] and not any(e["partial"] for e in hist["epochs"])
    assert hist["log"][1]["step"] == 8 and hist["log"][1]["wall_s"] >= hist["log"][0]["wall_s"]
    # the final model: loads, records people and settings; the checkpoint is gone, no temporary left
    model = load_model(out)
    assert model.reference == REFERENCE
    assert sorted(model.meta["train_people"] + model.meta["val_people"]) == PEOPLE
    assert not set(model.meta["train_people"]) & set(model.meta["val_people"])
    assert model.meta["store_people"] == PEOPLE and model.meta["store"] == str(store.resolve())
    assert model.meta["training"]["lr"] == 1e-2 and model.meta["training"]["betas"] == [0.9, 0.999]
    assert model.meta["history"] == hist and model.meta["preset"] == "cpu"
    assert model.fingerprint == summary["fingerprint"]
    assert (out / LOSS_PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / CHECKPOINT).exists() and not (out / CHECKPOINT_JSON).exists()
    assert no_temporaries(out)
    x = torch.rand(2, 1, 24, 24)
    assert model.nets(x).shape == (2, 3, 24, 24)  # fully convolutional


def test_only_training_people_are_trained_on(store: Path, tmp_path: Path, monkeypatch) -> None:
    import nirvis.hallucination.train as train_mod
    from nirvis.hallucination.data import split_people
    from nirvis.mining.store import PatchStore

    trained, validated = [], []
    real = train_mod.iter_batches

    def spy(blocks, batch_size, **kw):
        rows = np.concatenate(blocks.blocks) if blocks.blocks else np.zeros(0, np.int64)
        (validated if kw.get("stop") is None else trained).append(rows)
        return real(blocks, batch_size, **kw)

    monkeypatch.setattr(train_mod, "iter_batches", spy)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        summary = train_hallucination(store, tmp_path / "m", replace(CFG, epochs=2, val_fraction=0.25))
        assert torch.get_num_threads() == 2  # the run's thread count (1) is not left behind
    finally:
        torch.set_num_threads(threads)
    split = split_people(PEOPLE, 0.25, seed=0)
    assert len(split.val) == 3
    meta = load_model(tmp_path / "m").meta
    assert meta["train_people"] == split.train and meta["val_people"] == split.val
    with PatchStore(store) as st:
        person = np.array(st.people)[st.dataset("person")[:]]
    assert len(trained) == 2 and len(validated) == 2
    for rows in trained:  # each epoch: every training pair once, no validation pair
        assert set(person[rows]) == set(split.train) and len(np.unique(rows)) == rows.size == 9 * 45
    for rows in validated:
        assert set(person[rows]) == set(split.val) and rows.size == 3 * 45
    assert summary["samples"] == 2 * 9 * 45


def test_refuses_a_store_with_forbidden_people(store: Path, tmp_path: Path) -> None:
    with pytest.raises(StorePeopleError, match=r"holds 2 forbidden \(test\) people, e.g. \['p03', 'p07'\]"):
        train_hallucination(store, tmp_path / "m", CFG, forbidden_people=["p07", "p03", "nobody"])
    assert not (tmp_path / "m").exists()


def test_bad_settings_are_named(store: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="TrainConfig.batch_size = 0"):
        train_hallucination(store, tmp_path / "m", replace(CFG, batch_size=0))
    with pytest.raises(TrainingError, match="preset 'gpu' is unknown"):
        train_hallucination(store, tmp_path / "m", TrainConfig(preset="gpu"))
    with pytest.raises(TrainingError, match="channels must be distinct"):
        train_hallucination(store, tmp_path / "m", replace(CFG, channels=("y", "r")))
    assert TrainConfig().resolved_lr() == 1e-5 and TrainConfig(lr=3e-4).resolved_lr() == 3e-4


def test_interrupt_then_resume_gives_the_uninterrupted_weights(store: Path, reference_run: tuple[Path, dict],
                                                               tmp_path: Path) -> None:
    ref, ref_summary = reference_run
    out = tmp_path / "m"

    class Stop(Exception):
        pass

    def stop_at_37(step: int, total: int, info: dict) -> None:
        if step == 37:  # mid epoch 1 (29 steps an epoch); last checkpoint at step 35
            raise Stop

    cfg = replace(CFG, val_at_start=True)
    with pytest.raises(Stop):
        train_hallucination(store, out, cfg, progress=stop_at_37)
    state = json.loads((out / CHECKPOINT_JSON).read_text())
    assert (state["epoch"], state["step_in_epoch"], state["step"]) == (1, 6, 35)
    assert state["rng"]["shuffle_seed_sequence"] == [0, 1] and isinstance(state["loss_sums"], list)
    assert [e["epoch"] for e in state["history"]["epochs"]] == [0]
    assert not (out / "weights.safetensors").exists() and no_temporaries(out)
    summary = train_hallucination(store, out, cfg)
    assert summary["resumed_from_step"] == 35 and summary["steps"] == ref_summary["steps"]
    assert_same_weights(ref, out)
    assert summary["fingerprint"] == ref_summary["fingerprint"]

    def strip(entries: list[dict]) -> list[dict]:
        return [{k: v for k, v in e.items() if k not in ("train_s", "wall_s")} for e in entries]

    h_ref, h = json.loads((ref / HISTORY).read_text()), json.loads((out / HISTORY).read_text())
    assert strip(h["log"]) == strip(h_ref["log"]) and strip(h["epochs"]) == strip(h_ref["epochs"])
    assert not (out / CHECKPOINT).exists() and no_temporaries(out)


def test_resume_refuses_other_settings_and_finished_folders(store: Path, reference_run: tuple[Path, dict],
                                                            tmp_path: Path) -> None:
    ref, _ = reference_run
    with pytest.raises(TrainingError, match="already holds a trained model"):
        train_hallucination(store, ref, CFG)
    out = tmp_path / "m"
    first = train_hallucination(store, out, replace(CFG, max_steps=7))
    assert first["stopped"] == "max_steps" and first["steps"] == 7 and (out / CHECKPOINT).is_file()
    hist = json.loads((out / HISTORY).read_text())
    assert hist["epochs"][-1]["partial"] and hist["val"][-1]["step"] == 7
    assert load_model(out).meta["history"]["epochs"][-1]["step"] == 7  # a usable model is saved meanwhile
    with pytest.raises(TrainingError, match=r"other settings \(batch_size: 16 -> 8, lr: 0.01 -> 0.001\)"):
        train_hallucination(store, out, replace(CFG, batch_size=8, lr=1e-3))
    # limits and loader workers may change; continuing to the end gives the uninterrupted weights
    done = train_hallucination(store, out, replace(CFG, max_steps=None, num_workers=1))
    assert done["complete"] and done["resumed_from_step"] == 7
    assert_same_weights(ref, out)


def _script_config(cfg: TrainConfig) -> str:
    return json.dumps(asdict(cfg))


@pytest.mark.slow
def test_sigkill_then_rerun_gives_the_uninterrupted_weights(store: Path, reference_run: tuple[Path, dict],
                                                            tmp_path: Path) -> None:
    ref, _ = reference_run
    out = tmp_path / "m"
    cmd = [sys.executable, str(SCRIPT), str(store), str(out), _script_config(replace(CFG, val_at_start=True))]
    p = subprocess.Popen(cmd + ["0.03"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    state = None
    while time.monotonic() < deadline and p.poll() is None:
        try:
            state = json.loads((out / CHECKPOINT_JSON).read_text())
        except (OSError, ValueError):
            state = None
        if state and state["step"] >= 20:
            break
        time.sleep(0.02)
    assert p.poll() is None, f"training finished before it could be killed: {p.stdout.read().decode()}"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert not (out / "weights.safetensors").exists()
    state = json.loads((out / CHECKPOINT_JSON).read_text())
    summary = train_hallucination(store, out, replace(CFG, val_at_start=True))  # rerun (in this process)
    assert summary["resumed_from_step"] == state["step"] >= 20
    assert_same_weights(ref, out)
    assert not (out / CHECKPOINT).exists() and no_temporaries(out)


@pytest.mark.slow
def test_distributed_data_parallel_on_cpu_with_torchrun(store: Path, tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not found")
    out, res = tmp_path / "m", tmp_path / "res"
    # max_seconds (never reached) makes rank 0's clock decide stops, broadcast to rank 1 every step
    cfg = replace(CFG, epochs=2, checkpoint_every=0, threads=None, max_seconds=1e6)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", str(SCRIPT), str(store), str(out),
                        _script_config(cfg), "0", str(res)], capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    r0, r1 = (json.loads(Path(f"{res}.rank{r}").read_text()) for r in (0, 1))
    assert (r0["rank"], r1["rank"], r0["world_size"]) == (0, 1, 2)
    assert r0["fingerprint"] == r1["fingerprint"]  # gradients are averaged: identical weights on both ranks
    assert r0["steps"] == r1["steps"] == 2 * -(-225 // 16)  # each rank trains on half of the 450 pairs a step
    assert r0["samples"] == 2 * 450
    model = load_model(out)
    assert model.fingerprint == r0["fingerprint"]
    hist = model.meta["history"]
    assert hist["epochs"][-1]["val"]["y"] < 0.9 * hist["epochs"][0]["val"]["y"]  # it learns (0.024 -> 0.019)
    assert not (out / CHECKPOINT).exists() and no_temporaries(out)


# ----------------------------------------------------------------------------------------------- command



def _folder(root: Path, people: list[str]) -> Path:
    img = np.full((8, 8), 128, np.uint8)
    for p in people:
        for m in ("nir", "vis"):
            (root / p / m).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / p / m / "0.png"), img if m == "nir" else cv2.merge([img] * 3))
    return root


def test_command_trains_with_a_preset_and_refuses_test_people(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    args = ["train-hallucination", "--store", str(store), "-o", str(out), "--preset", "cpu", "--max-steps", "2",
            "--batch-size", "4", "--channels", "cb,cr", "--threads", "1", "--seed", "3", "--lr", "0.001"]
    train = _folder(tmp_path / "train", PEOPLE[:6])
    clean = _folder(tmp_path / "test_ok", ["x1", "x2"])
    res = CliRunner().invoke(app, args + ["--dataset", "folder", "--data", str(clean), "--train-data", str(train)])
    assert res.exit_code == 0, res.output
    assert "trained 2 steps" in res.output and "stopped by --max-steps, rerun with more to continue" in res.output
    model = load_model(out)
    assert model.nets.channels == ("cb", "cr") and model.meta["preset"] == "cpu"
    assert model.meta["training"]["seed"] == 3 and model.meta["training"]["lr"] == 1e-3

    leaky = _folder(tmp_path / "test_bad", ["p07", "x1"])  # p07 is in the store, not in the training folder
    res = CliRunner().invoke(app, args + ["-o", str(tmp_path / "m2"), "--dataset", "folder", "--data", str(leaky),
                                             "--train-data", str(train)])
    assert res.exit_code == 2
    assert "holds 1 forbidden (test) people" in res.output and "p07" in res.output

    res = CliRunner().invoke(app, ["train-hallucination", "--store", str(tmp_path / "none.h5"), "-o",
                                      str(tmp_path / "m3")])
    assert res.exit_code == 2 and "none.h5: patch store not found" in res.output

    res = CliRunner().invoke(app, args + ["-o", str(tmp_path / "m4"), "--channels", "y,x"])
    assert res.exit_code == 2 and "channels must be distinct names" in res.output


def test_loss_plot_of_a_run_with_nothing_logged_warns_nothing(tmp_path, recwarn):
    from nirvis.hallucination.train import plot_history

    empty = plot_history({"channels": ["y", "cb", "cr"], "log": [], "val": []}, tmp_path / "empty.png")
    logged = plot_history({"channels": ["y"], "log": [{"step": 4, "train": {"y": 0.1}}], "val": []},
                          tmp_path / "logged.png")
    for path in (empty, logged):
        assert cv2.imread(str(path)).shape[:2] == (450, 700)
    assert not [w for w in recwarn if "legend" in str(w.message)]


def test_resume_refuses_another_process_count_fewer_epochs_and_another_store(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    first = train_hallucination(store, out, replace(CFG, max_steps=40))  # stops in epoch 1 (29 steps per epoch)
    assert not first["complete"] and first["epochs_completed"] == 1
    state = json.loads((out / CHECKPOINT_JSON).read_text())
    assert state["world_size"] == 1 and state["store_fingerprint"]
    # Fewer epochs than the checkpoint reached: it used to end "complete", deleting the checkpoint, with
    # weights from 11 steps that the history did not show.
    with pytest.raises(TrainingError, match="reached epoch 2 of its run; --epochs 1 would end it before that"):
        train_hallucination(store, out, replace(CFG, epochs=1))
    # Same people and rows, other patches: another store.
    other = make_store(tmp_path / "other.h5", PEOPLE, 45, seed=7)
    with h5py.File(other, "a") as h5:
        h5.attrs["summary"] = json.dumps({"pairs_stored": 540, "note": "another mining run"})
    with pytest.raises(TrainingError, match="was written for another patch store"):
        train_hallucination(other, out, CFG)
    from nirvis.hallucination.train import _check_resume

    with pytest.raises(TrainingError, match=r"written by 2 training process\(es\), this run has 1"):
        _check_resume({**state, "world_size": 2}, CFG, store, 540, state["train_people"], state["val_people"],
                      out / CHECKPOINT, 1, state["store_fingerprint"])
    done = train_hallucination(store, out, CFG)  # the checkpoint itself is intact
    assert done["complete"] and done["resumed_from_step"] == 40


def test_a_diverging_run_stops_and_a_model_with_nan_weights_is_refused(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    with pytest.raises(TrainingError, match="training diverged: the loss is not finite"):
        train_hallucination(store, out, replace(CFG, lr=1e6, epochs=1))
    assert not (out / "config.json").exists()  # nothing saved as if it were a model

    from nirvis.hallucination.io import HallucinationModel, ModelFileError, save_model
    from nirvis.hallucination.nets import HallucinationNets

    nets = HallucinationNets(SPECS)
    with torch.no_grad():
        nets.nets["y"].body[0].weight[0, 0, 0, 0] = float("nan")
    folder = save_model(tmp_path / "nan", HallucinationModel(nets=nets, reference=dict(REFERENCE)))
    with pytest.raises(ModelFileError, match=r"1 weight tensor\(s\) hold NaN or inf \(nets\.y\.body\.0\.weight\)"):
        load_model(folder)


def test_people_without_pairs_are_not_drawn_for_validation(tmp_path: Path) -> None:
    people = [f"q{i}" for i in range(6)]
    st = make_store(tmp_path / "s.h5", people, [30] * 5)  # q5 is listed, with no pairs (all pruned in mining)
    for seed in range(6):
        summary = train_hallucination(st, tmp_path / f"m{seed}", replace(CFG, epochs=1, seed=seed))
        model = load_model(tmp_path / f"m{seed}")
        assert "q5" not in model.meta["val_people"] and summary["val"] is not None


def test_rerunning_with_the_same_time_limit_trains_no_more(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    first = train_hallucination(store, out, replace(CFG, max_seconds=1e-6))
    assert first["stopped"] == "max_seconds" and first["steps"] == 1
    again = train_hallucination(store, out, replace(CFG, max_seconds=1e-6))  # used to train one more step
    assert again["steps"] == 1 and again["stopped"] == "max_seconds"


def test_a_negative_seed_is_named_and_the_callers_random_state_is_left_alone(store: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match=r"TrainConfig.seed = -1 is out of range"):
        train_hallucination(store, tmp_path / "neg", replace(CFG, seed=-1))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_hallucination(store, tmp_path / "m", replace(CFG, epochs=1, num_workers=0))
    assert torch.equal(torch.rand(3), expected)


def test_command_stops_at_a_time_limit(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    args = ["train-hallucination", "--store", str(store), "-o", str(out), "--preset", "cpu", "--max-minutes",
            "0.000001", "--batch-size", "4", "--threads", "1"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "trained 1 steps" in res.output and "stopped by --max-minutes" in res.output
    assert load_model(out).meta["training"]["max_seconds"] == pytest.approx(6e-5)
    res = CliRunner().invoke(app, args[:-4] + ["--max-minutes", "0"])
    assert res.exit_code == 2 and "--max-minutes must be > 0, got 0.0" in res.output
