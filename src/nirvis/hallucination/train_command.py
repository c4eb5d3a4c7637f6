"""``nirvis train-hallucination``: train the Y/Cb/Cr hallucination CNNs on a mined patch store (paper Sec. 3).

Register it on the CLI app with ``app.command("train-hallucination")(train_hallucination)``. The module
imports only typer and the standard library at the top, so ``nirvis --help`` stays instant.
"""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

__all__ = ["train_hallucination", "resolve_test_people", "PresetName"]


class PresetName(str, Enum):
    paper = "paper"
    cpu = "cpu"


def resolve_test_people(splits: list, split: str) -> tuple[list[str], str]:
    """People who must stay out of training for ``split`` (the forms of ``nirvis mine --split``).

    ``train-of-fold-K`` or a split's name: that split's test people (gallery and probes). ``all``: the
    people who are never training people in any split.

    Raises
    ------
    ValueError
        Naming the bad value and the valid choices.
    """
    from nirvis.mining.command import resolve_training_people

    train, name = resolve_training_people(splits, split)
    if name == "all":
        tested = set().union(*(set(s.test_people) for s in splits))
        return sorted(tested - set(train)), name
    sp = next(s for s in splits if s.name == name)
    return sp.test_people, name


def _fail(msg: str, code: int = 2) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True, markup=True)
    raise typer.Exit(code)


def train_hallucination(
    store: Annotated[Path, typer.Option("--store", "-s", help="Patch store from `nirvis mine` (HDF5).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Model folder to write (weights.safetensors + config.json, history, checkpoint).")],
    preset: Annotated[PresetName, typer.Option(help="Networks: paper (Table 1) or cpu (small, trains in minutes on a CPU).")] = PresetName.paper,
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the training patches (paper: 10).")] = 10,
    lr: Annotated[Optional[float], typer.Option(help="Adam learning rate (default: the preset's; paper 1e-5).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Patches per step (and per rank under torchrun).")] = 64,
    val_fraction: Annotated[float, typer.Option(min=0.0, max=0.99, help="Fraction of people held out for validation (paper: 1/6).")] = 1 / 6,
    seed: Annotated[int, typer.Option(help="Seed of initialisation, person split and shuffling.")] = 0,
    channels: Annotated[str, typer.Option(help="Networks to train, comma-separated among y,cb,cr.")] = "y,cb,cr",
    dataset: Annotated[Optional[str], typer.Option(help="rap3df, casia or folder: refuse a store holding this split's test people.")] = None,
    data: Annotated[Optional[Path], typer.Option(help="Data folder of --dataset (default $NIRVIS_DATA or ../shared/data).")] = None,
    protocol: Annotated[Optional[str], typer.Option(help="Protocol of --dataset (see nirvis evaluate).")] = None,
    split: Annotated[str, typer.Option(help="With --dataset: train-of-fold-K (0-based), a split name, or all.")] = "train-of-fold-0",
    train_data: Annotated[Optional[Path], typer.Option(help="With --dataset rap3df/folder: extra training folder (as for mine).")] = None,
    max_steps: Annotated[Optional[int], typer.Option(min=1, help="Stop after this many steps (quick runs); rerun with more to continue.")] = None,
    max_minutes: Annotated[Optional[float], typer.Option(help="Stop after this much training time, summed over reruns; rerun with more to continue.")] = None,
    threads: Annotated[Optional[int], typer.Option(min=1, help="Torch CPU threads.")] = None,
    workers: Annotated[int, typer.Option("--workers", "-j", min=0, help="Data-loading worker processes.")] = 0,
    checkpoint_every: Annotated[int, typer.Option(min=0, help="Also checkpoint every N steps (0: at epoch ends only).")] = 0,
    log_every: Annotated[int, typer.Option(min=1, help="Record the training loss every N steps.")] = 25,
    keep_checkpoint: Annotated[bool, typer.Option("--keep-checkpoint", help="Keep checkpoint.* after the last epoch.")] = False,
) -> None:
    """Train the three hallucination CNNs (Y, Cb, Cr) on mined NIR/VIS patches (paper Sec. 3).

    Adam (paper: lr 1e-5, 10 epochs), MSE per channel, a by-person 5/6 - 1/6 train/validation split.
    Resumable: rerun the same command after an interruption. Under
    `torchrun --nproc_per_node N -m nirvis.cli train-hallucination ...` it trains with distributed data parallel.
    """
    import logging

    from nirvis.errors import NirvisError
    from nirvis.hallucination.train import TrainConfig
    from nirvis.hallucination.train import train_hallucination as run_training

    logging.basicConfig(level=logging.WARNING)
    chans = tuple(c.strip().lower() for c in channels.split(",") if c.strip())
    if max_minutes is not None and not max_minutes > 0:
        _fail(f"--max-minutes must be > 0, got {max_minutes}")
    rank0 = int(os.environ.get("RANK", "0")) == 0
    try:
        config = TrainConfig(preset=preset.value, channels=chans, epochs=epochs, batch_size=batch_size, lr=lr,
                             val_fraction=val_fraction, seed=seed, num_workers=workers, checkpoint_every=checkpoint_every,
                             log_every=log_every, max_steps=max_steps, threads=threads, keep_checkpoint=keep_checkpoint,
                             max_seconds=None if max_minutes is None else 60.0 * max_minutes)
        config.validate()
        forbidden = None
        if dataset is not None:
            from nirvis.data import find_data_root
            from nirvis.datasets import load_protocol

            _, splits, _ = load_protocol(dataset, find_data_root(data), protocol, train_data)
            forbidden, split_name = resolve_test_people(splits, split)
            if rank0:
                typer.echo(f"checking the store against the {len(forbidden)} test people of {dataset} {split_name}",
                           err=True)
        elif rank0:
            typer.echo("note: no --dataset given, so the store is not checked against an evaluation split's "
                       "test people", err=True)
        summary = _run(run_training, store, output, config, forbidden, show=rank0)
    except KeyboardInterrupt:
        _fail(f"interrupted; rerun the same command to resume {output} from its last checkpoint", code=130)
    except (NirvisError, ValueError, OSError) as exc:
        _fail(str(exc))
    if not rank0:
        return
    val = summary["val"] or {}
    how = "complete" if summary["complete"] else (
        f"stopped by --{'max-minutes' if summary['stopped'] == 'max_seconds' else 'max-steps'}, rerun with more to "
        "continue")
    typer.echo(f"trained {summary['steps']} steps ({summary['epochs_completed']} epochs, {how}) on "
               f"{summary['train_people']} people, {summary['samples']} patches at {summary['patches_per_s']:.1f} "
               f"patches/s; validation MSE ({summary['val_people']} people): "
               + (", ".join(f"{c} {v:.5f}" for c, v in val.items()) or "n/a")
               + f"; wrote {output}")


def _run(run_training, store: Path, output: Path, config, forbidden: list[str] | None, show: bool) -> dict:
    if not show:
        return run_training(store, output, config, forbidden_people=forbidden)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[loss]}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task("train", total=None, loss="")

        def progress(step: int, total: int, info: dict) -> None:
            tr, va = info.get("train"), info.get("val")
            loss = f"epoch {info['epoch'] + 1}/{config.epochs}"
            if tr:
                loss += " train " + " ".join(f"{c} {v:.4f}" for c, v in tr.items())
            if va:
                loss += " | val " + " ".join(f"{c} {v:.4f}" for c, v in va.items())
            bar.update(task, completed=step, total=total, loss=loss)

        return run_training(store, output, config, forbidden_people=forbidden, progress=progress)
