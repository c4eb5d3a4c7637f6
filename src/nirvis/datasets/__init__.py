"""Datasets and their evaluation protocols: one :class:`Sample` model for all of them."""

from __future__ import annotations

from pathlib import Path

from nirvis.datasets.base import MODALITIES, Sample, Split, by_person, people
from nirvis.errors import DatasetError

__all__ = ["Sample", "Split", "MODALITIES", "people", "by_person", "load_protocol", "DATASETS"]

DATASETS = ("rap3df", "casia", "folder")


def load_protocol(dataset: str, data: str | Path, protocol: str | None = None,
                  train_data: str | Path | None = None) -> tuple[str, list[Split], list[Sample]]:
    """Splits of a dataset's protocol, and every sample they use (for featurizing once).

    Parameters
    ----------
    dataset
        ``"rap3df"``, ``"casia"`` or ``"folder"``.
    data
        The dataset's folder (for RAP3DF and CASIA also the data folder that holds it).
    protocol
        RAP3DF: ``"splits"`` (default, 10 random 24/24 splits). CASIA: ``"view2"`` (default, folds 1-10),
        ``"view2:K"`` (one fold), ``"view1"``, ``"sixfold"``. Folder: none (only ``None`` is accepted).
    train_data
        RAP3DF and folder: a second folder whose people are all training; ``data``'s people are all test.
        CASIA: not accepted (its protocols say who trains).

    Raises
    ------
    ValueError
        For an unknown dataset, a protocol the dataset does not have, or ``train_data`` with CASIA.

    Returns
    -------
    protocol name, splits, all samples (train, gallery and probes of every split, plus the whole dataset
    for RAP3DF so that the alignment rate covers every capture).
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if dataset == "rap3df" and protocol not in (None, "splits"):
        raise ValueError(f"RAP3DF has one protocol, 'splits' (10 random 24/24 person splits), got {protocol!r}")
    if dataset == "folder" and protocol is not None:
        raise ValueError(f"a folder dataset has no protocols (its people are split by the folders), got {protocol!r}")
    if dataset == "casia" and train_data is not None:
        raise ValueError("CASIA's protocols say who trains; a separate training folder is not accepted "
                         f"(got {str(train_data)!r})")
    if dataset == "rap3df":
        from nirvis.datasets import rap3df

        sets = rap3df.load_rap3df(data)
        every = [s for v in sets.values() for s in v]  # the alignment rate covers every capture of --data
        if train_data is not None:
            split = rap3df.rap3df_external_split(sets, rap3df.load_rap3df(train_data))
            used = _all_samples([split])
            ids = {s.capture_id for s in used}
            return "rap3df-external", [split], used + [s for s in every if s.capture_id not in ids]
        splits = rap3df.rap3df_splits(sets)  # 2019 people: N_TRAIN train, the others are tested
        return f"rap3df-{len(splits)}x{rap3df.N_TRAIN}/{len(splits[0].test_people)}", splits, every
    if dataset == "casia":
        from nirvis.datasets import casia

        root = Path(data)
        root = root / "casia" if (root / "casia").is_dir() else root
        proto = protocol or "view2"
        if proto == "view2":
            splits = [casia.view2_split(root, k) for k in range(1, 11)]
        elif proto.startswith("view2:"):
            fold = proto.split(":", 1)[1]
            if not fold.isdigit() or not 1 <= int(fold) <= 10:
                raise ValueError(f"CASIA protocol {proto!r}: the fold K of view2:K must be 1..10, got {fold!r}")
            proto = f"view2:{int(fold)}"  # view2:01 is view2:1
            splits = [casia.view2_split(root, int(fold))]
        elif proto == "view1":
            splits = [casia.view1_split(root)]
        elif proto == "sixfold":
            splits = casia.six_fold_splits(root)
        else:
            raise ValueError(f"unknown CASIA protocol {proto!r}; use view2, view2:K (K=1..10), view1 or sixfold")
        return f"casia-{proto}", splits, _all_samples(splits)
    if dataset == "folder":
        from nirvis.datasets import folder

        split = folder.folder_split(data, train_root=train_data)
        return "folder", [split], _all_samples([split])
    raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")


def _all_samples(splits: list[Split]) -> list[Sample]:
    """Every sample of the splits once, by capture id (features are looked up by it)."""
    seen: dict[str, Sample] = {}
    for sp in splits:
        for s in (*sp.train, *sp.gallery, *sp.probes):
            first = seen.setdefault(s.capture_id, s)
            if first.path != s.path or first.person != s.person or first.modality != s.modality:
                raise DatasetError(f"split {sp.name}: two images share capture id {s.capture_id!r} ({first.path} "
                                   f"and {s.path}); one would be scored with the other's features")
    return list(seen.values())
