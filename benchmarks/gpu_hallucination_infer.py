"""Inference throughput of the paper-preset hallucination CNNs on a CUDA GPU (paper Sec. 3, Table 1).

Times the forward pass of the Y + Cb + Cr paper networks on 224x224 faces already on the GPU, with cuDNN
(``cudnn.benchmark`` on), for fp32 (TF32 off and on), bf16 autocast, and channels-last memory, at a few
batch sizes; also the FFT convolution of :mod:`nirvis.hallucination.fastconv` (``torch.fft`` on the GPU)
in fp32. For each: faces/s, effective GFLOP/s (nominal direct-convolution FLOP), and the output
difference against fp32 (TF32 off) on the same faces (max |difference| in 8-bit units, PSNR with peak 1).
Prints one JSON object with the GPU name. Runs in well under 2 minutes; exits with a message (code 2)
when CUDA is absent.

Usage::

    python benchmarks/gpu_hallucination_infer.py [--seconds 3] [--batch 8 --batch 64]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import nullcontext

SIZE = 224


def _flop_per_face(nets) -> float:
    from nirvis.hallucination.nets import macs_per_pixel

    return 2.0 * sum(macs_per_pixel(s) for s in nets.specs.values()) * SIZE * SIZE


def time_forward(model, x, *, amp: bool, seconds: float) -> tuple[float, "object"]:
    """Best seconds per forward pass over about ``seconds`` of repeats (after warm-up), and the output."""
    import torch

    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if amp else nullcontext()
    with torch.inference_mode(), ctx:
        for _ in range(2):  # warm-up: cuDNN autotuning, FFT plans, kernel spectra
            out = model(x)
        torch.cuda.synchronize()
        best, t_end = float("inf"), time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = model(x)
            stop.record()
            torch.cuda.synchronize()
            best = min(best, start.elapsed_time(stop) / 1e3)
    return best, out.float()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0, help="timed repeats per configuration")
    ap.add_argument("--batch", type=int, action="append", default=None, help="batch sizes (default 1, 8, 64)")
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu_hallucination_infer: CUDA is not available (torch.cuda.is_available() is False); "
              "run this on a machine with an NVIDIA GPU", file=sys.stderr)
        return 2
    from nirvis.hallucination.fastconv import accelerate
    from nirvis.hallucination.nets import HallucinationNets

    torch.backends.cudnn.benchmark = True
    dev = torch.device("cuda")
    torch.manual_seed(0)
    nets = HallucinationNets("paper").eval().to(dev)
    flop = _flop_per_face(nets)
    batches = args.batch or [1, 8, 64]
    t0 = time.perf_counter()
    result = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
              "preset": "paper", "gflop_per_face": round(flop / 1e9, 1), "runs": []}
    fft_nets = accelerate(nets, "fft", policy="all")
    cl_nets = accelerate(nets, "direct").to(memory_format=torch.channels_last)
    for batch in batches:
        x = torch.rand(batch, 1, SIZE, SIZE, device=dev)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        _, ref = time_forward(nets, x[:1], amp=False, seconds=0.2)
        configs = [("fp32", nets, False, False), ("tf32", nets, False, True), ("bf16-autocast", nets, True, True),
                   ("bf16-autocast+channels_last", cl_nets, True, True), ("fft-fp32", fft_nets, False, False)]
        for name, model, amp, tf32 in configs:
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
            xi = x.contiguous(memory_format=torch.channels_last) if "channels_last" in name else x
            try:
                best, out = time_forward(model, xi, amp=amp, seconds=args.seconds)
            except RuntimeError as exc:  # e.g. out of memory at a large batch
                result["runs"].append({"config": name, "batch": batch, "error": str(exc).splitlines()[0]})
                torch.cuda.empty_cache()
                continue
            d = (out[:1] - ref).double()
            mse = float((d ** 2).mean())
            result["runs"].append({
                "config": name, "batch": batch, "faces_per_s": round(batch / best, 1),
                "ms_per_batch": round(best * 1e3, 2), "effective_tflops": round(flop * batch / best / 1e12, 2),
                "max_abs_diff_8bit": round(float(d.abs().max()) * 255, 4),
                "psnr_db": round(10 * torch.log10(torch.tensor(1.0 / mse)).item(), 1) if mse > 0 else None,
                "peak_mem_mb": round(torch.cuda.max_memory_allocated() / 2**20)})
            print(json.dumps(result["runs"][-1]), file=sys.stderr, flush=True)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
