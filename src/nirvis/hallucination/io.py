"""Saving and loading hallucination models: safetensors weights + a JSON config, written atomically.

A model is a folder::

    model/
        weights.safetensors   state dict of :class:`~nirvis.hallucination.nets.HallucinationNets`
        config.json           {"format", "version", "nets", "reference", "train_people", "store", "training", ...}

``weights.safetensors`` is written (atomically) before ``config.json`` (atomically), and loading checks
that the weights' digest is the one recorded in the config, so a crash between the two renames is
detected instead of pairing new weights with an old config. No pickle anywhere.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path
from typing import Any

import torch

from nirvis._io import atomic_write, atomic_write_json, file_digest, read_json
from nirvis.errors import NirvisError
from nirvis.hallucination.nets import HallucinationNets

__all__ = ["HallucinationModel", "ModelFileError", "save_model", "load_model", "check_reference", "MODEL_FORMAT",
           "MODEL_VERSION"]

MODEL_FORMAT = "nirvis-hallucination"
MODEL_VERSION = 1
WEIGHTS = "weights.safetensors"
CONFIG = "config.json"


class ModelFileError(NirvisError, ValueError):
    """A hallucination model folder is missing, incomplete or not a nirvis hallucination model."""


@dataclass
class HallucinationModel:
    """Trained networks plus what is needed to apply them.

    Attributes
    ----------
    nets
        The Y/Cb/Cr networks (inputs and outputs in [0, 1]).
    reference
        Photometric reference of the patch store (``nir_mean``, ``nir_std``, ``vis_mean``, ``vis_std`` in
        8-bit units): inference normalises the NIR face to it, as mining did (paper Sec. 3.1).
    meta
        Everything else from ``config.json`` (``train_people``, ``store``, ``training`` ...).
    """

    nets: HallucinationNets
    reference: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        """Digest of the weights and config: changes whenever the model's output can."""
        h = hashlib.sha256(json.dumps({"nets": self.nets.config(), "reference": self.reference},
                                      sort_keys=True).encode())
        for k, v in sorted(self.nets.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


def check_reference(reference: Any) -> None:
    """The photometric reference: finite ``nir_mean`` and ``nir_std > 0``, and, where present, three finite
    ``vis_mean`` and three positive ``vis_std`` values."""
    if not isinstance(reference, dict):
        raise TypeError(f"reference must be an object, got {type(reference).__name__}")
    values = {"nir_mean": [reference["nir_mean"]], "nir_std": [reference["nir_std"]]}
    for key in ("vis_mean", "vis_std"):
        if key in reference:
            values[key] = list(reference[key])
            if len(values[key]) != 3:
                raise ValueError(f"reference {key!r} needs 3 values (one per RGB channel), got {len(values[key])}")
    for key, vals in values.items():
        if not all(isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v) for v in vals):
            raise ValueError(f"reference {key!r} must hold finite numbers, got {reference[key]!r}")
        if key.endswith("_std") and min(vals) <= 0:
            raise ValueError(f"reference {key!r} must be > 0, got {reference[key]!r}")


def save_model(path: str | os.PathLike, model: HallucinationModel) -> Path:
    """Write ``model`` to the folder ``path`` (created if needed), atomically file by file."""
    from safetensors.torch import save_file

    if isinstance(path, HallucinationModel) or not isinstance(model, HallucinationModel):
        raise TypeError(f"save_model(path, model) takes the folder first, then a HallucinationModel; got "
                        f"{type(path).__name__} and {type(model).__name__}")
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.nets.state_dict().items()}
    atomic_write(folder / WEIGHTS, lambda p: save_file(state, str(p)))
    config = {**model.meta, "format": MODEL_FORMAT, "version": MODEL_VERSION, "nets": model.nets.config(),
              "reference": model.reference, "weights_sha256": file_digest(folder / WEIGHTS)}
    atomic_write_json(folder / CONFIG, config)
    return folder


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> HallucinationModel:
    """Read a model folder written by :func:`save_model`.

    Raises
    ------
    ModelFileError
        Naming the folder and what is wrong (missing file, other format, weights not matching the config).
    """
    from safetensors.torch import load_file

    folder = Path(path)
    if not folder.is_dir():
        raise ModelFileError(f"{folder}: no such hallucination model folder (expected {WEIGHTS} + {CONFIG}; "
                             "train one with `nirvis train-hallucination`)")
    cfg_path, w_path = folder / CONFIG, folder / WEIGHTS
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise ModelFileError(f"{folder}: missing {p.name}; the model is incomplete")
    config = read_json(cfg_path, ModelFileError)
    if config.get("format") != MODEL_FORMAT:
        raise ModelFileError(f"{cfg_path}: format is {config.get('format')!r}, expected {MODEL_FORMAT!r}")
    if config.get("version") != MODEL_VERSION:
        raise ModelFileError(f"{cfg_path}: version {config.get('version')!r} is not supported "
                             f"(this nirvis reads {MODEL_VERSION})")
    if config.get("weights_sha256") != file_digest(w_path):
        raise ModelFileError(f"{w_path}: the weights do not match {CONFIG} (interrupted save or edited file)")
    try:
        nets = HallucinationNets.from_config(config["nets"])
        reference = config["reference"]
        check_reference(reference)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{cfg_path}: bad or missing 'nets' / 'reference' entry ({type(exc).__name__}: {exc})"
                             ) from None
    try:
        weights = load_file(str(w_path))
        nets.load_state_dict(weights)
    except RuntimeError as exc:
        raise ModelFileError(f"{w_path}: weights do not fit the networks of {CONFIG}: {exc}") from None
    broken = sorted(k for k, v in weights.items() if not bool(torch.isfinite(v).all()))
    if broken:  # e.g. saved by a run that diverged before training refused to save one
        raise ModelFileError(f"{w_path}: {len(broken)} weight tensor(s) hold NaN or inf ({', '.join(broken[:3])}); "
                             "the model is unusable, train it again (with a lower --lr)")
    nets.to(device).eval()
    meta = {k: v for k, v in config.items() if k not in ("format", "version", "nets", "reference", "weights_sha256")}
    return HallucinationModel(nets=nets, reference=reference, meta=meta)
