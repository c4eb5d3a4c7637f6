"""The gallery's search index: FAISS, derived from the SQLite rows and rebuilt from them when they disagree.

Scores are inner products of unit vectors, i.e. cosine similarities. The exact ``IndexFlatIP`` is used up
to :attr:`IndexConfig.exact_max` rows; above that, IVF (default) or HNSW, approximate: their recall@1
against the exact search is measured by ``benchmarks/bench_gallery_search.py``.

File (``index.faiss``), written atomically (temporary file + rename)::

    b"NIRVISIX"  uint64 little-endian header length  header (JSON, UTF-8)  FAISS serialised index

The header records the kind, the dimension, the pipeline fingerprint, the :class:`~nirvis.gallery.store.StoreState`
(row count, largest id, checksum of ids and vectors) of the rows it holds, and the SHA-256 of the FAISS
bytes, checked before they are given to FAISS (which does not survive damaged input).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nirvis._io import atomic_write
from nirvis.gallery.store import StoreState

__all__ = ["IndexConfig", "VectorIndex", "INDEX_FILE", "read_index_header"]

log = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
_MAGIC = b"NIRVISIX"
_FORMAT = "nirvis-gallery-index"
_VERSION = 1
KINDS = ("flat", "hnsw", "ivf")
#: Fewer queries than this are searched on the calling thread alone (OpenMP's setting is per thread).
SMALL_BATCH = 16
#: IVF's k-means is trained on at most this many vectors per cell (FAISS asks for 39 or more).
TRAIN_PER_LIST = 64


@dataclass(frozen=True)
class IndexConfig:
    """How the FAISS index is built.

    Attributes
    ----------
    exact_max
        Up to this many rows the index is exact (``IndexFlatIP``); above, it is ``approx``.
    approx
        ``"ivf"`` (default; ``IndexIVFFlat``: trained by k-means on the rows, retrained when the rows grow
        4-fold; removes rows in place) or ``"hnsw"`` (``IndexHNSWFlat``: no training, fast queries, but slow
        to build on a CPU and rebuilt whenever a person is removed).
    hnsw_m, hnsw_ef_construction, hnsw_ef_search
        HNSW's graph degree and its candidate list sizes when building and when searching.
    ivf_nlist
        IVF cells; 0 = ``4 * sqrt(rows)``, at least 16.
    ivf_nprobe
        IVF cells visited per query.
    """

    exact_max: int = 200_000
    approx: str = "ivf"
    hnsw_m: int = 16
    hnsw_ef_construction: int = 40
    hnsw_ef_search: int = 128
    ivf_nlist: int = 0
    ivf_nprobe: int = 128

    def __post_init__(self) -> None:
        for name in ("exact_max", "hnsw_m", "hnsw_ef_construction", "hnsw_ef_search", "ivf_nprobe"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"IndexConfig: {name} must be an int >= 1, got {v!r}")
        if isinstance(self.ivf_nlist, bool) or not isinstance(self.ivf_nlist, int) or self.ivf_nlist < 0:
            raise ValueError(f"IndexConfig: ivf_nlist must be an int >= 0 (0 = automatic), got {self.ivf_nlist!r}")
        if self.approx not in ("hnsw", "ivf"):
            raise ValueError(f"IndexConfig: approx must be 'hnsw' or 'ivf', got {self.approx!r}")

    def kind_for(self, rows: int) -> str:
        """The index kind for a gallery of ``rows`` vectors."""
        return "flat" if rows <= self.exact_max else self.approx

    def nlist_for(self, rows: int) -> int:
        return self.ivf_nlist or max(16, int(4 * np.sqrt(max(rows, 1))))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IndexConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class VectorIndex:
    """A FAISS inner-product index over the gallery's vectors, keyed by SQLite row id.

    Build it with :meth:`build`; :attr:`state` is the :class:`StoreState` of the rows it holds.
    """

    def __init__(self, index: Any, kind: str, dim: int, config: IndexConfig, state: StoreState,
                 trained_rows: int = 0) -> None:
        self.index = index
        self.kind = kind
        self.dim = dim
        self.config = config
        self.state = state
        self.trained_rows = trained_rows
        self._tune()

    def _tune(self) -> None:
        import faiss

        inner = faiss.downcast_index(self.index.index) if self.kind != "ivf" else faiss.downcast_index(self.index)
        if self.kind == "hnsw":
            inner.hnsw.efSearch = self.config.hnsw_ef_search
        elif self.kind == "ivf":
            inner.nprobe = self.config.ivf_nprobe

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray, dim: int, config: IndexConfig, state: StoreState,
              kind: str | None = None, seed: int = 0) -> VectorIndex:
        """Index ``vectors`` ``(n, dim)`` float32 under ``ids`` ``(n,)`` int64.

        ``kind`` defaults to :meth:`IndexConfig.kind_for` of ``n``; IVF is trained on (a seeded sample of)
        ``vectors``.
        """
        import faiss

        kind = kind or config.kind_for(len(ids))
        if kind not in KINDS:
            raise ValueError(f"index kind must be one of {KINDS}, got {kind!r}")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, dim)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        trained = 0
        if kind == "flat":
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        elif kind == "hnsw":
            inner = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = config.hnsw_ef_construction
            index = faiss.IndexIDMap2(inner)
        else:
            nlist = min(config.nlist_for(len(ids)), max(1, len(ids)))
            quantizer = faiss.IndexFlatIP(dim)
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(seed)
            n_train = TRAIN_PER_LIST * nlist
            sample = vectors if len(vectors) <= n_train else vectors[rng.choice(len(vectors), n_train, replace=False)]
            if len(sample) == 0:
                raise ValueError("an IVF index needs vectors to train on")
            index.train(sample)
            trained = len(vectors)
        if len(ids):
            index.add_with_ids(vectors, ids)
        return cls(index, kind, dim, config, state, trained)

    def add(self, ids: np.ndarray, vectors: np.ndarray, state: StoreState) -> None:
        """Add rows; ``state`` is the :class:`StoreState` of all rows held afterwards."""
        if len(ids):
            self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim),
                                    np.ascontiguousarray(ids, dtype=np.int64))
        self.state = state

    def remove(self, ids: np.ndarray, state: StoreState) -> bool:
        """Remove rows; False when this kind cannot remove (HNSW): rebuild it instead."""
        import faiss

        if self.kind == "hnsw":
            return False
        self.index.remove_ids(faiss.IDSelectorArray(np.ascontiguousarray(ids, dtype=np.int64)))
        self.state = state
        return True

    def stale_for(self, rows: int) -> bool:
        """Whether a gallery of ``rows`` vectors wants another kind of index, or IVF cells trained afresh."""
        if self.config.kind_for(rows) != self.kind:
            return True
        return self.kind == "ivf" and rows > 4 * max(self.trained_rows, 1)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best rows of each query: scores ``(m, k)`` float32 (cosine) and ids ``(m, k)`` int64,
        best first; ``-1`` ids (score ``-inf``) where fewer than ``k`` rows were found."""
        import faiss

        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        k = max(1, min(int(k), max(self.ntotal, 1)))
        if len(q) >= SMALL_BATCH:
            scores, ids = self.index.search(q, k)
        else:  # OpenMP threads only slow a single query down (30x on a busy 2-core machine); per calling thread
            previous = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(1)
            try:
                scores, ids = self.index.search(q, k)
            finally:
                faiss.omp_set_num_threads(previous)
        scores = np.where(ids >= 0, scores, -np.inf).astype(np.float32)
        return scores, ids

    def ids(self) -> np.ndarray:
        """The row ids held, sorted (flat and HNSW only; IVF gives them by reading its lists)."""
        import faiss

        if self.kind == "ivf":
            invlists = self.index.invlists
            out = [faiss.rev_swig_ptr(invlists.get_ids(c), invlists.list_size(c)).copy()
                   for c in range(self.index.nlist) if invlists.list_size(c)]
            return np.sort(np.concatenate(out)) if out else np.zeros(0, np.int64)
        return np.sort(faiss.vector_to_array(self.index.id_map).astype(np.int64))

    # -- file ------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, fingerprint: str) -> Path:
        """Write the index and its header atomically."""
        import faiss

        payload = faiss.serialize_index(self.index).tobytes()
        header = {"format": _FORMAT, "version": _VERSION, "kind": self.kind, "dim": self.dim,
                  "fingerprint": fingerprint, "state": self.state.to_dict(), "trained_rows": self.trained_rows,
                  "ntotal": self.ntotal, "payload_sha256": hashlib.sha256(payload).hexdigest()}
        head = json.dumps(header, sort_keys=True).encode()

        def write(p: Path) -> None:
            with open(p, "wb") as fh:
                fh.write(_MAGIC + len(head).to_bytes(8, "little") + head)
                fh.write(payload)

        return atomic_write(path, write)

    @classmethod
    def load(cls, path: str | os.PathLike, dim: int, fingerprint: str, config: IndexConfig) -> VectorIndex | None:
        """The index saved at ``path``, or ``None`` (with the reason logged) when it is missing, damaged, or
        made for another dimension or pipeline: the caller then rebuilds it from SQLite."""
        import faiss

        path = Path(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            log.info("%s: no index file; building it from the database", path)
            return None
        except OSError as exc:
            log.warning("%s: unreadable index file (%s); rebuilding it from the database", path, exc)
            return None
        header, payload = _split(data)
        reason = None
        if header is None:
            reason = "not a nirvis index file or truncated"
        elif header.get("format") != _FORMAT or header.get("version") != _VERSION:
            reason = f"format {header.get('format')!r} version {header.get('version')!r}"
        elif header.get("dim") != dim or header.get("fingerprint") != fingerprint or header.get("kind") not in KINDS:
            reason = "made for another pipeline or dimension"
        elif hashlib.sha256(payload).hexdigest() != header.get("payload_sha256"):
            reason = "damaged (checksum of the FAISS data differs)"
        if reason is None:
            try:
                index = faiss.deserialize_index(np.frombuffer(payload, dtype=np.uint8))
                st = header["state"]
                state = StoreState(int(st["rows"]), int(st["max_id"]), int(st["checksum"]))
            except (RuntimeError, KeyError, TypeError, ValueError) as exc:
                reason = f"unreadable ({exc})"
            else:
                if int(index.ntotal) != state.rows or int(header.get("ntotal", -1)) != state.rows:
                    reason = f"holds {index.ntotal} vectors but records {state.rows} rows"
        if reason is not None:
            log.warning("%s: %s; rebuilding it from the database", path, reason)
            return None
        return cls(index, header["kind"], dim, config, state, int(header.get("trained_rows", 0)))


def _split(data: bytes) -> tuple[dict | None, bytes]:
    if len(data) < 16 or not data.startswith(_MAGIC):
        return None, b""
    n = int.from_bytes(data[8:16], "little")
    if n <= 0 or 16 + n > len(data):
        return None, b""
    try:
        header = json.loads(data[16:16 + n].decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None, b""
    return (header if isinstance(header, dict) else None), data[16 + n:]


def read_index_header(path: str | os.PathLike) -> dict | None:
    """The header of an index file (for tests and ``gallery stats``), or ``None`` if it is not one."""
    try:
        return _split(Path(path).read_bytes())[0]
    except OSError:
        return None
