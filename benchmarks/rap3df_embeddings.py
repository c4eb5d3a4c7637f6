"""Low-rank embedding on dlib features of RAP3DF: the choices behind ``nirvis evaluate -e lowrank``.

Scores, on the 10 protocol splits (fitted on each split's training people only): raw cosine, PCA,
the low-rank transform with and without centring, with early stopping on held-out *training* people, and
fixed-length runs (which show the overfitting that early stopping guards against).

A yardstick for the transform's gain: "modality means removed" subtracts from every NIR feature the mean NIR
feature of the split's training people, and from every VIS feature the mean VIS one (no learning beyond two
means), alone and with the transform fitted on top.

Usage: python benchmarks/rap3df_embeddings.py [--data DIR] [--workers 2] [--people-split 40]
(features come from the feature cache when ``nirvis demo`` ran before). ``--people-split N`` scores random
N/N person splits over both sets instead of the protocol (the shape of the issue's quick trial).
"""

from __future__ import annotations

import argparse
import time
import warnings
from dataclasses import replace

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from nirvis.data import find_data_root
from nirvis.datasets.base import Split
from nirvis.datasets.rap3df import load_rap3df, rap3df_people_splits, rap3df_splits
from nirvis.embedding import LowRankTransform, PCAEmbedding
from nirvis.evaluation.protocols import SplitConfig, evaluate_splits
from nirvis.features.cache import FeatureCache
from nirvis.pipeline import FeatureSet, Recognizer


def lowrank(**params):
    return lambda X, y, m: LowRankTransform(**params).fit(X, y, modality=m)


def modality_means_removed(fs: FeatureSet):
    """``features(split)`` for a :class:`SplitConfig`: each modality's training mean subtracted."""
    modality = np.array([s.modality for s in fs.samples])

    def features(split: Split) -> FeatureSet:
        X, ok = fs.take(split.train)
        train_modality = np.array([s.modality for s in split.train])
        out = fs.features.copy()
        for m in ("nir", "vis"):
            out[modality == m] -= X[ok & (train_modality == m)].mean(axis=0)
        return replace(fs, features=out)

    return features


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--people-split", type=int, default=None, metavar="N",
                    help="random N/N person splits over both sets instead of the protocol")
    args = ap.parse_args()
    sets = load_rap3df(find_data_root(args.data))
    splits = (rap3df_splits(sets) if args.people_split is None
              else rap3df_people_splits(sets, n_train=args.people_split, n_test=args.people_split))
    fs = Recognizer("dlib", cache=FeatureCache()).featurize([s for v in sets.values() for s in v],
                                                            workers=args.workers)
    warnings.filterwarnings("ignore", category=ConvergenceWarning)  # the fixed-length runs stop at max_iter
    es = dict(early_stopping=True, max_iter=200, n_iter_no_change=20, random_state=0)
    configs = {
        "raw": None,
        "pca (centred rotation)": lambda X, y, m: PCAEmbedding().fit(X, y),
        "LR centred, early stopping": lowrank(center=True, **es),
        "LR uncentred, early stopping (default)": lowrank(center=False, **es),
        "LR uncentred, 10 steps, no stopping": lowrank(center=False, max_iter=10, tol=0.0),
        "LR uncentred, 40 steps, no stopping": lowrank(center=False, max_iter=40, tol=0.0),
        "modality means removed": SplitConfig(modality_means_removed(fs)),
        "modality means removed, then LR (default)": SplitConfig(modality_means_removed(fs),
                                                                 lowrank(center=False, **es)),
    }
    t = time.perf_counter()
    rep = evaluate_splits("rap3df", splits, fs, configs)
    print(f"{splits[0].name.rsplit('-seed', 1)[0]}, {len(splits)} splits")
    print(f"{'configuration':44s} rank-1 (%)     VR@1%  VR@0.1%")
    for r in rep.results:
        print(f"{r['config']:44s} {100 * r['rank1_mean']:4.1f} ± {100 * r['rank1_std']:3.1f}   "
              f"{100 * r['vr_far_1e-2']:5.1f}  {100 * r['vr_far_1e-3']:5.1f}")
    print(f"fit + score time: {time.perf_counter() - t:.0f} s for {len(configs)} configurations x {len(splits)} splits")


if __name__ == "__main__":
    main()
