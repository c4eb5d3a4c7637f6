"""Extended Yale B: low-rank transform against none / PCA / ITML / LMNN (Qiu & Sapiro's own test).

Protocol (fixed before any result was seen)
-------------------------------------------
- People: the 38 ``yaleBNN`` folders, sorted by id, shuffled with ``numpy.random.default_rng(seed)``
  (``seed = 0``); the first 19 learn the embeddings, the other 19 are tested. No image of a test
  person is used for learning (PCA included).
- Features: each 96x84 (h x w) image averaged down to 48x42 (``cv2.INTER_AREA``), pixels / 255,
  flattened (2,016 values). "none" matches these raw pixels; every other method first reduces them
  by a PCA learned on the training people, to ``--pca`` dimensions.
- Gallery: the frontally lit image (A = 0, E = 0) of each test person. Probes: all their other
  images, grouped into the classic illumination subsets by the angle between the light and the
  camera axis, ``arccos(cos A cos E)``: 1: <= 12 deg, 2: <= 25, 3: <= 50, 4: <= 77, 5: > 77.
- Matching: cosine similarity, rank-1 identification among the 19 test people.

Run ``python benchmarks/yaleb_lowrank.py --help``; the data folder is ``$NIRVIS_DATA`` or
``<repo>/../shared/data``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO / "src"))

from nirvis.embedding import make_embedding  # noqa: E402
from nirvis.embedding.lowrank import retrieval_scores  # noqa: E402

_NAME = re.compile(r"^(yaleB\d\d)_P00A([+-]\d{3})E([+-]\d{2})\.png$")
SUBSET_EDGES = (12.0, 25.0, 50.0, 77.0)  # upper bounds of subsets 1..4, degrees
METHODS = ("none", "pca", "lowrank", "itml", "lmnn")
logger = logging.getLogger("yaleb_lowrank")


def data_root() -> Path:
    """``$NIRVIS_DATA`` if set, else ``<repo>/../shared/data``."""
    env = os.environ.get("NIRVIS_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def yaleb_dir(root: Path | None = None) -> Path:
    return (root or data_root()) / "extended-yaleb" / "CroppedYale"


def illumination_subset(azimuth: np.ndarray, elevation: np.ndarray) -> np.ndarray:
    """Subset 1..5 from the angle ``arccos(cos A cos E)`` between the light and the camera axis."""
    a = np.radians(np.asarray(azimuth, dtype=np.float64))
    e = np.radians(np.asarray(elevation, dtype=np.float64))
    angle = np.degrees(np.arccos(np.clip(np.cos(a) * np.cos(e), -1.0, 1.0)))
    angle = np.round(angle, 6)  # so that e.g. A = 0, E = 25 is exactly 25 (subset 2), not 25.000000000000004
    return 1 + np.searchsorted(np.asarray(SUBSET_EDGES), angle, side="left")


def load_yaleb(folder: Path, people: list[str] | None = None, size: tuple[int, int] = (48, 42)):
    """Read the cropped Yale B images of ``people`` (all when ``None``).

    Returns
    -------
    X : float32 array (n, h*w), pixels in [0, 1]
    person : str array (n,)
    azimuth, elevation : int arrays (n,), degrees
    """
    import cv2

    from nirvis._io import read_image

    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no Extended Yale B folder (CroppedYale) here")
    rows, person, az, el = [], [], [], []
    for pdir in sorted(p for p in folder.iterdir() if p.is_dir()):
        if people is not None and pdir.name not in people:
            continue
        for f in sorted(pdir.iterdir()):
            m = _NAME.match(f.name)
            if not m:
                continue  # Ambient images and anything else
            img = read_image(f, channel="gray")
            small = cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA)
            rows.append(small.reshape(-1).astype(np.float32) / 255.0)
            person.append(m.group(1))
            az.append(int(m.group(2)))
            el.append(int(m.group(3)))
    if not rows:
        raise FileNotFoundError(f"{folder}: no yaleBNN_P00A...E...png image found")
    return np.stack(rows), np.array(person), np.array(az), np.array(el)


def split_people(people: list[str], n_train: int, seed: int) -> tuple[list[str], list[str]]:
    """Sorted ids shuffled by ``default_rng(seed)``: the first ``n_train`` learn, the rest are tested."""
    ids = sorted(set(people))
    order = np.random.default_rng(seed).permutation(len(ids))
    shuffled = [ids[i] for i in order]
    return sorted(shuffled[:n_train]), sorted(shuffled[n_train:])


def default_params(method: str, n_components: int, seed: int, lr_max_iter: int) -> dict:
    """Hyper-parameters used for each method (fixed, not tuned on the test people)."""
    if method == "none":
        return {}
    if method == "pca":
        return {"n_components": n_components}
    if method == "lowrank":
        return {"n_components": n_components, "max_iter": lr_max_iter, "early_stopping": True,
                "validation_fraction": 0.2, "n_iter_no_change": 10, "random_state": seed}
    if method == "itml":
        return {"n_components": n_components, "max_iter": 100, "random_state": seed}
    if method == "lmnn":
        return {"n_components": n_components, "max_iter": 200, "n_neighbors": 3, "random_state": seed}
    raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")


def run(
    root: Path | None = None,
    *,
    methods: tuple[str, ...] = METHODS,
    n_train: int = 19,
    seed: int = 0,
    n_components: int = 200,
    lr_max_iter: int = 200,
    max_people: int | None = None,
    params: dict[str, dict] | None = None,
) -> dict:
    """Learn each embedding on the training people and score rank-1 per illumination subset.

    Parameters
    ----------
    root : data folder (holding ``extended-yaleb/``); default :func:`data_root`.
    methods : names for :func:`nirvis.embedding.make_embedding`.
    n_train : people that learn; the others are tested.
    seed : seed of the people split (and of the methods' own randomness).
    n_components : PCA dimension for every method but "none".
    lr_max_iter : iteration cap of the low-rank transform.
    max_people : keep only the first ``max_people`` sorted ids (for quick tests).
    params : per-method overrides of :func:`default_params`.

    Returns
    -------
    dict with ``"split"`` (train and test ids), ``"n_probes"`` per subset, and ``"results"``:
    method -> {"rank1": {subset: value}, "fit_s": seconds, "params": ..., extra diagnostics}.
    """
    folder = yaleb_dir(root)
    all_ids = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name.startswith("yaleB"))
    if max_people is not None:
        all_ids = all_ids[:max_people]
    train_ids, test_ids = split_people(all_ids, n_train, seed)
    X, person, az, el = load_yaleb(folder, train_ids + test_ids)
    train = np.isin(person, train_ids)
    test = ~train
    frontal = (az == 0) & (el == 0)
    gal = test & frontal
    missing = sorted(set(test_ids) - set(person[gal]))
    if missing:
        raise FileNotFoundError(f"{folder}: no A+000E+00 (frontal light) image for {missing}")
    probe = test & ~frontal
    subset = illumination_subset(az, el)
    out = {
        "split": {"seed": seed, "train": train_ids, "test": test_ids},
        "n_train_images": int(train.sum()),
        "n_probes": {int(s): int(np.sum(probe & (subset == s))) for s in range(1, 6)},
        "pca": n_components,
        "results": {},
    }
    for method in methods:
        p = default_params(method, n_components, seed, lr_max_iter)
        p.update((params or {}).get(method, {}))
        model = make_embedding("lowrank-fixed" if method == "lowrank" else method, **p)  # no modalities here
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # metric-learn's and convergence chatter
            model.fit(X[train], person[train])
        fit_s = time.perf_counter() - t0
        Fg, Fp = model.transform(X[gal]), model.transform(X[probe])
        res = {"params": p, "fit_s": round(fit_s, 2), "rank1": {}}
        for s in range(1, 6):
            sel = subset[probe] == s
            if sel.any():
                r1, _ = retrieval_scores(Fp[sel], person[probe][sel], Fg, person[gal])
                res["rank1"][s] = r1
        r1_all, _ = retrieval_scores(Fp, person[probe], Fg, person[gal])
        res["rank1"]["all"] = r1_all
        if hasattr(model, "n_iter_"):
            res["n_iter"] = int(model.n_iter_)
        if method == "lowrank":
            h = model.objective_history_
            res.update(n_iter=int(model.n_iter_), stop=model.stop_reason_, best_iteration=int(model.best_iteration_),
                       f_first=float(h[0]), f_best=float(h[model.best_iteration_]), f_last=float(h[-1]))
            if model.validation_scores_ is not None:
                res["validation_rank1"] = [float(model.validation_scores_[0]),
                                           float(model.validation_scores_[model.best_iteration_])]
        logger.info("%s: %s (%.1f s)", method, res["rank1"], fit_s)
        out["results"][method] = res
    return out


def markdown_table(out: dict) -> str:
    """Rank-1 (%) per illumination subset, one row per method."""
    n = out["n_probes"]
    lines = [
        "| method | S1 | S2 | S3 | S4 | S5 | all | fit (s) |",
        "|---|---|---|---|---|---|---|---|",
        "| (probes) | " + " | ".join(str(n[s]) for s in range(1, 6)) + f" | {sum(n.values())} | |",
    ]
    for method, r in out["results"].items():
        cells = [f"{100 * r['rank1'].get(s, float('nan')):.1f}" for s in (1, 2, 3, 4, 5, "all")]
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {r['fit_s']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=None, help="data folder (default $NIRVIS_DATA or ../shared/data)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--pca", type=int, default=200, help="PCA dimension (default 200)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr-max-iter", type=int, default=200)
    ap.add_argument("--no-early-stopping", action="store_true",
                    help="low-rank: run all --lr-max-iter iterations on all 19 people, no validation split")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    params = {"lowrank": {"early_stopping": False, "tol": 0.0}} if args.no_early_stopping else None
    out = run(args.data, methods=tuple(m for m in args.methods.split(",") if m), seed=args.seed,
              n_components=args.pca, lr_max_iter=args.lr_max_iter, params=params)
    print(f"train {out['n_train_images']} images of {out['split']['train']}")
    print(f"test people {out['split']['test']}")
    print(markdown_table(out))
    for m, r in out["results"].items():
        extra = {k: v for k, v in r.items() if k not in ("rank1", "params", "fit_s")}
        print(f"{m}: params {r['params']} {extra}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
