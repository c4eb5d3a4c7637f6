"""Patch mining (paper Sec. 3.1): registered NIR/VIS patch pairs for the hallucination networks.

Public API: :class:`MiningConfig`, :func:`mine_store`, :func:`jobs_from_samples`, :class:`PatchStore`,
:func:`check_store_people`, :func:`write_report`. Heavy modules (h5py, OpenCV, matplotlib) load on use.
"""

from __future__ import annotations

from nirvis.mining.config import MiningConfig

__all__ = ["MiningConfig", "mine_store", "jobs_from_samples", "PatchStore", "check_store_people",
           "StorePeopleError", "StoreError", "write_report"]


def __getattr__(name: str):
    if name in ("mine_store", "jobs_from_samples"):
        from nirvis.mining import miner

        return getattr(miner, name)
    if name in ("PatchStore", "check_store_people", "StorePeopleError", "StoreError"):
        from nirvis.mining import store

        return getattr(store, name)
    if name == "write_report":
        from nirvis.mining.report import write_report

        return write_report
    raise AttributeError(f"module 'nirvis.mining' has no attribute {name!r}")
