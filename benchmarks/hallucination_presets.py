"""Hallucination presets on a CPU: validation loss against training time (paper Sec. 3; choosing ``cpu``).

Trains each run (a preset, optionally with another learning rate or network spec) for the same budget of
training seconds on a real patch store, validating on a fixed subset of the validation people's patches
every ``--val-every`` seconds of training (validation time is not counted). Each run is a separate
process, so that its peak RSS (``resource.getrusage``) and threads are its own. Writes
``<out>.json`` (curves, patches/s, peak RSS, machine load) and ``<out>.png`` (validation MSE, summed over
Y, Cb and Cr, against training seconds).

Usage::

    python benchmarks/hallucination_presets.py --store /tmp/mine2/fold0.h5 --budget 120 \\
        --run paper --run cpu --run cpu@1e-4 \\
        --spec 'cpu-k3={"y": [6, 32, 16, 3, true], "cb": [4, 16, 8, 3], "cr": [4, 16, 8, 3]}' --run cpu-k3@1e-3

A run is ``NAME[@LR]``: a preset of :data:`nirvis.hallucination.nets.PRESETS` or a ``--spec`` name
(``[layers, wide, narrow, kernel, residual]`` per channel), at its default learning rate
(:data:`nirvis.hallucination.train.PRESET_LR`, 1e-3 for a ``--spec``) or ``LR``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def _specs(defn: dict | None):
    from nirvis.hallucination.nets import ChannelNetSpec

    if defn is None:
        return None
    return {c: ChannelNetSpec(*v) for c, v in defn.items()}


def one_run(args: argparse.Namespace) -> dict:
    """Train one run in this process and return its curve (called in a child process)."""
    import torch

    from nirvis.hallucination.nets import HallucinationNets, macs_per_pixel
    from nirvis.hallucination.train import TrainConfig, train_hallucination

    run = json.loads(args.one)
    specs = _specs(run["spec"])
    preset = run["preset"] if specs is None else "paper"
    cfg = TrainConfig(preset=preset, specs=specs, lr=run["lr"], epochs=1000, batch_size=args.batch_size,
                      seed=args.seed, max_seconds=args.budget, val_every_seconds=args.val_every,
                      val_max_patches=args.val_patches, val_at_start=True, log_every=5, threads=args.threads,
                      num_workers=0)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        summary = train_hallucination(args.store, Path(tmp) / "model", cfg)
        wall = time.perf_counter() - t0
        hist = json.loads((Path(tmp) / "model" / "history.json").read_text())
    specs_used = cfg.net_specs()
    return {
        "run": run["name"], "lr": cfg.resolved_lr(), "specs": cfg.to_dict()["specs"],
        "macs_per_pixel": {c: macs_per_pixel(s) for c, s in specs_used.items()},
        "params": sum(p.numel() for p in HallucinationNets(specs_used).parameters()),
        "steps": summary["steps"], "samples": summary["samples"], "train_s": summary["train_s"],
        "wall_s": round(wall, 1), "patches_per_s": summary["patches_per_s"],
        "curve": [{"train_s": e["train_s"], "step": e["step"], "samples": e["samples"], **e["val"],
                   "sum": sum(e["val"].values())} for e in hist["val"]],
        "train_log": [{"train_s": e["train_s"], "step": e["step"], "sum": sum(e["train"].values())} for e in hist["log"]],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "torch_threads": torch.get_num_threads(), "load_before": run["load"], "load_after": _load(),
    }


def plot(results: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nirvis._io import atomic_write

    fig, axes = plt.subplots(1, 4, figsize=(17, 4.2), dpi=100)
    for r in results:
        t = [e["train_s"] for e in r["curve"]]
        for ax, key in zip(axes, ("sum", "y", "cb", "cr")):
            ax.plot(t, [e[key] for e in r["curve"]], marker="o", ms=3,
                    label=f"{r['run']} (lr {r['lr']:g}, {r['patches_per_s']:.0f} patches/s)")
    for ax, key in zip(axes, ("Y + Cb + Cr", "Y", "Cb", "Cr")):
        ax.set_xlabel("training time (s)")
        ax.set_ylabel(f"validation MSE, {key}")
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png"))
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default="/tmp/mine2/fold0.h5")
    ap.add_argument("--budget", type=float, default=120.0, help="training seconds per run")
    ap.add_argument("--val-every", type=float, default=30.0, help="validate every this many training seconds")
    ap.add_argument("--val-patches", type=int, default=256, help="validation patches (fixed, evenly spaced)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--run", action="append", default=None, help="NAME[@LR], repeatable (default: paper, cpu)")
    ap.add_argument("--spec", action="append", default=[], help='NAME={"y": [layers, wide, narrow, kernel, residual], ...}')
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "hallucination_presets",
                    help="output stem: writes OUT.json and OUT.png")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one_run(args)))
        return
    from nirvis.hallucination.nets import PRESETS

    defs = {}
    for s in args.spec:
        name, _, text = s.partition("=")
        defs[name] = json.loads(text)
    results = []
    for item in args.run or ["paper", "cpu"]:
        name, _, lr = item.partition("@")
        if name not in PRESETS and name not in defs:
            ap.error(f"--run {item!r}: {name!r} is neither a preset ({sorted(PRESETS)}) nor a --spec")
        run = {"name": item, "preset": name, "spec": defs.get(name),
               "lr": float(lr) if lr else (1e-3 if name in defs else None), "load": _load()}
        cmd = [sys.executable, __file__, "--one", json.dumps(run)] + [
            a for k, v in (("--store", args.store), ("--budget", args.budget), ("--val-every", args.val_every),
                           ("--val-patches", args.val_patches), ("--batch-size", args.batch_size),
                           ("--seed", args.seed), ("--threads", args.threads)) if v is not None for a in (k, str(v))]
        print(f"[{time.strftime('%H:%M:%S')}] {item}: load {run['load']}", file=sys.stderr, flush=True)
        p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
        if p.returncode != 0:
            sys.exit(f"run {item} failed:\n{p.stderr[-3000:]}")
        r = json.loads(p.stdout.strip().splitlines()[-1])
        results.append(r)
        print(f"  {r['steps']} steps, {r['patches_per_s']:.1f} patches/s, val sum "
              f"{r['curve'][0]['sum']:.4f} -> {r['curve'][-1]['sum']:.4f}, peak RSS {r['peak_rss_mb']} MB, "
              f"load after {r['load_after']}", file=sys.stderr, flush=True)
    import torch

    report = {"store": str(Path(args.store).resolve()), "budget_s": args.budget, "val_every_s": args.val_every,
              "val_patches": args.val_patches, "batch_size": args.batch_size, "seed": args.seed,
              "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                          "torch": torch.__version__, "load_at_end": _load()},
              "command": " ".join([Path(sys.executable).name] + sys.argv), "runs": results}
    from nirvis._io import atomic_write_json

    atomic_write_json(args.out.with_suffix(".json"), report)
    plot(results, args.out.with_suffix(".png"),
         f"hallucination presets on {os.cpu_count()} CPUs, {args.budget:.0f} s of training each, "
         f"{args.val_patches} validation patches; store {Path(args.store).name}")
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.png')}", file=sys.stderr)


if __name__ == "__main__":
    main()
