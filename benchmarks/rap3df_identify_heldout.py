"""The held-out identification check of issue 13, through the command line.

1. Enrol the VIS front photo of each RAP3DF person of a test folder (their first ``front`` RGB capture, the
   protocol's gallery image), plus 100 VIS distractors: CelebA identities, one image each.
2. ``nirvis identify --top 5 --json`` on that folder's NIR captures (every IR capture of those people except
   the one taken with the enrolled photo).
3. Report the top-5 rate: the fraction of probes whose person is among the 5 people returned (a probe that
   fails, e.g. no face found, counts as a miss). The check passes at 60%.

Usage::

    python benchmarks/rap3df_identify_heldout.py --data ../shared/data/rap3df/rap3df_data_02 --half 1
    python benchmarks/rap3df_identify_heldout.py --data /path/to/other/rap3df_people   # every person there

``--data`` is a RAP3DF folder: the ``rap3df`` folder, one set's folder (``rap3df_data_02`` with its
``database.json``, or a 2017-style folder of ``<person>/k1_box_xy.bmp``), or a folder holding such a layout.
Every person in it is a test person, unless ``--half 0|1`` keeps the first or second half of them (sorted ids;
for development). Volunteers recorded under two ids count as one person (``nirvis.datasets.rap3df``).
The commands run are printed; ``--json OUT`` writes the summary and every probe's result.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def gallery_and_probes(samples):
    """The protocol's rule: each person's first front RGB capture (first RGB capture if none is frontal);
    probes: every IR capture of those people except the one taken with the gallery photo."""
    people = sorted({s.person for s in samples})
    gallery = []
    for p in people:
        vis = [s for s in samples if s.person == p and s.modality == "vis"]
        if vis:
            front = [s for s in vis if s.pose == "front"]
            gallery.append(front[0] if front else vis[0])
    paired = {g.pair_id for g in gallery}
    probes = [s for s in samples if s.modality == "nir" and s.person in {g.person for g in gallery}
              and s.capture_id not in paired]
    return gallery, probes


def distractors(folder: Path, n: int, seed: int, exclude: set[str]) -> list[tuple[str, Path]]:
    """``n`` CelebA identities (seeded choice), the first image (sorted) of each, as ``celeba-<identity>``."""
    ids = sorted(d.name for d in folder.iterdir() if d.is_dir())
    if len(ids) < n:
        sys.exit(f"--distractors {folder}: {len(ids)} identities, {n} wanted")
    pick = sorted(np.random.default_rng(seed).choice(ids, n, replace=False).tolist())
    out = []
    for i in pick:
        imgs = sorted(p for p in (folder / i).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"))
        person = f"celeba-{i}"
        if imgs and person not in exclude:
            out.append((person, imgs[0]))
    return out


def run(cmd: list[str]) -> tuple[subprocess.CompletedProcess, float]:
    print("$ " + " ".join(cmd if len(cmd) < 20 else cmd[:18] + [f"... ({len(cmd) - 18} more probe paths)"]),
          flush=True)
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    return r, time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="RAP3DF folder whose people are the test people")
    ap.add_argument("--half", type=int, choices=(0, 1), default=None, help="keep the first (0) or second (1) half "
                    "of the people (sorted ids)")
    ap.add_argument("--distractors", type=Path, default=ROOT.parent / "shared" / "data" / "celeba-faces",
                    help="CelebA folder (<identity>/<image>.jpg); default ../shared/data/celeba-faces")
    ap.add_argument("--n-distractors", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0, help="seed of the distractor choice")
    ap.add_argument("--embedder", default="dlib")
    ap.add_argument("--models-dir", default=None)
    ap.add_argument("--cache-dir", default=None, help="feature cache (default: nirvis's); --no-cache for none")
    ap.add_argument("--no-cache", action="store_true")
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--work", type=Path, default=None, help="folder for the gallery (default: a temporary one)")
    ap.add_argument("--json", type=Path, default=None, help="write the summary and each probe's result here")
    ap.add_argument("--min-rate", type=float, default=0.6, help="the check passes at this top-k rate")
    args = ap.parse_args()

    from nirvis.datasets.rap3df import load_rap3df

    sets = load_rap3df(args.data)
    samples = [s for v in sets.values() for s in v]
    people = sorted({s.person for s in samples})
    if args.half is not None:
        people = people[: len(people) // 2] if args.half == 0 else people[len(people) // 2:]
        samples = [s for s in samples if s.person in set(people)]
    gallery, probes = gallery_and_probes(samples)
    extra = distractors(args.distractors, args.n_distractors, args.seed, {g.person for g in gallery})
    work = args.work or Path(tempfile.mkdtemp(prefix="nirvis-heldout-"))
    work.mkdir(parents=True, exist_ok=True)
    g = work / "gallery"
    if g.exists():
        sys.exit(f"{g} exists; give another --work folder")
    with open(work / "people.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["person", "path"])
        for s in gallery:
            w.writerow([s.person, str(Path(s.path).resolve())])
        for person, path in extra:
            w.writerow([person, str(path.resolve())])
    common = ["--models-dir", args.models_dir] if args.models_dir else []
    common += ["--no-cache"] if args.no_cache else (["--cache-dir", args.cache_dir] if args.cache_dir else [])
    nirvis = [sys.executable, "-m", "nirvis.cli"]
    print(f"test people: {len(gallery)} ({', '.join(sorted(sets))} set(s) of {args.data}); distractors: {len(extra)} "
          f"CelebA identities; probes: {len(probes)} NIR captures")
    r, t_enrol = run([*nirvis, "enroll", "--gallery", str(g), "--csv", str(work / "people.csv"), "--embedder",
                      args.embedder, *common])
    sys.stderr.write(r.stderr[-3000:])
    print(r.stdout.strip())
    if r.returncode != 0:
        return r.returncode
    channels = {s.channel for s in probes}
    if len(channels) != 1:
        sys.exit(f"probes read from different channels {channels}; run one set at a time")
    ch = channels.pop() or "gray"
    r, t_ident = run([*nirvis, "identify", "--gallery", str(g), "--top", str(args.top), "--json", "--channel", ch,
                      *common, *[str(s.path) for s in probes]])
    if r.returncode not in (0, 1):
        sys.stderr.write(r.stderr[-3000:])
        return r.returncode
    results = json.loads(r.stdout)
    results = results if isinstance(results, list) else [results]
    assert len(results) == len(probes)
    ranks, failed, decided, accepted_right = [], 0, 0, 0
    for s, res in zip(probes, results):
        if "error" in res:
            failed += 1
            ranks.append(np.inf)
            continue
        names = [m["person"] for m in res["matches"]]
        ranks.append(names.index(s.person) + 1 if s.person in names else np.inf)
        if res["decision"]["person"] is not None:
            decided += 1
            accepted_right += res["decision"]["person"] == s.person
    ranks = np.asarray(ranks)
    top_k = float(np.mean(ranks <= args.top))
    summary = {
        "data": str(args.data), "half": args.half, "embedder": args.embedder, "test_people": len(gallery),
        "distractors": len(extra), "gallery_people": len(gallery) + len(extra), "probes": len(probes),
        "probes_failed": failed, "rank1": float(np.mean(ranks <= 1)), f"top{args.top}": top_k,
        "decided_match": decided, "decided_match_right": accepted_right,
        "enroll_seconds": round(t_enrol, 1), "identify_seconds": round(t_ident, 1),
        "passed": top_k >= args.min_rate,
    }
    print(json.dumps(summary, indent=2))
    print(f"top-{args.top}: {100 * top_k:.1f}% of {len(probes)} probes ({failed} not identified: no face or unreadable) "
          f"-> {'PASS' if summary['passed'] else 'FAIL'} (needs {100 * args.min_rate:.0f}%)")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "probes": [
            {"person": s.person, "path": str(s.path), **res} for s, res in zip(probes, results)]}, indent=2))
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
