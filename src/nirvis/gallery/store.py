"""The gallery's source of truth: one SQLite file (WAL mode), one row per enrolled image.

Schema (``gallery.sqlite``)::

    meta(key TEXT PRIMARY KEY, value TEXT)          -- JSON values: format, version, pipeline, config, threshold
    faces(id INTEGER PRIMARY KEY AUTOINCREMENT,     -- never reused, so a FAISS id always means one row
          person TEXT, source TEXT, sha256 TEXT UNIQUE, enrolled_at TEXT (UTC, ISO 8601),
          fingerprint TEXT,                         -- of the models that made the vector
          vector BLOB,                              -- float32 little-endian, unit L2 norm
          vhash INTEGER,                            -- first 4 bytes of SHA-256(vector), little-endian
          face TEXT)                                -- the aligned face's PNG, relative to the gallery folder

An enrolment batch is one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``): after a crash at any moment
every row of the batch is there, or none is. :meth:`GalleryStore.state` summarises the vectors and ids in
a checksum that the FAISS index records, so a stale index is found with one aggregate query.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from nirvis.gallery.errors import GalleryError

__all__ = ["GalleryStore", "FaceRow", "StoreState", "DB_FILE", "vector_blob", "vector_hash", "utc_now"]

DB_FILE = "gallery.sqlite"

#: Multiplier that binds each row's id to its vector hash in :meth:`GalleryStore.state` (Knuth's 2^32 / phi).
_MIX = 2654435761

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS faces (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    person TEXT NOT NULL,
    source TEXT NOT NULL,
    sha256 TEXT NOT NULL UNIQUE,
    enrolled_at TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    vector BLOB NOT NULL,
    vhash INTEGER NOT NULL,
    face TEXT
);
CREATE INDEX IF NOT EXISTS faces_person ON faces(person);
"""


def utc_now() -> str:
    """The current time, UTC, ISO 8601 to the second (``2026-12-05T10:00:00Z``)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def vector_blob(vector: np.ndarray) -> bytes:
    """``(d,)`` vector -> float32 little-endian bytes."""
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def vector_hash(blob: bytes) -> int:
    """The 32-bit hash of a vector blob stored in ``faces.vhash``."""
    return int.from_bytes(hashlib.sha256(blob).digest()[:4], "little")


@dataclass(frozen=True)
class FaceRow:
    """One image to insert (the id is given by SQLite)."""

    person: str
    source: str
    sha256: str
    fingerprint: str
    vector: np.ndarray
    face: str | None = None


@dataclass(frozen=True)
class StoreState:
    """Summary of the rows that an index must hold: their number, the largest id, and an order-independent
    checksum of ``(id, vector)`` (the sum over rows of ``(vhash + id * 2654435761) mod 2^32``)."""

    rows: int
    max_id: int
    checksum: int

    def to_dict(self) -> dict[str, int]:
        return {"rows": self.rows, "max_id": self.max_id, "checksum": self.checksum}


class GalleryStore:
    """SQLite access for one gallery folder. Not thread-safe by itself: :class:`~nirvis.gallery.Gallery`
    serialises calls with a lock (the connection is opened with ``check_same_thread=False``).

    Parameters
    ----------
    folder
        The gallery folder holding :data:`DB_FILE`.
    create
        Create the file and its tables (the folder must exist).
    timeout
        Seconds to wait for another process's write lock before failing.
    """

    def __init__(self, folder: str | Path, *, create: bool = False, timeout: float = 60.0) -> None:
        self.folder = Path(folder)
        self.path = self.folder / DB_FILE
        if not create and not self.path.is_file():
            raise GalleryError(f"{self.folder}: not a nirvis gallery (no {DB_FILE}); create one with "
                               "`nirvis enroll --gallery DIR IMAGES` or Gallery.create")
        try:
            self.conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
            self.conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed enrolment survives a power cut too (WAL is safe against a killed process either way)
            self.conn.execute("PRAGMA synchronous=FULL")
            if create:
                self.conn.executescript(_SCHEMA)
            tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as exc:
            raise GalleryError(f"{self.path}: not a usable SQLite database ({exc})") from None
        if not {"meta", "faces"} <= tables:
            self.conn.close()
            raise GalleryError(f"{self.path}: not a nirvis gallery database (tables {sorted(tables)})")

    # -- meta ----------------------------------------------------------------------------------
    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is None:
            return default
        try:
            return json.loads(row[0])
        except json.JSONDecodeError as exc:
            raise GalleryError(f"{self.path}: meta entry {key!r} is not valid JSON ({exc})") from None

    def set_meta(self, values: dict[str, Any]) -> None:
        """Write several meta entries in one transaction."""
        with self.transaction():
            self.conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                                  [(k, json.dumps(v, sort_keys=True)) for k, v in values.items()])

    # -- transactions --------------------------------------------------------------------------
    def transaction(self, kind: str = "IMMEDIATE") -> _Transaction:
        """``with store.transaction(): ...``: one SQLite transaction (``IMMEDIATE`` takes the write lock
        first; ``DEFERRED`` is a consistent read snapshot)."""
        return _Transaction(self.conn, kind)

    def data_version(self) -> int:
        """Changes whenever another connection (another process) commits."""
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    # -- rows ----------------------------------------------------------------------------------
    def existing(self, digests: Iterable[str]) -> dict[str, str]:
        """``{sha256: person}`` of the digests already enrolled."""
        digests = list(dict.fromkeys(digests))
        out: dict[str, str] = {}
        for i in range(0, len(digests), 500):
            chunk = digests[i:i + 500]
            q = f"SELECT sha256, person FROM faces WHERE sha256 IN ({','.join('?' * len(chunk))})"
            out.update(dict(self.conn.execute(q, chunk).fetchall()))
        return out

    def insert(self, rows: Sequence[FaceRow]) -> tuple[list[tuple[int, FaceRow]], list[tuple[FaceRow, str]]]:
        """Insert ``rows`` in one transaction.

        Returns
        -------
        inserted, skipped
            ``(id, row)`` of each row written, and ``(row, existing person)`` of each row whose SHA-256 was
            already enrolled (by another process since the caller looked).
        """
        inserted: list[tuple[int, FaceRow]] = []
        skipped: list[tuple[FaceRow, str]] = []
        now = utc_now()
        with self.transaction():
            for r in rows:
                blob = vector_blob(r.vector)
                cur = self.conn.execute(
                    "INSERT OR IGNORE INTO faces (person, source, sha256, enrolled_at, fingerprint, vector, vhash, face)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (r.person, r.source, r.sha256, now, r.fingerprint, blob, vector_hash(blob), r.face))
                if cur.rowcount == 1:
                    inserted.append((int(cur.lastrowid), r))
                else:
                    who = self.conn.execute("SELECT person FROM faces WHERE sha256 = ?", (r.sha256,)).fetchone()
                    skipped.append((r, who[0] if who else "?"))
        return inserted, skipped

    def remove_person(self, person: str) -> list[tuple[int, str | None]]:
        """Delete every row of ``person`` in one transaction; ``(id, face file)`` of each row deleted."""
        with self.transaction():
            gone = self.conn.execute("SELECT id, face FROM faces WHERE person = ?", (person,)).fetchall()
            self.conn.execute("DELETE FROM faces WHERE person = ?", (person,))
        return [(int(i), f) for i, f in gone]

    def state(self, fingerprint: str, max_id: int | None = None) -> StoreState:
        """:class:`StoreState` of the rows made by ``fingerprint`` (those with ``id <= max_id`` if given)."""
        q = ("SELECT count(*), coalesce(max(id), 0), coalesce(sum((vhash + id * ?) % 4294967296), 0) FROM faces "
             "WHERE fingerprint = ?")
        args: list[Any] = [_MIX, fingerprint]
        if max_id is not None:
            q += " AND id <= ?"
            args.append(int(max_id))
        n, mx, s = self.conn.execute(q, args).fetchone()
        return StoreState(int(n), int(mx), int(s))

    def vectors(self, fingerprint: str, dim: int, after_id: int = 0
                ) -> tuple[np.ndarray, np.ndarray, StoreState, StoreState]:
        """The rows made by ``fingerprint`` with ``id > after_id``, read in one snapshot.

        Returns
        -------
        ids, vectors, state, prefix
            Ids ``(n,)`` int64 and vectors ``(n, dim)`` float32 in id order; the :class:`StoreState` of all
            that fingerprint's rows, and of those with ``id <= after_id`` (what an index built up to
            ``after_id`` must still match for the new rows to be added to it).

        Raises
        ------
        GalleryError
            If a stored vector is not ``dim`` float32 values (a damaged or foreign row), naming its id.
        """
        with self.transaction("DEFERRED"):
            rows = self.conn.execute("SELECT id, vector FROM faces WHERE fingerprint = ? AND id > ? ORDER BY id",
                                     (fingerprint, int(after_id))).fetchall()
            state = self.state(fingerprint)
            prefix = self.state(fingerprint, max_id=after_id)
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vecs = np.empty((len(rows), dim), dtype=np.float32)
        for k, (i, blob) in enumerate(rows):
            if not isinstance(blob, bytes) or len(blob) != 4 * dim:
                size = len(blob) if isinstance(blob, bytes) else 0
                raise GalleryError(f"{self.path}: row {i} holds a vector of {size} bytes, not {dim} float32 "
                                   "values; remove that person and enrol again")
            vecs[k] = np.frombuffer(blob, dtype="<f4")
        return ids, vecs, state, prefix

    def rows_by_id(self, ids: Sequence[int]) -> dict[int, tuple[str, str, str | None]]:
        """``{id: (person, source, face file)}``."""
        ids = [int(i) for i in ids]
        if not ids:
            return {}
        q = f"SELECT id, person, source, face FROM faces WHERE id IN ({','.join('?' * len(ids))})"
        return {int(i): (p, s, f) for i, p, s, f in self.conn.execute(q, ids).fetchall()}

    def people(self) -> list[tuple[str, int, str]]:
        """``(person, number of images, first enrolment time)``, sorted by person."""
        return [(p, int(n), t) for p, n, t in self.conn.execute(
            "SELECT person, count(*), min(enrolled_at) FROM faces GROUP BY person ORDER BY person")]

    def person_rows(self, person: str) -> list[tuple[int, str, str | None]]:
        """``(id, source, face file)`` of ``person``'s images, oldest first."""
        return [(int(i), s, f) for i, s, f in self.conn.execute(
            "SELECT id, source, face FROM faces WHERE person = ? ORDER BY id", (person,))]

    def counts(self) -> tuple[int, int]:
        """``(people, images)``."""
        n_people, n_images = self.conn.execute("SELECT count(DISTINCT person), count(*) FROM faces").fetchone()
        return int(n_people), int(n_images)

    def foreign_rows(self, fingerprint: str) -> int:
        """Rows made by another pipeline than ``fingerprint`` (never written by nirvis itself)."""
        return int(self.conn.execute("SELECT count(*) FROM faces WHERE fingerprint != ?", (fingerprint,)).fetchone()[0])

    def verify(self, dim: int) -> list[str]:
        """Problems of the rows themselves: a vector of the wrong size, not finite, not of unit norm, or not
        matching its stored hash. Empty when every row is sound (this reads every vector)."""
        problems = []
        for i, blob, vh in self.conn.execute("SELECT id, vector, vhash FROM faces ORDER BY id"):
            if not isinstance(blob, bytes) or len(blob) != 4 * dim:
                problems.append(f"row {i}: vector of {len(blob) if isinstance(blob, bytes) else 0} bytes, "
                                f"not {dim} float32 values")
                continue
            if vector_hash(blob) != vh:
                problems.append(f"row {i}: vector does not match its stored hash (changed behind the gallery's back)")
            v = np.frombuffer(blob, dtype="<f4")
            if not np.isfinite(v).all() or abs(float(np.linalg.norm(v)) - 1.0) > 1e-3:
                problems.append(f"row {i}: vector is not finite or not of unit length")
        return problems

    def close(self) -> None:
        try:
            self.conn.close()
        except sqlite3.Error:  # pragma: no cover
            pass


class _Transaction:
    def __init__(self, conn: sqlite3.Connection, kind: str) -> None:
        self.conn, self.kind = conn, kind

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute(f"BEGIN {self.kind}")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")
