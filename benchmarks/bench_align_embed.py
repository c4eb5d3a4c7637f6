"""Speed of align + embed (images/s), single process and with worker processes, on real RAP3DF images.

Usage: python benchmarks/bench_align_embed.py [--data DIR] [--n 120] [--workers 1 2]

No cache is used, so every image is read, detected, aligned and embedded.
"""

from __future__ import annotations

import argparse
import platform
import resource
import time

from nirvis.data import find_data_root
from nirvis.datasets.rap3df import load_rap3df
from nirvis.pipeline import Recognizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default=None)
    ap.add_argument("--n", type=int, default=120, help="images (half NIR, half VIS)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    sets = load_rap3df(find_data_root(args.data))
    samples = [s for v in sets.values() for s in v][:: max(1, sum(map(len, sets.values())) // args.n)][: args.n]
    rec = Recognizer("dlib", cache=None)
    rec.featurize(samples[:2])  # load the models once, outside the timing
    print(f"machine: {platform.processor() or platform.machine()}, {len(samples)} images "
          f"({sum(s.modality == 'nir' for s in samples)} NIR)")
    for w in args.workers:
        t = time.perf_counter()
        fs = rec.featurize(samples, workers=w)
        dt = time.perf_counter() - t
        print(f"workers={w}: {len(samples) / dt:.2f} images/s ({dt:.1f} s, {int(fs.ok.sum())} aligned)")
    # Stage split, single process.
    from nirvis.faces.align import FaceAligner

    al = FaceAligner()
    t = time.perf_counter()
    faces = []
    for s in samples:
        try:
            faces.append(al.align(s.read()))
        except Exception:  # noqa: BLE001 - counted below
            pass
    t_align = time.perf_counter() - t
    t = time.perf_counter()
    rec.embedder.embed(faces)
    t_embed = time.perf_counter() - t
    print(f"stages (1 process): align {1000 * t_align / len(samples):.0f} ms/image, "
          f"embed {1000 * t_embed / max(len(faces), 1):.0f} ms/face (flip TTA: 2 network passes)")
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
