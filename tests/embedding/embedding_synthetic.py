"""Synthetic data for the embedding tests: a union of subspaces seen in two 'spectra'.

(A uniquely named module, not ``conftest``, so that importing it cannot pick up another conftest.)
"""

from __future__ import annotations

import numpy as np


def union_of_subspaces(seed: int = 0, *, n_classes: int = 8, dim: int = 40, rank: int = 3, per_spectrum: int = 12,
                       overlap: float = 1.0, shift: float = 1.0, noise: float = 0.0):
    """Classes on random ``rank``-dimensional subspaces of R^dim that share a common part (``overlap``).

    Each class has ``per_spectrum`` 'VIS' vectors on its subspace and as many 'NIR' vectors on it
    plus one shift shared by all classes (the spectrum gap), scaled to the vectors' mean norm.

    Returns
    -------
    X (n, dim), y (n,) class ids, nir (n,) bool, bases list of (dim, rank) orthonormal bases
    """
    rng = np.random.default_rng(seed)
    common = rng.standard_normal((dim, rank))
    s = rng.standard_normal(dim)
    s *= shift / np.linalg.norm(s)
    X, y, nir, bases = [], [], [], []
    for c in range(n_classes):
        B = np.linalg.qr(overlap * common + rng.standard_normal((dim, rank)))[0]
        Xc = rng.standard_normal((2 * per_spectrum, rank)) @ B.T
        Xc[per_spectrum:] += s * np.linalg.norm(Xc[per_spectrum:], axis=1).mean()
        X.append(Xc + noise * rng.standard_normal(Xc.shape))
        y += [c] * (2 * per_spectrum)
        nir += [False] * per_spectrum + [True] * per_spectrum
        bases.append(B)
    return np.vstack(X), np.array(y), np.array(nir), bases
