"""Enrolment speed of ``nirvis enroll`` (images/s, whole command including start-up), in three settings:

1. **dlib, no cache**: CelebA photos (``--n`` images, 2 per identity) read, detected, aligned, embedded by dlib's
   ResNet and stored: what a new watch list costs.
2. **dlib, warm feature cache**: the same photos into a new gallery, their alignments and features already in
   the cache (as after ``nirvis evaluate`` on the same files): the gallery's own overhead plus cache reads.
3. **storage alone**: ``--n-synthetic`` synthetic aligned faces, ``--aligned`` and the ``test-pixels`` plug-in
   embedder of the tests (``tests/gallery/nirvis_test_plugin.py``): hashing, SQLite transactions, the kept
   faces and the FAISS index.

Each command is printed. A rerun of the first command (every image already enrolled) gives the fixed cost:
start-up, hashing and the duplicate check.

Usage::

    python benchmarks/bench_gallery_enroll.py [--celeba ../shared/data/celeba-faces] [--n 100] [--n-synthetic 1000]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], env: dict | None = None) -> float:
    shown = [c if len(c) < 60 else "..." + c[-40:] for c in cmd]
    print("$ " + " ".join(shown[2:] if shown[:2] == [sys.executable, "-m"] else shown), flush=True)
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {r.stderr[-2000:]}")
    print("  " + r.stdout.strip().splitlines()[-1])
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--celeba", type=Path, default=ROOT.parent / "shared" / "data" / "celeba-faces")
    ap.add_argument("--n", type=int, default=100, help="CelebA photos (2 per identity)")
    ap.add_argument("--n-synthetic", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="nirvis-bench-enrol-"))
    try:
        people = work / "people"
        ids = sorted(d for d in args.celeba.iterdir() if d.is_dir())
        n = 0
        for d in ids:
            for img in sorted(d.iterdir())[:2]:
                if n < args.n:
                    (people / d.name).mkdir(parents=True, exist_ok=True)
                    os.symlink(img.resolve(), people / d.name / img.name)
                    n += 1
        nirvis = [sys.executable, "-m", "nirvis.cli"]
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; {n} CelebA photos")
        t1 = timed([*nirvis, "enroll", "--gallery", str(work / "g1"), "--no-cache", "--batch-size",
                    str(args.batch_size), str(people)])
        t0 = timed([*nirvis, "enroll", "--gallery", str(work / "g1"), "--no-cache", str(people)])
        timed([*nirvis, "enroll", "--gallery", str(work / "fill"), "--cache-dir", str(work / "cache"), str(people)])
        t2 = timed([*nirvis, "enroll", "--gallery", str(work / "g2"), "--cache-dir", str(work / "cache"), "--batch-size",
                    str(args.batch_size), str(people)])
        sys.path.insert(0, str(ROOT / "tests" / "gallery"))
        import nirvis_test_plugin as plug

        per = 10
        plug.people_folder(work / "synthetic", args.n_synthetic // per, per)
        env = {**os.environ, "NIRVIS_PLUGINS": "nirvis_test_plugin",
               "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "gallery"), os.environ.get("PYTHONPATH", "")])}
        m = (args.n_synthetic // per) * per
        t3 = timed([*nirvis, "enroll", "--gallery", str(work / "g3"), "--embedder", "test-pixels", "--aligned",
                    "--no-cache", "--batch-size", str(args.batch_size), str(work / "synthetic")], env)
        t3b = timed([*nirvis, "enroll", "--gallery", str(work / "g3"), "--aligned", "--no-cache",
                     str(work / "synthetic")], env)
        print("\n| setting | images | wall time (s) | images/s |")
        print("|---|---:|---:|---:|")
        print(f"| dlib, no cache (detect, align, embed, store) | {n} | {t1:.1f} | {n / t1:.2f} |")
        print(f"| dlib, warm feature cache | {n} | {t2:.1f} | {n / t2:.1f} |")
        print(f"| storage alone (synthetic aligned faces, test-pixels embedder) | {m} | {t3:.1f} | {m / t3:.0f} |")
        print(f"| rerun, every image already enrolled (start-up, hashing, duplicate check) | {n} / {m} | "
              f"{t0:.1f} / {t3b:.1f} | - |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
