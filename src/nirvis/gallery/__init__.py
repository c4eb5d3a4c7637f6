"""Identification against a gallery of enrolled VIS faces (issue 13): enrol, search with NIR probes, decide.

``Gallery`` stores its rows in SQLite (the source of truth) and searches a FAISS index derived from them;
see :mod:`nirvis.gallery.gallery` for the folder layout and the crash and thread safety rules,
:mod:`nirvis.gallery.pipeline` for the recorded pipeline, :mod:`nirvis.gallery.threshold` for the decision
threshold. Names are imported on first use, so that ``nirvis --help`` stays instant.
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "Gallery": "gallery", "GalleryConfig": "gallery", "Match": "gallery", "Identification": "gallery",
    "EnrollReport": "gallery", "PERSON_ID_PATTERN": "gallery", "validate_person_id": "gallery",
    "GalleryError": "errors", "PipelineMismatchError": "errors", "PersonIdError": "errors",
    "EmptyGalleryError": "errors", "IndexConfig": "index", "DEFAULT_THRESHOLDS": "threshold",
    "ThresholdChoice": "threshold", "threshold_from_results": "threshold",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(importlib.import_module(f"nirvis.gallery.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'nirvis.gallery' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
