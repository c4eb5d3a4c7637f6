"""``nirvis report``: write an offline HTML report from a results file already computed.

Register it on the CLI app with ``app.command("report")(report)``. Only typer and the standard library are
imported here; the report's modules load when the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

__all__ = ["report"]


def report(
    results: Annotated[Path, typer.Option("--from", help="Results JSON of 'nirvis evaluate --json' or 'nirvis demo --json'.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write index.html and its PNGs in (new, empty, or an earlier report).")],
    blur_faces: Annotated[bool, typer.Option("--blur-faces", help="Blur every face image (for a report that may be published).")] = False,
    max_failures: Annotated[int, typer.Option(min=0, help="Show at most this many alignment failures as thumbnails; list the rest as text.")] = 48,
    title: Annotated[Optional[str], typer.Option(help="Page title (default: 'nirvis report: PROTOCOL').")] = None,
) -> None:
    """Draw Table 2, CMC and ROC curves and the faces that could not be aligned into DIR/index.html, readable
    offline; from 'nirvis demo --json' also Fig. 5 (a few test faces hallucinated by the demo's model) and the
    mining report and training curves of that model. Nothing is re-evaluated."""
    from nirvis.errors import NirvisError
    from nirvis.report.page import ReportConfig, write_report

    try:
        index = write_report(results, output, ReportConfig(blur_faces=blur_faces, max_failures=max_failures,
                                                           title=title))
    except (NirvisError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    except OSError as exc:
        typer.echo(f"error: -o {output}: cannot write the report ({exc})", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(f"wrote {index}{' (faces blurred)' if blur_faces else ''}")
