"""The web service of ``nirvis serve``: a FastAPI application over one gallery, and its investigator's page.

:func:`create_app` builds the application (imported on first use, so ``import nirvis.service`` stays light);
:mod:`nirvis.service.uploads` checks and decodes uploads; :mod:`nirvis.service.command` is the CLI command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["create_app"]

if TYPE_CHECKING:
    from nirvis.service.app import create_app


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from nirvis.service.app import create_app

        return create_app
    raise AttributeError(f"module 'nirvis.service' has no attribute {name!r}")
