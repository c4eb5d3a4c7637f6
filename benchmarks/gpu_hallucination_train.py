"""Training throughput of the paper-preset hallucination CNNs on a CUDA GPU (paper Sec. 3, Table 1).

Times full optimiser steps (forward, per-channel MSE, backward, Adam) of the three paper networks on
synthetic 40x40 patches already on the GPU, for fp32 and mixed precision (bf16 autocast, or fp16 with a
GradScaler where bf16 is unsupported) at a few batch sizes, and one short end-to-end run of
:func:`nirvis.hallucination.train.train_hallucination` on a synthetic store (data loading included).
Prints one JSON object with the GPU name. Runs in under 3 minutes; exits with a message when CUDA is
absent.

Usage::

    python benchmarks/gpu_hallucination_train.py [--seconds 10] [--batch 64 --batch 256]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path


def time_steps(batch: int, amp: str, seconds: float, channels_last: bool = False) -> dict:
    """Optimiser steps per second of the paper networks at ``batch`` patches (data already on the GPU)."""
    import torch

    from nirvis.hallucination.nets import HallucinationNets

    torch.manual_seed(0)
    dev = torch.device("cuda")
    nets = HallucinationNets("paper").to(dev)
    if channels_last:
        nets = nets.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(nets.parameters(), lr=1e-5, betas=(0.9, 0.999), eps=1e-8)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    x = torch.rand(batch, 1, 40, 40, device=dev)
    t = torch.rand(batch, 3, 40, 40, device=dev)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=dtype) if dtype is not None else nullcontext():
            out = nets(x)
        loss = (out.float() - t).square().mean(dim=(0, 2, 3)).sum()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(5):  # warm-up: cuDNN algorithm choice, allocator
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(10):
            step()
        n += 10
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return {"batch": batch, "amp": amp, "channels_last": channels_last, "steps": n,
            "steps_per_s": round(n / dt, 2), "patches_per_s": round(n * batch / dt, 1),
            "peak_gpu_mem_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)}


def synthetic_store(path: Path, people: int = 12, pairs: int = 2048) -> Path:
    """A complete patch store of random 40x40 NIR patches (Y = 255 - NIR, Cb = NIR / 2, Cr = NIR / 3)."""
    import h5py
    import numpy as np

    from nirvis.mining.store import FORMAT, VERSION, append_pairs, create_store

    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as h5:
        create_store(h5, 40, 4)
        for pi in range(people):
            nir = rng.integers(0, 256, (pairs, 40, 40), dtype=np.uint8)
            append_pairs(h5, {"nir": nir, "y": 255 - nir, "cb": nir // 2, "cr": nir // 3,
                              "person": np.full(pairs, pi, np.int32), "nir_id": np.array([b"n"] * pairs),
                              "vis_id": np.array([b"v"] * pairs), "loc": np.zeros((pairs, 2), np.int16),
                              "s1": np.ones(pairs, np.float32), "s2": np.ones(pairs, np.float32),
                              "flip": np.zeros(pairs, bool)})
        ref = {"nir_id": "n", "vis_id": "v", "nir_mean": 100.0, "nir_std": 50.0,
               "vis_mean": [100.0] * 3, "vis_std": [50.0] * 3}
        for k, v in (("people", [f"p{i}" for i in range(people)]), ("config", {}), ("reference", ref),
                     ("summary", {}), ("meta", {})):
            h5.attrs[k] = json.dumps(v)
        h5.attrs["format"], h5.attrs["version"], h5.attrs["complete"] = FORMAT, VERSION, True
    return path


def end_to_end(seconds: float) -> dict:
    """Short :func:`train_hallucination` runs (AMP, batch 64) on a synthetic store: throughput with data loading."""
    from nirvis.hallucination.io import load_model
    from nirvis.hallucination.train import TrainConfig, train_hallucination

    with tempfile.TemporaryDirectory() as tmp:
        store = synthetic_store(Path(tmp) / "s.h5")
        res = {}
        for workers in (0, 2):
            cfg = TrainConfig(preset="paper", epochs=100, batch_size=64, max_seconds=seconds, num_workers=workers,
                              val_max_patches=512)
            s = train_hallucination(store, Path(tmp) / f"model{workers}", cfg)
            model = load_model(Path(tmp) / f"model{workers}")
            res[f"workers_{workers}"] = {"steps": s["steps"], "patches_per_s": s["patches_per_s"],
                                         "train_s": s["train_s"], "device": s["device"], "val": s["val"],
                                         "model_loads": model.fingerprint == s["fingerprint"]}
        return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0, help="timed seconds per configuration")
    ap.add_argument("--batch", type=int, action="append", default=None, help="batch sizes (default 64, 256)")
    ap.add_argument("--no-end-to-end", action="store_true", help="skip the train_hallucination run")
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        sys.exit("gpu_hallucination_train.py: CUDA is not available (torch "
                 f"{torch.__version__}, built with CUDA {torch.version.cuda}); run it on a machine with an NVIDIA GPU")
    torch.backends.cudnn.benchmark = True
    amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    report = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
              "cudnn": torch.backends.cudnn.version(), "preset": "paper", "patch": 40, "runs": []}
    for batch in args.batch or [64, 256]:
        for mode in ("fp32", amp):
            report["runs"].append(time_steps(batch, mode, args.seconds))
            print(json.dumps(report["runs"][-1]), file=sys.stderr, flush=True)
    report["runs"].append(time_steps(256, amp, args.seconds, channels_last=True))
    if not args.no_end_to_end:
        report["end_to_end_batch64_amp"] = end_to_end(min(30.0, 3 * args.seconds))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
