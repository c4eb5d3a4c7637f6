"""Where the data lives, and fetching the public RAP3DF archive.

The data folder is looked for in this order: ``--data``, ``$NIRVIS_DATA``, ``../shared/data``, then
``$NIRVIS_CACHE/data`` (default ``~/.cache/nirvis/data``), where ``nirvis data fetch rap3df`` puts it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import stat
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from nirvis.errors import DatasetError, NirvisError

__all__ = ["find_data_root", "fetched_data_dir", "HOW_TO_GET_DATA", "ENV_VAR", "DEFAULT_CANDIDATES",
           "DataArchive", "KNOWN_ARCHIVES", "FetchError", "fetch_dataset", "install_archive", "MAX_ARCHIVE_BYTES"]

log = logging.getLogger(__name__)

ENV_VAR = "NIRVIS_DATA"

#: Candidate default locations, tried in order after ``--data`` and ``$NIRVIS_DATA`` (and before
#: :func:`fetched_data_dir`).
DEFAULT_CANDIDATES = (Path("../shared/data"), Path(__file__).resolve().parents[3] / "shared" / "data")

HOW_TO_GET_DATA = (
    "No data folder found: pass --data DIR, or set NIRVIS_DATA=DIR, or place the data in ../shared/data "
    "(DIR must hold e.g. rap3df/rap3df_data_02/database.json), or download RAP3DF into ~/.cache/nirvis/data "
    "with: nirvis data fetch rap3df --sha256 HEX (see nirvis data fetch --help)."
)


def fetched_data_dir() -> Path:
    """Where ``nirvis data fetch`` installs datasets: ``$NIRVIS_CACHE/data``, default ``~/.cache/nirvis/data``."""
    from nirvis.features.cache import default_cache_dir

    return default_cache_dir() / "data"


def find_data_root(explicit: str | os.PathLike | None = None) -> Path:
    """Return the data folder, looked up in the documented order (module docstring).

    Raises
    ------
    DatasetError
        If ``explicit`` is given but missing, or if nothing is found; the message says where to put the data.
    """
    if explicit is not None:
        p = Path(explicit).expanduser()
        if not p.is_dir():
            raise DatasetError(f"--data {p}: no such folder")
        return p
    env = os.environ.get(ENV_VAR)
    if env:
        p = Path(env).expanduser()
        if not p.is_dir():
            raise DatasetError(f"${ENV_VAR}={p}: no such folder")
        return p
    for cand in DEFAULT_CANDIDATES:
        if cand.is_dir():
            return cand.resolve()
    fetched = fetched_data_dir()
    if fetched.is_dir() and any(p.is_dir() and not p.name.startswith(".") for p in fetched.iterdir()):
        return fetched
    raise DatasetError(HOW_TO_GET_DATA)


# ----------------------------------------------------------------------------------------------- fetching

class FetchError(NirvisError, OSError):
    """A dataset archive cannot be downloaded, checked or installed (the message says why and what to do)."""


@dataclass(frozen=True)
class DataArchive:
    """A public archive that ``nirvis data fetch`` can install.

    Attributes
    ----------
    name
        The dataset's name (``nirvis data fetch NAME``) and the folder it is installed as.
    url
        The archive's address (a ``.zip`` or ``.tar.gz``).
    sha256
        Its SHA-256, or ``None`` when none is pinned: then the user must give one (``--sha256``).
    folders
        The folders of the archive that are installed (found at any depth; the rest is not extracted).
    suffixes
        File name endings kept inside those folders (lower case; everything else is skipped).
    source, terms
        Where the data comes from, and its terms of use (shown before downloading).
    """

    name: str
    url: str
    sha256: str | None
    folders: tuple[str, ...]
    suffixes: tuple[str, ...]
    source: str
    terms: str


#: Datasets with a public archive. RAP3DF is published as a GitHub repository (code, and the two sets of
#: captures); its archive changes with the repository, and no checksum of it could be pinned when this was
#: written (the development machine has no internet), so ``--sha256`` is required.
KNOWN_ARCHIVES: dict[str, DataArchive] = {
    "rap3df": DataArchive(
        name="rap3df",
        url="https://github.com/Piemontez/rap3df-database/archive/refs/heads/master.zip",
        sha256=None,
        folders=("rap3df_data", "rap3df_data_02"),
        suffixes=(".bmp", ".json", ".csv"),
        source="https://github.com/Piemontez/rap3df-database",
        terms="academic use only (pattern recognition and computer vision research, publications, coursework), "
              "as its README says",
    ),
}

#: Refuse an archive whose files would take more than this (a decompression bomb, or the wrong archive).
MAX_ARCHIVE_BYTES = 20 * 1024**3


def _check_sha256(value: str | None, option: str = "--sha256") -> str | None:
    if value is None:
        return None
    v = value.strip().lower()
    if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
        raise FetchError(f"{option} {value!r}: expected 64 hexadecimal digits (a SHA-256)")
    return v


def _download(url: str, dst: Path, timeout: float, progress: Callable[[int, int | None], None] | None) -> str:
    """Stream ``url`` into ``dst``; return the SHA-256 of the bytes. Network errors become :class:`FetchError`."""
    elsewhere = "or download the archive with a browser and run: nirvis data fetch NAME --archive FILE"
    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(dst, "wb") as out:  # noqa: S310
            total = resp.headers.get("Content-Length")
            total_n = int(total) if total and total.isdigit() else None
            n = 0
            while chunk := resp.read(1 << 20):
                n += len(chunk)
                if n > MAX_ARCHIVE_BYTES:
                    raise FetchError(f"{url}: sent more than {MAX_ARCHIVE_BYTES} bytes; stopped")
                h.update(chunk)
                out.write(chunk)
                if progress:
                    progress(n, total_n)
    except urllib.error.HTTPError as exc:
        raise FetchError(f"{url}: the server answered HTTP {exc.code} {exc.reason}; check the address (--url), "
                         f"{elsewhere}") from None
    except urllib.error.URLError as exc:
        raise FetchError(f"cannot reach {url} ({exc.reason}): no network connection, a proxy or firewall in the "
                         f"way, or the server is down; try again later, {elsewhere}") from None
    except (TimeoutError, socket.timeout) as exc:
        raise FetchError(f"{url}: no answer within {timeout:g} s ({exc}); check the network, {elsewhere}") from None
    except ConnectionError as exc:
        raise FetchError(f"{url}: the connection failed ({exc}); {elsewhere}") from None
    return h.hexdigest()


def _digest(path: Path) -> str:
    from nirvis._io import file_digest

    return file_digest(path)


# -- safe extraction

def _safe_parts(name: str, archive: Path) -> tuple[str, ...]:
    """The parts of a member's name, refusing any that could land outside the extraction folder."""
    if "\\" in name or "\x00" in name:
        raise FetchError(f"{archive}: member {name!r} has a backslash or NUL in its name; refusing to extract")
    p = PurePosixPath(name)
    parts = tuple(x for x in p.parts if x not in ("", "."))
    if p.is_absolute() or ".." in parts or (parts and ":" in parts[0]):
        raise FetchError(f"{archive}: member {name!r} points outside the folder it is extracted to (absolute path "
                         "or '..'); refusing to extract a tampered archive")
    return parts


@dataclass(frozen=True)
class _Member:
    parts: tuple[str, ...]
    size: int
    is_dir: bool
    open: Callable[[], IO[bytes]]


def _members(archive: Path) -> Iterator[_Member]:
    """Every member of a zip or tar archive, checked (names, kinds); links and devices are refused."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                parts = _safe_parts(info.filename, archive)
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    raise FetchError(f"{archive}: member {info.filename!r} is a symbolic link; refusing to extract")
                yield _Member(parts, info.file_size, info.is_dir(), lambda i=info: zf.open(i))
        return
    try:
        tf = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise FetchError(f"{archive}: neither a zip nor a tar archive ({exc})") from None
    with tf:
        for info in tf:
            parts = _safe_parts(info.name, archive)
            if not (info.isfile() or info.isdir()):
                raise FetchError(f"{archive}: member {info.name!r} is a link or a special file; refusing to extract")
            yield _Member(parts, info.size, info.isdir(), lambda i=info: tf.extractfile(i))


def install_archive(archive: str | os.PathLike, spec: DataArchive, dest: str | os.PathLike, *,
                    force: bool = False, progress: Callable[[int, int | None], None] | None = None) -> Path:
    """Extract ``spec.folders`` of ``archive`` into ``dest/spec.name/`` safely and atomically.

    Only regular files and folders are extracted, and only under the folders named by ``spec`` (wherever they lie
    in the archive, e.g. below GitHub's ``<repository>-<branch>/``), with a name ending in ``spec.suffixes``. A
    member whose name is absolute or holds ``..``, a link or a special file makes the whole archive refused.
    Everything is extracted into a temporary folder beside the destination, which is renamed into place at the
    end: an interrupted run leaves no half-installed dataset.

    Returns
    -------
    The installed folder, ``dest/spec.name``.

    Raises
    ------
    FetchError
        Unsafe or unreadable archive, none of the expected folders in it, or a destination that exists
        (without ``force``).
    """
    archive, dest = Path(archive), Path(dest).expanduser()
    final = dest / spec.name
    if final.exists() and not force:
        raise FetchError(f"{final}: already exists; remove it, or give --force to replace it")
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.name}.", suffix=".partial", dir=dest))
    try:
        # Check every name before writing anything: a tampered archive is refused whole.
        members = []
        total = 0
        for m in _members(archive):
            inside = next((i for i, part in enumerate(m.parts) if part in spec.folders), None)
            if inside is None or m.is_dir or not m.parts[-1].lower().endswith(spec.suffixes):
                continue
            total += m.size
            if total > MAX_ARCHIVE_BYTES:
                raise FetchError(f"{archive}: its files would take more than {MAX_ARCHIVE_BYTES} bytes; refusing")
            members.append(m.parts[inside:])
        found = sorted({parts[0] for parts in members})
        if not found:
            raise FetchError(f"{archive}: holds none of the folders {', '.join(spec.folders)}; is it the "
                             f"{spec.name} archive ({spec.source})?")
        wanted = set(members)
        written = 0
        for m in _members(archive):
            inside = next((i for i, part in enumerate(m.parts) if part in spec.folders), None)
            if inside is None or m.parts[inside:] not in wanted or m.is_dir:
                continue
            target = tmp.joinpath(*m.parts[inside:])
            target.parent.mkdir(parents=True, exist_ok=True)
            with m.open() as src, open(target, "wb") as out:
                n = 0
                while chunk := src.read(1 << 20):
                    n += len(chunk)
                    if n > m.size:  # a member that inflates beyond its declared size
                        raise FetchError(f"{archive}: member {'/'.join(m.parts)} is larger than it says; refusing")
                    out.write(chunk)
            written += 1
            if progress:
                progress(written, len(members))
        if final.exists():  # force: the old copy goes only once the new one is complete
            old = dest / f".{spec.name}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise FetchError(f"{archive}: damaged archive ({exc})") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("installed %s (%s) into %s", spec.name, ", ".join(found), final)
    return final


def fetch_dataset(name: str, *, sha256: str | None = None, url: str | None = None,
                  archive: str | os.PathLike | None = None, dest: str | os.PathLike | None = None,
                  force: bool = False, timeout: float = 60.0,
                  download_progress: Callable[[int, int | None], None] | None = None,
                  extract_progress: Callable[[int, int | None], None] | None = None) -> tuple[Path, str]:
    """Download (or take) the archive of dataset ``name``, check its SHA-256 and install it (:func:`install_archive`).

    Parameters
    ----------
    name
        A key of :data:`KNOWN_ARCHIVES`.
    sha256
        The archive's expected SHA-256; required for a download when :attr:`DataArchive.sha256` is ``None``
        (nirvis does not download what it cannot check). With ``archive``, optional: when neither is known, the
        file is installed as the user's own choice.
    url
        Download from here instead of :attr:`DataArchive.url` (a mirror).
    archive
        A local archive file to install (nothing is downloaded).
    dest
        The data folder to install into (default :func:`fetched_data_dir`).

    Returns
    -------
    ``(installed folder, SHA-256 of the archive)``.

    Raises
    ------
    FetchError
        Unknown name, no checksum to check against, network failure, checksum mismatch, unsafe archive.
    """
    if name not in KNOWN_ARCHIVES:
        raise FetchError(f"unknown dataset {name!r}; known: {', '.join(sorted(KNOWN_ARCHIVES))}")
    spec = KNOWN_ARCHIVES[name]
    expected = _check_sha256(sha256) or spec.sha256
    dest_dir = Path(dest).expanduser() if dest is not None else fetched_data_dir()
    if (dest_dir / spec.name).exists() and not force:
        raise FetchError(f"{dest_dir / spec.name}: already exists; remove it, or give --force to replace it")
    if archive is not None:
        path = Path(archive).expanduser()
        if not path.is_file():
            raise FetchError(f"--archive {path}: no such file")
        digest = _digest(path)
        if expected is not None and digest != expected:
            raise FetchError(f"{path}: sha256 {digest}, expected {expected}; not installed")
        return install_archive(path, spec, dest_dir, force=force, progress=extract_progress), digest
    if expected is None:
        raise FetchError(
            f"no checksum of the {spec.name} archive is pinned in this version of nirvis (the repository's archive "
            f"changes when it does, and none could be verified when this version was made), and nirvis does not "
            f"install a download it cannot check. Give the archive's SHA-256 with --sha256 HEX (from a source you "
            f"trust), or download {url or spec.url} yourself and run: nirvis data fetch {spec.name} --archive FILE")
    src = url or spec.url
    dest_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.name}-archive.", suffix=".tmp", dir=dest_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        digest = _download(src, tmp, timeout, download_progress)
        if digest != expected:
            raise FetchError(f"{src}: the downloaded archive has sha256 {digest}, expected {expected}; not "
                             "installed (a changed archive, a wrong --sha256, or a tampered download)")
        return install_archive(tmp, spec, dest_dir, force=force, progress=extract_progress), digest
    finally:
        tmp.unlink(missing_ok=True)
