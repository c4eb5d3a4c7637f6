"""Where the data lives: ``--data``, then ``$NIRVIS_DATA``, then ``../shared/data``."""

from __future__ import annotations

import os
from pathlib import Path

from nirvis.errors import DatasetError

ENV_VAR = "NIRVIS_DATA"

#: Candidate default locations, tried in order after ``--data`` and ``$NIRVIS_DATA``.
DEFAULT_CANDIDATES = (Path("../shared/data"), Path(__file__).resolve().parents[3] / "shared" / "data")

HOW_TO_GET_DATA = (
    "No data folder found: pass --data DIR, or set NIRVIS_DATA=DIR, or place the data in ../shared/data "
    "(DIR must hold e.g. rap3df/rap3df_data_02/database.json)."
)


def find_data_root(explicit: str | os.PathLike | None = None) -> Path:
    """Return the data folder, looked up in the documented order.

    Raises
    ------
    DatasetError
        If ``explicit`` is given but missing, or if nothing is found; the message says where to put the data.
    """
    if explicit is not None:
        p = Path(explicit).expanduser()
        if not p.is_dir():
            raise DatasetError(f"--data {p}: no such folder")
        return p
    env = os.environ.get(ENV_VAR)
    if env:
        p = Path(env).expanduser()
        if not p.is_dir():
            raise DatasetError(f"${ENV_VAR}={p}: no such folder")
        return p
    for cand in DEFAULT_CANDIDATES:
        if cand.is_dir():
            return cand.resolve()
    raise DatasetError(HOW_TO_GET_DATA)
