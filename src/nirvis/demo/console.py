"""The demo's progress on a terminal: one bar per stage, then one line saying what the stage did."""

from __future__ import annotations

from nirvis.demo.cache import StageResult
from nirvis.demo.pipeline import STAGES

__all__ = ["ConsoleProgress"]


class ConsoleProgress:
    """A :class:`~nirvis.demo.pipeline.DemoProgress` drawn with rich on stderr (bars vanish when their stage
    ends, and a line stays: ``[3/6] train H: 1000 steps ... (96 s)``, or ``(cached)``)."""

    def __init__(self, stages: int = len(STAGES) - 1) -> None:
        """``stages``: how many stages this run has (:data:`~nirvis.demo.pipeline.STAGES` has one more, the α
        sweep, run only when asked)."""
        self.stages = stages
        from rich.console import Console

        self.console = Console(stderr=True, highlight=False)
        self._bar = None
        self._task = None
        self._label = ""

    def begin(self, index: int, stage: str, title: str, total: int | None) -> None:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self._stop()
        self._label = f"[{index}/{max(self.stages, index)}] {title}"
        self._bar = Progress(TextColumn(self._label.replace("[", r"\[")), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[note]}"),
                             console=self.console, transient=True)
        self._bar.start()
        self._task = self._bar.add_task(stage, total=total, note="")

    def update(self, completed: int, total: int | None = None, note: str = "") -> None:
        if self._bar is not None:
            kw = {"total": total} if total is not None else {}
            self._bar.update(self._task, completed=completed, note=note, **kw)

    def end(self, result: StageResult, summary: str) -> None:
        self._stop()
        when = "cached" if result.cached else f"{result.seconds:.0f} s"
        self.console.print(f"{self._label}: {summary} ({when})", markup=False)

    def note(self, message: str) -> None:
        self.console.print(f"note: {message}", markup=False)

    def _stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
