"""evaluate_splits: plain configurations and configurations whose features depend on the split (``H``)."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from nirvis.datasets.base import Sample, Split
from nirvis.evaluation.protocols import SplitConfig, evaluate_splits
from nirvis.pipeline import FeatureSet


def _sample(person: str, modality: str, k: int) -> Sample:
    return Sample(person, modality, Path(f"/nowhere/{person}-{modality}-{k}.png"), f"{person}/{modality}/{k}")


def _features(samples, scramble_nir: bool, rng) -> FeatureSet:
    """Features near e_p for person p; with ``scramble_nir`` the NIR features carry no identity."""
    d = 8
    feats = []
    for s in samples:
        v = np.zeros(d)
        v[int(s.person[1:])] = 1.0
        if scramble_nir and s.modality == "nir":
            v = rng.standard_normal(d)
        feats.append(v + 0.05 * rng.standard_normal(d))
    return FeatureSet(list(samples), np.array(feats, np.float32), np.ones(len(samples), bool), ["t"] * len(samples))


def test_split_config_brings_its_own_features_per_split() -> None:
    rng = np.random.default_rng(0)
    people = [f"p{i}" for i in range(6)]
    samples = [_sample(p, m, k) for p in people for m in ("nir", "vis") for k in range(2)]
    splits = []
    for name, test in (("a", people[:3]), ("b", people[3:])):
        tr = tuple(s for s in samples if s.person not in test)
        gal = tuple(s for s in samples if s.person in test and s.modality == "vis" and s.capture_id.endswith("0"))
        pr = tuple(s for s in samples if s.person in test and s.modality == "nir")
        splits.append(Split(name, tr, gal, pr))
    raw = _features(samples, scramble_nir=True, rng=rng)  # raw NIR->VIS matching is chance
    fixed = _features(samples, scramble_nir=False, rng=rng)  # as if NIR were turned into VIS
    calls = []

    def per_split(split):
        calls.append(split.name)
        return fixed

    report = evaluate_splits("toy", splits, raw, {"raw": None, "H": SplitConfig(per_split)})
    by = {r["config"]: r for r in report.results}
    assert calls == ["a", "b"]
    assert by["H"]["rank1_mean"] == 1.0 and by["H"]["n_splits"] == 2
    assert by["raw"]["rank1_mean"] < by["H"]["rank1_mean"]


def test_an_empty_gallery_names_the_split() -> None:
    import dataclasses

    import pytest

    rng = np.random.default_rng(0)
    samples = [_sample(f"p{i}", m, k) for i in range(4) for m in ("nir", "vis") for k in range(2)]
    gal = tuple(s for s in samples if s.person in ("p2", "p3") and s.modality == "vis")
    split = Split("s0", tuple(s for s in samples if s.person in ("p0", "p1")), gal,
                  tuple(s for s in samples if s.person in ("p2", "p3") and s.modality == "nir"))
    fs = _features(samples, scramble_nir=False, rng=rng)
    ok = np.array([s not in gal for s in samples])
    failed = dataclasses.replace(fs, ok=ok, features=np.where(ok[:, None], fs.features, np.nan))
    msg = r"toy split s0: the gallery is empty \(4 VIS gallery image\(s\), none aligned\)"
    with pytest.raises(ValueError, match=msg):
        evaluate_splits("toy", [split], failed, {"pca": lambda X, y, m: None})


def test_fit_embedding_refuses_a_misspelt_parameter() -> None:
    import pytest

    from nirvis.evaluation.configs import fit_embedding

    X, y = np.random.default_rng(0).random((20, 10)), np.repeat(np.arange(5), 4)
    assert fit_embedding("pca", X, y, n_components=3).components_.shape == (3, 10)
    with pytest.raises(ValueError, match="has no parameter n_componets"):
        fit_embedding("pca", X, y, n_componets=3)


def _two_trained_two_tested(first_vis_only: bool = False) -> tuple[Split, FeatureSet]:
    """p0, p1 train; p2, p3 are tested (gallery: their VIS images, or only the first); clean features."""
    samples = [_sample(f"p{i}", m, k) for i in range(4) for m in ("nir", "vis") for k in range(2)]
    gallery = tuple(s for s in samples if s.person in ("p2", "p3") and s.modality == "vis"
                    and (not first_vis_only or s.capture_id.endswith("0")))
    split = Split("s0", tuple(s for s in samples if s.person in ("p0", "p1")), gallery,
                  tuple(s for s in samples if s.person in ("p2", "p3") and s.modality == "nir"))
    return split, _features(samples, scramble_nir=False, rng=np.random.default_rng(0))


def test_a_transform_that_gives_nan_names_the_split_and_configuration() -> None:
    import pytest

    split, fs = _two_trained_two_tested()

    class Broken:
        def transform(self, X):
            return np.full_like(X, np.nan)

    with pytest.raises(ValueError, match=r"toy split s0, configuration 'broken': .* not finite"):
        evaluate_splits("toy", [split], fs, {"broken": lambda X, y, m: Broken()})


def test_failed_gallery_images_are_counted_in_the_report() -> None:
    import dataclasses

    split, fs = _two_trained_two_tested(first_vis_only=True)
    ok = np.array([s is not split.gallery[0] for s in fs.samples])
    failed = dataclasses.replace(fs, ok=ok, features=np.where(ok[:, None], fs.features, np.nan))
    row = evaluate_splits("toy", [split], failed, {"raw": None, "pca": lambda X, y, m: _Identity()}).results
    for r in row:
        assert r["n_gallery_failed"] == 1 and r["n_failed_alignment"] == 0
        assert r["rank1_mean"] == 0.5  # p2's two probes lost their gallery image: misses


class _Identity:
    def transform(self, X):
        return X


def test_a_failing_configuration_can_be_recorded_while_the_others_go_on() -> None:
    import pytest

    split, fs = _two_trained_two_tested()

    def too_few(X, y, m):
        raise ValueError("needs at least 6 people")

    configs = {"raw": None, "lowrank": too_few, "pca": lambda X, y, m: _Identity()}
    with pytest.raises(ValueError, match=r"toy split s0, configuration 'lowrank': needs at least 6 people"):
        evaluate_splits("toy", [split], fs, configs)
    rows = {r["config"]: r for r in evaluate_splits("toy", [split], fs, configs, on_error="record").results}
    assert list(rows) == ["raw", "lowrank", "pca"]
    assert rows["lowrank"]["error"].endswith("needs at least 6 people") and np.isnan(rows["lowrank"]["rank1_mean"])
    assert rows["raw"]["rank1_mean"] == rows["pca"]["rank1_mean"] == 1.0 and "error" not in rows["pca"]


def _paired_split(n_people: int = 6, offset: float = 0.0):
    """A split of ``n_people`` with simultaneous NIR/VIS captures (``pair_id``): the NIR features are the VIS
    ones of the same capture moved by ``offset`` along one shared axis (a spectrum gap), plus noise."""
    rng = np.random.default_rng(3)
    d = n_people + 2
    samples, feats = [], []
    for i in range(n_people):
        for k in range(3):
            vis = Sample(f"p{i}", "vis", Path(f"/n/{i}-{k}v.png"), f"{i}/{k}/vis", pair_id=f"{i}/{k}/nir")
            nir = Sample(f"p{i}", "nir", Path(f"/n/{i}-{k}n.png"), f"{i}/{k}/nir", pair_id=f"{i}/{k}/vis")
            v = np.eye(d)[i] + 0.3 * rng.standard_normal(d)
            samples += [vis, nir]
            feats += [v, v + offset * np.eye(d)[-1] + 0.3 * rng.standard_normal(d)]
    fs = FeatureSet(samples, np.array(feats, np.float32), np.ones(len(samples), bool), ["t"] * len(samples))
    test = {f"p{i}" for i in range(n_people // 2)}
    train = tuple(s for s in samples if s.person not in test)
    gallery = tuple(s for s in samples if s.person in test and s.modality == "vis" and s.capture_id.split("/")[1] == "0")
    probes = tuple(s for s in samples if s.person in test and s.modality == "nir" and s.capture_id.split("/")[1] != "0")
    return fs, Split("s", train, gallery, probes)


def test_oracle_vis_puts_each_probes_vis_frame_in_its_place() -> None:
    from nirvis.evaluation.protocols import oracle_vis_features

    fs, split = _paired_split(offset=3.0)
    out = oracle_vis_features(fs)(split)
    idx = fs.index()
    for p in split.probes:
        np.testing.assert_array_equal(out.features[idx[p.capture_id]], fs.features[idx[p.pair_id]])
    np.testing.assert_array_equal(fs.features[idx[split.probes[0].capture_id]],
                                  _paired_split(offset=3.0)[0].features[idx[split.probes[0].capture_id]])  # fs kept
    rows = {r["config"]: r for r in evaluate_splits("toy", [split], fs, {"raw": None, "oracle-VIS": SplitConfig(
        oracle_vis_features(fs))}).results}
    assert rows["oracle-VIS"]["rank1_mean"] > rows["raw"]["rank1_mean"]
    unpaired = Split("u", split.train, split.gallery, (dataclasses.replace(split.probes[0], pair_id=None),))
    with pytest.raises(ValueError, match="1 probes of u have none"):
        oracle_vis_features(fs)(unpaired)


def test_modality_shift_row_gets_each_rows_modality() -> None:
    from nirvis.evaluation.configs import embedding_fitter

    fs, split = _paired_split(offset=3.0)  # the gap dominates raw cosine; the two means remove it
    rows = {r["config"]: r for r in evaluate_splits("toy", [split], fs, {"raw": None, "MS": embedding_fitter("ms")})
            .results}
    assert rows["MS"]["rank1_mean"] > rows["raw"]["rank1_mean"]
