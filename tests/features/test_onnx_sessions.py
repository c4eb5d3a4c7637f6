"""OnnxEmbedder's sessions: one per model and settings in a process, none pickled, threads chosen on purpose."""

from __future__ import annotations

import multiprocessing
import os
import pickle

import numpy as np
import pytest

pytest.importorskip("onnx")

from nirvis.features import onnx as onnx_mod  # noqa: E402
from nirvis.features.onnx import OnnxEmbedder, session_threads  # noqa: E402

from .test_onnx import make_face, make_model  # noqa: E402


def test_pickled_embedder_reuses_the_process_session_without_hashing_again(tmp_path, monkeypatch):
    path, _, _ = make_model(tmp_path / "net.onnx")
    emb = OnnxEmbedder(path, intra_op_num_threads=1).load()
    faces = [make_face(s) for s in range(3)]
    want = emb.embed(faces)
    blob = pickle.dumps(emb)  # what Recognizer.featurize sends with every chunk of work
    monkeypatch.setattr(onnx_mod, "file_digest", lambda p: pytest.fail("the model file was hashed again"))
    copies = [pickle.loads(blob), pickle.loads(blob)]
    assert all(c._session is None for c in copies)  # sessions are not pickled
    for c in copies:
        np.testing.assert_array_equal(c.embed(faces), want)
        assert c.fingerprint == emb.fingerprint
    assert copies[0]._session is copies[1]._session is emb._session


def test_a_model_changed_on_disk_after_loading_is_refused(tmp_path):
    path, _, _ = make_model(tmp_path / "net.onnx")
    blob = pickle.dumps(OnnxEmbedder(path).load())
    make_model(path, seed=1)  # other weights, same name and size
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    with pytest.raises(ValueError, match=r"net\.onnx changed on disk since it was loaded"):
        pickle.loads(blob).embed([make_face(0)])


def test_sessions_are_per_settings_and_the_thread_count_is_set(tmp_path):
    path, _, _ = make_model(tmp_path / "net.onnx")
    one, two = OnnxEmbedder(path, intra_op_num_threads=1).load(), OnnxEmbedder(path, intra_op_num_threads=2).load()
    assert one._session is not two._session
    assert one._session is OnnxEmbedder(path, intra_op_num_threads=1).load()._session
    # ONNX Runtime reports the options it was given
    assert one._session.get_session_options().intra_op_num_threads == 1
    assert two._session.get_session_options().intra_op_num_threads == 2
    assert two._session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
    faces = [make_face(s) for s in range(4)]
    np.testing.assert_allclose(one.embed(faces), two.embed(faces), atol=1e-6)
    assert one.fingerprint == two.fingerprint  # threads do not change the features
    with pytest.raises(ValueError, match="intra_op_num_threads must be a positive int or None"):
        OnnxEmbedder(path, intra_op_num_threads=0)


def test_automatic_threads_are_one_in_a_worker_process(monkeypatch):
    monkeypatch.setattr(multiprocessing, "parent_process", lambda: None)
    assert session_threads() >= 1
    main = session_threads()
    monkeypatch.setattr(multiprocessing, "parent_process", lambda: object())  # as in a worker process
    assert session_threads() == 1
    assert main == len(os.sched_getaffinity(0))


def _threads_in_child(path: str) -> int:
    emb = OnnxEmbedder(path).load()
    return int(emb._session.get_session_options().intra_op_num_threads)


@pytest.mark.slow
def test_a_spawned_worker_opens_its_session_with_one_thread(tmp_path):
    from concurrent.futures import ProcessPoolExecutor

    path, _, _ = make_model(tmp_path / "net.onnx")
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        assert pool.submit(_threads_in_child, str(path)).result(timeout=120) == 1
