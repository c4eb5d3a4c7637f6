"""Gallery search speed: queries/s against gallery size, FAISS exact against NumPy brute force, and the
approximate indexes (IVF, HNSW) against exact search, with their recall@1, at the largest size.

Usage::

    python benchmarks/bench_gallery_search.py [--sizes 1 10000 1000000] [--queries 200] [--hnsw]

Gallery vectors: synthetic 128-D unit vectors (Gaussian, normalised). Queries are "probes of enrolled
people": a gallery vector plus noise, renormalised, cosine about 0.7 with it (what a NIR probe of an
enrolled person scores with dlib), plus as many random unit vectors (nobody's probe: the hardest case for an
approximate index). recall@1 = fraction of queries whose approximate best row is the exact best row.

Throughput is measured one query at a time (what ``Gallery.identify`` does) and as one batch of all queries.
Searches go through :meth:`nirvis.gallery.index.VectorIndex.search` (a single query runs on one thread:
OpenMP's threads slow one query down). The approximate indexes are built by :class:`nirvis.gallery.index.VectorIndex` with the settings of
:class:`nirvis.gallery.index.IndexConfig` (IVF: ``4 sqrt(n)`` cells, k-means on 64 vectors per cell).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def rate(fn, queries: np.ndarray, one_by_one: bool, min_s: float = 1.0) -> tuple[float, np.ndarray]:
    """Queries per second of ``fn`` (returns the best id of each query), and those ids."""
    t = time.perf_counter()
    if one_by_one:
        out, n = [], 0
        while True:
            for q in queries:
                out.append(fn(q[None])[0])
                n += 1
            if time.perf_counter() - t >= min_s or n >= 4 * len(queries):
                break
        ids = np.array(out[: len(queries)])
    else:
        n = 0
        while True:
            ids = fn(queries)
            n += len(queries)
            if time.perf_counter() - t >= min_s:
                break
    return n / (time.perf_counter() - t), ids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 10_000, 1_000_000])
    ap.add_argument("--queries", type=int, default=200, help="probe queries (and as many random ones)")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--nprobe", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    ap.add_argument("--ef-search", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--hnsw", action="store_true", help="also HNSW (its build takes about 10 min at 1M on 2 cores)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import faiss
    from threadpoolctl import threadpool_limits

    from nirvis.gallery.index import IndexConfig, VectorIndex
    from nirvis.gallery.store import StoreState

    rng = np.random.default_rng(args.seed)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, faiss {faiss.__version__} "
          f"({faiss.omp_get_max_threads()} threads), numpy {np.__version__}; dim {args.dim}")
    cfg = IndexConfig()
    big = max(args.sizes)
    X_all = unit(rng.standard_normal((big, args.dim), dtype=np.float32))
    print(f"| gallery size | NumPy brute force, 1 query at a time (q/s) | the same, 1 BLAS thread (q/s) | "
          f"FAISS exact, 1 at a time (q/s) | FAISS exact, batch of {args.queries} (q/s) |")
    print("|---:|---:|---:|---:|---:|")
    exact_at_big = None
    for n in sorted(args.sizes):
        X = X_all[:n]
        src = rng.integers(0, n, args.queries)
        probes = unit(X[src] + 0.75 * unit(rng.standard_normal((args.queries, args.dim), dtype=np.float32)))
        brute_qps, brute_ids = rate(lambda q: np.argmax(X @ q[0])[None], probes, True)
        with threadpool_limits(1):
            brute1_qps, _ = rate(lambda q: np.argmax(X @ q[0])[None], probes, True)
        flat = VectorIndex.build(np.arange(n, dtype=np.int64), X, args.dim, cfg, StoreState(n, n, 0), kind="flat")
        flat_qps, flat_ids = rate(lambda q: flat.search(q, 1)[1][:, 0], probes, True)
        batch_qps, _ = rate(lambda q: flat.search(q, 1)[1][:, 0], probes, False)
        assert np.array_equal(brute_ids, flat_ids), "FAISS exact and NumPy disagree"
        print(f"| {n:,} | {brute_qps:,.0f} | {brute1_qps:,.0f} | {flat_qps:,.0f} | {batch_qps:,.0f} |")
        if n == big:
            exact_at_big = (X, probes, flat, flat_qps)
    X, probes, flat, flat_qps = exact_at_big
    randoms = unit(rng.standard_normal((args.queries, args.dim), dtype=np.float32))
    truth_p = flat.search(probes, 1)[1][:, 0]
    truth_r = flat.search(randoms, 1)[1][:, 0]
    cos = np.mean(np.sum(probes * X[truth_p], axis=1))
    print(f"\nat {big:,} vectors (probe queries: mean cosine {cos:.2f} with their best row):")
    print("| index | build (s) | setting | q/s, 1 at a time | recall@1, probes | recall@1, random queries |")
    print("|---|---:|---|---:|---:|---:|")
    print(f"| exact (IndexFlatIP) | - | - | {flat_qps:,.0f} | 1.000 | 1.000 |")
    ids = np.arange(big, dtype=np.int64)
    state = StoreState(big, big, 0)
    kinds = [("ivf", "nprobe", args.nprobe)] + ([("hnsw", "efSearch", args.ef_search)] if args.hnsw else [])
    for kind, knob, values in kinds:
        t = time.perf_counter()
        vi = VectorIndex.build(ids, X, args.dim, cfg, state, kind=kind)
        build = time.perf_counter() - t
        inner = faiss.extract_index_ivf(vi.index) if kind == "ivf" else faiss.downcast_index(vi.index.index)
        label = (f"IVF, {inner.nlist} cells" if kind == "ivf"
                 else f"HNSW, M={cfg.hnsw_m}, efConstruction={cfg.hnsw_ef_construction}")
        for v in values:
            if kind == "ivf":
                inner.nprobe = v
            else:
                inner.hnsw.efSearch = v
            qps, got = rate(lambda q: vi.search(q, 1)[1][:, 0], probes, True)
            rp = float(np.mean(got == truth_p))
            rr = float(np.mean(vi.search(randoms, 1)[1][:, 0] == truth_r))
            print(f"| {label} | {build:.0f} | {knob}={v}{' (default)' if v == getattr(cfg, 'ivf_nprobe' if kind == 'ivf' else 'hnsw_ef_search') else ''} "
                  f"| {qps:,.0f} | {rp:.3f} | {rr:.3f} |")


if __name__ == "__main__":
    main()
