"""The Gallery API: storage round trip, duplicates, person ids, the index derived from SQLite, pipelines."""

from __future__ import annotations

import hashlib
import re
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest

import nirvis_test_plugin as plug
from nirvis.gallery import (EmptyGalleryError, EnrollReport, Gallery, GalleryConfig, GalleryError, Identification,
                            IndexConfig, Match, PersonIdError, PipelineMismatchError)
from nirvis.gallery.index import INDEX_FILE, VectorIndex, read_index_header
from nirvis.gallery.store import DB_FILE, vector_blob, vector_hash


def probe_of(faces, person: str, i: int = 0, seed: int = 7) -> np.ndarray:
    """A noisy copy of one enrolled synthetic face, gray as a NIR probe would be."""
    img = plug.texture(0 + 1000 * int(person[1:]) + i)
    return plug.noisy(img, seed)[:, :, 0]


def db(g: Gallery) -> sqlite3.Connection:
    return sqlite3.connect(g.folder / DB_FILE)


def test_round_trip(tmp_path, faces, gallery):
    g = gallery
    con = db(g)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    rows = con.execute("SELECT person, source, sha256, enrolled_at, fingerprint, vector, face FROM faces").fetchall()
    assert len(rows) == 6
    for person, source, sha, when, fp, blob, face in rows:
        assert Path(source).is_absolute() and Path(source) in faces[person]
        assert sha == hashlib.sha256(Path(source).read_bytes()).hexdigest()
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", when)
        assert fp == g.fingerprint and fp.startswith("test-pixels:")
        v = np.frombuffer(blob, dtype="<f4")
        assert v.shape == (plug.DIM,) and abs(np.linalg.norm(v) - 1) < 1e-5
        assert (g.folder / face).is_file()
    g.close()

    with Gallery.open(tmp_path / "g") as g2:
        assert [p["person"] for p in g2.people()] == ["p000", "p001", "p002"]
        assert all(p["images"] == 2 for p in g2.people())
        res = g2.identify(probe_of(faces, "p001", 1), top=5, source="night.png", aligned=True)
        assert isinstance(res, Identification)
        assert res.probe == "night.png"
        assert [m.person for m in res.matches][0] == "p001"
        assert len(res.matches) == 3 and len({m.person for m in res.matches}) == 3  # one entry per person
        assert all(isinstance(m, Match) for m in res.matches)
        assert res.matches[0].path == str(faces["p001"][1].absolute())
        assert res.matches[0].score > 0.9 and res.matches[0].score >= res.matches[1].score
        assert res.aligned.shape == (224, 224, 3) and res.aligned.dtype == np.uint8
        assert res.hallucinated is None
        # no built-in threshold for this embedder: ranked, no decision
        assert res.decision == {"person": None, "threshold": None, "far": None}
        g2.set_threshold(0.5, far=0.01, source="test")
        d = g2.identify(probe_of(faces, "p001", 1), top=2, aligned=True).to_dict()
        assert set(d) == {"probe", "matches", "decision"}
        assert d["decision"] == {"person": "p001", "threshold": 0.5, "far": 0.01}
        assert len(d["matches"]) == 2 and set(d["matches"][0]) == {"person", "score", "path"}
        g2.set_threshold(0.999999)
        assert g2.identify(probe_of(faces, "p001", 1), aligned=True).decision["person"] is None
        st = g2.stats()
        assert st["people"] == 3 and st["images"] == 6 and st["index"] == "flat" and st["index_rows"] == 6
        assert st["embedder"] == "test-pixels" and st["fingerprint"] == g2.fingerprint
        assert st["threshold"] == 0.999999 and st["size_bytes"] > 0
        assert g2.check()["ok"]


def test_default_threshold_of_a_known_embedder(tmp_path):
    g = Gallery.create(tmp_path / "g", embedder="dlib")
    with g:
        t = g.threshold
        assert t["threshold"] == pytest.approx(0.9203) and t["far"] == 0.01 and "built-in" in t["source"]
    with Gallery.create(tmp_path / "g2", embedder="dlib", threshold=None) as g2:
        assert g2.threshold["threshold"] is None


def test_duplicates_are_skipped_and_reported(tmp_path, faces, gallery):
    g = gallery
    copy = tmp_path / "copy_of_p000.png"
    copy.write_bytes(faces["p000"][0].read_bytes())
    new = plug.write_png(tmp_path / "new.png", plug.texture(999))
    rep = g.enroll([("p009", copy), ("p009", new), ("p010", new), ("p001", faces["p001"][0])], aligned=True)
    assert rep.enrolled == [("p009", str(new.absolute()))]
    assert ("p009", str(copy.absolute()), "p000") in rep.duplicates
    assert ("p010", str(new.absolute()), "p009") in rep.duplicates  # twice in one batch: the first one wins
    assert ("p001", str(faces["p001"][0].absolute()), "p001") in rep.duplicates
    assert rep.failures == []
    d = rep.to_dict()
    assert d["counts"] == {"enrolled": 1, "duplicates": 3, "failures": 0}
    assert {"person", "path", "existing_person"} == set(d["duplicates"][0])
    n = db(g).execute("SELECT count(*), count(DISTINCT sha256) FROM faces").fetchone()
    assert n == (7, 7)
    # uploads: the caller's sha256
    img = plug.texture(4242)
    sha = "ab" * 32
    r1 = g.enroll_images([("p020", img, "upload:a.png", sha), ("p020", img, "upload:b.png", sha)], aligned=True)
    assert [p for p, _ in r1.enrolled] == ["p020"] and len(r1.duplicates) == 1
    r2 = g.enroll_images([("p021", img, "upload:c.png", sha)], aligned=True)
    assert r2.enrolled == [] and r2.duplicates == [("p021", "upload:c.png", "p020")]


@pytest.mark.parametrize("bad", ["", "a b", "../etc", "-x", ".hidden", "x" * 129, "é", "a/b", 7, None])
def test_person_ids_are_validated(gallery, faces, bad):
    with pytest.raises(PersonIdError, match=re.escape(repr(bad))):
        gallery.enroll([("p005", faces["p000"][0]), (bad, faces["p000"][1])], aligned=True)
    assert len(gallery.people()) == 3  # nothing of the batch went in
    with pytest.raises(PersonIdError):
        gallery.enroll_images([(bad, plug.texture(1), "u", "0" * 64)])
    with pytest.raises(PersonIdError):
        gallery.remove(bad)


def test_good_person_ids_and_bad_sha(gallery):
    rep = gallery.enroll_images([("A.b_c-9", plug.texture(77), "u", "1" * 64)], aligned=True)
    assert rep.enrolled == [("A.b_c-9", "u")]
    with pytest.raises(GalleryError, match="sha256 must be 64"):
        gallery.enroll_images([("x", plug.texture(78), "u", "XYZ")])


def test_empty_gallery_is_a_clear_error(tmp_path):
    with Gallery.create(tmp_path / "g", embedder="test-pixels") as g:
        with pytest.raises(EmptyGalleryError, match="the gallery is empty; enrol faces first"):
            g.identify(plug.texture(1), aligned=True)
        assert g.people() == [] and g.stats()["images"] == 0


def test_failures_are_listed_and_the_rest_goes_in(tmp_path, gallery):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG not really")
    small = plug.write_png(tmp_path / "small.png", plug.texture(5, size=100))
    good = plug.write_png(tmp_path / "good.png", plug.texture(6))
    rep = gallery.enroll([("q", corrupt), ("q", tmp_path / "missing.png"), ("q", small), ("q", good)], aligned=True)
    assert rep.enrolled == [("q", str(good.absolute()))]
    reasons = dict(rep.failures)
    assert "unreadable or corrupt" in reasons[str(corrupt.absolute())]
    assert "no such image file" in reasons[str(tmp_path / "missing.png")]
    assert "must be 224x224" in reasons[str(small.absolute())]


def test_no_face_is_a_failure_not_an_error(tmp_path, gallery):
    tiny = plug.write_png(tmp_path / "tiny.png", np.full((6, 6, 3), 128, np.uint8))  # fails fast: too small
    rep = gallery.enroll([("q", tiny)])
    assert rep.enrolled == [] and "too small to hold a face" in rep.failures[0][1]
    from nirvis.errors import NoFaceError

    with pytest.raises(NoFaceError, match="too small to hold a face"):
        gallery.identify(tiny)


def test_create_and_open_refuse_what_is_not_a_gallery(tmp_path, gallery):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    with pytest.raises(GalleryError, match="exists and is not empty"):
        Gallery.create(tmp_path / "full", embedder="test-pixels")
    with pytest.raises(GalleryError, match="already a gallery"):
        Gallery.create(gallery.folder, embedder="test-pixels")
    (tmp_path / "file").write_text("x")
    with pytest.raises(GalleryError, match="is a file"):
        Gallery.create(tmp_path / "file", embedder="test-pixels")
    with pytest.raises(GalleryError, match="not a nirvis gallery"):
        Gallery.open(tmp_path / "full")
    with pytest.raises(GalleryError, match="no such gallery folder"):
        Gallery.open(tmp_path / "nowhere")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / DB_FILE).write_bytes(b"garbage" * 100)
    with pytest.raises(GalleryError, match="not a usable SQLite database"):
        Gallery.open(tmp_path / "bad")
    with pytest.raises(GalleryError, match="unknown embedder 'nope'"):
        Gallery.create(tmp_path / "new", embedder="nope")
    assert not (tmp_path / "new").exists()
    assert not list(tmp_path.glob(".new.creating-*"))  # a failed creation leaves nothing behind
    (tmp_path / "empty").mkdir()
    Gallery.create(tmp_path / "empty", embedder="test-pixels").close()  # an empty folder is fine


# -- the index is derived from SQLite -------------------------------------------------------------------
def _index_ids(g: Gallery) -> np.ndarray:
    idx = VectorIndex.load(g.folder / INDEX_FILE, g.dim, g.fingerprint, g.config.index)
    assert idx is not None
    return idx.ids()


def _db_ids(g: Gallery) -> np.ndarray:
    return np.array(sorted(r[0] for r in db(g).execute("SELECT id FROM faces")), dtype=np.int64)


def _tamper_delete(path: Path) -> None:
    path.unlink()


def _tamper_truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def _tamper_flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-50] ^= 0xFF
    path.write_bytes(bytes(data))


def _tamper_garbage(path: Path) -> None:
    path.write_bytes(b"not an index")


@pytest.mark.parametrize("tamper", [_tamper_delete, _tamper_truncate, _tamper_flip, _tamper_garbage])
def test_damaged_index_file_is_rebuilt(tmp_path, faces, gallery, tamper):
    gallery.close()
    tamper(tmp_path / "g" / INDEX_FILE)
    with Gallery.open(tmp_path / "g") as g:
        assert g.identify(probe_of(faces, "p002"), aligned=True).matches[0].person == "p002"
        assert g.check()["ok"]
        assert np.array_equal(_index_ids(g), _db_ids(g))


def _insert_behind_its_back(g: Gallery, person: str, vec: np.ndarray, sha: str) -> None:
    blob = vector_blob(vec)
    con = db(g)
    with con:
        con.execute("INSERT INTO faces (person, source, sha256, enrolled_at, fingerprint, vector, vhash) "
                    "VALUES (?, 'x', ?, '2026-01-01T00:00:00Z', ?, ?, ?)",
                    (person, sha, g.fingerprint, blob, vector_hash(blob)))


def test_rows_added_or_removed_behind_its_back(tmp_path, faces, gallery):
    g = gallery
    g.close()
    header = read_index_header(tmp_path / "g" / INDEX_FILE)
    assert header["state"]["rows"] == 6
    # a row committed without the index being written (what a kill after COMMIT leaves)
    emb = plug.PixelEmbedder()
    from nirvis.gallery.gallery import _aligned_face

    ghost = plug.texture(31337)
    vec = emb.embed([_aligned_face(ghost, "ghost")])[0]
    _insert_behind_its_back(g, "ghost", vec, "f" * 64)
    with Gallery.open(tmp_path / "g") as g2:
        assert g2.identify(ghost, aligned=True, modality="vis").matches[0].person == "ghost"
        assert g2.check()["ok"]
    assert read_index_header(tmp_path / "g" / INDEX_FILE)["state"]["rows"] == 7
    # rows deleted behind its back: the index must not return them
    con = db(g)
    with con:
        con.execute("DELETE FROM faces WHERE person = 'p000'")
    with Gallery.open(tmp_path / "g") as g3:
        res = g3.identify(probe_of(faces, "p000"), aligned=True, top=10)
        assert "p000" not in [m.person for m in res.matches]
        assert np.array_equal(_index_ids(g3), _db_ids(g3))
    # a vector changed behind its back: the full check finds it
    with con:
        con.execute("UPDATE faces SET vector = ? WHERE person = 'ghost'", (vector_blob(-vec),))
    with Gallery.open(tmp_path / "g") as g4:
        problems = g4.check()["problems"]
        assert any("does not match its stored hash" in p for p in problems)


def test_another_connection_sees_new_enrolments(tmp_path, faces, gallery):
    service = Gallery.open(tmp_path / "g")  # e.g. the web service, open all along
    assert service.identify(probe_of(faces, "p001"), aligned=True).matches[0].person == "p001"
    newcomer = plug.write_png(tmp_path / "newcomer.png", plug.texture(555))
    with Gallery.open(tmp_path / "g") as cli:  # e.g. `nirvis enroll` in another process
        assert len(cli.enroll([("newcomer", newcomer)], aligned=True).enrolled) == 1
    res = service.identify(plug.noisy(plug.texture(555), 3), aligned=True, modality="vis")
    assert res.matches[0].person == "newcomer"
    service.remove("newcomer")
    with Gallery.open(tmp_path / "g") as again:
        assert "newcomer" not in [p["person"] for p in again.people()]
    service.close()


@pytest.mark.parametrize("approx", ["hnsw", "ivf"])
def test_approximate_index_above_the_configured_size(tmp_path, approx):
    files = plug.people_folder(tmp_path / "f", 20, 2)
    cfg = GalleryConfig(index=IndexConfig(exact_max=10, approx=approx))
    with Gallery.create(tmp_path / "g", embedder="test-pixels", config=cfg) as g:
        g.enroll([(p, f) for p, fs in files.items() for f in fs], aligned=True)
        assert g.stats()["index"] == approx
        assert g.identify(plug.noisy(plug.texture(1000 * 7 + 1), 2), aligned=True).matches[0].person == "p007"
        assert g.remove("p007") == 2
        assert "p007" not in [m.person for m in g.identify(plug.texture(7001), aligned=True, top=20).matches]
        assert g.check()["ok"]
    with Gallery.open(tmp_path / "g") as g:
        assert g.stats()["index"] == approx and g.stats()["index_rows"] == 38
        g.set_index_config(IndexConfig(exact_max=1000))
        assert g.stats()["index"] == "flat"


def test_remove_and_face_image(tmp_path, faces, gallery):
    g = gallery
    kept = [g.folder / r[0] for r in db(g).execute("SELECT face FROM faces WHERE person = 'p000'")]
    assert all(k.is_file() for k in kept)
    assert g.remove("p000") == 2
    assert not any(k.exists() for k in kept)
    assert [p["person"] for p in g.people()] == ["p001", "p002"]
    assert "p000" not in [m.person for m in g.identify(probe_of(faces, "p000"), aligned=True).matches]
    with pytest.raises(GalleryError, match="no person 'p000'"):
        g.remove("p000")
    img = g.face_image("p001")
    assert img.parent.parent.name == "faces" and img.suffix == ".png"
    import cv2

    assert cv2.imread(str(img)).shape == (224, 224, 3)
    with pytest.raises(GalleryError, match="no person 'zz'"):
        g.face_image("zz")


def test_identify_from_several_threads(tmp_path, faces, gallery):
    g = gallery
    errors: list[BaseException] = []
    results: list[str] = []

    def probe(k: int) -> None:
        try:
            for _ in range(8):
                person = f"p00{k % 3}"
                results.append(g.identify(probe_of(faces, person, seed=k), aligned=True).matches[0].person == person)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def enrol() -> None:
        try:
            for i in range(5):
                g.enroll_images([(f"t{i}", plug.texture(9000 + i), f"u{i}", hashlib.sha256(bytes([i])).hexdigest())],
                                aligned=True)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=probe, args=(k,)) for k in range(6)] + [threading.Thread(target=enrol)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(results) == 48 and all(results)
    assert g.check()["ok"] and g.stats()["images"] == 11


# -- the pipeline --------------------------------------------------------------------------------------
def test_another_pipeline_is_refused(tmp_path, faces, gallery, monkeypatch):
    gallery.close()
    with pytest.raises(PipelineMismatchError, match=r"embedder: the gallery uses 'test-pixels' .* not 'dlib'"):
        Gallery.open(tmp_path / "g", embedder="dlib")
    with pytest.raises(PipelineMismatchError, match="the gallery has no embedding model"):
        Gallery.open(tmp_path / "g", embedding=tmp_path / "m")
    with pytest.raises(PipelineMismatchError, match="the gallery has no hallucination model"):
        Gallery.open(tmp_path / "g", hallucination=tmp_path / "h")
    Gallery.open(tmp_path / "g", embedder="test-pixels").close()  # its own is fine
    with Gallery.open(tmp_path / "g") as g:
        with pytest.raises(PipelineMismatchError, match="not comparable"):
            g.search(np.ones(plug.DIM) / np.sqrt(plug.DIM), fingerprint="dlib-resnet128:0000")
    # the embedder's weights or settings changed since the gallery was made
    monkeypatch.setattr(plug.PixelEmbedder, "config", lambda self: {"version": 2})
    with Gallery.open(tmp_path / "g") as g:
        with pytest.raises(PipelineMismatchError, match="fingerprint .* but the one found now has fingerprint"):
            g.identify(probe_of(faces, "p000"), aligned=True)
        with pytest.raises(PipelineMismatchError):
            g.enroll([("p009", plug.write_png(tmp_path / "new.png", plug.texture(4321)))], aligned=True)


def _embedding_file(tmp_path: Path, fingerprint: str, k: int = 16) -> Path:
    from nirvis.embedding.io import LinearEmbedding, save_embedding

    rng = np.random.default_rng(0)
    model = LinearEmbedding(rng.standard_normal((k, plug.DIM)), np.zeros(plug.DIM), method="pca",
                            embedder_fingerprint=fingerprint)
    save_embedding(model, tmp_path / "emb" / "model", embedder_fingerprint=fingerprint)
    return tmp_path / "emb" / "model"


def _hallucination_folder(tmp_path: Path) -> Path:
    import torch

    from nirvis.hallucination.io import HallucinationModel, save_model
    from nirvis.hallucination.nets import ChannelNetSpec, HallucinationNets

    spec = ChannelNetSpec(layers=4, wide=2, narrow=2, kernel=3)
    torch.manual_seed(0)
    nets = HallucinationNets({"y": spec, "cb": spec, "cr": spec}).eval()
    ref = {"nir_mean": 100.0, "nir_std": 30.0, "vis_mean": [100.0] * 3, "vis_std": [40.0] * 3}
    return save_model(tmp_path / "hal", HallucinationModel(nets=nets, reference=ref, meta={"train_people": ["x"]}))


def test_embedding_and_hallucination_models_are_recorded_and_applied(tmp_path, faces):
    fp = plug.PixelEmbedder().fingerprint
    emb = _embedding_file(tmp_path, fp)
    hal = _hallucination_folder(tmp_path)
    g = Gallery.create(tmp_path / "g", embedder="test-pixels", embedding=emb, hallucination=hal)
    with g:
        assert g.dim == 16 and "+pca:" in g.fingerprint
        assert (g.folder / "models" / "embedding" / "model.npz").is_file()
        assert (g.folder / "models" / "hallucination" / "weights.safetensors").is_file()
        assert g.threshold["threshold"] is None  # no built-in threshold for a learned pipeline
        g.enroll([(p, f) for p, fs in faces.items() for f in fs], aligned=True)
        nir = g.identify(probe_of(faces, "p001"), aligned=True)
        assert nir.hallucinated is not None and nir.hallucinated.shape == (224, 224, 3)
        assert len(nir.matches) == 3
        vis = g.identify(plug.texture(1000), aligned=True, modality="vis")
        assert vis.hallucinated is None and vis.matches[0].person == "p001"
        assert vis.matches[0].score == pytest.approx(1.0, abs=1e-4)
    # the same models are accepted when named again; other ones are refused
    Gallery.open(tmp_path / "g", embedding=emb, hallucination=hal, embedder="test-pixels").close()
    other = _embedding_file(tmp_path / "other", fp, k=8)
    with pytest.raises(PipelineMismatchError, match="is not the gallery's embedding model"):
        Gallery.open(tmp_path / "g", embedding=other)
    # the gallery is self-contained: the originals can go
    import shutil

    shutil.rmtree(tmp_path / "emb")
    shutil.rmtree(hal)
    with Gallery.open(tmp_path / "g") as g:
        assert g.identify(probe_of(faces, "p002"), aligned=True).matches
    # a copy changed inside the gallery is refused on use
    (tmp_path / "g" / "models" / "embedding" / "model.npz").write_bytes(b"x")
    with Gallery.open(tmp_path / "g") as g:
        with pytest.raises(GalleryError, match="changed since the gallery was created"):
            g.identify(probe_of(faces, "p002"), aligned=True)


def test_an_embedding_of_another_embedder_is_refused_at_creation(tmp_path):
    emb = _embedding_file(tmp_path, "dlib-resnet128:ff355b2f75")
    with pytest.raises(GalleryError, match="trained on features of embedder 'dlib-resnet128:ff355b2f75'"):
        Gallery.create(tmp_path / "g", embedder="test-pixels", embedding=emb)
    assert not (tmp_path / "g").exists() and not list(tmp_path.glob(".g.creating-*"))


def test_enroll_report_to_dict_is_json():
    import json

    rep = EnrollReport(enrolled=[("a", "x")], duplicates=[("b", "y", "a")], failures=[("z", "no face")])
    assert json.loads(json.dumps(rep.to_dict()))["failures"] == [{"path": "z", "reason": "no face"}]


def _tiny_onnx(path: Path, seed: int = 0) -> Path:
    """112x112 RGB -> 16x16 average pool -> 8-D linear features (an ArcFace-shaped network, tiny)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(seed).standard_normal((3 * 7 * 7, 8)).astype(np.float32)
    nodes = [helper.make_node("AveragePool", ["image"], ["p"], kernel_shape=[16, 16], strides=[16, 16]),
             helper.make_node("Flatten", ["p"], ["f"], axis=1), helper.make_node("MatMul", ["f", "W"], ["features"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                            ["N", 3, 112, 112])],
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 8])],
                              [numpy_helper.from_array(w, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, path)
    return path


def test_an_onnx_embedder_is_copied_into_the_gallery(tmp_path, faces):
    src = _tiny_onnx(tmp_path / "net.onnx")
    with Gallery.create(tmp_path / "g", embedder=f"onnx:{src}") as g:
        assert g.pipeline["embedder"] == "onnx:models/embedder/net.onnx" and g.dim == 8
        assert (g.folder / "models" / "embedder" / "net.onnx").read_bytes() == src.read_bytes()
    Gallery.open(tmp_path / "g", embedder=f"onnx:{src}").close()  # the same file: accepted
    other = _tiny_onnx(tmp_path / "other.onnx", seed=1)
    with pytest.raises(PipelineMismatchError, match="is not the ONNX file the gallery was made with"):
        Gallery.open(tmp_path / "g", embedder=f"onnx:{other}")
    src.unlink()  # the gallery works from its copy
    with Gallery.open(tmp_path / "g") as g:
        g.enroll([(p, f) for p, fs in faces.items() for f in fs], aligned=True)
        assert g.identify(plug.texture(1001), aligned=True, modality="vis").matches[0].person == "p001"
