"""RAP3DF: Kinect v2 IR + RGB faces, registered by the sensor (two sets, 2017 and 2019).

- 2019 set (``rap3df_data_02``): ``database.json`` maps person -> pose -> list of
  ``{"rgb": ..., "ir_with_bg": ...}`` paths relative to the ``rap3df`` folder.
- 2017 set (``rap3df_data``): ``<person>/k1_box_xy.bmp`` (RGB) and ``k1_box_xy_ir_view.bmp`` (IR), more
  captures under ``<person>/tests/<prefix>k1_box_xy[...].bmp``. All frontal.

The IR intensity is the red channel of a 24-bit BMP. Each RGB capture and its IR capture were taken at the
same moment, and are linked through :attr:`Sample.pair_id`.

Some volunteers were recorded under two ids (:data:`LINKED_IDS`). :func:`load_rap3df` gives each such
volunteer one person id, so that no split trains on a test person and no gallery holds one person twice.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from nirvis._io import read_json
from nirvis.datasets.base import Sample, Split, by_person, people
from nirvis.errors import DatasetError

__all__ = ["find_rap3df_sets", "load_rap3df", "load_set_2019", "load_set_2017", "link_ids", "rap3df_splits",
           "rap3df_people_splits", "rap3df_external_split", "LINKED_IDS", "N_SPLITS", "N_TRAIN"]

log = logging.getLogger(__name__)

#: Protocol constants: 10 random splits (seeds 0-9) of the 2019 people (48 once :data:`LINKED_IDS` are
#: merged) into 24 training and 24 test people.
N_SPLITS = 10
N_TRAIN = 24

#: Ids of one volunteer, ``(kept id, merged id)``: the merged id's samples get the kept id as their person.
#:
#: Evidence (``python benchmarks/rap3df_linked_ids.py --edgeface ../shared/models/edgeface_xs.onnx --sheet``,
#: docs/BENCHMARKS.md): every pair of the 112 ids was scored by the mean cosine between their RGB captures,
#: with dlib and with EdgeFace-XS. These five pairs are the top five for EdgeFace-XS (0.38-0.59, where the
#: 99.9th percentile of all 6,216 pairs is 0.26) and ranks 1, 2, 4, 5, 6 for dlib (0.931-0.961; 99.9th
#: percentile 0.929), and their captures side by side (both spectra, several poses) show one face. dlib's
#: third pair (QQD9DD2N67, THIAIY4X6N: EdgeFace 0.21, rank 30) and EdgeFace's sixth (9ZRBSP79OR,
#: JTOQCQJROW: 0.25, dlib rank 7) were looked at and left apart: different hair and face shape.
LINKED_IDS: tuple[tuple[str, str], ...] = (
    ("HO0XR9WJXA", "XNO1H41YON"),  # both 2019; EdgeFace 0.59, dlib 0.961
    ("29PDXCJR70", "QHLIZZYMRH"),  # both 2019; 0.46, 0.942
    ("77I4X1NQFM", "ODWWXBA"),     # 2019 / 2017; 0.46, 0.931
    ("84OH4YQEQO", "V7A1BPX"),     # 2019 / 2017; 0.46, 0.934
    ("YRFYHWA", "ORM23WA"),        # 2019 / 2017; 0.38, 0.934
)

_IR_2017 = "k1_box_xy_ir_view.bmp"
_RGB_2017 = "k1_box_xy.bmp"


def _pair(person: str, capture: str, rgb: Path, ir: Path, meta: dict) -> list[Sample]:
    vis_id, nir_id = f"{capture}/vis", f"{capture}/nir"
    return [
        Sample(person, "vis", rgb, vis_id, pair_id=nir_id, channel=None, meta=dict(meta)),
        Sample(person, "nir", ir, nir_id, pair_id=vis_id, channel="red", meta=dict(meta)),
    ]


def load_set_2019(folder: str | Path) -> list[Sample]:
    """Samples of a 2019-style folder (one holding ``database.json``).

    Paths in ``database.json`` are relative to the folder's parent (the ``rap3df`` folder); paths relative
    to the folder itself are accepted too.
    """
    folder = Path(folder)
    db_path = folder / "database.json"
    if not db_path.is_file():
        raise DatasetError(f"{db_path}: RAP3DF database file not found")
    db = read_json(db_path, DatasetError)
    if not isinstance(db, dict):
        raise DatasetError(f"{db_path}: expected an object person -> pose -> captures")

    missing: list[str] = []

    def resolve(rel: str) -> Path:
        inside = Path(*Path(rel).parts[1:]) if len(Path(rel).parts) > 1 else Path(rel)
        for p in (folder.parent / rel, folder / rel, folder / inside):  # the last: the set renamed or moved
            if p.exists():
                return p
        missing.append(rel)
        return folder.parent / rel  # kept: the evaluation counts it as a failed image, naming the file

    out: list[Sample] = []
    for person in sorted(db):
        poses = db[person] or {}
        if not isinstance(poses, dict):
            raise DatasetError(f"{db_path}: person {person!r} maps to a {type(poses).__name__}, expected an "
                               "object pose -> captures")
        for pose, caps in poses.items():
            if pose == "demography" or not caps:
                continue
            if not isinstance(caps, list):
                raise DatasetError(f"{db_path}: {person!r} / {pose!r}: expected a list of captures")
            for i, cap in enumerate(caps):
                if not (isinstance(cap, dict) and isinstance(cap.get("rgb"), str)
                        and isinstance(cap.get("ir_with_bg"), str)):
                    raise DatasetError(f"{db_path}: {person!r} / {pose!r} capture {i}: expected "
                                       "{\"rgb\": path, \"ir_with_bg\": path}")
                rgb, ir = resolve(cap["rgb"]), resolve(cap["ir_with_bg"])
                code = Path(cap["rgb"]).stem.removeprefix("rgb_")
                meta = {"set": "2019", "pose": pose, "index": i}
                out.extend(_pair(person, f"2019/{person}/{code}", rgb, ir, meta))
    if missing:
        log.warning("%s: %d of the files it lists are missing (e.g. %s); they will count as failed images", db_path,
                    len(missing), ", ".join(missing[:3]))
    return out


def load_set_2017(folder: str | Path) -> list[Sample]:
    """Samples of a 2017-style folder: ``<person>/k1_box_xy*.bmp`` and ``<person>/tests/<prefix>k1_box_xy*.bmp``.

    The main capture comes first for each person, then the ``tests/`` captures in name order. A capture
    whose IR or RGB file is missing is logged and left out.
    """
    folder = Path(folder)
    out: list[Sample] = []
    for pdir in sorted(p for p in folder.iterdir() if p.is_dir()):
        person = pdir.name
        rgbs = [(pdir / _RGB_2017, "main")] + [
            (f, f.name[: -len(_RGB_2017)]) for f in sorted((pdir / "tests").glob(f"*{_RGB_2017}"))
        ]
        for i, (rgb, prefix) in enumerate(rgbs):
            ir = rgb.with_name(rgb.name.replace(_RGB_2017, _IR_2017))
            if not (rgb.is_file() and ir.is_file()):
                if rgb.is_file() or ir.is_file():
                    log.warning("RAP3DF 2017: capture %s of %s has no IR/RGB partner; skipped", prefix, person)
                continue
            meta = {"set": "2017", "pose": "front", "index": i}
            out.extend(_pair(person, f"2017/{person}/{prefix}", rgb, ir, meta))
    return out


def find_rap3df_sets(root: str | Path) -> dict[str, Path]:
    """Find the RAP3DF sets under ``root``.

    ``root`` may be the data folder (holding ``rap3df/``), the ``rap3df`` folder itself, or one set's
    folder. Returns ``{"2019": path, "2017": path}`` with the sets found.

    Raises
    ------
    DatasetError
        If the folder is missing or holds no RAP3DF set.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: RAP3DF folder not found")
    for base in (root / "rap3df", root):
        sets: dict[str, Path] = {}
        if (base / "database.json").is_file():
            sets["2019"] = base
        elif (base / "rap3df_data_02" / "database.json").is_file():
            sets["2019"] = base / "rap3df_data_02"
        if (base / "rap3df_data").is_dir():
            sets["2017"] = base / "rap3df_data"
        elif "2019" not in sets and base.is_dir() and any(base.glob(f"*/{_RGB_2017}")):
            sets["2017"] = base
        if sets:
            return sets
    raise DatasetError(
        f"{root}: no RAP3DF data found (expected rap3df/rap3df_data_02/database.json or rap3df/rap3df_data/)"
    )


def link_ids(sets: dict[str, list[Sample]], linked: tuple[tuple[str, str], ...] = LINKED_IDS
             ) -> dict[str, list[Sample]]:
    """The samples with every merged id of ``linked`` replaced by its kept id (``meta["id"]`` keeps the id
    the dataset gave). Capture ids are unchanged."""
    kept_of = {merged: kept for kept, merged in linked}
    return {name: [replace(s, person=kept_of[s.person], meta={**s.meta, "id": s.person}) if s.person in kept_of
                   else s for s in samples] for name, samples in sets.items()}


def load_rap3df(root: str | Path, *, link: bool = True) -> dict[str, list[Sample]]:
    """Samples of every RAP3DF set under ``root`` (see :func:`find_rap3df_sets`), keyed by set.

    With ``link`` (default) the ids of :data:`LINKED_IDS` are merged (:func:`link_ids`): one volunteer, one
    person id, whichever set each capture came from.
    """
    loaders = {"2019": load_set_2019, "2017": load_set_2017}
    sets = {name: loaders[name](path) for name, path in find_rap3df_sets(root).items()}
    return link_ids(sets) if link else sets


def _gallery_and_probes(test: list[Sample]) -> tuple[tuple[Sample, ...], tuple[Sample, ...]]:
    """Gallery: each person's first ``front`` RGB capture (first RGB capture if none is frontal).
    Probes: every IR capture of those people, except the one taken with the gallery image."""
    gallery: list[Sample] = []
    for person in people(test):
        vis = [s for s in test if s.person == person and s.modality == "vis"]
        if not vis:
            log.warning("RAP3DF: test person %s has no RGB capture; their probes will count as misses", person)
            continue
        front = [s for s in vis if s.pose == "front"]
        gallery.append(front[0] if front else vis[0])
    excluded = {g.pair_id for g in gallery}
    probes = tuple(s for s in test if s.modality == "nir" and s.capture_id not in excluded)
    return tuple(gallery), probes


def rap3df_splits(sets: dict[str, list[Sample]], n_splits: int = N_SPLITS, n_train: int = N_TRAIN) -> list[Split]:
    """The RAP3DF protocol: 10 random 24/24 splits of the 2019 people; the 2017 set always trains.

    Split ``k`` permutes the sorted 2019 person ids with ``numpy.random.RandomState(k)``; the first
    ``n_train`` are training people, the rest are test people. A 2017 capture of a test person (a linked
    id, :data:`LINKED_IDS`) is used neither for training nor for testing in that split.
    """
    if "2019" not in sets:
        raise DatasetError("RAP3DF protocol needs the 2019 set (rap3df_data_02/database.json)")
    s19, s17 = sets["2019"], sets.get("2017", [])
    ids = people(s19)
    if n_train < 1 or n_splits < 1:
        raise ValueError(f"n_train and n_splits must be >= 1, got {n_train} and {n_splits}")
    if len(ids) <= n_train:
        raise DatasetError(f"RAP3DF 2019 set has {len(ids)} people; the protocol needs more than {n_train}")
    splits = []
    for seed in range(n_splits):
        perm = np.random.RandomState(seed).permutation(len(ids))
        train_ids = [ids[i] for i in perm[:n_train]]
        test_ids = [ids[i] for i in perm[n_train:]]
        gallery, probes = _gallery_and_probes(list(by_person(s19, test_ids)))
        train17 = tuple(s for s in s17 if s.person not in set(test_ids))
        splits.append(Split(f"rap3df-seed{seed}", train17 + by_person(s19, train_ids), gallery, probes))
    return splits


def rap3df_people_splits(sets: dict[str, list[Sample]], n_train: int = 40, n_test: int = 40,
                         n_splits: int = N_SPLITS) -> list[Split]:
    """Random ``n_train`` / ``n_test`` person splits over the people of *both* sets (a secondary protocol).

    The shape of the quick low-rank trial quoted in the low-rank issue (40 training and 40 test people).
    Split ``k`` permutes the sorted person ids of all sets with ``numpy.random.RandomState(k)``; the first
    ``n_train`` train, the next ``n_test`` are tested (gallery and probes as in :func:`rap3df_splits`), the
    rest are not used.
    """
    everyone = [s for v in sets.values() for s in v]
    ids = people(everyone)
    if n_train < 1 or n_test < 1 or n_train + n_test > len(ids):
        raise DatasetError(f"RAP3DF has {len(ids)} people; cannot split them {n_train}/{n_test}")
    splits = []
    for seed in range(n_splits):
        perm = np.random.RandomState(seed).permutation(len(ids))
        train_ids = [ids[i] for i in perm[:n_train]]
        test_ids = [ids[i] for i in perm[n_train:n_train + n_test]]
        gallery, probes = _gallery_and_probes(list(by_person(everyone, test_ids)))
        splits.append(Split(f"rap3df-people{n_train}x{n_test}-seed{seed}", by_person(everyone, train_ids),
                            gallery, probes))
    return splits


def rap3df_external_split(test: dict[str, list[Sample]], train: dict[str, list[Sample]] | None) -> Split:
    """One fold: every person of ``test`` is tested, every person of ``train`` trains.

    The two must not share an id. A training capture whose id is linked to a test person's
    (:data:`LINKED_IDS`) is left out, with a warning.
    """
    test_samples = [s for v in test.values() for s in v]
    train_samples = tuple(s for v in (train or {}).values() for s in v)

    def given(s: Sample) -> str:
        return s.meta.get("id", s.person)

    overlap = {given(s) for s in test_samples} & {given(s) for s in train_samples}
    if overlap:
        raise DatasetError(f"--train-data and --data share {len(overlap)} people, e.g. {sorted(overlap)[:3]}")
    linked = set(people(test_samples)) & set(people(train_samples))
    if linked:
        log.warning("RAP3DF: %d training people are linked ids of test people (%s); their training captures are "
                    "left out", len(linked), ", ".join(sorted(linked)))
        train_samples = tuple(s for s in train_samples if s.person not in linked)
    gallery, probes = _gallery_and_probes(test_samples)
    return Split("rap3df-external", train_samples, gallery, probes)
