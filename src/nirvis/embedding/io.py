"""Saving and loading embeddings: an ``.npz`` of arrays plus a ``.json`` of metadata, never pickle.

A saved embedding is the pair ``<stem>.npz`` (``components``, ``mean``, and ``modality_means`` /
``objective_history`` / ``validation_scores`` when the model has them) and ``<stem>.json``::

    {"format": "nirvis-embedding", "format_version": 1, "method": "lowrank",
     "estimator": "LowRankTransform", "params": {...}, "embedder_fingerprint": "dlib-resnet128:3f2a9c01d4",
     "n_features_in": 128, "n_components": 128, "arrays": "<stem>.npz", "arrays_sha256": "...", ...}

Both files are written atomically, the ``.npz`` first; the ``.json`` records the SHA-256 of the
``.npz``, so a pair that was not written together (a crash between the two writes, a file copied
from elsewhere) is refused at load time.

An embedding is only valid for features of the embedder it was trained on. The loaded
:class:`LinearEmbedding` carries that embedder's fingerprint
(:attr:`nirvis.features.Embedder.fingerprint`); pass the fingerprint of the features at hand to
:meth:`LinearEmbedding.transform` (or call :meth:`LinearEmbedding.check_fingerprint`) and features
from another embedder raise :class:`~nirvis.errors.ModelMismatchError`.
"""

from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from nirvis._io import NPZ_READ_ERRORS, atomic_save_npz, atomic_write_json, file_digest, read_json
from nirvis.embedding.base import apply_linear_map, shift_by_modality
from nirvis.errors import ModelMismatchError

__all__ = ["LinearEmbedding", "save_embedding", "load_embedding", "embedding_paths"]

FORMAT = "nirvis-embedding"
FORMAT_VERSION = 1


def embedding_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(<stem>.npz, <stem>.json)`` for ``path`` given as the stem or either file."""
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".npz", ".json") else p
    return stem.with_name(stem.name + ".npz"), stem.with_name(stem.name + ".json")


class LinearEmbedding:
    """A loaded embedding: the linear map ``(X - mean_) @ components_.T`` and its provenance.

    Parameters
    ----------
    components : ndarray of shape (n_components, n_features)
    mean : ndarray of shape (n_features,)
    method : str
        Registry name of the estimator that learned it (``"lowrank"``, ``"pca"``, ...).
    embedder_fingerprint : str
        Fingerprint of the embedder whose features it was trained on.
    params : dict, optional
        Hyper-parameters of that estimator.
    objective_history : ndarray, optional
        ``objective_history_`` of a low-rank transform.
    source : Path, optional
        The ``.json`` it was read from.
    train_people : sequence of str, optional
        The people it was fitted on, when recorded (``train_people``; ``None`` for older files).
    modality_means : ndarray of shape (2, n_features), optional
        The mean NIR and VIS training vectors, subtracted from each row by its modality first (``MS``, and
        ``LR`` with ``shift``); :meth:`transform` then needs the modality.
    """

    def __init__(self, components: np.ndarray, mean: np.ndarray, *, method: str, embedder_fingerprint: str,
                 params: dict[str, Any] | None = None, objective_history: np.ndarray | None = None,
                 source: Path | None = None, train_people: Sequence[str] | None = None,
                 modality_means: np.ndarray | None = None) -> None:
        self.components_ = np.asarray(components, dtype=np.float64)
        self.mean_ = np.asarray(mean, dtype=np.float64)
        if self.components_.ndim != 2 or self.mean_.shape != (self.components_.shape[1],):
            raise ValueError(f"LinearEmbedding: components of shape {self.components_.shape} and mean of shape "
                             f"{self.mean_.shape} do not fit together ((k, d) and (d,) expected)")
        self.n_features_in_ = self.components_.shape[1]
        self.modality_means_ = None if modality_means is None else np.asarray(modality_means, dtype=np.float64)
        if self.modality_means_ is not None and self.modality_means_.shape != (2, self.n_features_in_):
            raise ValueError(f"LinearEmbedding: modality_means must have shape (2, {self.n_features_in_}), got "
                             f"{self.modality_means_.shape}")
        self.method = method
        self.embedder_fingerprint = embedder_fingerprint
        self.params = dict(params or {})
        self.train_people = None if train_people is None else sorted(str(p) for p in train_people)
        self.objective_history_ = None if objective_history is None else np.asarray(objective_history)
        self.source = source

    def __repr__(self) -> str:
        k, d = self.components_.shape
        return (f"LinearEmbedding(method={self.method!r}, {d} -> {k}, "
                f"embedder_fingerprint={self.embedder_fingerprint!r})")

    def check_fingerprint(self, fingerprint: str) -> None:
        """Raise :class:`~nirvis.errors.ModelMismatchError` unless ``fingerprint`` is the training one."""
        if fingerprint != self.embedder_fingerprint:
            where = f" ({self.source})" if self.source else ""
            raise ModelMismatchError(
                f"{self.method} embedding{where} was trained on features of embedder "
                f"{self.embedder_fingerprint!r}, but these features come from {fingerprint!r}; "
                "use the matching embedder or train an embedding on these features"
            )

    def transform(self, X, fingerprint: str | None = None, modality=None) -> np.ndarray:
        """Apply the map to features ``X`` of shape ``(n, n_features)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        fingerprint : str, optional
            Fingerprint of the embedder that produced ``X``. When given, it must equal
            :attr:`embedder_fingerprint` (else :class:`~nirvis.errors.ModelMismatchError`).
            Pipelines should always pass it; ``None`` skips the check.
        modality : {'nir', 'vis'} or array-like of shape (n_samples,), optional
            Required when the embedding removes modality means (:attr:`modality_means_`).

        Returns
        -------
        ndarray of shape (n_samples, n_components), float32 for float32 input, else float64.
        """
        if fingerprint is not None:
            self.check_fingerprint(fingerprint)
        if self.modality_means_ is not None:
            X = np.asarray(X, dtype=np.float32 if np.asarray(X).dtype == np.float32 else np.float64)
            if X.ndim != 2 or X.shape[1] != self.n_features_in_:
                return apply_linear_map(X, self.mean_, self.components_, "LinearEmbedding")  # its error message
            X = shift_by_modality(X, modality, self.modality_means_, f"{self.method} embedding")
        return apply_linear_map(X, self.mean_, self.components_, "LinearEmbedding")


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return repr(value)  # e.g. a RandomState instance: recorded, not restorable


def save_embedding(model: Any, path: str | os.PathLike, embedder_fingerprint: str,
                   train_people: Sequence[str] | None = None) -> tuple[Path, Path]:
    """Save a fitted embedding as ``<stem>.npz`` + ``<stem>.json`` (atomic writes, no pickle).

    Parameters
    ----------
    model : fitted estimator of :mod:`nirvis.embedding`, or a :class:`LinearEmbedding`
    path : str or PathLike
        The stem, or either file name.
    embedder_fingerprint : str
        Fingerprint of the embedder whose features ``model`` was trained on.
    train_people : sequence of str, optional
        The people ``model`` was fitted on, so that an evaluation can refuse to test it on them
        (``nirvis fit-embedding`` records them). A :class:`LinearEmbedding` keeps its own when not given.

    Returns
    -------
    (npz_path, json_path)
    """
    from nirvis import __version__
    from nirvis.embedding.registry import method_name

    if not isinstance(embedder_fingerprint, str) or not embedder_fingerprint:
        raise ValueError(f"embedder_fingerprint must be a non-empty str, got {embedder_fingerprint!r}")
    if isinstance(model, LinearEmbedding):
        method, params, estimator = model.method, model.params, "LinearEmbedding"
        history, extra = model.objective_history_, {}
    else:
        method = method_name(model)
        check_is_fitted(model, ("components_", "mean_"))
        params = {k: _json_safe(v) for k, v in model.get_params().items()}
        estimator = type(model).__name__
        history = getattr(model, "objective_history_", None)
        extra = {k: _json_safe(getattr(model, a)) for k, a in
                 (("n_iter", "n_iter_"), ("stop_reason", "stop_reason_"), ("best_iteration", "best_iteration_"))
                 if hasattr(model, a)}
    npz_path, json_path = embedding_paths(path)
    arrays = {"components": np.asarray(model.components_), "mean": np.asarray(model.mean_)}
    if getattr(model, "modality_means_", None) is not None:
        arrays["modality_means"] = np.asarray(model.modality_means_, dtype=np.float64)
    if history is not None:
        arrays["objective_history"] = np.asarray(history, dtype=np.float64)
    val = getattr(model, "validation_scores_", None)
    if val is not None:
        arrays["validation_scores"] = np.asarray(val, dtype=np.float64)
    atomic_save_npz(npz_path, **arrays)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "method": method,
        "estimator": estimator,
        "params": params,
        "embedder_fingerprint": embedder_fingerprint,
        "n_features_in": int(arrays["components"].shape[1]),
        "n_components": int(arrays["components"].shape[0]),
        "arrays": npz_path.name,
        "arrays_sha256": file_digest(npz_path),
        "fit": extra,
        "nirvis_version": __version__,
    }
    if train_people is None and isinstance(model, LinearEmbedding):
        train_people = model.train_people
    if train_people is not None:
        meta["train_people"] = sorted({str(p) for p in train_people})
    atomic_write_json(json_path, meta)
    return npz_path, json_path


def load_embedding(path: str | os.PathLike) -> LinearEmbedding:
    """Load what :func:`save_embedding` wrote.

    Parameters
    ----------
    path : str or PathLike
        The stem, or either file name.

    Raises
    ------
    FileNotFoundError
        A file of the pair is missing.
    ValueError
        The metadata is malformed, or the ``.npz`` is not the one the ``.json`` was written with.
    """
    npz_path, json_path = embedding_paths(path)
    if not json_path.is_file():
        raise FileNotFoundError(f"{json_path}: no such embedding metadata file")
    meta = read_json(json_path, ValueError)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise ValueError(f"{json_path}: not a nirvis embedding file (format {found!r}, expected {FORMAT!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{json_path}: format_version {meta.get('format_version')!r} is not supported "
                         f"(this nirvis reads {FORMAT_VERSION})")
    for key in ("method", "embedder_fingerprint", "arrays", "arrays_sha256"):
        if not isinstance(meta.get(key), str) or not meta[key]:
            raise ValueError(f"{json_path}: missing or empty {key!r}")
    npz_path = json_path.with_name(meta["arrays"])
    if not npz_path.is_file():
        raise FileNotFoundError(f"{npz_path}: no such file (named by {json_path})")
    digest = file_digest(npz_path)
    if digest != meta["arrays_sha256"]:
        raise ValueError(f"{npz_path} is not the array file {json_path} was saved with (sha256 {digest[:12]}... "
                         f"instead of {meta['arrays_sha256'][:12]}...); save the embedding again")
    try:
        with np.load(npz_path, allow_pickle=False) as z:
            missing = {"components", "mean"} - set(z.files)
            if missing:
                raise ValueError(f"{npz_path}: missing arrays {sorted(missing)}")
            components, mean = z["components"], z["mean"]
            history = z["objective_history"] if "objective_history" in z.files else None
            shift = z["modality_means"] if "modality_means" in z.files else None
    except NPZ_READ_ERRORS as exc:  # a damaged file that was saved so (its digest matches)
        raise ValueError(f"{npz_path}: unreadable array file ({type(exc).__name__}: {exc})") from None
    shape = (meta.get("n_components"), meta.get("n_features_in"))
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape):
        raise ValueError(f"{json_path}: 'n_components' and 'n_features_in' must be positive integers, got {shape}")
    if components.shape != shape:
        raise ValueError(f"{npz_path}: components have shape {components.shape}, but {json_path} says {shape}")
    for name, a, want in (("components", components, shape), ("mean", mean, (shape[1],))):
        if a.dtype.kind != "f" or a.shape != want:
            raise ValueError(f"{npz_path}: {name!r} must be real floats of shape {want}, got {a.dtype} {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"{npz_path}: {name!r} holds NaN or inf; the embedding is unusable, fit it again")
    if shift is not None and (shift.dtype.kind != "f" or shift.shape != (2, shape[1]) or not np.isfinite(shift).all()):
        raise ValueError(f"{npz_path}: 'modality_means' must be finite real floats of shape (2, {shape[1]}), got "
                         f"{shift.dtype} {shift.shape}")
    people = meta.get("train_people")
    if people is not None and not (isinstance(people, list) and all(isinstance(p, str) for p in people)):
        raise ValueError(f"{json_path}: 'train_people' must be a list of person ids, got {type(people).__name__}")
    return LinearEmbedding(components, mean, method=meta["method"], embedder_fingerprint=meta["embedder_fingerprint"],
                           params=meta.get("params") or {}, objective_history=history, source=json_path,
                           train_people=people, modality_means=shift)
