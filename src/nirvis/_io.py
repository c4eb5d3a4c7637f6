"""Low-level file helpers: validated image reading (files and uploads, 8 and 16 bits) and crash-safe (atomic)
writes."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from nirvis.errors import ImageError

__all__ = ["read_image", "decode_image", "to_8bit", "IMAGE_FORMATS", "atomic_write", "atomic_write_bytes",
           "atomic_write_json", "atomic_save_npz", "file_digest", "NPZ_READ_ERRORS"]

#: What reading a damaged ``.npz`` raises (truncated or flipped bytes, a missing member, bad contents).
NPZ_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


#: The ``channel`` values :func:`read_image` accepts besides ``None`` (RGB as stored).
CHANNELS = ("gray", "red", "green", "blue")

#: The file formats nirvis decodes, recognised by content (never by file name); Pillow's other plug-ins
#: (e.g. EPS, which runs Ghostscript) are never given an image, so uploads stay within these decoders.
IMAGE_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "BMP", "DIB", "TIFF", "WEBP", "PPM", "GIF", "TGA",
                                  "JPEG2000")

#: The percentiles (in %) of an image's values that :func:`to_8bit` maps to 0 and 255.
PERCENTILES: tuple[float, float] = (0.5, 99.5)

# Pillow modes whose pixels are deeper than 8 bits, read by Pillow itself as 2-D arrays.
_DEEP_GRAY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_ALPHA_MODES = ("RGBA", "LA", "La", "RGBa")


def to_8bit(values: np.ndarray) -> np.ndarray:
    """Map an image deeper than 8 bits (16-bit camera files, 32-bit int or float) to ``uint8``.

    The one rule nirvis applies to every such image it reads: the 0.5th and 99.5th percentiles of the
    image's values (:data:`PERCENTILES`, all channels together, as ``numpy.percentile`` interpolates them)
    become 0 and 255, linearly; values beyond them are clipped, and the result is rounded to the nearest
    integer (halves to even, ``numpy.rint``). The 1% of extreme pixels (hot pixels,
    specular highlights, a black border) therefore cannot dim or wash out the face, and the face keeps the
    whole 8-bit range whatever part of the sensor's range the camera used. When the two percentiles are
    equal (at least 99% of the pixels share one value), the image's minimum and maximum are used instead;
    a constant image maps to a constant, 0.

    Parameters
    ----------
    values
        ``(H, W)`` or ``(H, W, C)`` array of finite numbers, of any numeric dtype.

    Returns
    -------
    numpy.ndarray of uint8, the shape of ``values``.
    """
    values = np.asarray(values)
    if values.size == 0:
        return np.zeros(values.shape, np.uint8)
    if values.dtype.kind == "u" and values.dtype.itemsize <= 2:
        # 8/16-bit: the same percentiles from a histogram, and the map as a lookup table (5x faster on 12 MP)
        counts = np.bincount(values.ravel(), minlength=1 << (8 * values.dtype.itemsize))
        lo, hi = _percentiles_from_counts(counts, PERCENTILES)
        if not hi > lo:
            nz = np.flatnonzero(counts)
            lo, hi = float(nz[0]), float(nz[-1])
        if not hi > lo:
            return np.zeros(values.shape, np.uint8)
        return _linear_to_8bit(np.arange(counts.size, dtype=np.float64), lo, hi)[values]
    x = values.astype(np.float64)
    lo, hi = np.percentile(x, PERCENTILES)
    if not hi > lo:
        lo, hi = float(x.min()), float(x.max())
    if not hi > lo:
        return np.zeros(x.shape, np.uint8)
    return _linear_to_8bit(x, lo, hi)


def _linear_to_8bit(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.rint(np.clip((x - lo) * (255.0 / (hi - lo)), 0.0, 255.0)).astype(np.uint8)


def _percentiles_from_counts(counts: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """``numpy.percentile``'s default (linear) percentiles of integer values given by their histogram."""
    cum = np.cumsum(counts)
    n = int(cum[-1])
    out = []
    for q in qs:
        pos = q / 100.0 * (n - 1)
        k = int(np.floor(pos))
        below, above = np.searchsorted(cum, [k + 1, min(k + 2, n)])  # values of order statistics k and k + 1
        out.append(float(below) + (pos - k) * float(above - below))
    return out


def read_image(path: str | os.PathLike, *, channel: str | None = None) -> np.ndarray:
    """Read an image file as 8-bit, validated: the reader of every nirvis command.

    8-bit files are returned as stored. Deeper files (16-bit gray or 48-bit RGB PNG and TIFF, as NIR cameras
    write them; 32-bit int or float TIFF) are mapped to 8 bits by :func:`to_8bit`: the 0.5 and 99.5
    percentiles of the returned pixels become 0 and 255, clipped. The mapping is computed after ``channel``
    is applied, on the values returned, so a channel read alone uses its own range. An alpha channel that is
    opaque everywhere is dropped; a translucent one is refused (what lies behind it is unknown). The EXIF
    orientation is applied, as viewers do. :func:`decode_image` reads the same from bytes.

    Parameters
    ----------
    path
        Image file: PNG, JPEG, BMP, TIFF, WebP, PPM/PGM, GIF, TGA or JPEG 2000 (:data:`IMAGE_FORMATS`),
        recognised by content.
    channel
        ``None`` returns the image as RGB, shape ``(H, W, 3)`` (a gray file gives ``(H, W)``).
        ``"red"``, ``"green"`` or ``"blue"`` return that channel alone, shape ``(H, W)``
        (RAP3DF stores IR intensity in the red channel). ``"gray"`` returns luminance
        (ITU-R BT.601 weights, computed before a deep image is mapped to 8 bits).

    Returns
    -------
    numpy.ndarray of uint8

    Raises
    ------
    ImageError
        When the file is missing, unreadable or corrupt, has a translucent alpha channel, is a palette or
        1-bit image, holds non-finite values, or is too large to decode safely (Pillow's decompression-bomb
        limit, ``PIL.Image.MAX_IMAGE_PIXELS``). The message names the file and the reason.
    """
    p = Path(path)
    _check_channel(channel)
    if not p.is_file():
        raise ImageError(f"{p}: no such image file")
    try:
        fh = open(p, "rb")
    except OSError as exc:
        raise ImageError(f"{p}: unreadable ({exc.strerror or exc})") from None
    with fh:
        return _decode(fh, str(p), channel)


def decode_image(data: bytes, name: str, *, channel: str | None = None) -> np.ndarray:
    """Decode an image held in memory (an upload) exactly as :func:`read_image` reads a file.

    The format is recognised by content, never by ``name``, and only :data:`IMAGE_FORMATS` are decoded.
    Pillow's decompression-bomb limit is kept: an image of more than twice ``PIL.Image.MAX_IMAGE_PIXELS``
    pixels is refused before its pixels are decoded.

    Parameters
    ----------
    data
        The encoded file's bytes.
    name
        What to call the image in error messages (e.g. the upload's file name); never opened.
    channel
        As :func:`read_image`.

    Returns
    -------
    numpy.ndarray of uint8, as :func:`read_image`.

    Raises
    ------
    ImageError
        As :func:`read_image`; the message starts with ``name``.
    """
    import io

    _check_channel(channel)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"decode_image: data must be bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise ImageError(f"{name}: empty file (0 bytes)")
    return _decode(io.BytesIO(bytes(data)), name, channel)


def _check_channel(channel: str | None) -> None:
    if channel is not None and channel not in CHANNELS:
        raise ValueError(f"channel must be None, 'gray', 'red', 'green' or 'blue', got {channel!r}")


def _decode(fh: BinaryIO, name: str, channel: str | None) -> np.ndarray:
    """The one decoder behind :func:`read_image` and :func:`decode_image`; ``fh`` is at offset 0."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(fh, formats=IMAGE_FORMATS) as im:  # the decompression-bomb check runs here
            # Pillow decodes 48-bit RGB, 64-bit RGBA and 32-bit gray+alpha (16 bits per channel) to 8 bits
            # silently; only the raw mode of the file's tiles (e.g. "RGB;16B"), read before decoding, tells.
            # (Read before getexif(), which decodes a PNG and empties its tiles.)
            raw = [t.args if isinstance(t.args, str) else (t.args or ("",))[0] for t in im.tile]
            raw = [r for r in raw if isinstance(r, str)]
            orientation = int(im.getexif().get(0x0112, 1) or 1)
            mode = im.mode
            if mode in _DEEP_GRAY_MODES:
                im.load()
                arr = np.asarray(im)
                arr = arr.astype(arr.dtype.newbyteorder("=")) if arr.dtype.byteorder not in ("=", "|") else arr
                deep = True
            elif any(";16" in r for r in raw):
                fh.seek(0)
                arr = _decode_16bit(fh.read(), name, im.size, gray=all(r.startswith(("L", "I")) for r in raw))
                deep = True
            else:
                im.load()
                deep = False
                if mode in ("P", "PA"):
                    raise ImageError(f"{name}: palette image (mode {mode}); convert it to RGB or gray first")
                if mode == "1":
                    raise ImageError(f"{name}: 1-bit image; nirvis needs an 8-bit gray or RGB image")
                if mode in ("L", "RGB", *_ALPHA_MODES):
                    arr = np.asarray(im, dtype=np.uint8)
                elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                    arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
                else:
                    raise ImageError(f"{name}: unsupported image mode {mode!r}")
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{name}: image too large to read safely ({exc})") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: unreadable or corrupt image (not a {', '.join(IMAGE_FORMATS[:-1])} or "
                         f"{IMAGE_FORMATS[-1]} file nirvis can identify)") from None
    except (OSError, SyntaxError, ValueError, struct.error) as exc:
        raise ImageError(f"{name}: unreadable or corrupt image ({exc})") from None
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise ImageError(f"{name}: empty image")
    if arr.ndim == 3 and arr.shape[2] in (2, 4):
        arr = _drop_opaque_alpha(arr, name)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise ImageError(f"{name}: {bad} pixel value(s) are NaN or infinite; nirvis needs finite values")
    arr = _orient(arr, orientation)
    arr = _select_channel(arr, channel)
    if deep:
        arr = to_8bit(arr)
    return np.ascontiguousarray(arr)


def _decode_16bit(data: bytes, name: str, size: tuple[int, int], gray: bool) -> np.ndarray:
    """16-bit-per-channel pixels of a PNG or TIFF, RGB(A) order (Pillow would give 8 bits), via OpenCV."""
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ImageError(f"{name}: unreadable or corrupt 16-bit image (OpenCV could not decode it)")
    if arr.dtype != np.uint16 or arr.shape[1::-1] != tuple(size):
        raise ImageError(f"{name}: unreadable 16-bit image (decoded as {arr.dtype} {arr.shape}, expected "
                         f"uint16 of {size[0]}x{size[1]} pixels)")
    if arr.ndim == 3:
        arr = arr[:, :, [2, 1, 0, 3][: arr.shape[2]]] if arr.shape[2] in (3, 4) else arr
        if gray and arr.shape[2] in (3, 4):  # gray (+ alpha) expanded to BGR(A) by OpenCV
            arr = arr[:, :, [0, 3]] if arr.shape[2] == 4 else arr[:, :, 0]
    return arr


def _drop_opaque_alpha(arr: np.ndarray, name: str) -> np.ndarray:
    """``arr`` without its last (alpha) channel, refused unless every alpha value is the maximum."""
    alpha = arr[:, :, -1]
    top = np.iinfo(arr.dtype).max if arr.dtype.kind in "ui" else 1.0
    n = int(np.count_nonzero(alpha < top))
    if n:
        raise ImageError(f"{name}: image has an alpha channel with {n} translucent pixel(s) of {alpha.size} "
                         f"({100 * n / alpha.size:.1f}%, alpha below {top:g}); what lies behind them is unknown: "
                         "flatten the image onto a background, or remove the alpha channel, first")
    out = arr[:, :, :-1]
    return out[:, :, 0] if out.shape[2] == 1 else out


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Turn the stored pixels upright by the EXIF orientation tag (1-8), as viewers do."""
    if orientation in (5, 6, 7, 8):
        arr = np.swapaxes(arr, 0, 1)  # transpose: (x, y) -> (y, x)
        # after the transpose, 5 is done; 6 and 8 are a flip away, 7 two flips
        return {5: arr, 6: arr[:, ::-1], 7: arr[::-1, ::-1], 8: arr[::-1]}[orientation]
    return {2: arr[:, ::-1], 3: arr[::-1, ::-1], 4: arr[::-1]}.get(orientation, arr)


def _select_channel(arr: np.ndarray, channel: str | None) -> np.ndarray:
    if channel is None or arr.ndim == 2:
        return arr
    if channel == "gray":
        import cv2

        if arr.dtype not in (np.uint8, np.uint16, np.float32):
            arr = arr.astype(np.float32)
        return cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_RGB2GRAY)
    return arr[:, :, {"red": 0, "green": 1, "blue": 2}[channel]]


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
