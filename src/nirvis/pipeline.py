"""The one pipeline object: image -> align -> embed, used by the CLI, the service and the experiments."""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from nirvis.datasets.base import Sample
from nirvis.errors import ImageError, NirvisError, NoFaceError
from nirvis.faces.align import IMAGE_ERRORS, AlignConfig, FaceAligner
from nirvis.faces.types import Face
from nirvis.features.base import Embedder, get_embedder
from nirvis.features.cache import FeatureCache, file_digest

__all__ = ["Recognizer", "FeatureSet", "Failure", "FaceTransform"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Failure:
    """One sample that produced no features, and why."""

    capture_id: str
    path: str
    reason: str


@dataclass
class FeatureSet:
    """Features of a list of samples.

    Attributes
    ----------
    samples
        The samples, in the order of the rows.
    features
        ``(n, d)`` float32; rows of failed samples are NaN.
    ok
        ``(n,)`` bool, False where alignment or reading failed.
    methods
        Detector step that found each face (``""`` for failures).
    failures
        One :class:`Failure` per failed sample: counted in every result, never dropped silently.
    """

    samples: list[Sample]
    features: np.ndarray
    ok: np.ndarray
    methods: list[str]
    failures: list[Failure] = field(default_factory=list)

    def index(self) -> dict[str, int]:
        """Row of each ``capture_id`` (built once; the set is not modified after featurizing)."""
        if getattr(self, "_index", None) is None:
            self._index = {s.capture_id: i for i, s in enumerate(self.samples)}
        return self._index

    def updated(self, other: FeatureSet) -> FeatureSet:
        """A copy whose rows for ``other``'s samples come from ``other`` (e.g. NIR features of hallucinated
        faces over the raw ones); samples only in ``other`` are appended. Failures follow the rows."""
        idx = dict(self.index())
        samples, methods = list(self.samples), list(self.methods)
        for s in other.samples:
            if s.capture_id not in idx:
                idx[s.capture_id] = len(samples)
                samples.append(s)
                methods.append("")
        n_new = len(samples) - len(self.samples)
        features = np.concatenate([self.features, np.full((n_new, self.features.shape[1]), np.nan, np.float32)])
        ok = np.concatenate([self.ok, np.zeros(n_new, bool)])
        for i, s in enumerate(other.samples):
            r = idx[s.capture_id]
            features[r], ok[r], methods[r] = other.features[i], other.ok[i], other.methods[i]
        replaced = {s.capture_id for s in other.samples}
        failures = [f for f in self.failures if f.capture_id not in replaced] + list(other.failures)
        return FeatureSet(samples, features, ok, methods, failures)

    def take(self, samples: Sequence[Sample]) -> tuple[np.ndarray, np.ndarray]:
        """Features and ok-mask of ``samples`` (which must be in this set)."""
        idx = self.index()
        rows = [idx[s.capture_id] for s in samples]
        return self.features[rows], self.ok[rows]


@runtime_checkable
class FaceTransform(Protocol):
    """Something that changes aligned faces before the embedder sees them, e.g. hallucination of NIR
    probes (paper Sec. 3). ``fingerprint`` must change whenever the output can (it keys the cache)."""

    fingerprint: str

    def __call__(self, faces: Sequence[Face]) -> list[Face]:
        ...


class Recognizer:
    """Align and embed faces with a frozen VIS network; the object every command uses.

    Parameters
    ----------
    embedder
        An :class:`~nirvis.features.base.Embedder` or a registered name (default ``"dlib"``).
    align
        Alignment settings. By default the embedder's: its :attr:`~nirvis.features.base.Embedder.landmark_model`
        (EdgeFace is cut from ArcFace's keypoints, so it aligns with dlib's 68-point model); a config with
        another landmark model is refused.
    cache
        Feature cache, or ``None`` for no caching. It also keeps the aligned faces, so a second
        embedder or a new ``nir_transform`` never detects again.
    nir_transform
        Applied by :meth:`featurize` to the aligned faces of NIR samples before embedding (e.g. a
        :class:`~nirvis.hallucination.HallucinatedFaces`); VIS samples are embedded as they are. The
        single-image methods (:meth:`embed_image`, :meth:`embed_file`) do not know the modality and never
        apply it: call the transform on the aligned face yourself.

    Examples
    --------
    >>> from nirvis.pipeline import Recognizer                      # doctest: +SKIP
    >>> rec = Recognizer()                                          # doctest: +SKIP
    >>> vec = rec.embed_file("probe.png")                           # doctest: +SKIP
    """

    def __init__(self, embedder: Embedder | str = "dlib", align: AlignConfig | None = None,
                 cache: FeatureCache | None = None, nir_transform: FaceTransform | None = None) -> None:
        self.embedder = get_embedder(embedder) if isinstance(embedder, str) else embedder
        wanted = getattr(self.embedder, "landmark_model", "shape5")  # an embedder of the user's may not say
        if align is None:
            align = AlignConfig(landmark_model=wanted)
        elif align.landmark_model != wanted:
            raise ValueError(f"embedder {getattr(self.embedder, 'name', self.embedder)!r} is cut from the landmarks of {wanted!r}, but the "
                             f"alignment config has landmark_model={align.landmark_model!r}; leave align unset, or "
                             f"set landmark_model={wanted!r}")
        self.aligner = FaceAligner(align)
        self.cache = cache
        if nir_transform is not None and not isinstance(nir_transform, FaceTransform):
            raise TypeError(f"nir_transform must have a fingerprint and be callable on faces, got {nir_transform!r}")
        self.nir_transform = nir_transform

    # -- single images -------------------------------------------------------------------------
    def align(self, image: np.ndarray, source: str | None = None) -> Face:
        return self.aligner.align(image, source=source)

    def embed_faces(self, faces: Sequence[Face]) -> np.ndarray:
        return self.embedder.embed(faces)

    def embed_image(self, image: np.ndarray, source: str | None = None) -> np.ndarray:
        """Feature vector ``(d,)`` of the best face in ``image``; raises NoFaceError if there is none."""
        return self.embedder.embed([self.align(image, source)])[0]

    def embed_file(self, path: str | os.PathLike, channel: str | None = None) -> np.ndarray:
        from nirvis._io import read_image

        return self.embed_image(read_image(path, channel=channel), source=str(path))

    # -- batches -----------------------------------------------------------------------------------
    def cache_keys(self, sample: Sample) -> tuple[str, str]:
        """The cache keys of ``sample``'s aligned face and of its features (the file's content, the aligner's and
        embedder's fingerprints, and the NIR transform's for NIR samples); raises ImageError for a missing or
        unreadable file. Shared by every cache user (featurize, the gallery), so their entries coincide."""
        try:
            digest = file_digest(sample.path)
        except OSError as exc:  # the same message as without a cache (read_image's)
            if not Path(sample.path).is_file():
                raise ImageError(f"{sample.path}: no such image file") from None
            raise ImageError(f"{sample.path}: unreadable ({exc.strerror or exc})") from None
        akey = FeatureCache.key("align", self.aligner.fingerprint, digest, str(sample.channel), sample.modality)
        parts = ["feat", akey, self.embedder.fingerprint]
        if self.nir_transform is not None and sample.modality == "nir":
            parts += ["nir-transform", self.nir_transform.fingerprint]
        return akey, FeatureCache.key(*parts)

    def align_sample(self, sample: Sample, akey: str | None = None) -> Face:
        """Align one sample, through the cache when there is one (failures are cached too).

        Raises
        ------
        NoFaceError, ImageError, OSError
            As :meth:`FaceAligner.align` and :func:`nirvis._io.read_image`.
        """
        if akey is None and self.cache is not None:
            akey = self.cache_keys(sample)[0]
        if akey is not None:
            hit = self.cache.get("align", akey)
            if hit is not None:
                if str(hit.get("reason", "")):
                    raise NoFaceError(_from_cache(str(hit["reason"]), sample))
                try:
                    meta: dict = {"source_shape": tuple(int(v) for v in hit["source_shape"])}
                    if "keypoints5" in hit:  # an aligner with the 68-point model (its fingerprint keys the entry)
                        meta["keypoints5"] = hit["keypoints5"]
                    return Face(image=hit["image"], landmarks=hit["landmarks"], anchors=hit["anchors"],
                                matrix=hit["matrix"], method=str(hit["method"]), score=float(hit["score"]),
                                source=str(sample.path), meta=meta)
                except (KeyError, ValueError, TypeError):
                    pass  # an entry of another layout or a hand-edited one: align again
        try:
            face = self.aligner.align(sample.read(), source=str(sample.path))
        except NoFaceError as exc:
            if akey is not None:
                self.cache.put("align", akey, reason=np.array(_to_cache(str(exc), sample)))
            raise
        if akey is not None:
            self.cache.put("align", akey, image=face.image, landmarks=face.landmarks, anchors=face.anchors,
                           matrix=face.matrix, method=np.array(face.method), score=np.array(face.score),
                           source_shape=np.array(face.meta.get("source_shape", (0, 0))), reason=np.array(""),
                           **({"keypoints5": face.meta["keypoints5"]} if "keypoints5" in face.meta else {}))
        return face

    def _usable_feature(self, hit: dict[str, np.ndarray]) -> bool:
        """A cached feature record as written by :meth:`_featurize_chunk` (anything else is recomputed)."""
        if not {"reason", "feature", "method"} <= set(hit):
            return False
        f = hit["feature"]
        return bool(str(hit["reason"])) or (f.shape == (self.embedder.dim,) and bool(np.isfinite(f).all()))

    def _featurize_chunk(self, samples: Sequence[Sample]) -> list[tuple[np.ndarray | None, str, str]]:
        """(feature or None, method, failure reason) for each sample."""
        results: list[tuple[np.ndarray | None, str, str] | None] = [None] * len(samples)
        todo: list[tuple[int, Face, str | None]] = []
        for i, s in enumerate(samples):
            fkey = None
            try:
                akey = None
                if self.cache is not None:
                    akey, fkey = self.cache_keys(s)
                    hit = self.cache.get("feat", fkey)
                    if hit is not None and self._usable_feature(hit):
                        reason = _from_cache(str(hit["reason"]), s)
                        results[i] = (None if reason else hit["feature"], str(hit["method"]), reason)
                        continue
                todo.append((i, self.align_sample(s, akey), fkey))
            except (NirvisError, *IMAGE_ERRORS) as exc:  # this image fails; the batch goes on
                reason = str(exc) or type(exc).__name__
                results[i] = (None, "", reason)
                if fkey is not None and not isinstance(exc, OSError):
                    self.cache.put("feat", fkey, feature=np.zeros(0, np.float32), method=np.array(""),
                                   reason=np.array(_to_cache(reason, s)))
        if todo and self.nir_transform is not None:
            nir = [k for k, (i, _, _) in enumerate(todo) if samples[i].modality == "nir"]
            if nir:
                changed = self.nir_transform([todo[k][1] for k in nir])
                for k, face in zip(nir, changed):
                    todo[k] = (todo[k][0], face, todo[k][2])
        if todo:
            feats = self.embedder.embed([f for _, f, _ in todo])
            for (i, face, fkey), vec in zip(todo, feats):
                results[i] = (vec, face.method, "")
                if fkey is not None:
                    self.cache.put("feat", fkey, feature=vec, method=np.array(face.method), reason=np.array(""))
        return results  # type: ignore[return-value]

    def featurize(self, samples: Sequence[Sample], *, workers: int = 1, chunk_size: int = 16,
                  progress: Callable[[int], None] | None = None) -> FeatureSet:
        """Align and embed every sample; failures are recorded and the run goes on.

        Parameters
        ----------
        samples
            Samples to process (a sample given twice is processed once; two *different* samples with one
            ``capture_id`` are refused, since features are keyed by it).
        workers
            Worker processes (1 = in this process).
        chunk_size
            Samples per task (faces are embedded in batches of this size).
        progress
            Called with the number of samples finished after each chunk (e.g. a progress bar's update).
        """
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
        by_id: dict[str, Sample] = {}
        for s in samples:
            first = by_id.setdefault(s.capture_id, s)
            if first != s:
                raise ValueError(f"two different samples share capture_id {s.capture_id!r} ({first.person} "
                                 f"{first.modality} {first.path} and {s.person} {s.modality} {s.path}); capture "
                                 "ids must be unique, e.g. person/modality/file name")
        uniq = list(by_id.values())
        chunks = [uniq[i : i + chunk_size] for i in range(0, len(uniq), chunk_size)]
        out: list[tuple[np.ndarray | None, str, str]] = []
        if workers <= 1 or len(chunks) <= 1:
            for c in chunks:
                out.extend(self._featurize_chunk(c))
                if progress:
                    progress(len(c))
        else:
            # "spawn": forking a process whose dlib / OpenMP threads are running can deadlock.
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, initializer=_worker_init, mp_context=ctx) as pool:
                for c, res in zip(chunks, pool.map(self._featurize_chunk, chunks)):
                    out.extend(res)
                    if progress:
                        progress(len(c))
        d = self.embedder.dim
        feats = np.full((len(uniq), d), np.nan, dtype=np.float32)
        ok = np.zeros(len(uniq), dtype=bool)
        methods, failures = [], []
        for i, (s, (vec, method, reason)) in enumerate(zip(uniq, out)):
            if vec is not None:
                feats[i], ok[i] = vec, True
            else:
                failures.append(Failure(s.capture_id, str(s.path), reason))
            methods.append(method)
        if failures:
            log.info("%d of %d samples produced no features", len(failures), len(uniq))
        return FeatureSet(uniq, feats, ok, methods, failures)


#: Stands for the image's path in cached failure messages: the cache is keyed by content, so another file
#: with the same bytes (a copy, or the dataset on another machine) reads the entry, and must see its own path.
_PATH = "{path}"


def _to_cache(reason: str, sample: Sample) -> str:
    return reason.replace(str(sample.path), _PATH)


def _from_cache(reason: str, sample: Sample) -> str:
    return reason.replace(_PATH, str(sample.path))


def _worker_init() -> None:
    # One BLAS / OpenMP thread per worker process: the workers are the parallelism.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
