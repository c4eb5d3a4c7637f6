"""Training data of the hallucination CNNs: by-person splits and chunked, shuffled reading of a patch store.

The paper trains on a 5/6 - 1/6 split of the mined patches *by person* (Sec. 3.1, PAPER-NOTES
"Hallucination CNNs"): :func:`split_people` makes that split, seeded and deterministic.

A patch store (:class:`~nirvis.mining.store.PatchStore`) is an HDF5 file chunked along the pair axis
(256 rows a chunk) and ordered by person. Reading random rows one by one costs a chunk read each, so
shuffling is done the way it is usually done for chunked stores:

1. :func:`epoch_blocks` permutes the store chunks that hold selected rows (seeded by ``(seed, epoch)``),
   groups them ``block_chunks`` at a time into *blocks*, and permutes the rows inside each block.
   Every row appears exactly once per epoch; the order depends only on ``(rows, seed, epoch)``, so a
   resumed run sees the same batches.
2. :class:`PatchBlocks` (a :class:`torch.utils.data.Dataset` whose item ``i`` is block ``i``) reads a
   block with one contiguous slice per chunk. Its HDF5 file is opened lazily, once per process, so it
   works in :class:`~torch.utils.data.DataLoader` workers.
3. :func:`iter_batches` cuts the stream of blocks into batches of ``batch_size`` pairs, starting at any
   batch (the position of a mid-epoch checkpoint). Under distributed training each rank takes every
   ``world_size``-th row of every block (:func:`shard_blocks`).

Samples are NIR ``(1, 40, 40)`` and targets ``(C, 40, 40)`` (Y, Cb, Cr in that order, or the chosen
subset), both ``uint8`` as stored; :func:`to_unit` turns a batch into float32 in [0, 1] (value / 255)
on the training device, so that only bytes cross process and device boundaries.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from nirvis.hallucination.nets import CHANNELS
from nirvis.mining.store import PatchStore

__all__ = ["PersonSplit", "split_people", "store_rows", "epoch_blocks", "shard_blocks", "steps_per_epoch",
           "PatchBlocks", "iter_batches", "to_unit", "BLOCK_CHUNKS"]

#: Store chunks per shuffle block (16 x 256 rows x 4 fields x 1600 bytes = 26 MB of patches in memory).
BLOCK_CHUNKS = 16


@dataclass(frozen=True)
class PersonSplit:
    """People for training and for validation (disjoint, each sorted)."""

    train: list[str]
    val: list[str]


def split_people(people: Sequence[str], val_fraction: float = 1 / 6, seed: int = 0) -> PersonSplit:
    """Split people into training and validation, by person (paper Sec. 3.1: 5/6 - 1/6).

    The split depends only on the *set* of people, ``val_fraction`` and ``seed``: ``round(n * val_fraction)``
    people (at least 1 when ``val_fraction > 0`` and there are 2 or more people, and never all of them) are
    drawn for validation by a seeded permutation of the sorted names.

    Parameters
    ----------
    people
        Person ids (duplicates are ignored).
    val_fraction
        Fraction of people held out for validation, in ``[0, 1)``. ``0`` gives no validation people.
    seed
        Seed of the draw.

    Raises
    ------
    ValueError
        If ``val_fraction`` is outside ``[0, 1)`` or there are no people.
    """
    names = sorted({str(p) for p in people})
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if not names:
        raise ValueError("cannot split an empty list of people")
    n_val = int(round(len(names) * val_fraction))
    if val_fraction > 0 and len(names) >= 2:
        n_val = min(max(n_val, 1), len(names) - 1)
    else:
        n_val = min(n_val, len(names) - 1)
    order = np.random.default_rng([seed, 0x5_1_7]).permutation(len(names))
    val = sorted(names[i] for i in order[:n_val])
    held = set(val)
    return PersonSplit(train=[p for p in names if p not in held], val=val)


def store_rows(store: PatchStore, people: Sequence[str]) -> np.ndarray:
    """Sorted store rows (``int64``) of the pairs of ``people`` (reads only the ``person`` column)."""
    return np.sort(store.person_rows(people).astype(np.int64))


def epoch_blocks(rows: np.ndarray, *, chunk: int, block_chunks: int = BLOCK_CHUNKS, seed: int = 0,
                 epoch: int = 0, shuffle: bool = True) -> list[np.ndarray]:
    """The shuffle blocks of one epoch: each an array of store rows, in the order they are trained on.

    Parameters
    ----------
    rows
        Selected store rows (e.g. :func:`store_rows` of the training people), ``int64``.
    chunk
        Rows per store chunk (the HDF5 chunk length along the pair axis).
    block_chunks
        Store chunks per block.
    seed, epoch
        The order is a pure function of ``(rows, chunk, block_chunks, seed, epoch)``.
    shuffle
        ``False`` keeps store order (validation): blocks of consecutive chunks, rows sorted.
    """
    rows = np.sort(np.asarray(rows, dtype=np.int64))
    if chunk < 1 or block_chunks < 1:
        raise ValueError(f"chunk and block_chunks must be >= 1, got {chunk}, {block_chunks}")
    if rows.size == 0:
        return []
    chunk_of = rows // chunk
    chunks, starts = np.unique(chunk_of, return_index=True)
    ends = np.append(starts[1:], rows.size)
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(chunks)) if shuffle else np.arange(len(chunks))
    blocks = []
    for b in range(0, len(order), block_chunks):
        sel = np.sort(order[b:b + block_chunks])
        block = np.concatenate([rows[starts[i]:ends[i]] for i in sel])
        blocks.append(block[rng.permutation(block.size)] if shuffle else block)
    return blocks


def shard_blocks(blocks: Sequence[np.ndarray], rank: int = 0, world_size: int = 1) -> list[np.ndarray]:
    """The share of one distributed rank: every ``world_size``-th row of every block, from ``rank``.

    Shares differ by at most one row per block whatever the store's size. Each rank still reads whole
    store chunks (and keeps its rows), so reading costs ``world_size`` times more than compute needs;
    a block is read in milliseconds, far less than a training step.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    if world_size == 1:
        return list(blocks)
    return [b[rank::world_size] for b in blocks if b[rank::world_size].size]


def steps_per_epoch(blocks: Sequence[np.ndarray], batch_size: int, world_size: int = 1) -> int:
    """Optimiser steps in an epoch: the fewest batches any rank has (``ceil(rows / batch_size)`` when alone).

    Every rank takes the same number of steps, as distributed data parallel training requires; with
    several ranks, the rows beyond that on the fuller ranks are skipped this epoch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    sizes = [sum(b.size for b in shard_blocks(blocks, r, world_size)) for r in range(world_size)]
    return min(-(-n // batch_size) for n in sizes)


class PatchBlocks(Dataset):
    """Item ``i``: the patches of block ``i``, as ``(nir, target)`` uint8 tensors.

    ``nir`` has shape ``(n, 1, P, P)`` and ``target`` ``(n, C, P, P)`` (the store's ``channels`` fields
    stacked in that order), rows in the block's order. Each chunk of the block is read with one slice, so
    nothing but the block is in memory. The HDF5 file is opened on first use in each process (so a
    :class:`~torch.utils.data.DataLoader` worker opens its own) and never pickled.

    Parameters
    ----------
    path
        The patch store (checked complete and of the right format when first opened).
    blocks
        Row arrays, e.g. from :func:`epoch_blocks`.
    channels
        Target fields, a subset of ``("y", "cb", "cr")``.
    """

    def __init__(self, path: str | os.PathLike, blocks: Sequence[np.ndarray],
                 channels: Sequence[str] = CHANNELS) -> None:
        bad = [c for c in channels if c not in CHANNELS]
        if bad or not channels:
            raise ValueError(f"channels must be a non-empty subset of {CHANNELS}, got {list(channels)}")
        self.path = Path(path)
        self.blocks = [np.asarray(b, dtype=np.int64) for b in blocks]
        self.channels = tuple(channels)
        self._store: PatchStore | None = None
        self._pid = -1

    def __len__(self) -> int:
        return len(self.blocks)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_store"], state["_pid"] = None, -1
        return state

    def _open(self) -> PatchStore:
        if self._store is None or self._pid != os.getpid():
            self._store, self._pid = PatchStore(self.path), os.getpid()
        return self._store

    def close(self) -> None:
        """Close this process's HDF5 handle (reopened on next use)."""
        if self._store is not None and self._pid == os.getpid():
            self._store.close()
        self._store, self._pid = None, -1

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.blocks[i]
        st = self._open()
        fields = ("nir", *self.channels)
        if rows.size == 0:
            p = st.dataset("nir").shape[1]
            return (torch.zeros((0, 1, p, p), dtype=torch.uint8), torch.zeros((0, len(self.channels), p, p), dtype=torch.uint8))
        chunk = st.dataset("nir").chunks[0] if st.dataset("nir").chunks else 256
        srt = np.unique(rows)
        if srt.size != rows.size:
            raise ValueError(f"block {i} of {self.path} repeats rows")
        pieces: dict[str, list[np.ndarray]] = {f: [] for f in fields}
        chunk_of = srt // chunk
        cut = np.flatnonzero(np.diff(chunk_of)) + 1
        for part in np.split(srt, cut):
            lo, hi = int(part[0]), int(part[-1]) + 1
            for f in fields:
                pieces[f].append(st.dataset(f)[lo:hi][part - lo])
        order = np.searchsorted(srt, rows)
        data = {f: np.concatenate(pieces[f])[order] for f in fields}
        nir = torch.from_numpy(data["nir"][:, None])
        target = torch.from_numpy(np.stack([data[c] for c in self.channels], axis=1))
        return nir, target


def iter_batches(blocks: PatchBlocks, batch_size: int, *, start: int = 0, stop: int | None = None,
                 num_workers: int = 0, pin_memory: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches ``start, start + 1, ... stop - 1`` of the row stream of ``blocks`` (in block order).

    Batch ``k`` holds rows ``k * batch_size`` to ``(k + 1) * batch_size`` of the concatenated blocks (the
    last one may be shorter). Blocks before the one holding batch ``start`` are not read. Blocks are read by
    ``num_workers`` :class:`~torch.utils.data.DataLoader` worker processes (0: in this process), in order.

    Yields
    ------
    nir : torch.Tensor
        ``(B, 1, P, P)`` uint8.
    target : torch.Tensor
        ``(B, C, P, P)`` uint8.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    sizes = np.array([b.size for b in blocks.blocks], dtype=np.int64)
    total = int(sizes.sum())
    n_batches = -(-total // batch_size)
    stop = n_batches if stop is None else min(stop, n_batches)
    if start >= stop:
        return
    first_row = start * batch_size
    ends = np.cumsum(sizes)
    b0 = int(np.searchsorted(ends, first_row, side="right"))
    skip = first_row - (int(ends[b0 - 1]) if b0 > 0 else 0)
    todo = stop - start
    sub = PatchBlocks(blocks.path, blocks.blocks[b0:], blocks.channels)
    loader = DataLoader(sub, batch_size=None, shuffle=False, num_workers=num_workers, pin_memory=pin_memory,
                        prefetch_factor=2 if num_workers > 0 else None)
    pend_n: torch.Tensor | None = None
    pend_t: torch.Tensor | None = None
    try:
        for nir, target in loader:
            if skip:
                nir, target, skip = nir[skip:], target[skip:], 0
            if pend_n is not None and pend_t is not None and pend_n.shape[0]:
                nir, target = torch.cat([pend_n, nir]), torch.cat([pend_t, target])
            pos = 0
            while nir.shape[0] - pos >= batch_size and todo > 0:
                yield nir[pos:pos + batch_size], target[pos:pos + batch_size]
                pos += batch_size
                todo -= 1
            if todo == 0:
                return
            pend_n, pend_t = nir[pos:], target[pos:]
        if pend_n is not None and pend_t is not None and pend_n.shape[0] and todo > 0:
            yield pend_n, pend_t
    finally:
        sub.close()


def to_unit(x: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 patches -> float32 in [0, 1] (value / 255), moved to ``device`` first (as bytes)."""
    if device is not None:
        x = x.to(device, non_blocking=True)
    return x.float().div_(255.0)
