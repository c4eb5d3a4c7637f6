"""The naive pipeline of the foundation issue, next to nirvis's, on the RAP3DF protocol.

Naive, as a new user would try it: HOG on a 3x upsampled image, a fixed box when nothing is found, dlib's
5-point chip, dlib ResNet. nirvis: detector cascade (HOG, lowered-threshold HOG, MMOD, CLAHE variants),
5-point landmarks on the upscaled face, alignment to the 224x224 template, dlib chip from the template
landmarks, flip test-time augmentation. Both are scored by the same metrics code.

Usage: python benchmarks/rap3df_naive_baseline.py [--data DIR]
"""

from __future__ import annotations

import argparse

import cv2
import dlib
import numpy as np

from nirvis.data import find_data_root
from nirvis.datasets.rap3df import load_rap3df, rap3df_splits
from nirvis.evaluation.protocols import evaluate_splits
from nirvis.faces import models
from nirvis.features.cache import FeatureCache
from nirvis.pipeline import FeatureSet, Recognizer


def naive_features(samples) -> FeatureSet:
    hog, sp, net = models.hog_detector(), models.shape_predictor("shape5"), models.resnet_model()
    feats = np.zeros((len(samples), 128), np.float32)
    methods = []
    for i, s in enumerate(samples):
        img = s.read()
        rgb = np.repeat(img[:, :, None], 3, 2) if img.ndim == 2 else img
        up = cv2.resize(rgb, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)
        dets = hog(up, 0)
        if dets:
            rect, methods_i = max(dets, key=lambda r: r.area()), "hog"
        else:  # fixed box: the middle of the frame
            h, w = up.shape[:2]
            rect, methods_i = dlib.rectangle(w // 4, h // 5, 3 * w // 4, 3 * h // 5), "fixed-box"
        chip = dlib.get_face_chip(up, sp(up, rect), size=150, padding=0.25)
        feats[i] = np.asarray(net.compute_face_descriptor(chip))
        methods.append(methods_i)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    return FeatureSet(list(samples), feats, np.ones(len(samples), bool), methods, [])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default=None)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    sets = load_rap3df(find_data_root(args.data))
    splits = rap3df_splits(sets)
    test_samples = list({s.capture_id: s for sp in splits for s in (*sp.gallery, *sp.probes)}.values())
    naive = evaluate_splits("rap3df", splits, naive_features(test_samples)).results[0]
    ours_fs = Recognizer("dlib", cache=FeatureCache()).featurize(test_samples, workers=args.workers)
    ours = evaluate_splits("rap3df", splits, ours_fs).results[0]
    for name, r in (("naive", naive), ("nirvis", ours)):
        print(f"{name:7s} rank-1 {100 * r['rank1_mean']:.1f} ± {100 * r['rank1_std']:.1f}%  "
              f"VR@1% {100 * r['vr_far_1e-2']:.1f}%  VR@0.1% {100 * r['vr_far_1e-3']:.1f}%  "
              f"probes {r['n_probes']}  failed {r['n_failed_alignment']}")


if __name__ == "__main__":
    main()
