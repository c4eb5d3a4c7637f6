"""Pruning to a roughly uniform spread over window locations (paper Sec. 3.1)."""

from __future__ import annotations

import numpy as np

from nirvis.mining.prune import location_cap, prune_per_location


def test_cap_is_quantile_of_nonempty_counts() -> None:
    assert location_cap(np.array([0, 1, 2, 3, 100]), 0.5) == 3
    assert location_cap(np.zeros(5, int), 0.9) == 0


def test_prune_caps_each_location_deterministically() -> None:
    loc = np.repeat(np.arange(4), [2, 3, 10, 50])
    keep, cap = prune_per_location(loc, 4, 0.5, seed=0)
    counts = np.bincount(loc[keep], minlength=4)
    assert cap == 7 and counts.tolist() == [2, 3, 7, 7]
    keep2, _ = prune_per_location(loc, 4, 0.5, seed=0)
    np.testing.assert_array_equal(keep, keep2)
    keep3, _ = prune_per_location(loc, 4, 0.5, seed=1)
    assert not np.array_equal(keep, keep3)
    keep_all, _ = prune_per_location(loc, 4, 1.0, seed=0)
    assert keep_all.all()
