import numpy as np
import pytest
from PIL import Image

from nirvis._io import atomic_save_npz, atomic_write, atomic_write_json, read_image
from nirvis.errors import ImageError


def _save(tmp_path, name, arr, mode=None):
    p = tmp_path / name
    Image.fromarray(arr, mode=mode).save(p) if mode else Image.fromarray(arr).save(p)
    return p


def test_reads_rgb_gray_and_one_channel(tmp_path):
    rgb = np.zeros((8, 9, 3), np.uint8)
    rgb[..., 0] = 200
    rgb[..., 2] = 7
    p = _save(tmp_path, "a.bmp", rgb)
    assert read_image(p).shape == (8, 9, 3)
    assert (read_image(p, channel="red") == 200).all()
    assert (read_image(p, channel="blue") == 7).all()
    assert read_image(_save(tmp_path, "g.png", rgb[..., 0]), channel=None).shape == (8, 9)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ImageError, match=r"nope\.png: no such image file"):
        read_image(tmp_path / "nope.png")


@pytest.mark.parametrize("payload", [b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 40])
def test_corrupt_file_is_named(tmp_path, payload):
    p = tmp_path / "bad.png"
    p.write_bytes(payload)
    with pytest.raises(ImageError, match=r"bad\.png: unreadable or corrupt"):
        read_image(p)


def test_truncated_jpeg(tmp_path):
    p = _save(tmp_path, "t.jpg", (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8))
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(ImageError, match=r"t\.jpg"):
        read_image(p)


def test_16_bit_image_is_refused(tmp_path):
    p = tmp_path / "deep.png"
    Image.fromarray(np.full((4, 4), 40000, np.uint16)).save(p)
    with pytest.raises(ImageError, match=r"deep\.png: .*16-bit"):
        read_image(p)


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_16_bit_rgb_image_is_refused(tmp_path, ext):
    import cv2

    p = tmp_path / f"deep_rgb.{ext}"
    cv2.imwrite(str(p), np.full((4, 5, 3), 40000, np.uint16))  # Pillow would decode it to 8-bit "RGB"
    with pytest.raises(ImageError, match=rf"deep_rgb\.{ext}: 16-bit RGB image"):
        read_image(p)
    cv2.imwrite(str(p), np.full((4, 5, 3), 200, np.uint8))
    assert read_image(p).shape == (4, 5, 3)


def test_alpha_image_is_refused(tmp_path):
    p = _save(tmp_path, "alpha.png", np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(ImageError, match=r"alpha\.png: image has an alpha channel"):
        read_image(p)


def test_palette_image_is_refused(tmp_path):
    p = tmp_path / "pal.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).convert("P").save(p)
    with pytest.raises(ImageError, match=r"pal\.png: palette image"):
        read_image(p)


def test_atomic_write_keeps_old_file_on_crash(tmp_path):
    dst = tmp_path / "out.json"
    atomic_write_json(dst, {"v": 1})

    def boom(p):
        p.write_text('{"v": 2, "half')
        raise RuntimeError("crash while writing")

    with pytest.raises(RuntimeError):
        atomic_write(dst, boom)
    assert dst.read_text().strip().endswith("}") and '"v": 1' in dst.read_text()
    assert [f.name for f in tmp_path.iterdir()] == ["out.json"]


def test_atomic_files_follow_the_umask_and_npz_refuses_objects(tmp_path, monkeypatch):
    import nirvis._io as io

    monkeypatch.setattr(io, "_UMASK", 0o022)
    dst = atomic_write_json(tmp_path / "r.json", {"v": 1})
    assert dst.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
    # a writer that creates the file anew, private (safetensors' save_file does): the mode is set after it
    import torch
    from safetensors.torch import save_file

    st = io.atomic_write(tmp_path / "w.safetensors", lambda p: save_file({"w": torch.zeros(2)}, str(p)))
    assert st.stat().st_mode & 0o777 == 0o644
    with pytest.raises(ValueError, match=r"m\.npz: array 'names' holds Python objects"):
        atomic_save_npz(tmp_path / "m.npz", names=np.array(["a", None], dtype=object))
    assert not list(tmp_path.glob("m.npz*")) and not list(tmp_path.glob(".m.npz*"))


def test_exif_orientation_is_applied_and_huge_images_are_refused(tmp_path, monkeypatch):
    arr = np.zeros((20, 30, 3), np.uint8)
    arr[:5] = 255  # a bright top band
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    p = tmp_path / "phone.jpg"
    Image.fromarray(arr).save(p, exif=exif, quality=95)
    img = read_image(p)
    assert img.shape == (30, 20, 3) and img[:, -5:].mean() > 200  # the band is now on the right, as displayed
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 600 px is more than twice the limit
    with pytest.raises(ImageError, match=r"phone\.jpg: image too large to read safely"):
        read_image(p)
