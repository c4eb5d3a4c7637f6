"""A cache of pipeline stages, keyed by what each stage computes from.

A stage's key is a hash of its name, its configuration and the keys of its inputs (the stages, or the data, it
reads). Change a setting of a stage and its key changes, and so do the keys of every stage after it: they are
computed again, while the stages before it are found in the cache. Layout::

    root/
        <stage>/<key>/              a finished stage: its files, and stage.json (what it was computed from)
        <stage>/<key>.partial/      a stage being computed, or interrupted (kept: the next run resumes there)
        .lock                       held by the run that uses the cache

A stage's files are computed in ``<key>.partial/``, ``stage.json`` is written there last, and the folder is then
renamed to ``<key>/`` (one atomic rename), so a stage folder without the ``.partial`` suffix is always complete;
a run killed at any moment leaves at most a partial folder, which the next run of the same stage continues from
(mining resumes per person, training from its last checkpoint) or overwrites.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nirvis._io import atomic_write_json, read_json
from nirvis.errors import NirvisError

__all__ = ["StageCache", "StageResult", "PendingStage", "StageCacheError", "stage_key", "STAGE_RECORD",
           "CACHE_VERSION"]

#: The file that marks a finished stage and records what it was computed from.
STAGE_RECORD = "stage.json"

#: Part of every key: bumped when the layout of a stage's files changes, so that old entries are not read.
CACHE_VERSION = 1

_PARTIAL = ".partial"


class StageCacheError(NirvisError, OSError):
    """The stage cache cannot be used: its folder cannot be written, or a stage's record is damaged."""


def _canonical(obj: Any) -> str:
    def default(o: Any) -> Any:
        if isinstance(o, Path):
            return str(o)
        if isinstance(o, (set, frozenset)):
            return sorted(o)
        if hasattr(o, "tolist"):  # numpy scalars and arrays
            return o.tolist()
        raise TypeError(f"stage configuration: {type(o).__name__} is not JSON-able ({o!r})")

    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=default)


def stage_key(stage: str, config: Any, inputs: Sequence[str] = ()) -> str:
    """The key of ``stage`` computed with ``config`` (JSON-able) from ``inputs`` (keys of earlier stages, or
    digests of data): 20 hex digits of a SHA-256. The order of ``inputs`` matters."""
    blob = _canonical({"stage": stage, "config": config, "inputs": list(inputs), "version": CACHE_VERSION})
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class StageResult:
    """A finished stage.

    Attributes
    ----------
    stage, key
        Its name and key.
    path
        Its folder (read its files from there).
    cached
        ``True`` when it was found in the cache: nothing was computed in this run.
    seconds
        Time this run spent on it (a lookup, or the computation).
    computed_seconds
        Time its computation took when it ran (in this run or an earlier one).
    info
        What its computation returned (counts, settings worth showing), as recorded in ``stage.json``.
    """

    stage: str
    key: str
    path: Path
    cached: bool
    seconds: float
    computed_seconds: float
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PendingStage:
    """A stage to compute: write its files into :attr:`work`, then :meth:`StageCache.commit` it."""

    stage: str
    key: str
    config: Any
    inputs: tuple[str, ...]
    work: Path
    final: Path
    started: float


class StageCache:
    """Finished stages under ``root``, found by :func:`stage_key`.

    Parameters
    ----------
    root
        The cache folder (e.g. ``~/.cache/nirvis/demo``); created on first write.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def path(self, stage: str, key: str) -> Path:
        """The folder of a finished stage (which may not exist)."""
        if not stage or "/" in stage or stage.startswith("."):
            raise ValueError(f"stage name {stage!r}: use a plain folder name")
        return self.root / stage / key

    def lookup(self, stage: str, key: str) -> StageResult | None:
        """The finished stage of this key, or ``None``. A folder whose record cannot be read (edited by hand,
        or a disk error) is removed and reported missing, so that the stage is computed again."""
        t0 = time.perf_counter()
        final = self.path(stage, key)
        record = final / STAGE_RECORD
        if not record.is_file():
            if final.is_dir():  # not written by commit(): not ours to trust
                shutil.rmtree(final, ignore_errors=True)
            return None
        try:
            rec = read_json(record, StageCacheError)
            if not isinstance(rec, dict) or rec.get("key") != key:
                raise StageCacheError(f"{record}: not the record of stage {stage} {key}")
        except (StageCacheError, OSError):
            shutil.rmtree(final, ignore_errors=True)
            return None
        return StageResult(stage, key, final, True, time.perf_counter() - t0, float(rec.get("seconds", 0.0)),
                           dict(rec.get("info") or {}))

    def begin(self, stage: str, config: Any, inputs: Sequence[str] = ()) -> StageResult | PendingStage:
        """The finished stage if it is cached; else a :class:`PendingStage` whose work folder exists (and holds
        whatever an interrupted run of the same stage left there)."""
        key = stage_key(stage, config, inputs)
        hit = self.lookup(stage, key)
        if hit is not None:
            return hit
        final = self.path(stage, key)
        work = final.with_name(key + _PARTIAL)
        try:
            work.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StageCacheError(f"stage cache {self.root}: cannot create {work} ({exc}); give a writable "
                                  "folder") from None
        return PendingStage(stage, key, json.loads(_canonical(config)), tuple(inputs), work, final,
                            time.perf_counter())

    def commit(self, pending: PendingStage, info: dict[str, Any] | None = None, *, seconds: float | None = None
               ) -> StageResult:
        """Record ``pending`` as finished: ``stage.json`` into its work folder, then one rename to its key.
        ``seconds``: what its computation took (default: the time since :meth:`begin`)."""
        seconds = time.perf_counter() - pending.started if seconds is None else float(seconds)
        info = json.loads(_canonical(info or {}))
        atomic_write_json(pending.work / STAGE_RECORD, {
            "stage": pending.stage, "key": pending.key, "config": pending.config, "inputs": list(pending.inputs),
            "seconds": round(seconds, 3), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "info": info})
        try:
            os.rename(pending.work, pending.final)
        except OSError:
            if self.lookup(pending.stage, pending.key) is None:  # not a concurrent run's identical result
                raise
            shutil.rmtree(pending.work, ignore_errors=True)
        return StageResult(pending.stage, pending.key, pending.final, False, seconds, seconds, info)

    def run(self, stage: str, config: Any, inputs: Sequence[str], compute: Callable[[Path], dict[str, Any] | None]
            ) -> StageResult:
        """The stage from the cache, or ``compute(work_folder)`` run and committed (its return value is the
        stage's ``info``). An exception from ``compute`` leaves the work folder for the next run."""
        got = self.begin(stage, config, inputs)
        if isinstance(got, StageResult):
            return got
        return self.commit(got, compute(got.work))

    @contextlib.contextmanager
    def lock(self, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
        """Hold the cache for one run: a second run on the same cache waits (``on_wait`` is told once) rather
        than computing the same stages into the same folders."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fh = open(self.root / ".lock", "a+")  # noqa: SIM115 - held for the block
        except OSError as exc:
            raise StageCacheError(f"stage cache {self.root}: cannot be written ({exc}); give a writable "
                                  "folder") from None
        try:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait is not None:
                    on_wait(f"another run is using the stage cache {self.root}; waiting for it to finish")
                fcntl.flock(fh, fcntl.LOCK_EX)
            yield
        finally:
            fh.close()  # releases the lock
