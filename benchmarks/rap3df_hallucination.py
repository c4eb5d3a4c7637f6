"""Hallucination on RAP3DF (paper Sec. 5.2): image quality, recognition (raw / H / LR / H+LR), alpha sweep.

For every protocol split K, a model is trained on the patch store of K's training people only (mined with
``nirvis mine --split train-of-fold-K``), then:

- **Recognition:** rank-1 and VR@FAR for ``raw``, ``LR``, ``H`` and ``H+LR``, mean ± std over the splits.
  For ``H``/``H+LR`` the split's NIR faces (its training people's and its probes) are hallucinated by the
  split's model before the dlib network sees them; VIS faces are unchanged.
- **Image quality** (test people only): PSNR and SSIM, against the simultaneous VIS frame of each probe
  (aligned on its own landmarks, normalised to the store's reference), of the normalised NIR as it is,
  the raw CNN luminance, the blended luminance and the blended RGB, inside the face box :data:`FACE_BOX`.
- **Alpha sweep** (``--sweep-splits``; ``--sweep-only`` skips the rest): rank-1 and VR@1% of ``H`` for alpha 0,
  0.1, ... 1 and both readings of eq. (1), on the probes of those splits.

Usage::

    python benchmarks/rap3df_hallucination.py --stores '/tmp/h/split{k}.h5' --models /tmp/h/models \\
        --preset cpu --epochs 10 [--max-seconds 150] --json /tmp/h/result.json [--splits 0-9] [--sweep-splits 0,1,2]

Models already in ``--models/<split name>/`` are reused (training is resumable); features come from the
feature cache.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from nirvis.data import find_data_root
from nirvis.datasets import load_protocol
from nirvis.errors import NirvisError
from nirvis.evaluation.configs import embedding_fitter
from nirvis.evaluation.image_quality import psnr_ssim
from nirvis.evaluation.metrics import evaluate_identification, mean_std
from nirvis.evaluation.protocols import SplitConfig, evaluate_splits
from nirvis.faces.align import valid_mask
from nirvis.faces.normalize import match_mean_std
from nirvis.features.cache import FeatureCache
from nirvis.hallucination.blend import BlendConfig
from nirvis.hallucination.evaluate import hallucinated_features
from nirvis.hallucination.infer import Hallucinator
from nirvis.hallucination.io import load_model
from nirvis.hallucination.train import TrainConfig, train_hallucination
from nirvis.pipeline import Recognizer


def parse_ks(text: str, n: int) -> list[int]:
    if not text:
        return []
    out: list[int] = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b) + 1)) if b else [int(a)]
    bad = [k for k in out if not 0 <= k < n]
    if bad:
        raise SystemExit(f"split indices {bad} out of 0..{n - 1}")
    return out


#: Face region of the 224x224 template used for PSNR/SSIM, (x0, y0, x1, y1) pixels: the eyes are at y = 92,
#: the mouth at y = 163. Outside it lie hair and background, which the IR frames of RAP3DF have removed.
FACE_BOX = (56, 56, 168, 196)


def face_box_mask(size: int = 224) -> np.ndarray:
    m = np.zeros((size, size), bool)
    x0, y0, x1, y1 = FACE_BOX
    m[y0:y1, x0:x1] = True
    return m


def image_quality(rec: Recognizer, split, all_samples, model_path: Path, blend: BlendConfig, method: str) -> dict:
    """PSNR/SSIM of NIR, raw CNN Y, blended Y and RGB against each probe's simultaneous VIS frame."""
    model = load_model(model_path)
    ref = model.reference
    hal = Hallucinator(model, blend, method)
    by_id = {s.capture_id: s for s in all_samples}
    vis_samples = {}
    for s in split.probes:
        if s.pair_id is not None:
            vis_samples[s.capture_id] = s.pair_id
    rows = {k: [] for k in ("nir", "y_raw", "y", "rgb")}
    n_pairs = 0
    for p in split.probes:
        vid = vis_samples.get(p.capture_id)
        if vid is None:
            continue
        v = by_id.get(vid)
        if v is None:
            continue
        try:
            nf, vf = rec.align_sample(p), rec.align_sample(v)
        except (NirvisError, OSError):
            continue
        nmask = valid_mask(nf.matrix, nf.meta["source_shape"])
        vmask = valid_mask(vf.matrix, vf.meta["source_shape"])
        out = hal.hallucinate(nf.image[None], nmask[None])
        vis = match_mean_std(vf.image, np.array(ref["vis_mean"]), np.array(ref["vis_std"]), mask=vmask)
        vis_y = cv2.cvtColor(vis, cv2.COLOR_RGB2YCrCb)[..., 0]
        m = nmask & vmask & face_box_mask(nmask.shape[0])
        rows["nir"].append(psnr_ssim(out.nir[0], vis_y, m))
        rows["y_raw"].append(psnr_ssim(np.clip(out.y_raw[0], 0, 1) * 255, vis_y, m))
        rows["y"].append(psnr_ssim(out.y[0] * 255, vis_y, m))
        rows["rgb"].append(psnr_ssim(out.rgb[0], vis, m))
        n_pairs += 1
    return {"pairs": n_pairs, **{k: {"psnr": float(np.mean([a for a, _ in v])) if v else None,
                                     "ssim": float(np.mean([b for _, b in v])) if v else None}
                                 for k, v in rows.items()}}


def parse_alphas(text: str) -> list[float]:
    """``"0:1.01:0.1"`` (start:stop:step) or ``"0,0.5,1"``."""
    if ":" in text:
        return [float(a) for a in np.round(np.arange(*map(float, text.split(":"))), 2)]
    return [float(a) for a in text.split(",")]


def alpha_sweep(rec: Recognizer, fs, splits, model_of, alphas: list[float], readings: list[str],
                method: str) -> dict:
    """Rank-1 and VR@FAR=1% of ``H`` for every alpha and reading of eq. (1), on each split's probes.

    Only the probes are hallucinated (the gallery is VIS, and ``H`` fits nothing); alpha 0 (the raw CNN
    luminance, the same for both readings) is computed once per split. Returns ``{reading: {alpha: {"rank1":
    mean, "rank1_std", "vr_far_1e-2", "per_split_rank1": [...]}}}``.
    """
    raw: dict[str, dict[str, list]] = {}
    for sp in splits:
        probes_only = replace(sp, train=())
        zero = None
        for reading in readings:
            for alpha in alphas:
                if alpha == 0 and zero is not None:
                    r = zero
                else:
                    f = hallucinated_features(rec, fs, model_of, blend=BlendConfig(alpha, 1.0, reading),
                                              method=method)(probes_only)
                    gX, gok = f.take(sp.gallery)
                    pX, pok = f.take(sp.probes)
                    gy = np.array([s.person for s in sp.gallery])
                    r = evaluate_identification(pX, np.array([s.person for s in sp.probes]), gX, gy, pok,
                                                gallery_ok=gok)
                    zero = r if alpha == 0 else zero
                cell = raw.setdefault(reading, {}).setdefault(f"{alpha:.1f}", {"rank1": [], "vr": []})
                cell["rank1"].append(r.rank1)
                cell["vr"].append(r.vr_far_1e2)
                print(f"sweep {sp.name} {reading} alpha={alpha:.1f}: H rank-1 {100 * r.rank1:.1f}", flush=True)
    out = {rd: {a: {"rank1": mean_std(c["rank1"])[0], "rank1_std": mean_std(c["rank1"])[1],
                    "vr_far_1e-2": mean_std(c["vr"])[0], "per_split_rank1": c["rank1"]} for a, c in d.items()}
           for rd, d in raw.items()}
    for rd, d in out.items():
        print(f"alpha sweep ({rd}), rank-1 over {len(splits)} splits: "
              + "  ".join(f"{a}:{100 * v['rank1']:.1f}" for a, v in d.items()), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None)
    ap.add_argument("--stores", required=True, help="patch store of split K, with {k}")
    ap.add_argument("--models", required=True, type=Path)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--max-seconds", type=float, default=None, help="training time cap per split")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--splits", default="0-9")
    ap.add_argument("--sweep-splits", default="")
    ap.add_argument("--alphas", default="0:1.01:0.1", help="alpha sweep grid, start:stop:step or a comma list")
    ap.add_argument("--readings", default="log,gaussian")
    ap.add_argument("--method", default="direct", help="inference convolutions: direct or fft")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--quality-only", action="store_true", help="only the image quality (models must exist)")
    ap.add_argument("--sweep-only", action="store_true", help="only the alpha sweep on --sweep-splits")
    args = ap.parse_args()
    t_start = time.perf_counter()
    name, splits, samples = load_protocol("rap3df", find_data_root(args.data))
    ks = parse_ks(args.splits, len(splits))
    splits = [splits[k] for k in ks]
    index = dict(zip((s.name for s in splits), ks))
    rec = Recognizer("dlib", cache=FeatureCache())
    fs = rec.featurize(samples, workers=2)
    train_log = {}

    def model_of(split) -> Path:
        out = args.models / split.name
        if not (out / "config.json").is_file():  # a time-capped model keeps its checkpoint: not retrained
            t = time.perf_counter()
            cfg = TrainConfig(preset=args.preset, epochs=args.epochs, lr=args.lr, threads=args.threads,
                              max_seconds=args.max_seconds)
            summary = train_hallucination(args.stores.format(k=index[split.name]), out, cfg,
                                          forbidden_people=split.test_people)
            train_log[split.name] = {"seconds": round(time.perf_counter() - t, 1), **{
                k: v for k, v in summary.items() if isinstance(v, (int, float, str))}}
            print(f"trained {split.name} in {time.perf_counter() - t:.0f} s", flush=True)
        return out

    blend = BlendConfig()
    if args.quality_only:
        quality = {sp.name: image_quality(rec, sp, samples, args.models / sp.name, blend, args.method) for sp in splits}
        agg = {k: {m: mean_std([q[k][m] for q in quality.values()]) for m in ("psnr", "ssim")}
               for k in ("nir", "y_raw", "y", "rgb")}
        for k, v in agg.items():
            print(f"  {k:6s} PSNR {v['psnr'][0]:.2f} ± {v['psnr'][1]:.2f} dB   SSIM {v['ssim'][0]:.3f} ± {v['ssim'][1]:.3f}")
        if args.json:
            args.json.write_text(json.dumps({"quality": quality, "quality_mean_std": agg, "face_box": FACE_BOX}, indent=2))
        return
    sweep_splits = [next(s for s in splits if index[s.name] == k)
                    for k in parse_ks(args.sweep_splits, len(splits) and max(ks) + 1)]

    def sweep() -> dict:
        return alpha_sweep(rec, fs, sweep_splits, model_of, parse_alphas(args.alphas), args.readings.split(","),
                           args.method)

    if args.sweep_only:
        result = sweep()
        if args.json:
            args.json.write_text(json.dumps({"alpha_sweep": result, "args": {k: str(v) for k, v in vars(args).items()},
                                             "seconds": round(time.perf_counter() - t_start, 1)}, indent=2))
        return
    hfeat = hallucinated_features(rec, fs, model_of, blend=blend, method=args.method)
    configs = {"raw": None, "LR": embedding_fitter("lowrank"), "H": SplitConfig(hfeat),
               "H+LR": SplitConfig(hfeat, embedding_fitter("lowrank"))}
    report = evaluate_splits(name, splits, fs, configs, progress=lambda m: print(m, flush=True))
    print(f"{'configuration':10s} rank-1 (%)     VR@1%  VR@0.1%")
    for r in report.results:
        print(f"{r['config']:10s} {100 * r['rank1_mean']:4.1f} ± {100 * r['rank1_std']:3.1f}   "
              f"{100 * r['vr_far_1e-2']:5.1f}  {100 * r['vr_far_1e-3']:5.1f}")

    quality = {}
    for sp in splits:
        quality[sp.name] = image_quality(rec, sp, samples, model_of(sp), blend, args.method)
    agg = {k: {m: mean_std([q[k][m] for q in quality.values() if q[k][m] is not None])
               for m in ("psnr", "ssim")} for k in ("nir", "y_raw", "y", "rgb")}
    print("image quality vs the simultaneous VIS frame (test people), mean ± std over splits:")
    for k, v in agg.items():
        print(f"  {k:6s} PSNR {v['psnr'][0]:.2f} ± {v['psnr'][1]:.2f} dB   SSIM {v['ssim'][0]:.3f} ± {v['ssim'][1]:.3f}")

    sweep_mean = sweep()

    out = {"report": report.to_dict(), "quality": quality, "quality_mean_std": agg, "alpha_sweep": sweep_mean,
           "alpha_sweep_splits": args.sweep_splits, "training": train_log, "args": {k: str(v) for k, v in vars(args).items()},
           "seconds": round(time.perf_counter() - t_start, 1),
           "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
