"""A gallery of enrolled VIS faces, searched with NIR (or VIS) probes: the watch-list job of the paper's
introduction.

Folder layout::

    G/
      gallery.sqlite     the source of truth (rows, pipeline, configuration, threshold); WAL mode
      index.faiss        FAISS index derived from it (rebuilt from SQLite whenever the two disagree)
      models/            copies of the pipeline's embedding / hallucination / ONNX model files
      faces/ab/<sha256>.png   the aligned face of each enrolled image (for display), when ``keep_faces``

Crash safety: a gallery folder appears whole (it is built beside its final name and renamed); each
enrolment batch is one SQLite transaction; the aligned faces are written (atomically) before the rows that
name them; the index file is written atomically and records the row count and a checksum of the ids and
vectors it holds, and is brought up to date from SQLite (new rows added, or rebuilt) whenever it disagrees.

Thread safety: one :class:`Gallery` may be used from several threads (a web service). Database and index
access are serialised by one lock, the models (alignment, networks) by another, so one thread's search
never waits for another's face detection.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nirvis.gallery.errors import EmptyGalleryError, GalleryError, PersonIdError
from nirvis.gallery.index import INDEX_FILE, IndexConfig, VectorIndex
from nirvis.gallery.pipeline import GalleryPipeline, build_record, check_request, describe
from nirvis.gallery.store import DB_FILE, FaceRow, GalleryStore, utc_now
from nirvis.gallery.threshold import default_threshold

__all__ = ["Gallery", "GalleryConfig", "Match", "Identification", "EnrollReport", "PERSON_ID_PATTERN",
           "validate_person_id", "ALIGNED_LANDMARKS"]

log = logging.getLogger(__name__)

FORMAT = "nirvis-gallery"
VERSION = 1

#: Valid person ids: a letter or digit, then up to 127 letters, digits, ``.``, ``_`` or ``-``.
PERSON_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

#: dlib's 5 landmarks (:data:`nirvis.faces.types.LANDMARK_NAMES_5`) of a face already aligned to the 224x224
#: template, for images enrolled with ``aligned=True``: the mean over 60 CelebA faces aligned by nirvis
#: (standard deviation 1-5 px).
ALIGNED_LANDMARKS = np.array([[157.1, 90.7], [130.8, 92.5], [67.7, 91.7], [93.1, 93.0], [110.4, 141.8]],
                             dtype=np.float32)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def validate_person_id(person: Any) -> str:
    """``person`` if it is a valid id (:data:`PERSON_ID_PATTERN`).

    Raises
    ------
    PersonIdError
        Naming the id and the rule.
    """
    if not isinstance(person, str) or not PERSON_ID_PATTERN.match(person):
        raise PersonIdError(f"person id {person!r} is not valid: use 1-128 letters, digits, '.', '_' or '-', "
                            "starting with a letter or digit")
    return person


@dataclass(frozen=True)
class GalleryConfig:
    """Settings of a gallery, fixed at creation (the index settings can be changed later).

    Attributes
    ----------
    index
        How the FAISS index is built (exact up to ``index.exact_max`` rows).
    keep_faces
        Keep each enrolled image's aligned 224x224 face in ``faces/`` (what :meth:`Gallery.face_image` shows).
    batch_size
        Images per enrolment transaction (and per call of the network).
    """

    index: IndexConfig = field(default_factory=IndexConfig)
    keep_faces: bool = True
    batch_size: int = 32

    def __post_init__(self) -> None:
        if not isinstance(self.index, IndexConfig):
            raise TypeError(f"GalleryConfig: index must be an IndexConfig, got {self.index!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"GalleryConfig: batch_size must be an int >= 1, got {self.batch_size!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index.to_dict(), "keep_faces": bool(self.keep_faces), "batch_size": self.batch_size}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GalleryConfig:
        return cls(index=IndexConfig.from_dict(d.get("index") or {}), keep_faces=bool(d.get("keep_faces", True)),
                   batch_size=int(d.get("batch_size", 32)))


@dataclass(frozen=True)
class Match:
    """One gallery person for a probe: the best cosine score over their images, and that image's source."""

    person: str
    score: float
    path: str

    def to_dict(self) -> dict[str, Any]:
        return {"person": self.person, "score": self.score, "path": self.path}


@dataclass
class Identification:
    """The result of :meth:`Gallery.identify`.

    Attributes
    ----------
    probe
        The probe's name (its path, or the ``source`` given).
    matches
        One entry per person, best first (at most ``top``).
    decision
        ``{"person": id or None, "threshold": t or None, "far": f or None}``: the best match when its score
        reaches the gallery's threshold, else ``None``; all ``None`` when the gallery has no threshold.
    aligned
        ``(224, 224, 3)`` uint8 RGB: the aligned probe (a gray NIR face replicated to 3 channels).
    hallucinated
        ``(224, 224, 3)`` uint8 RGB: the hallucinated VIS face the network saw, or ``None``.
    """

    probe: str
    matches: list[Match]
    decision: dict[str, Any]
    aligned: np.ndarray | None = None
    hallucinated: np.ndarray | None = None

    def to_dict(self) -> dict[str, Any]:
        """``{"probe", "matches": [{"person", "score", "path"}, ...], "decision": {"person", "threshold", "far"}}``."""
        return {"probe": self.probe, "matches": [m.to_dict() for m in self.matches], "decision": dict(self.decision)}


@dataclass
class EnrollReport:
    """What an enrolment did.

    Attributes
    ----------
    enrolled
        ``(person, path)`` of each image stored.
    duplicates
        ``(person, path, existing person)`` of each image skipped because the same file content (SHA-256) is
        already enrolled (``existing person`` may differ from ``person``).
    failures
        ``(path, reason)`` of each image that could not be enrolled (unreadable, no face, ...).
    """

    enrolled: list[tuple[str, str]] = field(default_factory=list)
    duplicates: list[tuple[str, str, str]] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"enrolled": [{"person": p, "path": s} for p, s in self.enrolled],
                "duplicates": [{"person": p, "path": s, "existing_person": e} for p, s, e in self.duplicates],
                "failures": [{"path": s, "reason": r} for s, r in self.failures],
                "counts": {"enrolled": len(self.enrolled), "duplicates": len(self.duplicates),
                           "failures": len(self.failures)}}

    def extend(self, other: EnrollReport) -> None:
        self.enrolled += other.enrolled
        self.duplicates += other.duplicates
        self.failures += other.failures


@dataclass
class _Item:
    person: str
    name: str                     # the source as recorded (absolute path, or the upload's name)
    sha256: str
    path: Path | None = None      # file to read, or None for an image given as an array
    image: np.ndarray | None = None


class Gallery:
    """A gallery of enrolled faces: SQLite rows + a FAISS index + the pipeline that made the vectors.

    Use :meth:`create` or :meth:`open` (not the constructor). Close it (or use ``with``) to write the index.

    Examples
    --------
    >>> from nirvis.gallery import Gallery                                       # doctest: +SKIP
    >>> with Gallery.create("watchlist", embedder="dlib") as g:                  # doctest: +SKIP
    ...     g.enroll([("alice", "photos/alice.jpg"), ("bob", "photos/bob.jpg")])
    >>> with Gallery.open("watchlist") as g:                                     # doctest: +SKIP
    ...     res = g.identify("night/probe.png", top=5)
    ...     print(res.to_dict())
    """

    def __init__(self, folder: Path, store: GalleryStore, *, models_dir: str | os.PathLike | None = None,
                 data_root: str | os.PathLike | None = None, cache: Any = None) -> None:
        self.folder = Path(folder)
        self._store = store
        self._models_dir = models_dir
        self._data_root = data_root
        self._cache = cache
        fmt, version = store.get_meta("format"), store.get_meta("version")
        if fmt != FORMAT:
            store.close()
            raise GalleryError(f"{self.folder}: not a nirvis gallery (format {fmt!r})")
        if version != VERSION:
            store.close()
            raise GalleryError(f"{self.folder}: gallery format version {version!r} is not supported (this nirvis "
                               f"reads {VERSION})")
        self._record: dict[str, Any] = store.get_meta("pipeline")
        if not isinstance(self._record, dict) or not {"fingerprint", "dim", "embedder"} <= set(self._record):
            store.close()
            raise GalleryError(f"{self.folder}: the gallery's pipeline record is missing or damaged")
        try:
            self.config = GalleryConfig.from_dict(store.get_meta("config") or {})
        except (TypeError, ValueError) as exc:
            store.close()
            raise GalleryError(f"{self.folder}: bad gallery configuration ({exc})") from None
        self._lock = threading.RLock()          # database + index
        self._model_lock = threading.Lock()     # alignment, networks
        self._pipeline: GalleryPipeline | None = None
        self._index: VectorIndex | None = None
        self._index_loaded = False
        self._index_dirty = False
        self._data_version: int | None = None
        self._closed = False
        foreign = store.foreign_rows(self.fingerprint)
        if foreign:
            log.warning("%s: %d row(s) were made by another pipeline than the gallery's (%s); they are left out "
                        "of the search", self.folder, foreign, self.fingerprint)

    # -- creation ----------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike, embedder: str = "dlib", embedding: str | os.PathLike | None = None,
               hallucination: str | os.PathLike | None = None, models_dir: str | os.PathLike | None = None, *,
               config: GalleryConfig | None = None, threshold: str | float | None = "default",
               far: float | None = None, data_root: str | os.PathLike | None = None, cache: Any = None) -> Gallery:
        """Create a gallery in the folder ``path`` (which must not exist, or be empty).

        Parameters
        ----------
        path
            The gallery folder.
        embedder
            ``--embedder`` spec: ``dlib``, ``edgeface-xs``, ``edgeface-xxs``, ``onnx:PATH`` or a plug-in name.
        embedding
            A saved embedding (``nirvis fit-embedding`` output: the stem or either file), fitted on this
            embedder's features; applied to every vector.
        hallucination
            A hallucination model folder; applied to the aligned faces of NIR probes.
        models_dir
            Where known model files are looked for first (``--models-dir``).
        config
            :class:`GalleryConfig`.
        threshold, far
            ``"default"``: the built-in threshold of the embedder when there is one
            (:data:`nirvis.gallery.threshold.DEFAULT_THRESHOLDS`), else none; ``None``: none; a number: that
            cosine threshold (``far``: the FAR it was set at, when known).
        data_root, cache
            Where the data is (a place models are looked for), and a
            :class:`~nirvis.features.cache.FeatureCache` for alignments and features (``None``: no cache).

        Raises
        ------
        GalleryError
            If ``path`` is a file or a folder that is not empty, or a model is missing or does not fit.
        """
        path = Path(path)
        config = config or GalleryConfig()
        if path.exists():
            if not path.is_dir():
                raise GalleryError(f"{path}: is a file; a gallery is a folder")
            if (path / DB_FILE).exists():
                raise GalleryError(f"{path}: is already a gallery; open it (Gallery.open) instead of creating it")
            if any(path.iterdir()):
                raise GalleryError(f"{path}: folder exists and is not empty; give a new or empty folder for the gallery")
        parent = path.absolute().parent
        parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_builds(parent, path.name)
        tmp = parent / f".{path.name}.creating-{os.getpid()}-{secrets.token_hex(4)}"
        tmp.mkdir()
        try:
            record = build_record(tmp, embedder, embedding, hallucination, models_dir, data_root)
            if threshold == "default":
                thr = default_threshold(record)
            elif threshold is None:
                thr = {"threshold": None, "far": None, "source": None}
            else:
                thr = {"threshold": _check_threshold(threshold), "far": _check_far(far), "source": "given at creation"}
            store = GalleryStore(tmp, create=True)
            try:
                store.set_meta({"format": FORMAT, "version": VERSION, "created_at": utc_now(), "pipeline": record,
                                "config": config.to_dict(), "threshold": thr})
            finally:
                store.close()
            for leftover in ("-wal", "-shm"):
                (tmp / (DB_FILE + leftover)).unlink(missing_ok=True)
            try:
                os.rename(tmp, path)  # replaces an empty folder; fails if another process created it meanwhile
            except OSError as exc:
                raise GalleryError(f"{path}: cannot create the gallery there ({exc.strerror or exc}); did another "
                                   "process create it meanwhile?") from None
            _fsync_dir(parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("created gallery %s: %s", path, describe(record))
        return cls.open(path, models_dir, data_root=data_root, cache=cache)

    @classmethod
    def open(cls, path: str | os.PathLike, models_dir: str | os.PathLike | None = None, *,
             embedder: str | None = None, embedding: str | os.PathLike | None = None,
             hallucination: str | os.PathLike | None = None, data_root: str | os.PathLike | None = None,
             cache: Any = None) -> Gallery:
        """Open an existing gallery.

        ``embedder``, ``embedding`` and ``hallucination``, when given, must be the gallery's own (a request
        for another pipeline is refused with :class:`~nirvis.gallery.PipelineMismatchError`, saying what
        differs). The models themselves are loaded on first use.

        Raises
        ------
        GalleryError
            If ``path`` is not a gallery.
        """
        path = Path(path)
        if not path.is_dir():
            raise GalleryError(f"{path}: no such gallery folder")
        g = cls(path, GalleryStore(path), models_dir=models_dir, data_root=data_root, cache=cache)
        try:
            check_request(path, g._record, embedder, embedding, hallucination)
        except GalleryError:
            g.close()
            raise
        return g

    @classmethod
    def open_or_create(cls, path: str | os.PathLike, embedder: str | None = None,
                       embedding: str | os.PathLike | None = None, hallucination: str | os.PathLike | None = None,
                       models_dir: str | os.PathLike | None = None, **kwargs: Any) -> tuple[Gallery, bool]:
        """Open the gallery at ``path`` (checking any pipeline given against it) or create it (``embedder``
        defaulting to ``dlib``). Returns ``(gallery, created)``."""
        path = Path(path)
        if not (path / DB_FILE).exists():
            try:
                return cls.create(path, embedder or "dlib", embedding, hallucination, models_dir, **kwargs), True
            except GalleryError:
                if not (path / DB_FILE).exists():  # not a race with another creator: a real error
                    raise
        open_kw = {k: v for k, v in kwargs.items() if k in ("data_root", "cache")}
        return cls.open(path, models_dir, embedder=embedder, embedding=embedding, hallucination=hallucination,
                        **open_kw), False

    # -- properties ----------------------------------------------------------------------------------
    @property
    def pipeline(self) -> dict[str, Any]:
        """The pipeline record (a copy): embedder, fingerprints, models, dimension."""
        return dict(self._record)

    @property
    def fingerprint(self) -> str:
        """Fingerprint of the models that make the gallery's vectors (recorded on each row)."""
        return str(self._record["fingerprint"])

    @property
    def dim(self) -> int:
        return int(self._record["dim"])

    @property
    def threshold(self) -> dict[str, Any]:
        """``{"threshold": t or None, "far": f or None, "source": ...}`` (and, when set from an evaluation,
        the details of :class:`~nirvis.gallery.threshold.ThresholdChoice`)."""
        with self._lock:
            return dict(self._store.get_meta("threshold") or {"threshold": None, "far": None, "source": None})

    def __repr__(self) -> str:
        return f"Gallery({str(self.folder)!r}, {describe(self._record)})"

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- the pipeline --------------------------------------------------------------------------------
    def _pipe(self) -> GalleryPipeline:
        with self._model_lock:
            if self._pipeline is None:
                self._pipeline = GalleryPipeline.load(self.folder, self._record, self._models_dir, self._data_root,
                                                      self._cache)
            return self._pipeline

    # -- index ---------------------------------------------------------------------------------------
    def _sync_index(self, force: bool = False, save: bool = True) -> VectorIndex:
        """Bring the in-memory index up to SQLite (load the file, add new rows, or rebuild); caller holds
        ``self._lock``."""
        fp, dim, cfg = self.fingerprint, self.dim, self.config.index
        if not self._index_loaded:
            self._index = VectorIndex.load(self.folder / INDEX_FILE, dim, fp, cfg)
            self._index_loaded = True
            force = True
        dv = self._store.data_version()
        if self._index is not None and not force and dv == self._data_version:
            return self._index
        idx = self._index
        state = self._store.state(fp)
        if idx is not None and idx.state == state and not idx.stale_for(state.rows):
            self._data_version = dv
            return idx
        changed = False
        if idx is not None and not idx.stale_for(state.rows) and state.max_id >= idx.state.max_id:
            ids, vecs, new_state, prefix = self._store.vectors(fp, dim, after_id=idx.state.max_id)
            if prefix == idx.state and not idx.stale_for(new_state.rows):
                idx.add(ids, vecs, new_state)
                changed = True
                if len(ids):
                    log.info("%s: index brought up to date (%d new row(s))", self.folder, len(ids))
        if not changed:
            ids, vecs, new_state, _ = self._store.vectors(fp, dim)
            self._index = VectorIndex.build(ids, vecs, dim, cfg, new_state)
            log.info("%s: index rebuilt from the database (%d rows, %s)", self.folder, len(ids), self._index.kind)
        self._index_dirty = True
        self._data_version = dv
        if save:
            self._save_index()
        return self._index

    def _save_index(self) -> None:
        if self._index is None or not self._index_dirty:
            return
        _remove_stale_temp(self.folder, f".{INDEX_FILE}.*")
        try:
            self._index.save(self.folder / INDEX_FILE, self.fingerprint)
            self._index_dirty = False
        except OSError as exc:  # e.g. a read-only gallery: search goes on from memory
            log.warning("%s: cannot write the index file (%s); it will be rebuilt on next open", self.folder, exc)

    def sync_index(self) -> dict[str, Any]:
        """Check the index against SQLite now, update or rebuild it if they disagree, and write it.

        Returns ``{"rows", "kind", "state"}`` of the index afterwards.
        """
        with self._lock:
            idx = self._sync_index(force=True)
            self._save_index()
            return {"rows": idx.ntotal, "kind": idx.kind, "state": idx.state.to_dict()}

    def set_index_config(self, index: IndexConfig) -> None:
        """Change how the index is built (e.g. ``exact_max``); it is rebuilt now."""
        with self._lock:
            self.config = GalleryConfig(index=index, keep_faces=self.config.keep_faces,
                                        batch_size=self.config.batch_size)
            self._store.set_meta({"config": self.config.to_dict()})
            ids, vecs, state, _ = self._store.vectors(self.fingerprint, self.dim)
            self._index = VectorIndex.build(ids, vecs, self.dim, index, state)
            self._index_loaded = self._index_dirty = True
            self._save_index()

    # -- enrolment -----------------------------------------------------------------------------------
    def enroll(self, items: Iterable[tuple[str, str | os.PathLike]], progress: bool | Callable[[int], None] = False,
               *, aligned: bool = False, batch_size: int | None = None) -> EnrollReport:
        """Align, embed (and apply the embedding model to) VIS images, and store them, one transaction per batch.

        Parameters
        ----------
        items
            ``(person, image path)`` pairs. Every person id is checked first (:func:`validate_person_id`).
        progress
            ``True``: a progress bar on stderr; a callable: called with the number of images done after each
            batch.
        aligned
            The images are already aligned 224x224 faces (e.g. ``nirvis align --save-dir`` output): no
            detection; the landmarks are :data:`ALIGNED_LANDMARKS`.
        batch_size
            Images per transaction (default: the gallery's ``batch_size``).

        Returns
        -------
        EnrollReport
            Unreadable images and images with no face are failures, and the rest goes in; an image whose
            content (SHA-256) is already enrolled is skipped and reported as a duplicate.

        Raises
        ------
        PersonIdError
            Naming the first invalid person id (nothing is enrolled).
        """
        from nirvis._io import file_digest

        pairs = [(validate_person_id(p), Path(s)) for p, s in items]
        report = EnrollReport()
        bar = _progress(progress, len(pairs))
        try:
            for start in range(0, len(pairs), batch_size or self.config.batch_size):
                chunk = pairs[start:start + (batch_size or self.config.batch_size)]
                hashed = []
                for person, path in chunk:
                    try:
                        sha = file_digest(path)
                    except OSError as exc:
                        reason = "no such image file" if not path.is_file() else f"unreadable ({exc.strerror or exc})"
                        report.failures.append((os.path.abspath(path), f"{path}: {reason}"))
                        continue
                    hashed.append(_Item(person, os.path.abspath(path), sha, path=path))
                report.extend(self._enroll_batch(hashed, aligned))
                bar(len(chunk))
        finally:
            bar(None)
            with self._lock:
                self._save_index()
        return report

    def enroll_images(self, items: Iterable[tuple[str, np.ndarray, str, str]], *, aligned: bool = False
                      ) -> EnrollReport:
        """Enrol decoded images (e.g. uploads): ``(person, image, source name, sha256 hex of the file)``.

        ``image`` is ``(H, W, 3)`` RGB or ``(H, W)`` gray uint8. The SHA-256 is the uploaded file's, used to
        find duplicates. Everything else is as :meth:`enroll`; one transaction per call (split large sets).

        Raises
        ------
        PersonIdError, GalleryError
            For an invalid person id or a malformed SHA-256 (nothing is enrolled).
        """
        batch = []
        for person, image, name, sha in items:
            validate_person_id(person)
            if not isinstance(sha, str) or not _SHA256.match(sha):
                raise GalleryError(f"{name}: sha256 must be 64 lowercase hex digits, got {sha!r}")
            batch.append(_Item(person, str(name), sha, image=image))
        try:
            return self._enroll_batch(batch, aligned)
        finally:
            with self._lock:
                self._save_index()

    def _enroll_batch(self, items: list[_Item], aligned: bool) -> EnrollReport:
        report = EnrollReport()
        if not items:
            return report
        with self._lock:
            existing = self._store.existing(i.sha256 for i in items)
        todo: list[_Item] = []
        first: dict[str, str] = {}
        for it in items:
            if it.sha256 in existing:
                report.duplicates.append((it.person, it.name, existing[it.sha256]))
            elif it.sha256 in first:
                report.duplicates.append((it.person, it.name, first[it.sha256]))
            else:
                first[it.sha256] = it.person
                todo.append(it)
        if not todo:
            return report
        results = self._embed_enrol(todo, aligned)
        rows: list[FaceRow] = []
        for it, (vec, face, reason) in zip(todo, results):
            if vec is None:
                report.failures.append((it.name, reason))
                continue
            rel = self._write_face(it.sha256, face) if self.config.keep_faces else None
            rows.append(FaceRow(it.person, it.name, it.sha256, self.fingerprint, vec, rel))
        if not rows:
            return report
        with self._lock:
            inserted, skipped = self._store.insert(rows)
            self._sync_index(force=True, save=False)  # adds the new rows (and any another process committed)
        report.enrolled += [(r.person, r.source) for _, r in inserted]
        report.duplicates += [(r.person, r.source, who) for r, who in skipped]
        return report

    def _embed_enrol(self, items: list[_Item], aligned: bool) -> list[tuple[np.ndarray | None, Any, str]]:
        """``(vector or None, aligned face, failure reason)`` of each item (VIS, modality ``"vis"``)."""
        from nirvis._io import read_image
        from nirvis.datasets.base import Sample
        from nirvis.errors import NirvisError
        from nirvis.faces.align import IMAGE_ERRORS

        pipe = self._pipe()
        rec = pipe.recognizer
        cache = rec.cache
        out: list[list[Any]] = [[None, None, ""] for _ in items]
        feats: dict[int, np.ndarray] = {}
        fkeys: dict[int, str] = {}
        with self._model_lock:
            for k, it in enumerate(items):
                try:
                    if it.path is not None and not aligned:
                        s = Sample(it.person, "vis", it.path, f"gallery:{it.sha256}")
                        akey = None
                        if cache is not None:
                            akey, fkeys[k] = rec.cache_keys(s)
                            hit = cache.get("feat", fkeys[k])
                            if _usable(hit, rec.embedder.dim):
                                feats[k] = hit["feature"]
                        face = rec.align_sample(s, akey)
                    else:
                        image = read_image(it.path) if it.path is not None else _check_array(it.image, it.name)
                        face = _aligned_face(image, it.name) if aligned else rec.align(image, source=it.name)
                    out[k][1] = face
                except (NirvisError, *IMAGE_ERRORS) as exc:
                    out[k][2] = str(exc) or type(exc).__name__
            need = [k for k in range(len(items)) if out[k][1] is not None and k not in feats]
            if need:
                for k, vec in zip(need, self._embed_faces([out[k][1] for k in need], [items[k].name for k in need])):
                    if isinstance(vec, str):
                        out[k][1], out[k][2] = None, vec
                        continue
                    feats[k] = vec
                    if k in fkeys:
                        cache.put("feat", fkeys[k], feature=vec, method=np.array(out[k][1].method), reason=np.array(""))
            ok = [k for k in range(len(items)) if out[k][1] is not None]
            if ok:
                vecs = pipe.finish(np.stack([feats[k] for k in ok]), "vis")
                for k, v in zip(ok, vecs):
                    out[k][0] = v
        return [tuple(o) for o in out]  # type: ignore[misc]

    def _embed_faces(self, faces: list[Any], names: list[str]) -> list[np.ndarray | str]:
        """Embedder features of ``faces``; a batch the network refuses is retried face by face, so one bad
        face is a failure (its reason as a string) and not the batch's."""
        from nirvis.faces.align import IMAGE_ERRORS

        rec = self._pipeline.recognizer
        try:
            return list(rec.embed_faces(faces))
        except IMAGE_ERRORS:
            out: list[np.ndarray | str] = []
            for f, n in zip(faces, names):
                try:
                    out.append(rec.embed_faces([f])[0])
                except IMAGE_ERRORS as exc:
                    out.append(f"{n}: the network failed on this face ({exc})")
            return out

    def _write_face(self, sha: str, face: Any) -> str | None:
        """Keep the aligned face as ``faces/ab/<sha256>.png``: written to a temporary name and renamed, so the
        file is whole or absent. Not synced to disk: a face lost to a power cut only means that
        :meth:`face_image` shows the source file instead."""
        import cv2

        rel = f"faces/{sha[:2]}/{sha}.png"
        img = face.image if face.image.ndim == 2 else cv2.cvtColor(face.image, cv2.COLOR_RGB2BGR)
        ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if not ok:  # pragma: no cover
            return None
        dst = self.folder / rel
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            if not dst.parent.is_dir():
                dst.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(buf.tobytes())
            os.replace(tmp, dst)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            log.warning("%s: cannot keep the aligned face (%s)", self.folder / rel, exc)
            return None
        return rel

    # -- identification ------------------------------------------------------------------------------
    def identify(self, probe: str | os.PathLike | np.ndarray, top: int = 5, modality: str = "nir",
                 source: str | None = None, channel: str | None = None, *, aligned: bool = False) -> Identification:
        """Search the gallery for the person in ``probe``.

        Parameters
        ----------
        probe
            An image file, or a decoded image: ``(H, W)`` gray or ``(H, W, 3)`` RGB uint8.
        top
            Number of people to return (each person once, scored by their best image).
        modality
            ``"nir"`` (default): the probe goes through the gallery's hallucination model when it has one,
            and its embedding model with modality ``"nir"``. ``"vis"``: neither hallucinated, and ``"vis"``.
        source
            Name of the probe in the result (default: its path; ``"<array>"`` for an array).
        channel
            How to read a NIR probe: ``"gray"`` (default: luminance), or ``"red"`` / ``"green"`` / ``"blue"``
            (RAP3DF keeps IR in the red channel). For a VIS probe the default keeps RGB.
        aligned
            The probe is already an aligned 224x224 face: no detection (as :meth:`enroll`).

        Returns
        -------
        Identification

        Raises
        ------
        EmptyGalleryError
            When nothing is enrolled.
        nirvis.errors.ImageError, nirvis.errors.NoFaceError
            For an unreadable probe or one with no face (the message names it).
        """
        if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
            raise ValueError(f"top must be an int >= 1, got {top!r}")
        if modality not in ("nir", "vis"):
            raise ValueError(f"modality must be 'nir' or 'vis', got {modality!r}")
        if channel is not None and channel not in ("gray", "red", "green", "blue"):
            raise ValueError(f"channel must be None, 'gray', 'red', 'green' or 'blue', got {channel!r}")
        with self._lock:
            if self._sync_index().ntotal == 0:
                raise EmptyGalleryError(f"{self.folder}: the gallery is empty; enrol faces first "
                                        "(nirvis enroll --gallery G IMAGES)")
        name = source if source is not None else ("<array>" if isinstance(probe, np.ndarray) else str(probe))
        face, vec, hallucinated = self._embed_probe(probe, modality, channel, name, aligned)
        matches = self.search(vec, top)
        thr = self.threshold
        t = thr.get("threshold")
        decision = {"person": None, "threshold": t, "far": thr.get("far")}
        if t is not None and matches and matches[0].score >= t:
            decision["person"] = matches[0].person
        return Identification(name, matches, decision, face.rgb(), hallucinated)

    def _embed_probe(self, probe: Any, modality: str, channel: str | None, name: str, aligned: bool = False
                     ) -> tuple[Any, np.ndarray, np.ndarray | None]:
        from nirvis._io import read_image
        from nirvis.datasets.base import Sample

        pipe = self._pipe()
        rec = pipe.recognizer
        transform = rec.nir_transform if modality == "nir" else None
        with self._model_lock:
            feat = fkey = None
            if isinstance(probe, np.ndarray) or aligned:
                image = probe if isinstance(probe, np.ndarray) else read_image(probe)
                image = _probe_array(image, modality, channel, name)
                face = _aligned_face(image, name) if aligned else rec.align(image, source=name)
            else:
                ch = channel or ("gray" if modality == "nir" else None)
                s = Sample("probe", modality, Path(probe), f"probe:{probe}", channel=ch)
                akey = fkey = None
                if rec.cache is not None:
                    akey, fkey = rec.cache_keys(s)
                    hit = rec.cache.get("feat", fkey)
                    if _usable(hit, rec.embedder.dim):
                        feat = hit["feature"]
                face = rec.align_sample(s, akey)
            seen = transform([face])[0] if transform is not None else face
            if feat is None:
                feat = rec.embed_faces([seen])[0]
                if fkey is not None:
                    rec.cache.put("feat", fkey, feature=feat, method=np.array(face.method), reason=np.array(""))
            vec = pipe.finish(feat[None], modality)[0]
        return face, vec, (seen.rgb() if transform is not None else None)

    def search(self, vector: np.ndarray, top: int = 5, fingerprint: str | None = None) -> list[Match]:
        """The ``top`` best people for a probe vector already made by the gallery's pipeline.

        Parameters
        ----------
        vector
            ``(dim,)`` unit vector.
        fingerprint
            When given, the fingerprint of the pipeline that made ``vector``; another pipeline's is refused.

        Raises
        ------
        PipelineMismatchError, EmptyGalleryError, ValueError
        """
        from nirvis.gallery.errors import PipelineMismatchError

        if fingerprint is not None and fingerprint != self.fingerprint:
            raise PipelineMismatchError(f"{self.folder}: the probe vector was made by pipeline {fingerprint}, the "
                                        f"gallery's vectors by {self.fingerprint}; they are not comparable")
        v = np.asarray(vector, dtype=np.float32).reshape(-1)
        if v.shape != (self.dim,) or not np.isfinite(v).all():
            raise ValueError(f"probe vector must be {self.dim} finite values, got shape {np.shape(vector)}")
        with self._lock:
            idx = self._sync_index()
            n = idx.ntotal
            if n == 0:
                raise EmptyGalleryError(f"{self.folder}: the gallery is empty; enrol faces first")
            k = min(n, max(4 * top, top + 16))
            while True:
                scores, ids = idx.search(v[None], k)
                best: dict[int, float] = {}
                order: list[int] = []
                for s, i in zip(scores[0], ids[0]):
                    if i >= 0 and i not in best:
                        best[int(i)] = float(s)
                        order.append(int(i))
                rows = self._store.rows_by_id(order)
                people: dict[str, Match] = {}
                for i in order:
                    if i in rows and rows[i][0] not in people:
                        people[rows[i][0]] = Match(rows[i][0], round(best[i], 6), rows[i][1])
                if len(people) >= top or k >= n:
                    break
                k = min(n, 4 * k)
        return sorted(people.values(), key=lambda m: -m.score)[:top]

    # -- threshold -----------------------------------------------------------------------------------
    def set_threshold(self, threshold: float | None, far: float | None = None, source: str | None = None,
                      **details: Any) -> dict[str, Any]:
        """Set (or, with ``None``, clear) the decision threshold (a cosine score) and the FAR it was set at."""
        value = {"threshold": None if threshold is None else _check_threshold(threshold),
                 "far": None if far is None else _check_far(far), "source": source, **details}
        with self._lock:
            self._store.set_meta({"threshold": value})
        return value

    # -- people --------------------------------------------------------------------------------------
    def people(self) -> list[dict[str, Any]]:
        """``[{"person", "images", "enrolled_at"}]`` (first enrolment time, UTC), sorted by person."""
        with self._lock:
            return [{"person": p, "images": n, "enrolled_at": t} for p, n, t in self._store.people()]

    def remove(self, person: str) -> int:
        """Remove every image of ``person``; returns the number of rows removed.

        Raises
        ------
        GalleryError
            If ``person`` is not in the gallery (or not a valid id).
        """
        validate_person_id(person)
        with self._lock:
            idx = self._sync_index(save=False)
            gone = self._store.remove_person(person)
            if not gone:
                raise GalleryError(f"{self.folder}: no person {person!r} in the gallery")
            state = self._store.state(self.fingerprint)
            if not idx.remove(np.array([i for i, _ in gone], dtype=np.int64), state) or idx.stale_for(state.rows):
                self._index_loaded = True
                ids, vecs, st, _ = self._store.vectors(self.fingerprint, self.dim)
                self._index = VectorIndex.build(ids, vecs, self.dim, self.config.index, st)
            self._index_dirty = True
            self._sync_index(force=True, save=False)
            self._save_index()
        for _, rel in gone:  # one file per image content (sha256), so no other row names it
            if rel:
                (self.folder / rel).unlink(missing_ok=True)
        return len(gone)

    def face_image(self, person: str) -> Path:
        """A file showing ``person``: the aligned face of their first enrolled image, else its source file.

        Raises
        ------
        GalleryError
            If the person is unknown or no image of them can be found on disk.
        """
        validate_person_id(person)
        with self._lock:
            rows = self._store.person_rows(person)
        if not rows:
            raise GalleryError(f"{self.folder}: no person {person!r} in the gallery")
        for _, src, rel in rows:
            if rel and (self.folder / rel).is_file():
                return self.folder / rel
        for _, src, _ in rows:
            if Path(src).is_file():
                return Path(src)
        raise GalleryError(f"{self.folder}: no image of {person!r} is on disk (no kept face, sources moved)")

    def stats(self) -> dict[str, Any]:
        """People, images, pipeline, index kind and rows, threshold, size on disk (bytes)."""
        with self._lock:
            n_people, n_images = self._store.counts()
            idx = self._sync_index()
            thr = self.threshold
            created = self._store.get_meta("created_at")
            foreign = self._store.foreign_rows(self.fingerprint)
        r = self._record
        size = sum(f.stat().st_size for f in self.folder.rglob("*") if f.is_file())
        return {"path": str(self.folder), "people": n_people, "images": n_images, "created_at": created,
                "embedder": r["embedder"], "embedder_fingerprint": r["embedder_fingerprint"],
                "fingerprint": self.fingerprint, "dim": self.dim,
                "embedding": (r["embedding"] or {}).get("method"),
                "hallucination": (r["hallucination"] or {}).get("source"),
                "index": idx.kind, "index_rows": idx.ntotal, "foreign_rows": foreign,
                "threshold": thr.get("threshold"), "far": thr.get("far"), "threshold_source": thr.get("source"),
                "size_bytes": size}

    def check(self) -> dict[str, Any]:
        """Verify every row (vector size, unit norm, hash) and that the index holds exactly the rows' ids
        (after bringing it up to date). Returns ``{"ok", "problems", "rows", "index_rows"}``."""
        with self._lock:
            problems = self._store.verify(self.dim)
            idx = self._sync_index(force=True)
            ids, _, state, _ = self._store.vectors(self.fingerprint, self.dim)
            if not np.array_equal(np.sort(ids), idx.ids()):
                problems.append(f"the index holds other ids than the database ({idx.ntotal} vs {len(ids)} rows)")
            if idx.state != state:
                problems.append("the index's recorded state differs from the database's")
        return {"ok": not problems, "problems": problems, "rows": int(len(ids)), "index_rows": idx.ntotal}

    def close(self) -> None:
        """Write the index if it changed, and close the database."""
        with self._lock:
            if self._closed:
                return
            self._save_index()
            self._store.close()
            self._closed = True


# -- helpers -------------------------------------------------------------------------------------------
def _usable(hit: dict[str, np.ndarray] | None, dim: int) -> bool:
    """A cached feature record with a finite feature of the embedder's size (failures are aligned again)."""
    if hit is None or not {"reason", "feature"} <= set(hit):
        return False
    f = hit["feature"]
    return not str(hit["reason"]) and f.shape == (dim,) and bool(np.isfinite(f).all())


def _check_array(image: Any, name: str) -> np.ndarray:
    from nirvis.errors import ImageError

    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ImageError(f"{name}: the image must be a uint8 numpy array, got "
                         f"{getattr(image, 'dtype', type(image).__name__)}")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)) or image.size == 0:
        raise ImageError(f"{name}: the image must be (H, W) gray or (H, W, 3) RGB, got shape {image.shape}")
    return image


def _probe_array(image: Any, modality: str, channel: str | None, name: str) -> np.ndarray:
    """A decoded probe, as a NIR probe is read from a file: one channel (gray luminance by default)."""
    image = _check_array(image, name)
    if modality == "vis" and channel is None or image.ndim == 2:
        return image
    ch = channel or "gray"
    if ch == "gray":
        import cv2

        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return np.ascontiguousarray(image[:, :, {"red": 0, "green": 1, "blue": 2}[ch]])


def _aligned_face(image: np.ndarray, name: str):
    """A :class:`~nirvis.faces.types.Face` of an image that is already an aligned 224x224 face."""
    from nirvis.errors import ImageError
    from nirvis.faces.align import anchors_from_landmarks
    from nirvis.faces.types import TEMPLATE_SIZE, Face

    if image.shape[:2] != (TEMPLATE_SIZE, TEMPLATE_SIZE):
        raise ImageError(f"{name}: an aligned face must be {TEMPLATE_SIZE}x{TEMPLATE_SIZE} pixels, got "
                         f"{image.shape[1]}x{image.shape[0]} (enrol it without --aligned to detect the face)")
    pts = ALIGNED_LANDMARKS.copy()
    return Face(image=np.ascontiguousarray(image), landmarks=pts,
                anchors=anchors_from_landmarks(pts.astype(np.float64)).astype(np.float32),
                matrix=np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), method="aligned", score=float("nan"),
                source=name, meta={"source_shape": (TEMPLATE_SIZE, TEMPLATE_SIZE)})


def _check_threshold(t: Any) -> float:
    import math

    if isinstance(t, bool) or not isinstance(t, (int, float, np.floating)) or not math.isfinite(float(t)) \
            or not -1.0 <= float(t) <= 1.0:
        raise GalleryError(f"threshold {t!r}: must be a cosine score in [-1, 1]")
    return float(t)


def _check_far(f: Any) -> float | None:
    import math

    if f is None:
        return None
    if isinstance(f, bool) or not isinstance(f, (int, float, np.floating)) or not math.isfinite(float(f)) \
            or not 0 < float(f) <= 1:
        raise GalleryError(f"far {f!r}: must be a false-accept rate in (0, 1]")
    return float(f)


def _progress(progress: bool | Callable[[int], None], total: int) -> Callable[[int | None], None]:
    """``update(n)`` after each batch, ``update(None)`` at the end."""
    if callable(progress):
        return lambda n: None if n is None else progress(n)
    if not progress:
        return lambda n: None
    from tqdm import tqdm

    bar = tqdm(total=total, desc="enrol", unit="img", file=sys.stderr, mininterval=0.5)
    return lambda n: bar.close() if n is None else bar.update(n)


def _remove_stale_builds(parent: Path, name: str) -> None:
    """Remove folders left by creations of ``name`` whose process is gone (a creation killed midway)."""
    for p in parent.glob(f".{name}.creating-*"):
        try:
            pid = int(p.name.rsplit("-", 2)[-2])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
        except (ValueError, IndexError, PermissionError, OSError):
            continue


def _remove_stale_temp(folder: Path, pattern: str, age_s: float = 600.0) -> None:
    """Remove temporary files matching ``pattern`` older than ``age_s`` seconds: left by a process killed while
    writing (a younger one may be another process's write in progress)."""
    import time

    now = time.time()
    for p in folder.glob(pattern):
        try:
            if now - p.stat().st_mtime > age_s:
                p.unlink()
        except OSError:
            continue


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
