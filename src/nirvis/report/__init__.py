"""``nirvis report``: an offline HTML page of results already computed (Table 2, CMC and ROC curves, the faces
that could not be aligned; for ``nirvis demo``, Fig. 5 and the mining and training of its hallucination model,
:mod:`nirvis.report.demo`), drawn from ``nirvis evaluate --json`` / ``nirvis demo --json`` output.

Public API: :func:`write_report`, :class:`ReportConfig`, :class:`Section` and :data:`SECTIONS` (the page's
section builders), :func:`load_results` and its :class:`Results`, :func:`run_info` (what a results file records
about its run). Modules load on use, so that ``nirvis --help`` stays instant.
"""

from __future__ import annotations

__all__ = ["write_report", "ReportConfig", "ReportContext", "ReportError", "Section", "SECTIONS", "load_results",
           "Results", "ResultsError", "Row", "SplitResult", "run_info"]

_WHERE = {"write_report": "page", "ReportConfig": "page", "ReportContext": "page", "ReportError": "page",
          "Section": "page", "SECTIONS": "page", "load_results": "results", "Results": "results",
          "ResultsError": "results", "Row": "results", "SplitResult": "results", "run_info": "provenance"}


def __getattr__(name: str):
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"nirvis.report.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'nirvis.report' has no attribute {name!r}")
