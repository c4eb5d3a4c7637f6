"""Patch-mining speed (paper Sec. 3.1): registrations per second per core, and a CASIA projection.

Usage::

    python benchmarks/bench_mining.py registrations [--data DIR] [--pairs 6]
    python benchmarks/bench_mining.py casia-projection [--data DIR] [--seconds-per-window S]
    python benchmarks/bench_mining.py store-stats STORE.h5
    python benchmarks/bench_mining.py subset OUT.h5 --people 12 --workers N

The wall time of a whole run is measured with the command itself::

    time nirvis mine --dataset rap3df --split train-of-fold-0 -o fold0.h5 --workers N

``registrations`` times :func:`nirvis.mining.register.register_window` (ECC, MOTION_AFFINE, the default
caps) with OpenCV limited to one thread, on every window of the first RAP3DF training people's
simultaneous (same-capture) NIR/RGB pairs, after alignment and normalisation, and on a synthetic
textured pair whose VIS is a slightly warped copy (the well-posed case).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter

import cv2
import numpy as np


def _time_windows(pairs, config) -> dict:
    from nirvis.mining.register import register_window
    from nirvis.mining.windows import window_grid

    w = config.window
    kinds: Counter = Counter()
    n = 0
    t0 = time.perf_counter()
    for nir, y, valid in pairs:
        nir_f, y_f = nir.astype(np.float32), y.astype(np.float32)
        for y0, x0 in window_grid(config.size, w, config.stride):
            if valid is not None and not valid[y0:y0 + w, x0:x0 + w].all():
                continue
            n += 1
            _, kind = register_window(np.ascontiguousarray(nir_f[y0:y0 + w, x0:x0 + w]),
                                      np.ascontiguousarray(y_f[y0:y0 + w, x0:x0 + w]), config)
            kinds[kind or "ok"] += 1
    dt = time.perf_counter() - t0
    return {"windows": n, "seconds": round(dt, 3), "windows_per_s": round(n / dt, 1),
            "ms_per_window": round(1e3 * dt / n, 3), "outcomes": dict(kinds)}


def registrations(data: str | None, n_pairs: int) -> dict:
    from nirvis.data import find_data_root
    from nirvis.datasets import load_protocol
    from nirvis.mining.config import MiningConfig
    from nirvis.mining.miner import jobs_from_samples, load_face

    cv2.setNumThreads(1)
    config = MiningConfig()
    out = {}
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.random((224, 224)).astype(np.float32), (0, 0), 2.5)
    base = cv2.normalize(base, None, 20, 235, cv2.NORM_MINMAX).astype(np.uint8)
    m = np.array([[1.01, 0.01, 1.0], [-0.01, 0.99, -0.8]], np.float32)
    out["synthetic"] = _time_windows([(base, cv2.warpAffine(base, m, (224, 224), borderMode=cv2.BORDER_REFLECT),
                                       None)], config)
    _, splits, _ = load_protocol("rap3df", find_data_root(data))
    pairs = []
    for job in jobs_from_samples(splits[0].train, splits[0].train_people):
        vis_by_id = {r.id: r for r in job.vis}
        for r in job.nir:
            v = vis_by_id.get(r.pair_id or "")
            a = load_face(r, "nir", aligned=False, size=224)
            b = load_face(v, "vis", aligned=False, size=224) if v else None
            if a is not None and b is not None:
                pairs.append((a[0], cv2.cvtColor(b[0], cv2.COLOR_RGB2YCrCb)[..., 0], a[1] & b[1]))
            if len(pairs) >= n_pairs:
                break
        if len(pairs) >= n_pairs:
            break
    out["rap3df_same_capture"] = {"image_pairs": len(pairs), **_time_windows(pairs, config)}
    return out


def casia_projection(data: str | None, seconds_per_window: float | None) -> dict:
    """Image pairs (every NIR x every VIS of a person) of CASIA NIR-VIS 2.0's View1 training lists."""
    from nirvis.data import find_data_root

    root = find_data_root(data) / "casia-nir-vis-2.0-protocols"
    per: dict[str, Counter] = {}
    for name, mod in (("nir_train_dev.txt", "nir"), ("vis_train_dev.txt", "vis")):
        for line in (root / name).read_text().split():
            per.setdefault(line.split("\\")[2], Counter())[mod] += 1
    images = sum(c["nir"] + c["vis"] for c in per.values())
    pairs = sum(c["nir"] * c["vis"] for c in per.values())
    windows = pairs * 196
    res = {"people": len(per), "images": images, "image_pairs": pairs, "windows": windows}
    if seconds_per_window:
        res["core_hours"] = round(windows * seconds_per_window / 3600, 1)
        # the paper mined about 17k images; pairs grow with people at a fixed number of images per person
        res["core_hours_at_17k_images"] = round(res["core_hours"] * 17000 / images, 1)
    return res


def subset_wall(data: str | None, n_people: int, workers: int, out: str) -> dict:
    """Wall time of :func:`nirvis.mining.mine_store` on the first ``n_people`` training people of
    rap3df-seed0 (sorted ids) with ``workers`` processes."""
    from nirvis.data import find_data_root
    from nirvis.datasets import load_protocol
    from nirvis.mining.miner import jobs_from_samples, mine_store

    _, splits, _ = load_protocol("rap3df", find_data_root(data))
    jobs = jobs_from_samples(splits[0].train, splits[0].train_people)[:n_people]
    t0 = time.perf_counter()
    s = mine_store(jobs, out, workers=workers)
    return {"people": len(jobs), "workers": workers, "wall_s": round(time.perf_counter() - t0, 1),
            "image_pairs": s["total_image_pairs"], "windows": s["windows_tried"], "pairs_kept": s["pairs_kept"]}


def store_stats(path: str) -> dict:
    from nirvis.mining.store import PatchStore

    with PatchStore(path) as st:
        s = st.summary
    return {k: v for k, v in s.items() if not k.startswith("kept_per_location") and k != "per_person"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["registrations", "casia-projection", "store-stats", "subset"])
    ap.add_argument("store", nargs="?")
    ap.add_argument("--data", default=None)
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--people", type=int, default=12)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seconds-per-window", type=float, default=None)
    a = ap.parse_args()
    if a.what == "registrations":
        res = registrations(a.data, a.pairs)
    elif a.what == "casia-projection":
        res = casia_projection(a.data, a.seconds_per_window)
    elif a.what == "subset":
        res = subset_wall(a.data, a.people, a.workers, a.store)
    else:
        res = store_stats(a.store)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
