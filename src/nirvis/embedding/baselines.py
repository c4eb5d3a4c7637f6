"""Baselines of paper Sec. 4.2 / 5 with the interface of :class:`~nirvis.embedding.LowRankTransform`.

- :class:`IdentityEmbedding` (``"none"``): plain cosine on the input features.
- :class:`ModalityShift` (``"ms"``, beyond the paper): the "two means" yardstick: each modality's training
  mean subtracted, nothing else learned.
- :class:`PCAEmbedding` (``"pca"``): PCA only (the first half of the low-rank embedding, with the same
  ``center`` setting).
- :class:`ITMLEmbedding` (``"itml"``): PCA, then pairwise metric learning, ITML (Davis et al. 2007)
  from metric-learn.
- :class:`LMNNEmbedding` (``"lmnn"``): PCA, then triplet metric learning, LMNN (Weinberger & Saul
  2009) from metric-learn.

Each fits with ``fit(X, y)`` and ends as one linear map ``(X - mean_) @ components_.T`` (the
metric-learn ``components_`` merged with the PCA), compared with the cosine similarity.
metric-learn 0.7.0 needs scikit-learn < 1.8 (the project pins 1.5.2).
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_array

from nirvis.embedding.base import (LinearEmbeddingMixin, check_modality, fit_pca, modality_means,
                                   resolve_n_components, validate_X_y)

__all__ = ["IdentityEmbedding", "ModalityShift", "PCAEmbedding", "ITMLEmbedding", "LMNNEmbedding"]


def _check_int(name: str, param: str, value, minimum: int = 1, allow_none: bool = False) -> None:
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        extra = " or None" if allow_none else ""
        raise ValueError(f"{name}: {param} must be an int >= {minimum}{extra}, got {value!r}")


def _check_bool(name: str, param: str, value) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name}: {param} must be True or False, got {value!r}")


def _check_positive(name: str, param: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, Real) or not value > 0:
        raise ValueError(f"{name}: {param} must be a positive number, got {value!r}")


class IdentityEmbedding(LinearEmbeddingMixin, BaseEstimator):
    """No embedding: ``transform`` returns the features unchanged (plain cosine matching).

    ``fit(X, y=None)`` only records the feature dimension; ``components_`` is the identity and
    ``mean_`` zero, so it saves and loads like the learned embeddings.
    """

    def fit(self, X, y=None) -> IdentityEmbedding:
        """Record ``n_features_in_``; ``y`` is ignored."""
        X = check_array(X, dtype=np.float64, estimator=self)
        d = X.shape[1]
        self.n_features_in_ = d
        self.mean_ = np.zeros(d)
        self.components_ = np.eye(d)
        return self


class ModalityShift(LinearEmbeddingMixin, BaseEstimator):
    """The two-means domain shift (row ``MS``): ``x - mean of its modality`` over the training vectors.

    The simplest thing a linear map can learn from NIR/VIS pairs of training people: the one offset between
    the spectra, as seen by the frozen network. It is the yardstick of the low-rank transform
    (docs/BENCHMARKS.md). ``fit`` needs each row's modality, and so does ``transform``.

    Attributes
    ----------
    modality_means_ : ndarray of shape (2, n_features_in_)
        Mean NIR and mean VIS training vector.
    components_ : ndarray of shape (n_features_in_, n_features_in_)
        The identity.
    mean_ : ndarray of shape (n_features_in_,)
        Zeros.
    """

    def fit(self, X, y=None, modality=None) -> ModalityShift:
        """Learn the two means; ``y`` is ignored, ``modality`` ('nir' / 'vis' per row) is required."""
        X = check_array(X, dtype=np.float64, estimator=self)
        if modality is None:
            raise ValueError("ModalityShift: fit needs modality ('nir' / 'vis' per row)")
        d = X.shape[1]
        self.modality_means_ = modality_means(X, check_modality(modality, X.shape[0]), type(self).__name__)
        self.n_features_in_ = d
        self.mean_ = np.zeros(d)
        self.components_ = np.eye(d)
        return self


class PCAEmbedding(LinearEmbeddingMixin, BaseEstimator):
    """PCA to ``n_components`` dimensions (capped at ``min(n_samples, n_features)``).

    Parameters
    ----------
    n_components : int or None, default=1024
        1024 as in the paper (Sec. 4); ``None`` keeps every component.
    center : bool, default=True
        Subtract the training mean (``mean_``). ``False``: axes of the uncentred second moment, ``mean_``
        zero (with every component kept, a rotation: cosine scores are those of the raw features).

    Attributes
    ----------
    components_ : ndarray of shape (n_components_, n_features_in_)
        Principal axes, by decreasing variance.
    mean_ : ndarray of shape (n_features_in_,)
    n_components_ : int
    """

    def __init__(self, n_components: int | None = 1024, *, center: bool = True) -> None:
        self.n_components = n_components
        self.center = center

    def fit(self, X, y=None) -> PCAEmbedding:
        """Learn the principal axes of ``X``; ``y`` is ignored."""
        X = check_array(X, dtype=np.float64, ensure_min_samples=2, estimator=self)
        _check_bool(type(self).__name__, "center", self.center)
        k = resolve_n_components(type(self).__name__, self.n_components, *X.shape, center=self.center)
        self.mean_, self.components_ = fit_pca(X, k, center=self.center)
        self.n_components_ = k
        self.n_features_in_ = X.shape[1]
        return self


class _MetricLearnEmbedding(LinearEmbeddingMixin, BaseEstimator):
    """PCA, then a metric-learn Mahalanobis learner; the two maps merged."""

    def _make_learner(self, classes_sizes: np.ndarray):  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_params(self) -> None:
        _check_int(type(self).__name__, "n_components", self.n_components, allow_none=True)
        _check_int(type(self).__name__, "max_iter", self.max_iter)
        _check_bool(type(self).__name__, "center", self.center)

    def fit(self, X, y) -> _MetricLearnEmbedding:
        """Learn the PCA, then the metric on the PCA-reduced ``X`` with labels ``y``."""
        self._check_params()
        X, classes, codes = validate_X_y(self, X, y)
        k = resolve_n_components(type(self).__name__, self.n_components, *X.shape, center=self.center)
        mean, P = fit_pca(X, k, center=self.center)
        Y = (X - mean) @ P.T
        learner = self._make_learner(np.bincount(codes))
        learner.fit(Y, codes)
        L = np.asarray(learner.components_, dtype=np.float64)
        self.mean_ = mean
        self.pca_components_ = P
        self.metric_components_ = L
        self.components_ = L @ P
        self.n_components_ = k
        self.n_features_in_ = X.shape[1]
        self.n_iter_ = int(getattr(learner, "n_iter_", -1))
        return self

    def _more_tags(self) -> dict:
        return {"requires_y": True, "preserves_dtype": [np.float64, np.float32]}


class ITMLEmbedding(_MetricLearnEmbedding):
    """PCA, then ITML (information-theoretic metric learning, pairwise constraints).

    Parameters
    ----------
    n_components : int or None, default=1024
        PCA dimension before ITML (capped at ``min(n_samples, n_features)``).
    gamma : float, default=1.0
        ITML slack trade-off.
    max_iter : int, default=100
        Sweeps over the constraints (metric-learn's default is 1000). One sweep costs
        ``n_constraints * d^2``.
    tol : float, default=1e-3
    n_constraints : int or None, default=None
        Pairs of *each* kind drawn from the labels (``n_constraints`` similar and as many dissimilar
        pairs); ``None`` is metric-learn's rule, ``20 * n_classes**2``.
    prior : str, default="identity"
    center : bool, default=True
        Subtract the training mean before the PCA (as :class:`PCAEmbedding`).
    random_state : int or None, default=None
        Seeds the constraint sampling.

    Attributes
    ----------
    components_, mean_, pca_components_, metric_components_ (the ITML ``L``), n_components_, n_iter_
    """

    def __init__(self, n_components: int | None = 1024, *, gamma: float = 1.0, max_iter: int = 100,
                 tol: float = 1e-3, n_constraints: int | None = None, prior: str = "identity",
                 center: bool = True, random_state=None) -> None:
        self.n_components = n_components
        self.center = center
        self.gamma = gamma
        self.max_iter = max_iter
        self.tol = tol
        self.n_constraints = n_constraints
        self.prior = prior
        self.random_state = random_state

    def _make_learner(self, class_sizes: np.ndarray):
        from metric_learn import ITML_Supervised

        name = type(self).__name__
        _check_positive(name, "gamma", self.gamma)
        _check_positive(name, "tol", self.tol)
        _check_int(name, "n_constraints", self.n_constraints, allow_none=True)
        if np.max(class_sizes) < 2:
            raise ValueError(f"{name} needs a class with at least 2 samples to form similar pairs; "
                             "every class in y has 1")
        return ITML_Supervised(gamma=self.gamma, max_iter=self.max_iter, tol=self.tol,
                               n_constraints=self.n_constraints, prior=self.prior,
                               random_state=self.random_state)


class LMNNEmbedding(_MetricLearnEmbedding):
    """PCA, then LMNN (large-margin nearest neighbours, triplet constraints).

    Parameters
    ----------
    n_components : int or None, default=1024
        PCA dimension before LMNN (capped at ``min(n_samples, n_features)``).
    n_neighbors : int, default=3
        Target neighbours per sample. LMNN needs that many *other* samples in every class, so it
        is capped at (smallest class size - 1); the value used is ``n_neighbors_``.
    max_iter : int, default=200
        Gradient steps (metric-learn's default is 1000; it also runs at least ``min(50, max_iter)``).
    learn_rate : float, default=1e-7
        metric-learn's default. It is small for unit-length features: on dlib features of RAP3DF, 50
        iterations moved ``L`` by about 4% from the identity (docs/BENCHMARKS.md).
    regularization : float, default=0.5
    init : str, default="identity"
        metric-learn's initialisation of ``L``. Its ``"auto"`` is *not* the identity: it starts from LDA
        whenever ``n_components <= n_classes - 1``, so with a small learning rate the row was LDA.
    center : bool, default=True
        Subtract the training mean before the PCA (as :class:`PCAEmbedding`).
    random_state : int or None, default=None

    Attributes
    ----------
    components_, mean_, pca_components_, metric_components_ (the LMNN ``L``), n_components_,
    n_neighbors_, n_iter_
    """

    def __init__(self, n_components: int | None = 1024, *, n_neighbors: int = 3, max_iter: int = 200,
                 learn_rate: float = 1e-7, regularization: float = 0.5, init: str = "identity",
                 center: bool = True, random_state=None) -> None:
        self.n_components = n_components
        self.center = center
        self.n_neighbors = n_neighbors
        self.max_iter = max_iter
        self.learn_rate = learn_rate
        self.regularization = regularization
        self.init = init
        self.random_state = random_state

    def _make_learner(self, class_sizes: np.ndarray):
        from metric_learn import LMNN

        name = type(self).__name__
        _check_int(name, "n_neighbors", self.n_neighbors)
        _check_positive(name, "learn_rate", self.learn_rate)
        if isinstance(self.regularization, bool) or not isinstance(self.regularization, Real) \
                or not 0 <= self.regularization <= 1:
            raise ValueError(f"{name}: regularization must be in [0, 1], got {self.regularization!r}")
        smallest = int(class_sizes.min())
        if smallest < 2:
            raise ValueError(f"{name} needs at least 2 samples per class (a target neighbour); "
                             f"{int(np.sum(class_sizes < 2))} class(es) in y have 1")
        self.n_neighbors_ = min(self.n_neighbors, smallest - 1)
        return LMNN(n_neighbors=self.n_neighbors_, max_iter=self.max_iter, min_iter=min(50, self.max_iter),
                    learn_rate=self.learn_rate, regularization=self.regularization, init=self.init,
                    random_state=self.random_state)
