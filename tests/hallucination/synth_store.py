"""Tiny synthetic patch stores for the hallucination tests: a learnable NIR -> VIS mapping.

VIS Y = 255 - NIR (so Y = 1 - NIR in [0, 1]), Cb = 96 + NIR / 4, Cr = 160 - NIR / 4, on smooth random
NIR textures; rows ordered by person as ``nirvis mine`` writes them.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import h5py
import numpy as np

from nirvis.mining.store import FORMAT, VERSION, append_pairs, create_store

REFERENCE = {"nir_id": "p0/nir", "vis_id": "p0/vis", "nir_mean": 110.0, "nir_std": 60.0,
             "vis_mean": [100.0, 95.0, 90.0], "vis_std": [70.0, 68.0, 66.0]}


def make_store(path: Path, people: list[str], pairs_per_person: int | list[int] = 60, patch: int = 16,
               seed: int = 0) -> Path:
    """Write a complete patch store at ``path`` with ``pairs_per_person`` rows for each person."""
    counts = [pairs_per_person] * len(people) if isinstance(pairs_per_person, int) else list(pairs_per_person)
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as h5:
        create_store(h5, patch, 8)
        for pi, n in enumerate(counts):
            noise = rng.random((n, patch, patch)).astype(np.float32)
            nir = np.stack([cv2.GaussianBlur(im, (0, 0), 1.5) for im in noise])
            nir = cv2.normalize(nir, None, 10, 245, cv2.NORM_MINMAX).astype(np.uint8)
            n16 = nir.astype(np.int16)
            append_pairs(h5, {
                "nir": nir, "y": (255 - n16).astype(np.uint8), "cb": (96 + n16 // 4).astype(np.uint8),
                "cr": (160 - n16 // 4).astype(np.uint8), "person": np.full(n, pi, np.int32),
                "nir_id": np.array([f"{pi}/n".encode()] * n), "vis_id": np.array([f"{pi}/v".encode()] * n),
                "loc": np.zeros((n, 2), np.int16), "s1": np.ones(n, np.float32), "s2": np.ones(n, np.float32),
                "flip": np.zeros(n, bool)})
        h5.attrs["format"] = FORMAT
        h5.attrs["version"] = VERSION
        h5.attrs["people"] = json.dumps(list(people))
        h5.attrs["config"] = json.dumps({"patch": patch})
        h5.attrs["reference"] = json.dumps(REFERENCE)
        h5.attrs["summary"] = json.dumps({"pairs_stored": int(sum(counts))})
        h5.attrs["meta"] = json.dumps({"dataset": "synthetic"})
        h5.attrs["complete"] = True
    return path
