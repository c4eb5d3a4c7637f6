"""The kill test of issue 13: ``nirvis enroll`` of 200 images is killed with SIGKILL at random moments (at
least 20 times); after each kill the gallery must reopen with every image wholly enrolled or absent and the
FAISS index agreeing with SQLite, and rerunning the same command must complete the batch without
duplicates.

Half of the kills come at a random time after the start (they also hit start-up, the gallery's creation and
the final index write); the other half when the database reaches a random number of rows (mid-batch).
The images are synthetic aligned faces and the embedder is the cheap ``test-pixels`` plug-in, so that one
uninterrupted run takes about 2 s (gray images, cheaper to decode and to keep); 8 images per transaction give 25
commits per run. The whole test takes 30-55 s on 2 cores, depending on their load.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import nirvis_test_plugin as plug
from nirvis.gallery import Gallery
from nirvis.gallery.index import INDEX_FILE, VectorIndex, read_index_header
from nirvis.gallery.store import DB_FILE

N_PEOPLE, PER_PERSON = 20, 10
MIN_KILLS = 20


def _rows_now(db: Path) -> int:
    if not db.is_file():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return int(con.execute("SELECT count(*) FROM faces").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def _check(gallery: Path, expected: dict[str, tuple[str, str]]) -> int:
    """Every row is a whole enrolment of an expected image, no image twice, and the index (after reopening)
    holds exactly the rows. Returns the number of rows."""
    if not gallery.exists():
        return 0  # killed before the gallery's folder was renamed into place: nothing half-made is visible
    assert (gallery / DB_FILE).is_file(), f"half-made gallery: {sorted(p.name for p in gallery.iterdir())}"
    with Gallery.open(gallery) as g:
        rows = sqlite3.connect(gallery / DB_FILE).execute(
            "SELECT person, source, sha256, vector, face, fingerprint FROM faces").fetchall()
        shas = [r[2] for r in rows]
        assert len(shas) == len(set(shas)), "an image is enrolled twice"
        for person, source, sha, blob, face, fp in rows:
            assert sha in expected, f"unknown row {source}"
            assert (person, source) == expected[sha]
            assert fp == g.fingerprint
            v = np.frombuffer(blob, dtype="<f4")
            assert v.shape == (plug.DIM,) and abs(float(np.linalg.norm(v)) - 1.0) < 1e-4
            img = cv2.imread(str(gallery / face), cv2.IMREAD_UNCHANGED)  # kept face: written before its row
            assert img is not None and img.shape == (224, 224)
        report = g.check()  # vectors against their hashes; index ids == database ids (after the update)
        assert report["ok"], report["problems"]
        assert report["rows"] == report["index_rows"] == len(rows)
        state = g._store.state(g.fingerprint).to_dict()
    # ... and the index file on disk now agrees with the database
    assert read_index_header(gallery / INDEX_FILE)["state"] == state
    idx = VectorIndex.load(gallery / INDEX_FILE, plug.DIM, g.fingerprint, g.config.index)
    ids = [r[0] for r in sqlite3.connect(gallery / DB_FILE).execute("SELECT id FROM faces ORDER BY id")]
    assert idx is not None and idx.ids().tolist() == ids
    return len(rows)


@pytest.mark.slow
def test_sigkill_at_random_moments_never_leaves_a_broken_gallery(tmp_path, plugin_env):
    files = plug.people_folder(tmp_path / "faces", N_PEOPLE, PER_PERSON, color=False)  # gray: cheaper to code
    expected = {hashlib.sha256(f.read_bytes()).hexdigest(): (p, os.path.abspath(f))
                for p, fs in files.items() for f in fs}
    assert len(expected) == N_PEOPLE * PER_PERSON == 200
    gallery = tmp_path / "g"
    cmd = [sys.executable, "-m", "nirvis.cli", "enroll", "--gallery", str(gallery), "--embedder", "test-pixels",
           "--aligned", "--no-cache", "--batch-size", "8", str(tmp_path / "faces")]
    rng = random.Random(20261203)
    kills = runs = completed = 0
    full_run_s = 2.0  # estimate of an uninterrupted run, updated from completed runs
    log = []
    start = time.monotonic()
    while kills < MIN_KILLS and runs < 80:
        before = _check(gallery, expected)
        if before == len(expected):  # a run finished the batch: start a new cycle (the creation is killed too)
            shutil.rmtree(gallery)
            before = 0
        runs += 1
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=plugin_env)
        if runs % 2:
            time.sleep(rng.uniform(0.05, full_run_s))
            how = "time"
        else:
            target = rng.randrange(before + 1, len(expected))
            while proc.poll() is None and _rows_now(gallery / DB_FILE) < target and time.monotonic() - t0 < 30:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.03))
            how = f"rows>={target}"
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
        else:
            assert proc.returncode == 0, f"run {runs} failed with status {proc.returncode}"
            completed += 1
            full_run_s = 0.5 * full_run_s + 0.5 * (time.monotonic() - t0)
        after = _check(gallery, expected)
        log.append((how, before, after))
        assert after >= before  # a kill never loses committed rows
    assert kills >= 20, f"only {kills} kills in {runs} runs: {log}"
    # rerunning the same command completes the batch, without duplicates
    r = subprocess.run(cmd, capture_output=True, text=True, env=plugin_env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert _check(gallery, expected) == len(expected)
    r = subprocess.run(cmd, capture_output=True, text=True, env=plugin_env, timeout=120)
    assert r.returncode == 0 and "enrolled 0 image(s)" in r.stdout and "200 already enrolled" in r.stdout
    assert _check(gallery, expected) == len(expected)
    assert not list(tmp_path.glob(".g.creating-*")), "a killed creation's folder was left behind"
    print(f"{kills} kills, {completed} completed runs, {runs} runs in {time.monotonic() - start:.1f} s: {log}")
