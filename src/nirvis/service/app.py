"""The web service: a FastAPI application over one :class:`~nirvis.gallery.Gallery`.

Endpoints (the OpenAPI schema is at ``/openapi.json``, its pages at ``/docs``):

==========================  ================================================================  ===========
``GET /``                   the investigator's page (plain HTML and a little JS, no build step)   open
``GET /health``             status, whether the service is read-only, the gallery's size          open
``POST /identify``          one uploaded image -> ranked matches and a decision                   open
``GET /people``             the enrolled people                                                   open
``GET /people/{id}/face``   one enrolled image of a person, as a PNG thumbnail                    open
``POST /enroll``            image(s) of one person -> an enrolment report                         token
``DELETE /people/{id}``     remove a person                                                       token
==========================  ================================================================  ===========

Write endpoints need ``Authorization: Bearer <token>``; a service created without a token is read-only and
answers them 403. Every error is JSON ``{"detail": "<one line saying what to fix>"}``:

- 400 a person id that the gallery refuses; 401 a missing or wrong token; 403 read-only service;
- 404 unknown person; 409 the gallery is empty (nothing to search) or refuses the operation in its present state;
- 413 a request body or image too large (bytes, or pixels: Pillow's decompression-bomb limit);
- 415 an upload that is not an image by its content (file names and content types are ignored);
- 422 a corrupt image, no face found, or invalid parameters (the message names the parameter);
- 500 only for a bug: ``{"detail": "internal error: ..."}`` without a traceback (the traceback is logged).

Uploads are read into memory (Starlette may spool a multipart part above 1 MiB to an anonymous temporary file,
which has no name from the request) and decoded by :func:`nirvis.service.uploads.decode_upload`. No path from a
request reaches the file system: person ids are validated and face thumbnails are looked up by person id in the
gallery.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import threading
from collections import OrderedDict
from contextlib import asynccontextmanager
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, FastAPI, File, Form, HTTPException, Path as PathParam, Query, Request, Security, UploadFile
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from nirvis.errors import ImageError, NoFaceError
from nirvis.gallery import PERSON_ID_PATTERN
from nirvis.service.uploads import BodySizeLimit, UploadError, decode_upload, safe_name

__all__ = ["create_app", "DEFAULT_MAX_UPLOAD_BYTES", "MAX_TOP", "MAX_ENROLL_IMAGES"]

log = logging.getLogger(__name__)

#: Default limit on one request's body (and so on one upload): 20 MiB, room for a 16-bit camera TIFF.
DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024 * 1024
#: The most matches one identification may ask for.
MAX_TOP = 100
#: The most images one ``POST /enroll`` request may carry.
MAX_ENROLL_IMAGES = 64
#: Longest side of the face thumbnails served by ``GET /people/{id}/face``, pixels.
THUMBNAIL_SIDE = 256

_STATIC = resources.files("nirvis.service") / "static"
#: The page loads nothing from elsewhere; images are its own or data: URLs (the faces of /identify).
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
                               "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


#: The rule of person ids (the gallery's :data:`nirvis.gallery.PERSON_ID_PATTERN`), shown in the schema; checked in
#: code, so that a bad id gets a message saying the rule, and status 400.
_PERSON_RULE = "1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit"
_PERSON_SCHEMA = {"pattern": PERSON_ID_PATTERN.pattern}

#: A person id in a URL path.
PersonId = Annotated[str, PathParam(description=f"A person id as enrolled: {_PERSON_RULE}.",
                                    json_schema_extra=_PERSON_SCHEMA)]


class Channel(str, Enum):
    """Which channel of the upload to read (``nirvis._io.read_image``); RAP3DF NIR keeps IR in the red one."""

    gray = "gray"
    red = "red"
    green = "green"
    blue = "blue"


class Modality(str, Enum):
    """What the probe is: ``nir`` goes through the gallery's hallucination model when it has one."""

    nir = "nir"
    vis = "vis"


# -- response models (the OpenAPI schema; extra keys of the gallery's results pass through) -------------------
class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Error(BaseModel):
    detail: str = Field(description="What went wrong and what to fix, in one line.")


class MatchOut(_Open):
    person: str
    score: float = Field(description="Cosine similarity, higher is more alike.")
    path: str = Field(description="The enrolled image that matched (as recorded at enrolment).")


class DecisionOut(_Open):
    person: str | None = Field(description="The matched person, or null when no score reaches the threshold.")
    threshold: float | None = None
    far: float | None = None


class FacesOut(BaseModel):
    aligned: str = Field(description="The aligned probe face, base64 PNG.")
    hallucinated: str | None = Field(None, description="Its hallucinated VIS face, base64 PNG; null without a "
                                                       "hallucination model (or for a VIS probe).")


class IdentifyOut(_Open):
    probe: str
    matches: list[MatchOut]
    decision: DecisionOut
    faces: FacesOut | None = Field(None, description="Only with ?faces=true.")


class PersonOut(_Open):
    person: str
    images: int


class PeopleOut(BaseModel):
    count: int
    people: list[PersonOut]


class RemovedOut(BaseModel):
    person: str
    removed: int = Field(description="Enrolled images removed.")


class HealthOut(_Open):
    status: str
    read_only: bool
    write_access: str
    people: int | None = None
    images: int | None = None
    gallery: dict[str, Any] = Field(default_factory=dict)
    max_upload_bytes: int
    top: int
    version: str


class EnrolledOut(BaseModel):
    person: str
    path: str = Field(description="The upload's file name, as recorded.")


class DuplicateOut(BaseModel):
    person: str
    path: str
    existing_person: str = Field(description="Who the same file content (SHA-256) is enrolled as already.")


class FailureOut(BaseModel):
    path: str
    reason: str


class EnrollOut(_Open):
    person: str
    enrolled: list[EnrolledOut]
    duplicates: list[DuplicateOut]
    failures: list[FailureOut]
    counts: dict[str, int]


class Invalid(Error):
    errors: list[dict[str, Any]] | None = Field(None, description="Each invalid parameter (FastAPI's list), when "
                                                                  "the request did not match the schema.")


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` of these error statuses (422 with the invalid parameters' list)."""
    return {c: {"model": Invalid if c == 422 else Error} for c in codes}


# -- authorisation ------------------------------------------------------------------------------------------
class _Auth:
    """The write token, compared in constant time; ``token=None`` makes the service read-only."""

    def __init__(self, token: str | None) -> None:
        self._token = token.encode() if token else None

    @property
    def read_only(self) -> bool:
        return self._token is None

    def check(self, authorization: str | None) -> None:
        if self._token is None:
            raise HTTPException(403, "this service is read-only: it was started without a token (nirvis serve "
                                     "--token-file FILE, or $NIRVIS_TOKEN), so enrolment and removal are disabled")
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise HTTPException(401, "this endpoint needs the header 'Authorization: Bearer <token>'",
                                headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(given.strip().encode(), self._token):
            raise HTTPException(401, "wrong bearer token", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


def _write_route_class(auth: _Auth) -> type[APIRoute]:
    """Routes that check the token before the request body is read or parsed (so a read-only service answers
    403, and a wrong token 401, whatever the body holds)."""

    class WriteRoute(APIRoute):
        def get_route_handler(self):
            handler = super().get_route_handler()

            async def checked(request: Request) -> Response:
                auth.check(request.headers.get("authorization"))
                return await handler(request)

            return checked

    return WriteRoute


# -- helpers ------------------------------------------------------------------------------------------------
def _png_b64(image: np.ndarray) -> str:
    return base64.b64encode(_png(image)).decode("ascii")


def _png(image: np.ndarray) -> bytes:
    import cv2

    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {img.dtype}")
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def _check_person(person: str) -> str:
    """``person``, or a 400 with the gallery's message when it is not a valid id."""
    from nirvis.gallery import PersonIdError, validate_person_id

    try:
        return validate_person_id(person)
    except PersonIdError:
        shown = person if len(person) <= 60 else person[:57] + "..."
        raise HTTPException(400, f"person id {shown!r} is not valid: use {_PERSON_RULE}") from None


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path", "header")]
        where = ".".join(loc) or "request"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts) if parts else "invalid request"


class _Thumbnails:
    """A small in-memory cache of face thumbnails (PNG bytes), keyed by the enrolled file and its mtime."""

    def __init__(self, entries: int = 256) -> None:
        self._entries = entries
        self._items: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: Path) -> bytes:
        import cv2

        from nirvis._io import read_image

        st = path.stat()
        key = (str(path), st.st_mtime_ns, st.st_size)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        img = read_image(path)
        h, w = img.shape[:2]
        scale = THUMBNAIL_SIDE / max(h, w)
        if scale < 1:
            img = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        data = _png(img)
        with self._lock:
            self._items[key] = data
            while len(self._items) > self._entries:
                self._items.popitem(last=False)
        return data


# -- the application ----------------------------------------------------------------------------------------
def create_app(gallery_path: str | os.PathLike | Any, token: str | None = None,
               models_dir: str | os.PathLike | None = None, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
               top: int = 5, *, max_pixels: int | None = None, max_concurrency: int | None = None) -> FastAPI:
    """Build the web service for one gallery.

    Parameters
    ----------
    gallery_path
        The gallery folder (as given to ``nirvis enroll --gallery``), opened now with
        :meth:`nirvis.gallery.Gallery.open`; an already opened :class:`~nirvis.gallery.Gallery` is used as it is
        (and not closed by the service).
    token
        The bearer token of the write endpoints; ``None`` (or empty) starts the service read-only, and says so
        in the log and in ``GET /health``.
    models_dir
        Folder of model files, as ``--models-dir`` of the other commands.
    max_upload_bytes
        Largest request body accepted (413 above it).
    top
        Matches returned by ``POST /identify`` when the request does not say (1 to :data:`MAX_TOP`).
    max_pixels
        Largest image decoded, in pixels; ``None``: Pillow's ``Image.MAX_IMAGE_PIXELS`` (read per upload).
    max_concurrency
        Uploads decoded and searched at once (others wait their turn, which bounds memory); ``None``: the
        number of CPUs. The gallery runs its networks one call at a time anyway.

    Returns
    -------
    fastapi.FastAPI
        ``app.state.gallery`` is the gallery; a gallery opened here is closed (its index written) at shutdown.

    Raises
    ------
    ValueError
        For a bad ``top``, ``max_upload_bytes`` or ``max_concurrency``.
    nirvis.gallery.GalleryError
        When the gallery cannot be opened (the message says why).
    """
    import nirvis
    from nirvis.gallery import Gallery, GalleryError, PersonIdError

    if isinstance(top, bool) or not 1 <= int(top) <= MAX_TOP:
        raise ValueError(f"top must be between 1 and {MAX_TOP}, got {top!r}")
    if int(max_upload_bytes) < 1024:
        raise ValueError(f"max_upload_bytes must be at least 1024, got {max_upload_bytes!r}")
    slots = int(max_concurrency if max_concurrency is not None else (os.cpu_count() or 1))
    if slots < 1:
        raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency!r}")
    owned = isinstance(gallery_path, (str, os.PathLike))
    gallery = Gallery.open(gallery_path, models_dir=models_dir) if owned else gallery_path
    auth = _Auth(token or None)
    work = threading.BoundedSemaphore(slots)
    thumbs = _Thumbnails()
    default_top = int(top)
    limit = int(max_upload_bytes)
    if auth.read_only:
        log.warning("nirvis serve: no token given (--token-file or $NIRVIS_TOKEN): the service is READ-ONLY; "
                    "POST /enroll and DELETE /people/{id} answer 403")
    else:
        log.info("nirvis serve: write endpoints need 'Authorization: Bearer <token>'")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        if owned:
            gallery.close()

    app = FastAPI(
        title="nirvis",
        version=nirvis.__version__,
        description="Cross-spectral (NIR->VIS) face identification against a gallery of VIS photos. "
                    "Errors are JSON {\"detail\": \"...\"}. Write endpoints need a bearer token; a service started "
                    "without one is read-only (403).",
        lifespan=lifespan,
    )
    app.state.gallery = gallery
    app.state.read_only = auth.read_only
    app.add_middleware(BodySizeLimit, max_bytes=limit)
    bearer = HTTPBearer(auto_error=False, description="The token given to nirvis serve by --token-file or "
                                                      "$NIRVIS_TOKEN.")

    # -- errors: always JSON {"detail": "..."}, never a traceback ----------------------------------------------
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_detail(exc), "errors": jsonable_encoder(exc.errors())},
                            status_code=422)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__} (see the service log)"},
                            status_code=500)

    def refused(exc: Exception) -> HTTPException:
        """The HTTP answer to an error of the gallery or the face pipeline."""
        if isinstance(exc, PersonIdError):
            return HTTPException(400, str(exc))
        if isinstance(exc, (NoFaceError, ImageError)):
            return HTTPException(422, str(exc))
        # EmptyGalleryError, or another state the gallery cannot work in (its message says why)
        return HTTPException(409, str(exc))

    def read_upload(upload: UploadFile) -> tuple[bytes, str]:
        name = safe_name(upload.filename)
        data = upload.file.read(limit + 1)
        if len(data) > limit:
            raise HTTPException(413, f"{name}: more than {limit} bytes; the limit is {limit} bytes per request")
        return data, name

    def decode(data: bytes, name: str, channel: str | None) -> np.ndarray:
        try:
            return decode_upload(data, name, channel=channel, max_bytes=limit, max_pixels=max_pixels)
        except UploadError as exc:
            raise HTTPException(exc.status_code, str(exc)) from None
        except ImageError as exc:
            raise HTTPException(422, str(exc)) from None

    # -- the page ------------------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def page() -> Response:
        return Response((_STATIC / "index.html").read_bytes(), media_type="text/html; charset=utf-8",
                        headers=_PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=str(_STATIC)), name="static")

    @app.middleware("http")
    async def _headers(request: Request, call_next):
        response = await call_next(request)
        if request.url.path.startswith("/static/"):
            response.headers.update(_PAGE_HEADERS)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    # -- read endpoints ------------------------------------------------------------------------------------
    @app.get("/health", response_model=HealthOut, summary="Service status",
             description="Whether the service is up, whether it is read-only, and the gallery's size and pipeline.")
    def health() -> dict:
        base = {"read_only": auth.read_only, "write_access": _access(auth), "max_upload_bytes": limit,
                "top": default_top, "version": nirvis.__version__}
        try:
            stats = gallery.stats()
        except (GalleryError, OSError) as exc:  # still answer: health says what is wrong
            return {"status": f"gallery unavailable: {exc}", "gallery": {}, **base}
        shown = {k: stats.get(k) for k in _HEALTH_KEYS if k in stats}
        shown["hallucination"] = bool(stats.get("hallucination"))  # not its path on the server
        return {"status": "ok", "people": _int_or_none(stats.get("people")),
                "images": _int_or_none(stats.get("images")), "gallery": jsonable_encoder(shown), **base}

    @app.post("/identify", response_model=IdentifyOut, summary="Identify one face",
              description="Upload one image (multipart field `image`). Returns the best `top` enrolled people, "
                          "best first, with cosine scores, and the decision at the gallery's threshold. A NIR probe "
                          "is read as gray luminance unless `channel` says otherwise (RAP3DF: `red`). "
                          "409: the gallery is empty; 422: no face found, or a corrupt image; 415: not an image.",
              responses=_errors(400, 409, 413, 415, 422), response_model_exclude_unset=True)
    def identify(
        image: Annotated[UploadFile, File(description="The probe image (PNG, JPEG, BMP, TIFF, WebP, ...; "
                                                      "recognised by content, 8 or 16 bits).")],
        top: Annotated[int | None, Query(ge=1, le=MAX_TOP, description="Matches to return (default: the "
                                                                        "service's).")] = None,
        channel: Annotated[Channel | None, Query(description="Read only this channel (default: gray for a NIR "
                                                             "probe, RGB for a VIS one); RAP3DF NIR keeps IR in "
                                                             "the red channel.")] = None,
        modality: Annotated[Modality, Query(description="nir: hallucinated first when the gallery has a "
                                                        "model.")] = Modality.nir,
        faces: Annotated[bool, Query(description="Also return the aligned (and hallucinated) face as base64 "
                                                 "PNG.")] = False,
    ) -> dict:
        data, name = read_upload(image)
        # the channel rule of a probe read from a file (Gallery.identify): NIR gray unless told, VIS as stored
        ch = channel.value if channel is not None else ("gray" if modality is Modality.nir else None)
        with work:
            pixels = decode(data, name, ch)
            try:
                res = gallery.identify(pixels, top=top or default_top, modality=modality.value, source=name)
            except (GalleryError, NoFaceError, ImageError) as exc:
                raise refused(exc) from None
            out = jsonable_encoder(res.to_dict())
            if faces:
                out["faces"] = {"aligned": _png_b64(res.aligned),
                                "hallucinated": None if res.hallucinated is None else _png_b64(res.hallucinated)}
        return out

    @app.get("/people", response_model=PeopleOut, summary="The enrolled people",
             description="Each person with their number of images and first enrolment time (UTC), sorted by id.")
    def people() -> dict:
        rows = jsonable_encoder(gallery.people())
        return {"count": len(rows), "people": rows}

    @app.get("/people/{person}/face", summary="A face of a person (PNG thumbnail)",
             description="The aligned face of the person's first enrolled image (or that image itself), as PNG "
                         f"of at most {THUMBNAIL_SIDE} px a side. The person is looked up by id; no path is taken "
                         "from the request.",
             response_class=Response, responses={200: {"content": {"image/png": {}}}, **_errors(400, 404, 422)})
    def face(person: PersonId) -> Response:
        _check_person(person)
        try:
            path = Path(gallery.face_image(person))
            png = thumbs.get(path)
        except GalleryError as exc:
            raise HTTPException(404, str(exc)) from None
        except (ImageError, OSError) as exc:
            log.warning("face of %s: %s", person, exc)
            raise HTTPException(404, f"person {person!r}: the enrolled image cannot be read any more") from None
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=60"})

    # -- write endpoints (token) ---------------------------------------------------------------------------
    writes = APIRouter(route_class=_write_route_class(auth), dependencies=[Security(bearer)],
                       responses=_errors(401, 403))

    @writes.post("/enroll", response_model=EnrollOut, summary="Enrol image(s) of one person",
                 description=f"Multipart: `person` and one or more `images` (at most {MAX_ENROLL_IMAGES}), VIS "
                             "photos. 201 when at least one image was enrolled; 200 when every image was "
                             "already enrolled (a duplicate by content); 422 when none could be enrolled (the "
                             "report's failures say why). Images without a face are failures; the rest goes in.",
                 status_code=201, responses={200: {"model": EnrollOut, "description": "Nothing new: duplicates."},
                                             **_errors(400, 409, 413, 415, 422)})
    def enroll(
        person: Annotated[str, Form(description=f"The person's id: {_PERSON_RULE}.",
                                    json_schema_extra=_PERSON_SCHEMA)],
        images: Annotated[list[UploadFile], File(description="Image(s) of this person.")],
        channel: Annotated[Channel | None, Query(description="Read only this channel (default: as stored).")] = None,
    ) -> Response:
        _check_person(person)
        if len(images) > MAX_ENROLL_IMAGES:
            raise HTTPException(413, f"{len(images)} images in one request; send at most {MAX_ENROLL_IMAGES}")
        items, failures = [], []
        with work:
            for up in images:
                data, name = read_upload(up)
                try:
                    pixels = decode(data, name, channel.value if channel is not None else None)
                except HTTPException as exc:
                    if exc.status_code == 413:
                        raise
                    failures.append({"path": name, "reason": str(exc.detail)})
                    continue
                items.append((person, pixels, name, hashlib.sha256(data).hexdigest()))
            report = {"enrolled": [], "duplicates": [], "failures": []}
            if items:
                try:
                    report = jsonable_encoder(gallery.enroll_images(items).to_dict())
                except GalleryError as exc:
                    raise refused(exc) from None
        report["failures"] = failures + list(report.get("failures", []))
        report["counts"] = {k: len(report[k]) for k in ("enrolled", "duplicates", "failures")}
        out = {"person": person, **report}
        if report["enrolled"]:
            return JSONResponse(out, status_code=201)
        if report["duplicates"] and not report["failures"]:
            return JSONResponse(out, status_code=200)
        if len(report["failures"]) == 1 and len(images) == 1:
            detail = f"{person}: not enrolled: {report['failures'][0]['reason']}"
        else:
            detail = f"{person}: none of the {len(images)} images was enrolled (see failures)"
        return JSONResponse({"detail": detail, **out}, status_code=422)

    @writes.delete("/people/{person}", response_model=RemovedOut, summary="Remove a person",
                   description="Removes every enrolled image of the person (rows, index entries, kept faces).",
                   responses=_errors(400, 404, 422))
    def remove(person: PersonId) -> dict:
        _check_person(person)
        try:
            n = gallery.remove(person)
        except PersonIdError as exc:
            raise HTTPException(400, str(exc)) from None
        except GalleryError as exc:  # the only other refusal: no such person
            raise HTTPException(404, str(exc)) from None
        return {"person": person, "removed": int(n)}

    app.include_router(writes)
    return app


#: What GET /health shows of :meth:`Gallery.stats` (not the gallery's path on the server).
_HEALTH_KEYS = ("people", "images", "created_at", "embedder", "fingerprint", "dim", "embedding", "index",
                "index_rows", "threshold", "far")


def _access(auth: _Auth) -> str:
    return ("disabled: read-only, no token configured" if auth.read_only
            else "bearer token (Authorization: Bearer <token>)")


def _int_or_none(v: Any) -> int | None:
    try:
        return None if v is None else int(v)
    except (TypeError, ValueError):
        return None
