"""Identification and verification metrics, computed in one place for every experiment (paper Sec. 5).

Everything is a function of ``(probe features, probe labels, gallery features, gallery labels)``, like
pytorch-metric-learning's accuracy calculator. A probe whose face could not be aligned (or whose file
was missing) is passed with ``probe_ok=False``: it still counts, as a miss in identification and as a
rejected genuine pair in verification. It is never dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["cosine_scores", "identification_ranks", "cmc", "rank_k", "roc", "vr_at_far", "mean_std",
           "IdentificationResult", "evaluate_identification"]


def cosine_scores(probes: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """Cosine similarity of every probe with every gallery vector, shape ``(n_probes, n_gallery)``."""
    p = np.asarray(probes, dtype=np.float64)
    g = np.asarray(gallery, dtype=np.float64)
    if p.ndim != 2 or g.ndim != 2 or p.shape[1] != g.shape[1]:
        raise ValueError(f"probes {p.shape} and gallery {g.shape} must be 2-D with the same feature dimension")
    p = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)
    g = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
    return p @ g.T


def _mask(n: int, ok: np.ndarray | None) -> np.ndarray:
    return np.ones(n, dtype=bool) if ok is None else np.asarray(ok, dtype=bool)


def identification_ranks(scores: np.ndarray, probe_labels: Sequence, gallery_labels: Sequence,
                         probe_ok: np.ndarray | None = None) -> np.ndarray:
    """1-based rank of each probe's true identity in the gallery, ``inf`` when it cannot be found.

    A probe ranks ``r`` when ``r - 1`` gallery entries of other people score strictly higher than its
    best-scoring true match (ties count in the probe's favour only among equal scores of its own person).
    ``inf`` when the probe failed (``probe_ok`` False) or its person has no gallery entry.
    """
    scores = np.asarray(scores, dtype=np.float64)
    pl = np.asarray(probe_labels)
    gl = np.asarray(gallery_labels)
    if scores.shape != (len(pl), len(gl)):
        raise ValueError(f"scores shape {scores.shape} does not match {len(pl)} probes x {len(gl)} gallery")
    ok = _mask(len(pl), probe_ok)
    ranks = np.full(len(pl), np.inf)
    if len(gl) == 0:
        return ranks
    genuine = pl[:, None] == gl[None, :]
    has_match = genuine.any(axis=1) & ok
    best_true = np.where(genuine, scores, -np.inf).max(axis=1)
    better_impostors = (np.where(genuine, -np.inf, scores) > best_true[:, None]).sum(axis=1)
    ranks[has_match] = better_impostors[has_match] + 1
    return ranks


def cmc(ranks: np.ndarray, max_rank: int = 20) -> np.ndarray:
    """Cumulative match characteristic: fraction of probes with rank <= k, for k = 1..max_rank."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.size == 0:
        return np.zeros(max_rank)
    return np.array([(ranks <= k).mean() for k in range(1, max_rank + 1)])


def rank_k(ranks: np.ndarray, k: int = 1) -> float:
    """Fraction of probes identified within the first ``k`` gallery entries."""
    ranks = np.asarray(ranks, dtype=np.float64)
    return float((ranks <= k).mean()) if ranks.size else 0.0


def roc(scores: np.ndarray, probe_labels: Sequence, gallery_labels: Sequence,
        probe_ok: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC over all probe x gallery pairs.

    Returns
    -------
    far, vr, thresholds
        False-accept rate and verification rate (true-accept rate) at each threshold, FAR increasing.
        Pairs of failed probes are counted, never accepted.
    """
    from sklearn.metrics import roc_curve

    scores = np.asarray(scores, dtype=np.float64)
    pl = np.asarray(probe_labels)
    gl = np.asarray(gallery_labels)
    ok = _mask(len(pl), probe_ok)
    genuine = pl[:, None] == gl[None, :]
    n_gen, n_imp = int(genuine.sum()), int((~genuine).sum())
    if n_gen == 0 or n_imp == 0:
        raise ValueError(f"ROC needs genuine and impostor pairs; got {n_gen} genuine and {n_imp} impostor")
    g_ok, s_ok = genuine[ok].ravel(), scores[ok].ravel()
    if g_ok.size == 0 or g_ok.all() or not g_ok.any():
        # Every valid pair is of one kind: nothing can be accepted on the other side.
        return np.array([0.0, 1.0]), np.array([0.0, g_ok.sum() / n_gen]), np.array([np.inf, -np.inf])
    fpr, tpr, thr = roc_curve(g_ok, s_ok, drop_intermediate=False)
    # Rescale to all pairs: failed probes' pairs are in the denominators and never accepted.
    return fpr * (~g_ok).sum() / n_imp, tpr * g_ok.sum() / n_gen, thr


def vr_at_far(far: np.ndarray, vr: np.ndarray, target: float) -> float:
    """Verification rate at the largest threshold whose FAR does not exceed ``target``."""
    far = np.asarray(far)
    vr = np.asarray(vr)
    ok = far <= target + 1e-12
    return float(vr[ok].max()) if ok.any() else 0.0


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and (population) standard deviation over folds."""
    v = np.asarray(values, dtype=np.float64)
    return (float(v.mean()), float(v.std())) if v.size else (float("nan"), float("nan"))


@dataclass(frozen=True)
class IdentificationResult:
    """Metrics of one split: fractions in [0, 1]."""

    rank1: float
    rank5: float
    vr_far_1e2: float
    vr_far_1e3: float
    cmc: np.ndarray
    n_probes: int
    n_failed: int


def evaluate_identification(probe_features: np.ndarray, probe_labels: Sequence, gallery_features: np.ndarray,
                            gallery_labels: Sequence, probe_ok: np.ndarray | None = None,
                            max_rank: int = 20) -> IdentificationResult:
    """Rank-1, rank-5, CMC and VR@FAR (1%, 0.1%) of NIR probes against a VIS gallery, by cosine similarity.

    Rows of ``probe_features`` where ``probe_ok`` is False are ignored (they may hold NaN) and count as misses.
    """
    ok = _mask(len(probe_labels), probe_ok)
    pf = np.where(ok[:, None], np.nan_to_num(np.asarray(probe_features, dtype=np.float64)), 0.0)
    if len(gallery_labels) == 0:
        raise ValueError("the gallery is empty: nothing to identify against")
    s = cosine_scores(pf, gallery_features)
    ranks = identification_ranks(s, probe_labels, gallery_labels, ok)
    far, vr, _ = roc(s, probe_labels, gallery_labels, ok)
    return IdentificationResult(
        rank1=rank_k(ranks, 1), rank5=rank_k(ranks, 5), vr_far_1e2=vr_at_far(far, vr, 1e-2),
        vr_far_1e3=vr_at_far(far, vr, 1e-3), cmc=cmc(ranks, max_rank), n_probes=len(ranks),
        n_failed=int((~ok).sum()),
    )
