"""The registry of known networks: lookup order, clear messages, checked and atomic installs, downloads from a
local server (never the real network), and embedders built from ``--embedder`` specs."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from nirvis.features import models as reg
from nirvis.features.models import (
    ChecksumError,
    DownloadError,
    ModelNotFoundError,
    embedder_from_spec,
    fetch_model,
    find_model,
    get_model_spec,
    install_model,
    licence_notice,
    model_status,
    search_dirs,
)


@pytest.fixture
def isolated(no_models) -> Path:
    """No real models folder is visible (``no_models`` in tests/conftest.py)."""
    return no_models


@pytest.fixture
def fake_model(tmp_path, monkeypatch) -> tuple[str, bytes]:
    """A registered model "fake-net" whose file is a few known bytes."""
    payload = b"not really a network, but its checksum is registered\n" * 50
    spec = replace(get_model_spec("edgeface-xs"), name="fake-net", filename="fake_net.onnx",
                   sha256=hashlib.sha256(payload).hexdigest(), size_bytes=len(payload), url=None)
    monkeypatch.setitem(reg.KNOWN_MODELS, "fake-net", spec)
    return "fake-net", payload


def test_known_models_carry_checksum_licence_input_and_source():
    for name in ("edgeface-xs", "edgeface-xxs"):
        spec = get_model_spec(name)
        assert len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0
        assert spec.research_only and "WebFace12M" in spec.licence and "research use only" in spec.licence
        assert spec.dim == 512 and spec.input_size == (112, 112) and spec.mean == spec.std == (127.5,) * 3
        assert spec.reference_template[0] == (38.2946, 51.6963) and len(spec.reference_template) == 5
        assert "github.com/otroshi/edgeface" in spec.source
        pre = spec.preprocess()
        assert pre.color_order == "RGB" and pre.layout == "NCHW" and pre.input_size == (112, 112)
    with pytest.raises(ValueError, match=r"unknown model 'arcface'; known models: edgeface-xs, edgeface-xxs"):
        get_model_spec("arcface")


def test_search_order_explicit_env_cache_shared_then_beside_the_data(isolated, monkeypatch):
    data = isolated / "elsewhere" / "data"
    data.mkdir(parents=True)
    monkeypatch.setenv("NIRVIS_MODELS", str(isolated / "env"))
    dirs = search_dirs(isolated / "explicit", data)
    assert dirs == [isolated / "explicit", isolated / "env", isolated / "home" / ".cache" / "nirvis" / "models",
                    (isolated / "shared" / "models").resolve(), (isolated / "elsewhere" / "models").resolve()]
    # the first folder holding the file wins
    name, payload = "edgeface-xs", b""
    for d in (isolated / "env", isolated / "elsewhere" / "models"):
        d.mkdir(parents=True)
    monkeypatch.setattr(reg, "_checked", lambda path, spec: path)  # placement only: no real file here
    (isolated / "elsewhere" / "models" / "edgeface_xs.onnx").write_bytes(payload)
    assert find_model(name, None, data) == (isolated / "elsewhere" / "models" / "edgeface_xs.onnx").resolve()
    (isolated / "env" / "edgeface_xs.onnx").write_bytes(payload)
    assert find_model(name, None, data) == isolated / "env" / "edgeface_xs.onnx"


def test_the_data_folder_found_by_default_is_used(isolated, monkeypatch):
    data = isolated / "shared" / "data"
    data.mkdir(parents=True)
    monkeypatch.setenv("NIRVIS_DATA", str(data))
    assert search_dirs()[-1] == (isolated / "shared" / "models").resolve()


def test_a_missing_model_names_the_file_every_place_and_how_to_add_it(isolated):
    with pytest.raises(ModelNotFoundError) as info:
        find_model("edgeface-xxs", isolated / "mine")
    msg = str(info.value)
    assert "file edgeface_xxs.onnx not found" in msg
    for d in search_dirs(isolated / "mine"):
        assert str(d) in msg
    assert "nirvis models add edgeface-xxs /path/to/edgeface_xxs.onnx" in msg
    assert "cannot be downloaded" in msg and "otroshi/edgeface" in msg
    assert model_status("edgeface-xxs", isolated / "mine") == (None, "missing")


def test_a_file_with_another_checksum_is_refused_with_both_digests(isolated, fake_model):
    name, payload = fake_model
    folder = isolated / "mine"
    folder.mkdir()
    (folder / "fake_net.onnx").write_bytes(payload + b"x")
    got = hashlib.sha256(payload + b"x").hexdigest()
    with pytest.raises(ChecksumError, match=f"sha256 {got}, but fake-net .* is {get_model_spec(name).sha256}"):
        find_model(name, folder)
    assert model_status(name, folder) == (folder / "fake_net.onnx", "wrong checksum")


def test_install_checks_the_checksum_and_writes_atomically(isolated, fake_model, monkeypatch):
    name, payload = fake_model
    good, bad = isolated / "good.onnx", isolated / "bad.onnx"
    good.write_bytes(payload)
    bad.write_bytes(payload[:-1])
    monkeypatch.setenv("NIRVIS_MODELS", str(isolated / "models"))
    with pytest.raises(ChecksumError) as info:
        install_model(name, bad)
    assert hashlib.sha256(payload[:-1]).hexdigest() in str(info.value)
    assert get_model_spec(name).sha256 in str(info.value) and "not added" in str(info.value)
    assert not (isolated / "models").exists() or not any((isolated / "models").iterdir())
    dst = install_model(name, good)
    assert dst == isolated / "models" / "fake_net.onnx" and dst.read_bytes() == payload
    assert find_model(name) == dst
    assert sorted(p.name for p in dst.parent.iterdir()) == ["fake_net.onnx"]  # no temporary file left
    with pytest.raises(FileNotFoundError, match="nowhere.onnx: no such file"):
        install_model(name, isolated / "nowhere.onnx")


def test_a_copy_that_comes_out_different_is_not_installed(isolated, fake_model, monkeypatch):
    name, payload = fake_model
    src = isolated / "good.onnx"
    src.write_bytes(payload)
    monkeypatch.setattr(reg.shutil, "copyfile", lambda a, b: Path(b).write_bytes(payload[:10]))
    with pytest.raises(ChecksumError, match="the copy of .*good.onnx has sha256"):
        install_model(name, src, isolated / "models")
    assert list((isolated / "models").iterdir()) == []


class _Server:
    """A local HTTP server on 127.0.0.1, in a thread, serving ``files`` (path -> bytes)."""

    def __init__(self, files: dict[str, bytes]) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _with_url(name: str, url: str, monkeypatch) -> None:
    monkeypatch.setitem(reg.KNOWN_MODELS, name, replace(reg.KNOWN_MODELS[name], url=url))


def test_fetch_downloads_verifies_and_installs(isolated, fake_model, monkeypatch):
    name, payload = fake_model
    with _Server({"/fake_net.onnx": payload, "/wrong.onnx": payload[::-1]}) as srv:
        _with_url(name, f"{srv.url}/fake_net.onnx", monkeypatch)
        dst = fetch_model(name, isolated / "models", timeout=5)
        assert dst.read_bytes() == payload and find_model(name, isolated / "models") == dst
        # another file at the address: refused with both digests, and the installed file stays
        _with_url(name, f"{srv.url}/wrong.onnx", monkeypatch)
        with pytest.raises(ChecksumError, match=hashlib.sha256(payload[::-1]).hexdigest()):
            fetch_model(name, isolated / "models", timeout=5)
        assert dst.read_bytes() == payload
        _with_url(name, f"{srv.url}/gone.onnx", monkeypatch)
        with pytest.raises(DownloadError, match="answered HTTP 404.*nirvis models add fake-net"):
            fetch_model(name, isolated / "other", timeout=5)
    assert sorted(p.name for p in (isolated / "models").iterdir()) == ["fake_net.onnx"]
    assert not (isolated / "other").exists() or list((isolated / "other").iterdir()) == []


def test_fetch_says_when_the_network_cannot_be_reached(isolated, fake_model, monkeypatch):
    name, _ = fake_model
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _with_url(name, f"http://127.0.0.1:{port}/fake_net.onnx", monkeypatch)
    with pytest.raises(DownloadError, match=r"cannot reach http://127\.0\.0\.1:\d+/fake_net\.onnx .*no network"):
        fetch_model(name, isolated / "models", timeout=2)


def test_fetch_without_an_address_says_where_to_get_the_file(isolated):
    with pytest.raises(DownloadError, match="no download address is known.*otroshi/edgeface.*nirvis models add"):
        fetch_model("edgeface-xs", isolated / "models")
    assert not (isolated / "models").exists()


def test_embedder_specs(isolated, tmp_path):
    from nirvis.features.dlib_resnet import DlibResNetEmbedder
    from nirvis.features.onnx import OnnxEmbedder

    from .test_onnx import make_model

    assert isinstance(embedder_from_spec("dlib"), DlibResNetEmbedder)
    noflip = embedder_from_spec("dlib-noflip")
    assert isinstance(noflip, DlibResNetEmbedder) and not noflip.flip and embedder_from_spec("dlib").flip
    assert noflip.fingerprint != embedder_from_spec("dlib").fingerprint  # another network for caches and models
    path, _, _ = make_model(tmp_path / "tiny.onnx")
    emb = embedder_from_spec(f"onnx:{path}")
    assert isinstance(emb, OnnxEmbedder) and emb.name == "onnx-tiny" and licence_notice(emb) is None
    with pytest.raises(ValueError, match="unknown embedder 'arcface'; use one of: dlib, dlib-noflip, edgeface-xs, "
                                         "edgeface-xxs, "
                                         "onnx:PATH"):
        embedder_from_spec("arcface")
    with pytest.raises(ValueError, match="onnx:PATH"):
        embedder_from_spec("onnx")
    with pytest.raises(FileNotFoundError, match="nowhere.onnx: no such file"):
        embedder_from_spec(f"onnx:{tmp_path / 'nowhere.onnx'}")
    with pytest.raises(ModelNotFoundError, match="nirvis models add edgeface-xs"):
        embedder_from_spec("edgeface-xs")


def test_a_known_file_given_as_onnx_path_is_that_model_with_its_notice(isolated, tmp_path, monkeypatch):
    from .test_onnx import make_model

    path, _, _ = make_model(tmp_path / "tiny.onnx")
    spec = replace(get_model_spec("edgeface-xs"), name="tiny-known", filename="tiny.onnx",
                   sha256=hashlib.sha256(path.read_bytes()).hexdigest(), size_bytes=path.stat().st_size)
    monkeypatch.setitem(reg.KNOWN_MODELS, "tiny-known", spec)
    emb = embedder_from_spec(f"onnx:{path}")
    assert emb.name == "tiny-known" and emb.fingerprint.startswith("tiny-known:")
    assert emb.preprocess == spec.preprocess()
    notice = licence_notice(emb)
    assert notice is not None and "research use only" in notice and "WebFace12M" in notice
    # the known networks are cut from ArcFace's keypoints, so their faces go through dlib's 68-point model
    assert emb.landmark_model == "shape68" and "68-point landmark model" in notice
    from nirvis.features.onnx import OnnxEmbedder

    dlib5 = OnnxEmbedder(path, spec.preprocess("dlib5"), name="tiny-known")
    assert dlib5.landmark_model == "shape5" and "68-point" not in licence_notice(dlib5)
    # found by name in the models folder, through the embedder registry too
    from nirvis.features import base
    from nirvis.features.base import get_embedder

    assert embedder_from_spec("tiny-known", tmp_path).fingerprint == emb.fingerprint
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))  # undone after the test
    reg._register_known()  # registers tiny-known under its name as well
    got = get_embedder("tiny-known", models_dir=tmp_path, batch_size=4)
    assert got.fingerprint == emb.fingerprint and got.batch_size == 4
    assert got.embed([]).shape == (0, 8) and np.isfinite(got.embed([]).sum())
