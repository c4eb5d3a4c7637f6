"""The low-rank transform (paper Sec. 4): objective, subgradient, step rules, early stopping."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.linalg import subspace_angles
from sklearn.exceptions import ConvergenceWarning, NotFittedError

from embedding_synthetic import union_of_subspaces
from nirvis.embedding import LowRankTransform, lowrank_objective, lowrank_subgradient, retrieval_scores
from nirvis.embedding.base import fit_pca
from nirvis.embedding.lowrank import _Problem


def _fit(X, y, **params):
    params.setdefault("n_components", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LowRankTransform(**params).fit(X, y)


def _pca_space(model, X):
    return (X - model.mean_) @ model.pca_components_.T


def _rank1(Z, y, nir):
    return retrieval_scores(Z[nir], y[nir], Z[~nir], y[~nir])[0]


def _mean_angle(Z, y, rank):
    """Mean principal angle (degrees) between the dominant ``rank``-dim subspaces of the classes."""
    spans = []
    for c in np.unique(y):
        U = np.linalg.svd(Z[y == c].T, full_matrices=False)[0]
        spans.append(U[:, :rank])
    angles = [np.degrees(subspace_angles(spans[i], spans[j]))
              for i in range(len(spans)) for j in range(i + 1, len(spans))]
    return float(np.mean(np.concatenate(angles)))


# ---- objective and subgradient ------------------------------------------------------------------

@pytest.mark.parametrize("n_per,n_classes,d", [(5, 6, 20), (30, 3, 5), (4, 3, 40), (7, 4, 28)])
def test_gram_objective_and_subgradient_match_per_class_svd(n_per, n_classes, d):
    # (30, 3, 5): classes larger than d use the d x d Gram; (4, 3, 40): the whole set too (n <= d)
    rng = np.random.default_rng(n_per + d)
    X = rng.standard_normal((n_per * n_classes, d))
    y = np.repeat(np.arange(n_classes), n_per)
    T = np.eye(d) + 0.3 * rng.standard_normal((d, d))
    f_gram, G_gram = lowrank_subgradient(T, X, y)
    f_svd, G_svd = lowrank_subgradient(T, X, y, method="svd")
    assert f_gram == pytest.approx(f_svd, rel=1e-10)
    np.testing.assert_allclose(G_gram, G_svd, rtol=0, atol=1e-8 * np.abs(G_svd).max())
    assert lowrank_objective(T, X, y) == pytest.approx(f_svd, rel=1e-10)


def test_subgradient_matches_finite_differences_in_generic_position():
    rng = np.random.default_rng(3)
    d, n_per, n_classes = 12, 5, 4
    X = rng.standard_normal((n_per * n_classes, d))
    y = np.repeat(np.arange(n_classes), n_per)
    T = np.eye(d) + 0.2 * rng.standard_normal((d, d))
    _, G = lowrank_subgradient(T, X, y)
    h = 1e-6
    for _ in range(5):
        E = rng.standard_normal((d, d))
        fd = (lowrank_objective(T + h * E, X, y) - lowrank_objective(T - h * E, X, y)) / (2 * h)
        assert fd == pytest.approx(np.sum(G * E), rel=1e-5, abs=1e-7)


def test_objective_is_nonnegative_homogeneous_and_zero_for_orthogonal_classes():
    rng = np.random.default_rng(4)
    d = 12
    Q = np.linalg.qr(rng.standard_normal((d, d)))[0]
    # three classes on mutually orthogonal 3-dim subspaces: f = 0 at T = I (paper Theorem 1)
    X = np.vstack([rng.standard_normal((6, 3)) @ Q[:, 3 * c: 3 * c + 3].T for c in range(3)])
    y = np.repeat(np.arange(3), 6)
    assert abs(lowrank_objective(np.eye(d), X, y)) < 1e-9 * np.linalg.norm(X)
    # a generic T breaks orthogonality: f > 0; f(aT) = a f(T); <G, T> = f(T) (Euler)
    T = np.eye(d) + 0.5 * rng.standard_normal((d, d))
    f, G = lowrank_subgradient(T, X, y)
    assert f > 0.01
    assert lowrank_objective(2.5 * T, X, y) == pytest.approx(2.5 * f, rel=1e-10)
    assert np.sum(G * T) == pytest.approx(f, rel=1e-8)


def _pca_reduced(X):
    mean, P = fit_pca(X, X.shape[1])
    return (X - mean) @ P.T


@pytest.mark.parametrize("n_per,n_classes,d", [(5, 30, 20), (25, 12, 64), (7, 4, 28)])
def test_gram_method_on_pca_reduced_data_matches_per_class_svd(n_per, n_classes, d):
    # PCA-reduced data (what LowRankTransform passes) have a diagonal Y Y^T, which the Gram method
    # exploits (T C and G C are column scalings); (7, 4, 28): n <= d, no d x d Gram at all
    rng = np.random.default_rng(n_per * d)
    X = _pca_reduced(rng.standard_normal((n_per * n_classes, d)) * np.linspace(1.0, 0.2, d))
    y = np.repeat(np.arange(n_classes), n_per)
    assert (_Problem(X, y, "float64").c_diag is not None) == (X.shape[0] > X.shape[1])
    T = np.eye(X.shape[1]) + 0.3 * rng.standard_normal((X.shape[1],) * 2)
    f_gram, G_gram = lowrank_subgradient(T, X, y)
    f_svd, G_svd = lowrank_subgradient(T, X, y, method="svd")
    assert f_gram == pytest.approx(f_svd, rel=1e-10)
    np.testing.assert_allclose(G_gram, G_svd, rtol=0, atol=1e-8 * np.abs(G_svd).max())


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("pca", [True, False])
def test_line_search_steps_match_the_per_class_svd_reference(pca, dtype):
    # f at a trial step T - tG (Grams updated along G, eigenvalues only or not), and f and the
    # subgradient at the accepted point (Z updated in place, eigenvectors completed) and after a
    # refresh, against the per-class SVD at T - tG
    rng = np.random.default_rng(11)
    d, n_per, n_classes = 16, 6, 12
    X = rng.standard_normal((n_per * n_classes, d)) @ (np.eye(d) + 0.3 * rng.standard_normal((d, d)))
    X = _pca_reduced(X) if pca else X
    y = np.repeat(np.arange(n_classes), n_per)
    prob = _Problem(X, y, dtype)
    assert (prob.c_diag is not None) == pca
    rel = 1e-10 if dtype == "float64" else 1e-5
    T = np.eye(d) + 0.2 * rng.standard_normal((d, d))
    for eta, vectors in [(0.05, True), (0.2, False)]:
        p = prob.point(T)
        G = prob.gradient(p)
        t = eta * np.linalg.norm(T) / np.linalg.norm(G)
        f_ref, G_ref = lowrank_subgradient(T - t * G, X, y, method="svd")
        r = prob.direction(p, G)
        trial = prob.trial(p, r, t, vectors=vectors)
        assert trial[0] == pytest.approx(f_ref, rel=rel)
        new = prob.accept(p, r, t, trial)
        np.testing.assert_allclose(new.T, T - t * G, rtol=0, atol=1e-14 * np.abs(T).max())
        for q in (new, prob.refresh(new)):
            assert q.f == pytest.approx(f_ref, rel=rel)
            np.testing.assert_allclose(prob.gradient(q), G_ref, rtol=0, atol=100 * rel * np.abs(G_ref).max())
        T = new.T


def test_objective_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"T must have shape \(4, 4\).*got \(3, 3\)"):
        lowrank_objective(np.eye(3), np.ones((5, 4)), np.arange(5))
    with pytest.raises(ValueError, match="one label per row"):
        lowrank_objective(np.eye(4), np.ones((5, 4)), np.arange(4))
    with pytest.raises(ValueError, match="'gram' or 'svd'"):
        lowrank_objective(np.eye(4), np.ones((5, 4)), np.arange(5), method="qr")


# ---- the descent ----------------------------------------------------------------------------------

def test_backtracking_decreases_f_at_every_step(subspaces):
    X, y, _, _ = subspaces
    model = _fit(X, y, max_iter=60)
    h = model.objective_history_
    assert len(h) == model.n_iter_ + 1 or model.stop_reason_ in ("line_search", "tol")
    assert np.all(np.diff(h) < 0), "Armijo backtracking accepts only steps that decrease f"
    assert model.best_iteration_ == len(h) - 1
    # the recorded value is f of the returned T on the (PCA-reduced) training vectors
    f_final = lowrank_objective(model.transform_matrix_, _pca_space(model, X), y)
    assert f_final == pytest.approx(h[-1], rel=1e-9)


def test_diminishing_steps_keep_the_best_iterate(subspaces):
    X, y, _, _ = subspaces
    model = _fit(X, y, step="diminishing", step_size=0.5, max_iter=40)
    h = model.objective_history_
    assert len(h) == 41
    assert not np.all(np.diff(h) < 0), "with these long steps f goes up at times (else this test is moot)"
    assert model.best_iteration_ == int(np.argmin(h))
    f_kept = lowrank_objective(model.transform_matrix_, _pca_space(model, X), y)
    assert f_kept == pytest.approx(h.min(), rel=1e-9)
    assert h.min() < 0.2 * h[0]


def test_f_goes_near_zero_and_class_subspaces_towards_orthogonal(subspaces):
    X, y, _, _ = subspaces
    Z0 = X - X.mean(axis=0)
    model = _fit(X, y, max_iter=300)
    h = model.objective_history_
    # f is 1-homogeneous in T, so compare the scale-free f(T) / ||T||_2 with f(I) = h[0]
    scale = np.linalg.norm(model.transform_matrix_, 2)
    assert h[model.best_iteration_] / scale < 0.02 * h[0]
    assert scale > 0.5, "T must not collapse"
    before, after = _mean_angle(Z0, y, 3), _mean_angle(model.transform(X), y, 3)
    assert before < 70
    assert after > 84


def test_rank1_between_the_two_spectra_rises():
    X, y, nir, _ = union_of_subspaces(1, noise=0.02, shift=1.5)
    before = _rank1(X - X.mean(axis=0), y, nir)
    model = _fit(X, y, max_iter=200)
    after = _rank1(model.transform(X), y, nir)
    assert before < 0.7
    assert after > 0.95


def test_normalize_keeps_unit_spectral_norm(subspaces):
    X, y, _, _ = subspaces
    model = _fit(X, y, max_iter=30, normalize=True)
    assert np.linalg.norm(model.transform_matrix_, 2) == pytest.approx(1.0, rel=1e-6)
    assert np.all(np.diff(model.objective_history_) < 0)


def test_float32_objective_tracks_float64(subspaces):
    X, y, _, _ = subspaces
    m32 = _fit(X, y, max_iter=40, dtype="float32")
    f_true = lowrank_objective(m32.transform_matrix_, _pca_space(m32, X), y)
    assert m32.objective_history_[-1] == pytest.approx(f_true, rel=1e-2)
    m64 = _fit(X, y, max_iter=40)
    # The two descents take slightly different paths (each step's direction follows the rounding near the
    # nuclear norms' kinks): 0.7% apart after 10 steps, 4.7% after 40 with numpy 2.4 / scipy 1.17 (from 27.5).
    assert m32.objective_history_[-1] == pytest.approx(m64.objective_history_[-1], rel=8e-2)


def test_components_merge_pca_and_T(subspaces):
    X, y, _, _ = subspaces
    model = _fit(X, y, n_components=10, max_iter=5)
    assert model.components_.shape == (10, X.shape[1])
    np.testing.assert_allclose(model.components_, model.transform_matrix_ @ model.pca_components_)
    np.testing.assert_allclose(model.transform(X), _pca_space(model, X) @ model.transform_matrix_.T, atol=1e-10)
    np.testing.assert_allclose(model.pca_components_ @ model.pca_components_.T, np.eye(10), atol=1e-10)
    assert model.transform(X.astype(np.float32)).dtype == np.float32


def test_n_components_is_capped():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((12, 30)), np.repeat(np.arange(3), 4)
    # centred, 12 vectors span 11 dimensions: a 12th axis would have zero variance, its direction arbitrary
    assert _fit(X, y, n_components=1024, max_iter=2).n_components_ == 11
    assert _fit(X, y, n_components=1024, max_iter=2, center=False).n_components_ == 12
    assert _fit(X[:, :5], y, n_components=1024, max_iter=2).n_components_ == 5


def test_max_iter_warns_convergence():
    X, y, _, _ = union_of_subspaces(0)
    with pytest.warns(ConvergenceWarning, match="max_iter=2 reached"):
        LowRankTransform(n_components=None, max_iter=2).fit(X, y)


# ---- early stopping on held-out people -----------------------------------------------------------

def test_early_stopping_beats_a_long_run_on_unseen_people():
    # noise makes the long run overfit: on people it never saw, its NIR->VIS rank-1 collapses
    X, y, nir, _ = union_of_subspaces(0, n_classes=24, noise=0.15, shift=1.5)
    learn, test = y < 16, y >= 16
    modality = np.where(nir, "nir", "vis")
    es = LowRankTransform(n_components=None, max_iter=300, early_stopping=True, random_state=0)
    es.fit(X[learn], y[learn], modality=modality[learn])
    long = _fit(X[learn], y[learn], max_iter=300, tol=0.0)
    r_none = _rank1(X[test] - X[learn].mean(axis=0), y[test], nir[test])
    r_es = _rank1(es.transform(X[test]), y[test], nir[test])
    r_long = _rank1(long.transform(X[test]), y[test], nir[test])
    assert es.stop_reason_ == "early_stopping"
    assert r_long < r_none < r_es


@pytest.mark.parametrize("with_modality", [True, False])
def test_early_stopping_returns_the_best_validated_T(with_modality):
    X, y, nir, _ = union_of_subspaces(2, n_classes=12, noise=0.1)
    model = LowRankTransform(n_components=None, max_iter=50, early_stopping=True, validation_fraction=0.25,
                             n_iter_no_change=5, random_state=1)
    model.fit(X, y, modality=nir.astype(int) if with_modality else None)
    scores, margins = model.validation_scores_, model.validation_margins_
    assert scores.shape == margins.shape == model.objective_history_.shape
    best = max(range(len(scores)), key=lambda i: (scores[i], margins[i]))
    assert model.best_iteration_ == best
    assert model.stop_reason_ in ("early_stopping", "max_iter", "tol", "line_search")
    if model.stop_reason_ == "early_stopping":
        assert len(scores) - 1 - best == 5


def test_early_stopping_needs_enough_people():
    X, y, _, _ = union_of_subspaces(0, n_classes=3)
    with pytest.raises(ValueError, match="holds out 1 of 3 people"):
        LowRankTransform(early_stopping=True).fit(X, y)


@pytest.mark.parametrize("modality,match", [
    (["nir", "vis", "thermal"], r"'nir' or 'vis'.*\['thermal'\]"),
    ([0, 1, 2], r"1 \(NIR\) or 0 \(VIS\).*\[2\]"),
    ([0, 1], r"one entry per row of X, shape \(3,\)"),
])
def test_bad_modality_is_named(modality, match):
    X, y = np.random.default_rng(0).standard_normal((3, 4)), np.array([0, 0, 1])
    with pytest.raises(ValueError, match=match):
        LowRankTransform(max_iter=1).fit(X, y, modality=modality)


# ---- validation of parameters and inputs ---------------------------------------------------------

@pytest.mark.parametrize("param,value,match", [
    ("step", "adam", "step must be 'backtracking' or 'diminishing', got 'adam'"),
    ("step_size", 0.0, r"step_size must be a float in \(0, 1\], got 0.0"),
    ("step_size", 2, r"step_size must be a float in \(0, 1\], got 2"),
    ("max_iter", 0, "max_iter must be an int >= 1, got 0"),
    ("max_iter", 2.5, "max_iter must be an int >= 1, got 2.5"),
    ("tol", -1.0, "tol must be a float >= 0, got -1.0"),
    ("normalize", "yes", "normalize must be True or False, got 'yes'"),
    ("validation_fraction", 1.0, r"validation_fraction must be a float in \(0, 1\), got 1.0"),
    ("dtype", "float16", "dtype must be 'float64' or 'float32', got 'float16'"),
    ("n_components", 0, "n_components must be a positive int or None, got 0"),
])
def test_bad_parameters_are_named(param, value, match):
    X, y, _, _ = union_of_subspaces(0, n_classes=3)
    with pytest.raises(ValueError, match=match):
        LowRankTransform(**{param: value}).fit(X, y)


def test_needs_two_classes_and_checks_feature_count():
    X, y, _, _ = union_of_subspaces(0, n_classes=3)
    with pytest.raises(ValueError, match="at least 2 classes"):
        LowRankTransform().fit(X, np.zeros(len(X)))
    model = _fit(X, y, n_components=10, max_iter=2)
    with pytest.raises(ValueError, match="X has 7 features, but LowRankTransform is expecting 40 features"):
        model.transform(X[:, :7])
    with pytest.raises(NotFittedError):
        LowRankTransform().transform(X)


def test_early_stopping_holds_out_only_people_it_can_score():
    # Half the people have NIR vectors only; holding one out would neither train nor score it.
    X, y, nir, _ = union_of_subspaces(1)
    classes = np.unique(y)
    nir_only = classes[::2]
    keep = ~(np.isin(y, nir_only) & ~nir)
    X, y, nir = X[keep], y[keep], nir[keep]
    for seed in range(5):
        model = LowRankTransform(n_components=None, early_stopping=True, max_iter=3, random_state=seed,
                                 validation_fraction=0.3)
        train = model._split_people(np.unique(y, return_inverse=True)[1], classes.size, nir)
        held = set(np.unique(y[~train]).tolist())
        assert held and not held & set(nir_only.tolist())


def test_shift_removes_the_modality_means_first():
    X, y, nir, _ = union_of_subspaces(2, n_classes=6, dim=20, per_spectrum=8, shift=2.0)
    mod = np.where(nir, "nir", "vis")
    model = LowRankTransform(None, max_iter=5, shift=True, center=False).fit(X, y, modality=mod)
    np.testing.assert_allclose(model.modality_means_, [X[nir].mean(axis=0), X[~nir].mean(axis=0)])
    shifted = X - np.where(nir[:, None], model.modality_means_[0], model.modality_means_[1])
    np.testing.assert_allclose(model.transform(X, modality=mod), shifted @ model.components_.T, atol=1e-10)
    assert LowRankTransform(None, max_iter=5).fit(X, y).modality_means_ is None
    with pytest.raises(ValueError, match="shift=True removes the modality means; fit needs modality"):
        LowRankTransform(None, shift=True).fit(X, y)
    with pytest.raises(ValueError, match="transform needs each row's modality"):
        model.transform(X)


def test_cv_keeps_the_candidate_with_the_best_held_out_rank1():
    from nirvis.embedding import LowRankTransformCV

    X, y, nir, _ = union_of_subspaces(4, n_classes=12, dim=20, per_spectrum=6, shift=3.0, noise=0.2)
    mod = np.where(nir, "nir", "vis")
    cv = LowRankTransformCV(shift=(False, True), n_components=(None, 6), max_iter=15, selection="best",
                            validation_fraction=0.3).fit(X, y, modality=mod)
    assert [(r["shift"], r["n_components"]) for r in cv.cv_results_] == [(False, None), (False, 6), (True, None),
                                                                         (True, 6)]
    keys = [(r["val_rank1"], r["val_margin"]) for r in cv.cv_results_]
    best = cv.cv_results_[max(range(4), key=lambda i: (*keys[i], -i))]
    assert cv.best_params_ == {"shift": best["shift"], "n_components": best["n_components"]}
    np.testing.assert_array_equal(cv.components_, cv.best_estimator_.components_)
    np.testing.assert_array_equal(cv.transform(X, modality=mod), cv.best_estimator_.transform(X, modality=mod))
    with pytest.raises(ValueError, match="shift=True needs modality"):
        LowRankTransformCV().fit(X, y)
    with pytest.raises(ValueError, match="shift must hold True / False"):
        LowRankTransformCV(shift=("yes",)).fit(X, y, modality=mod)
    with pytest.raises(ValueError, match="selection must be 'one_se' or 'best', got 'max'"):
        LowRankTransformCV(selection="max").fit(X, y, modality=mod)


def test_one_se_rule_prefers_the_candidate_that_moved_least_within_one_standard_error():
    from nirvis.embedding import LowRankTransformCV

    cv = LowRankTransformCV()
    results = [{"val_rank1": 0.90, "val_margin": 0.3, "best_iteration": 16, "val_se": 0.035},
               {"val_rank1": 0.88, "val_margin": 0.2, "best_iteration": 30, "val_se": 0.036},
               {"val_rank1": 0.87, "val_margin": 0.1, "best_iteration": 1, "val_se": 0.037},
               {"val_rank1": 0.80, "val_margin": 0.5, "best_iteration": 0, "val_se": 0.044}]
    assert cv._choose(results) == 2  # 0.87 >= 0.90 - 0.035; 0.80 is not
    assert LowRankTransformCV(selection="best")._choose(results) == 0
    results[2]["val_rank1"] = 0.86  # now outside one SE: the fewest steps within it is candidate 0
    assert cv._choose(results) == 0
    # on data, the chosen candidate is within one SE of the best and took the fewest steps among those
    X, y, nir, _ = union_of_subspaces(4, n_classes=12, dim=20, per_spectrum=6, shift=3.0, noise=0.2)
    fit = LowRankTransformCV(n_components=(None, 6), max_iter=15, validation_fraction=0.3).fit(
        X, y, modality=np.where(nir, "nir", "vis"))
    top = max(fit.cv_results_, key=lambda r: r["val_rank1"])
    within = [r for r in fit.cv_results_ if r["val_rank1"] >= top["val_rank1"] - top["val_se"] - 1e-12]
    chosen = next(r for r in fit.cv_results_ if (r["shift"], r["n_components"]) == tuple(fit.best_params_.values()))
    assert chosen in within and chosen["best_iteration"] == min(r["best_iteration"] for r in within)
    assert all(r["val_se"] > 0 for r in fit.cv_results_) or top["val_rank1"] == 1.0
