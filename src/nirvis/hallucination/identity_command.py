"""``nirvis train-hallucination-id``: hallucination networks trained through the frozen dlib network (``H(id)``).

Register it on the CLI app with ``app.command("train-hallucination-id")(train_hallucination_id)``. Only typer
and the standard library are imported at the top, so ``nirvis --help`` stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nirvis.hallucination.train_command import PresetName, _fail, resolve_test_people

__all__ = ["train_hallucination_id", "MIN_TRAIN_SET_PEOPLE"]

#: Fewest training people of the test people's capture set (RAP3DF: 2019) for the default ``--train-set`` to
#: train on them only.
MIN_TRAIN_SET_PEOPLE = 8


def train_hallucination_id(
    output: Annotated[Path, typer.Option("--output", "-o", help="Model folder to write (weights.safetensors + config.json + history.json).")],
    dataset: Annotated[str, typer.Option(help="rap3df, casia or folder.")] = "rap3df",
    data: Annotated[Optional[Path], typer.Option(help="Data folder (default $NIRVIS_DATA or ../shared/data).")] = None,
    protocol: Annotated[Optional[str], typer.Option(help="Protocol of --dataset (see nirvis evaluate).")] = None,
    split: Annotated[str, typer.Option(help="Whose faces train: train-of-fold-K (0-based), a split name, or all.")] = "train-of-fold-0",
    train_data: Annotated[Optional[Path], typer.Option("--train-data", help="rap3df/folder: a folder whose people all train.")] = None,
    preset: Annotated[PresetName, typer.Option(help="Networks: cpu (default) or paper (Table 1; slow on a CPU).")] = PresetName.cpu,
    max_minutes: Annotated[float, typer.Option(min=0.05, help="Training time.")] = 5.0,
    lr: Annotated[float, typer.Option(min=0.0, help="Adam learning rate.")] = 3e-3,
    batch_size: Annotated[int, typer.Option(min=1, help="Faces per step.")] = 8,
    val_every: Annotated[int, typer.Option(min=1, help="Steps between validations.")] = 20,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the person split, initialisation and batches.")] = 0,
    threads: Annotated[Optional[int], typer.Option(min=1, help="Torch CPU threads.")] = None,
    val_set: Annotated[Optional[str], typer.Option("--val-set", help="RAP3DF: draw the validation people from this capture set (default 2019, the set test people come from; 'any' for every training person).")] = None,
    val_fraction: Annotated[float, typer.Option(min=0.01, max=0.9, help="Share of the candidates held out to choose the step.")] = 0.25,
    train_set: Annotated[Optional[str], typer.Option("--train-set", help="RAP3DF: train on the training people of this capture set only: default 2019, the test people's NIR camera, when at least 8 training people come from it (else every training person); 'any' for every training person.")] = None,
    normalize: Annotated[bool, typer.Option("--normalize/--no-normalize", help="Normalise the NIR faces' mean and std to the training median first (the paper's mining step); off by default, so step 0 is the NIR face as it is.")] = False,
) -> None:
    """Train the Y/Cb/Cr networks for recognition (beyond the paper): an identity loss through dlib's frozen
    ResNet on whole aligned NIR faces, the step chosen by held-out training people's rank-1.

    Evaluate with `nirvis evaluate --hallucination MODEL`: the rows are named H(id), and no eq. (1) blend is
    applied unless --alpha is given.
    """
    from nirvis.data import find_data_root
    from nirvis.datasets import load_protocol
    from nirvis.errors import NirvisError
    from nirvis.features.cache import FeatureCache
    from nirvis.hallucination.identity import IdentityTrainConfig, train_identity_hallucination, training_data
    from nirvis.mining.command import resolve_training_people
    from nirvis.pipeline import Recognizer

    if output.exists() and not output.is_dir():
        _fail(f"--output {output}: is a file; give a folder for the model")
    try:
        cfg = IdentityTrainConfig(preset=preset.value, lr=lr, batch_size=batch_size, max_seconds=60 * max_minutes,
                                  val_every=val_every, seed=seed, threads=threads, val_fraction=val_fraction)
        root = find_data_root(data)
        name, splits, _ = load_protocol(dataset, root, protocol, train_data)
        people, split_name = resolve_training_people(splits, split)
        forbidden, _ = resolve_test_people(splits, split)
        train = [s for sp in splits for s in sp.train if s.person in set(people)]
        train = list({s.capture_id: s for s in train}.values())
    except (NirvisError, ValueError) as exc:
        _fail(str(exc))
    if set(people) & set(forbidden):
        _fail(f"--split {split}: its training people include test people {sorted(set(people) & set(forbidden))[:3]}")
    if train_set is None and dataset == "rap3df":
        # A model trained mostly on the 2017 camera's NIR did not carry over to the 2019 test people; one trained on
        # 2019 people only did (docs/BENCHMARKS.md, issue 11, step 5).
        n_2019 = len({s.person for s in train if s.meta.get("set") == "2019"})
        train_set = "2019" if n_2019 >= MIN_TRAIN_SET_PEOPLE else None
        if train_set is None:
            typer.echo(f"note: {n_2019} training people of the 2019 set (under {MIN_TRAIN_SET_PEOPLE}): training on "
                       "every training person", err=True)
    if train_set is not None and train_set != "any":
        train = [s for s in train if s.meta.get("set") == train_set]
        people = sorted({s.person for s in train})
        if len(people) < 4:
            _fail(f"--train-set {train_set}: {len(people)} training people of {split_name} in that capture set "
                  "(RAP3DF's sets are 2017 and 2019)")
    chosen_set = val_set or ("2019" if dataset == "rap3df" else "any")
    candidates = None
    if chosen_set != "any":
        candidates = sorted({s.person for s in train if s.meta.get("set") == chosen_set})
        if len(candidates) < 4:
            _fail(f"--val-set {chosen_set}: {len(candidates)} training people of that set; give another set or 'any'")
    rec = Recognizer("dlib", cache=FeatureCache())
    typer.echo(f"preparing the faces of {len(people)} training people of {name} {split_name}", err=True)
    try:
        batch, centroids, reference = training_data(rec, train, normalize=normalize)
        typer.echo(f"{len(batch.nir)} NIR faces of {len(batch.people)} people; training for {max_minutes:g} min",
                   err=True)
        record = train_identity_hallucination(
            batch, centroids, reference, output, cfg,
            meta={"train_people": sorted(people), "dataset": dataset, "protocol": name, "split": split_name,
                  "val_set": chosen_set, "train_set": train_set or "any"},
            progress=lambda m: typer.echo(m, err=True), val_candidates=candidates)
    except (NirvisError, ValueError, OSError) as exc:
        _fail(str(exc), code=1)
    typer.echo(f"trained {record['steps']} steps in {record['seconds']:.0f} s; best validation rank-1 "
               f"{100 * record['best_val_rank1']:.1f}% at step {record['best_step']}; wrote {output}")
