"""``nirvis data fetch`` and the data folder's look-up, against archives served from a temporary folder (never
the network)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import socket
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nirvis import data as data_mod
from nirvis.cli import app
from nirvis.data import KNOWN_ARCHIVES, FetchError, fetch_dataset, find_data_root, install_archive

runner = CliRunner()
SPEC = KNOWN_ARCHIVES["rap3df"]
TOP = "rap3df-database-master"

#: A tiny RAP3DF-shaped repository: the two data folders, and what the repository also holds (code, depth data).
FILES = {
    f"{TOP}/README.md": b"# rap3df-database\n",
    f"{TOP}/main.cpp": b"int main() {}\n",
    f"{TOP}/rap3df_data_02/database.json": json.dumps(
        {"AAAAAAAAAA": {"front": [{"rgb": "rap3df_data_02/AAAAAAAAAA/rgb_X1.bmp",
                                   "ir_with_bg": "rap3df_data_02/AAAAAAAAAA/ir_rmBg_X1.bmp"}]}}).encode(),
    f"{TOP}/rap3df_data_02/AAAAAAAAAA/rgb_X1.bmp": b"BM-rgb",
    f"{TOP}/rap3df_data_02/AAAAAAAAAA/ir_rmBg_X1.bmp": b"BM-ir",
    f"{TOP}/rap3df_data_02/AAAAAAAAAA/depth_bgRm_X1.data": b"\0" * 100,
    f"{TOP}/rap3df_data/BBBBBBB/k1_box_xy.bmp": b"BM-rgb17",
    f"{TOP}/rap3df_data/BBBBBBB/k1_box_xy_ir_view.bmp": b"BM-ir17",
    f"{TOP}/rap3df_data/BBBBBBB/tests/database.csv": b"a,b\n",
}
INSTALLED = {
    "rap3df_data_02/database.json", "rap3df_data_02/AAAAAAAAAA/rgb_X1.bmp", "rap3df_data_02/AAAAAAAAAA/ir_rmBg_X1.bmp",
    "rap3df_data/BBBBBBB/k1_box_xy.bmp", "rap3df_data/BBBBBBB/k1_box_xy_ir_view.bmp",
    "rap3df_data/BBBBBBB/tests/database.csv",
}


def make_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def make_tar(path: Path, files: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture()
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving ``tmp_path / "www"``; yields ``(base url, folder, requests seen)``."""
    www = tmp_path / "www"
    www.mkdir()
    seen: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            seen.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", www, seen
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_fetch_downloads_checks_and_installs_only_the_image_folders(server, tmp_path, monkeypatch):
    base, www, seen = server
    arc = make_zip(www / "master.zip", FILES)
    dest = tmp_path / "cache" / "data"
    path, digest = fetch_dataset("rap3df", sha256=sha(arc).upper(), url=f"{base}/master.zip", dest=dest)
    assert path == dest / "rap3df" and digest == sha(arc)
    assert tree(path) == INSTALLED  # no code, no depth data, GitHub's top folder stripped
    assert (path / "rap3df_data_02" / "AAAAAAAAAA" / "rgb_X1.bmp").read_bytes() == b"BM-rgb"
    assert sorted(p.name for p in dest.iterdir()) == ["rap3df"]  # no archive or temporary folder left
    assert seen == ["/master.zip"]

    # found last, after --data, $NIRVIS_DATA and ../shared/data, in $NIRVIS_CACHE/data
    monkeypatch.setenv("NIRVIS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("NIRVIS_DATA", raising=False)
    monkeypatch.setattr(data_mod, "DEFAULT_CANDIDATES", ())
    assert find_data_root() == dest
    from nirvis.datasets.rap3df import find_rap3df_sets

    assert find_rap3df_sets(find_data_root()) == {"2019": path / "rap3df_data_02", "2017": path / "rap3df_data"}
    monkeypatch.setattr(data_mod, "DEFAULT_CANDIDATES", (tmp_path / "www",))
    assert find_data_root() == (tmp_path / "www").resolve()  # the earlier places still come first

    # an installed dataset is not replaced unless asked, and nothing is downloaded to find that out
    with pytest.raises(FetchError, match="already exists; remove it, or give --force"):
        fetch_dataset("rap3df", sha256=sha(arc), url=f"{base}/master.zip", dest=dest)
    assert seen == ["/master.zip"]
    (www / "master.zip").unlink()
    arc2 = make_tar(www / "master.tar.gz", {f"{TOP}/rap3df_data/CCCCCCC/k1_box_xy.bmp": b"new"})
    path, _ = fetch_dataset("rap3df", sha256=sha(arc2), url=f"{base}/master.tar.gz", dest=dest, force=True)
    assert tree(path) == {"rap3df_data/CCCCCCC/k1_box_xy.bmp"}
    assert sorted(p.name for p in dest.iterdir()) == ["rap3df"]


def test_fetch_refuses_without_a_checksum_before_any_download(server, tmp_path):
    base, www, seen = server
    make_zip(www / "master.zip", FILES)
    res = runner.invoke(app, ["data", "fetch", "rap3df", "--url", f"{base}/master.zip", "--dest", str(tmp_path / "d")])
    text = " ".join(res.output.split())
    assert res.exit_code == 1
    assert "no checksum of the rap3df archive is pinned" in text and "--sha256 HEX" in text
    assert "--archive FILE" in text
    assert seen == [] and not (tmp_path / "d" / "rap3df").exists()
    res = runner.invoke(app, ["data", "fetch", "rap3df", "--sha256", "abc", "--dest", str(tmp_path / "d")])
    assert res.exit_code == 1 and "expected 64 hexadecimal digits" in " ".join(res.output.split())
    res = runner.invoke(app, ["data", "fetch", "casia", "--sha256", "0" * 64, "--dest", str(tmp_path / "d")])
    assert res.exit_code == 1 and "unknown dataset 'casia'; known: rap3df" in " ".join(res.output.split())


def test_fetch_refuses_a_wrong_checksum_and_leaves_nothing(server, tmp_path):
    base, www, _ = server
    make_zip(www / "master.zip", FILES)
    dest = tmp_path / "d"
    with pytest.raises(FetchError, match="the downloaded archive has sha256 .* expected 0000"):
        fetch_dataset("rap3df", sha256="0" * 64, url=f"{base}/master.zip", dest=dest)
    assert list(dest.iterdir()) == []


def test_fetch_says_when_the_network_or_the_server_fails(server, tmp_path):
    base, _, _ = server
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch_dataset("rap3df", sha256="0" * 64, url=f"{base}/nothing.zip", dest=tmp_path / "d")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = runner.invoke(app, ["data", "fetch", "rap3df", "--sha256", "0" * 64, "--url",
                              f"http://127.0.0.1:{port}/master.zip", "--dest", str(tmp_path / "d"), "--timeout", "5"])
    text = " ".join(res.output.split())
    assert res.exit_code == 1
    assert f"cannot reach http://127.0.0.1:{port}/master.zip" in text and "no network connection" in text
    assert "--archive FILE" in text
    assert [p.name for p in (tmp_path / "d").iterdir()] == []


@pytest.mark.parametrize("bad", ["../evil.bmp", f"{TOP}/rap3df_data/../../evil.bmp", "/tmp/evil.bmp"])
def test_an_archive_with_a_path_leaving_the_folder_is_refused_whole(tmp_path, bad):
    arc = make_zip(tmp_path / "a.zip", {**FILES, bad: b"x"})
    dest = tmp_path / "d" / "data"
    with pytest.raises(FetchError, match="points outside the folder"):
        install_archive(arc, SPEC, dest)
    assert not (dest / "rap3df").exists() and not (tmp_path / "d" / "evil.bmp").exists()
    assert [p for p in dest.iterdir()] == []


def test_links_in_a_tar_are_refused(tmp_path):
    arc = make_tar(tmp_path / "a.tar.gz", FILES, links={f"{TOP}/rap3df_data/BBBBBBB/x.bmp": "/etc/passwd"})
    with pytest.raises(FetchError, match="is a link or a special file"):
        install_archive(arc, SPEC, tmp_path / "d")
    assert not (tmp_path / "d" / "rap3df").exists()


def test_a_local_archive_is_installed_and_an_unrelated_one_refused(tmp_path):
    arc = make_tar(tmp_path / "a.tar.gz", FILES)
    res = runner.invoke(app, ["data", "fetch", "rap3df", "--archive", str(arc), "--dest", str(tmp_path / "d")])
    text = " ".join(res.output.split())
    assert res.exit_code == 0, res.output
    assert f"sha256 {sha(arc)}, not checked: no checksum was given" in text
    assert tree(tmp_path / "d" / "rap3df") == INSTALLED
    res = runner.invoke(app, ["data", "fetch", "rap3df", "--archive", str(arc), "--sha256", "1" * 64,
                              "--dest", str(tmp_path / "e")])
    assert res.exit_code == 1 and "expected 1111" in " ".join(res.output.split())
    other = make_zip(tmp_path / "o.zip", {"x/readme.txt": b"hi"})
    with pytest.raises(FetchError, match="holds none of the folders rap3df_data, rap3df_data_02"):
        install_archive(other, SPEC, tmp_path / "f")
    (tmp_path / "junk.zip").write_bytes(b"not an archive")
    with pytest.raises(FetchError, match="neither a zip nor a tar archive"):
        install_archive(tmp_path / "junk.zip", SPEC, tmp_path / "g")


def test_no_data_anywhere_names_the_fetch_command(monkeypatch, tmp_path):
    monkeypatch.setenv("NIRVIS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("NIRVIS_DATA", raising=False)
    monkeypatch.setattr(data_mod, "DEFAULT_CANDIDATES", ())
    (tmp_path / "cache" / "data").mkdir(parents=True)  # an empty data folder is not data
    from nirvis.errors import DatasetError

    with pytest.raises(DatasetError, match="nirvis data fetch rap3df"):
        find_data_root()
