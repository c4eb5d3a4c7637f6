"""Hallucination training data: by-person split, chunk-block shuffling, chunked reading of the store."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from nirvis.hallucination.data import (PatchBlocks, epoch_blocks, iter_batches, shard_blocks, split_people,
                                       steps_per_epoch, store_rows, to_unit)
from nirvis.mining.store import PatchStore

from .synth_store import make_store

PEOPLE = [f"p{i:02d}" for i in range(7)]
COUNTS = [90, 40, 130, 70, 60, 110, 100]  # 600 rows: 3 store chunks of 256, people straddling chunks


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("data") / "s.h5", PEOPLE, COUNTS, patch=8)


def test_split_people_is_by_person_disjoint_and_deterministic() -> None:
    people = [f"id{i}" for i in range(60)]
    a = split_people(people, 1 / 6, seed=3)
    assert len(a.val) == 10 and len(a.train) == 50
    assert not set(a.train) & set(a.val) and set(a.train) | set(a.val) == set(people)
    assert a.train == sorted(a.train) and a.val == sorted(a.val)
    assert split_people(list(reversed(people)) + people[:5], 1 / 6, seed=3) == a  # order and duplicates ignored
    assert split_people(people, 1 / 6, seed=4).val != a.val
    assert split_people(people, 0.0).val == []
    assert len(split_people(["a", "b"], 0.01).val) == 1  # at least one validation person...
    assert split_people(["a"], 0.5).val == []  # ...but never all of them


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_split_people_rejects_bad_fraction(bad: float) -> None:
    with pytest.raises(ValueError, match=f"val_fraction must be in \\[0, 1\\), got {bad}"):
        split_people(["a", "b"], bad)


def test_epoch_blocks_cover_each_row_once_and_depend_on_seed_and_epoch() -> None:
    rows = np.concatenate([np.arange(10, 300), np.arange(400, 1500)])
    blocks = epoch_blocks(rows, chunk=100, block_chunks=3, seed=1, epoch=0)
    flat = np.concatenate(blocks)
    np.testing.assert_array_equal(np.sort(flat), rows)
    assert all(len(np.unique(b // 100)) <= 3 for b in blocks)  # a block spans at most block_chunks chunks
    again = epoch_blocks(rows, chunk=100, block_chunks=3, seed=1, epoch=0)
    assert all(np.array_equal(x, y) for x, y in zip(blocks, again))
    other_epoch = np.concatenate(epoch_blocks(rows, chunk=100, block_chunks=3, seed=1, epoch=1))
    other_seed = np.concatenate(epoch_blocks(rows, chunk=100, block_chunks=3, seed=2, epoch=0))
    assert not np.array_equal(flat, other_epoch) and not np.array_equal(flat, other_seed)
    ordered = epoch_blocks(rows, chunk=100, block_chunks=3, shuffle=False)
    np.testing.assert_array_equal(np.concatenate(ordered), rows)
    assert epoch_blocks(np.zeros(0, np.int64), chunk=100) == []


def test_shards_are_disjoint_balanced_and_steps_agree() -> None:
    blocks = epoch_blocks(np.arange(1001), chunk=100, block_chunks=4, seed=0)
    shards = [shard_blocks(blocks, r, 3) for r in range(3)]
    flat = np.concatenate([np.concatenate(s) for s in shards])
    np.testing.assert_array_equal(np.sort(flat), np.arange(1001))
    sizes = [sum(b.size for b in s) for s in shards]
    assert max(sizes) - min(sizes) <= len(blocks)
    assert steps_per_epoch(blocks, 64, 3) == -(-min(sizes) // 64)
    assert steps_per_epoch(blocks, 64, 1) == -(-1001 // 64)
    with pytest.raises(ValueError, match="rank must be in"):
        shard_blocks(blocks, 3, 3)


def test_blocks_read_the_right_patches_in_block_order(store: Path) -> None:
    with PatchStore(store) as st:
        rows = store_rows(st, ["p01", "p02", "p05"])
        assert rows.size == 40 + 130 + 110 and (np.diff(rows) > 0).all()
    blocks = epoch_blocks(rows, chunk=256, block_chunks=2, seed=0)
    ds = PatchBlocks(store, blocks, channels=("cr", "y"))
    assert ds._store is None  # nothing opened before first use
    with h5py.File(store, "r") as h5:
        for i, b in enumerate(blocks):
            nir, target = ds[i]
            assert nir.dtype == torch.uint8 and nir.shape == (b.size, 1, 8, 8)
            assert target.shape == (b.size, 2, 8, 8)
            np.testing.assert_array_equal(nir[:, 0].numpy(), np.stack([h5["nir"][r] for r in b]))
            np.testing.assert_array_equal(target[:, 0].numpy(), np.stack([h5["cr"][r] for r in b]))
            np.testing.assert_array_equal(target[:, 1].numpy(), np.stack([h5["y"][r] for r in b]))
    clone = pickle.loads(pickle.dumps(ds))  # what a spawned DataLoader worker receives: no open file
    assert clone._store is None and len(clone) == len(ds)
    ds.close()
    with pytest.raises(ValueError, match="channels must be a non-empty subset"):
        PatchBlocks(store, blocks, channels=("r",))


def test_iter_batches_resumes_anywhere_and_workers_match(store: Path) -> None:
    with PatchStore(store) as st:
        rows = store_rows(st, st.people)
    blocks = PatchBlocks(store, epoch_blocks(rows, chunk=256, block_chunks=1, seed=5))
    full = list(iter_batches(blocks, 64))
    assert [b[0].shape[0] for b in full] == [64] * 9 + [600 - 9 * 64]
    stream = torch.cat([b[0] for b in full])
    expect = torch.cat([blocks[i][0] for i in range(len(blocks))])
    assert torch.equal(stream, expect)
    for start, stop in [(0, 2), (3, 7), (4, None), (9, 10)]:
        part = list(iter_batches(blocks, 64, start=start, stop=stop))
        want = full[start:stop]
        assert len(part) == len(want)
        assert all(torch.equal(p[0], w[0]) and torch.equal(p[1], w[1]) for p, w in zip(part, want))
    assert list(iter_batches(blocks, 64, start=10)) == []
    workers = list(iter_batches(blocks, 64, start=2, num_workers=2))
    assert all(torch.equal(p[1], w[1]) for p, w in zip(workers, full[2:])) and len(workers) == len(full) - 2


def test_to_unit_scales_to_float_in_0_1() -> None:
    x = torch.tensor([0, 51, 255], dtype=torch.uint8)
    y = to_unit(x, "cpu")
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, torch.tensor([0.0, 0.2, 1.0]))
