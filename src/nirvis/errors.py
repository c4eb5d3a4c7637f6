"""Exceptions raised by nirvis. Every message names the offending file or value."""

from __future__ import annotations


class NirvisError(Exception):
    """Base class of every error nirvis raises on purpose."""


class ImageError(NirvisError, ValueError):
    """An image file cannot be used: missing, unreadable, corrupt, or of an unsupported kind."""


class NoFaceError(NirvisError):
    """No face was found in an image by any detector of the cascade."""


class DatasetError(NirvisError, FileNotFoundError):
    """A dataset folder, protocol list or listed file is missing or malformed."""


class ModelMismatchError(NirvisError, ValueError):
    """Features or a saved model come from another embedder than the one expected."""
