"""The Extended Yale B benchmark script (benchmarks/yaleb_lowrank.py), on a few people."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


def _load_script():
    spec = importlib.util.spec_from_file_location("yaleb_lowrank", REPO / "benchmarks" / "yaleb_lowrank.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


yaleb = _load_script()


def _data_root() -> Path:
    env = os.environ.get("NIRVIS_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def test_illumination_subsets_follow_the_light_angle():
    az = np.array([0, 0, 10, 0, 50, 70, 110, -130, 20])
    el = np.array([0, 20, -20, 25, 0, 45, 15, 20, 40])
    # angles: 0, 20, 22.3, 25 (a boundary: subset 2), 50, 76.0, 109.3, 127.2, 44.0 degrees
    np.testing.assert_array_equal(yaleb.illumination_subset(az, el), [1, 2, 2, 2, 3, 4, 5, 5, 3])


def test_people_split_is_fixed_and_disjoint():
    ids = [f"yaleB{i:02d}" for i in range(1, 40) if i != 14]
    a_train, a_test = yaleb.split_people(ids, 19, seed=0)
    b_train, b_test = yaleb.split_people(list(reversed(ids)), 19, seed=0)
    assert (a_train, a_test) == (b_train, b_test), "depends on the ids only, not their order"
    assert len(a_train) == len(a_test) == 19 and not set(a_train) & set(a_test)
    assert yaleb.split_people(ids, 19, seed=1) != (a_train, a_test)


@pytest.mark.data
def test_core_runs_on_a_few_people():
    root = _data_root()
    if not (root / "extended-yaleb" / "CroppedYale").is_dir():
        pytest.skip(f"Extended Yale B not found under {root} (set NIRVIS_DATA to the shared data folder)")
    out = yaleb.run(root, methods=("none", "pca", "lowrank"), n_train=3, max_people=6, n_components=20,
                    lr_max_iter=5, params={"lowrank": {"early_stopping": False}})
    assert len(out["split"]["train"]) == 3 and len(out["split"]["test"]) == 3
    assert sum(out["n_probes"].values()) > 100
    for method in ("none", "pca", "lowrank"):
        r = out["results"][method]["rank1"]
        assert set(r) == {1, 2, 3, 4, 5, "all"}
        assert all(0.0 <= v <= 1.0 for v in r.values())
        assert r[1] > 0.9, "frontal-ish light is easy even among 3 people"
    assert out["results"]["lowrank"]["n_iter"] == 5
    assert "| lowrank |" in yaleb.markdown_table(out)
