"""A tiny real-data run: one RAP3DF 2017 person (3 RGB + 3 IR captures), aligned with FaceAligner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nirvis.mining import MiningConfig, PatchStore, check_store_people, mine_store
from nirvis.mining.miner import jobs_from_samples


@pytest.mark.data
@pytest.mark.slow
def test_mine_one_rap3df_person(rap3df_root: Path, tmp_path: Path) -> None:
    from nirvis.datasets import load_protocol

    _, splits, _ = load_protocol("rap3df", rap3df_root.parent)
    sp = splits[0]
    jobs = [j for j in jobs_from_samples(sp.train, sp.train_people) if j.person == "RVWU3VV"]
    if not jobs:
        pytest.skip("RAP3DF person RVWU3VV not in this copy of the data")
    # strides 24 keep the test short (49 windows per image pair)
    s = mine_store(jobs, tmp_path / "p.h5", MiningConfig(stride=24, geometric_stride=24, simultaneous="geometric"),
                   workers=1)
    assert s["total_nir_aligned"] == s["total_nir_images"] and s["total_vis_aligned"] == s["total_vis_images"]
    assert s["windows_tried"] == s["total_image_pairs"] * 49
    # the 3 simultaneous frame pairs are registered whole; the 6 others go through the paper's tests
    assert s["total_same_capture_pairs"] == 3
    assert s["total_geometric_pairs"] + s["total_geometric_fallback_pairs"] == 3
    paper_windows = s["windows_outside_image"] + s["registration_failures"] + s["total_registered"]
    assert s["windows_tried"] == paper_windows + s["total_geometric_windows"]
    assert s["total_geometric_windows"] == s["total_geometric_kept"] + sum(s["geometric_rejected_by_kind"].values())
    # the 2017 IR frames: the sensor's wrap-around leaves zeros and bands inside the face, which are rejected
    assert s["geometric_rejected_by_kind"]["hole"] + s["geometric_rejected_by_kind"]["band"] > 0
    assert s["registration_residual_px"]["pairs"] == 3
    assert s["registration_residual_px"]["median"] < 4.0  # source pixels: the landmarks agree after registration
    with PatchStore(tmp_path / "p.h5") as st:
        assert st.people == ["RVWU3VV"]
        assert len(st) == s["pairs_stored"]
    check_store_people(tmp_path / "p.h5", sp.test_people)


@pytest.mark.data
@pytest.mark.slow
def test_geometric_rows_come_from_simultaneous_frames(rap3df_root: Path, tmp_path: Path) -> None:
    from nirvis.datasets import load_protocol

    _, splits, _ = load_protocol("rap3df", rap3df_root.parent)
    sp = splits[0]
    jobs = [j for j in jobs_from_samples(sp.train, sp.train_people) if j.nir and j.nir[0].id.startswith("2019/")]
    job = min(jobs, key=lambda j: (len(j.nir), j.person))  # the 2019 training person with the fewest captures
    s = mine_store([job], tmp_path / "p.h5", MiningConfig(stride=24, geometric_stride=24, prune_quantile=1.0,
                                                         simultaneous="geometric"))
    assert s["pairs_kept_by_mode"]["geometric"] > 0
    with PatchStore(tmp_path / "p.h5") as st:
        mode, nir_ids, vis_ids = st.dataset("mode")[:], st.dataset("nir_id")[:], st.dataset("vis_id")[:]
    same = np.array([n.decode().rsplit("/", 1)[0] == v.decode().rsplit("/", 1)[0] for n, v in zip(nir_ids, vis_ids)])
    assert (mode == 1).sum() == 2 * s["pairs_kept_by_mode"]["geometric"]  # each kept pair and its flip
    assert same[mode == 1].all()


@pytest.mark.data
@pytest.mark.slow
def test_paper_mode_mines_simultaneous_frames_like_the_others(rap3df_root: Path, tmp_path: Path) -> None:
    from nirvis.datasets import load_protocol

    _, splits, _ = load_protocol("rap3df", rap3df_root.parent)
    jobs = [j for j in jobs_from_samples(splits[0].train, splits[0].train_people) if j.person == "RVWU3VV"]
    if not jobs:
        pytest.skip("RAP3DF person RVWU3VV not in this copy of the data")
    s = mine_store(jobs, tmp_path / "p.h5", MiningConfig(stride=24), workers=1)  # the default: the paper's tests
    assert s["total_geometric_pairs"] == 0 and s["registration_residual_px"] is None
    assert s["windows_tried"] == s["windows_outside_image"] + s["registration_failures"] + s["total_registered"]
