"""The results file that a report is drawn from (``nirvis evaluate --json``, ``nirvis demo --json``), read and
checked once, into plain dataclasses."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nirvis.errors import NirvisError

__all__ = ["ResultsError", "SplitResult", "Row", "Results", "load_results"]


class ResultsError(NirvisError, ValueError):
    """A results file cannot be drawn: missing, not JSON, or not of ``nirvis evaluate --json``'s layout."""


@dataclass(frozen=True)
class SplitResult:
    """One configuration on one split (fractions in [0, 1]).

    Attributes
    ----------
    cmc
        ``(K,)`` identification rate at ranks 1..K (K = 20 in ``evaluate``), or ``None`` if not recorded.
    roc
        ``{"far_target", "far", "vr", "threshold"}``: the ROC sampled at log-spaced FARs, or ``None`` (not
        recorded, or the split had no genuine or no impostor pairs).
    """

    split: str
    rank1: float
    cmc: np.ndarray | None = None
    roc: dict[str, np.ndarray] | None = None


@dataclass(frozen=True)
class Row:
    """One row of Table 2: a configuration (``raw``, ``H``, ``LR``, ``H+LR``, ...) over every split.

    Rates are fractions in [0, 1], NaN when undefined; ``error`` is set (and the numbers NaN) for a
    configuration that could not be fitted."""

    config: str
    rank1_mean: float = math.nan
    rank1_std: float = math.nan
    vr_1e2: float = math.nan
    vr_1e2_std: float = math.nan
    vr_1e3: float = math.nan
    vr_1e3_std: float = math.nan
    n_probes: int = 0
    n_failed_alignment: int = 0
    n_gallery_failed: int = 0
    n_splits: int = 0
    splits: tuple[SplitResult, ...] = ()
    error: str | None = None

    def split_rank1(self) -> dict[str, float]:
        """Rank-1 of each split, by split name."""
        return {s.split: s.rank1 for s in self.splits}


@dataclass(frozen=True)
class Results:
    """A whole results file.

    Attributes
    ----------
    path, sha256
        The file and the SHA-256 of its bytes (the report cites both).
    protocol
        Protocol name, e.g. ``rap3df-10x24/24``.
    rows
        Table 2's rows, in the file's order.
    alignment
        The file's ``alignment`` summary (rates, cascade steps); ``failures`` is taken out of it.
    failures
        ``[{"capture_id", "path", "reason"}]``: images that gave no features.
    demo
        The ``demo`` section of ``nirvis demo --json`` (settings, and each stage's key and folder), else empty.
    tables
        More tables of the same run: ``(title, protocol, rows)`` each (``nirvis demo --dataset casia`` adds the
        paper's Table 3 to its Table 2).
    command, cwd, created, versions, embedder
        Provenance (:func:`nirvis.report.provenance.run_info`); ``None``/empty in files written before nirvis
        recorded it.
    """

    path: Path
    sha256: str
    protocol: str
    rows: tuple[Row, ...]
    alignment: dict[str, Any] = field(default_factory=dict)
    failures: tuple[dict[str, str], ...] = ()
    command: str | None = None
    cwd: str | None = None
    created: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    embedder: dict[str, str] = field(default_factory=dict)
    demo: dict[str, Any] = field(default_factory=dict)
    tables: tuple[tuple[str, str, tuple[Row, ...]], ...] = ()

    def row(self, name: str) -> Row | None:
        """The scored row called ``name`` (``None`` when absent or failed)."""
        return next((r for r in self.rows if r.config == name and r.error is None), None)

    def resolve(self, image_path: str) -> Path | None:
        """Where an image path of the file lies now: an absolute path as written; a relative one under the
        folder the evaluation ran in (:attr:`cwd`), else under the current folder, else under the results
        file's folder. ``None`` if none exists."""
        p = Path(image_path)
        cands = [p] if p.is_absolute() else ([Path(self.cwd) / p] if self.cwd else []) + [p, self.path.parent / p]
        return next((c for c in cands if c.is_file()), None)


def _num(v: Any) -> float:
    """A rate from the file: a finite or NaN float (``null`` and missing are NaN)."""
    if v is None or isinstance(v, bool):
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _int(v: Any) -> int:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else 0


def _split(path: Path, config: str, d: Any) -> SplitResult:
    if not isinstance(d, dict):
        raise ResultsError(f"{path}: row {config!r}: each entry of 'splits' must be an object, got {type(d).__name__}")
    cmc = d.get("cmc")
    cmc_arr = None
    if isinstance(cmc, list) and cmc:
        cmc_arr = np.array([_num(v) for v in cmc], dtype=np.float64)
    roc = d.get("roc")
    roc_arr = None
    if isinstance(roc, dict) and isinstance(roc.get("far_target"), list) and isinstance(roc.get("vr"), list):
        keys = [k for k in ("far_target", "far", "vr", "threshold") if isinstance(roc.get(k), list)]
        roc_arr = {k: np.array([_num(v) for v in roc[k]], dtype=np.float64) for k in keys}
        if len({len(v) for v in roc_arr.values()}) != 1:
            raise ResultsError(f"{path}: row {config!r}, split {d.get('split')!r}: the ROC's lists differ in length")
    return SplitResult(split=str(d.get("split", "?")), rank1=_num(d.get("rank1")), cmc=cmc_arr, roc=roc_arr)


def load_results(path: str | os.PathLike) -> Results:
    """Read a results file of ``nirvis evaluate --json`` or ``nirvis demo --json``.

    Raises
    ------
    ResultsError
        When the file is missing, is not JSON, or lacks ``results`` (a list of rows with ``config``); the
        message names the file and what is wrong.
    """
    import json

    from nirvis._io import file_digest

    p = Path(path)
    if not p.is_file():
        raise ResultsError(f"{p}: no such results file (write one with nirvis evaluate --json {p})")
    try:
        text = p.read_text(encoding="utf-8")
        data = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{p}: not a readable JSON results file ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise ResultsError(f"{p}: not a results file of 'nirvis evaluate --json' or 'nirvis demo --json' "
                           "(no list 'results')")
    rows = _rows(p, data["results"], "results")
    if not rows:
        raise ResultsError(f"{p}: the results file holds no rows")
    alignment = data.get("alignment") if isinstance(data.get("alignment"), dict) else {}
    failures = alignment.get("failures") or []
    failures = tuple({"capture_id": str(f.get("capture_id", "")), "path": str(f.get("path", "")),
                      "reason": str(f.get("reason", ""))} for f in failures if isinstance(f, dict))
    versions = data.get("versions") if isinstance(data.get("versions"), dict) else {}
    embedder = data.get("embedder") if isinstance(data.get("embedder"), dict) else {}
    return Results(path=p, sha256=file_digest(p), protocol=str(data.get("protocol", "?")), rows=tuple(rows),
                   alignment={k: v for k, v in alignment.items() if k != "failures"}, failures=failures,
                   command=data.get("command") if isinstance(data.get("command"), str) else None,
                   cwd=data.get("cwd") if isinstance(data.get("cwd"), str) else None,
                   created=data.get("created") if isinstance(data.get("created"), str) else None,
                   versions={str(k): str(v) for k, v in versions.items()},
                   embedder={str(k): str(v) for k, v in embedder.items()},
                   demo=data["demo"] if isinstance(data.get("demo"), dict) else {}, tables=_tables(p, data.get("tables")))


def _tables(p: Path, tables: Any) -> tuple[tuple[str, str, tuple[Row, ...]], ...]:
    if tables is None:
        return ()
    if not isinstance(tables, list) or not all(isinstance(t, dict) and isinstance(t.get("results"), list)
                                               for t in tables):
        raise ResultsError(f"{p}: 'tables' must be a list of objects with a list 'results'")
    return tuple((str(t.get("title", t.get("protocol", "?"))), str(t.get("protocol", "?")),
                  tuple(_rows(p, t["results"], f"tables[{i}].results"))) for i, t in enumerate(tables))


def _rows(p: Path, results: list, where: str) -> list[Row]:
    """The rows of a ``results`` list (``where`` names it in errors)."""
    rows = []
    for i, r in enumerate(results):
        if not isinstance(r, dict) or not isinstance(r.get("config"), str):
            raise ResultsError(f"{p}: {where}[{i}] is not a row with a 'config' name")
        splits = r.get("splits") or []
        if not isinstance(splits, list):
            raise ResultsError(f"{p}: row {r['config']!r}: 'splits' must be a list")
        rows.append(Row(
            config=r["config"], rank1_mean=_num(r.get("rank1_mean")), rank1_std=_num(r.get("rank1_std")),
            vr_1e2=_num(r.get("vr_far_1e-2")), vr_1e2_std=_num(r.get("vr_far_1e-2_std")),
            vr_1e3=_num(r.get("vr_far_1e-3")), vr_1e3_std=_num(r.get("vr_far_1e-3_std")),
            n_probes=_int(r.get("n_probes")), n_failed_alignment=_int(r.get("n_failed_alignment")),
            n_gallery_failed=_int(r.get("n_gallery_failed")), n_splits=_int(r.get("n_splits")) or len(splits),
            splits=tuple(_split(p, r["config"], s) for s in splits),
            error=str(r["error"]) if r.get("error") is not None else None))
    return rows
