"""A tiny real-data run: one RAP3DF 2017 person (3 RGB + 3 IR captures), aligned with FaceAligner."""

from __future__ import annotations

from pathlib import Path

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
    # stride 24 keeps the test short (49 windows per image pair)
    s = mine_store(jobs, tmp_path / "p.h5", MiningConfig(stride=24), workers=1)
    assert s["total_nir_aligned"] == s["total_nir_images"] and s["total_vis_aligned"] == s["total_vis_images"]
    assert s["windows_tried"] == s["total_image_pairs"] * 49
    assert s["windows_tried"] == s["windows_outside_image"] + s["registration_failures"] + s["total_registered"]
    assert s["total_same_capture_pairs"] == 3
    with PatchStore(tmp_path / "p.h5") as st:
        assert st.people == ["RVWU3VV"]
        assert len(st) == s["pairs_stored"]
    check_store_people(tmp_path / "p.h5", sp.test_people)
