"""Hallucination inference speed on a CPU (paper Sec. 3, Table 1): faces per second of the Y + Cb + Cr CNNs on
224x224 faces, for stock direct convolution and the faster variants of :mod:`nirvis.hallucination.fastconv`.

Variants (each in its own process, so that its peak RSS and allocator state are its own):

``direct-fp32``      stock ``nn.Conv2d`` (oneDNN), the reference of every output difference
``direct-bf16``      every convolution direct in bfloat16 (:class:`~nirvis.hallucination.fastconv.BF16Conv2d`)
``fft-fp32``         11x11 and 5x5 convolutions by FFT (overlap-save), 3x3 direct: the default of ``Hallucinator``
``fft-bf16``         as ``fft-fp32`` with bfloat16 operands of the frequency-domain products and bf16 direct 3x3
``fft11+bf16``       11x11 by FFT (fp32), 5x5 and 3x3 direct in bfloat16
``fft-fp32-mmap``    ``fft-fp32`` without :func:`~nirvis.hallucination.fastconv.keep_freed_memory` (glibc default)
``e2e-fft-fp32``     ``Hallucinator.hallucinate`` on uint8 faces: normalisation, CNNs (fft-fp32), eq. (1), RGB
                     (its input is the 8-bit normalised face, so its output is not compared)

For each: seconds per batch (best and median of ``--repeats`` after one warm-up call, which computes the
kernel spectra), faces/s, nominal FLOP per face (``2 x macs_per_pixel x 224^2``, the direct-convolution
count) and the GFLOP/s that this amounts to, peak RSS, and the output difference against ``direct-fp32``
on the same face: max |difference| in 8-bit units, PSNR (peak 1, outputs in [0, 1]) and the share of
8-bit output values (``round(255 * clip(out))``) that change. The machine's dense fp32 matrix product
speed (2048x2048 ``torch.mm``) and load average are measured in the same run.

Random weights (Kaiming-normal for PReLU, last layer scaled so that outputs vary like an image) unless
``--model`` gives a trained model folder; the input is a smooth random 224x224 texture in [0, 1].

Usage::

    python benchmarks/bench_hallucination.py --json bench_hallucination.json
    python benchmarks/bench_hallucination.py --presets paper --batches 8 --variants fft-fp32 fft-bf16
    python benchmarks/bench_hallucination.py --tiles          # time each paper layer shape per tile side
    python benchmarks/bench_hallucination.py --breakdown --threads 1 --batches 8   # where fft-fp32 spends its time
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

VARIANTS = ("direct-fp32", "direct-bf16", "fft-fp32", "fft-bf16", "fft11+bf16", "fft-fp32-mmap", "e2e-fft-fp32")
SIZE = 224


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def _nets(preset: str, model: str | None):
    """The three networks (eval) and the photometric reference: a trained model, or seeded random weights."""
    import torch
    from torch import nn

    from nirvis.hallucination.io import load_model
    from nirvis.hallucination.nets import HallucinationNets

    if model:
        m = load_model(model)
        return m.nets.eval(), m.reference
    torch.manual_seed(0)
    nets = HallucinationNets(preset).eval()
    with torch.no_grad():
        for name, net in nets.nets.items():
            convs = [m for m in net.body if isinstance(m, nn.Conv2d)]
            for conv in convs:
                nn.init.kaiming_normal_(conv.weight, a=0.25, nonlinearity="leaky_relu")
                conv.bias.zero_()
            x = _texture(1)
            h = net.body[:-1](x)
            last = convs[-1]
            std = last(h).std().item()
            last.weight.mul_(0.12 / max(std, 1e-12))       # outputs vary like an image's channel
            last.bias.fill_(0.0 if net.spec.residual else 0.5)
    return nets, {"nir_mean": 110.0, "nir_std": 45.0}


def _texture(batch: int, seed: int = 0):
    """``(batch, 1, 224, 224)`` smooth random textures in [0, 1] (face-like spectra), float32."""
    import numpy as np
    import torch
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(batch):
        im = ndimage.gaussian_filter(rng.random((SIZE, SIZE)), 3.0) + 0.3 * ndimage.gaussian_filter(
            rng.random((SIZE, SIZE)), 0.7)
        im = (im - im.mean()) / im.std() * 0.18 + 0.43
        out.append(np.clip(im, 0, 1))
    return torch.from_numpy(np.stack(out)[:, None].astype(np.float32))


def _variant_nets(nets, variant: str):
    from nirvis.hallucination.fastconv import accelerate

    if variant == "direct-fp32":
        return accelerate(nets, "direct")
    if variant == "direct-bf16":
        return accelerate(nets, "direct", direct_precision="bf16")
    if variant in ("fft-fp32", "fft-fp32-mmap", "e2e-fft-fp32"):
        return accelerate(nets, "fft")
    if variant == "fft-bf16":
        return accelerate(nets, "fft", precision="bf16", direct_precision="bf16")
    if variant == "fft11+bf16":
        return accelerate(nets, "fft", min_kernel=11, direct_precision="bf16")
    raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")


def one_run(args: argparse.Namespace) -> dict:
    """Time one (preset, variant, batch) in this process (a child) and return its record."""
    import numpy as np
    import torch

    from nirvis.hallucination.fastconv import keep_freed_memory
    from nirvis.hallucination.nets import macs_per_pixel

    run = json.loads(args.one)
    preset, variant, batch = run["preset"], run["variant"], run["batch"]
    kept = keep_freed_memory() if variant != "fft-fp32-mmap" else False
    if args.threads:
        torch.set_num_threads(args.threads)
    nets, reference = _nets(preset, args.model)
    fast = _variant_nets(nets, variant)
    x = _texture(batch)
    if variant == "e2e-fft-fp32":
        from nirvis.hallucination.blend import BlendConfig
        from nirvis.hallucination.infer import Hallucinator
        from nirvis.hallucination.io import HallucinationModel

        hal = Hallucinator(HallucinationModel(nets, reference), BlendConfig(), "fft", batch_size=batch)
        faces = np.round(x[:, 0].numpy() * 255).astype(np.uint8)

        def call():
            return hal.hallucinate(faces)
    else:
        def call():
            with torch.inference_mode():
                return fast(x)
    t0 = time.perf_counter()
    out = call()
    warm = time.perf_counter() - t0
    times, cpu = [], []
    budget = time.perf_counter() + args.max_seconds
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = call()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        if time.perf_counter() > budget:
            break
    flop = 2 * sum(macs_per_pixel(s) for s in nets.specs.values()) * SIZE * SIZE
    best = min(times)
    rec = {"preset": preset, "variant": variant, "batch": batch, "threads": torch.get_num_threads(),
           "keep_freed_memory": kept, "warmup_s": round(warm, 3), "batch_s_best": round(best, 4),
           "batch_s_median": round(float(np.median(times)), 4), "cpu_s_per_face": round(min(cpu) / batch, 4),
           "repeats": len(times), "faces_per_s": round(batch / best, 3), "gflop_per_face": round(flop / 1e9, 2),
           "effective_gflops": round(flop * batch / best / 1e9, 1),
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), "load": _load()}
    # Output difference on the first face (e2e starts from 8-bit, normalised faces: another input, not compared).
    first = None if variant == "e2e-fft-fp32" else out[:1].float().numpy()
    ref_path = Path(args.reference)
    if variant == "direct-fp32" and not ref_path.exists():
        np.save(ref_path, first)
    if first is not None and ref_path.exists():
        ref = np.load(ref_path)
        d = first.astype(np.float64) - ref
        mse = float((d ** 2).mean())
        q = lambda a: np.rint(np.clip(a, 0, 1) * 255)  # noqa: E731
        rec.update({"max_abs_diff_8bit": round(float(np.abs(d).max() * 255), 4),
                    "psnr_db": round(10 * np.log10(1.0 / mse), 1) if mse > 0 else float("inf"),
                    "changed_8bit_share": float((q(first) != q(ref)).mean())})
    return rec


def gemm_gflops() -> float:
    """Dense fp32 2048x2048 ``torch.mm`` GFLOP/s (best of 5) in this process."""
    import torch

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(5))
    return round(2 * 2048 ** 3 / best / 1e9, 1)


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def tile_sweep(args: argparse.Namespace) -> list[dict]:
    """Milliseconds per 224x224 face of each distinct paper layer shape (batch 4): stock direct, direct on
    channels-last memory, column (one output channel only), and FFT per tile side."""
    import torch

    from nirvis.hallucination.fastconv import ChannelsLastConv2d, ColumnConv2d, FFTConv2d, choose_tile, keep_freed_memory

    keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    with torch.inference_mode():
        for k, ci, co in [(11, 1, 148), (11, 148, 36), (11, 36, 36), (11, 36, 148), (11, 148, 1), (5, 1, 148),
                          (5, 148, 48), (5, 48, 48), (5, 148, 1), (3, 66, 32), (3, 32, 32), (3, 66, 1)]:
            conv = torch.nn.Conv2d(ci, co, k, padding=k // 2)
            x = torch.randn(4, ci, SIZE, SIZE)
            direct = min(_timed(lambda: conv(x)) for _ in range(2)) / 4 * 1e3
            row = {"kernel": k, "c_in": ci, "c_out": co, "chosen": choose_tile((SIZE, SIZE), k, ci, co),
                   "direct_ms": round(direct, 1), "fft_ms": {}}
            xl = x.contiguous(memory_format=torch.channels_last)  # what the accelerated layers pass on
            for label, layer in (("channels_last_ms", ChannelsLastConv2d(conv)),
                                 ("column_ms", ColumnConv2d(conv) if co == 1 else None)):
                if layer is not None:
                    layer(xl)
                    row[label] = round(min(_timed(lambda: layer(xl)) for _ in range(2)) / 4 * 1e3, 1)
            for t in (56, 60, 64, 66, 70, 72, 80, 90, 96, 128):
                if t <= k + 8:
                    continue
                f = FFTConv2d(conv, tile=t)
                f(x)
                row["fft_ms"][t] = round(min(_timed(lambda: f(x)) for _ in range(2)) / 4 * 1e3, 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def breakdown(args: argparse.Namespace) -> dict:
    """CPU seconds per 224x224 face of each paper network with ``fft-fp32`` (batch ``--batches[0]``), split
    into forward FFTs, frequency-domain products, inverse FFTs, and the rest (direct layers, copies, PReLU)."""
    import torch

    import nirvis.hallucination.fastconv as fc

    fc.keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    spent: dict[str, float] = {}

    def timed(name, fn):
        def wrapper(*a, **k):
            t0 = time.process_time()
            try:
                return fn(*a, **k)
            finally:
                spent[name] = spent.get(name, 0.0) + time.process_time() - t0
        return wrapper

    fc._rfft2_lead = timed("fft_forward", fc._rfft2_lead)
    fc._irfft2_tiles = timed("fft_inverse", fc._irfft2_tiles)
    fc.FFTConv2d._product = timed("products", fc.FFTConv2d._product)
    nets, _ = _nets("paper", args.model)
    fast = _variant_nets(nets, "fft-fp32")
    batch = args.batches[0]
    x = _texture(batch)
    out = {"batch": batch, "threads": torch.get_num_threads(), "load": _load(), "nets": {}}
    with torch.inference_mode():
        for name, net in fast.nets.items():
            net(x)  # spectra
            spent.clear()
            t0 = time.process_time()
            net(x)
            total = time.process_time() - t0
            parts = {k: round(v / batch, 4) for k, v in spent.items()}
            parts["other"] = round(total / batch - sum(parts.values()), 4)
            out["nets"][name] = {"cpu_s_per_face": round(total / batch, 4), **parts}
            print(json.dumps({name: out["nets"][name]}), flush=True)
    return out


def _child(extra: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *extra], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}",
                "args": extra}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _table(rows: list[dict]) -> str:
    head = ("| preset | variant | batch | faces/s | s/face (median) | CPU s/face | eff. GFLOP/s | peak RSS MB | "
            "max diff (8-bit) | PSNR dB | changed 8-bit | load |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['args']} | error: {r['error']} |")
            continue
        lines.append(f"| {r['preset']} | {r['variant']} | {r['batch']} | {r['faces_per_s']:.2f} | "
                     f"{r['batch_s_median'] / r['batch']:.3f} | {r['cpu_s_per_face']:.3f} | {r['effective_gflops']:.0f} | "
                     f"{r['peak_rss_mb']:.0f} | {r.get('max_abs_diff_8bit', float('nan')):.3g} | "
                     f"{r.get('psnr_db', float('nan')):.1f} | {100 * r.get('changed_8bit_share', float('nan')):.2f}% | "
                     f"{r['load']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["paper", "cpu"])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--repeats", type=int, default=3, help="timed calls after the warm-up (fewer past --max-seconds)")
    ap.add_argument("--max-seconds", type=float, default=60.0, help="stop repeating a run after this long")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--model", default=None, help="trained model folder instead of random weights (its preset)")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--tiles", action="store_true", help="time each paper layer shape per tile side instead")
    ap.add_argument("--breakdown", action="store_true", help="split fft-fp32's CPU time per network into FFTs, "
                    "products and the rest instead")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--reference", help=argparse.SUPPRESS)
    ap.add_argument("--gemm", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one_run(args)))
        return
    if args.gemm:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        print(json.dumps({"gemm_gflops": gemm_gflops()}))
        return
    if args.breakdown:
        res = breakdown(args)
        if args.json:
            args.json.write_text(json.dumps(res, indent=2) + "\n")
        return
    if args.tiles:
        rows = tile_sweep(args)
        if args.json:
            args.json.write_text(json.dumps({"tiles": rows, "load": _load()}, indent=2) + "\n")
        return
    common = ["--repeats", str(args.repeats), "--max-seconds", str(args.max_seconds)]
    common += ["--threads", str(args.threads)] if args.threads else []
    common += ["--model", args.model] if args.model else []
    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                          "load_start": _load()},
              "gemm_gflops_start": _child(["--gemm"] + common).get("gemm_gflops"), "runs": []}
    presets = ["model"] if args.model else args.presets
    variants = ["direct-fp32"] + [v for v in args.variants if v != "direct-fp32"]
    with tempfile.TemporaryDirectory() as tmp:
        for preset in presets:
            ref = str(Path(tmp) / f"{preset}.npy")
            for batch in args.batches:
                for variant in variants:
                    rec = _child(["--one", json.dumps({"preset": preset, "variant": variant, "batch": batch}),
                                  "--reference", ref] + common)
                    result["runs"].append(rec)
                    print(json.dumps(rec), file=sys.stderr, flush=True)
    result["gemm_gflops_end"] = _child(["--gemm"] + common).get("gemm_gflops")
    result["machine"]["load_end"] = _load()
    import torch

    result["machine"]["torch"] = torch.__version__
    print(f"dense fp32 GEMM (2048^2 torch.mm): {result['gemm_gflops_start']} GFLOP/s at the start, "
          f"{result['gemm_gflops_end']} at the end; load {result['machine']['load_start']} -> "
          f"{result['machine']['load_end']}\n")
    print(_table(result["runs"]))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
