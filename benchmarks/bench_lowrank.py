"""Speed of the low-rank transform at CASIA NIR-VIS 2.0 scale, against a per-class-SVD
implementation and metric-learn's ITML and LMNN.

Data (synthetic, seed 0): 8,750 vectors of dimension 1,024 in 357 classes of 20-30 vectors (about
25), each class on its own random 10-dimensional subspace plus a component shared by all classes,
half of each class shifted by one common vector (a second "spectrum"), plus noise; rows L2-normalised
like deep features.

Every measurement runs in its own subprocess (so that its peak RSS is its own, and a timeout can
stop it):

- ``lowrank-float32`` / ``lowrank-float64``: ``LowRankTransform(n_components=1024, max_iter=100,
  tol=0)`` fit (PCA included), then the float64 objective of the learned ``T`` recomputed from
  scratch, to check the float32 run's recorded objective. The descent is profiled: evaluations of
  ``f`` per iteration (line-search trials), ``d x d`` eigen-decompositions per iteration, and the
  wall-clock and CPU time per iteration of each phase (``gradient``, ``direction``: the products that
  make trial steps cheap, ``trial``: one evaluation of ``f``, ``accept``, ``refresh``), with the
  load average, so that runs on a busy machine can be compared by the work they did;
- ``svd-reference``: one evaluation of ``f`` and its subgradient with one thin SVD per class and one
  for the whole set (``lowrank_subgradient(method="svd")``), against the same evaluation with the
  Gram method (``method="gram"``), both in float64 at ``T = I``;
- ``itml`` / ``lmnn``: the metric-learn baselines on the same data (same PCA), with capped
  iterations (``--itml-max-iter``, ``--lmnn-max-iter``) and ``--timeout`` seconds each.

Usage::

    python benchmarks/bench_lowrank.py                 # everything, prints JSON lines and a summary
    python benchmarks/bench_lowrank.py --only lowrank-float32 --json out.json
    python benchmarks/bench_lowrank.py --blas-threads 1 --evals 1 --timeout 900   # docs/BENCHMARKS.md

On a machine shared with other jobs, multi-threaded OpenBLAS slows down by large factors (see
docs/BENCHMARKS.md); ``--blas-threads 1`` gives the steadier numbers there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

N, D, N_CLASSES = 8750, 1024, 357
JOBS = ("lowrank-float32", "lowrank-float64", "svd-reference", "itml", "lmnn")


def casia_like(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``X`` (8750, 1024) float64 with unit rows, ``y`` (8750,) labels of 357 classes of 20-30."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(20, 31, N_CLASSES)
    sizes = np.round(sizes * N / sizes.sum()).astype(int)
    sizes[-1] += N - sizes.sum()
    common = rng.standard_normal((D, 40)) / np.sqrt(D)
    shift = rng.standard_normal(D) / np.sqrt(D)
    rows = []
    for s in sizes:
        B = np.linalg.qr(rng.standard_normal((D, 10)))[0]
        Xc = rng.standard_normal((s, 10)) @ B.T + rng.standard_normal((s, 40)) @ common.T
        Xc[s // 2:] += 2.0 * shift
        rows.append(Xc + 0.05 * rng.standard_normal((s, D)) / np.sqrt(D) * 10)
    X = np.vstack(rows)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X, np.repeat(np.arange(N_CLASSES), sizes)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


class _PhaseProfiler:
    """Counts and times (wall and CPU) the phases of the low-rank descent, by wrapping the methods of
    ``nirvis.embedding.lowrank._Problem`` and its eigen-decomposition helpers while active."""

    METHODS = ("point", "gradient", "direction", "trial", "accept", "refresh")
    HELPERS = ("_eigh", "_eigvalsh")

    def __init__(self, module, d: int) -> None:
        self.module, self.d = module, d
        self.calls: dict[str, int] = {}
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._saved: list[tuple[object, str, object]] = []

    def _wrap(self, owner, name: str, key_of) -> None:
        fn = getattr(owner, name, None)
        if fn is None:
            return
        prof = self

        def wrapped(*args, **kwargs):
            key = key_of(args)
            w0, c0 = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                prof.wall[key] = prof.wall.get(key, 0.0) + time.perf_counter() - w0
                prof.cpu[key] = prof.cpu.get(key, 0.0) + time.process_time() - c0
                prof.calls[key] = prof.calls.get(key, 0) + 1

        self._saved.append((owner, name, fn))
        setattr(owner, name, wrapped)

    def __enter__(self) -> "_PhaseProfiler":
        for name in self.METHODS:
            self._wrap(self.module._Problem, name, lambda args, name=name: name)
        for name in self.HELPERS:
            # only the d x d decompositions (the class Grams are 20-30 wide)
            self._wrap(self.module, name, lambda args, name=name: name.lstrip("_") + (
                "_dxd" if args and getattr(args[0], "shape", (0,))[-1] == self.d else "_class"))
        return self

    def __exit__(self, *exc) -> None:
        for owner, name, fn in reversed(self._saved):
            setattr(owner, name, fn)
        self._saved.clear()

    def summary(self, iterations: int) -> dict:
        it = max(iterations, 1)
        return {
            "evaluations_per_iteration": self.calls.get("trial", 0) / it,
            "calls_per_iteration": {k: round(v / it, 3) for k, v in sorted(self.calls.items())},
            "phase_wall_s_per_iteration": {k: round(v / it, 4) for k, v in sorted(self.wall.items())},
            "phase_cpu_s_per_iteration": {k: round(v / it, 4) for k, v in sorted(self.cpu.items())},
        }


def child(job: str, args: argparse.Namespace) -> dict:
    """Run one measurement in this process, with ``--blas-threads`` BLAS threads if given."""
    from threadpoolctl import threadpool_info, threadpool_limits

    import nirvis.embedding  # noqa: F401  (load every BLAS library before limiting their threads)

    with threadpool_limits(limits=args.blas_threads, user_api="blas"):
        out = _measure(job, args)
        out["blas_threads"] = sorted({p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"})
    return out


def _measure(job: str, args: argparse.Namespace) -> dict:
    from nirvis.embedding import ITMLEmbedding, LMNNEmbedding, LowRankTransform, lowrank_objective, lowrank_subgradient

    X, y = casia_like(0)
    out: dict = {"job": job, "n": int(X.shape[0]), "d": int(X.shape[1]), "classes": int(np.unique(y).size)}
    if job.startswith("lowrank"):
        from nirvis.embedding import lowrank as lowrank_module

        dtype = job.split("-")[1]
        model = LowRankTransform(n_components=D, max_iter=args.iters, tol=0.0, dtype=dtype)
        out["loadavg_before"] = os.getloadavg()
        t0, c0 = time.perf_counter(), time.process_time()
        with warnings.catch_warnings(), _PhaseProfiler(lowrank_module, D) as prof:
            warnings.simplefilter("ignore")
            model.fit(X, y)
        out["fit_s"] = time.perf_counter() - t0
        out["fit_cpu_s"] = time.process_time() - c0
        out["loadavg_after"] = os.getloadavg()
        h = model.objective_history_
        out.update(iterations=int(model.n_iter_), accepted_steps=len(h) - 1, stop=model.stop_reason_,
                   f_initial=float(h[0]), f_final_recorded=float(h[-1]))
        out.update(prof.summary(int(model.n_iter_)))
        Y = (X - model.mean_) @ model.pca_components_.T
        t1 = time.perf_counter()
        out["f_final_float64"] = float(lowrank_objective(model.transform_matrix_, Y, y))
        out["f_eval_float64_s"] = time.perf_counter() - t1
        out["f_rel_error"] = abs(out["f_final_recorded"] - out["f_final_float64"]) / abs(out["f_final_float64"])
        from nirvis.embedding.base import fit_pca

        t2 = time.perf_counter()
        fit_pca(X, D)  # the PCA part of the fit, timed alone
        out["pca_s"] = time.perf_counter() - t2
        out["descent_s"] = out["fit_s"] - out["pca_s"]
        out["per_iteration_s"] = out["descent_s"] / max(out["iterations"], 1)
        out["per_iteration_cpu_s"] = out["fit_cpu_s"] / max(out["iterations"], 1)  # PCA included
    elif job == "svd-reference":
        Xc = X - X.mean(axis=0)
        T = np.eye(D)
        for method in ("gram", "svd"):
            times = []
            for _ in range(args.evals):
                t0 = time.perf_counter()
                f, _ = lowrank_subgradient(T, Xc, y, method=method)
                times.append(time.perf_counter() - t0)
            out[f"{method}_eval_s"] = min(times)
            out[f"{method}_f"] = float(f)
        out["ratio_svd_over_gram"] = out["svd_eval_s"] / out["gram_eval_s"]
    elif job in ("itml", "lmnn"):
        if job == "itml":
            model = ITMLEmbedding(n_components=D, max_iter=args.itml_max_iter, n_constraints=args.itml_constraints,
                                  random_state=0)
        else:
            model = LMNNEmbedding(n_components=D, max_iter=args.lmnn_max_iter, random_state=0)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(X, y)
        out["fit_s"] = time.perf_counter() - t0
        out["n_iter"] = int(model.n_iter_)
        out["params"] = {k: v for k, v in model.get_params().items() if v is not None}
    else:
        raise ValueError(f"unknown job {job!r}; valid: {', '.join(JOBS)}")
    out["peak_rss_mib"] = _peak_rss_mib()
    return out


def run_job(job: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", job, "--iters", str(args.iters),
           "--evals", str(args.evals), "--itml-max-iter", str(args.itml_max_iter),
           "--itml-constraints", str(args.itml_constraints), "--lmnn-max-iter", str(args.lmnn_max_iter)]
    if args.blas_threads:
        cmd += ["--blas-threads", str(args.blas_threads)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"job": job, "timed_out": True, "timeout_s": args.timeout}
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return {"job": job, "failed": True, "error": lines[-1] if lines else f"exit code {proc.returncode}",
                "process_wall_s": wall}
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["process_wall_s"] = wall
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=",".join(JOBS), help=f"comma-separated subset of {', '.join(JOBS)}")
    ap.add_argument("--iters", type=int, default=100, help="low-rank iterations (default 100)")
    ap.add_argument("--evals", type=int, default=2, help="repetitions of the svd/gram evaluation (min kept)")
    ap.add_argument("--itml-max-iter", type=int, default=5, help="ITML sweeps over the constraints")
    ap.add_argument("--itml-constraints", type=int, default=7140, help="ITML pairs of each kind (20 per class)")
    ap.add_argument("--lmnn-max-iter", type=int, default=50, help="LMNN gradient steps")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per measurement before it is stopped")
    ap.add_argument("--blas-threads", type=int, default=None,
                    help="limit BLAS threads (default: the library's, here one per core)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args)))
        return 0

    info = {"python": platform.python_version(), "numpy": np.__version__, "cpus": os.cpu_count(),
            "machine": platform.machine(), "loadavg_start": os.getloadavg()}
    results = {}
    for job in [j for j in args.only.split(",") if j]:
        print(f"running {job} ...", flush=True)
        results[job] = run_job(job, args)
        print(json.dumps(results[job]), flush=True)
    info["loadavg_end"] = os.getloadavg()

    lr = results.get("lowrank-float32") or results.get("lowrank-float64")
    summary = {}
    if lr and "fit_s" in lr:
        for job in ("itml", "lmnn"):
            r = results.get(job, {})
            if "fit_s" in r:
                summary[f"{job}_fit_over_lowrank_fit"] = r["fit_s"] / lr["fit_s"]
        sv = results.get("svd-reference", {})
        if "svd_eval_s" in sv:
            summary["svd_eval_over_lowrank_iteration"] = sv["svd_eval_s"] / lr["per_iteration_s"]
    out = {"info": info, "results": results, "summary": summary}
    print(json.dumps({"info": info, "summary": summary}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
