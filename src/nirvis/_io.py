"""Low-level file helpers: validated image reading and crash-safe (atomic) writes."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from nirvis.errors import ImageError

__all__ = ["read_image", "atomic_write", "atomic_write_bytes", "atomic_write_json", "atomic_save_npz", "file_digest",
           "NPZ_READ_ERRORS"]

#: What reading a damaged ``.npz`` raises (truncated or flipped bytes, a missing member, bad contents).
NPZ_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


#: The ``channel`` values :func:`read_image` accepts besides ``None`` (RGB as stored).
CHANNELS = ("gray", "red", "green", "blue")


def read_image(path: str | os.PathLike, *, channel: str | None = None) -> np.ndarray:
    """Read an 8-bit image file and validate it.

    Parameters
    ----------
    path
        Image file (PNG, JPEG, BMP, ...).
    channel
        ``None`` returns the image as RGB, shape ``(H, W, 3)`` (a gray file gives ``(H, W)``).
        ``"red"``, ``"green"`` or ``"blue"`` return that channel alone, shape ``(H, W)``
        (RAP3DF stores IR intensity in the red channel). ``"gray"`` returns luminance.

    Returns
    -------
    numpy.ndarray of uint8

    Raises
    ------
    ImageError
        When the file is missing, unreadable or corrupt, or is 16-bit, has an alpha channel or is a
        palette image. The message names the file and the reason.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = Path(path)
    if channel is not None and channel not in CHANNELS:
        raise ValueError(f"channel must be None, 'gray', 'red', 'green' or 'blue', got {channel!r}")
    if not p.is_file():
        raise ImageError(f"{p}: no such image file")
    try:
        with Image.open(p) as im:
            # Pillow decodes 48-bit RGB (16 bits per channel, PNG or TIFF) to 8-bit mode "RGB"; only the
            # raw mode of the file's tiles (e.g. "RGB;16B"), read before decoding, tells.
            raw = [t.args if isinstance(t.args, str) else (t.args or ("",))[0] for t in im.tile]
            if any(isinstance(r, str) and ";16" in r for r in raw):
                raise ImageError(f"{p}: 16-bit {im.mode} image; nirvis reads 8-bit images only: convert it to 8-bit "
                                 "first")
            im.load()
            if im.getexif().get(0x0112, 1) != 1:  # EXIF orientation: store the pixels upright, as viewers do
                im = ImageOps.exif_transpose(im)
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
                raise ImageError(f"{p}: {mode} image ({'16' if mode.startswith('I;16') else '32'}-bit); "
                                 "nirvis reads 8-bit images only: convert it to 8-bit first")
            if mode in ("P", "PA"):
                raise ImageError(f"{p}: palette image (mode {mode}); convert it to RGB or gray first")
            if mode in ("RGBA", "LA", "La", "RGBa"):
                raise ImageError(f"{p}: image has an alpha channel (mode {mode}); "
                                 "remove the alpha channel (convert to RGB) first")
            if mode == "1":
                raise ImageError(f"{p}: 1-bit image; nirvis needs an 8-bit gray or RGB image")
            if mode == "L":
                arr = np.asarray(im, dtype=np.uint8)
            elif mode == "RGB":
                arr = np.asarray(im, dtype=np.uint8)
            elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
            else:
                raise ImageError(f"{p}: unsupported image mode {mode!r}")
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{p}: image too large to read safely ({exc})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{p}: unreadable or corrupt image ({exc})") from exc
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise ImageError(f"{p}: empty image")
    if channel is None:
        return np.ascontiguousarray(arr)
    if channel == "gray":
        if arr.ndim == 2:
            return np.ascontiguousarray(arr)
        import cv2

        return cv2.cvtColor(arr, cv2.COLOR_RGB2GRAY)
    index = {"red": 0, "green": 1, "blue": 2}[channel]
    if arr.ndim == 2:
        return np.ascontiguousarray(arr)
    return np.ascontiguousarray(arr[:, :, index])


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (64 hex digits), read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it onto ``path``.

    A crash at any moment leaves either the old file or the complete new one, never half a file.
    """
    dst = Path(path)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp" + dst.suffix, dir=dst.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        # mkstemp's 0600 would make every artefact private; set after writing, as some writers (safetensors)
        # create the file anew with 0600 themselves
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, dst)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return dst


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: The process's umask, read once at import (reading it means setting it, which is not thread-safe).
_UMASK = _read_umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda p: p.write_bytes(data))


def read_json(path: str | os.PathLike, error: type[Exception] = ValueError) -> Any:
    """Parse the JSON file ``path``; invalid JSON raises ``error`` naming the file and the parser's reason."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path}: not valid JSON ({exc})") from None


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """Save arrays to an ``.npz`` file atomically (no pickled objects allowed).

    Raises
    ------
    ValueError
        If an array holds Python objects (it would be pickled, and the loaders refuse pickles).
    """
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    for k, a in arrays.items():
        if a.dtype.hasobject:
            raise ValueError(f"{path}: array {k!r} holds Python objects (dtype {a.dtype}); "
                             "store numbers or fixed-width strings")

    def _write(p: Path) -> None:
        with open(p, "wb") as fh:
            np.savez(fh, **arrays)

    return atomic_write(path, _write)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")
