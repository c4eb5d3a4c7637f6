"""Pruning the kept pairs to a roughly uniform spread over face locations (paper Sec. 3.1)."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["location_cap", "prune_per_location"]


def location_cap(counts: np.ndarray, quantile: float) -> int:
    """The per-location cap: ``ceil(quantile(counts[counts > 0], quantile))`` (at least 1)."""
    nz = np.asarray(counts)[np.asarray(counts) > 0]
    if nz.size == 0:
        return 0
    return max(1, int(math.ceil(float(np.quantile(nz, quantile)))))


def prune_per_location(location: np.ndarray, n_locations: int, quantile: float, seed: int) -> tuple[np.ndarray, int]:
    """Keep mask that caps every window location at a quantile of the per-location counts.

    Rule (our reading of the paper's "roughly uniform over face locations", 700k -> 600k): count the kept
    pairs of each of the ``n_locations`` window locations; the cap is the ``quantile`` of the counts of
    the non-empty locations, rounded up. A location above the cap keeps ``cap`` of its pairs drawn
    without replacement by ``numpy.random.default_rng([seed, location])``; the others keep all. The
    result depends only on ``location`` (in its canonical order), ``quantile`` and ``seed``.

    Returns
    -------
    ``(keep, cap)``: boolean ``(N,)`` mask and the cap.
    """
    location = np.asarray(location, dtype=np.int64)
    keep = np.ones(location.shape[0], dtype=bool)
    counts = np.bincount(location, minlength=n_locations)
    cap = location_cap(counts, quantile)
    if quantile >= 1.0:
        return keep, cap
    for loc in np.flatnonzero(counts > cap):
        idx = np.flatnonzero(location == loc)
        chosen = np.random.default_rng([int(seed), int(loc)]).choice(idx.size, size=cap, replace=False)
        drop = np.ones(idx.size, dtype=bool)
        drop[chosen] = False
        keep[idx[drop]] = False
    return keep, cap
