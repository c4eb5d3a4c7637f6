"""CASIA NIR-VIS 2.0 loader, checked against the real protocol lists on a tree of tiny generated images."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from casia_tree import LISTS, disk_path, raw_entries, write_images
from nirvis.datasets.base import Sample, Split
from nirvis.datasets.casia import read_list, scan_tree, six_fold_splits, view1_split, view2_split
from nirvis.errors import DatasetError

#: The lists whose files the generated tree holds: all of View 2 fold 1 and the VIS images of View 1
#: (about 9,200 files; View 1's NIR files are left out to keep the tree small, so most are missing).
TREE_LISTS = ("vis_gallery_1.txt", "nir_probe_1.txt", "vis_gallery_dev.txt", "vis_train_dev.txt")


def _ids(samples) -> list[str]:
    return [s.capture_id for s in samples]


@pytest.fixture(scope="module")
def lists_dir() -> Path:
    if not (LISTS / "vis_gallery_1.txt").is_file():
        pytest.skip(f"CASIA protocol lists not found at {LISTS}: set NIRVIS_DATA")
    return LISTS


@pytest.fixture(scope="module")
def casia(lists_dir, tmp_path_factory) -> Path:
    """``base/NIR-VIS-2.0/s*/...`` with every file of ``TREE_LISTS``; ``base/protocols``: a copy of the lists."""
    base = tmp_path_factory.mktemp("casia")
    image_root = base / "NIR-VIS-2.0"
    write_images(image_root, [rel for name in TREE_LISTS for rel in raw_entries(name)])
    shutil.copytree(lists_dir, base / "protocols")
    return base


@pytest.fixture(scope="module")
def fold1(casia) -> Split:
    return view2_split(casia, 1)


@pytest.fixture(scope="module")
def tree(casia) -> list[Sample]:
    return scan_tree(casia)


def _move_away(path: Path, tmp_path: Path) -> Path:
    parked = tmp_path / path.name
    shutil.move(path, parked)
    return parked


# -------------------------------------------------------------------------------------------- lists
@pytest.mark.data
def test_read_list_turns_windows_paths_into_posix(lists_dir):
    entries = read_list(lists_dir / "vis_gallery_1.txt")
    assert len(entries) == 358
    assert entries[0] == "s2/VIS/10153/003.jpg"
    assert not any("\\" in e for e in entries)
    assert read_list(lists_dir / "nir_probe_1.txt")[0] == "s2/NIR/10153/001.bmp"


def test_read_list_accepts_crlf_blank_lines_and_posix_separators(tmp_path):
    p = tmp_path / "nir_probe_x.txt"
    p.write_bytes(b"s2\\NIR\\10153\\001.bmp\r\n\r\ns1/VIS/20001/002.jpg\r\n  s3\\NIR\\7\\1.jpg  \r\n")
    assert read_list(p) == ["s2/NIR/10153/001.bmp", "s1/VIS/20001/002.jpg", "s3/NIR/7/1.jpg"]


def test_read_list_rejects_a_malformed_line_naming_file_and_line(tmp_path):
    p = tmp_path / "vis_gallery_1.txt"
    p.write_text("s2\\VIS\\10153\\003.jpg\nhello.jpg\n")
    with pytest.raises(DatasetError, match=r"vis_gallery_1\.txt.*line 2.*'hello\.jpg'"):
        read_list(p)


def test_read_list_missing_file(tmp_path):
    with pytest.raises(DatasetError, match=r"nir_probe_4\.txt"):
        read_list(tmp_path / "nir_probe_4.txt")


# --------------------------------------------------------------------------------------------- tree
@pytest.mark.data
def test_scan_tree_finds_every_image_under_nir_vis_2_0(casia, tree):
    n_files = sum(1 for p in (casia / "NIR-VIS-2.0").rglob("*") if p.is_file())
    assert len(tree) == n_files
    assert _ids(tree) == sorted(_ids(tree))
    s = next(s for s in tree if s.capture_id == "s2/NIR/10153/001.bmp")
    assert (s.person, s.modality, s.channel, s.pair_id, s.meta) == ("10153", "nir", "gray", None, {"session": "s2"})
    assert s.path == casia / "NIR-VIS-2.0" / "s2" / "NIR" / "10153" / "001.bmp"
    v = next(s for s in tree if s.capture_id == "s2/VIS/10153/003.jpg")
    assert (v.modality, v.channel) == ("vis", None)
    assert {s.modality for s in tree if "/NIR/" in s.capture_id} == {"nir"}
    assert {s.modality for s in tree if "/VIS/" in s.capture_id} == {"vis"}
    assert scan_tree(casia / "NIR-VIS-2.0") == tree


def test_scan_tree_errors_name_the_folder(tmp_path):
    with pytest.raises(DatasetError, match=r"nowhere.*no such folder"):
        scan_tree(tmp_path / "nowhere")
    (tmp_path / "photos").mkdir()
    with pytest.raises(DatasetError, match=r"photos.*no image tree found.*s1\.\.s4"):
        scan_tree(tmp_path / "photos")


# ----------------------------------------------------------------------------------------- view 2
@pytest.mark.data
def test_view2_fold1_matches_the_real_protocol(fold1, tree):
    assert fold1.name == "view2-fold1"
    assert fold1.missing == ()
    gallery_people = [s.person for s in fold1.gallery]
    assert len(gallery_people) == len(set(gallery_people)) == 358  # one VIS image per person
    assert {s.modality for s in fold1.gallery} == {"vis"}
    assert _ids(fold1.gallery) == raw_entries("vis_gallery_1.txt")  # list order kept
    assert len(fold1.probes) == 6208
    assert {s.modality for s in fold1.probes} == {"nir"}
    assert {s.channel for s in fold1.probes} == {"gray"}
    assert {s.person for s in fold1.probes} <= set(gallery_people)
    # train: everyone of the tree outside the fold's test people
    assert fold1.train and not set(fold1.train_people) & set(gallery_people)
    assert set(fold1.train_people) == {s.person for s in tree} - set(gallery_people)
    assert len(fold1.train) == sum(1 for s in tree if s.person not in set(gallery_people))


@pytest.mark.data
def test_view2_never_trains_on_fold1_people_from_view1_train_list(fold1):
    # README fact: View 1's training list shares 182 people with fold 1's gallery.
    view1_train = raw_entries("vis_train_dev.txt") + raw_entries("nir_train_dev.txt")
    view1_train_people = {e.split("/")[2] for e in view1_train}
    shared = view1_train_people & {s.person for s in fold1.gallery}
    assert len(shared) == 182
    assert not shared & set(fold1.train_people)


@pytest.mark.data
def test_protocol_lists_found_next_to_the_images(casia, fold1, lists_dir, tmp_path):
    # explicit protocols_dir, image root given directly
    explicit = view2_split(casia / "NIR-VIS-2.0", 1, protocols_dir=lists_dir)
    # root/../casia-nir-vis-2.0-protocols
    (tmp_path / "casia-nir-vis-2.0-protocols").symlink_to(lists_dir, target_is_directory=True)
    (tmp_path / "images").symlink_to(casia / "NIR-VIS-2.0", target_is_directory=True)
    sibling = view2_split(tmp_path / "images", 1)
    for split in (explicit, sibling):
        assert _ids(split.gallery) == _ids(fold1.gallery)
        assert _ids(split.probes) == _ids(fold1.probes)
        assert _ids(split.train) == _ids(fold1.train)


@pytest.mark.data
def test_listed_jpg_nir_entry_resolves_to_the_bmp_on_disk(casia, lists_dir, tmp_path):
    shutil.copy(lists_dir / "vis_gallery_1.txt", tmp_path)
    lines = (lists_dir / "nir_probe_1.txt").read_text().splitlines()
    lines = [lines[0].replace(".bmp", ".JPG")] + [line.replace(".bmp", ".jpg") for line in lines[1:]]
    (tmp_path / "nir_probe_1.txt").write_text("\n".join(lines) + "\n")
    split = view2_split(casia, 1, protocols_dir=tmp_path)
    assert split.missing == ()
    assert len(split.probes) == 6208
    assert split.probes[0].capture_id == "s2/NIR/10153/001.bmp"
    assert all(s.path.suffix == ".bmp" and s.path.is_file() for s in split.probes)


@pytest.mark.data
def test_missing_listed_files_are_recorded_and_kept_as_failures(casia, fold1, tmp_path, caplog):
    image_root = casia / "NIR-VIS-2.0"
    probe, gallery = fold1.probes[0], fold1.gallery[1]
    parked = [(probe.path, _move_away(probe.path, tmp_path)), (gallery.path, _move_away(gallery.path, tmp_path))]
    try:
        with caplog.at_level(logging.WARNING, logger="nirvis.datasets.casia"):
            split = view2_split(casia, 1)
    finally:
        for original, moved in parked:
            shutil.move(moved, original)
    assert split.missing == ("s2/VIS/10117/005.jpg", "s2/NIR/10153/001.bmp")
    # Still in the split, at their listed path, so that the evaluation records them as failures (misses).
    assert len(split.probes) == 6208 and len(split.gallery) == 358
    gone = {s.capture_id: s for s in split.probes + split.gallery if s.meta.get("missing")}
    assert set(gone) == {probe.capture_id, gallery.capture_id}
    assert gone[probe.capture_id].person == probe.person and gone[probe.capture_id].modality == "nir"
    assert gallery.person not in split.train_people  # still a test person
    assert "2 of 6566" in caplog.text
    assert image_root.joinpath(probe.capture_id).is_file()  # restored for the other tests


@pytest.mark.data
def test_missing_protocol_file_is_named(casia, lists_dir, tmp_path):
    shutil.copy(lists_dir / "vis_gallery_1.txt", tmp_path)
    with pytest.raises(DatasetError, match=r"nir_probe_1\.txt"):
        view2_split(casia, 1, protocols_dir=tmp_path)
    for name in ("vis_gallery_dev.txt", "nir_probe_dev.txt"):
        shutil.copy(lists_dir / name, tmp_path)
    with pytest.raises(DatasetError, match=r"vis_train_dev\.txt"):
        view1_split(casia, protocols_dir=tmp_path)
    with pytest.raises(DatasetError, match=r"vis_gallery_3\.txt.*looked in"):
        view2_split(casia / "NIR-VIS-2.0", 3)  # no lists in or next to the image root
    with pytest.raises(DatasetError, match=r"protocols_dir.*nope.*no such folder"):
        view2_split(casia, 1, protocols_dir=tmp_path / "nope")


@pytest.mark.data
def test_gallery_list_with_a_nir_entry_is_rejected(casia, lists_dir, tmp_path):
    shutil.copy(lists_dir / "nir_probe_1.txt", tmp_path)
    (tmp_path / "vis_gallery_1.txt").write_text("s2\\NIR\\10153\\001.bmp\n")
    with pytest.raises(DatasetError, match=r"vis_gallery_1\.txt.*'s2/NIR/10153/001\.bmp'.*VIS images only"):
        view2_split(casia, 1, protocols_dir=tmp_path)


@pytest.mark.data
@pytest.mark.parametrize("fold", [0, 11, -1, 1.0, True, "1", None])
def test_bad_fold_is_named(casia, fold):
    with pytest.raises(ValueError, match=r"fold must be an integer in 1\.\.10, got " + repr(fold).replace(".", r"\.")):
        view2_split(casia, fold)


# ----------------------------------------------------------------------------------------- view 1
@pytest.mark.data
def test_view1_uses_the_dev_lists(casia):
    split = view1_split(casia)
    assert split.name == "view1"
    assert _ids(split.gallery) == raw_entries("vis_gallery_dev.txt")
    assert len({s.person for s in split.gallery}) == 358
    # the tree holds only the NIR files that View 1 shares with fold 1: the others are missing probes
    listed_probes = raw_entries("nir_probe_dev.txt")
    assert len(listed_probes) == 6123
    assert len(split.probes) == 6123 and 0 < len(split.missing) < 6123
    assert sorted(_ids(split.probes)) == sorted(listed_probes)
    assert {s.capture_id for s in split.probes if s.meta.get("missing")} == set(split.missing)
    assert {s.modality for s in split.probes} == {"nir"}
    assert {s.person for s in split.probes} <= {s.person for s in split.gallery}
    vis_train = [s for s in split.train if s.modality == "vis"]
    assert _ids(vis_train) == raw_entries("vis_train_dev.txt")
    assert _ids(split.train) == [e for e in raw_entries("vis_train_dev.txt") + raw_entries("nir_train_dev.txt")
                                 if disk_path(casia / "NIR-VIS-2.0", e).is_file()]
    assert len(split.train_people) == 357
    assert not set(split.train_people) & set(split.test_people)


@pytest.mark.data
def test_view1_missing_training_file_is_left_out_but_not_counted_as_missing(casia, tmp_path, caplog):
    split = view1_split(casia)
    lost = split.train[0]
    moved = _move_away(lost.path, tmp_path)
    try:
        with caplog.at_level(logging.WARNING, logger="nirvis.datasets.casia"):
            again = view1_split(casia)
    finally:
        shutil.move(moved, lost.path)
    assert again.missing == split.missing  # training entries are not test entries
    assert _ids(again.train) == _ids(split.train)[1:]
    assert "vis_train_dev.txt" in caplog.text


# -------------------------------------------------------------------------------------- six folds
def _check_six_folds(splits: list[Split], tree: list[Sample]) -> None:
    everyone = {s.person for s in tree}
    folds = [split.test_people for split in splits]
    assert [s.name for s in splits] == [f"six-fold{k}" for k in range(1, 7)]
    assert sum(len(f) for f in folds) == len(everyone)  # no person in two folds
    assert set().union(*folds) == everyone
    assert max(len(f) for f in folds) - min(len(f) for f in folds) <= 1
    for a, b in zip(folds, folds[1:]):  # contiguous in numeric id order
        assert max(int(p) for p in a) < min(int(p) for p in b)
    for split, test_people in zip(splits, folds):
        assert set(split.train_people) == everyone - set(test_people)
        assert _ids(split.probes) == [s.capture_id for s in tree if s.modality == "nir" and s.person in test_people]
        for g in split.gallery:
            assert g.modality == "vis"
            assert g.capture_id == min(s.capture_id for s in tree if s.person == g.person and s.modality == "vis")
        assert len(split.gallery) == len({g.person for g in split.gallery})


@pytest.mark.data
def test_six_fold_splits_partition_the_people(casia, tree):
    splits = six_fold_splits(casia)
    _check_six_folds(splits, tree)
    assert sum(len(s.gallery) for s in splits) == len({s.person for s in tree})  # all have VIS here


def test_six_fold_splits_use_numeric_order(tmp_path, caplog):
    ids = ["100", "2", "10", "9", "11", "3", "25", "1000"]
    for person in ids:
        for n in (1, 2):
            write_images(tmp_path, [f"s1/NIR/{person}/{n:03d}.bmp"])
            if person != "9":
                write_images(tmp_path, [f"s2/VIS/{person}/{n:03d}.jpg"])
    with caplog.at_level(logging.WARNING, logger="nirvis.datasets.casia"):
        splits = six_fold_splits(tmp_path)
    tree = scan_tree(tmp_path)
    _check_six_folds(splits, tree)
    assert [s.test_people for s in splits] == [["2", "3"], ["10", "9"], ["11"], ["25"], ["100"], ["1000"]]
    nine = splits[1]  # person 9 has no VIS image: probes kept, counted as misses
    assert [g.person for g in nine.gallery] == ["10"]
    assert {s.person for s in nine.probes} == {"9", "10"}
    assert "no VIS image" in caplog.text


def test_six_fold_splits_need_six_people(tmp_path):
    for person in ("1", "2", "3"):
        write_images(tmp_path, [f"s1/VIS/{person}/001.jpg"])
    with pytest.raises(DatasetError, match=r"at least 6 people, found 3"):
        six_fold_splits(tmp_path)



def test_load_protocol_names_a_fold_once_whatever_its_spelling(casia):
    from nirvis.datasets import load_protocol

    name, splits, _ = load_protocol("casia", casia, "view2:01")
    assert name == "casia-view2:1" and [s.name for s in splits] == [view2_split(casia, 1).name]
