"""Low-rank embedding on dlib features of RAP3DF: the choices behind ``nirvis evaluate -e lowrank``.

Scores, on the 10 protocol splits (fitted on each split's training people only): raw cosine, PCA,
the low-rank transform with and without centring, with early stopping on held-out *training* people, and
fixed-length runs (which show the overfitting that early stopping guards against).

Usage: python benchmarks/rap3df_embeddings.py [--data DIR] [--workers 2]
(features come from the feature cache when ``nirvis demo`` ran before).
"""

from __future__ import annotations

import argparse
import time

from nirvis.data import find_data_root
from nirvis.datasets.rap3df import load_rap3df, rap3df_splits
from nirvis.embedding import LowRankTransform, PCAEmbedding
from nirvis.evaluation.protocols import evaluate_splits
from nirvis.features.cache import FeatureCache
from nirvis.pipeline import Recognizer


def lowrank(**params):
    return lambda X, y, m: LowRankTransform(**params).fit(X, y, modality=m)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default=None)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    sets = load_rap3df(find_data_root(args.data))
    splits = rap3df_splits(sets)
    fs = Recognizer("dlib", cache=FeatureCache()).featurize([s for v in sets.values() for s in v],
                                                            workers=args.workers)
    es = dict(early_stopping=True, max_iter=200, n_iter_no_change=20, random_state=0)
    configs = {
        "raw": None,
        "pca (centred rotation)": lambda X, y, m: PCAEmbedding().fit(X, y),
        "LR centred, early stopping": lowrank(center=True, **es),
        "LR uncentred, early stopping (default)": lowrank(center=False, **es),
        "LR uncentred, 10 steps, no stopping": lowrank(center=False, max_iter=10, tol=0.0),
        "LR uncentred, 40 steps, no stopping": lowrank(center=False, max_iter=40, tol=0.0),
    }
    t = time.perf_counter()
    rep = evaluate_splits("rap3df", splits, fs, configs)
    print(f"{'configuration':42s} rank-1 (%)     VR@1%  VR@0.1%")
    for r in rep.results:
        print(f"{r['config']:42s} {100 * r['rank1_mean']:4.1f} ± {100 * r['rank1_std']:3.1f}   "
              f"{100 * r['vr_far_1e-2']:5.1f}  {100 * r['vr_far_1e-3']:5.1f}")
    print(f"fit + score time: {time.perf_counter() - t:.0f} s for {len(configs)} configurations x {len(splits)} splits")


if __name__ == "__main__":
    main()
