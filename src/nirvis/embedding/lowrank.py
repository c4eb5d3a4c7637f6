"""Low-rank transform (paper Sec. 4.1; Qiu & Sapiro, "Learning transformations for clustering and
classification", JMLR 16, 2015).

A ``d x d`` matrix ``T`` is learned to minimise

.. math::

    f(T) = \\sum_c \\|T Y_c\\|_* - \\|T Y\\|_*            (paper eq. 2)

where the columns of ``Y`` are the (PCA-reduced) training features and ``Y_c`` those of person ``c``
(for NIR-VIS, the NIR and VIS features of one person share one label). ``f >= 0``, and ``f = 0`` when
the class subspaces are orthogonal (paper Theorem 1). ``f`` is a difference of convex functions; it
is minimised from ``T = I`` by subgradient steps (the concave-convex procedure in practice).

Conventions
-----------
Feature vectors are the *rows* of ``X`` (scikit-learn style), so ``Y = X.T`` and the transformed
features are ``X @ T.T``. If ``T Y_b = U S V^T`` (singular values above a small threshold), a
subgradient of ``||T Y_b||_*`` in ``T`` is ``U V^T Y_b^T``, hence

.. math::

    \\nabla f(T) = \\sum_c U_c V_c^T Y_c^T - U V^T Y^T .

How one iteration stays cheap
-----------------------------
No SVD is taken per class. For a block ``M = T Y_b`` (``d x n_b``):

- if ``n_b <= d`` (a class: about 25 vectors against ``d = 1024``), the ``n_b x n_b`` Gram
  ``M^T M = V S^2 V^T`` gives ``||M||_* = sum(S)`` and ``U V^T Y_b^T = M (V S^{-1} V^T) Y_b^T``;
  the classes are grouped by size and decomposed with one batched ``eigh`` per size;
- if ``n_b > d`` (the whole set: 8,750 vectors), the ``d x d`` Gram ``M M^T = T C_b T^T`` with the
  constant ``C_b = Y_b Y_b^T`` gives ``U V^T Y_b^T = (U S^{-1} U^T) T C_b``.

The class part of the subgradient is ``T Q^T Q`` with the rows ``Q_c = S_c^(-1/2) V_c^T Y_c^T``:
one symmetric ``n x d x d`` product (half the work of a general one). Along a search direction
``G`` every class Gram is a quadratic in the step ``t`` (``(Z - tD)(Z - tD)^T`` with ``Z = X T^T``,
``D = X G^T``, one ``n x d x d`` product per iteration), and ``Z`` is updated, not recomputed. PCA-
reduced data (what :class:`LowRankTransform` passes) have a diagonal ``C = Y Y^T``, so ``T C`` is a
column scaling and each trial step forms ``(T - tG) C (T - tG)^T`` by one symmetric ``d x d x d``
product. Trying a step thus costs a few small eigen-decompositions and one ``d x d`` one (its
eigenvectors, needed by the next subgradient, are computed for the first two trials of a line
search; later, usually rejected, trials compute eigenvalues only, a third of the cost).
Singular values below ``rtol * sigma_max`` of their block are treated as zero (``rtol = 1e-6``
in float64, ``1e-4`` when the large products run in float32).

At ``n = 8750, d = 1024`` (``benchmarks/bench_lowrank.py``, 1.28 evaluations of ``f`` per
iteration) an iteration does 18.4 GFLOP of general and 9.2 GFLOP of symmetric ``n x d x d``
products, 6.7 GFLOP of ``d x d x d`` ones, 1.4 GFLOP of per-class ones and 1.3 ``d x d``
eigen-decompositions, plus 0.9 GFLOP for recomputing ``Z`` every 20 steps.

Step rules
----------
``"backtracking"`` (default)
    Armijo backtracking on ``f`` itself: a step ``T+`` is accepted only when
    ``f(T+) <= f(T) - 1e-4 * ||T+ - T||_F^2 / t``, so ``objective_history_`` strictly decreases.
    The step is halved until it is accepted, and grown by 1.25 after a step accepted at the first
    try. The search direction is an epsilon-subgradient: singular values below ``1e-3`` of their
    block's largest are left out of it (they add at most ``1e-3 sigma_max`` each to ``f``, and
    their unit-weight subgradient terms otherwise make the steps zig-zag across the kink of the
    nuclear norm at zero). When 20 halvings find no decrease, ``T`` has (nearly) collapsed some
    direction and ``-G`` would undo it: the direction is recomputed with a threshold ten times
    larger (up to ``1e-2``) and ``T``'s near-null space frozen (``G`` projected off it). When
    even that fails, the run stops (``stop_reason_ = "line_search"``). It also stops when ``f``
    drops by less than ``tol * f`` over ``n_iter_no_change`` iterations (``"tol"``).
``"diminishing"``
    The classical subgradient method: step length ``step_size * ||T||_F / sqrt(k)`` at iteration
    ``k``, no test on ``f``; the iterate with the smallest ``f`` is returned. Runs ``max_iter``
    iterations (or until early stopping).

Scale
-----
``f`` is positively homogeneous: ``f(aT) = a f(T)`` for ``a > 0``, and a subgradient ``G`` at ``T``
satisfies ``<G, T> = f(T)``, so ``-G`` always holds a radial part that only shrinks ``T``. The paper
drops the constraint ``||T||_2 = 1`` of Qiu & Sapiro; ``normalize=True`` restores it (every iterate is
divided by its spectral norm). Cosine matching ignores the scale of ``T`` either way, but without
``normalize`` ``objective_history_`` is not a measure of progress once the steps mostly shrink ``T``,
``tol`` then rarely fires, and the diminishing rule's "best" iterate is the smallest one. On 30 classes of
3-dimensional subspaces in 20 dimensions (a review's test), 80 plain steps took ``f`` from 698 to 5e-14
with ``||T||_2`` at 1e-16, while ``f(T / ||T||_2)`` fell to 183 after 10 steps and then *rose* to 358.

That example also shows the objective's own limit: where the classes cannot all be made orthogonal (90
class dimensions in 20), its minimisers collapse ``T``. With ``||T||_2 = 1`` kept (``normalize``), or
with ``||T||_F`` kept by removing the radial part of each step (tried, not kept), ``T`` had rank 1
after 40 steps (``f`` 698 -> 71): every face on one line. So the number of steps matters more than the
step rule, and :meth:`LowRankTransform.fit` offers early stopping on held-out people, which the
evaluation uses (``nirvis.evaluation.configs``). On RAP3DF the ``||T||_F`` variant scored within
noise of the plain steps (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from threadpoolctl import threadpool_limits

from nirvis.embedding.base import (LinearEmbeddingMixin, check_modality, fit_pca, modality_means,
                                   resolve_n_components, validate_X_y)

__all__ = ["LowRankTransform", "LowRankTransformCV", "lowrank_objective", "lowrank_subgradient", "retrieval_scores"]

logger = logging.getLogger(__name__)

#: singular values below RTOL * (largest singular value of the block) count as zero
_RTOL = {"float64": 1e-6, "float32": 1e-4}
_ARMIJO_C = 1e-4  # sufficient-decrease constant of the Armijo test
_SHRINK = 0.5  # backtracking factor
_GROW = 1.25  # step growth after a step accepted at the first try
_MAX_ETA = 1.0  # largest relative step ||T+ - T||_F / ||T||_F
_MIN_ETA = 1e-12  # smallest relative step tried
_MAX_BACKTRACKS = 20  # halvings tried before the search direction is changed
_EPS_DIR = 1e-3  # singular values below this (relative) are ignored by the search direction
_MAX_EPS_DIR = 1e-2  # largest such threshold tried when no step decreases f
_THREADED_FROM_D = 256  # below this PCA dimension the descent runs BLAS on one thread
_REFRESH_EVERY = 20  # recompute Z = X T^T from T every so many accepted steps (float32 drift)
_VECTOR_TRIALS = 2  # the first trials of a line search that also compute eigenvectors (see _minimize)


# --------------------------------------------------------------------------------------------------
# The objective on grouped blocks
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ColGroup:
    """``k`` blocks of ``s`` consecutive rows each (rows ``start .. start + k*s`` of the sorted X)."""

    sign: float
    start: int
    k: int
    s: int

    @property
    def stop(self) -> int:
        return self.start + self.k * self.s


@dataclass
class _Point:
    """Everything known at one iterate ``T``."""

    T: np.ndarray  # (d, d) float64
    Z: np.ndarray  # (n, d) working dtype, Z = X T^T (rows sorted as in the problem)
    TC: np.ndarray  # (m, d, d) float64, T C_b for the row blocks
    col_gram: list[np.ndarray]  # per group (k, s, s) float64
    col_eig: list[tuple[np.ndarray, np.ndarray]]  # per group (eigenvalues (k, s), eigenvectors (k, s, s))
    row_S: np.ndarray  # (m, d, d) float64, T C_b T^T
    row_eig: tuple[np.ndarray, np.ndarray]  # (m, d), (m, d, d)
    f: float


@dataclass
class _Direction:
    G: np.ndarray  # (d, d) float64
    D: np.ndarray  # (n, d) working dtype, D = X G^T
    col_G1: list[np.ndarray]  # Z_b D_b^T
    col_G2: list[np.ndarray]  # D_b D_b^T
    GC: np.ndarray  # G C_b
    K: np.ndarray | None  # T C_b G^T (None for diagonal C_b)
    H: np.ndarray | None  # G C_b G^T (None for diagonal C_b)


def _sigma(lam: np.ndarray, rtol: float) -> np.ndarray:
    """Singular values from Gram eigenvalues (last axis), zeroed below ``rtol * max``."""
    sig = np.sqrt(np.clip(lam, 0.0, None))
    if sig.size == 0:
        return sig
    smax = sig.max(axis=-1, keepdims=True)
    return np.where(sig > rtol * smax, sig, 0.0)


def _eigh(A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Batched ``eigh`` in the precision of ``A``; eigenvalues returned in float64.

    numpy's LAPACK throughout: calling scipy's (a second OpenBLAS with its own threads) in the
    same loop made the whole iteration slower here, however fast it is alone.
    """
    if A.shape[0] == 0:
        return np.zeros(A.shape[:2]), np.zeros(A.shape, dtype=A.dtype)
    lam, V = np.linalg.eigh(A)
    return lam.astype(np.float64), V


def _eigvalsh(A: np.ndarray) -> tuple[np.ndarray, None]:
    """Eigenvalues only (in float64), for trial steps that may be rejected: about a third of ``eigh``."""
    if A.shape[0] == 0:
        return np.zeros(A.shape[:2]), None
    return np.linalg.eigvalsh(A).astype(np.float64), None


def _inv(sig: np.ndarray) -> np.ndarray:
    out = np.zeros_like(sig)
    np.divide(1.0, sig, out=out, where=sig > 0)
    return out


def _diagonal_of(C: np.ndarray, n: int) -> np.ndarray | None:
    """The diagonals ``(m, d)`` of the Grams ``C`` (``(m, d, d)``) if they are diagonal, else ``None``.

    ``C_b = Y_b Y_b^T`` of PCA-reduced data is diagonal up to rounding. Off-diagonal entries count as
    zero when below ``n u max_i C_ii`` (``u`` the unit roundoff), the bound on the rounding error of
    the largest entries of ``Y_b Y_b^T`` itself. On PCA-reduced data they are about ``1e-15`` of the
    largest (6e-16 on the CASIA-scale benchmark), below the rounding of ``T C T^T`` in float64.
    """
    if C.shape[0] == 0:
        return None
    d = C.shape[1]
    c = np.diagonal(C, axis1=1, axis2=2).copy()
    off = np.abs(C)
    off[:, np.arange(d), np.arange(d)] = 0.0
    tol = n * (np.finfo(np.float64).eps / 2) * c.max(axis=1)
    if np.any(c < 0) or np.any(off.max(axis=(1, 2)) > tol):
        return None
    return c


class _Problem:
    """``f(T) = sum_b sign_b ||T Y_b||_*`` for the classes (+1) and the whole set (-1).

    Parameters
    ----------
    X : ndarray of shape (n, d)
        Training vectors as rows (already centred / PCA-reduced by the caller).
    codes : ndarray of shape (n,)
        Class index of each row, ``0 .. n_classes - 1``.
    dtype : {"float64", "float32"}
        Precision of the large ``n x d x d`` products of an iteration (``Z = X T^T``, ``D = X G^T``,
        ``Q^T Q``), of the class Gram updates and of the ``d x d x d`` products of the search
        direction. ``T``, the ``d x d`` Grams ``T C T^T`` and every eigen-decomposition stay in
        float64: in float32 the small eigenvalues of ``T C T^T`` are lost in rounding
        (``sqrt(1e-7) = 3e-4`` of the largest singular value), which stalled the descent on a test
        problem.
    """

    def __init__(self, X: np.ndarray, codes: np.ndarray, dtype: str = "float64") -> None:
        X = np.asarray(X, dtype=np.float64)
        n, d = X.shape
        self.n, self.d = n, d
        self.wdtype = np.dtype(dtype)
        self.rtol = _RTOL[dtype]
        counts = np.bincount(codes)
        row_class = counts > d
        size_key = np.where(row_class[codes], n + 1, counts[codes])
        order = np.lexsort((codes, size_key))  # classes contiguous, grouped by size
        Xs = X[order]
        cs = codes[order]
        self.X = np.ascontiguousarray(Xs, dtype=self.wdtype)

        groups: list[_ColGroup] = []
        start = 0
        col_sizes = np.sort(counts[(~row_class) & (counts > 0)])
        for s in np.unique(col_sizes):
            k = int(np.sum(col_sizes == s))
            groups.append(_ColGroup(1.0, start, k, int(s)))
            start += k * int(s)
        row_C: list[np.ndarray] = []
        row_sign: list[float] = []
        for c in np.flatnonzero(row_class):
            Xc = Xs[cs == c]
            row_C.append(Xc.T @ Xc)
            row_sign.append(1.0)
        if n <= d:
            groups.append(_ColGroup(-1.0, 0, 1, n))
        else:
            row_C.append(Xs.T @ Xs)
            row_sign.append(-1.0)
        self.groups = groups
        self.C = np.stack(row_C) if row_C else np.zeros((0, d, d))  # float64 always
        self.row_sign = np.asarray(row_sign, dtype=np.float64)
        # PCA-reduced data (what LowRankTransform passes) have diagonal C_b: T C_b and G C_b are then
        # column scalings and G C_b G^T a symmetric product (half a d x d x d product).
        self.c_diag = _diagonal_of(self.C, n)
        self._c_root = None if self.c_diag is None else np.sqrt(self.c_diag)[:, None, :]
        # Rows of the factor Q of the class part of the gradient (see gradient()): one block per
        # column group, the groups of sign -1 (the whole set when n <= d) last.
        self._q_start = np.cumsum([0] + [g.k * g.s for g in groups]).tolist()
        self._q_pos = sum(g.k * g.s for g in groups if g.sign > 0)
        self._Q: np.ndarray | None = None  # allocated at the first gradient

    # ---- pieces ---------------------------------------------------------------------------------

    def _blocks(self, A: np.ndarray, g: _ColGroup) -> np.ndarray:
        return A[g.start : g.stop].reshape(g.k, g.s, self.d)

    def _value(self, col_eig: list[tuple[np.ndarray, np.ndarray]], row_lam: np.ndarray) -> float:
        f = 0.0
        for g, (lam, _) in zip(self.groups, col_eig):
            f += g.sign * float(_sigma(lam, self.rtol).sum())
        if row_lam.size:
            f += float((self.row_sign * _sigma(row_lam, self.rtol).sum(axis=-1)).sum())
        return f

    def _finish(self, T, Z, TC, col_gram, row_S) -> _Point:
        col_eig = [_eigh(Gm) for Gm in col_gram]
        row_eig = _eigh(row_S)
        return _Point(T, Z, TC, col_gram, col_eig, row_S, row_eig, self._value(col_eig, row_eig[0]))

    def _col_grams(self, Z: np.ndarray) -> list[np.ndarray]:
        out = []
        for g in self.groups:
            Zb = self._blocks(Z, g).astype(np.float64)
            out.append(Zb @ Zb.transpose(0, 2, 1))
        return out

    def point(self, T: np.ndarray) -> _Point:
        """Evaluate everything at ``T`` from scratch."""
        T = np.array(T, dtype=np.float64)
        Z = self.X @ T.T.astype(self.wdtype)
        col_gram = self._col_grams(Z)
        if self.c_diag is not None:
            TC = T * self.c_diag[:, None, :]
            A = T * self._c_root
            row_S = A @ A.transpose(0, 2, 1)  # symmetric product (syrk): half the work
        else:
            TC = T @ self.C
            row_S = TC @ T.T
        return self._finish(T, Z, TC, col_gram, row_S)

    def gradient(self, p: _Point, rtol: float | None = None) -> np.ndarray:
        """A subgradient of ``f`` at ``p`` (the gradient where ``f`` is differentiable).

        ``rtol`` larger than the problem's treats more small singular values as zero: the
        subgradient of a nearby point, used to step off a kink (see :func:`_minimize`).
        """
        rtol = self.rtol if rtol is None else rtol
        d = self.d
        G = np.zeros((d, d))
        if self.groups:
            # sum_b sign_b U_b V_b^T Y_b^T = T sum_b sign_b Y_b (V_b S_b^-1 V_b^T) Y_b^T = T (Q+^T Q+ - Q-^T Q-)
            # with the rows Q_b = S_b^(-1/2) V_b^T Y_b^T: a symmetric n x d x d product (syrk, half
            # the work of the general one) and a d x d x d one.
            if self._Q is None:
                self._Q = np.empty((self._q_start[-1], d), dtype=self.wdtype)
            Q = self._Q
            for g, (lam, V), q0 in zip(self.groups, p.col_eig, self._q_start):
                w = np.sqrt(_inv(_sigma(lam, rtol)))
                F = (V * w[:, None, :]).transpose(0, 2, 1).astype(self.wdtype)
                np.matmul(F, self._blocks(self.X, g), out=Q[q0 : q0 + g.k * g.s].reshape(g.k, g.s, d))
            Qp = Q[: self._q_pos]
            M = Qp.T @ Qp
            if self._q_pos < Q.shape[0]:
                Qn = Q[self._q_pos :]
                M -= Qn.T @ Qn
            G += p.T.astype(self.wdtype, copy=False) @ M
        if self.C.shape[0]:
            # sign_b (U S^-1 U^T) T C_b = sign_b R R^T T C_b with R = U S^(-1/2): a symmetric product
            # and a general one, in the working precision: this is only the search direction (the
            # Armijo test runs on f itself), and float32 halves the work.
            lam, U = p.row_eig
            R = (U * np.sqrt(_inv(_sigma(lam, rtol)))[:, None, :]).astype(self.wdtype)
            RRt = R @ R.transpose(0, 2, 1)
            RRt *= self.row_sign.astype(self.wdtype)[:, None, None]
            G += (RRt @ p.TC.astype(self.wdtype, copy=False)).sum(axis=0, dtype=np.float64)
        return G

    def direction(self, p: _Point, G: np.ndarray) -> _Direction:
        """Precompute what makes ``f(T - tG)`` cheap for any ``t``."""
        Gw = G.astype(self.wdtype)
        D = self.X @ Gw.T
        G1, G2 = [], []
        for g in self.groups:
            # In float32 these two are rounded at ~1e-7 of |Z| |D| t, below the error of Z itself.
            Zb, Db = self._blocks(p.Z, g), self._blocks(D, g)
            G1.append((Zb @ Db.transpose(0, 2, 1)).astype(np.float64))
            G2.append((Db @ Db.transpose(0, 2, 1)).astype(np.float64))
        # float64: in float32 the rounding of these increments (~1e-7 t |T C G^T|) lifts the
        # collapsed eigenvalues of T C T^T to singular values ~3e-4 t^0.5 of the largest, which
        # stalled the descent on a test problem (as float32 T C T^T itself did).
        if self.c_diag is not None:
            # diagonal C: each trial forms (T - tG) C (T - tG)^T itself (one symmetric product)
            return _Direction(G, D, G1, G2, G * self.c_diag[:, None, :], None, None)
        GC = G @ self.C
        return _Direction(G, D, G1, G2, GC, p.TC @ G.T, GC @ G.T)

    def trial(self, p: _Point, r: _Direction, t: float, vectors: bool = True) -> tuple[float, list, list, np.ndarray, tuple]:
        """``f(T - tG)`` and the Grams / eigen-decompositions there.

        ``vectors=False`` computes eigenvalues only (``eigvalsh``, about a third of the cost of ``eigh``
        for the ``d x d`` Gram); :meth:`accept` then computes the eigenvectors if the step is taken.
        """
        col_gram = [G0 - t * (G1 + G1.transpose(0, 2, 1)) + (t * t) * G2
                    for G0, G1, G2 in zip(p.col_gram, r.col_G1, r.col_G2)]
        if r.K is None:  # diagonal C: (T - tG) C (T - tG)^T = B B^T, B = (T - tG) C^(1/2)
            B = (p.T - t * r.G) * self._c_root
            row_S = B @ B.transpose(0, 2, 1)
        else:
            row_S = p.row_S - t * (r.K + r.K.transpose(0, 2, 1)) + (t * t) * r.H
        eig = _eigh if vectors else _eigvalsh
        col_eig = [eig(Gm) for Gm in col_gram]
        row_eig = eig(row_S)
        return self._value(col_eig, row_eig[0]), col_gram, col_eig, row_S, row_eig

    def accept(self, p: _Point, r: _Direction, t: float, trial: tuple, scale: float = 1.0) -> _Point:
        """The point ``(T - tG) / scale`` from a trial result (no large product needed).

        ``p`` and ``r`` are used up: their ``n x d`` arrays ``Z`` and ``D`` are updated in place.
        """
        f, col_gram, col_eig, row_S, row_eig = trial
        if row_eig[1] is None:  # the trial computed eigenvalues only
            col_eig = [_eigh(Gm) for Gm in col_gram]
            row_eig = _eigh(row_S)
        a = 1.0 / scale
        a2 = a * a
        tw, aw = self.wdtype.type(t), self.wdtype.type(a)
        T = (p.T - t * r.G) * a
        D = r.D
        D *= tw
        Z = p.Z
        Z -= D
        if scale != 1.0:
            Z *= aw
        TC = (p.TC - t * r.GC) * a
        if scale != 1.0:
            col_gram = [Gm * a2 for Gm in col_gram]
            col_eig = [(lam * a2, V) for lam, V in col_eig]
            row_S = row_S * a2
            row_eig = (row_eig[0] * a2, row_eig[1])
            f = f * a
        return _Point(T, Z, TC, col_gram, col_eig, row_S, row_eig, f)

    def refresh(self, p: _Point) -> _Point:
        """``p`` with ``Z = X T^T`` and the class Grams recomputed from ``T`` (the drift of the
        updates ``Z - tD`` in float32 dropped); ``T C`` and ``T C T^T``, updated in float64, are kept.
        """
        Z = np.matmul(self.X, p.T.T.astype(self.wdtype), out=p.Z)
        col_gram = self._col_grams(Z)
        col_eig = [_eigh(Gm) for Gm in col_gram]
        return _Point(p.T, Z, p.TC, col_gram, col_eig, p.row_S, p.row_eig, self._value(col_eig, p.row_eig[0]))


# --------------------------------------------------------------------------------------------------
# Public objective helpers
# --------------------------------------------------------------------------------------------------


def _check_objective_inputs(T, X, y) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}")
    T = np.asarray(T, dtype=np.float64)
    d = X.shape[1]
    if T.shape != (d, d):
        raise ValueError(f"T must have shape ({d}, {d}) to match X with {d} features, got {T.shape}")
    y = np.asarray(y)
    if y.shape != (X.shape[0],):
        raise ValueError(f"y must have one label per row of X, shape ({X.shape[0]},), got {y.shape}")
    _, codes = np.unique(y, return_inverse=True)
    return T, X, codes.astype(np.intp)


def _svd_objective(T: np.ndarray, X: np.ndarray, codes: np.ndarray, rtol: float, grad: bool):
    """Straightforward reference: one thin SVD per class and one for the whole set."""
    d = X.shape[1]
    f = 0.0
    G = np.zeros((d, d)) if grad else None
    blocks = [(1.0, X[codes == c]) for c in np.unique(codes)] + [(-1.0, X)]
    for sign, Xb in blocks:
        M = T @ Xb.T
        U, s, Vt = np.linalg.svd(M, full_matrices=False)
        keep = s > rtol * s.max() if s.size and s.max() > 0 else np.zeros(s.shape, bool)
        f += sign * float(s[keep].sum())
        if grad:
            G += sign * (U[:, keep] @ Vt[keep]) @ Xb
    return f, G


def lowrank_objective(T: np.ndarray, X: np.ndarray, y: np.ndarray, *, method: str = "gram") -> float:
    """The low-rank objective ``f(T) = sum_c ||T Y_c||_* - ||T Y||_*`` (paper eq. 2).

    Parameters
    ----------
    T : ndarray of shape (d, d)
        The transform; features are mapped as ``X @ T.T``.
    X : ndarray of shape (n_samples, d)
        Feature vectors as rows (``Y = X.T``).
    y : ndarray of shape (n_samples,)
        Class (person) labels.
    method : {"gram", "svd"}
        ``"gram"``: small Gram eigen-decompositions (what :class:`LowRankTransform` uses);
        ``"svd"``: one thin SVD per class, the straightforward reference.

    Returns
    -------
    float
    """
    return lowrank_subgradient(T, X, y, method=method, _grad=False)[0]


def lowrank_subgradient(
    T: np.ndarray, X: np.ndarray, y: np.ndarray, *, method: str = "gram", _grad: bool = True
) -> tuple[float, np.ndarray | None]:
    """``f(T)`` and a subgradient ``sum_c U_c V_c^T Y_c^T - U V^T Y^T`` (paper Sec. 4.1).

    Parameters are those of :func:`lowrank_objective`.

    Returns
    -------
    f : float
    G : ndarray of shape (d, d)
        Equal to the gradient where ``f`` is differentiable (every block of full rank, or of
        a rank that does not change near ``T``).
    """
    T, X, codes = _check_objective_inputs(T, X, y)
    if method == "svd":
        return _svd_objective(T, X, codes, _RTOL["float64"], _grad)
    if method != "gram":
        raise ValueError(f"method must be 'gram' or 'svd', got {method!r}")
    prob = _Problem(X, codes, "float64")
    p = prob.point(T)
    return p.f, (prob.gradient(p) if _grad else None)


# --------------------------------------------------------------------------------------------------
# Validation criterion for early stopping
# --------------------------------------------------------------------------------------------------


def retrieval_scores(
    probes: np.ndarray, probe_labels: np.ndarray, gallery: np.ndarray, gallery_labels: np.ndarray,
    *, exclude_self: bool = False,
) -> tuple[float, float]:
    """Rank-1 accuracy and mean cosine margin of probes against a gallery.

    Parameters
    ----------
    probes, gallery : ndarray of shape (n_probes, d), (n_gallery, d)
    probe_labels, gallery_labels : ndarray
    exclude_self : bool
        Leave-one-out: probes *are* the gallery, and each probe's own row is skipped.

    Returns
    -------
    rank1 : float
        Fraction of probes whose most cosine-similar gallery vector has the same label.
    margin : float
        Mean over probes of (best same-label cosine - best other-label cosine); a smooth
        tie-breaker for ``rank1``.

    Probes whose label has no gallery vector (other than themselves) are not counted.
    """
    def _unit(A: np.ndarray) -> np.ndarray:
        nrm = np.linalg.norm(A, axis=1, keepdims=True)
        return A / np.where(nrm > 0, nrm, 1.0)

    S = _unit(np.asarray(probes, dtype=np.float64)) @ _unit(np.asarray(gallery, dtype=np.float64)).T
    probe_labels, gallery_labels = np.asarray(probe_labels), np.asarray(gallery_labels)
    same = probe_labels[:, None] == gallery_labels[None, :]
    other = ~same
    if exclude_self:
        if S.shape[0] != S.shape[1]:
            raise ValueError(f"exclude_self needs the probes to be the gallery, got shapes {S.shape}")
        np.fill_diagonal(same, False)
        np.fill_diagonal(other, False)
    valid = same.any(axis=1) & other.any(axis=1)
    if not valid.any():
        return float("nan"), float("nan")
    S, same, other = S[valid], same[valid], other[valid]
    best_same = np.where(same, S, -np.inf).max(axis=1)
    best_other = np.where(other, S, -np.inf).max(axis=1)
    rank1 = float(np.mean(best_same > best_other))
    return rank1, float(np.mean(best_same - best_other))


# --------------------------------------------------------------------------------------------------
# The minimiser
# --------------------------------------------------------------------------------------------------


@dataclass
class _Result:
    T: np.ndarray
    history: list[float]
    n_iter: int
    best_iteration: int
    stop_reason: str
    n_trials: int = 0  # evaluations of f in line searches (each: small eigh's and one d x d one)
    val_rank1: list[float] = field(default_factory=list)
    val_margin: list[float] = field(default_factory=list)


def _spectral_norm(A: np.ndarray) -> float:
    """``||A||_2``, from the largest eigenvalue of ``A^T A``."""
    return float(math.sqrt(max(np.linalg.eigvalsh(A.T @ A)[-1], 0.0)))


def _project_off_null(G: np.ndarray, T: np.ndarray, eps: float) -> np.ndarray:
    """``G`` with its action on the near-null space of ``T`` removed.

    Directions ``v`` with ``||T v|| <= eps * ||T||_2`` have been collapsed by ``T``; the step
    ``-G P`` (``P`` the projector off them) keeps ``T v`` unchanged, so the collapsed directions
    stay collapsed instead of bouncing across the kink of the nuclear norms at ``T v = 0``.
    """
    lam, V = np.linalg.eigh(T.T @ T)
    sig = np.sqrt(np.clip(lam, 0.0, None))
    V0 = V[:, sig <= eps * sig[-1]]
    if V0.shape[1] == 0:
        return G
    return G - (G @ V0) @ V0.T


def _minimize(
    prob: _Problem,
    T0: np.ndarray,
    *,
    step: str,
    step_size: float,
    max_iter: int,
    tol: float,
    normalize: bool,
    validate: Callable[[np.ndarray], tuple[float, float]] | None,
    n_iter_no_change: int,
) -> _Result:
    T0 = np.array(T0, dtype=np.float64)
    if normalize:
        T0 /= _spectral_norm(T0)
    p = prob.point(T0)
    history = [p.f]
    eta = float(step_size)
    best_f, best_T, best_it = p.f, p.T.copy(), 0
    res = _Result(T=p.T, history=history, n_iter=0, best_iteration=0, stop_reason="max_iter")
    if validate is not None:
        r1, mg = validate(p.T)
        res.val_rank1.append(r1)
        res.val_margin.append(mg)
        best_val, best_val_T, best_val_it, since = (r1, mg), p.T.copy(), 0, 0
    best_hist = [best_f]  # smallest f so far, after each iteration (equals f for backtracking)
    accepted = 0
    eps_base = max(prob.rtol, _EPS_DIR)
    eps_dir = eps_base  # singular values below eps_dir * max are ignored by the search direction
    for it in range(1, max_iter + 1):
        res.n_iter = it
        f_old = p.f
        new = None
        while True:
            G = prob.gradient(p, eps_dir)
            if eps_dir > eps_base:
                G = _project_off_null(G, p.T, eps_dir)
            gnorm = float(np.linalg.norm(G))
            if not np.isfinite(gnorm):
                raise FloatingPointError(f"LowRankTransform: non-finite subgradient at iteration {it}")
            if gnorm > 0.0:
                r = prob.direction(p, G)
                tnorm = float(np.linalg.norm(p.T))
                if step == "diminishing":
                    t = (step_size / math.sqrt(it)) * tnorm / gnorm
                    trial = prob.trial(p, r, t)
                    res.n_trials += 1
                    scale = _spectral_norm(p.T - t * G) if normalize else 1.0
                    new = prob.accept(p, r, t, trial, scale)
                    break
                eta_min = max(eta * _SHRINK**_MAX_BACKTRACKS, _MIN_ETA)
                n_try = 0
                while eta >= eta_min:
                    t = eta * tnorm / gnorm
                    # The first trials are usually accepted: they also compute the eigenvectors that
                    # the next gradient needs. Later ones (a long search) compute eigenvalues only.
                    trial = prob.trial(p, r, t, vectors=n_try < _VECTOR_TRIALS)
                    n_try += 1
                    if normalize:
                        Tn = p.T - t * G
                        scale = _spectral_norm(Tn)
                        dist2 = float(np.linalg.norm(Tn / scale - p.T) ** 2)
                    else:
                        scale, dist2 = 1.0, (t * gnorm) ** 2
                    f_new = trial[0] / scale
                    if np.isfinite(f_new) and f_new <= f_old - _ARMIJO_C * dist2 / t:
                        new = prob.accept(p, r, t, trial, scale)
                        break
                    eta *= _SHRINK
                res.n_trials += n_try
                if new is not None:
                    break
            # No decrease along -G: f has a kink here, T has (nearly) collapsed some direction of the
            # data and -G would undo it. Retry with singular values below eps_dir * max ignored and
            # with T's near-null space frozen, eps_dir growing tenfold each time.
            if eps_dir >= _MAX_EPS_DIR:
                break
            eps_dir = min(eps_dir * 10.0, _MAX_EPS_DIR)
            eta = float(step_size)
            logger.debug("low-rank iteration %d: no decrease, direction threshold -> %.0e", it, eps_dir)
        if new is None:
            res.stop_reason = "line_search" if step == "backtracking" else "zero_gradient"
            break
        if step == "backtracking":
            if n_try == 1:  # the step could have been longer: try a longer one next time
                eta = min(eta * _GROW, _MAX_ETA)
            eps_dir = max(eps_dir / 10.0, eps_base)
        p = new
        accepted += 1
        f_new = p.f
        history.append(f_new)
        logger.debug("low-rank iteration %d: f = %.6g (step %.3g)", it, p.f, eta)
        if p.f < best_f:
            best_f, best_T, best_it = p.f, p.T.copy(), len(history) - 1
        if accepted % _REFRESH_EVERY == 0:
            p = prob.refresh(p)  # drop accumulated rounding of Z = X T^T
        if validate is not None:
            r1, mg = validate(p.T)
            res.val_rank1.append(r1)
            res.val_margin.append(mg)
            if (r1, mg) > best_val:
                best_val, best_val_T, best_val_it, since = (r1, mg), p.T.copy(), len(history) - 1, 0
            else:
                since += 1
                if since >= n_iter_no_change:
                    res.stop_reason = "early_stopping"
                    break
        best_hist.append(best_f)
        w = n_iter_no_change
        if (step == "backtracking" and len(best_hist) > w
                and best_hist[-1 - w] - best_hist[-1] <= tol * abs(best_hist[-1 - w])):
            res.stop_reason = "tol"
            break
    if validate is not None:
        res.T, res.best_iteration = best_val_T, best_val_it
    elif step == "diminishing":
        res.T, res.best_iteration = best_T, best_it
    else:
        res.T, res.best_iteration = p.T, len(history) - 1
    return res


# --------------------------------------------------------------------------------------------------
# The estimator
# --------------------------------------------------------------------------------------------------


class LowRankTransform(LinearEmbeddingMixin, BaseEstimator):
    """Low-rank embedding: PCA, then the learned transform ``T`` of paper Sec. 4, merged in one map.

    ``fit(X, y)`` reduces ``X`` by PCA to ``n_components`` dimensions and learns ``T`` minimising
    ``sum_c ||T Y_c||_* - ||T Y||_*`` from ``T = I`` (see the module docstring for the maths, the
    cost of one iteration and the step rules). ``transform(X)`` returns ``(X - mean_) @ components_.T``
    with ``components_ = T @ pca_components_``; match the output with the cosine similarity.

    Parameters
    ----------
    n_components : int or None, default=1024
        PCA dimension ``d`` (the paper uses 1024), capped at ``min(n_samples, n_features)``;
        ``None`` means the cap.
    step : {"backtracking", "diminishing"}, default="backtracking"
        Step rule. ``"backtracking"``: Armijo backtracking on ``f`` (every accepted step decreases
        ``f``). ``"diminishing"``: step length ``step_size * ||T||_F / sqrt(k)``, best iterate kept.
    step_size : float, default=0.1
        First relative step ``||T+ - T||_F / ||T||_F``, in ``(0, 1]``.
    max_iter : int, default=100
        Maximum number of iterations.
    tol : float, default=1e-5
        Backtracking stops when ``f`` decreases by less than ``tol * f`` over ``n_iter_no_change``
        iterations (not used by ``"diminishing"``).
    normalize : bool, default=False
        Keep ``||T||_2 = 1`` (Qiu & Sapiro) by dividing each iterate by its spectral norm. The paper
        drops this constraint.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the people (all their vectors) and return the ``T`` with
        the best held-out rank-1 (ties broken by the cosine margin), evaluated after every
        iteration; stop after ``n_iter_no_change`` iterations without improvement. ``T`` and the
        PCA are then learned on the other people only. With ``modality`` given to :meth:`fit`,
        the criterion is NIR -> VIS identification among the held-out people (NIR probes, their
        VIS vectors as the gallery); without it, leave-one-out identification among all held-out
        vectors.
    validation_fraction : float, default=0.2
        Share of the people held out when ``early_stopping`` (at least 2 people).
    n_iter_no_change : int, default=10
        Patience of early stopping, and window of ``tol``, in iterations.
    dtype : {"float64", "float32"}, default="float64"
        Precision of the large ``(n x d) @ (d x d)`` products of an iteration (about half the
        time at ``n = 8750, d = 1024``) and of the search direction. ``T``, the ``d x d`` Grams
        and every eigen-decomposition stay in float64.
    center : bool, default=True
        Subtract the training mean before the PCA and ``T`` (``mean_``). With ``False`` the map is
        linear (``mean_`` is zero): the direction that all faces share stays a feature, and ``T`` can
        learn what to do with it. On dlib features of RAP3DF, centring cost rank-1 (docs/BENCHMARKS.md).
    random_state : int, RandomState or None, default=None
        Seeds the choice of held-out people (the descent itself is deterministic).
    shift : bool, default=False
        Remove the modality means first (beyond the paper): the mean NIR vector of the learning people from
        every NIR vector, the mean VIS vector from every VIS vector (the "two means" yardstick of
        docs/BENCHMARKS.md), then the PCA and ``T``. :meth:`fit` and :meth:`transform` then need each row's
        modality.

    Attributes
    ----------
    components_ : ndarray of shape (n_components_, n_features_in_)
        Merged map ``T @ pca_components_``.
    modality_means_ : ndarray of shape (2, n_features_in_) or None
        With ``shift``: the mean NIR and the mean VIS vector of the learning people, subtracted first.
    mean_ : ndarray of shape (n_features_in_,)
        Mean of the training vectors, subtracted before the map.
    pca_components_ : ndarray of shape (n_components_, n_features_in_)
    transform_matrix_ : ndarray of shape (n_components_, n_components_)
        The learned ``T`` (in the PCA space).
    n_components_ : int
    objective_history_ : ndarray of shape (n_accepted + 1,)
        ``f`` at ``T = I`` and after every accepted step (training people only).
    best_iteration_ : int
        Index in ``objective_history_`` of the returned ``T``.
    n_iter_ : int
        Iterations run (a last one whose line search found no decrease included).
    stop_reason_ : str
        ``"tol"``, ``"line_search"``, ``"max_iter"``, ``"early_stopping"`` or ``"zero_gradient"``.
    validation_scores_ : ndarray or None
        Held-out rank-1 at every entry of ``objective_history_`` (``None`` without early stopping).
    validation_margins_ : ndarray or None
        Held-out mean cosine margin, likewise.
    n_features_in_ : int

    References
    ----------
    Lezama, Qiu & Sapiro, "Not afraid of the dark: NIR-VIS face recognition via cross-spectral
    hallucination and low-rank embedding", CVPR 2017, Sec. 4. Qiu & Sapiro, "Learning
    transformations for clustering and classification", JMLR 16 (2015).
    """

    def __init__(
        self,
        n_components: int | None = 1024,
        *,
        step: str = "backtracking",
        step_size: float = 0.1,
        max_iter: int = 100,
        tol: float = 1e-5,
        normalize: bool = False,
        early_stopping: bool = False,
        validation_fraction: float = 0.2,
        n_iter_no_change: int = 10,
        dtype: str = "float64",
        center: bool = True,
        random_state=None,
        shift: bool = False,
    ) -> None:
        self.n_components = n_components
        self.step = step
        self.step_size = step_size
        self.max_iter = max_iter
        self.tol = tol
        self.normalize = normalize
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.dtype = dtype
        self.center = center
        self.random_state = random_state
        self.shift = shift

    def _check_params(self) -> None:
        name = type(self).__name__

        def bad(param: str, expected: str) -> ValueError:
            return ValueError(f"{name}: {param} must be {expected}, got {getattr(self, param)!r}")

        if self.step not in ("backtracking", "diminishing"):
            raise bad("step", "'backtracking' or 'diminishing'")
        if isinstance(self.step_size, bool) or not isinstance(self.step_size, Real) or not 0 < self.step_size <= 1:
            raise bad("step_size", "a float in (0, 1]")
        for param in ("max_iter", "n_iter_no_change"):
            v = getattr(self, param)
            if isinstance(v, bool) or not isinstance(v, Integral) or v < 1:
                raise bad(param, "an int >= 1")
        if isinstance(self.tol, bool) or not isinstance(self.tol, Real) or not self.tol >= 0:
            raise bad("tol", "a float >= 0")
        for param in ("normalize", "early_stopping", "center", "shift"):
            if not isinstance(getattr(self, param), (bool, np.bool_)):
                raise bad(param, "True or False")
        vf = self.validation_fraction
        if isinstance(vf, bool) or not isinstance(vf, Real) or not 0 < vf < 1:
            raise bad("validation_fraction", "a float in (0, 1)")
        if self.dtype not in _RTOL:
            raise bad("dtype", "'float64' or 'float32'")

    def fit(self, X, y, modality=None) -> LowRankTransform:
        """Learn the PCA and ``T`` from labelled vectors.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Feature vectors, one per row (NIR and VIS alike).
        y : array-like of shape (n_samples,)
            Person labels; a person's NIR and VIS vectors share one label.
        modality : array-like of shape (n_samples,), optional
            ``'nir'`` / ``'vis'`` (or 1 / 0) per row. Used by the early-stopping criterion (NIR -> VIS
            rank-1 among held-out people) and by ``shift`` (required there); the objective itself uses
            ``y`` alone.

        Returns
        -------
        self
        """
        self._check_params()
        X, classes, codes = validate_X_y(self, X, y)
        n, n_features = X.shape
        is_nir = check_modality(modality, n) if modality is not None else None
        if self.shift and is_nir is None:
            raise ValueError("LowRankTransform: shift=True removes the modality means; fit needs modality "
                             "('nir' / 'vis' per row)")

        validate = None
        train = np.ones(n, dtype=bool)
        if self.early_stopping:
            train = self._split_people(codes, classes.size, is_nir)
        shift_means = None
        if self.shift:
            shift_means = modality_means(X[train], is_nir[train], type(self).__name__)
            X = X - np.where(is_nir[:, None], shift_means[0], shift_means[1])
        Xtr, ctr = X[train], np.unique(codes[train], return_inverse=True)[1]
        k = resolve_n_components(type(self).__name__, self.n_components, Xtr.shape[0], n_features,
                                 center=bool(self.center))
        mean, P = fit_pca(Xtr, k, center=bool(self.center))
        Ytr = (Xtr - mean) @ P.T

        if self.early_stopping:
            validate = self._make_validator((X[~train] - mean) @ P.T, codes[~train],
                                            None if is_nir is None else is_nir[~train])

        prob = _Problem(Ytr, ctr.astype(np.intp), self.dtype)
        # Threads do not pay on small matrices, and on a busy machine they cost a lot (a 40-D
        # problem ran 30x slower with 2 BLAS threads than with 1 while other processes ran).
        with threadpool_limits(limits=1 if k < _THREADED_FROM_D else None, user_api="blas"):
            res = _minimize(
                prob, np.eye(k), step=self.step, step_size=float(self.step_size), max_iter=int(self.max_iter),
                tol=float(self.tol), normalize=bool(self.normalize), validate=validate,
                n_iter_no_change=int(self.n_iter_no_change),
            )
        if res.stop_reason == "max_iter" and self.step == "backtracking":
            warnings.warn(
                f"LowRankTransform: max_iter={self.max_iter} reached before the relative decrease of f "
                f"fell below tol={self.tol}", ConvergenceWarning, stacklevel=2,
            )
        logger.info("low-rank transform: f %.6g -> %.6g in %d iterations (%s)",
                    res.history[0], res.history[res.best_iteration] if res.best_iteration < len(res.history)
                    else res.history[-1], res.n_iter, res.stop_reason)

        self.mean_ = mean
        self.modality_means_ = shift_means
        self.pca_components_ = P
        self.transform_matrix_ = res.T
        self.components_ = res.T @ P
        self.n_components_ = k
        self.n_features_in_ = n_features
        self.objective_history_ = np.asarray(res.history, dtype=np.float64)
        self.best_iteration_ = int(res.best_iteration)
        self.n_iter_ = int(res.n_iter)
        self.stop_reason_ = res.stop_reason
        self.validation_scores_ = np.asarray(res.val_rank1) if validate is not None else None
        self.validation_margins_ = np.asarray(res.val_margin) if validate is not None else None
        self.n_validation_probes_ = validate.n_probes if validate is not None else 0
        return self

    def _split_people(self, codes: np.ndarray, n_classes: int, is_nir: np.ndarray | None = None) -> np.ndarray:
        """Rows of the people kept for learning (the others are held out for validation).

        Only people who can be scored are held out: with modalities, those with a NIR and a VIS vector;
        without, those with two vectors. (Holding out another would waste them: neither learned from nor
        scored.)
        """
        n_val = int(math.ceil(self.validation_fraction * n_classes))
        if n_val < 2 or n_classes - n_val < 2:
            raise ValueError(
                f"LowRankTransform: early_stopping with validation_fraction={self.validation_fraction} "
                f"holds out {n_val} of {n_classes} people; it needs at least 2 held out and 2 left to learn from"
            )
        if is_nir is None:
            usable = np.bincount(codes, minlength=n_classes) >= 2
        else:
            usable = (np.bincount(codes[is_nir], minlength=n_classes) > 0) & \
                     (np.bincount(codes[~is_nir], minlength=n_classes) > 0)
        rng = check_random_state(self.random_state)
        order = rng.permutation(n_classes)  # the same draw as before when everyone is usable
        held = order[usable[order]][:n_val]
        return ~np.isin(codes, held)

    @staticmethod
    def _make_validator(Yv: np.ndarray, cv: np.ndarray, is_nir: np.ndarray | None):
        if is_nir is None:
            probe_rows = gallery_rows = np.ones(cv.shape[0], dtype=bool)
            exclude_self = True
        else:
            probe_rows, gallery_rows, exclude_self = is_nir, ~is_nir, False
        Yp, cp, Yg, cg = Yv[probe_rows], cv[probe_rows], Yv[gallery_rows], cv[gallery_rows]
        r1, _ = retrieval_scores(Yp, cp, Yg, cg, exclude_self=exclude_self)
        if not np.isfinite(r1):
            what = ("a NIR vector of a person who also has a VIS vector" if is_nir is not None
                    else "two vectors of one person")
            raise ValueError(
                f"LowRankTransform: early stopping needs held-out people with {what}, and at least 2 "
                "held-out people; none qualify (give more vectors per person or a larger validation_fraction)"
            )

        def validate(T: np.ndarray) -> tuple[float, float]:
            return retrieval_scores(Yp @ T.T, cp, Yg @ T.T, cg, exclude_self=exclude_self)

        validate.n_probes = int(Yp.shape[0])
        return validate

    def _more_tags(self) -> dict:
        return {"requires_y": True, "preserves_dtype": [np.float64, np.float32]}


class LowRankTransformCV(LinearEmbeddingMixin, BaseEstimator):
    """The low-rank transform with its hyper-parameters chosen on held-out *training* people.

    Every combination of ``shift`` (remove the modality means first, or not) and ``n_components`` (the PCA
    dimension) is fitted as a :class:`LowRankTransform` with early stopping, which also chooses the number of
    steps. All candidates hold out the same people (one ``random_state``) and are scored by their held-out
    NIR -> VIS rank-1. Nothing is chosen by looking at the people an evaluation tests.

    With ``selection="one_se"`` (the default) the one-standard-error rule picks among them (Hastie,
    Tibshirani & Friedman, *The Elements of Statistical Learning*, Sec. 7.10): of the candidates whose
    held-out rank-1 is within one binomial standard error of the best, ``sqrt(r (1 - r) / n_probes)``, the
    one that took the fewest descent steps, i.e. moved least from its start. A held-out set of about 17
    people scores rank-1 with a standard error of 3-4 points, so differences below that are noise; the rule
    then prefers the transform that learned least. ``selection="best"`` keeps the best held-out rank-1.
    Ties are broken by the rank-1, then the cosine margin, then the order of the grid. The chosen candidate
    is kept, fitted as it was.

    Parameters
    ----------
    shift : sequence of bool, default=(False, True)
    n_components : sequence of int or None, default=(None, 64)
        PCA dimensions to try (``None``: every dimension).
    selection : {"one_se", "best"}, default="one_se"
        How the held-out scores choose the candidate (see above).
    center, step_size, max_iter, n_iter_no_change, validation_fraction, random_state
        As :class:`LowRankTransform`, for every candidate.

    Attributes
    ----------
    best_params_ : dict
        ``{"shift": ..., "n_components": ...}`` of the chosen candidate.
    best_estimator_ : LowRankTransform
    cv_results_ : list of dict
        Per candidate: its parameters, held-out rank-1 and margin at its best step, that step, and its
        binomial standard error ``val_se``.
    components_, mean_, modality_means_, n_components_, objective_history_, best_iteration_, n_iter_,
    stop_reason_, validation_scores_, n_features_in_
        Those of ``best_estimator_``.
    """

    def __init__(self, shift=(False, True), n_components=(None, 64), *, selection: str = "one_se",
                 center: bool = False, step_size: float = 0.1, max_iter: int = 200, n_iter_no_change: int = 20,
                 validation_fraction: float = 0.2, random_state=0) -> None:
        self.shift = shift
        self.n_components = n_components
        self.selection = selection
        self.center = center
        self.step_size = step_size
        self.max_iter = max_iter
        self.n_iter_no_change = n_iter_no_change
        self.validation_fraction = validation_fraction
        self.random_state = random_state

    def _candidates(self) -> list[dict]:
        name = type(self).__name__
        def as_list(v) -> list:
            return list(v) if isinstance(v, (list, tuple)) else [v]

        shifts, dims = as_list(self.shift), as_list(self.n_components)
        if not shifts or not dims:
            raise ValueError(f"{name}: shift and n_components must each name at least one value, got "
                             f"{self.shift!r} and {self.n_components!r}")
        for s in shifts:
            if not isinstance(s, (bool, np.bool_)):
                raise ValueError(f"{name}: shift must hold True / False, got {s!r}")
        return [{"shift": bool(s), "n_components": k} for s in shifts for k in dims]

    def fit(self, X, y, modality=None) -> LowRankTransformCV:
        """Fit every candidate on ``X, y`` (``modality`` required when a candidate shifts) and keep the best."""
        if self.selection not in ("one_se", "best"):
            raise ValueError(f"{type(self).__name__}: selection must be 'one_se' or 'best', got {self.selection!r}")
        results, fitted = [], []
        for i, cand in enumerate(self._candidates()):
            if cand["shift"] and modality is None:
                raise ValueError(f"{type(self).__name__}: the candidate shift=True needs modality in fit "
                                 "('nir' / 'vis' per row)")
            est = LowRankTransform(cand["n_components"], shift=cand["shift"], center=self.center,
                                   step_size=self.step_size, max_iter=self.max_iter,
                                   n_iter_no_change=self.n_iter_no_change, early_stopping=True,
                                   validation_fraction=self.validation_fraction, random_state=self.random_state)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                est.fit(X, y, modality=modality)
            r1 = float(est.validation_scores_[est.best_iteration_])
            margin = float(est.validation_margins_[est.best_iteration_])
            se = math.sqrt(r1 * (1.0 - r1) / max(est.n_validation_probes_, 1))
            results.append({**cand, "n_components_": int(est.n_components_), "val_rank1": r1, "val_margin": margin,
                            "best_iteration": int(est.best_iteration_), "val_se": se})
            fitted.append(est)
        best = fitted[self._choose(results)]
        self.cv_results_ = results
        self.best_estimator_ = best
        self.best_params_ = {"shift": best.shift, "n_components": best.n_components}
        for attr in ("components_", "mean_", "modality_means_", "n_components_", "objective_history_",
                     "best_iteration_", "n_iter_", "stop_reason_", "validation_scores_", "validation_margins_",
                     "n_features_in_"):
            setattr(self, attr, getattr(best, attr))
        logger.info("low-rank selection: %s", ", ".join(
            f"shift={r['shift']} k={r['n_components_']}: {100 * r['val_rank1']:.1f}%" for r in results))
        return self

    def _choose(self, results: list[dict]) -> int:
        """Index of the chosen candidate in ``results`` (see the class docstring)."""
        order = sorted(range(len(results)), key=lambda i: (-results[i]["val_rank1"], -results[i]["val_margin"], i))
        top = results[order[0]]
        if self.selection == "best":
            return order[0]
        floor = top["val_rank1"] - top["val_se"] - 1e-12
        within = [i for i in order if results[i]["val_rank1"] >= floor]
        return min(within, key=lambda i: (results[i]["best_iteration"], order.index(i)))

    def _more_tags(self) -> dict:
        return {"requires_y": True, "preserves_dtype": [np.float64, np.float32]}
