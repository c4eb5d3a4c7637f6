"""scikit-learn's estimator conventions (STYLE habit 1), run on every embedding."""

from __future__ import annotations

import warnings

from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.estimator_checks import parametrize_with_checks

from nirvis.embedding import IdentityEmbedding, ITMLEmbedding, LMNNEmbedding, LowRankTransform, PCAEmbedding

ESTIMATORS = [
    LowRankTransform(max_iter=5),
    LowRankTransform(max_iter=5, step="diminishing", normalize=True, dtype="float32"),
    IdentityEmbedding(),
    PCAEmbedding(),
    ITMLEmbedding(max_iter=5),
    LMNNEmbedding(max_iter=5),
]


@parametrize_with_checks(ESTIMATORS)
def test_sklearn_compatible(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter=5 is meant to stop early
        warnings.filterwarnings("ignore", message="Only generated", module="metric_learn")  # few pairs exist
        check(estimator)
