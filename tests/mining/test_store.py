"""The patch store: content, flips, determinism over workers, people check, chunked reads."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from nirvis.datasets.folder import scan_folder
from nirvis.mining import MiningConfig, PatchStore, StorePeopleError, check_store_people, mine_store
from nirvis.mining.miner import jobs_from_samples, parts_dir_for
from nirvis.mining.report import write_report
from nirvis.mining.store import StoreError

from .synth import write_folder

CFG = MiningConfig(stride=24, prune_quantile=0.5)
PEOPLE = ["alice", "bob", "carol"]


def read_all(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as h5:
        out = {k: h5[k][:] for k in ("nir", "y", "cb", "cr", "person", "nir_id", "vis_id", "loc", "s1", "s2", "flip")}
        out["scored_s1"] = h5["scored/s1"][:]
        out["attrs"] = {k: h5.attrs[k] for k in ("people", "config", "summary", "reference")}
    return out


def assert_same_store(a: Path, b: Path) -> None:
    x, y = read_all(a), read_all(b)
    assert x.keys() == y.keys()
    for k in x:
        if k == "attrs":
            assert x[k] == y[k]
        else:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("synth"), PEOPLE, n_nir=2, n_vis=1)


@pytest.fixture(scope="module")
def store(folder: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("store") / "p.h5"
    summary = mine_store(jobs_from_samples(scan_folder(folder)), out, CFG, workers=1, aligned=True)
    assert summary["pairs_kept"] > 0
    return out


def test_store_content_and_flips(store: Path) -> None:
    with PatchStore(store) as st:
        assert st.people == PEOPLE
        n = len(st)
        assert n > 0 and n % 2 == 0
        rows = st.read(slice(0, n))
        s = st.summary
    assert rows["nir"].shape == (n, 40, 40) and rows["nir"].dtype == np.uint8
    assert (rows["flip"][1::2]).all() and not rows["flip"][::2].any()
    np.testing.assert_array_equal(rows["nir"][1::2], rows["nir"][::2, :, ::-1])
    np.testing.assert_array_equal(rows["cr"][1::2], rows["cr"][::2, :, ::-1])
    np.testing.assert_array_equal(rows["loc"][1::2, 1], 164 - rows["loc"][::2, 1])
    assert (rows["s1"] >= 0.4).all() and (rows["s1"] + rows["s2"] > 1).all()
    assert s["windows_tried"] == 3 * 2 * 49
    assert s["pairs_stored"] == n == 2 * (s["pairs_kept"] - s["pairs_pruned"])
    assert max(s["kept_per_location_after_prune"]) <= s["prune_cap_per_location"]
    # ordered by person, then NIR id, then location
    person = rows["person"][::2]
    assert (np.diff(person) >= 0).all()
    assert not parts_dir_for(store).exists()


def test_store_reads_in_batches(store: Path) -> None:
    with PatchStore(store) as st:
        sizes = [b["nir"].shape[0] for b in st.iter_batches(7, fields=("nir", "person"))]
        assert sum(sizes) == len(st) and max(sizes) == 7
        assert st.dataset("nir").chunks[0] == 256
        bob = st.person_rows(["bob"])
        assert (st.read(bob, fields=("person",))["person"] == 1).all()


def test_identical_for_any_number_of_workers(folder: Path, store: Path, tmp_path: Path) -> None:
    out = tmp_path / "p2.h5"
    mine_store(jobs_from_samples(scan_folder(folder)), out, CFG, workers=2, aligned=True)
    assert_same_store(store, out)


def test_check_store_people(store: Path) -> None:
    check_store_people(store, ["dave"])
    with pytest.raises(StorePeopleError, match=r"holds 1 forbidden \(test\) people, e.g. \['bob'\]"):
        check_store_people(store, ["bob", "dave"])
    with pytest.raises(StoreError, match="not found"):
        check_store_people(store.with_name("missing.h5"), [])


def test_rerun_on_complete_store_is_a_no_op(folder: Path, store: Path) -> None:
    before = store.stat().st_mtime_ns
    s = mine_store(jobs_from_samples(scan_folder(folder)), store, CFG, workers=1, aligned=True)
    assert s["resumed_people"] == 3 and store.stat().st_mtime_ns == before
    with pytest.raises(StoreError, match="other settings, people or images"):
        mine_store(jobs_from_samples(scan_folder(folder)), store, MiningConfig(stride=30), aligned=True)


def test_report_files(store: Path, tmp_path: Path) -> None:
    files = write_report(store, tmp_path / "rep", n_sheet=6)
    for k in ("summary", "heatmap", "scores", "sheet"):
        assert files[k].is_file() and files[k].stat().st_size > 0


def test_shared_parts_folder_mines_each_person_once(folder: Path, store: Path, tmp_path: Path) -> None:
    jobs = jobs_from_samples(scan_folder(folder))
    cache = tmp_path / "parts"
    first = mine_store(jobs, tmp_path / "all.h5", CFG, aligned=True, parts_dir=cache)
    assert first["resumed_people"] == 0 and len(list(cache.glob("*.npz"))) == 3  # kept after assembly
    assert_same_store(store, tmp_path / "all.h5")
    # A second store of a subset of the people re-mines nobody, and equals a store mined from scratch.
    sub = mine_store(jobs[:2], tmp_path / "sub.h5", CFG, aligned=True, parts_dir=cache)
    assert sub["resumed_people"] == 2
    mine_store(jobs[:2], tmp_path / "sub_fresh.h5", CFG, aligned=True)
    with PatchStore(tmp_path / "sub.h5") as a, PatchStore(tmp_path / "sub_fresh.h5") as b:
        assert a.people == b.people == PEOPLE[:2] and len(a) == len(b)
        np.testing.assert_array_equal(a.read(slice(None), ["nir", "y"])["nir"], b.read(slice(None), ["nir"])["nir"])
    # The shared folder's reference images belong to its first run's first person (alice): a training set
    # without her must not be normalised by a stranger's images.
    with pytest.raises(StoreError, match="photometric reference .* is not an image of this run's people"):
        mine_store(jobs[1:], tmp_path / "other.h5", CFG, aligned=True, parts_dir=cache)
    with pytest.raises(StoreError, match="other settings"):
        mine_store(jobs, tmp_path / "x.h5", MiningConfig(stride=30), aligned=True, parts_dir=cache)


def test_bad_images_are_counted_and_the_run_goes_on(folder: Path, tmp_path: Path) -> None:
    import shutil

    bad = tmp_path / "faces"
    shutil.copytree(folder, bad)
    (bad / "bob" / "nir" / "zz_corrupt.png").write_bytes(b"not a png")
    import cv2

    cv2.imwrite(str(bad / "carol" / "vis" / "zz_small.png"), np.zeros((50, 60, 3), np.uint8))
    summary = mine_store(jobs_from_samples(scan_folder(bad)), tmp_path / "s.h5", CFG, aligned=True)
    assert summary["images_unreadable"] == 2 and summary["images_not_aligned"] == 0
    by = {p["person"]: p for p in summary["per_person"]}
    assert [u["id"] for u in by["bob"]["unreadable"]] == ["bob/nir/zz_corrupt.png"]
    assert "unreadable or corrupt" in by["bob"]["unreadable"][0]["reason"]
    assert "--aligned needs 224x224 aligned faces, got 60x50" in by["carol"]["unreadable"][0]["reason"]
    assert by["bob"]["kept"] > 0 and by["carol"]["kept"] > 0  # the good images of both were still mined


def test_parts_of_other_images_or_damaged_parts_are_mined_again(folder: Path, store: Path, tmp_path: Path) -> None:
    import shutil

    cache = tmp_path / "parts"
    mine_store(jobs_from_samples(scan_folder(folder)), tmp_path / "a.h5", CFG, aligned=True, parts_dir=cache)
    # Same names, other images: bob has one NIR image fewer in this dataset.
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    sorted((other / "bob" / "nir").glob("*.png"))[-1].unlink()
    jobs = jobs_from_samples(scan_folder(other))
    s = mine_store(jobs, tmp_path / "b.h5", CFG, aligned=True, parts_dir=cache)
    assert s["resumed_people"] == 2
    fresh = mine_store(jobs, tmp_path / "b_fresh.h5", CFG, aligned=True)
    assert s["pairs_stored"] == fresh["pairs_stored"] and s["total_nir_images"] == fresh["total_nir_images"] == 5
    # The complete store b.h5 is not taken as done for the first dataset's images: it is refused.
    with pytest.raises(StoreError, match="b.h5: a patch store with other settings, people or images"):
        mine_store(jobs_from_samples(scan_folder(folder)), tmp_path / "b.h5", CFG, aligned=True, parts_dir=cache)
    s2 = mine_store(jobs_from_samples(scan_folder(folder)), tmp_path / "b2.h5", CFG, aligned=True, parts_dir=cache)
    assert s2["total_nir_images"] == 6 and s2["resumed_people"] == 2
    # A damaged part is mined again, with a warning, not a crash.
    part = sorted(cache.glob("alice*.npz"))[0]
    part.write_bytes(part.read_bytes()[:100])
    s3 = mine_store(jobs_from_samples(scan_folder(folder)), tmp_path / "c.h5", CFG, aligned=True, parts_dir=cache)
    assert s3["resumed_people"] == 2 and s3["pairs_stored"] == s2["pairs_stored"]
    (cache / "manifest.json").write_text("{not json")
    with pytest.raises(StoreError, match=r"manifest\.json: not valid JSON"):
        mine_store(jobs_from_samples(scan_folder(folder)), tmp_path / "d.h5", CFG, aligned=True, parts_dir=cache)


def test_damaged_store_is_refused_with_what_is_missing(store: Path, tmp_path: Path) -> None:
    import shutil

    bad = tmp_path / "bad.h5"
    shutil.copy(store, bad)
    with h5py.File(bad, "a") as h5:
        del h5.attrs["people"]
        del h5["flip"]
    msg = r"bad\.h5: damaged patch store \(missing attribute 'people', dataset 'flip'\)"
    with pytest.raises(StoreError, match=msg):
        PatchStore(bad)
    shutil.copy(store, bad)
    with h5py.File(bad, "a") as h5:
        h5.attrs["summary"] = "{not json"
    with pytest.raises(StoreError, match=r"attribute 'summary' is not JSON"):
        PatchStore(bad)


def test_an_existing_file_that_is_not_a_store_is_not_overwritten(folder: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.h5"
    junk.write_text("my notes")
    with pytest.raises(StoreError, match=r"junk\.h5: not a readable HDF5 file .* refusing to overwrite"):
        mine_store(jobs_from_samples(scan_folder(folder)), junk, CFG, aligned=True)
    assert junk.read_text() == "my notes"
