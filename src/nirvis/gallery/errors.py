"""Errors of the gallery. Each message names the gallery (or the file) and what to do."""

from __future__ import annotations

from nirvis.errors import NirvisError

__all__ = ["GalleryError", "PipelineMismatchError", "PersonIdError", "EmptyGalleryError"]


class GalleryError(NirvisError):
    """A gallery cannot be created, opened, changed or searched as asked."""


class PipelineMismatchError(GalleryError, ValueError):
    """A probe or an enrolment would need another pipeline (embedder, embedding or hallucination model) than
    the one the gallery was created with; the message says what differs."""


class PersonIdError(GalleryError, ValueError):
    """A person id is not valid (see :data:`nirvis.gallery.PERSON_ID_PATTERN`); the message names it."""


class EmptyGalleryError(GalleryError):
    """The gallery holds no enrolled face, so there is nothing to identify against."""
