"""The sentence under Table 2: did hallucination (H, paper Sec. 3) and the low-rank embedding (LR, Sec. 4) help on
this data? Computed from the numbers of the results file, never written in advance."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nirvis.report.results import Results, Row

__all__ = ["Comparison", "compare", "verdict", "COMPARISONS", "T_THRESHOLD"]

#: The rows compared, ``(row, baseline, what the row adds)``, in the order the sentence reports them; pairs of
#: which either row is absent or failed are left out.
COMPARISONS: tuple[tuple[str, str, str], ...] = (
    ("H", "raw", "H"), ("H(id)", "raw", "H(id)"), ("LR", "raw", "LR"),
    ("H+LR", "raw", "H+LR"), ("H+LR", "LR", "H on top of LR"), ("H(id)+LR", "raw", "H(id)+LR"),
)

#: A change counts as help (or harm) when its mean over splits is at least this many standard errors from 0
#: (a paired t statistic; about the 95% level for 10 splits).
T_THRESHOLD = 2.0


@dataclass(frozen=True)
class Comparison:
    """Rank-1 of ``row`` against ``baseline`` on the splits both were scored on (fractions in [0, 1]).

    Attributes
    ----------
    mean_diff
        Mean over splits of (row - baseline) rank-1.
    t
        ``mean_diff`` over its standard error (``nan`` with one split; ``inf`` when every split moved equally).
    better, worse
        Splits on which the row was better / worse.
    outcome
        ``"helped"``, ``"hurt"``, ``"no clear difference"`` or, with one split, ``"one split"``.
    """

    row: str
    baseline: str
    label: str
    row_rank1: float
    baseline_rank1: float
    n_splits: int
    mean_diff: float
    t: float
    better: int
    worse: int
    outcome: str


def compare(row: Row, baseline: Row, label: str | None = None) -> Comparison | None:
    """Paired comparison of two rows over their common splits; ``None`` when they share no scored split."""
    a, b = row.split_rank1(), baseline.split_rank1()
    common = [s for s in a if s in b and math.isfinite(a[s]) and math.isfinite(b[s])]
    if not common:
        return None
    ra, rb = np.array([a[s] for s in common]), np.array([b[s] for s in common])
    d = ra - rb
    n, mean = len(d), float(d.mean())
    if n == 1:
        t, outcome = math.nan, "one split"
    else:
        se = float(d.std(ddof=1)) / math.sqrt(n)
        t = mean / se if se > 0 else (math.inf * np.sign(mean) if mean != 0 else 0.0)
        outcome = "helped" if t >= T_THRESHOLD else "hurt" if t <= -T_THRESHOLD else "no clear difference"
    return Comparison(row.config, baseline.config, label or row.config, float(ra.mean()), float(rb.mean()), n,
                      mean, float(t), int((d > 0).sum()), int((d < 0).sum()), outcome)


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def _clause(c: Comparison) -> str:
    moved = f"rank-1 went from {_pct(c.baseline_rank1)} ({c.baseline}) to {_pct(c.row_rank1)} ({c.row})"
    if c.outcome == "one split":
        return f"{c.label}: {moved} on the one split scored, which cannot tell an effect from chance"
    change = f"{100 * c.mean_diff:+.1f} points on average over {c.n_splits} splits, better on {c.better}, worse " \
             f"on {c.worse}"
    verb = "made no clear difference" if c.outcome == "no clear difference" else c.outcome
    return f"{c.label} {verb}: {moved}, {change}"


def verdict(results: Results) -> tuple[str, list[Comparison]]:
    """The sentence under Table 2, and the comparisons it was made from.

    A row helped when its paired rank-1 gain over the baseline, averaged over splits, is at least
    :data:`T_THRESHOLD` standard errors above zero; hurt when as far below; else it made no clear difference.
    Only rows present (and scored) in ``results`` are compared.
    """
    comps = []
    for name, base, label in COMPARISONS:
        r, b = results.row(name), results.row(base)
        if r is not None and b is not None:
            c = compare(r, b, label)
            if c is not None:
                comps.append(c)
    if not comps:
        present = ", ".join(r.config for r in results.rows)
        return (f"These results hold no H or LR row to compare with raw (rows: {present}); run nirvis evaluate "
                "with --hallucination MODELS and -e lowrank to see whether they help.", [])
    return "On this data, " + "; ".join(_clause(c) for c in comps) + \
        f". (Paired over splits; a change counts when its mean is at least {T_THRESHOLD:g} standard errors " \
        "from zero.)", comps
