"""Saving / loading embeddings: .npz + .json, fingerprints, integrity."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from embedding_synthetic import union_of_subspaces
from nirvis.embedding import LinearEmbedding, available_embeddings, load_embedding, make_embedding, save_embedding
from nirvis.errors import ModelMismatchError

FP = "dlib-resnet128:3f2a9c01d4"


@pytest.fixture(scope="module")
def data():
    X, y, _, _ = union_of_subspaces(0, n_classes=5, dim=12, per_spectrum=6, noise=0.05)
    return X, y


def _modality(y):
    """Half of each class NIR (the synthetic data's layout: VIS rows, then NIR rows, per class)."""
    return np.where((np.arange(len(y)) % 12) >= 6, "nir", "vis")


def _fitted(method, X, y):
    params = {} if method in ("none", "ms") else {"n_components": (8, 4) if method == "lowrank" else 8}
    if method in ("lowrank", "lowrank-fixed", "itml", "lmnn"):
        params["max_iter"] = 10
    if method == "lowrank":
        params["validation_fraction"] = 0.4  # 2 of the 5 people held out to choose the settings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = make_embedding(method, **params)
        if method in ("ms", "lowrank"):
            return model.fit(X, y, modality=_modality(y))
        return model.fit(X, y)


def _transform(model, X, y, **kw):
    return model.transform(X, modality=_modality(y), **kw) if getattr(model, "modality_means_", None) is not None \
        else model.transform(X, **kw)


@pytest.mark.parametrize("method", available_embeddings())
def test_round_trip_gives_the_same_map(tmp_path, data, method):
    X, y = data
    model = _fitted(method, X, y)
    npz, js = save_embedding(model, tmp_path / "emb", FP)
    assert (npz.name, js.name) == ("emb.npz", "emb.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.json", "emb.npz"], "no temporary file left"
    loaded = load_embedding(tmp_path / "emb")
    assert isinstance(loaded, LinearEmbedding)
    assert loaded.method == method and loaded.embedder_fingerprint == FP
    np.testing.assert_allclose(_transform(loaded, X, y, fingerprint=FP), _transform(model, X, y), rtol=0, atol=0)
    meta = json.loads(js.read_text())
    assert meta["format"] == "nirvis-embedding" and meta["estimator"] == type(model).__name__
    assert meta["params"] == json.loads(json.dumps(model.get_params()))
    with np.load(npz, allow_pickle=False) as z:  # plain arrays only: reading a pickled object would raise here
        assert {"components", "mean"} <= set(z.files) and all(z[k].dtype.kind in "fiub" for k in z.files)
    if method == "ms":
        np.testing.assert_array_equal(loaded.modality_means_, model.modality_means_)
        with pytest.raises(ValueError, match="transform needs each row's modality"):
            loaded.transform(X, fingerprint=FP)
    if method in ("lowrank", "lowrank-fixed"):
        np.testing.assert_array_equal(loaded.objective_history_, model.objective_history_)
        assert meta["fit"]["stop_reason"] == model.stop_reason_


def test_features_of_another_embedder_are_refused(tmp_path, data):
    X, y = data
    save_embedding(_fitted("pca", X, y), tmp_path / "pca.npz", FP)
    loaded = load_embedding(tmp_path / "pca.json")
    with pytest.raises(ModelMismatchError, match=r"'dlib-resnet128:3f2a9c01d4'.*'arcface:0123456789'") as err:
        loaded.transform(X, fingerprint="arcface:0123456789")
    assert "pca.json" in str(err.value)
    with pytest.raises(ModelMismatchError):
        loaded.check_fingerprint("arcface:0123456789")
    loaded.check_fingerprint(FP)
    assert loaded.transform(X).shape == (len(X), 8)  # no fingerprint given: no check
    with pytest.raises(ValueError, match="X has 5 features, but LinearEmbedding is expecting 12 features"):
        loaded.transform(X[:, :5], fingerprint=FP)


def test_resaving_a_loaded_embedding_keeps_it(tmp_path, data):
    X, y = data
    save_embedding(_fitted("lowrank", X, y), tmp_path / "a", FP)
    first = load_embedding(tmp_path / "a")
    save_embedding(first, tmp_path / "b", FP)
    second = load_embedding(tmp_path / "b.npz")
    np.testing.assert_array_equal(second.components_, first.components_)
    assert second.method == "lowrank"


def test_a_mismatched_pair_is_refused(tmp_path, data):
    X, y = data
    save_embedding(_fitted("pca", X, y), tmp_path / "m", FP)
    save_embedding(_fitted("none", X, y), tmp_path / "other", FP)
    (tmp_path / "other.npz").replace(tmp_path / "m.npz")  # arrays from another save
    with pytest.raises(ValueError, match=r"m.npz is not the array file .*m.json was saved with"):
        load_embedding(tmp_path / "m")


def test_missing_and_malformed_files(tmp_path, data):
    X, y = data
    with pytest.raises(FileNotFoundError, match="nothing.json: no such embedding metadata file"):
        load_embedding(tmp_path / "nothing")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        load_embedding(tmp_path / "bad")
    (tmp_path / "alien.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not a nirvis embedding file"):
        load_embedding(tmp_path / "alien")
    save_embedding(_fitted("pca", X, y), tmp_path / "gone", FP)
    (tmp_path / "gone.npz").unlink()
    with pytest.raises(FileNotFoundError, match="gone.npz: no such file"):
        load_embedding(tmp_path / "gone")


def test_save_needs_a_fitted_model_and_a_fingerprint(tmp_path, data):
    X, y = data
    with pytest.raises(NotFittedError):
        save_embedding(make_embedding("pca"), tmp_path / "x", FP)
    with pytest.raises(ValueError, match="embedder_fingerprint must be a non-empty str, got ''"):
        save_embedding(_fitted("pca", X, y), tmp_path / "x", "")
    with pytest.raises(ValueError, match="not a nirvis embedding estimator"):
        save_embedding(np.eye(3), tmp_path / "x", FP)


def _resaved_with(tmp_path, data, arrays=None, meta_edit=None, raw_bytes=None):
    """A saved PCA embedding whose arrays (or metadata) were replaced, with the digest made to match."""
    from nirvis._io import file_digest

    X, y = data
    npz, js = save_embedding(_fitted("pca", X, y), tmp_path / "m", FP)
    if raw_bytes is not None:
        npz.write_bytes(raw_bytes)
    elif arrays is not None:
        with open(npz, "wb") as fh:
            np.savez(fh, **arrays)
    meta = json.loads(js.read_text())
    meta["arrays_sha256"] = file_digest(npz)
    if meta_edit:
        meta_edit(meta)
    js.write_text(json.dumps(meta))
    return tmp_path / "m"


def test_arrays_that_are_damaged_non_finite_or_complex_are_refused(tmp_path, data):
    comps, mean = np.ones((8, 12)), np.zeros(12)
    with pytest.raises(ValueError, match=r"m.npz: unreadable array file \(BadZipFile"):
        load_embedding(_resaved_with(tmp_path, data, raw_bytes=b"PK\x03\x04 not a zip"))
    bad = comps.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"'components' holds NaN or inf"):
        load_embedding(_resaved_with(tmp_path, data, {"components": bad, "mean": mean}))
    with pytest.raises(ValueError, match=r"'components' must be real floats of shape \(8, 12\), got complex128"):
        load_embedding(_resaved_with(tmp_path, data, {"components": comps + 1j, "mean": mean}))
    with pytest.raises(ValueError, match=r"'n_components' and 'n_features_in' must be positive integers"):
        load_embedding(_resaved_with(tmp_path, data, {"components": comps, "mean": mean},
                                     meta_edit=lambda m: m.update(n_components="8")))


def test_the_people_an_embedding_was_fitted_on_are_kept(tmp_path, data):
    X, y = data
    save_embedding(_fitted("pca", X, y), tmp_path / "m", FP, train_people=["b", "a", "a"])
    loaded = load_embedding(tmp_path / "m")
    assert loaded.train_people == ["a", "b"]
    save_embedding(loaded, tmp_path / "again", FP)  # a loaded embedding keeps them when saved again
    assert load_embedding(tmp_path / "again").train_people == ["a", "b"]
    save_embedding(_fitted("pca", X, y), tmp_path / "unknown", FP)
    assert load_embedding(tmp_path / "unknown").train_people is None
