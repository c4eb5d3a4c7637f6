"""The Recognizer batch path: failures are recorded and counted, results are the same with workers and cache."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from nirvis.datasets.base import Sample
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


def test_corrupt_cache_entry_is_dropped(tmp_path):
    cache = FeatureCache(tmp_path)
    cache.put("feat", "ab" * 32, feature=np.ones(3, np.float32))
    np.testing.assert_array_equal(cache.get("feat", "ab" * 32)["feature"], np.ones(3))
    path = next(tmp_path.rglob("*.npz"))
    path.write_bytes(b"garbage")
    assert cache.get("feat", "ab" * 32) is None and not path.exists()
