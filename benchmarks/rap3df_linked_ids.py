"""Which RAP3DF ids are one person? Every pair of ids ranked by the similarity of their faces.

For each id, the L2-normalised features of its VIS (RGB) captures are averaged; every pair of ids is scored by
the mean cosine between their captures (VIS with VIS, and the NIR of one against the VIS of the other, both
ways). The top pairs are printed for each network, with how far they stand above the bulk of different
people (the 99.9th percentile of all pairs). ``--sheet`` writes the top candidates side by side (several
captures each, both spectra) for a visual check; it shows dataset faces, so keep it out of the repository.

The pairs confirmed this way are :data:`nirvis.datasets.rap3df.LINKED_IDS`.

Usage::

    python benchmarks/rap3df_linked_ids.py [--data DIR] [--top 12] [--edgeface ../shared/models/edgeface_xs.onnx]
        [--sheet linked.png]
"""

from __future__ import annotations

import argparse
from itertools import combinations
from pathlib import Path

import cv2
import numpy as np

from nirvis.data import find_data_root
from nirvis.datasets.rap3df import load_rap3df
from nirvis.features.cache import FeatureCache
from nirvis.pipeline import Recognizer


def pair_scores(fs, samples) -> dict[tuple[str, str], dict[str, float]]:
    """``(id_a, id_b) -> {"vis": mean VIS-VIS cosine, "cross": mean NIR-VIS cosine (both ways)}``."""
    X, ok = fs.take(samples)
    by: dict[tuple[str, str], list[np.ndarray]] = {}
    for s, x, o in zip(samples, X, ok):
        if o:
            by.setdefault((s.person, s.modality), []).append(x)
    ids = sorted({p for p, _ in by})
    out = {}
    for a, b in combinations(ids, 2):
        va, vb = by.get((a, "vis")), by.get((b, "vis"))
        na, nb = by.get((a, "nir")), by.get((b, "nir"))
        if va is None or vb is None:
            continue
        vis = float((np.stack(va) @ np.stack(vb).T).mean())
        cross = [float((np.stack(n) @ np.stack(v).T).mean()) for n, v in ((na, vb), (nb, va)) if n is not None]
        out[(a, b)] = {"vis": vis, "cross": float(np.mean(cross)) if cross else float("nan")}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--edgeface", default=None, help="an EdgeFace ONNX file, for a second network")
    ap.add_argument("--sheet", default=None, help="write the top candidates side by side here (PNG)")
    args = ap.parse_args()
    sets = load_rap3df(find_data_root(args.data))
    set_of = {s.person: name for name, v in sets.items() for s in v}
    samples = [s for v in sets.values() for s in v]
    nets = {"dlib": Recognizer("dlib", cache=FeatureCache())}
    if args.edgeface:
        from nirvis.features import OnnxEmbedder, OnnxPreprocess

        nets["edgeface"] = Recognizer(OnnxEmbedder(args.edgeface, OnnxPreprocess()), cache=FeatureCache())
    scores = {}
    for name, rec in nets.items():
        fs = rec.featurize(samples, workers=args.workers)
        scores[name] = pair_scores(fs, samples)
    first = next(iter(scores))
    ranked = sorted(scores[first], key=lambda k: -scores[first][k]["vis"])
    for name, sc in scores.items():
        allv = np.array([v["vis"] for v in sc.values()])
        print(f"{name}: {len(allv)} pairs of ids; VIS-VIS mean cosine: median {np.median(allv):.3f}, "
              f"99th pct {np.quantile(allv, 0.99):.3f}, 99.9th pct {np.quantile(allv, 0.999):.3f}")
    by_rank = {name: {k: i + 1 for i, k in enumerate(sorted(sc, key=lambda k: -sc[k]["vis"]))}
               for name, sc in scores.items()}
    print(f"\n{'id A':>12s} {'set':>4s} {'id B':>12s} {'set':>4s}  " +
          "  ".join(f"{n + ' vis':>11s} {n + ' cross':>12s} {'rank':>4s}" for n in scores))
    for k in ranked[:args.top]:
        a, b = k
        print(f"{a:>12s} {set_of[a]:>4s} {b:>12s} {set_of[b]:>4s}  " +
              "  ".join(f"{sc[k]['vis']:11.3f} {sc[k]['cross']:12.3f} {by_rank[n][k]:4d}" for n, sc in scores.items()))
    if args.sheet:
        rows = []
        for a, b in ranked[:args.top]:
            tiles = []
            for p in (a, b):
                caps = [s for s in samples if s.person == p][:6]
                for s in caps:
                    img = s.read()
                    img = np.repeat(img[:, :, None], 3, 2) if img.ndim == 2 else img
                    tiles.append(cv2.resize(img, (96, 120)))
            rows.append(np.hstack(tiles + [np.zeros((120, 96, 3), np.uint8)] * (12 - len(tiles))))
        cv2.imwrite(args.sheet, np.vstack(rows)[:, :, ::-1])
        print(f"wrote {Path(args.sheet)}")


if __name__ == "__main__":
    main()
