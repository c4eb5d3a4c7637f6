"""On-disk cache of alignments and features, keyed by image content, aligner and embedder settings.

Entries are small ``.npz`` files (no pickle) written atomically, one per key, so concurrent workers and
crashes never corrupt it. Location: ``$NIRVIS_CACHE``, else ``~/.cache/nirvis``.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from nirvis._io import NPZ_READ_ERRORS, atomic_save_npz, file_digest

__all__ = ["FeatureCache", "default_cache_dir", "file_digest"]

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    env = os.environ.get("NIRVIS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "nirvis"


class FeatureCache:
    """Key-value store of small array records.

    The cache only saves time: an entry that cannot be read is deleted and recomputed, and a folder that
    cannot be written is reported once in the log while the work goes on uncached.

    Parameters
    ----------
    root
        Cache folder (created on first write).
    """

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self._write_error: str | None = None

    @staticmethod
    def key(*parts: str) -> str:
        return hashlib.sha256("|".join(parts).encode()).hexdigest()

    def _path(self, namespace: str, key: str) -> Path:
        return self.root / namespace / key[:2] / f"{key}.npz"

    def get(self, namespace: str, key: str) -> dict[str, np.ndarray] | None:
        """The record stored under ``key``, or ``None``. A corrupt entry is deleted and reported missing."""
        p = self._path(namespace, key)
        if not p.is_file():
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except NPZ_READ_ERRORS:
            p.unlink(missing_ok=True)
            return None

    def put(self, namespace: str, key: str, **arrays: np.ndarray) -> None:
        """Store ``arrays`` under ``key`` (atomically). A write error is logged once, never raised."""
        try:
            atomic_save_npz(self._path(namespace, key), **arrays)
        except OSError as exc:
            if self._write_error is None:
                self._write_error = str(exc)
                log.warning("feature cache %s cannot be written (%s); going on without caching", self.root, exc)
