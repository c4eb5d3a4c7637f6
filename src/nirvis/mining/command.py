"""``nirvis mine``: mine NIR/VIS patch pairs of a dataset's training people (paper Sec. 3.1).

Register it on the CLI app with ``app.command("mine")(mine)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

__all__ = ["mine", "resolve_training_people", "check_not_tested"]


def resolve_training_people(splits: list, split: str) -> tuple[list[str], str]:
    """Training people of ``split``: ``train-of-fold-K`` (K = 0-based index of the protocol's splits, e.g.
    rap3df-seed0..9), a split's name, or ``all`` (the union over every split).

    Raises
    ------
    ValueError
        Naming the bad value and the valid choices.
    """
    names = [s.name for s in splits]
    if split == "all":
        return sorted(set().union(*(set(s.train_people) for s in splits))), "all"
    if split.startswith("train-of-fold-"):
        k_txt = split.removeprefix("train-of-fold-")
        if not k_txt.isdigit() or int(k_txt) >= len(splits):
            raise ValueError(f"--split {split!r}: K must be 0..{len(splits) - 1} for this protocol "
                             f"({', '.join(names)})")
        sp = splits[int(k_txt)]
        return sp.train_people, sp.name
    if split in names:
        sp = splits[names.index(split)]
        return sp.train_people, sp.name
    raise ValueError(f"--split {split!r}: use train-of-fold-K (K=0..{len(splits) - 1}), all, or one of "
                     f"{', '.join(names)}")


def check_not_tested(splits: list, people: list[str], split_name: str) -> None:
    """Refuse to mine ``people`` for ``split_name`` when some of them are tested in that split (e.g.
    ``--train-data`` and ``--data`` sharing people): their patches must never reach a training store.
    ``split_name == "all"`` (every split's training people) is the user's explicit choice and not checked.

    Raises
    ------
    ValueError
        Naming up to five such people.
    """
    if split_name == "all":
        return
    sp = next(s for s in splits if s.name == split_name)
    both = sorted(set(people) & {s.person for s in (*sp.gallery, *sp.probes)})
    if both:
        raise ValueError(f"split {sp.name}: {len(both)} training people are also test people "
                         f"({', '.join(both[:5])}{', ...' if len(both) > 5 else ''}); refusing to mine them")


def mine(
    output: Annotated[Path, typer.Option("--output", "-o", help="Patch store to write (HDF5, e.g. patches.h5).")],
    dataset: Annotated[str, typer.Option(help="rap3df, casia or folder.")] = "rap3df",
    data: Annotated[Optional[Path], typer.Option(help="Data folder (default $NIRVIS_DATA or ../shared/data).")] = None,
    split: Annotated[str, typer.Option(help="train-of-fold-K (0-based split index), a split name, or all.")] = "train-of-fold-0",
    protocol: Annotated[Optional[str], typer.Option(help="Protocol of the dataset (see nirvis evaluate).")] = None,
    train_data: Annotated[Optional[Path], typer.Option(help="Extra training folder (rap3df/folder).")] = None,
    workers: Annotated[int, typer.Option("--workers", "-j", min=1, help="Worker processes over people.")] = 1,
    aligned: Annotated[bool, typer.Option(help="Images are already aligned 224x224 faces (no detection).")] = False,
    window: Annotated[int, typer.Option(help="Window side (paper: 60).")] = 60,
    stride: Annotated[int, typer.Option(help="Window stride (paper: 12).")] = 12,
    patch: Annotated[int, typer.Option(help="Centre crop side (paper: 40).")] = 40,
    min_sum: Annotated[float, typer.Option(help="Keep if s1 + s2 > this (paper: 1).")] = 1.0,
    min_s1: Annotated[float, typer.Option(help="Keep if s1 >= this (paper: 0.4).")] = 0.4,
    min_s2: Annotated[float, typer.Option(help="Keep if s2 >= this (paper: 0.4).")] = 0.4,
    ecc_iterations: Annotated[int, typer.Option(min=1, help="ECC iteration cap.")] = 50,
    ecc_eps: Annotated[float, typer.Option(help="ECC convergence tolerance.")] = 1e-4,
    prune_quantile: Annotated[float, typer.Option(help="Cap per window location: this quantile of the counts (1 = no pruning).")] = 0.9,
    seed: Annotated[int, typer.Option(help="Seed of pruning and of the report sheet.")] = 0,
    no_flip: Annotated[bool, typer.Option("--no-flip", help="Do not add horizontal flips.")] = False,
    simultaneous: Annotated[str, typer.Option(help="Frames taken at the same moment (RAP3DF): paper (the paper's tests, like every other pair) or geometric (registered whole, every unbroken face window kept: 7x more pairs, but a patch-trained H did worse on them).")] = "paper",
    norm_region: Annotated[str, typer.Option(help="Photometric statistics over the whole frame (frame) or the face region (face).")] = "frame",
    report: Annotated[bool, typer.Option(help="Write the report (summary, heatmap, histograms, sheet).")] = True,
    parts_cache: Annotated[Optional[Path], typer.Option(
        help="Folder of per-person results shared by the stores of several splits (each person is mined once); "
             "kept after the run.")] = None,
) -> None:
    """Mine registered NIR/VIS patch pairs of the training people into an HDF5 store (paper Sec. 3.1).

    Resumable: rerun the same command after an interruption.
    """
    import logging

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from nirvis.data import find_data_root
    from nirvis.datasets import load_protocol
    from nirvis.errors import NirvisError
    from nirvis.mining.config import MiningConfig
    from nirvis.mining.miner import jobs_from_samples, mine_store
    from nirvis.mining.report import write_report

    logging.basicConfig(level=logging.WARNING)
    if output.is_dir():
        typer.echo(f"error: --output {output}: is a folder; give the store's file name (e.g. patches.h5)", err=True)
        raise typer.Exit(code=1)
    try:
        config = MiningConfig(window=window, stride=stride, patch=patch, min_sum=min_sum, min_s1=min_s1,
                              min_s2=min_s2, ecc_iterations=ecc_iterations, ecc_eps=ecc_eps,
                              prune_quantile=prune_quantile, seed=seed, flip=not no_flip, simultaneous=simultaneous,
                              norm_region=norm_region)
        root = find_data_root(data)
        if dataset == "folder" and train_data is None:
            raise ValueError(f"a folder dataset mines the people of --train-data; --data ({root}) holds the test "
                             "people, whom mining must not see. Give --train-data TRAIN_FOLDER")
        _, splits, _ = load_protocol(dataset, root, protocol, train_data)
        people, split_name = resolve_training_people(splits, split)
        check_not_tested(splits, people, split_name)
        train = [s for sp in splits for s in sp.train]
        jobs = jobs_from_samples(train, people)
        if not jobs:
            raise ValueError(f"--split {split!r}: no training people found in {root}")
        meta = {"dataset": dataset, "data": str(root), "split": split_name, "protocol": protocol}
        with Progress(TextColumn("mining people"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      transient=True) as bar:
            task = bar.add_task("mine", total=len(jobs))
            summary = mine_store(jobs, output, config, workers=workers, aligned=aligned, meta=meta,
                                 parts_dir=parts_cache,
                                 progress=lambda done, total, person: bar.update(task, completed=done))
        files = write_report(output, seed=seed, run_info={"seconds": summary["seconds"], "workers": workers,
                                                          "resumed_people": summary["resumed_people"]}) if report else {}
    except (NirvisError, ValueError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    typer.echo(f"mined {summary['people']} people ({split_name}): {summary['windows_tried']} windows tried, "
               f"{summary['registration_failures']} registration failures, {summary['pairs_kept']} pairs kept, "
               f"{summary['pairs_pruned']} pruned, {summary['pairs_stored']} stored (with flips) in {output} "
               f"[{summary['seconds']:.1f} s]; images skipped: {summary.get('images_not_aligned', 0)} with no face, "
               f"{summary.get('images_unreadable', 0)} unreadable (listed per person in the summary)")
    if files:
        typer.echo(f"report: {files['summary'].parent}")
    if summary["pairs_stored"] == 0:
        # A store without pairs cannot train the hallucination networks: say so, and fail like `align` does
        # when nothing aligned, so that a script does not go on to train on it.
        typer.echo(f"error: no patch pair passed the tests (s1 >= {min_s1}, s2 >= {min_s2}, s1 + s2 > {min_sum}); "
                   f"{output} holds no pairs to train on. Check that the images are paired NIR/VIS captures of the "
                   "same moment, or lower the thresholds.", err=True)
        raise typer.Exit(code=1)
