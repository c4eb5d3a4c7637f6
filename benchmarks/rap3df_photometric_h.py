"""Training-free "hallucinations" of NIR faces: does a photometric map alone help dlib on RAP3DF?

Each variant maps the aligned NIR face (gray) to an RGB face before dlib sees it; its statistics come from the
2017 set, which is a training set in every split, so no split's test people are used. Variants:

- ``gray+meanchroma``: the NIR intensity as luminance Y, with the mean VIS chroma (Cr, Cb) per pixel;
- ``histmatch``: the NIR intensities mapped to the VIS luminance distribution (quantile matching, face centre);
- ``histmatch+meanchroma``: both.

Usage: python benchmarks/rap3df_photometric_h.py [--data DIR]
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import cv2
import numpy as np

from nirvis.data import find_data_root
from nirvis.datasets import load_protocol
from nirvis.errors import NirvisError
from nirvis.evaluation.metrics import evaluate_identification
from nirvis.features.cache import FeatureCache
from nirvis.pipeline import Recognizer


def _gray(img: np.ndarray) -> np.ndarray:
    return (img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)).astype(np.float32)


def _rgb(y: np.ndarray, cr: np.ndarray, cb: np.ndarray) -> np.ndarray:
    ycc = np.stack([np.clip(y, 0, 255), np.broadcast_to(cr, y.shape), np.broadcast_to(cb, y.shape)], -1)
    return cv2.cvtColor(ycc.astype(np.uint8), cv2.COLOR_YCrCb2RGB)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None)
    args = ap.parse_args()
    _, splits, samples = load_protocol("rap3df", find_data_root(args.data), None, None)
    rec = Recognizer(cache=FeatureCache())
    fs = rec.featurize(samples, workers=1)
    faces = {}
    for s in samples:
        try:
            faces[s.capture_id] = rec.align_sample(s)
        except NirvisError:
            faces[s.capture_id] = None
    by_id = {s.capture_id: s for s in samples}
    pairs = [(faces[s.capture_id], faces[s.pair_id]) for s in samples
             if s.meta.get("set") == "2017" and s.modality == "nir" and s.pair_id in by_id
             and faces[s.capture_id] is not None and faces.get(s.pair_id) is not None]
    nir = np.stack([_gray(a.image) for a, _ in pairs])
    vis = np.stack([cv2.cvtColor(b.rgb(), cv2.COLOR_RGB2YCrCb) for _, b in pairs]).astype(np.float32)
    cr, cb = vis[..., 1].mean(0), vis[..., 2].mean(0)
    q = np.linspace(0, 1, 257)
    qn, qv = np.quantile(nir[:, 40:200, 40:184], q), np.quantile(vis[:, 40:200, 40:184, 0], q)
    variants = {
        "gray+meanchroma": lambda g: _rgb(g, cr, cb),
        "histmatch": lambda g: np.repeat(np.interp(g, qn, qv)[..., None], 3, 2).astype(np.uint8),
        "histmatch+meanchroma": lambda g: _rgb(np.interp(g, qn, qv), cr, cb),
    }
    print(f"{len(pairs)} simultaneous 2017 pairs give the statistics")
    probes = [s for s in samples if s.modality == "nir" and faces[s.capture_id] is not None]
    for name, fn in variants.items():
        emb = rec.embedder.embed([replace(faces[s.capture_id], image=fn(_gray(faces[s.capture_id].image)))
                                  for s in probes])
        feats = dict(zip((s.capture_id for s in probes), emb))
        r1 = []
        for split in splits:
            g, gok = fs.take(split.gallery)
            p = np.stack([feats.get(s.capture_id, np.full(g.shape[1], np.nan)) for s in split.probes])
            pok = np.isfinite(p).all(1)
            r1.append(evaluate_identification(np.nan_to_num(p), [s.person for s in split.probes], np.nan_to_num(g),
                                              [s.person for s in split.gallery], pok, gallery_ok=gok).rank1)
        print(f"{name}: rank-1 {100 * np.mean(r1):.1f} ± {100 * np.std(r1):.1f}; per split "
              + " ".join(f"{100 * x:.1f}" for x in r1), flush=True)


if __name__ == "__main__":
    main()
