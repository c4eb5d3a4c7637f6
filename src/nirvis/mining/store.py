"""The patch store: a chunked, appendable HDF5 file of mined NIR/VIS patch pairs (paper Sec. 3.1).

Layout (N pairs, P = patch side)::

    /nir, /y, /cb, /cr   (N, P, P) uint8   NIR and VIS Y, Cb, Cr patches (after photometric normalisation)
    /person              (N,) int32        index into the ``people`` attribute
    /nir_id, /vis_id     (N,) bytes        capture ids of the source images
    /loc                 (N, 2) int16      (y, x) top-left of the 60x60 window in the 224x224 template
                                           (mirrored for flipped pairs)
    /s1, /s2             (N,) float32      scores of the pair
    /flip                (N,) bool         True for the horizontal flip of the pair just before it
    /mode                (N,) uint8        1: a simultaneous pair mined geometrically, 0: the paper's tests
                                           (absent from stores written before the geometric mode)
    /scored/s1, /scored/s2  float16       scores of every registered window (kept or not), for histograms

Attributes: ``format`` ("nirvis-patches"), ``version``, ``people`` (JSON list: the only people whose
patches the store holds), ``config``, ``reference``, ``summary``, ``dataset``, ``split`` (JSON) and
``complete``. Every dataset is chunked along N and can be extended (``maxshape=(None, ...)``);
:class:`PatchStore` reads slices, so training never loads the whole store.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from nirvis.errors import NirvisError

__all__ = ["PatchStore", "StoreError", "StorePeopleError", "check_store_people", "create_store", "append_pairs",
           "PAIR_FIELDS", "FORMAT", "VERSION"]

FORMAT = "nirvis-patches"
VERSION = 1
PAIR_FIELDS = ("nir", "y", "cb", "cr", "person", "nir_id", "vis_id", "loc", "s1", "s2", "flip")
_CHUNK = 256


class StoreError(NirvisError, ValueError):
    """A patch store is missing, incomplete or not a nirvis patch store."""


class StorePeopleError(NirvisError, ValueError):
    """A patch store holds people who must not be used (e.g. test people of the evaluation fold)."""


def _h5py():
    import h5py

    return h5py


def create_store(h5, patch: int, id_len: int) -> None:
    """Create the empty, chunked, extendable pair datasets in an open ``h5py.File``."""
    p = patch
    specs = {"nir": ((p, p), "u1"), "y": ((p, p), "u1"), "cb": ((p, p), "u1"), "cr": ((p, p), "u1"),
             "person": ((), "i4"), "nir_id": ((), f"S{id_len}"), "vis_id": ((), f"S{id_len}"),
             "loc": ((2,), "i2"), "s1": ((), "f4"), "s2": ((), "f4"), "flip": ((), "?"), "mode": ((), "u1")}
    for name, (shape, dtype) in specs.items():
        h5.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype,
                          chunks=(_CHUNK, *shape))
    for name in ("s1", "s2"):
        h5.create_dataset(f"scored/{name}", shape=(0,), maxshape=(None,), dtype="f2", chunks=(4096,))


def append_pairs(h5, arrays: dict[str, np.ndarray]) -> None:
    """Append rows to every dataset named in ``arrays`` (all with the same length, or ``scored/*``)."""
    for name, arr in arrays.items():
        ds = h5[name]
        n0 = ds.shape[0]
        ds.resize(n0 + arr.shape[0], axis=0)
        ds[n0:] = arr


class PatchStore:
    """Read-only access to a patch store, by slices (nothing is loaded whole).

    Examples
    --------
    >>> with PatchStore("patches.h5") as st:  # doctest: +SKIP
    ...     for batch in st.iter_batches(512):
    ...         nir, y = batch["nir"], batch["y"]
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise StoreError(f"{self.path}: patch store not found (run `nirvis mine` first)")
        h5py = _h5py()
        try:
            self._h5 = h5py.File(self.path, "r")
        except OSError as exc:
            raise StoreError(f"{self.path}: not a readable HDF5 file ({exc})") from exc
        fmt = self._h5.attrs.get("format")
        if fmt != FORMAT:
            self._h5.close()
            raise StoreError(f"{self.path}: not a nirvis patch store (format attribute {fmt!r}, "
                             f"expected {FORMAT!r})")
        if not bool(self._h5.attrs.get("complete", False)):
            self._h5.close()
            raise StoreError(f"{self.path}: patch store is incomplete; rerun `nirvis mine` to finish it")
        missing = [f"attribute {a!r}" for a in ("people", "config", "reference", "summary") if a not in self._h5.attrs]
        missing += [f"dataset {f!r}" for f in PAIR_FIELDS if f not in self._h5]
        if missing:
            self._h5.close()
            raise StoreError(f"{self.path}: damaged patch store (missing {', '.join(missing)}); mine it again")
        try:
            for a in ("people", "config", "reference", "summary"):
                json.loads(self._h5.attrs[a])
        except (TypeError, ValueError) as exc:
            self._h5.close()
            raise StoreError(f"{self.path}: damaged patch store (attribute {a!r} is not JSON: {exc}); "
                             "mine it again") from None

    def __enter__(self) -> PatchStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._h5.close()

    def __len__(self) -> int:
        return int(self._h5["nir"].shape[0])

    def _attr_json(self, name: str) -> Any:
        return json.loads(self._h5.attrs[name])

    @property
    def people(self) -> list[str]:
        """The people whose patches the store holds (sorted)."""
        return list(self._attr_json("people"))

    @property
    def config(self) -> dict:
        return self._attr_json("config")

    @property
    def summary(self) -> dict:
        return self._attr_json("summary")

    @property
    def reference(self) -> dict:
        return self._attr_json("reference")

    def dataset(self, name: str):
        """The underlying ``h5py.Dataset`` (chunked; slice it to read)."""
        return self._h5[name]

    def read(self, index: slice | np.ndarray | Iterable[int], fields: Iterable[str] = PAIR_FIELDS) -> dict[str, np.ndarray]:
        """Rows ``index`` (a slice, or indices, read in sorted order) of ``fields``."""
        if not isinstance(index, slice):
            index = np.unique(np.asarray(list(index) if not isinstance(index, np.ndarray) else index, dtype=np.int64))
        return {f: self._h5[f][index] for f in fields}

    def iter_batches(self, batch_size: int = 1024, fields: Iterable[str] = PAIR_FIELDS) -> Iterator[dict[str, np.ndarray]]:
        """Consecutive batches of rows; only one batch is in memory at a time."""
        fields = tuple(fields)
        for start in range(0, len(self), batch_size):
            yield self.read(slice(start, min(start + batch_size, len(self))), fields)

    def person_rows(self, people: Iterable[str]) -> np.ndarray:
        """Row indices of the pairs of ``people`` (for by-person train/validation splits)."""
        names = self.people
        wanted = [names.index(p) for p in people if p in names]
        pid = self._h5["person"][:]
        return np.flatnonzero(np.isin(pid, wanted))


def check_store_people(store: str | os.PathLike | PatchStore, forbidden_people: Iterable[str]) -> None:
    """Raise if the store holds any of ``forbidden_people`` (e.g. the test people of a fold).

    Call it before training on a store, with the evaluation split's test people, so that a test
    person's patches can never reach training.

    Raises
    ------
    StorePeopleError
        Naming the store, how many forbidden people it holds, and some of them.
    StoreError
        If the store is missing or not a complete nirvis patch store.
    """
    if isinstance(store, PatchStore):
        held, path = set(store.people), store.path
    else:
        with PatchStore(store) as st:
            held, path = set(st.people), st.path
    bad = sorted(held & {str(p) for p in forbidden_people})
    if bad:
        raise StorePeopleError(
            f"{path}: the patch store holds {len(bad)} forbidden (test) people, e.g. {bad[:5]}; mine a store "
            f"from this fold's training people only (nirvis mine --split train-of-fold-K)")
