"""Training the three hallucination CNNs on a mined patch store (paper Sec. 3, PAPER-NOTES "Hallucination CNNs").

Each network maps a 40x40 NIR patch to one VIS channel (Y, Cb or Cr, values in [0, 1]); the loss is the
Euclidean (mean squared error) loss of each channel, summed over the three networks, so that one Adam
optimiser (lr 1e-5, betas (0.9, 0.999), eps 1e-8) trains the three independent networks at once for
10 epochs. The patches are split 5/6 - 1/6 by person into training and validation.

Everything lives in one output folder::

    output/
        weights.safetensors, config.json   the final model (:func:`~nirvis.hallucination.io.save_model`)
        history.json                        loss curves (see below), rewritten at every checkpoint
        loss.png                            the curves, plotted at every epoch end and at the end
        checkpoint.safetensors              model + optimiser tensors, and (in its header) the state below
        checkpoint.json                     the same state, readable: epoch, step, shuffle seed, history ...

Checkpoints are written atomically at every epoch end (and every ``checkpoint_every`` steps). Rerunning
:func:`train_hallucination` on the same folder resumes from the checkpoint, and gives bit for bit the
weights of an uninterrupted run on the same machine and thread count (on the CPU; cuDNN's kernels need not be
deterministic), with the same number of processes: the shuffling of an epoch is a pure
function of ``(seed, epoch)`` (:func:`~nirvis.hallucination.data.epoch_blocks`), so the checkpoint only
records how many batches of the epoch were done. The checkpoint is deleted once every epoch is done
(``keep_checkpoint`` keeps it); a run stopped by ``max_steps`` or ``max_seconds`` keeps it, so that a rerun
with a larger limit continues.

``history.json``::

    {"channels": [...],
     "log":    [{"step", "epoch", "samples", "train_s", "wall_s", "train": {"y": mse, ...}}, ...],
     "val":    [{"step", "epoch", "samples", "train_s", "wall_s", "val": {...}}, ...],
     "epochs": [{"epoch", "step", "samples", "train_s", "wall_s", "train": {...}, "val": {...}, "partial"}]}

``log`` holds the mean training loss of each channel over the last ``log_every`` steps; ``val`` every
validation (epoch ends, and every ``val_every`` steps / ``val_every_seconds`` of training); ``train_s`` is
the training time (data loading and optimiser steps, without validation and checkpoint writing) and
``wall_s`` the elapsed time, both summed over resumed runs. Losses are MSE of values in [0, 1].

Under ``torchrun`` (``WORLD_SIZE`` > 1) training is distributed data parallel: every rank trains on its
share of the shuffle blocks (:func:`~nirvis.hallucination.data.shard_blocks`), gradients are averaged, so
the effective batch is ``batch_size x world_size``; only rank 0 writes files. Every rank runs the same number
of steps per epoch (the smallest share decides; shares differ by at most a row per shuffle block).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nirvis._io import atomic_write, atomic_write_json
from nirvis.errors import NirvisError
from nirvis.hallucination.data import (BLOCK_CHUNKS, PatchBlocks, epoch_blocks, iter_batches, shard_blocks,
                                       split_people, steps_per_epoch, store_rows, to_unit)
from nirvis.hallucination.io import CONFIG, WEIGHTS, HallucinationModel, save_model
from nirvis.hallucination.nets import CHANNELS, PRESETS, ChannelNetSpec, HallucinationNets, preset
from nirvis.mining.store import PatchStore, check_store_people

__all__ = ["TrainConfig", "TrainingError", "train_hallucination", "PRESET_LR", "CHECKPOINT", "CHECKPOINT_JSON",
           "HISTORY", "LOSS_PLOT", "plot_history"]

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.safetensors"
CHECKPOINT_JSON = "checkpoint.json"
HISTORY = "history.json"
LOSS_PLOT = "loss.png"
_CKPT_FORMAT = "nirvis-hallucination-checkpoint"
_CKPT_VERSION = 1

#: Adam learning rate of each preset when :attr:`TrainConfig.lr` is ``None``. ``paper``: the paper's 1e-5.
#: ``cpu``: 3e-3, chosen with the preset itself by ``benchmarks/hallucination_presets.py`` on the RAP3DF fold-0
#: store (2-core CPU, 120 s of training; docs/BENCHMARKS.md): validation MSE (Y + Cb + Cr) 0.675 -> 0.032 for
#: the ``small`` network at 3e-3, against 0.652 -> 0.040 for the best first-guess network (1e-3); the paper
#: preset at 1e-5 went 0.563 -> 0.558 in the same time.
PRESET_LR: dict[str, float] = {"paper": 1e-5, "cpu": 3e-3}

#: Settings that may change between a run and its resumption. None changes what is computed, but another
#: ``threads`` count changes the order of float reductions, so the weights are then equal only to rounding.
_RESUMABLE_CHANGES = ("epochs", "max_steps", "max_seconds", "num_workers", "threads", "checkpoint_every",
                      "log_every", "val_every", "val_every_seconds", "val_max_patches", "val_at_start",
                      "keep_checkpoint")


class TrainingError(NirvisError, ValueError):
    """Training cannot start or resume: bad setting, unusable store, or an output folder that conflicts."""


@dataclass
class TrainConfig:
    """Settings of :func:`train_hallucination` (paper Sec. 3 defaults).

    Attributes
    ----------
    preset
        Network preset of :data:`~nirvis.hallucination.nets.PRESETS`: ``paper`` (Table 1) or ``cpu``.
    specs
        Networks to train instead of the preset's (tests, benchmarks of candidate presets); ``preset`` is
        then only a label and the default of ``lr``.
    channels
        Which networks to train, a subset of ``("y", "cb", "cr")``.
    epochs
        Passes over the training patches (paper: 10).
    batch_size
        Patches per optimiser step and rank. The paper gives none; 64 keeps a paper-preset step around
        ten seconds on a 2-core CPU and is a common choice for patch CNNs of this size on a GPU.
    lr
        Adam learning rate; ``None``: the preset's (:data:`PRESET_LR`; paper 1e-5).
    betas, eps
        Adam's (paper: (0.9, 0.999) and 1e-8).
    val_fraction
        Fraction of the store's people held out for validation (paper: 1/6), by person.
    seed
        Seed of the network initialisation, the person split and the shuffling.
    num_workers
        :class:`~torch.utils.data.DataLoader` worker processes reading the store (0: the training process).
    block_chunks
        Store chunks (256 pairs each) mixed in one shuffle block (:func:`~nirvis.hallucination.data.epoch_blocks`).
    amp
        Mixed precision on CUDA (bfloat16 where supported, else float16 with gradient scaling); ignored on CPU.
    checkpoint_every
        Also checkpoint every this many steps (0: at epoch ends only).
    log_every
        Record the mean training loss every this many steps.
    val_every, val_every_seconds
        Also validate every this many steps / seconds of training (0 / ``None``: at epoch ends only).
    val_max_patches
        Validate on at most this many patches (evenly spaced over the validation people's rows); ``None``: all.
    val_at_start
        Validate once before the first step (the starting point of a loss curve).
    max_steps, max_seconds
        Stop after this many optimiser steps / seconds of training (quick runs, benchmarks); the model is
        saved and the checkpoint kept.
    threads
        ``torch.set_num_threads`` for the run (restored afterwards); ``None``: torch's default (under
        ``torchrun``, ``OMP_NUM_THREADS``, which torchrun sets to 1 unless it is set).
    keep_checkpoint
        Keep ``checkpoint.*`` after the last epoch.
    """

    preset: str = "paper"
    specs: dict[str, ChannelNetSpec] | None = None
    channels: tuple[str, ...] = CHANNELS
    epochs: int = 10
    batch_size: int = 64
    lr: float | None = None
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    val_fraction: float = 1 / 6
    seed: int = 0
    num_workers: int = 0
    block_chunks: int = BLOCK_CHUNKS
    amp: bool = True
    checkpoint_every: int = 0
    log_every: int = 25
    val_every: int = 0
    val_every_seconds: float | None = None
    val_max_patches: int | None = None
    val_at_start: bool = False
    max_steps: int | None = None
    max_seconds: float | None = None
    threads: int | None = None
    keep_checkpoint: bool = False

    def resolved_lr(self) -> float:
        """``lr``, or the preset's default learning rate."""
        if self.lr is not None:
            return float(self.lr)
        return PRESET_LR.get(self.preset, PRESET_LR["paper"])

    def net_specs(self) -> dict[str, ChannelNetSpec]:
        """The specs of the networks to train."""
        return dict(self.specs) if self.specs is not None else preset(self.preset)

    def validate(self) -> None:
        """Raise :class:`TrainingError` naming the first bad setting."""
        if self.specs is None and self.preset not in PRESETS:
            raise TrainingError(f"preset {self.preset!r} is unknown; choose one of {sorted(PRESETS)}")
        bad = [c for c in self.channels if c not in CHANNELS]
        if bad or not self.channels or len(set(self.channels)) != len(self.channels):
            raise TrainingError(f"channels must be distinct names among {CHANNELS}, got {list(self.channels)}")
        missing = [c for c in self.channels if c not in self.net_specs()]
        if missing:
            raise TrainingError(f"no network spec for channels {missing}")
        checks = [("epochs", self.epochs >= 1), ("batch_size", self.batch_size >= 1),
                  ("lr", self.resolved_lr() > 0), ("eps", self.eps > 0),
                  ("betas", all(0 <= b < 1 for b in self.betas) and len(self.betas) == 2),
                  ("val_fraction", 0 <= self.val_fraction < 1), ("num_workers", self.num_workers >= 0),
                  ("block_chunks", self.block_chunks >= 1), ("checkpoint_every", self.checkpoint_every >= 0),
                  ("log_every", self.log_every >= 1), ("val_every", self.val_every >= 0),
                  ("val_every_seconds", self.val_every_seconds is None or self.val_every_seconds > 0),
                  ("val_max_patches", self.val_max_patches is None or self.val_max_patches >= 1),
                  ("max_steps", self.max_steps is None or self.max_steps >= 1),
                  ("max_seconds", self.max_seconds is None or self.max_seconds > 0),
                  ("threads", self.threads is None or self.threads >= 1), ("seed", self.seed >= 0)]
        for name, ok in checks:
            if not ok:
                raise TrainingError(f"TrainConfig.{name} = {getattr(self, name)!r} is out of range")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able settings, with ``lr`` resolved."""
        d = asdict(self)
        d["lr"] = self.resolved_lr()
        d["specs"] = {c: asdict(s) for c, s in self.net_specs().items() if c in self.channels}
        return json.loads(json.dumps(d))


# ----------------------------------------------------------------------------------------------- distributed

@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum ``t`` over ranks (in place; a no-op alone)."""
        if self.world > 1:
            import torch.distributed as dist

            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def from_main(self, flags: list[bool]) -> list[bool]:
        """Rank 0's ``flags`` on every rank (decisions taken from rank 0's clock)."""
        if self.world == 1:
            return flags
        import torch.distributed as dist

        t = torch.tensor([float(f) for f in flags], device=self.device)
        dist.broadcast(t, src=0)
        return [bool(v) for v in t.tolist()]


def _setup_dist() -> _Dist:
    """Rank, world size and device; initialises the process group under ``torchrun`` (``WORLD_SIZE`` > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world <= 1:
        return _Dist(device=torch.device("cuda" if cuda else "cpu"))
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        owns = True
    return _Dist(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local_rank,
                 device=device, owns_group=owns)


# ----------------------------------------------------------------------------------------------- checkpoints

def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state as ``optim.<param>.<name>`` tensors plus JSON (param groups, non-tensor state)."""
    sd = opt.state_dict()
    tensors, extra = {}, {}
    for idx, st in sd["state"].items():
        for name, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{idx}.{name}"] = v.detach().to("cpu").contiguous()
            else:
                extra[f"{idx}.{name}"] = v
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "state_extra": extra}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    for key, v in meta["state_extra"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = v
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def _save_checkpoint(out: Path, nets: HallucinationNets, opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """``checkpoint.safetensors`` (tensors, and ``state`` as JSON in its header), then ``checkpoint.json``.

    The safetensors file alone is authoritative (one atomic rename); ``checkpoint.json`` mirrors its state
    for people and tools.
    """
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().to("cpu").contiguous() for k, v in nets.state_dict().items()}
    opt_tensors, opt_meta = _flatten_optimizer(opt)
    tensors.update(opt_tensors)
    full = {**state, "format": _CKPT_FORMAT, "version": _CKPT_VERSION, "optimizer": opt_meta}
    header = {"state": json.dumps(full)}
    atomic_write(out / CHECKPOINT, lambda p: save_file(tensors, str(p), metadata=header))
    atomic_write_json(out / CHECKPOINT_JSON, {k: v for k, v in full.items() if k != "optimizer"})


def _load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        state = json.loads(meta["state"])
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        raise TrainingError(f"{path}: unreadable training checkpoint ({exc}); delete it to start afresh") from None
    if state.get("format") != _CKPT_FORMAT or state.get("version") != _CKPT_VERSION:
        raise TrainingError(f"{path}: not a nirvis hallucination checkpoint of version {_CKPT_VERSION} "
                            f"(format {state.get('format')!r}, version {state.get('version')!r})")
    return tensors, state


def _remove_stale_temporaries(out: Path) -> None:
    """Delete temporary files that a killed atomic write of ours left in ``out``."""
    for name in (CHECKPOINT, CHECKPOINT_JSON, HISTORY, LOSS_PLOT, WEIGHTS, CONFIG):
        for p in out.glob(f".{name}.*.tmp*"):
            p.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------- plotting

def plot_history(history: dict[str, Any], path: str | os.PathLike, title: str = "") -> Path:
    """Plot the training (per ``log_every`` steps) and validation MSE of each channel against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    colors = {"y": "tab:gray", "cb": "tab:blue", "cr": "tab:red"}
    for c in history.get("channels", []):
        tr = [(e["step"], e["train"][c]) for e in history.get("log", [])]
        if tr:
            ax.plot(*zip(*tr), color=colors.get(c), alpha=0.5, lw=1, label=f"{c} train")
        va = [(e["step"], e["val"][c]) for e in history.get("val", [])]
        if va:
            ax.plot(*zip(*va), color=colors.get(c), marker="o", ms=3, lw=1.5, label=f"{c} validation")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("MSE (values in [0, 1])")
    if any(v > 0 for e in history.get("log", []) for v in e["train"].values()):
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    else:  # a run too short to log a step (and no validation): an empty plot that says so
        ax.text(0.5, 0.5, "no loss logged yet", transform=ax.transAxes, ha="center", va="center")
    ax.set_title(title or "hallucination CNNs: loss per channel")
    fig.tight_layout()
    try:
        return atomic_write(path, lambda p: fig.savefig(p, format="png"))
    finally:
        plt.close(fig)


# ----------------------------------------------------------------------------------------------- training

def _mse_per_channel(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``(C,)`` mean squared error of each channel over batch and pixels (float32)."""
    return (out.float() - target).square().mean(dim=(0, 2, 3))


def _evaluate(nets: HallucinationNets, blocks: PatchBlocks, cfg: TrainConfig, dist: _Dist, autocast) -> torch.Tensor:
    """Per-channel validation MSE over every rank's share of the validation blocks: ``(C,)`` float64 on CPU."""
    was_training = nets.training
    nets.eval()
    sums = torch.zeros(len(cfg.channels) + 1, dtype=torch.float64, device=dist.device)
    with torch.no_grad():
        for nir, target in iter_batches(blocks, cfg.batch_size, num_workers=cfg.num_workers,
                                        pin_memory=dist.device.type == "cuda"):
            x, t = to_unit(nir, dist.device), to_unit(target, dist.device)
            with autocast():
                out = nets(x)
            se = (out.float() - t).square().mean(dim=(2, 3)).sum(dim=0)
            sums[:-1] += se.double()
            sums[-1] += x.shape[0]
    nets.train(was_training)
    dist.all_sum(sums)
    sums = sums.cpu()
    n = float(sums[-1])
    return sums[:-1] / n if n else torch.full((len(cfg.channels),), float("nan"), dtype=torch.float64)


def _named(values: torch.Tensor | list[float], channels: tuple[str, ...]) -> dict[str, float]:
    return {c: float(v) for c, v in zip(channels, list(values))}


#: What to delete to start a model folder afresh (said in the errors that refuse to resume).
_AFRESH = f"delete the folder (or its {CHECKPOINT_JSON}, {CHECKPOINT}, {WEIGHTS} and {CONFIG}) to start afresh"


def _store_fingerprint(st: PatchStore) -> str:
    """Digest of a store's identity: its mining settings, summary, reference, people and size (attributes only,
    no patch is read)."""
    blob = json.dumps([st.config, st.summary, st.reference, st.people, len(st)], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _check_resume(state: dict[str, Any], cfg: TrainConfig, store_path: Path, n_rows: int, train_people: list[str],
                  val_people: list[str], ckpt: Path, world: int, store_fp: str) -> None:
    old, new = state["training"], cfg.to_dict()
    diff = sorted(k for k in set(old) | set(new) if k not in _RESUMABLE_CHANGES and old.get(k) != new.get(k))
    if diff:
        pairs = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff)
        raise TrainingError(f"{ckpt}: cannot resume with other settings ({pairs}); use the checkpoint's settings, "
                            f"another --output folder, or {_AFRESH}")
    if (state["store_rows"] != n_rows or state["train_people"] != train_people or state["val_people"] != val_people
            or state.get("store_fingerprint", store_fp) != store_fp):  # checkpoints before the fingerprint: rows
        raise TrainingError(f"{ckpt}: was written for another patch store ({state['store']}, {state['store_rows']} "
                            f"pairs) than {store_path} ({n_rows} pairs); use another --output folder")
    # The position in an epoch counts each process's steps; another process count would repeat or skip rows.
    if state.get("world_size", 1) != world:
        raise TrainingError(f"{ckpt}: was written by {state.get('world_size', 1)} training process(es), this run has "
                            f"{world}; resume with the same number (torchrun --nproc_per_node), or {_AFRESH}")
    reached = state["epoch"] + (1 if state["step_in_epoch"] > 0 else 0)
    if cfg.epochs < reached:
        raise TrainingError(f"{ckpt}: training has reached epoch {reached} of its run; --epochs {cfg.epochs} would "
                            f"end it before that (give at least {reached}), or {_AFRESH}")


def _check_finite_loss(sums: torch.Tensor, step: int, out: Path) -> None:
    """Stop a diverged run (all ranks see the same all-reduced sums, so all stop together)."""
    if not bool(torch.isfinite(sums).all()):
        raise TrainingError(f"training diverged: the loss is not finite (NaN or inf) by step {step}; nothing more "
                            f"was saved, and {out} keeps its last checkpoint. Lower the learning rate (--lr)")


def train_hallucination(store: str | os.PathLike | PatchStore, output: str | os.PathLike,
                        config: TrainConfig | None = None, forbidden_people: list[str] | None = None,
                        progress: Callable[[int, int, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train the Y/Cb/Cr hallucination CNNs on a patch store and save the model to ``output`` (paper Sec. 3).

    Resumes from ``output/checkpoint.*`` when present (same settings required, except epochs, limits,
    workers, threads, logging, checkpoint and validation frequency; the same number of processes). On the
    CPU, with the same machine and thread count, the resumed run ends with bit for bit the weights of an
    uninterrupted one (on CUDA, cuDNN's convolution kernels need not be deterministic).

    Parameters
    ----------
    store
        Patch store written by ``nirvis mine`` (HDF5; read in chunks, never whole).
    output
        Model folder: receives ``weights.safetensors`` + ``config.json`` (load with
        :func:`~nirvis.hallucination.io.load_model`), ``history.json``, ``loss.png`` and the checkpoint.
    config
        Settings (default :class:`TrainConfig`: the paper's).
    forbidden_people
        People who must not be in the store (the evaluation split's test people); the store is refused
        (:class:`~nirvis.mining.store.StorePeopleError`) if it holds any.
    progress
        Called on rank 0 after every step as ``progress(step, total_steps, info)`` with ``info`` holding
        ``epoch``, ``train`` and ``val`` (latest logged per-channel MSE, or ``None``). An exception raised
        from it stops training, leaving the last checkpoint to resume from.

    Returns
    -------
    dict
        ``output``, ``steps``, ``total_steps``, ``epochs_completed``, ``complete``, ``stopped`` (``None``,
        ``"max_steps"`` or ``"max_seconds"``), ``samples`` (patches trained on, all ranks), ``train_s``,
        ``wall_s``, ``patches_per_s``, ``train`` / ``val`` (last per-channel MSE), ``resumed_from_step``,
        ``train_people`` / ``val_people`` (counts), ``rank``, ``world_size``, ``device``, ``fingerprint``.

    Raises
    ------
    TrainingError
        Bad setting, a store with no training pairs, a checkpoint of other settings, or an output folder
        already holding a finished model.
    StorePeopleError, StoreError
        Forbidden people in the store; missing or incomplete store.
    """
    cfg = replace(config) if config is not None else TrainConfig()
    cfg.validate()
    t_start = time.perf_counter()
    out = Path(output)
    store_path = store.path if isinstance(store, PatchStore) else Path(store)
    old_threads = torch.get_num_threads()
    dist = _setup_dist()
    finished = False
    try:
        if cfg.threads is not None:
            torch.set_num_threads(cfg.threads)
        with torch.random.fork_rng(devices=[]):  # the data loaders draw from torch's global generator
            summary = _train(store_path, out, cfg, forbidden_people, progress, dist, t_start)
        finished = True
        return summary
    finally:
        torch.set_num_threads(old_threads)
        if dist.owns_group:
            import torch.distributed as tdist

            if finished and dist.world > 1:
                # rank 0 still saves the model while the others are done; tearing gloo down on one rank
                # while its peer is busy aborted a CI run, so every rank leaves together
                tdist.barrier()
            tdist.destroy_process_group()


def _train(store_path: Path, out: Path, cfg: TrainConfig, forbidden_people: list[str] | None,
           progress: Callable[[int, int, dict[str, Any]], None] | None, dist: _Dist, t_start: float) -> dict[str, Any]:
    channels = tuple(cfg.channels)
    # --- data: by-person split, rows, shuffle geometry
    with PatchStore(store_path) as st:
        if forbidden_people is not None:
            check_store_people(st, forbidden_people)
        store_people, reference, n_rows = st.people, st.reference, len(st)
        store_fp = _store_fingerprint(st)
        # Mining keeps people all of whose pairs failed; drawing one for validation would leave it empty.
        with_rows = set(np.unique(st.dataset("person")[:]).tolist())
        split = split_people([p for i, p in enumerate(store_people) if i in with_rows] or store_people,
                             cfg.val_fraction, cfg.seed)
        train_rows, val_rows = store_rows(st, split.train), store_rows(st, split.val)
        chunks = st.dataset("nir").chunks
        chunk = int(chunks[0]) if chunks else 256
    if train_rows.size == 0:
        raise TrainingError(f"{store_path}: no patch pairs of the {len(split.train)} training people")
    if cfg.val_max_patches is not None and val_rows.size > cfg.val_max_patches:
        val_rows = val_rows[np.linspace(0, val_rows.size - 1, cfg.val_max_patches).round().astype(np.int64)]
    val_blocks = PatchBlocks(store_path, shard_blocks(epoch_blocks(val_rows, chunk=chunk, block_chunks=cfg.block_chunks,
                                                                   shuffle=False), dist.rank, dist.world), channels)

    def blocks_of(epoch: int) -> list[np.ndarray]:
        """All ranks' shuffle blocks of ``epoch``."""
        return epoch_blocks(train_rows, chunk=chunk, block_chunks=cfg.block_chunks, seed=cfg.seed, epoch=epoch)

    geometry: dict[int, tuple[int, list[int]]] = {}

    def epoch_geometry(epoch: int) -> tuple[int, list[int]]:
        """Steps of ``epoch`` and the rows of each rank's share."""
        if dist.world == 1:
            return -(-int(train_rows.size) // cfg.batch_size), [int(train_rows.size)]
        if epoch not in geometry:
            blocks = blocks_of(epoch)
            geometry[epoch] = (steps_per_epoch(blocks, cfg.batch_size, dist.world),
                               [sum(b.size for b in shard_blocks(blocks, r, dist.world)) for r in range(dist.world)])
        return geometry[epoch]

    def samples_at(epoch: int, k: int) -> int:
        """Patches trained on, over all ranks, in the first ``k`` steps of ``epoch``."""
        return sum(min(k * cfg.batch_size, n) for n in epoch_geometry(epoch)[1])

    total_steps = sum(epoch_geometry(e)[0] for e in range(cfg.epochs))
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)

    # --- model and optimiser
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        nets = HallucinationNets(cfg.net_specs(), channels=channels)
    nets.to(dist.device)
    opt = torch.optim.Adam(nets.parameters(), lr=cfg.resolved_lr(), betas=tuple(cfg.betas), eps=cfg.eps)
    use_amp = cfg.amp and dist.device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    def autocast():
        return torch.autocast("cuda", dtype=amp_dtype) if use_amp else nullcontext()

    # --- output folder: resume, refuse, or start afresh
    ckpt = out / CHECKPOINT
    history: dict[str, Any] = {"channels": list(channels), "log": [], "val": [], "epochs": []}
    epoch, k_in_epoch, step, train_s, wall_before = 0, 0, 0, 0.0, 0.0
    epoch_sums = torch.zeros(len(channels) + 1, dtype=torch.float64, device=dist.device)
    run_sums = torch.zeros_like(epoch_sums)
    resumed_from = None
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(out)
    if ckpt.is_file():
        tensors, state = _load_checkpoint(ckpt)
        _check_resume(state, cfg, store_path, n_rows, split.train, split.val, ckpt, dist.world, store_fp)
        nets.load_state_dict({k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")})
        opt.load_state_dict(_unflatten_optimizer(tensors, state["optimizer"]))
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        epoch, k_in_epoch, step = state["epoch"], state["step_in_epoch"], state["step"]
        train_s, wall_before, history = state["train_s"], state["wall_s"], state["history"]
        if dist.main:  # the running loss sums of all ranks, summed; the other ranks start from zero
            epoch_sums, run_sums = torch.tensor(state["loss_sums"], dtype=torch.float64, device=dist.device).clone()
        resumed_from = step
        log.info("resuming %s at epoch %d, step %d", ckpt, epoch, step)
    elif (out / CONFIG).is_file() or (out / WEIGHTS).is_file():
        raise TrainingError(f"{out}: already holds a trained model ({CONFIG}) and no checkpoint to resume; "
                            f"choose another --output folder, or {_AFRESH}")

    model: torch.nn.Module = nets
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(nets, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)

    def wall() -> float:
        return wall_before + time.perf_counter() - t_start

    def samples_done() -> int:
        return sum(samples_at(e, epoch_geometry(e)[0]) for e in range(epoch)) + samples_at(epoch, k_in_epoch)

    def validate() -> dict[str, float] | None:
        if not val_rows.size:
            return None
        v = _named(_evaluate(nets, val_blocks, cfg, dist, autocast), channels)
        history["val"].append({"step": step, "epoch": epoch, "samples": samples_done(), "train_s": round(train_s, 3),
                               "wall_s": round(wall(), 3), "val": v})
        return v

    def checkpoint() -> None:
        """Write the checkpoint (rank 0); collective: every rank calls it at the same step."""
        all_sums = dist.all_sum(torch.stack([epoch_sums, run_sums])).cpu()
        _check_finite_loss(all_sums, step, out)
        loss_sums = all_sums.tolist()
        if not dist.main:
            return
        state = {"epoch": epoch, "step_in_epoch": k_in_epoch, "step": step, "train_s": train_s, "wall_s": wall(),
                 "rng": {"shuffle_seed_sequence": [cfg.seed, epoch], "note": "epoch order = epoch_blocks(seed, epoch)"},
                 "loss_sums": loss_sums, "scaler": scaler.state_dict() or None,
                 "training": cfg.to_dict(), "store": str(store_path.resolve()), "store_rows": n_rows,
                 "store_fingerprint": store_fp, "world_size": dist.world,
                 "train_people": split.train, "val_people": split.val, "history": history}
        _save_checkpoint(out, nets, opt, state)
        atomic_write_json(out / HISTORY, history)

    last_train: dict[str, float] | None = history["log"][-1]["train"] if history["log"] else None
    last_val: dict[str, float] | None = history["val"][-1]["val"] if history["val"] else None
    if resumed_from is None and cfg.val_at_start:
        last_val = validate()
    stopped: str | None = None
    last_val_s = history["val"][-1]["train_s"] if history["val"] else 0.0
    timed = cfg.max_seconds is not None or cfg.val_every_seconds is not None
    nets.train()

    while epoch < cfg.epochs:
        if cfg.max_steps is not None and step >= cfg.max_steps:
            stopped = "max_steps"
            break
        if cfg.max_seconds is not None and dist.from_main([train_s >= cfg.max_seconds])[0]:  # a rerun, time spent
            stopped = "max_seconds"
            break
        n_steps = epoch_geometry(epoch)[0]
        mine = PatchBlocks(store_path, shard_blocks(blocks_of(epoch), dist.rank, dist.world), channels)
        batches = iter_batches(mine, cfg.batch_size, start=k_in_epoch, stop=n_steps, num_workers=cfg.num_workers,
                               pin_memory=dist.device.type == "cuda")
        t0 = time.perf_counter()
        for nir, target in batches:
            x, t = to_unit(nir, dist.device), to_unit(target, dist.device)
            opt.zero_grad(set_to_none=True)
            with autocast():
                pred = model(x)
            losses = _mse_per_channel(pred, t)
            scaler.scale(losses.sum()).backward()
            scale = scaler.get_scale() if scaler.is_enabled() else None
            scaler.step(opt)
            scaler.update()
            step += 1
            k_in_epoch += 1
            # float16: a step whose gradients overflowed is skipped (the scale drops); its inf loss is not a loss
            if scale is None or scaler.get_scale() >= scale:
                weighted = losses.detach().double() * x.shape[0]
                for sums in (run_sums, epoch_sums):
                    sums[:-1] += weighted
                    sums[-1] += x.shape[0]
            train_s += time.perf_counter() - t0
            mid_epoch = k_in_epoch < n_steps
            if step % cfg.log_every == 0:
                s = dist.all_sum(run_sums.clone()).cpu()
                _check_finite_loss(s, step, out)
                if s[-1] > 0:  # float16: every step since the last entry may have been skipped
                    last_train = _named(s[:-1] / s[-1], channels)
                    history["log"].append({"step": step, "epoch": epoch, "samples": samples_done(),
                                           "train_s": round(train_s, 3), "wall_s": round(wall(), 3),
                                           "train": last_train})
                run_sums.zero_()
            time_val = time_stop = False
            if timed:  # decided on rank 0's clock, so that every rank takes the same branch
                time_val, time_stop = dist.from_main([
                    cfg.val_every_seconds is not None and train_s - last_val_s >= cfg.val_every_seconds,
                    cfg.max_seconds is not None and train_s >= cfg.max_seconds])
            if mid_epoch and (time_val or (cfg.val_every and step % cfg.val_every == 0)):
                last_val, last_val_s = validate(), train_s
            if time_stop:
                stopped = "max_seconds"
            elif cfg.max_steps is not None and step >= cfg.max_steps:
                stopped = "max_steps"
            if mid_epoch and stopped is None and cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                checkpoint()
            if progress is not None and dist.main:
                progress(step, total_steps, {"epoch": epoch, "train": last_train, "val": last_val})
            if stopped is not None and mid_epoch:
                break
            t0 = time.perf_counter()
        batches.close()
        if stopped is not None and k_in_epoch < n_steps:
            break
        # --- epoch end: validate, record, checkpoint
        s = dist.all_sum(epoch_sums.clone()).cpu()
        _check_finite_loss(s, step, out)
        last_val, last_val_s = validate(), train_s
        history["epochs"].append({"epoch": epoch, "step": step, "samples": samples_done(), "train_s": round(train_s, 3),
                                  "wall_s": round(wall(), 3), "train": _named(s[:-1] / s[-1], channels),
                                  "val": last_val, "partial": False})
        epoch, k_in_epoch = epoch + 1, 0
        epoch_sums.zero_()
        checkpoint()
        if dist.main and epoch < cfg.epochs and stopped is None:  # the last one is plotted below
            plot_history(history, out / LOSS_PLOT, title=f"hallucination CNNs ({cfg.preset}): MSE per channel")
        if stopped is not None:
            break

    complete = epoch >= cfg.epochs
    if not complete and k_in_epoch > 0:  # stopped mid-epoch: validate here, keep a checkpoint to continue from
        if not history["val"] or history["val"][-1]["step"] != step:
            last_val = validate()
        checkpoint()
        s = dist.all_sum(epoch_sums.clone()).cpu()
        history["epochs"].append({"epoch": epoch, "step": step, "samples": samples_done(), "train_s": round(train_s, 3),
                                  "wall_s": round(wall(), 3), "train": _named(s[:-1] / s[-1], channels),
                                  "val": last_val, "partial": True})

    model_obj = HallucinationModel(nets=nets, reference=reference, meta={
        "train_people": split.train, "val_people": split.val, "store": str(store_path.resolve()),
        "store_people": store_people, "preset": cfg.preset, "training": cfg.to_dict(), "history": history})
    if dist.main:
        save_model(out, model_obj)
        atomic_write_json(out / HISTORY, history)
        plot_history(history, out / LOSS_PLOT, title=f"hallucination CNNs ({cfg.preset}): MSE per channel")
        if complete and not cfg.keep_checkpoint:
            (out / CHECKPOINT).unlink(missing_ok=True)
            (out / CHECKPOINT_JSON).unlink(missing_ok=True)
    done = samples_done()
    return {"output": str(out), "steps": step, "total_steps": total_steps, "epochs_completed": epoch,
            "complete": complete, "stopped": stopped, "samples": done, "train_s": round(train_s, 3),
            "wall_s": round(wall(), 3), "patches_per_s": round(done / train_s, 3) if train_s > 0 else math.nan,
            "train": last_train, "val": last_val, "resumed_from_step": resumed_from,
            "train_people": len(split.train), "val_people": len(split.val), "rank": dist.rank,
            "world_size": dist.world, "device": str(dist.device), "fingerprint": model_obj.fingerprint}
