"""The pipeline a gallery records at creation, and the same pipeline loaded again to enrol and to search.

A gallery's vectors are only comparable with probes made the same way, so the gallery records, in its
``meta`` table under ``"pipeline"``:

- the embedder (``--embedder`` spec and its fingerprint: network, weights digest, preprocessing);
- the alignment settings' fingerprint;
- the optional embedding model (``nirvis fit-embedding`` output), copied into ``models/embedding/``:
  applied to enrolled VIS features with modality ``"vis"`` and to probes with their modality (``"nir"``);
- the optional hallucination model (``nirvis train-hallucination[-id]`` output), copied into
  ``models/hallucination/``: applied to the aligned faces of NIR probes before embedding (paper Sec. 3);
- an ONNX embedder given as ``onnx:PATH`` is copied into ``models/embedder/`` too.

The copies make a gallery folder self-contained: it can be moved or served elsewhere. Each copy's SHA-256 is
recorded and checked when the gallery is opened.

**Plug-in embedders.** Before an ``--embedder`` name is looked up, the modules named in
``$NIRVIS_PLUGINS`` (comma-separated, importable) are imported; such a module registers its embedders with
:func:`nirvis.features.base.register_embedder`. The gallery's tests use this to enrol with a cheap embedder.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nirvis._io import file_digest
from nirvis.gallery.errors import GalleryError, PipelineMismatchError

__all__ = ["PLUGIN_ENV", "load_plugins", "resolve_embedder", "build_record", "GalleryPipeline", "check_request"]

#: Environment variable naming modules to import before an embedder is looked up by name.
PLUGIN_ENV = "NIRVIS_PLUGINS"

MODELS = "models"


def load_plugins() -> list[str]:
    """Import the modules named in ``$NIRVIS_PLUGINS`` (comma-separated); returns their names.

    Raises
    ------
    GalleryError
        Naming a module that cannot be imported, and why.
    """
    names = [n.strip() for n in os.environ.get(PLUGIN_ENV, "").split(",") if n.strip()]
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - any import failure is reported with its module name
            raise GalleryError(f"${PLUGIN_ENV}: cannot import {name!r} ({type(exc).__name__}: {exc})") from None
    return names


def resolve_embedder(spec: str, models_dir: str | os.PathLike | None = None,
                     data_root: str | os.PathLike | None = None):
    """The embedder of an ``--embedder`` spec (``dlib``, ``edgeface-xs``, ``onnx:PATH`` or a plug-in's name),
    its model file found and checked now.

    Raises
    ------
    GalleryError
        For an unknown name or a missing or wrong model file (the message says which).
    """
    from nirvis.errors import NirvisError
    from nirvis.features.models import embedder_from_spec

    load_plugins()
    try:
        emb = embedder_from_spec(spec, models_dir, data_root)
        emb.fingerprint  # noqa: B018 - an ONNX model is loaded and checked here
    except (NirvisError, ValueError, OSError) as exc:
        msg = str(exc)
        raise GalleryError(msg if msg.startswith("--embedder") else f"--embedder {spec}: {msg}") from None
    return emb


def _sha(path: Path) -> str:
    return file_digest(path)


def _hallucination_blend(meta: dict[str, Any]) -> tuple[str, float]:
    """``(kind, eq. (1) weight)``: models trained through the recogniser (``train-hallucination-id``) record
    their weight (0 when trained without the blend); patch-trained ones use the paper's 0.6."""
    if (meta.get("training") or {}).get("kind") == "identity":
        return "identity", float(meta.get("alpha", 0.0))
    return "patch", 0.6


def build_record(folder: Path, embedder: str, embedding: str | os.PathLike | None,
                 hallucination: str | os.PathLike | None, models_dir: str | os.PathLike | None = None,
                 data_root: str | os.PathLike | None = None) -> dict[str, Any]:
    """Check the models of a new gallery, copy them into ``folder/models`` and return the pipeline record.

    Raises
    ------
    GalleryError
        Naming the model that is missing, unreadable, or made for another embedder.
    """
    from nirvis.errors import ModelMismatchError
    from nirvis.faces.align import AlignConfig, FaceAligner

    models = folder / MODELS
    spec = str(embedder)
    rec: dict[str, Any] = {"embedder": spec}
    if spec.startswith("onnx:"):
        src = Path(spec[len("onnx:"):]).expanduser()
        emb = resolve_embedder(spec, models_dir, data_root)
        dst = models / "embedder" / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
        rec["embedder"] = f"onnx:{MODELS}/embedder/{src.name}"
        rec["embedder_file"] = {"source": str(src.resolve()), "sha256": _sha(dst)}
    else:
        emb = resolve_embedder(spec, models_dir, data_root)
    rec["embedder_name"] = emb.name
    rec["embedder_fingerprint"] = emb.fingerprint
    rec["align"] = FaceAligner(AlignConfig(landmark_model=emb.landmark_model)).fingerprint
    dim = int(emb.dim)
    rec["embedding"] = None
    if embedding is not None:
        from nirvis.embedding.io import embedding_paths, load_embedding

        npz, js = embedding_paths(embedding)
        try:
            model = load_embedding(embedding)
            model.check_fingerprint(emb.fingerprint)
        except (OSError, ValueError, ModelMismatchError) as exc:
            raise GalleryError(f"--embedding {embedding}: {exc}") from None
        edir = models / "embedding"
        edir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(npz, edir / npz.name)
        shutil.copy2(js, edir / js.name)
        rec["embedding"] = {"file": f"{MODELS}/embedding/{js.name}", "method": model.method,
                            "npz_sha256": _sha(edir / npz.name), "json_sha256": _sha(edir / js.name),
                            "source": str(js.resolve()), "n_components": int(model.components_.shape[0])}
        dim = int(model.components_.shape[0])
    rec["hallucination"] = None
    if hallucination is not None:
        from nirvis.hallucination.io import CONFIG, WEIGHTS, ModelFileError, load_model

        src = Path(hallucination)
        try:
            model = load_model(src)
        except ModelFileError as exc:
            raise GalleryError(f"--hallucination {hallucination}: {exc}") from None
        kind, alpha = _hallucination_blend(model.meta)
        hdir = models / "hallucination"
        hdir.mkdir(parents=True, exist_ok=True)
        for name in (WEIGHTS, CONFIG):
            shutil.copy2(src / name, hdir / name)
        rec["hallucination"] = {"dir": f"{MODELS}/hallucination", "kind": kind, "alpha": alpha, "reading": "log",
                                "weights_sha256": _sha(hdir / WEIGHTS), "config_sha256": _sha(hdir / CONFIG),
                                "source": str(src.resolve())}
    rec["dim"] = dim
    rec["fingerprint"] = vector_fingerprint(rec)
    return rec


def vector_fingerprint(rec: dict[str, Any]) -> str:
    """Fingerprint of the models that make an enrolled vector: the embedder's, then the embedding model's
    method and digest, then the alignment settings' digest (``dlib-resnet128:3f2a9c01d4+lowrank:9a8b7c6d5e@1a2b3c4d``)."""
    out = rec["embedder_fingerprint"]
    if rec.get("embedding"):
        out += f"+{rec['embedding']['method']}:{rec['embedding']['npz_sha256'][:10]}"
    return out + "@" + hashlib.sha256(str(rec["align"]).encode()).hexdigest()[:8]


def describe(rec: dict[str, Any]) -> str:
    """The pipeline in words, for messages."""
    parts = [f"embedder {rec['embedder']} ({rec['embedder_fingerprint']})"]
    emb = rec.get("embedding")
    parts.append(f"embedding {emb['method']} (sha256 {emb['npz_sha256'][:12]}...)" if emb else "no embedding model")
    hal = rec.get("hallucination")
    parts.append(f"hallucination model (weights sha256 {hal['weights_sha256'][:12]}...)" if hal
                 else "no hallucination model")
    return ", ".join(parts)


def check_request(folder: Path, rec: dict[str, Any], embedder: str | None = None,
                  embedding: str | os.PathLike | None = None,
                  hallucination: str | os.PathLike | None = None) -> None:
    """Refuse a request that names another pipeline than the gallery's (``None`` = the gallery's own).

    Raises
    ------
    PipelineMismatchError
        Saying what differs, e.g. ``embedder: the gallery uses 'dlib', not 'edgeface-xs'``.
    """
    diffs = []
    if embedder is not None:
        spec = str(embedder)
        if spec.startswith("onnx:") and rec["embedder"].startswith("onnx:"):
            p = Path(spec[len("onnx:"):]).expanduser()
            want = (rec.get("embedder_file") or {}).get("sha256")
            if not p.is_file() or _sha(p) != want:
                diffs.append(f"embedder: {spec} is not the ONNX file the gallery was made with "
                             f"({(rec.get('embedder_file') or {}).get('source')}, sha256 {str(want)[:12]}...)")
        elif spec != rec["embedder"]:
            diffs.append(f"embedder: the gallery uses {rec['embedder']!r} ({rec['embedder_fingerprint']}), "
                         f"not {spec!r}")
    if embedding is not None:
        from nirvis.embedding.io import embedding_paths

        have = rec.get("embedding")
        npz = embedding_paths(embedding)[0]
        if have is None:
            diffs.append(f"embedding: the gallery has no embedding model, but {embedding} was given")
        elif not npz.is_file() or _sha(npz) != have["npz_sha256"]:
            diffs.append(f"embedding: {embedding} is not the gallery's embedding model ({have['method']} from "
                         f"{have['source']}, sha256 {have['npz_sha256'][:12]}...)")
    if hallucination is not None:
        from nirvis.hallucination.io import WEIGHTS

        have = rec.get("hallucination")
        w = Path(hallucination) / WEIGHTS
        if have is None:
            diffs.append(f"hallucination: the gallery has no hallucination model, but {hallucination} was given")
        elif not w.is_file() or _sha(w) != have["weights_sha256"]:
            diffs.append(f"hallucination: {hallucination} is not the gallery's hallucination model (from "
                         f"{have['source']}, weights sha256 {have['weights_sha256'][:12]}...)")
    if diffs:
        raise PipelineMismatchError(f"{folder}: this request needs another pipeline than the gallery's: "
                                    + "; ".join(diffs) + f". The gallery was created with {describe(rec)}; use "
                                    "those, or create another gallery")


@dataclass
class GalleryPipeline:
    """The gallery's pipeline, loaded: align -> [hallucinate NIR] -> embed -> [embedding model] -> L2-normalise.

    Attributes
    ----------
    record
        What the gallery recorded (see the module docstring).
    recognizer
        :class:`~nirvis.pipeline.Recognizer` with the embedder, the feature cache and, when the gallery has
        a hallucination model, :class:`~nirvis.hallucination.HallucinatedFaces` as its NIR transform.
    embedding
        The loaded :class:`~nirvis.embedding.io.LinearEmbedding`, or ``None``.
    """

    record: dict[str, Any]
    recognizer: Any
    embedding: Any = None

    @property
    def fingerprint(self) -> str:
        return self.record["fingerprint"]

    @property
    def dim(self) -> int:
        return int(self.record["dim"])

    @classmethod
    def load(cls, folder: Path, rec: dict[str, Any], models_dir: str | os.PathLike | None = None,
             data_root: str | os.PathLike | None = None, cache: Any = None) -> GalleryPipeline:
        """Load the recorded models, checking each copy's digest and the embedder's fingerprint.

        Raises
        ------
        GalleryError, PipelineMismatchError
            Naming the file that changed, or the embedder whose fingerprint differs.
        """
        from nirvis.pipeline import Recognizer

        spec = rec["embedder"]
        if spec.startswith("onnx:"):
            local = folder / spec[len("onnx:"):]
            _check_copy(local, (rec.get("embedder_file") or {}).get("sha256"))
            spec = f"onnx:{local}"
        emb = resolve_embedder(spec, models_dir, data_root)
        if emb.fingerprint != rec["embedder_fingerprint"]:
            raise PipelineMismatchError(
                f"{folder}: the gallery was made with embedder {rec['embedder']!r} of fingerprint "
                f"{rec['embedder_fingerprint']}, but the one found now has fingerprint {emb.fingerprint} (other "
                "weights or settings); its vectors would not be comparable. Use the original model file, or "
                "create another gallery")
        embedding = None
        if rec.get("embedding"):
            from nirvis.embedding.io import embedding_paths, load_embedding

            e = rec["embedding"]
            js = folder / e["file"]
            npz = embedding_paths(js)[0]
            _check_copy(npz, e["npz_sha256"])
            _check_copy(js, e["json_sha256"])
            try:
                embedding = load_embedding(js)
            except (OSError, ValueError) as exc:
                raise GalleryError(f"{folder}: the gallery's embedding model cannot be loaded ({exc})") from None
        transform = None
        if rec.get("hallucination"):
            from nirvis.hallucination.blend import BlendConfig
            from nirvis.hallucination.infer import HallucinatedFaces, Hallucinator
            from nirvis.hallucination.io import CONFIG, WEIGHTS, ModelFileError, load_model

            h = rec["hallucination"]
            hdir = folder / h["dir"]
            _check_copy(hdir / WEIGHTS, h["weights_sha256"])
            _check_copy(hdir / CONFIG, h["config_sha256"])
            try:
                model = load_model(hdir)
            except ModelFileError as exc:
                raise GalleryError(f"{folder}: the gallery's hallucination model cannot be loaded ({exc})") from None
            transform = HallucinatedFaces(Hallucinator(model, BlendConfig(alpha=h["alpha"], reading=h["reading"])))
        return cls(rec, Recognizer(emb, cache=cache, nir_transform=transform), embedding)

    def finish(self, features: np.ndarray, modality: str) -> np.ndarray:
        """Embedder features ``(n, d)`` -> the gallery's unit vectors ``(n, dim)`` float32: the embedding
        model (with ``modality``) when there is one, then L2 normalisation."""
        from nirvis.features.base import l2_normalize

        X = np.asarray(features, dtype=np.float32).reshape(-1, features.shape[-1])
        if self.embedding is not None:
            X = self.embedding.transform(X, fingerprint=self.record["embedder_fingerprint"], modality=modality)
        X = l2_normalize(X)
        if not np.isfinite(X).all():
            raise GalleryError("the pipeline produced a vector with NaN or inf values; the embedder or the embedding "
                               "model is broken")
        return X


def _check_copy(path: Path, sha256: str | None) -> None:
    if not path.is_file():
        raise GalleryError(f"{path}: missing from the gallery folder (the gallery's copy of a model); the "
                           "gallery cannot embed without it")
    if sha256 is not None and _sha(path) != sha256:
        raise GalleryError(f"{path}: changed since the gallery was created (sha256 differs); restore it, or "
                           "create another gallery")
