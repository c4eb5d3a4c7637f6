"""The Recognizer batch path: failures are recorded and counted, results are the same with workers and cache."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from nirvis.datasets.base import Sample
from nirvis.errors import NoFaceError
from nirvis.features.base import Embedder, l2_normalize
from nirvis.features.cache import FeatureCache
from nirvis.pipeline import Recognizer


class CountingEmbedder(Embedder):
    """Cheap stand-in network: features are pooled pixels; counts how many faces it saw."""

    name = "counting"
    dim = 16

    def __init__(self):
        self.calls = 0

    def embed(self, faces):
        self.calls += len(faces)
        x = np.stack([f.rgb()[::56, ::56].astype(np.float32).reshape(-1)[:16] + 1 for f in faces])
        return l2_normalize(x)


@pytest.fixture()
def mixed_samples(rap3df_root, tmp_path):
    db = json.loads((rap3df_root / "rap3df_data_02" / "database.json").read_text())
    person = sorted(db)[0]
    cap = db[person]["front"][0]
    good_vis = tmp_path / "good.bmp"
    shutil.copy(rap3df_root / cap["rgb"], good_vis)
    good_nir = tmp_path / "good_ir.bmp"
    shutil.copy(rap3df_root / cap["ir_with_bg"], good_nir)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((120, 100, 3), 90, np.uint8)).save(blank)
    alpha = tmp_path / "alpha.png"
    Image.fromarray(np.zeros((50, 50, 4), np.uint8)).save(alpha)
    return [
        Sample("p", "vis", good_vis, "good", channel=None),
        Sample("p", "nir", good_nir, "good_ir", channel="red"),
        Sample("p", "vis", corrupt, "corrupt"),
        Sample("p", "vis", blank, "blank"),
        Sample("p", "nir", alpha, "alpha"),
        Sample("p", "nir", tmp_path / "missing.bmp", "missing"),
    ]


@pytest.mark.data
def test_failures_are_recorded_and_the_batch_goes_on(mixed_samples):
    rec = Recognizer(CountingEmbedder())
    fs = rec.featurize(mixed_samples)
    assert fs.ok.tolist() == [True, True, False, False, False, False]
    assert np.isfinite(fs.features[:2]).all() and np.isnan(fs.features[2:]).all()
    reasons = {f.capture_id: f.reason for f in fs.failures}
    assert set(reasons) == {"corrupt", "blank", "alpha", "missing"}
    assert "corrupt.png: unreadable or corrupt" in reasons["corrupt"]
    assert "blank.png: no face found" in reasons["blank"]
    assert "alpha.png: image has an alpha channel" in reasons["alpha"]
    assert "missing.bmp: no such image file" in reasons["missing"]


@pytest.mark.data
def test_cache_makes_the_second_run_free_and_identical(mixed_samples, tmp_path):
    emb = CountingEmbedder()
    rec = Recognizer(emb, cache=FeatureCache(tmp_path / "cache"))
    first = rec.featurize(mixed_samples)
    assert emb.calls == 2
    second = rec.featurize(mixed_samples)
    assert emb.calls == 2  # nothing embedded again, failures included
    np.testing.assert_array_equal(first.features, second.features)
    assert [f.reason for f in first.failures] == [f.reason for f in second.failures]
    assert first.methods == second.methods


@pytest.mark.data
def test_workers_give_the_same_result(mixed_samples):
    rec = Recognizer(CountingEmbedder())
    one = rec.featurize(mixed_samples, workers=1, chunk_size=2)
    two = rec.featurize(mixed_samples, workers=2, chunk_size=2)
    np.testing.assert_array_equal(one.features, two.features)
    assert [f.capture_id for f in one.failures] == [f.capture_id for f in two.failures]


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped"])
def test_corrupt_cache_entry_is_dropped(tmp_path, damage):
    cache = FeatureCache(tmp_path)
    cache.put("feat", "ab" * 32, feature=np.arange(64, dtype=np.float32))
    np.testing.assert_array_equal(cache.get("feat", "ab" * 32)["feature"], np.arange(64))
    path = next(tmp_path.rglob("*.npz"))
    data = bytearray(path.read_bytes())
    if damage == "garbage":
        data = bytearray(b"garbage")
    elif damage == "truncated":
        data = data[:len(data) // 2]
    else:  # a byte of the stored array: the zip's CRC no longer matches
        data[len(data) // 3] ^= 0xFF
    path.write_bytes(bytes(data))
    assert cache.get("feat", "ab" * 32) is None and not path.exists()


def test_unwritable_cache_is_skipped_with_one_warning(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cache = FeatureCache(blocker / "cache")
    with caplog.at_level("WARNING", logger="nirvis.features.cache"):
        cache.put("feat", "ab" * 32, feature=np.ones(3, np.float32))
        cache.put("feat", "cd" * 32, feature=np.ones(3, np.float32))
    assert cache.get("feat", "ab" * 32) is None
    assert len(caplog.records) == 1 and "cannot be written" in caplog.records[0].getMessage()


@pytest.mark.data
def test_unwritable_cache_does_not_fail_the_images(mixed_samples, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    fs = Recognizer(CountingEmbedder(), cache=FeatureCache(blocker / "cache")).featurize(mixed_samples)
    assert fs.ok.tolist() == [True, True, False, False, False, False]


class Invert:
    """A stand-in NIR transform (like hallucination): inverts the aligned face; counts what it saw."""

    def __init__(self, tag: str = "v1"):
        self.fingerprint = f"invert-{tag}"
        self.seen = []

    def __call__(self, faces):
        import dataclasses

        self.seen += [f.source for f in faces]
        return [dataclasses.replace(f, image=255 - f.image) for f in faces]


@pytest.mark.data
def test_nir_transform_changes_only_nir_features_and_keys_the_cache(mixed_samples, tmp_path):
    good = mixed_samples[:2]  # one VIS, one NIR
    cache = FeatureCache(tmp_path / "cache")
    plain = Recognizer(CountingEmbedder(), cache=cache).featurize(good)
    tf = Invert()
    emb = CountingEmbedder()
    rec = Recognizer(emb, cache=cache, nir_transform=tf)
    fs = rec.featurize(good)
    assert [p.endswith("good_ir.bmp") for p in tf.seen] == [True]  # only the NIR face was transformed
    np.testing.assert_array_equal(fs.features[0], plain.features[0])  # VIS: same cached feature
    assert not np.allclose(fs.features[1], plain.features[1])
    assert emb.calls == 1  # the VIS feature came from the cache, the NIR one did not
    # Aligned faces are cached: a new transform embeds again but never detects again.
    rec2 = Recognizer(CountingEmbedder(), cache=cache, nir_transform=Invert("v2"))
    class NoDetection:
        fingerprint = rec2.aligner.fingerprint

        def align(self, *a, **k):
            raise AssertionError("detected again")

    rec2.aligner = NoDetection()
    again = rec2.featurize(good)
    np.testing.assert_allclose(again.features, fs.features, atol=1e-6)
    with pytest.raises(TypeError, match="nir_transform"):
        Recognizer(CountingEmbedder(), nir_transform=lambda faces: faces)


@pytest.mark.data
def test_cached_alignment_failure_is_still_a_failure(mixed_samples, tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    blank = [mixed_samples[3]]
    first = Recognizer(CountingEmbedder(), cache=cache).featurize(blank)
    second = Recognizer(CountingEmbedder(), cache=cache, nir_transform=Invert()).featurize(blank)
    assert not first.ok[0] and not second.ok[0]
    assert first.failures[0].reason == second.failures[0].reason and "no face found" in second.failures[0].reason


def test_feature_set_updated_replaces_rows_and_failures():
    from pathlib import Path

    from nirvis.pipeline import Failure, FeatureSet

    s = [Sample("p", m, Path(f"/x/{i}.png"), f"c{i}") for i, m in enumerate(["vis", "nir", "nir"])]
    base = FeatureSet(s, np.array([[1, 0], [0, 1], [np.nan, np.nan]], np.float32), np.array([True, True, False]),
                      ["hog", "hog", ""], [Failure("c2", "/x/2.png", "no face")])
    new = Sample("q", "nir", Path("/x/9.png"), "c9")
    other = FeatureSet([s[1], s[2], new], np.array([[5, 5], [np.nan, np.nan], [7, 7]], np.float32),
                       np.array([True, False, True]), ["mmod", "", "hog"], [Failure("c2", "/x/2.png", "still none")])
    up = base.updated(other)
    assert [x.capture_id for x in up.samples] == ["c0", "c1", "c2", "c9"]
    np.testing.assert_array_equal(up.features[[0, 1, 3]], [[1, 0], [5, 5], [7, 7]])
    assert up.ok.tolist() == [True, True, False, True] and up.methods == ["hog", "mmod", "", "hog"]
    assert [f.reason for f in up.failures] == ["still none"]
    np.testing.assert_array_equal(base.features[1], [0, 1])  # the original is unchanged


@pytest.mark.data
def test_cached_features_of_another_shape_are_recomputed(mixed_samples, tmp_path):
    emb = CountingEmbedder()
    cache = FeatureCache(tmp_path / "cache")
    rec = Recognizer(emb, cache=cache)
    first = rec.featurize(mixed_samples)
    for p in (tmp_path / "cache" / "feat").rglob("*.npz"):
        with np.load(p) as z:
            entry = dict(z)
        if not str(entry["reason"]):  # a good entry, hand-edited to a 3-d feature
            np.savez(p, feature=np.ones(3, np.float32), method=entry["method"], reason=entry["reason"])
    second = rec.featurize(mixed_samples)
    assert emb.calls == 4  # the two good faces were embedded again, not read back with the wrong shape
    np.testing.assert_array_equal(first.features, second.features)


def test_two_different_samples_with_one_capture_id_are_refused(tmp_path):
    a, b = tmp_path / "a" / "001.png", tmp_path / "b" / "001.png"
    same = Sample("A", "vis", a, "001")
    rec = Recognizer(CountingEmbedder())
    with pytest.raises(ValueError, match="two different samples share capture_id '001'"):
        rec.featurize([same, Sample("B", "vis", b, "001")])
    fs = rec.featurize([same, Sample("A", "vis", a, "001")])  # the same sample twice is processed once
    assert len(fs.samples) == 1 and fs.failures[0].reason.endswith("no such image file")


def test_a_bad_channel_is_refused_when_the_sample_is_made():
    with pytest.raises(ValueError, match="channel must be None or one of gray, red, green, blue, got 'ir'"):
        Sample("p", "nir", "x.png", "x", channel="ir")


def test_a_missing_file_reads_the_same_with_and_without_a_cache(tmp_path):
    samples = [Sample("p", "vis", tmp_path / "missing.png", "m"), Sample("p", "vis", tmp_path, "dir")]
    plain = Recognizer(CountingEmbedder()).featurize(samples)
    cached = Recognizer(CountingEmbedder(), cache=FeatureCache(tmp_path / "cache")).featurize(samples)
    assert [f.reason for f in plain.failures] == [f.reason for f in cached.failures]
    assert plain.failures[0].reason == f"{tmp_path / 'missing.png'}: no such image file"


def test_an_image_dlib_cannot_take_is_one_failure_not_a_crash(tmp_path):
    # A 12 x 1601 strip made dlib's detector raise a RuntimeError inside featurize, which stopped the batch.
    strip, blank = tmp_path / "strip.png", tmp_path / "blank.png"
    Image.fromarray(np.zeros((12, 1601), np.uint8)).save(strip)
    Image.fromarray(np.full((120, 100), 90, np.uint8)).save(blank)

    class Exploding(CountingEmbedder):
        def embed(self, faces):
            raise AssertionError("no face should reach the network")

    fs = Recognizer(Exploding()).featurize([Sample("p", "vis", strip, "s"), Sample("p", "vis", blank, "b")])
    assert not fs.ok.any() and [f.capture_id for f in fs.failures] == ["s", "b"]
    assert "strip.png: no face found" in fs.failures[0].reason


def test_chunk_size_must_be_positive():
    with pytest.raises(ValueError, match="chunk_size must be a positive int, got 0"):
        Recognizer(CountingEmbedder()).featurize([], chunk_size=0)


def test_a_library_error_on_one_image_is_recorded_and_the_batch_goes_on(tmp_path, monkeypatch):
    paths = []
    for name in ("a.png", "b.png"):
        paths.append(tmp_path / name)
        Image.fromarray(np.full((120, 100), 90, np.uint8)).save(paths[-1])
    rec = Recognizer(CountingEmbedder())

    def align(image, *, source=None):
        if source.endswith("a.png"):
            raise RuntimeError("dlib: Filter windows must be small enough to fit into the padded image")
        raise NoFaceError(f"{source}: no face found")

    monkeypatch.setattr(rec.aligner, "align", align)
    fs = rec.featurize([Sample("p", "vis", p, p.name) for p in paths])
    assert [f.reason for f in fs.failures] == ["dlib: Filter windows must be small enough to fit into the padded image",
                                               f"{paths[1]}: no face found"]


def test_a_cached_failure_names_the_file_being_read_not_the_first_copy(tmp_path):
    blank = np.full((120, 100), 90, np.uint8)
    first, copy = tmp_path / "a" / "night.png", tmp_path / "b" / "copy.png"
    for p in (first, copy):
        p.parent.mkdir()
        Image.fromarray(blank).save(p)
    cache = FeatureCache(tmp_path / "cache")
    rec = Recognizer(CountingEmbedder(), cache=cache)
    rec.featurize([Sample("p", "vis", first, "a")])
    again = Recognizer(CountingEmbedder(), cache=cache).featurize([Sample("q", "vis", copy, "b")])  # same bytes
    reason = again.failures[0].reason
    assert reason.startswith(f"{copy}: no face found") and str(first) not in reason
    with pytest.raises(NoFaceError, match="copy.png: no face found"):
        rec.align_sample(Sample("q", "vis", copy, "b"))


class KeypointEmbedder(CountingEmbedder):
    """A network cut from ArcFace's keypoints: features are the keypoints it was given, so a test sees them."""

    name = "keypoints"
    dim = 10
    landmark_model = "shape68"

    def embed(self, faces):
        self.calls += len(faces)
        return np.stack([np.asarray(f.meta["keypoints5"], np.float32).reshape(-1) for f in faces])


def test_the_recognizer_aligns_with_the_embedders_landmark_model_and_refuses_another():
    from nirvis.faces.align import AlignConfig

    assert Recognizer(CountingEmbedder()).aligner.config.landmark_model == "shape5"
    assert Recognizer(KeypointEmbedder()).aligner.config.landmark_model == "shape68"
    with pytest.raises(ValueError, match="'keypoints' is cut from the landmarks of 'shape68'.*landmark_model='shape5'"):
        Recognizer(KeypointEmbedder(), align=AlignConfig())


@pytest.mark.data
def test_arcface_keypoints_survive_the_alignment_cache(mixed_samples, tmp_path):
    emb = KeypointEmbedder()
    rec = Recognizer(emb, cache=FeatureCache(tmp_path / "cache"))
    face = rec.align_sample(mixed_samples[0])  # computed and cached
    again = rec.align_sample(mixed_samples[0])  # read back from the cache
    assert face.meta["keypoints5"].shape == (5, 2)
    np.testing.assert_array_equal(face.meta["keypoints5"], again.meta["keypoints5"])
    fs = rec.featurize(mixed_samples[:2])
    assert fs.ok.all() and emb.calls == 2
    # the keypoints are in aligned pixels: eyes on the template's eye line, the mouth corners below the nose tip
    kp = fs.features[0].reshape(5, 2)
    assert abs(kp[0, 1] - 92) < 8 and abs(kp[1, 1] - 92) < 8 and kp[0, 0] < kp[1, 0]
    assert kp[3, 1] > kp[2, 1] and kp[4, 1] > kp[2, 1]


def test_an_embedder_that_does_not_say_its_landmark_model_is_aligned_by_dlibs_5_points():
    class Duck:  # not an Embedder subclass: only what the Recognizer calls
        fingerprint, dim = "duck", 2

        def embed(self, faces):
            return np.ones((len(faces), 2), np.float32) / np.sqrt(2)

    assert Recognizer(Duck()).aligner.config.landmark_model == "shape5"
