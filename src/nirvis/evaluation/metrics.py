"""Identification and verification metrics, computed in one place for every experiment (paper Sec. 5).

Everything is a function of ``(probe features, probe labels, gallery features, gallery labels)``, like
pytorch-metric-learning's accuracy calculator. A probe whose face could not be aligned (or whose file
was missing) is passed with ``probe_ok=False``: it still counts, as a miss in identification and as a
rejected genuine pair in verification. It is never dropped. A gallery image that could not be aligned is
passed with ``gallery_ok=False``: it cannot be matched (a probe whose person has no other gallery image
is a miss), and its pairs are never accepted in verification.

Conventions:

- Ranks are by **person**: a probe ranks ``r`` when ``r - 1`` other people have a gallery image that
  scores at least as high as the probe's best true match. Ties count against the probe, so a collapsed
  embedding (every score equal) scores no hits instead of every hit.
- VR@FAR is over **all** probe x gallery pairs, those of failed faces included and never accepted (the
  "generalised" FAR and VR of ISO/IEC 19795-1): a failed face lowers VR and cannot raise FAR.
- The ± of :func:`mean_std` is the population standard deviation over splits (``ddof=0``).
- Features of faces marked as aligned must be finite; NaN or inf there (an embedder or transform that
  broke) raises ``ValueError`` instead of becoming a zero vector that ties with everyone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["cosine_scores", "identification_ranks", "cmc", "rank_k", "roc", "vr_at_far", "roc_at_far", "mean_std",
           "IdentificationResult", "evaluate_identification", "FAR_GRID"]

#: FAR values at which :func:`roc_at_far` samples a ROC for ``evaluate --json`` (log-spaced, 1e-5 .. 1).
FAR_GRID = tuple(float(f) for f in np.logspace(-5, 0, 26))


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
                         probe_ok: np.ndarray | None = None, gallery_ok: np.ndarray | None = None) -> np.ndarray:
    """1-based rank of each probe's true identity among the gallery's people, ``inf`` when it cannot be found.

    A probe ranks ``r`` when ``r - 1`` *other people* have a gallery entry that scores at least as high as
    the probe's best-scoring true match (each person counts once, however many gallery images they have;
    ties count against the probe). ``inf`` when the probe failed (``probe_ok`` False) or its person has no
    usable gallery entry (none, or only ones with ``gallery_ok`` False).

    Parameters
    ----------
    scores
        ``(n_probes, n_gallery)`` similarities; the rows of failed probes and the columns of failed gallery
        entries are ignored, the others must be finite.
    """
    scores = np.asarray(scores, dtype=np.float64)
    pl = np.asarray(probe_labels)
    gl = np.asarray(gallery_labels)
    if scores.shape != (len(pl), len(gl)):
        raise ValueError(f"scores shape {scores.shape} does not match {len(pl)} probes x {len(gl)} gallery")
    ok = _mask(len(pl), probe_ok)
    gok = _mask(len(gl), gallery_ok)
    ranks = np.full(len(pl), np.inf)
    if not gok.any() or not ok.any():
        return ranks
    _check_finite(scores[np.ix_(ok, gok)], "similarity scores of aligned faces")
    people, col = np.unique(gl[gok], return_inverse=True)
    # Best score of each gallery person for each probe: (n_probes, n_people).
    best = np.full((len(pl), len(people)), -np.inf)
    np.maximum.at(best.T, col, scores[:, gok].T)
    index = {person: j for j, person in enumerate(people.tolist())}
    own = np.array([index.get(person, -1) for person in pl.tolist()], dtype=np.int64)
    rows = np.flatnonzero(ok & (own >= 0))
    true = best[rows, own[rows]]
    at_least = (best[rows] >= true[:, None]).sum(axis=1) - 1  # the probe's own person always counts once
    ranks[rows] = at_least + 1
    return ranks


def _check_finite(values: np.ndarray, what: str) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} {what} are not finite (NaN or inf): the embedder or the learned "
                         "transform produced them; faces that failed must be marked as failed instead")


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
        probe_ok: np.ndarray | None = None, gallery_ok: np.ndarray | None = None
        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC over all probe x gallery pairs.

    Pairs of failed probes (``probe_ok`` False) and failed gallery entries (``gallery_ok`` False) are counted
    in the denominators and never accepted (ISO/IEC 19795-1's generalised FAR and VR).

    Returns
    -------
    far, vr, thresholds
        False-accept rate and verification rate (true-accept rate) when pairs scoring ``>= threshold`` are
        accepted, FAR increasing; tied scores are accepted together.

    Raises
    ------
    ValueError
        When there are no genuine or no impostor pairs at all (e.g. a one-person gallery).
    """
    from sklearn.metrics import roc_curve

    scores = np.asarray(scores, dtype=np.float64)
    pl = np.asarray(probe_labels)
    gl = np.asarray(gallery_labels)
    valid = _mask(len(pl), probe_ok)[:, None] & _mask(len(gl), gallery_ok)[None, :]
    genuine = pl[:, None] == gl[None, :]
    n_gen, n_imp = int(genuine.sum()), int((~genuine).sum())
    if n_gen == 0 or n_imp == 0:
        raise ValueError(f"ROC needs genuine and impostor pairs; got {n_gen} genuine and {n_imp} impostor")
    g_ok, s_ok = genuine[valid], scores[valid]
    _check_finite(s_ok, "similarity scores of aligned faces")
    n_gen_ok, n_imp_ok = int(g_ok.sum()), int((~g_ok).sum())
    if n_gen_ok == 0 or n_imp_ok == 0:
        # Every usable pair is of one kind; accepting all of them gives the one other point of the curve.
        return (np.array([0.0, n_imp_ok / n_imp]), np.array([0.0, n_gen_ok / n_gen]),
                np.array([np.inf, s_ok.min() if s_ok.size else -np.inf]))
    fpr, tpr, thr = roc_curve(g_ok, s_ok, drop_intermediate=False)
    # Rescale to all pairs: failed faces' pairs are in the denominators and never accepted.
    return fpr * n_imp_ok / n_imp, tpr * n_gen_ok / n_gen, thr


def vr_at_far(far: np.ndarray, vr: np.ndarray, target: float) -> float:
    """Verification rate at the lowest threshold whose FAR does not exceed ``target`` (the highest VR among
    the ROC points with ``far <= target``; no interpolation between points)."""
    far = np.asarray(far)
    vr = np.asarray(vr)
    ok = far <= target + 1e-12
    return float(vr[ok].max()) if ok.any() else 0.0


def roc_at_far(far: np.ndarray, vr: np.ndarray, thresholds: np.ndarray,
               targets: Sequence[float] = FAR_GRID) -> dict[str, list[float]]:
    """The ROC sampled at ``targets``: for each target FAR, the operating point of :func:`vr_at_far` (the
    highest VR with ``far <= target``), its actual FAR and its score threshold (accept ``score >= threshold``;
    ``inf`` where no point qualifies, i.e. accept nothing). Small enough to keep in a JSON file per split."""
    far, vr, thresholds = (np.asarray(a, dtype=np.float64) for a in (far, vr, thresholds))
    out: dict[str, list[float]] = {"far_target": [], "far": [], "vr": [], "threshold": []}
    for t in targets:
        ok = np.flatnonzero(far <= t + 1e-12)
        i = ok[np.argmax(vr[ok])] if ok.size else None
        out["far_target"].append(float(t))
        out["far"].append(float(far[i]) if i is not None else 0.0)
        out["vr"].append(float(vr[i]) if i is not None else 0.0)
        out["threshold"].append(float(thresholds[i]) if i is not None else float("inf"))
    return out


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
    n_gallery: int = 0
    n_gallery_failed: int = 0
    roc: dict | None = None


def evaluate_identification(probe_features: np.ndarray, probe_labels: Sequence, gallery_features: np.ndarray,
                            gallery_labels: Sequence, probe_ok: np.ndarray | None = None,
                            max_rank: int = 20, gallery_ok: np.ndarray | None = None) -> IdentificationResult:
    """Rank-1, rank-5, CMC and VR@FAR (1%, 0.1%) of NIR probes against a VIS gallery, by cosine similarity.

    Rows of ``probe_features`` where ``probe_ok`` is False, and of ``gallery_features`` where ``gallery_ok``
    is False, are ignored (they may hold NaN) and count as described in the module docstring; the other rows
    must be finite. VR@FAR is NaN when the gallery has only one person (no impostor pairs) or no probe's
    person is in it (no genuine pairs).

    Raises
    ------
    ValueError
        For an empty gallery, one whose every image failed, or non-finite features of aligned faces.
    """
    ok = _mask(len(probe_labels), probe_ok)
    gok = _mask(len(gallery_labels), gallery_ok)
    if len(gallery_labels) == 0:
        raise ValueError("the gallery is empty: nothing to identify against")
    if not gok.any():
        raise ValueError(f"none of the {len(gallery_labels)} gallery images is usable (all failed): nothing to "
                         "identify against")
    pf = np.asarray(probe_features, dtype=np.float64)
    gf = np.asarray(gallery_features, dtype=np.float64)
    _check_finite(pf[ok], "feature values of aligned probes")
    _check_finite(gf[gok], "feature values of aligned gallery images")
    s = cosine_scores(np.where(ok[:, None], pf, 0.0), np.where(gok[:, None], gf, 0.0))
    ranks = identification_ranks(s, probe_labels, gallery_labels, ok, gok)
    people = set(np.asarray(gallery_labels).tolist())
    probe_people = np.asarray(probe_labels).tolist()
    has_genuine = any(p in people for p in probe_people)
    has_impostor = len(people) > 1 or any(p not in people for p in probe_people)
    if has_genuine and has_impostor:
        far, vr, thr = roc(s, probe_labels, gallery_labels, ok, gok)
        v2, v3 = vr_at_far(far, vr, 1e-2), vr_at_far(far, vr, 1e-3)
        sampled = roc_at_far(far, vr, thr)
    else:
        v2 = v3 = float("nan")
        sampled = None
    return IdentificationResult(
        rank1=rank_k(ranks, 1), rank5=rank_k(ranks, 5), vr_far_1e2=v2, vr_far_1e3=v3, cmc=cmc(ranks, max_rank),
        n_probes=len(ranks), n_failed=int((~ok).sum()), n_gallery=len(gok), n_gallery_failed=int((~gok).sum()),
        roc=sampled,
    )
