"""What ``LowRankTransformCV`` chooses on each RAP3DF split, and why: every candidate's held-out rank-1 with its
binomial standard error and best step, and the choice under ``--selection`` (``one_se`` or ``best``).

Only training people are used (the choice never sees a split's test people). Features come from the feature
cache (``$NIRVIS_CACHE``), or are computed once.

Usage: python benchmarks/rap3df_lowrank_selection.py [--data DIR] [--selection one_se|best]
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np

from nirvis.data import find_data_root
from nirvis.datasets import load_protocol
from nirvis.embedding import LowRankTransformCV
from nirvis.features.cache import FeatureCache
from nirvis.pipeline import Recognizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="data root (default: $NIRVIS_DATA or ../shared/data)")
    ap.add_argument("--selection", default="one_se", choices=("one_se", "best"))
    args = ap.parse_args()
    root = find_data_root(args.data)
    _, splits, samples = load_protocol("rap3df", root, None, None)
    fs = Recognizer(cache=FeatureCache()).featurize(samples, workers=1)
    print("| split | chosen | " + " | ".join(("no shift, 128", "no shift, 64", "shift, 128", "shift, 64")) + " |")
    print("|---|---|---|---|---|---|")
    for split in splits:
        X, ok = fs.take(split.train)
        kept = [s for s, o in zip(split.train, ok) if o]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cv = LowRankTransformCV(selection=args.selection).fit(
                X[ok], np.array([s.person for s in kept]), modality=np.array([s.modality for s in kept]))
        chosen = f"{'shift' if cv.best_params_['shift'] else 'no shift'}, {cv.n_components_}"
        cells = [f"{r['val_rank1']:.3f}±{r['val_se']:.3f} @{r['best_iteration']}" for r in cv.cv_results_]
        print(f"| {split.name} | {chosen} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
