"""``nirvis demo``: every stage of the system on RAP3DF, each cached by its inputs and configuration.

:func:`run_demo` runs the stages (:mod:`nirvis.demo.pipeline`); :class:`StageCache` keeps them
(:mod:`nirvis.demo.cache`).
"""

from nirvis.demo.cache import StageCache, StageResult, stage_key
from nirvis.demo.pipeline import FULL, QUICK, STAGES, DemoConfig, DemoError, DemoResult, run_demo

__all__ = ["StageCache", "StageResult", "stage_key", "DemoConfig", "DemoError", "DemoResult", "FULL", "QUICK",
           "STAGES", "run_demo"]
