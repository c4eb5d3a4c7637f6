"""Baselines (none / PCA / ITML / LMNN) and the make_embedding registry."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from embedding_synthetic import union_of_subspaces
from nirvis.embedding import (
    EMBEDDINGS,
    IdentityEmbedding,
    ITMLEmbedding,
    LMNNEmbedding,
    LowRankTransform,
    LowRankTransformCV,
    ModalityShift,
    PCAEmbedding,
    available_embeddings,
    make_embedding,
    method_name,
)


@pytest.fixture(scope="module")
def data():
    X, y, _, _ = union_of_subspaces(0, n_classes=5, dim=12, per_spectrum=6, noise=0.05)
    return X, y


def test_registry_names_and_classes():
    assert available_embeddings() == ["none", "ms", "pca", "lowrank", "lowrank-fixed", "itml", "lmnn"]
    expected = {"none": IdentityEmbedding, "ms": ModalityShift, "pca": PCAEmbedding, "lowrank": LowRankTransformCV,
                "lowrank-fixed": LowRankTransform, "itml": ITMLEmbedding, "lmnn": LMNNEmbedding}
    for name, cls in expected.items():
        model = make_embedding(name)
        assert type(model) is cls and EMBEDDINGS[name] is cls
        assert method_name(model) == name
    assert make_embedding("lowrank", max_iter=7).max_iter == 7


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown embedding method 'lda'; valid: none, ms, pca, lowrank, lowrank-fixed, itml, lmnn"):
        make_embedding("lda")
    with pytest.raises(ValueError, match=r"LMNNEmbedding \('lmnn'\) has no parameter k; valid: .*n_neighbors"):
        make_embedding("lmnn", k=3)
    with pytest.raises(ValueError, match="not a nirvis embedding"):
        method_name(object())


def test_identity_and_pca(data):
    X, y = data
    np.testing.assert_array_equal(IdentityEmbedding().fit(X).transform(X), X)
    pca = PCAEmbedding(n_components=4).fit(X, y)
    np.testing.assert_allclose(pca.components_ @ pca.components_.T, np.eye(4), atol=1e-10)
    Z = pca.transform(X)
    var = Z.var(axis=0)
    assert np.all(np.diff(var) <= 1e-12), "components sorted by decreasing variance"
    assert PCAEmbedding().fit(X).n_components_ == 12  # 1024 capped at the feature dimension


@pytest.mark.parametrize("cls,params", [(ITMLEmbedding, {"max_iter": 20}), (LMNNEmbedding, {"max_iter": 20})])
def test_metric_learn_baselines_fit_and_expose_a_linear_map(data, cls, params):
    X, y = data
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="metric_learn")
        model = cls(n_components=8, random_state=0, **params).fit(X, y)
    assert model.components_.shape == (8, 12)
    np.testing.assert_allclose(model.components_, model.metric_components_ @ model.pca_components_)
    np.testing.assert_allclose(model.transform(X), (X - model.mean_) @ model.components_.T)
    assert not np.allclose(model.metric_components_, np.eye(8)), "the metric learner did something"
    assert model.n_iter_ >= 1


def test_lmnn_caps_neighbours_at_the_smallest_class():
    X, y, _, _ = union_of_subspaces(0, n_classes=4, dim=10, per_spectrum=3)
    y = y.copy()
    keep = np.ones(len(y), bool)
    keep[np.flatnonzero(y == 0)[3:]] = False  # class 0 keeps 3 samples: 2 neighbours possible
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="metric_learn")
        model = LMNNEmbedding(n_neighbors=5, max_iter=5).fit(X[keep], y[keep])
    assert model.n_neighbors_ == 2
    single = keep.copy()
    single[np.flatnonzero(y == 1)[1:]] = False
    with pytest.raises(ValueError, match=r"at least 2 samples per class.*1 class\(es\)"):
        LMNNEmbedding(max_iter=5).fit(X[single], y[single])


@pytest.mark.parametrize("model,match", [
    (ITMLEmbedding(gamma=-1), "gamma must be a positive number, got -1"),
    (ITMLEmbedding(max_iter=0), "max_iter must be an int >= 1, got 0"),
    (LMNNEmbedding(n_neighbors=0), "n_neighbors must be an int >= 1, got 0"),
    (LMNNEmbedding(regularization=2.0), r"regularization must be in \[0, 1\], got 2.0"),
    (PCAEmbedding(n_components=-3), "n_components must be a positive int or None, got -3"),
])
def test_bad_parameters_are_named(data, model, match):
    X, y = data
    with pytest.raises(ValueError, match=match):
        model.fit(X, y)


def test_feature_count_is_checked(data):
    X, y = data
    for model in (IdentityEmbedding().fit(X), PCAEmbedding(4).fit(X)):
        with pytest.raises(ValueError, match=f"X has 3 features, but {type(model).__name__} is expecting 12"):
            model.transform(X[:, :3])


@pytest.mark.parametrize("cls, params", [(PCAEmbedding, {}), (ITMLEmbedding, {"n_constraints": 50, "max_iter": 5}),
                                         (LMNNEmbedding, {"max_iter": 5})])
def test_baselines_can_skip_centring_like_the_low_rank_transform(data, cls, params):
    X, y = data
    uncentred = cls(n_components=None, center=False, **params).fit(X, y)
    assert np.all(uncentred.mean_ == 0)
    assert np.any(cls(n_components=None, **params).fit(X, y).mean_ != 0)
    with pytest.raises(ValueError, match="center must be True or False, got 'no'"):
        cls(center="no", **params).fit(X, y)


def test_lmnn_starts_from_the_identity_not_lda(data):
    X, y = data  # few classes: metric-learn's "auto" would start from LDA here
    assert LMNNEmbedding().get_params()["init"] == "identity"
    model = LMNNEmbedding(n_components=3, max_iter=1).fit(X, y)  # 3 <= 5 classes - 1: "auto" is LDA
    np.testing.assert_allclose(model.metric_components_, np.eye(3), atol=0.05)
    lda = LMNNEmbedding(n_components=3, max_iter=1, init="auto").fit(X, y)
    assert np.abs(lda.metric_components_ - np.eye(3)).max() > 0.1


def test_modality_shift_removes_each_modality_mean():
    X, y, nir, _ = union_of_subspaces(1, n_classes=5, dim=12, per_spectrum=6, shift=3.0)
    ms = ModalityShift().fit(X, y, modality=np.where(nir, "nir", "vis"))
    np.testing.assert_allclose(ms.modality_means_, [X[nir].mean(axis=0), X[~nir].mean(axis=0)])
    Z = ms.transform(X, modality=nir.astype(int))
    np.testing.assert_allclose(Z[nir].mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(ms.transform(X[:3], modality="vis"), X[:3] - X[~nir].mean(axis=0))
    with pytest.raises(ValueError, match="fit needs modality"):
        ModalityShift().fit(X, y)
    with pytest.raises(ValueError, match="transform needs each row's modality"):
        ms.transform(X)
    with pytest.raises(ValueError, match="got \\['ir'\\]"):
        ms.transform(X[:2], modality=["nir", "ir"])
    with pytest.raises(ValueError, match="needs NIR and VIS training vectors, got 12 NIR and 0 VIS"):
        ModalityShift().fit(X[:12], y[:12], modality=["nir"] * 12)
