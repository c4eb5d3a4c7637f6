"""Generic ``<root>/<person>/{nir,vis}/`` folders."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from PIL import Image

from nirvis.datasets.folder import folder_split, scan_folder
from nirvis.errors import DatasetError


def _img(path: Path, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP"}[path.suffix.lower()]
    Image.new(mode, (4, 4), 100).save(path, format=fmt)


@pytest.fixture
def people_dir(tmp_path) -> Path:
    root = tmp_path / "test"
    _img(root / "alice" / "vis" / "b.jpg")
    _img(root / "alice" / "vis" / "a.PNG")
    _img(root / "alice" / "nir" / "2.bmp", "L")
    _img(root / "alice" / "nir" / "1.png", "L")
    _img(root / "bob" / "VIS" / "x.jpeg")
    _img(root / "bob" / "NIR" / "y.JPG", "L")
    (root / "bob" / "NIR" / "notes.txt").write_text("not an image")
    (root / "bob" / "NIR" / ".hidden.png").write_bytes(b"")
    _img(root / "carol" / "nir" / "1.png", "L")  # no VIS image to enrol
    (root / "README.md").write_text("stray file")
    (root / "misc").mkdir()  # a folder without nir/vis: ignored
    return root


def test_scan_folder_discovers_the_layout(people_dir):
    samples = scan_folder(people_dir)
    assert [s.capture_id for s in samples] == [
        "alice/nir/1.png", "alice/nir/2.bmp", "alice/vis/a.PNG", "alice/vis/b.jpg",
        "bob/NIR/y.JPG", "bob/VIS/x.jpeg", "carol/nir/1.png",
    ]
    assert [s.modality for s in samples] == ["nir", "nir", "vis", "vis", "nir", "vis", "nir"]
    assert {s.channel for s in samples if s.modality == "nir"} == {"gray"}
    assert {s.channel for s in samples if s.modality == "vis"} == {None}
    assert all(s.path.is_file() and s.pair_id is None for s in samples)
    assert samples[0].path == people_dir / "alice" / "nir" / "1.png"
    assert samples[0].person == "alice"


def test_folder_split_gallery_and_probes(people_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="nirvis.datasets.folder"):
        split = folder_split(people_dir)
    assert split.name == "folder-test"
    assert [s.capture_id for s in split.gallery] == ["alice/vis/a.PNG", "bob/VIS/x.jpeg"]  # first VIS, sorted
    assert [s.capture_id for s in split.probes] == ["alice/nir/1.png", "alice/nir/2.bmp", "bob/NIR/y.JPG",
                                                    "carol/nir/1.png"]
    assert split.train == () and split.missing == ()
    assert split.test_people == ["alice", "bob", "carol"]
    assert "carol" in caplog.text and "no VIS image" in caplog.text  # kept as probes, scored as misses


def test_folder_split_with_train_root(people_dir, tmp_path, caplog):
    train = tmp_path / "train"
    _img(train / "dave" / "vis" / "1.jpg")
    _img(train / "dave" / "nir" / "1.png", "L")
    _img(train / "erin" / "nir" / "1.png", "L")
    split = folder_split(people_dir, train_root=train)
    assert [s.capture_id for s in split.train] == ["dave/nir/1.png", "dave/vis/1.jpg", "erin/nir/1.png"]
    assert split.train_people == ["dave", "erin"]
    assert "both the training folder" not in caplog.text

    # A person folder in both: refused (before, a warning; and the test image bob/vis/x.jpeg was scored with
    # the features of the training image of the same capture id).
    _img(train / "bob" / "vis" / "x.jpeg")
    with pytest.raises(DatasetError, match=r"1 person folder\(s\) are in both the training folder .*\(bob\)"):
        folder_split(people_dir, train_root=train)


def test_all_samples_refuses_two_images_with_one_capture_id(tmp_path):
    from nirvis.datasets import _all_samples
    from nirvis.datasets.base import Sample, Split

    a = Sample("p", "vis", tmp_path / "a" / "1.jpg", "p/vis/1.jpg")
    b = Sample("p", "vis", tmp_path / "b" / "1.jpg", "p/vis/1.jpg")
    assert _all_samples([Split("s", (a,), (a,), ())]) == [a]
    with pytest.raises(DatasetError, match="two images share capture id 'p/vis/1.jpg'"):
        _all_samples([Split("s", (a,), (b,), ())])


def test_missing_root_is_named(tmp_path):
    with pytest.raises(DatasetError, match=r"nowhere.*no such folder"):
        scan_folder(tmp_path / "nowhere")
    (tmp_path / "a_file").write_text("")
    with pytest.raises(DatasetError, match=r"a_file.*no such folder"):
        folder_split(tmp_path / "a_file")


def test_missing_train_root_is_named(people_dir, tmp_path):
    with pytest.raises(DatasetError, match=r"no_train.*no such folder"):
        folder_split(people_dir, train_root=tmp_path / "no_train")


def test_wrong_layout_explains_the_expected_one(tmp_path):
    flat = tmp_path / "flat"
    _img(flat / "alice.jpg")
    _img(flat / "alice" / "photo.jpg")  # person folder, but no nir/vis inside
    with pytest.raises(DatasetError, match=r"flat.*no person folders found.*<root>/<person>/nir/\*\.png"):
        scan_folder(flat)


def test_person_folders_without_images(tmp_path):
    empty = tmp_path / "empty"
    (empty / "alice" / "nir").mkdir(parents=True)
    (empty / "alice" / "vis" / "x.gif").parent.mkdir()
    (empty / "alice" / "vis" / "x.gif").write_bytes(b"GIF89a")
    with pytest.raises(DatasetError, match=r"empty.*1 person folders but no image files"):
        folder_split(empty)


def test_skipped_folders_are_logged_and_two_folders_of_one_modality_refused(people_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="nirvis.datasets.folder"):
        scan_folder(people_dir)
    assert any("1 folder(s) without a nir/ or vis/ sub-folder skipped (misc)" in r.getMessage()
               for r in caplog.records)
    _img(people_dir / "bob" / "nir" / "z.png", "L")  # bob now has NIR/ and nir/
    with pytest.raises(DatasetError, match=r"bob: more than one folder per modality \(NIR, VIS, nir\)"):
        scan_folder(people_dir)
