"""Resumability: SIGKILL the miner mid-run, rerun, and get the same store as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .synth import write_folder
from .test_store import assert_same_store

SCRIPT = Path(__file__).with_name("_mine_script.py")
CFG = {"stride": 24, "prune_quantile": 0.5}


def _run(root: Path, out: Path, workers: int = 1) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(SCRIPT), str(root), str(out), json.dumps(CFG), str(workers)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.mark.slow
@pytest.mark.parametrize("kill_after_parts", [2, 5, 6])
def test_sigkill_then_rerun_matches_uninterrupted(tmp_path: Path, kill_after_parts: int) -> None:
    root = write_folder(tmp_path / "data", [f"p{i}" for i in range(6)], n_nir=2, n_vis=1)
    ref = tmp_path / "ref" / "s.h5"
    p = _run(root, ref)
    assert p.wait(timeout=120) == 0, p.stdout.read().decode()

    out = tmp_path / "killed" / "s.h5"
    parts = out.with_name(out.name + ".parts")
    p = _run(root, out)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and p.poll() is None:
        if parts.is_dir() and len(list(parts.glob("*.npz"))) >= kill_after_parts:
            break
        time.sleep(0.01)
    if kill_after_parts < 6:
        assert p.poll() is None, "the miner finished before it could be killed"
    if p.poll() is None:  # with 6 of 6 parts done the kill lands in assembly, or just after it
        os.kill(p.pid, signal.SIGKILL)
    p.wait()
    if kill_after_parts < 6:
        assert not out.exists()
        assert 1 <= len(list(parts.glob("*.npz"))) < 6

    p = _run(root, out)
    assert p.wait(timeout=120) == 0, p.stdout.read().decode()
    assert_same_store(ref, out)
    assert not parts.exists()
