import numpy as np
import pytest
from PIL import Image

from nirvis._io import atomic_save_npz, atomic_write, atomic_write_json, decode_image, read_image, to_8bit
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


@pytest.mark.parametrize("keep", [200, 0.5, -20])
def test_truncated_16_bit_png_is_named(tmp_path, keep):
    import cv2

    ok, buf = cv2.imencode(".png", (np.random.default_rng(0).random((64, 64, 3)) * 65535).astype(np.uint16))
    data = buf.tobytes()
    with pytest.raises(ImageError, match=r"^cut\.png: unreadable or corrupt"):
        decode_image(data[: int(len(data) * keep) if isinstance(keep, float) else keep], "cut.png")


def test_truncated_jpeg(tmp_path):
    p = _save(tmp_path, "t.jpg", (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8))
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(ImageError, match=r"t\.jpg"):
        read_image(p)


def _png16(arr: np.ndarray, color_type: int) -> bytes:
    """A 16-bit PNG written by hand (Pillow and OpenCV cannot write 16-bit gray+alpha): color type 0 gray,
    2 RGB, 4 gray+alpha, 6 RGBA; ``arr`` uint16 ``(H, W[, C])``."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    h, w = arr.shape[:2]
    raw = b"".join(b"\0" + arr[y].astype(">u2").tobytes() for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _expected_8bit(values: np.ndarray) -> np.ndarray:
    """The documented rule, written out: percentiles 0.5 and 99.5 -> 0 and 255, clipped, rounded."""
    lo, hi = np.percentile(values.astype(np.float64), [0.5, 99.5])
    return np.rint(np.clip((values - lo) / (hi - lo) * 255, 0, 255)).astype(np.uint8)


def test_to_8bit_maps_the_percentiles_and_clips():
    rng = np.random.default_rng(0)
    x = rng.integers(1000, 50000, size=(40, 50)).astype(np.uint16)
    x[0, 0], x[0, 1] = 0, 65535  # a dead and a hot pixel must not set the range
    out = to_8bit(x)
    assert out.dtype == np.uint8 and out.shape == x.shape
    np.testing.assert_array_equal(out, _expected_8bit(x))
    lo, hi = np.percentile(x.astype(float), [0.5, 99.5])
    assert out[x <= lo].max() == 0 and out[x >= hi].min() == 255 and (out == 0).mean() < 0.02
    assert out[0, 0] == 0 and out[0, 1] == 255
    # monotone, and a linear change of the sensor's gain and offset changes nothing
    order = np.argsort(x, axis=None)
    assert (np.diff(out.ravel()[order].astype(int)) >= 0).all()
    np.testing.assert_array_equal(to_8bit(x.astype(np.float64) * 0.25 + 7), out)
    # constant images map to a constant; an image that is constant but for a few pixels uses min..max
    for value in (0, 40000, 65535):
        c = to_8bit(np.full((5, 6), value, np.uint16))
        assert (c == c.flat[0]).all()
    few = np.full((100, 100), 300, np.uint16)
    few[0, :3] = (100, 200, 1300)
    np.testing.assert_array_equal(to_8bit(few)[0, :4], [0, 21, 255, 42])  # (v - 100) / 1200 * 255


def test_16_bit_gray_png_is_read_by_the_rule(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.integers(2000, 4096 * 16, size=(30, 20)).astype(np.uint16)
    p = tmp_path / "deep.png"
    Image.fromarray(x).save(p)  # mode I;16
    np.testing.assert_array_equal(read_image(p), _expected_8bit(x))
    for channel in ("gray", "red", "blue"):  # a gray file gives its one channel whatever is asked
        np.testing.assert_array_equal(read_image(p, channel=channel), _expected_8bit(x))


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_48_bit_rgb_is_read_with_its_16_bit_values(tmp_path, ext):
    import cv2

    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 65536, size=(12, 15, 3)).astype(np.uint16)
    rgb[..., 0] //= 4  # a dim red channel: read alone, it gets its own range
    p = tmp_path / f"deep_rgb.{ext}"
    assert cv2.imwrite(str(p), rgb[..., ::-1])  # OpenCV writes BGR; Pillow alone would decode it to 8-bit
    np.testing.assert_array_equal(read_image(p), _expected_8bit(rgb))
    np.testing.assert_array_equal(read_image(p, channel="red"), _expected_8bit(rgb[..., 0]))
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)  # luminance from the 16-bit values, then the rule
    np.testing.assert_array_equal(read_image(p, channel="gray"), _expected_8bit(gray))
    cv2.imwrite(str(p), np.full((4, 5, 3), 200, np.uint8))  # 8-bit files are returned as stored
    assert (read_image(p) == 200).all()


def test_16_bit_tiff_gray_and_32_bit_tiff(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.integers(0, 65536, size=(9, 11)).astype(np.uint16)
    for dtype in (np.uint16, np.int32, np.float32):  # TIFF modes I;16, I and F: the same rule
        p = tmp_path / f"deep_{np.dtype(dtype).name}.tif"
        Image.fromarray(x.astype(dtype)).save(p)
        np.testing.assert_array_equal(read_image(p), _expected_8bit(x))
    f = x.astype(np.float32)
    f[2, 3] = np.nan
    Image.fromarray(f).save(tmp_path / "nan.tif")
    with pytest.raises(ImageError, match=r"nan\.tif: 1 pixel value\(s\) are NaN or infinite"):
        read_image(tmp_path / "nan.tif")


def test_decode_image_reads_bytes_as_read_image_reads_files(tmp_path):
    import cv2

    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 65536, size=(10, 8, 3)).astype(np.uint16)
    p = tmp_path / "u.png"
    cv2.imwrite(str(p), rgb[..., ::-1])
    for channel in (None, "gray", "red"):
        np.testing.assert_array_equal(decode_image(p.read_bytes(), "upload.png", channel=channel),
                                      read_image(p, channel=channel))
    small = _save(tmp_path, "s.jpg", np.full((6, 7, 3), 128, np.uint8))
    np.testing.assert_array_equal(decode_image(small.read_bytes(), "upload.png"), read_image(small))  # by content
    with pytest.raises(ImageError, match=r"^upload\.png: unreadable or corrupt image"):
        decode_image(b"GIF89a but not really", "upload.png")
    with pytest.raises(ImageError, match=r"^empty\.png: empty file \(0 bytes\)"):
        decode_image(b"", "empty.png")
    with pytest.raises(ValueError, match="channel must be None"):
        decode_image(small.read_bytes(), "x.jpg", channel="ir")


def test_decode_image_keeps_the_decompression_bomb_limit_and_refuses_other_formats(tmp_path, monkeypatch):
    import io

    bio = io.BytesIO()
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(bio, "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 900 px is more than twice the limit
    with pytest.raises(ImageError, match=r"^bomb\.png: image too large to read safely"):
        decode_image(bio.getvalue(), "bomb.png")
    deep = _png16(np.zeros((30, 30), np.uint16), 0)  # the 16-bit path too: Pillow checks the size first
    with pytest.raises(ImageError, match=r"^bomb16\.png: image too large to read safely"):
        decode_image(deep, "bomb16.png")
    monkeypatch.undo()
    ico = io.BytesIO()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(ico, "ICO")  # Pillow reads it; nirvis does not
    with pytest.raises(ImageError, match=r"^face\.png: unreadable or corrupt image \(not a PNG, JPEG"):
        decode_image(ico.getvalue(), "face.png")


def test_opaque_alpha_is_dropped(tmp_path):
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, size=(6, 7, 3)).astype(np.uint8)
    p = _save(tmp_path, "opaque.png", np.dstack([rgb, np.full((6, 7), 255, np.uint8)]))
    np.testing.assert_array_equal(read_image(p), rgb)
    np.testing.assert_array_equal(read_image(p, channel="green"), rgb[..., 1])
    gray = rgb[..., 0]
    la = _save(tmp_path, "la.png", np.dstack([gray, np.full((6, 7), 255, np.uint8)]), mode="LA")
    assert Image.open(la).mode == "LA"
    np.testing.assert_array_equal(read_image(la), gray)  # gray + opaque alpha -> (H, W) gray
    deep = rng.integers(0, 65536, size=(6, 7, 3)).astype(np.uint16)
    (tmp_path / "rgba16.png").write_bytes(_png16(np.dstack([deep, np.full((6, 7), 65535, np.uint16)]), 6))
    np.testing.assert_array_equal(read_image(tmp_path / "rgba16.png"), _expected_8bit(deep))
    (tmp_path / "la16.png").write_bytes(_png16(np.dstack([deep[..., 0], np.full((6, 7), 65535, np.uint16)]), 4))
    np.testing.assert_array_equal(read_image(tmp_path / "la16.png"), _expected_8bit(deep[..., 0]))


def test_translucent_alpha_is_refused_with_how_much(tmp_path):
    rgba = np.full((10, 10, 4), 255, np.uint8)
    rgba[0, :3, 3] = (0, 128, 254)
    p = _save(tmp_path, "alpha.png", rgba)
    with pytest.raises(ImageError, match=r"alpha\.png: image has an alpha channel with 3 translucent pixel\(s\) "
                                         r"of 100 \(3\.0%, alpha below 255\)"):
        read_image(p)
    la = np.full((4, 5, 2), 255, np.uint8)
    la[..., 1] = 0
    with pytest.raises(ImageError, match=r"la\.png: image has an alpha channel with 20 translucent pixel\(s\) of 20"):
        read_image(_save(tmp_path, "la.png", la, mode="LA"))
    deep = np.full((3, 3, 4), 65535, np.uint16)
    deep[1, 1, 3] = 65534
    (tmp_path / "a16.png").write_bytes(_png16(deep, 6))
    with pytest.raises(ImageError, match=r"a16\.png: image has an alpha channel with 1 translucent pixel\(s\) "
                                         r"of 9 \(11\.1%, alpha below 65535\)"):
        read_image(tmp_path / "a16.png")


def test_exif_orientation_matches_pillow_for_every_value():
    import io

    from PIL import ImageOps

    a = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        bio = io.BytesIO()
        Image.fromarray(a).save(bio, "PNG", exif=exif)
        expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(bio.getvalue()))))
        np.testing.assert_array_equal(decode_image(bio.getvalue(), f"o{orientation}.png"), expected)


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


def _source_landmarks(face) -> np.ndarray:
    """dlib's 5 points in the source image's pixels, ``(5, 2)``."""
    inverse = np.linalg.inv(np.vstack([face.matrix, [0, 0, 1]]))
    return (np.c_[face.landmarks, np.ones(5)] @ inverse.T)[:, :2]


@pytest.mark.data
@pytest.mark.slow
def test_real_faces_written_as_16_bit_and_rgba_align_and_match_like_the_originals(rap3df_root, tmp_path):
    """RAP3DF captures written as a camera might (16-bit gray PNG, 48-bit RGB TIFF and PNG, RGBA) give the
    same face and the same match. Measured on 8 people: landmarks within 0.52 px, cosine to the original's
    feature >= 0.995 (the rule stretches the contrast a little, so they are not bit-identical)."""
    import json

    import cv2

    from nirvis.pipeline import Recognizer

    db = json.loads((rap3df_root / "rap3df_data_02" / "database.json").read_text())
    people = sorted(db)[:6]
    rec = Recognizer("dlib")
    originals, variants = [], []  # (person, modality, image); (person, modality, kind, image read back)
    for person in people:
        cap = db[person]["front"][0]
        ir_file, rgb = rap3df_root / cap["ir_with_bg"], read_image(rap3df_root / cap["rgb"])
        ir = read_image(ir_file, channel="red")
        originals += [(person, "nir", ir), (person, "vis", rgb)]
        deep_ir = ir.astype(np.uint16) * 16 + 300  # a 12-bit sensor in a 16-bit container, with a black level
        Image.fromarray(deep_ir).save(tmp_path / f"{person}_ir.png")
        bgr = np.zeros(ir.shape + (3,), np.uint16)
        bgr[..., 2] = deep_ir  # IR in the red channel, as RAP3DF stores it
        cv2.imwrite(str(tmp_path / f"{person}_ir48.tif"), bgr)
        cv2.imwrite(str(tmp_path / f"{person}_rgb48.png"), rgb[..., ::-1].astype(np.uint16) * 257)
        variants += [(person, "nir", "16-bit gray PNG", read_image(tmp_path / f"{person}_ir.png", channel="red")),
                     (person, "nir", "48-bit RGB TIFF", read_image(tmp_path / f"{person}_ir48.tif", channel="red")),
                     (person, "vis", "48-bit RGB PNG", read_image(tmp_path / f"{person}_rgb48.png"))]
        # RGBA with an opaque alpha channel: exactly the original pixels
        opaque = np.full(ir.shape + (1,), 255, np.uint8)
        Image.fromarray(np.concatenate([read_image(ir_file), opaque], axis=2)).save(tmp_path / f"{person}_ir_rgba.png")
        Image.fromarray(np.concatenate([rgb, opaque], axis=2)).save(tmp_path / f"{person}_rgba.png")
        np.testing.assert_array_equal(read_image(tmp_path / f"{person}_ir_rgba.png", channel="red"), ir)
        np.testing.assert_array_equal(read_image(tmp_path / f"{person}_rgba.png"), rgb)

    faces = {(p, m): rec.align(img) for p, m, img in originals}
    feats = {k: rec.embed_faces([f])[0] for k, f in faces.items()}
    gallery = np.stack([feats[(p, "vis")] for p in people])
    for person, modality, kind, img in variants:
        face = rec.align(img, source=f"{person} {kind}")
        dist = np.abs(_source_landmarks(face) - _source_landmarks(faces[(person, modality)])).max()
        assert dist <= 1.5, f"{person} {kind}: landmarks moved by {dist:.2f} px"
        feat = rec.embed_faces([face])[0]
        cos = float(feat @ feats[(person, modality)])
        assert cos >= 0.99, f"{person} {kind}: cosine {cos:.4f} to the original's feature"
        if modality == "nir":  # the probe ranks the gallery as the original does
            original = feats[(person, "nir")]
            assert people[int(np.argmax(gallery @ feat))] == people[int(np.argmax(gallery @ original))]
            assert abs(float(gallery[people.index(person)] @ feat)
                       - float(gallery[people.index(person)] @ original)) < 0.01
