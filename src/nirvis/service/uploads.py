"""Checking and decoding uploaded images, in memory, before any face code sees them.

An upload is trusted for nothing: its file name and the client's content type are ignored. The bytes are

1. limited in size (:class:`UploadTooLarge`, HTTP 413; the whole request body is also limited by
   :class:`BodySizeLimit`);
2. recognised by their leading bytes as one of the formats in :data:`UPLOAD_FORMATS`
   (:class:`UnsupportedImage`, HTTP 415);
3. parsed by Pillow's header reader, restricted to that format's plug-in, and refused when the image holds more
   pixels than the limit (Pillow's decompression-bomb limit, ``PIL.Image.MAX_IMAGE_PIXELS``, unless a smaller one
   is given), before a single pixel is decoded (:class:`UploadTooLarge`, HTTP 413);
4. decoded by :func:`nirvis._io.decode_image`, the same rule as every nirvis command that reads a file (16-bit
   images mapped to 8 bits by percentiles, an opaque alpha channel dropped, EXIF orientation applied); a corrupt
   or unusable image raises :class:`~nirvis.errors.ImageError` (HTTP 422).

Nothing here touches the file system.
"""

from __future__ import annotations

import io
import json

import numpy as np
from starlette.exceptions import HTTPException

from nirvis.errors import NirvisError

__all__ = ["UploadError", "UploadTooLarge", "UnsupportedImage", "UPLOAD_FORMATS", "sniff_format", "decode_upload",
           "BodySizeLimit", "safe_name"]


class UploadError(NirvisError, ValueError):
    """An upload refused before decoding; ``status_code`` is the HTTP status to answer with."""

    status_code = 422


class UploadTooLarge(UploadError):
    """Too many bytes, or too many pixels to decode safely (HTTP 413)."""

    status_code = 413


class UnsupportedImage(UploadError):
    """The bytes are not an image of a format the service decodes (HTTP 415)."""

    status_code = 415


#: Formats accepted in uploads, each with the leading bytes that identify it (checked before Pillow sees the
#: data). TGA, which nirvis reads from files, has no signature and is not accepted in uploads.
UPLOAD_FORMATS: dict[str, tuple[bytes, ...]] = {
    "PNG": (b"\x89PNG\r\n\x1a\n",),
    "JPEG": (b"\xff\xd8\xff",),
    "BMP": (b"BM",),
    "TIFF": (b"II*\x00", b"MM\x00*"),
    "WEBP": (),  # RIFF....WEBP, checked below
    "GIF": (b"GIF87a", b"GIF89a"),
    "PPM": (b"P1", b"P2", b"P3", b"P4", b"P5", b"P6"),
    "JPEG2000": (b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51"),
}

#: Pillow plug-ins allowed to parse each sniffed format (JPEG files with several frames are Pillow's "MPO").
_PLUGINS = {"JPEG": ("JPEG", "MPO"), "BMP": ("BMP", "DIB")}


def sniff_format(data: bytes) -> str | None:
    """The format of ``data`` by its leading bytes (a key of :data:`UPLOAD_FORMATS`), or ``None``."""
    head = bytes(data[:16])
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    for fmt, magics in UPLOAD_FORMATS.items():
        if any(head.startswith(m) for m in magics):
            return fmt
    return None


def safe_name(name: str | None, default: str = "upload") -> str:
    """A client-given file name reduced to a short label for messages and results (never opened).

    Only the last path component is kept, control characters are dropped, and it is cut to 100 characters.
    """
    if not name:
        return default
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable()).strip()
    return (base[:100] or default)


def decode_upload(data: bytes, name: str, *, channel: str | None = None, max_bytes: int | None = None,
                  max_pixels: int | None = None) -> np.ndarray:
    """Check and decode one uploaded image, in memory.

    Parameters
    ----------
    data
        The uploaded file's bytes.
    name
        A label for messages (see :func:`safe_name`); never opened.
    channel
        As :func:`nirvis._io.read_image`: ``None`` (as stored), ``"gray"``, ``"red"``, ``"green"``, ``"blue"``.
    max_bytes
        Refuse uploads larger than this (``None``: no limit here).
    max_pixels
        Refuse images with more pixels than this; ``None`` uses ``PIL.Image.MAX_IMAGE_PIXELS`` (Pillow's
        decompression-bomb limit, read at call time).

    Returns
    -------
    numpy.ndarray of uint8, ``(H, W, 3)`` RGB or ``(H, W)`` gray, as :func:`nirvis._io.read_image`.

    Raises
    ------
    UploadTooLarge
        Too many bytes or pixels.
    UnsupportedImage
        Not one of :data:`UPLOAD_FORMATS` by content.
    nirvis.errors.ImageError
        Corrupt, or an image nirvis cannot use (a translucent alpha channel, a palette image, ...).
    """
    from PIL import Image, UnidentifiedImageError

    from nirvis._io import decode_image
    from nirvis.errors import ImageError

    if max_bytes is not None and len(data) > max_bytes:
        raise UploadTooLarge(f"{name}: {len(data)} bytes; the limit is {max_bytes} bytes per upload")
    if len(data) == 0:
        raise ImageError(f"{name}: empty file (0 bytes)")
    fmt = sniff_format(data)
    if fmt is None:
        raise UnsupportedImage(f"{name}: not an image the service reads (by content: not "
                               f"{', '.join(list(UPLOAD_FORMATS)[:-1])} or {list(UPLOAD_FORMATS)[-1]}; the file "
                               "name and content type are not used)")
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    try:  # the header only: no pixel is decoded here
        with Image.open(io.BytesIO(data), formats=_PLUGINS.get(fmt, (fmt,))) as im:
            width, height = im.size
    except Image.DecompressionBombError as exc:
        raise UploadTooLarge(f"{name}: image too large to decode safely ({exc})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"{name}: unreadable or corrupt {fmt} image ({exc})") from None
    if limit is not None and width * height > limit:
        raise UploadTooLarge(f"{name}: {width}x{height} = {width * height} pixels; the limit is {limit} pixels "
                             "(a decompression-bomb guard)")
    return decode_image(data, name, channel=channel)


class _BodyTooLarge(HTTPException):
    """Raised while the body streams in, past the limit (an HTTPException, so FastAPI passes it on)."""


class BodySizeLimit:
    """ASGI middleware: answer 413 with a JSON ``{"detail": ...}`` to an HTTP request whose body is larger than
    ``max_bytes``, before reading it when ``Content-Length`` says so, else as soon as the streamed bytes pass it.

    The exception raised inside the application while the body is being read is an ``HTTPException`` (413), so
    FastAPI's body parser passes it on unchanged; if it reaches this middleware before a response started, the
    413 is sent from here.
    """

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = int(max_bytes)

    def _message(self, size: int | None) -> str:
        got = f"{size} bytes" if size is not None else f"more than {self.max_bytes} bytes"
        return f"request body too large: {got}; the limit is {self.max_bytes} bytes"

    async def _refuse(self, send, size: int | None) -> None:
        body = json.dumps({"detail": self._message(size)}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = None
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = None
        if length is not None and length > self.max_bytes:
            await self._refuse(send, length)
            return
        seen = 0
        started = False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _BodyTooLarge(status_code=413, detail=self._message(None))
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if started:
                raise
            await self._refuse(send, None)
