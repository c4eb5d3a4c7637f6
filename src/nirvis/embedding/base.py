"""What every learned embedding shares: a linear map ``x -> components_ @ (x - mean_)``.

All embeddings of :mod:`nirvis.embedding` (the low-rank transform of paper Sec. 4 and the
identity / PCA / ITML / LMNN baselines) end as one merged linear map, stored as

- ``mean_``: shape ``(n_features,)``, subtracted first (zeros for the identity baseline);
- ``components_``: shape ``(n_components, n_features)``, so that ``transform(X)`` is
  ``(X - mean_) @ components_.T`` (the metric-learn convention).

Features are then compared with the cosine similarity (paper Sec. 4.2), which ignores the scale
of the map.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_array, check_is_fitted, check_X_y

__all__ = ["LinearEmbeddingMixin", "apply_linear_map", "check_modality", "check_n_features", "modality_means",
           "resolve_n_components", "fit_pca", "shift_by_modality", "validate_X_y"]


def check_n_features(name: str, n_features: int, expected: int) -> None:
    """Raise ``ValueError`` in scikit-learn's words when a feature count does not match."""
    if n_features != expected:
        raise ValueError(
            f"X has {n_features} features, but {name} is expecting {expected} features as input"
        )


def resolve_n_components(name: str, n_components: int | None, n_samples: int, n_features: int,
                         center: bool = False) -> int:
    """Validate ``n_components`` and cap it at the rank the data can have: ``min(n_samples, n_features)``, or
    ``min(n_samples - 1, n_features)`` for centred data (the last axis would otherwise be a direction of zero
    training variance, chosen by LAPACK's rounding).

    The paper reduces to 1024 dimensions (Sec. 4); with fewer features or samples the cap applies.
    ``None`` means the cap itself.
    """
    cap = max(1, min(n_samples - (1 if center else 0), n_features))
    if n_components is None:
        return cap
    if isinstance(n_components, bool) or not isinstance(n_components, Integral) or n_components < 1:
        raise ValueError(f"{name}: n_components must be a positive int or None, got {n_components!r}")
    return int(min(n_components, cap))


def fit_pca(X: np.ndarray, n_components: int, center: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Principal axes of ``X``: ``(mean, components)`` with components of shape ``(k, n_features)``.

    With ``center=False`` the mean is zero and the axes are those of the uncentred second moment (the
    shared mean direction of the features is kept as a direction, not subtracted).

    Rows of ``components`` are orthonormal, sorted by decreasing variance, with the sign fixed so
    that the largest-magnitude entry of each row is positive (deterministic output).
    Uses the ``d x d`` covariance when ``n_samples > n_features`` (cheaper), else a thin SVD.
    """
    X = np.asarray(X, dtype=np.float64)
    mean = X.mean(axis=0) if center else np.zeros(X.shape[1])
    Xc = X - mean
    n, d = Xc.shape
    if n > d:
        evals, evecs = np.linalg.eigh(Xc.T @ Xc)
        comps = evecs[:, ::-1][:, :n_components].T
    else:
        _, _, vt = np.linalg.svd(Xc, full_matrices=False)
        comps = vt[:n_components]
    comps = np.array(comps, dtype=np.float64, order="C")
    idx = np.argmax(np.abs(comps), axis=1)
    signs = np.sign(comps[np.arange(comps.shape[0]), idx])
    signs[signs == 0] = 1.0
    comps *= signs[:, None]
    return mean, comps


def apply_linear_map(X, mean: np.ndarray, components: np.ndarray, name: str) -> np.ndarray:
    """``(X - mean) @ components.T`` for features ``X`` of shape ``(n, d)``, validated (``name`` is used in
    the error messages); float32 for float32 input, else float64."""
    X = check_array(X, dtype=[np.float64, np.float32], estimator=name)
    check_n_features(name, X.shape[1], components.shape[1])
    dtype = X.dtype
    return ((X - mean.astype(dtype)) @ components.T.astype(dtype)).astype(dtype, copy=False)


def check_modality(modality, n: int) -> np.ndarray:
    """``True`` for NIR, ``False`` for VIS, from strings 'nir'/'vis' or 1/0 (or bools); one per row."""
    m = np.asarray(modality)
    if m.ndim == 0 and m.dtype.kind in "US":  # one modality for every row
        m = np.full(n, m.item())
    if m.shape != (n,):
        raise ValueError(f"modality must have one entry per row of X, shape ({n},), got {m.shape}")
    if m.dtype.kind in "USO":
        low = np.char.lower(m.astype(str))
        bad = sorted(set(low[(low != "nir") & (low != "vis")].tolist()))
        if bad:
            raise ValueError(f"modality entries must be 'nir' or 'vis' (or 1 / 0), got {bad[:5]}")
        return low == "nir"
    if m.dtype.kind in "biuf":
        bad = sorted(set(m[(m != 0) & (m != 1)].tolist()))
        if bad:
            raise ValueError(f"modality entries must be 1 (NIR) or 0 (VIS) (or 'nir' / 'vis'), got {bad[:5]}")
        return m.astype(bool)
    raise ValueError(f"modality must hold 'nir'/'vis' strings or 1/0, got dtype {m.dtype}")


def modality_means(X: np.ndarray, is_nir: np.ndarray, name: str) -> np.ndarray:
    """``(2, d)``: the mean NIR row and the mean VIS row of ``X`` (the two-means domain shift)."""
    if not is_nir.any() or is_nir.all():
        raise ValueError(f"{name}: removing the modality means needs NIR and VIS training vectors, got "
                         f"{int(is_nir.sum())} NIR and {int((~is_nir).sum())} VIS")
    return np.stack([X[is_nir].mean(axis=0), X[~is_nir].mean(axis=0)])


def shift_by_modality(X: np.ndarray, modality, means: np.ndarray, name: str) -> np.ndarray:
    """``X`` with each row's modality mean (``means[0]`` NIR, ``means[1]`` VIS) subtracted."""
    if modality is None:
        raise ValueError(f"{name} was fitted with the modality means removed (shift); transform needs each row's "
                         "modality: transform(X, modality='nir' | 'vis' | one entry per row)")
    is_nir = check_modality(modality, X.shape[0])
    return X - np.where(is_nir[:, None], means[0], means[1]).astype(X.dtype)


class LinearEmbeddingMixin(ClassNamePrefixFeaturesOutMixin, TransformerMixin):
    """``transform`` for estimators whose fitted state is ``mean_`` and ``components_``, and optionally
    ``modality_means_`` (``(2, n_features)``: NIR, VIS), subtracted from each row by its modality first.

    Subclasses implement ``fit`` and set ``mean_``, ``components_`` and ``n_features_in_``.
    """

    @property
    def _n_features_out(self) -> int:
        return self.components_.shape[0]

    def transform(self, X: np.ndarray, modality=None) -> np.ndarray:
        """Apply the learned map: ``(X - modality mean - mean_) @ components_.T``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        modality : {'nir', 'vis'} or array-like of shape (n_samples,), optional
            Needed (and used) only when the estimator removes the modality means (``modality_means_``).

        Returns
        -------
        ndarray of shape (n_samples, n_components)
            float32 when ``X`` is float32, else float64.
        """
        check_is_fitted(self, ("components_", "mean_"))
        means = getattr(self, "modality_means_", None)
        if means is not None:
            X = check_array(X, dtype=[np.float64, np.float32], estimator=type(self).__name__)
            check_n_features(type(self).__name__, X.shape[1], means.shape[1])
            X = shift_by_modality(X, modality, means, type(self).__name__)
        return apply_linear_map(X, self.mean_, self.components_, type(self).__name__)

    def _more_tags(self) -> dict:
        return {"preserves_dtype": [np.float64, np.float32]}


def validate_X_y(estimator: BaseEstimator, X, y, *, min_classes: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate supervised input: ``X`` float 2-D finite, ``y`` one label per row, at least ``min_classes``.

    Returns ``(X float64, classes, codes)`` where ``codes[i]`` indexes ``classes``.
    """
    name = type(estimator).__name__
    X, y = check_X_y(X, y, dtype=np.float64, ensure_min_samples=2, estimator=estimator, y_numeric=False)
    classes, codes = np.unique(y, return_inverse=True)
    if classes.size < min_classes:
        raise ValueError(
            f"{name} needs samples of at least {min_classes} classes (people) in y, got {classes.size} class "
            f"({classes[:5].tolist()})"
        )
    return X, classes, codes.astype(np.intp)
