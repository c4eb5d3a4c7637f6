"""Speed of align + embed (images/s) per frozen network, in one process and with worker processes, on real
RAP3DF images (issue 12).

Usage: python benchmarks/bench_align_embed.py [--data DIR] [--n 120] [--workers 1 2]
           [--embedders dlib dlib-noflip edgeface-xs edgeface-xxs]

No cache is used, so every image is read, detected, aligned and embedded, for each network in turn (the same
images). ``dlib-noflip`` is dlib's ResNet without its flip pass (one network pass per face instead of two). A
network whose model file is not installed is skipped, with the reason. Then the split of the time between the
two stages, in one process: align (read, detect, landmarks, warp; with dlib's 5-point and 68-point landmark
models, the latter for EdgeFace's crop) and embed (the network alone).
"""

from __future__ import annotations

import argparse
import platform
import resource
import time

from nirvis.data import find_data_root
from nirvis.datasets.rap3df import load_rap3df
from nirvis.errors import NirvisError
from nirvis.features.models import embedder_from_spec
from nirvis.pipeline import Recognizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None)
    ap.add_argument("--n", type=int, default=120, help="images (half NIR, half VIS)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--embedders", nargs="+", default=["dlib", "dlib-noflip", "edgeface-xs", "edgeface-xxs"])
    args = ap.parse_args()
    root = find_data_root(args.data)
    sets = load_rap3df(root)
    every = [s for v in sets.values() for s in v]
    samples = []
    for modality in ("nir", "vis"):  # half of each, evenly spaced over both capture sets
        of = [s for s in every if s.modality == modality]
        samples += of[:: max(1, len(of) // (args.n // 2))][: args.n // 2]
    print(f"machine: {platform.processor() or platform.machine()}, {len(samples)} images "
          f"({sum(s.modality == 'nir' for s in samples)} NIR)", flush=True)
    from nirvis.faces.align import AlignConfig, FaceAligner

    faces_of: dict[str, list] = {}  # aligned faces per landmark model (EdgeFace's crop needs the 68 points)
    for landmark_model in ("shape5", "shape68"):
        al = FaceAligner(AlignConfig(landmark_model=landmark_model))
        al.align(samples[0].read())  # load the detectors once, outside the timing
        t = time.perf_counter()
        faces = []
        for s in samples:
            try:
                faces.append(al.align(s.read()))
            except NirvisError:
                pass
        t_align = time.perf_counter() - t
        faces_of[landmark_model] = faces
        print(f"align alone with {landmark_model} (1 process): {1000 * t_align / len(samples):.1f} ms/image, "
              f"{len(faces)} aligned", flush=True)
    for name in args.embedders:
        try:
            emb = embedder_from_spec(name, data_root=root)
            emb.fingerprint  # noqa: B018 - loads an ONNX model now
        except (NirvisError, ValueError, OSError) as exc:
            print(f"{name}: skipped ({exc})", flush=True)
            continue
        rec = Recognizer(emb, cache=None)
        rec.featurize(samples[:2])  # load the network once, outside the timing
        faces = faces_of[rec.aligner.config.landmark_model]
        t = time.perf_counter()
        emb.embed(faces)
        t_embed = time.perf_counter() - t
        line = [f"{name}: embed alone {1000 * t_embed / max(len(faces), 1):.1f} ms/face"]
        for w in args.workers:
            t = time.perf_counter()
            fs = rec.featurize(samples, workers=w)
            dt = time.perf_counter() - t
            line.append(f"align + embed, workers={w}: {len(samples) / dt:.2f} images/s ({dt:.1f} s, "
                        f"{int(fs.ok.sum())} aligned)")
        print("; ".join(line), flush=True)
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
