"""Cross-spectral hallucination (paper Sec. 3): NIR face -> VIS face with three CNNs (Y, Cb, Cr),
then the eq. (1) blend with the NIR image.

- :mod:`~nirvis.hallucination.nets`: the networks of Table 1 and the ``paper`` / ``cpu`` presets.
- :mod:`~nirvis.hallucination.data`, :mod:`~nirvis.hallucination.train`: training on a patch store.
- :mod:`~nirvis.hallucination.io`: safetensors + JSON model folders.
- :mod:`~nirvis.hallucination.blend`: equation (1), both readings.
- :mod:`~nirvis.hallucination.fastconv`: FFT convolutions for fast CPU inference.
- :mod:`~nirvis.hallucination.infer`: :class:`Hallucinator` (whole aligned faces, batched).
- :mod:`~nirvis.hallucination.evaluate`: the ``H`` and ``H+LR`` configurations of the evaluation.

Names are imported lazily, so the command line starts without loading torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CHANNELS": "nets", "PRESETS": "nets", "ChannelNet": "nets", "ChannelNetSpec": "nets",
    "HallucinationNets": "nets", "preset": "nets",
    "HallucinationModel": "io", "ModelFileError": "io", "load_model": "io", "save_model": "io",
    "BlendConfig": "blend", "blend_luminance": "blend",
    "Hallucinator": "infer", "HallucinatedFaces": "infer", "Hallucination": "infer",
    "HallucinationInputError": "infer", "accelerate": "fastconv",
    "TrainConfig": "train", "train_hallucination": "train",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"nirvis.hallucination.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'nirvis.hallucination' has no attribute {name!r}")
