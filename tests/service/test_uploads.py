"""Uploads are recognised by content, limited in bytes and pixels, and decoded like files."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from nirvis._io import read_image
from nirvis.errors import ImageError
from nirvis.service.uploads import (UnsupportedImage, UploadTooLarge, decode_upload, safe_name, sniff_format)


def encode(arr: np.ndarray, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt, **kw)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature and IHDR claiming ``width x height`` 8-bit gray pixels, with one empty IDAT."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.fixture
def rgb() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "WEBP", "JPEG", "GIF", "PPM"])
def test_sniff_by_content(rgb, fmt):
    arr = rgb if fmt != "GIF" else rgb[:, :, 0]
    data = encode(arr, fmt)
    assert sniff_format(data) == fmt


def test_sniff_refuses_non_images():
    assert sniff_format(b"%PDF-1.7 ...") is None
    assert sniff_format(b"<svg xmlns='http://www.w3.org/2000/svg'/>") is None
    assert sniff_format(b"%!PS-Adobe-3.0 EPSF-3.0") is None  # EPS: Pillow would run Ghostscript
    assert sniff_format(b"") is None


def test_decode_matches_read_image(tmp_path, rgb):
    """The same pixels as read_image gives for the same file, for each channel rule."""
    data = encode(rgb)
    f = tmp_path / "x.png"
    f.write_bytes(data)
    for channel in (None, "red", "gray"):
        np.testing.assert_array_equal(decode_upload(data, "x.png", channel=channel), read_image(f, channel=channel))


def test_decode_16bit_like_read_image(tmp_path):
    """A 16-bit gray camera file is mapped to 8 bits by the same rule as read_image."""
    rng = np.random.default_rng(1)
    arr16 = rng.integers(1000, 40000, (32, 32), dtype=np.uint16)
    buf = io.BytesIO()
    Image.fromarray(arr16).save(buf, "PNG")
    data = buf.getvalue()
    f = tmp_path / "deep.png"
    f.write_bytes(data)
    out = decode_upload(data, "deep.png")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, read_image(f))


def test_file_name_is_ignored(rgb):
    """A PNG called .txt is decoded; a text file called .png is refused with 415 by content."""
    assert decode_upload(encode(rgb), "notes.txt").shape == rgb.shape
    with pytest.raises(UnsupportedImage, match="by content") as exc:
        decode_upload(b"just some text, not pixels", "face.png")
    assert exc.value.status_code == 415


def test_corrupt_image_is_an_image_error(rgb):
    data = encode(rgb)
    with pytest.raises(ImageError, match="broken.png"):
        decode_upload(data[: len(data) // 2], "broken.png")
    with pytest.raises(ImageError, match="empty file"):
        decode_upload(b"", "empty.png")


def test_byte_limit(rgb):
    data = encode(rgb)
    with pytest.raises(UploadTooLarge, match=f"{len(data)} bytes; the limit is 100 bytes") as exc:
        decode_upload(data, "big.png", max_bytes=100)
    assert exc.value.status_code == 413


def test_pixel_limit_before_decoding():
    """A header claiming 40000 x 40000 pixels is refused without decoding a pixel (Pillow's bomb limit)."""
    bomb = png_header_only(40000, 40000)
    assert len(bomb) < 100
    with pytest.raises(UploadTooLarge, match="too large to decode safely"):
        decode_upload(bomb, "bomb.png")
    # between the limit and twice it, Pillow only warns: the service refuses too
    small = png_header_only(200, 200)
    with pytest.raises(UploadTooLarge, match="40000 pixels; the limit is 10000 pixels"):
        decode_upload(small, "bomb.png", max_pixels=10_000)


def test_translucent_alpha_is_refused_opaque_dropped():
    rgba = np.full((20, 20, 4), 200, np.uint8)
    rgba[..., 3] = 255
    assert decode_upload(encode(rgba), "opaque.png").shape == (20, 20, 3)
    rgba[0, 0, 3] = 10
    with pytest.raises(ImageError, match="translucent"):
        decode_upload(encode(rgba), "glass.png")


def test_safe_name():
    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("C:\\Users\\x\\face.png") == "face.png"
    assert safe_name("a\x00b\nc.png") == "abc.png"
    assert safe_name(None) == "upload"
    assert safe_name("/") == "upload"
    assert len(safe_name("x" * 1000)) == 100
