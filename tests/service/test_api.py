"""The web service's API on real galleries (dlib, RAP3DF faces), through FastAPI's TestClient."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from .helpers import AUTH, TOKEN, captures, png_bytes, test_client

pytestmark = pytest.mark.data


def client_for(gallery, token: str | None = TOKEN, **kw):
    from nirvis.service.app import create_app

    return test_client(create_app(gallery, token=token, **kw))


def bomb_png(width: int, height: int) -> bytes:
    """A real PNG of ``width x height`` black 8-bit gray pixels: a few hundred KB that decode to
    ``width * height`` bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + pixels
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# -- health and the page ------------------------------------------------------------------------------------
def test_health(rap3df_gallery, people):
    r = client_for(rap3df_gallery).get("/health")
    assert r.status_code == 200
    h = r.json()
    assert h["status"] == "ok" and h["read_only"] is False
    assert h["people"] == len(people) and h["images"] == len(people)
    assert h["gallery"]["embedder"] == "dlib" and h["gallery"]["hallucination"] is False
    assert str(rap3df_gallery) not in r.text  # the server's paths are not shown


def test_page_and_static_files(rap3df_gallery):
    c = client_for(rap3df_gallery)
    r = c.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert 'id="probe"' in r.text and "/static/app.js" in r.text
    js = c.get("/static/app.js")
    assert js.status_code == 200 and "textContent" in js.text
    assert c.get("/static/style.css").status_code == 200
    assert c.get("/static/../app.py").status_code == 404


def test_openapi_schema(rap3df_gallery):
    schema = client_for(rap3df_gallery).get("/openapi.json").json()
    assert {"/identify", "/enroll", "/people", "/people/{person}", "/people/{person}/face", "/health"} <= set(schema["paths"])
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
    assert "delete" in schema["paths"]["/people/{person}"]


# -- identify -----------------------------------------------------------------------------------------------
def test_identify_nir_probe(rap3df_gallery, probe, people):
    person, data = probe
    r = client_for(rap3df_gallery).post("/identify?channel=red&top=3", files={"image": ("night.bmp", data)})
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["probe"] == "night.bmp"
    assert len(res["matches"]) == 3
    assert res["matches"][0]["person"] == person
    scores = [m["score"] for m in res["matches"]]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    assert set(res["decision"]) >= {"person", "threshold", "far"}
    assert res["decision"]["person"] in (None, person)
    assert "faces" not in res  # only when asked


def test_identify_same_as_gallery_api(rap3df_gallery, rap3df_root, probe):
    """The service gives what Gallery.identify gives for the file (same channel rule, same decoding)."""
    from nirvis.gallery import Gallery

    person, data = probe
    path = captures(rap3df_root, person)[0]["ir"]
    with Gallery.open(rap3df_gallery) as g:
        want = g.identify(path, top=5, channel="red").to_dict()
    got = client_for(rap3df_gallery).post("/identify?channel=red", files={"image": ("x.bmp", data)}).json()
    assert [m["person"] for m in got["matches"]] == [m["person"] for m in want["matches"]]
    np.testing.assert_allclose([m["score"] for m in got["matches"]], [m["score"] for m in want["matches"]], atol=1e-5)
    # the default channel of a NIR probe is gray luminance, as for files
    with Gallery.open(rap3df_gallery) as g:
        want_gray = g.identify(path, top=5).to_dict()
    got_gray = client_for(rap3df_gallery).post("/identify", files={"image": ("x.bmp", data)}).json()
    np.testing.assert_allclose([m["score"] for m in got_gray["matches"]],
                               [m["score"] for m in want_gray["matches"]], atol=1e-5)


def test_identify_16bit_upload(rap3df_gallery, rap3df_root, probe):
    """A NIR probe written as a 16-bit PNG (as NIR cameras write them) is read, and finds the same person."""
    from nirvis._io import read_image

    person, _ = probe
    ir = read_image(captures(rap3df_root, person)[0]["ir"], channel="red")
    buf = io.BytesIO()
    Image.fromarray(ir.astype(np.uint16) * 257 + 3).save(buf, "PNG")
    r = client_for(rap3df_gallery).post("/identify", files={"image": ("deep.png", buf.getvalue())})
    assert r.status_code == 200, r.text
    assert r.json()["matches"][0]["person"] == person


def test_identify_returns_faces_when_asked(hallucination_gallery, probe):
    person, data = probe
    r = client_for(hallucination_gallery).post("/identify?channel=red&faces=true", files={"image": ("p.bmp", data)})
    assert r.status_code == 200, r.text
    res = r.json()
    assert person in [m["person"] for m in res["matches"]]
    for key in ("aligned", "hallucinated"):
        img = np.asarray(Image.open(io.BytesIO(base64.b64decode(res["faces"][key]))))
        assert img.shape == (224, 224, 3), key
    # a VIS probe is not hallucinated
    r = client_for(hallucination_gallery).post("/identify?modality=vis&faces=true", files={"image": ("p.bmp", data)})
    assert r.status_code == 200 and r.json()["faces"]["hallucinated"] is None


def test_no_face_is_422(rap3df_gallery):
    flat = png_bytes(np.full((200, 200), 128, np.uint8))
    r = client_for(rap3df_gallery).post("/identify", files={"image": ("wall.png", flat)})
    assert r.status_code == 422
    assert r.json()["detail"].startswith("wall.png: no face found")


def test_empty_gallery_is_409(empty_gallery, probe):
    _, data = probe
    r = client_for(empty_gallery).post("/identify", files={"image": ("p.bmp", data)})
    assert r.status_code == 409
    assert "the gallery is empty" in r.json()["detail"]


def test_bad_parameters_are_422_with_one_line(rap3df_gallery, probe):
    _, data = probe
    c = client_for(rap3df_gallery)
    r = c.post("/identify?top=0", files={"image": ("p.bmp", data)})
    assert r.status_code == 422 and r.json()["detail"].startswith("invalid request: top:")
    r = c.post("/identify?channel=purple", files={"image": ("p.bmp", data)})
    assert r.status_code == 422 and "channel" in r.json()["detail"]
    r = c.post("/identify")
    assert r.status_code == 422 and r.json()["detail"] == "invalid request: image: Field required"


# -- uploads ------------------------------------------------------------------------------------------------
def test_non_image_upload_is_415_whatever_its_name(rap3df_gallery):
    c = client_for(rap3df_gallery)
    for name, ctype in (("face.png", "image/png"), ("face.jpg", "image/jpeg")):
        r = c.post("/identify", files={"image": (name, b"#!/bin/sh\necho not an image\n", ctype)})
        assert r.status_code == 415
        assert "by content" in r.json()["detail"] and r.json()["detail"].startswith(name)


def test_corrupt_image_is_422(rap3df_gallery, probe):
    _, data = probe
    r = client_for(rap3df_gallery).post("/identify", files={"image": ("cut.bmp", data[: len(data) // 3])})
    assert r.status_code == 422
    assert r.json()["detail"].startswith("cut.bmp: unreadable or corrupt")


def test_size_limit_is_413(rap3df_gallery, probe):
    _, data = probe  # a 53 KB BMP
    c = client_for(rap3df_gallery, max_upload_bytes=20_000)
    r = c.post("/identify", files={"image": ("p.bmp", data)})
    assert r.status_code == 413
    assert "the limit is 20000 bytes" in r.json()["detail"]

    def chunks():  # no Content-Length: the limit applies to the bytes as they stream in
        for _ in range(10):
            yield b"x" * 5000

    r = c.post("/identify", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413 and "the limit is 20000 bytes" in r.json()["detail"]


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bomb_is_413(rap3df_gallery):
    """100 million black pixels in a 100 KB PNG: refused before decoding (Pillow's limit is 89.5 million;
    Pillow itself only warns below twice that)."""
    bomb = bomb_png(10_000, 10_000)
    assert len(bomb) < 200_000
    r = client_for(rap3df_gallery).post("/identify", files={"image": ("bomb.png", bomb)})
    assert r.status_code == 413
    assert "100000000 pixels" in r.json()["detail"]
    # beyond twice the limit, Pillow's own DecompressionBombError
    r = client_for(rap3df_gallery, max_pixels=None).post("/identify", files={"image": ("b.png", bomb_png(15_000, 13_000))})
    assert r.status_code == 413 and "too large to decode safely" in r.json()["detail"]


# -- writes and the token -----------------------------------------------------------------------------------
def test_enroll_needs_the_token(gallery_copy, rap3df_root):
    vis = captures(rap3df_root, "9ZRBSP79OR")[0]["rgb"].read_bytes()
    c = client_for(gallery_copy)
    form = {"person": "9ZRBSP79OR"}
    r = c.post("/enroll", data=form, files=[("images", ("a.bmp", vis))])
    assert r.status_code == 401 and "Authorization: Bearer" in r.json()["detail"]
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = c.post("/enroll", data=form, files=[("images", ("a.bmp", vis))], headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json()["detail"] == "wrong bearer token"
    r = c.post("/enroll", data=form, files=[("images", ("a.bmp", vis))], headers=AUTH)
    assert r.status_code == 201, r.text
    rep = r.json()
    assert rep["enrolled"] == [{"person": "9ZRBSP79OR", "path": "a.bmp"}] and rep["counts"]["enrolled"] == 1
    assert "9ZRBSP79OR" in [p["person"] for p in c.get("/people").json()["people"]]
    # the same content again: a duplicate, 200
    r = c.post("/enroll", data={"person": "someone-else"}, files=[("images", ("b.bmp", vis))], headers=AUTH)
    assert r.status_code == 200
    assert r.json()["duplicates"] == [{"person": "someone-else", "path": "b.bmp", "existing_person": "9ZRBSP79OR"}]
    # its thumbnail is served by person id
    r = c.get("/people/9ZRBSP79OR/face")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == (224, 224)


def test_enroll_several_images_and_failures(gallery_copy, rap3df_root):
    caps = captures(rap3df_root, "M8D6FNE")
    files = [("images", (f"{i}.bmp", c["rgb"].read_bytes())) for i, c in enumerate(caps)]
    files += [("images", ("wall.png", png_bytes(np.full((120, 120, 3), 90, np.uint8)))),
              ("images", ("notes.png", b"plain text"))]
    r = client_for(gallery_copy).post("/enroll", data={"person": "M8D6FNE"}, files=files, headers=AUTH)
    assert r.status_code == 201, r.text
    rep = r.json()
    assert rep["counts"] == {"enrolled": len(caps), "duplicates": 0, "failures": 2}
    reasons = {f["path"]: f["reason"] for f in rep["failures"]}
    assert "no face found" in reasons["wall.png"] and "by content" in reasons["notes.png"]


def test_enroll_nothing_enrolled_is_422(gallery_copy):
    r = client_for(gallery_copy).post("/enroll", data={"person": "nobody"},
                                      files=[("images", ("wall.png", png_bytes(np.full((120, 120), 90, np.uint8))))],
                                      headers=AUTH)
    assert r.status_code == 422
    assert r.json()["detail"].startswith("nobody: not enrolled: wall.png: no face found")


def test_read_only_without_token(rap3df_gallery, caplog):
    with caplog.at_level("WARNING", logger="nirvis.service.app"):
        c = client_for(rap3df_gallery, token=None)
    assert any("READ-ONLY" in rec.message for rec in caplog.records)
    h = c.get("/health").json()
    assert h["read_only"] is True and h["write_access"].startswith("disabled")
    for r in (c.post("/enroll", data={"person": "x"}, files=[("images", ("a.png", b"x"))], headers=AUTH),
              c.delete("/people/07RI3W42UF", headers=AUTH)):
        assert r.status_code == 403
        assert r.json()["detail"].startswith("this service is read-only")
    # reads still work
    assert c.get("/people").json()["count"] == 10


def test_bad_person_ids_are_400(gallery_copy, probe):
    c = client_for(gallery_copy)
    _, data = probe
    for bad in ("../etc", ".hidden", "a b", "x" * 129, "é"):
        r = c.post("/enroll", data={"person": bad}, files=[("images", ("p.bmp", data))], headers=AUTH)
        assert r.status_code == 400, bad
        assert "is not valid" in r.json()["detail"]
    assert c.delete("/people/.hidden", headers=AUTH).status_code == 400
    assert c.get("/people/a%20b/face").status_code == 400
    # an encoded slash never becomes a path: the route does not match, or the id is refused
    assert c.delete("/people/..%2F..%2Fgallery.sqlite", headers=AUTH).status_code in (400, 404)
    assert (gallery_copy / "gallery.sqlite").is_file()


def test_delete_person(gallery_copy, probe, people):
    person, data = probe
    c = client_for(gallery_copy)
    r = c.delete(f"/people/{person}", headers=AUTH)
    assert r.status_code == 200 and r.json() == {"person": person, "removed": 1}
    assert person not in [p["person"] for p in c.get("/people").json()["people"]]
    r = c.delete(f"/people/{person}", headers=AUTH)
    assert r.status_code == 404 and "no person" in r.json()["detail"]
    assert c.get(f"/people/{person}/face").status_code == 404
    res = c.post("/identify?channel=red", files={"image": ("p.bmp", data)}).json()
    assert person not in [m["person"] for m in res["matches"]]
    assert c.get("/health").json()["people"] == len(people) - 1


def test_unexpected_error_is_500_without_traceback(rap3df_gallery, probe):
    from nirvis.gallery import Gallery
    from nirvis.service.app import create_app

    _, data = probe
    g = Gallery.open(rap3df_gallery)
    try:
        app = create_app(g, token=TOKEN)

        def broken(*a, **kw):
            raise RuntimeError("secret internal detail")

        g.identify = broken
        r = test_client(app, raise_server_exceptions=False).post("/identify", files={"image": ("p.bmp", data)})
    finally:
        g.close()
    assert r.status_code == 500
    assert r.json() == {"detail": "internal error: RuntimeError (see the service log)"}


def test_create_app_checks_its_arguments(rap3df_gallery, tmp_path):
    from nirvis.gallery import GalleryError
    from nirvis.service.app import create_app

    with pytest.raises(ValueError, match="top must be between 1 and 100"):
        create_app(rap3df_gallery, top=0)
    with pytest.raises(ValueError, match="max_upload_bytes must be at least 1024"):
        create_app(rap3df_gallery, max_upload_bytes=10)
    with pytest.raises(GalleryError, match="no such gallery folder"):
        create_app(tmp_path / "nothing")
