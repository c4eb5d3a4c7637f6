"""``nirvis report``: one self-contained HTML page (``index.html``) with its PNGs beside it, drawn from a results
file already computed (``nirvis evaluate --json``, ``nirvis demo --json``). Nothing is re-evaluated: the only work
is plots and thumbnails.

The page is a list of sections. Each section is built by a function of the :class:`ReportContext` that returns a
:class:`Section`, or ``None`` when its inputs are absent; :data:`SECTIONS` lists today's builders in page order,
and a later section is one more builder that reads its own input. The sections drawn from a demo's stages (Fig. 5,
Fig. 6, Fig. 7, mining and training) live in :mod:`nirvis.report.demo`.
"""

from __future__ import annotations

import html
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nirvis.errors import ImageError, NirvisError
from nirvis.report.results import Results, Row, load_results

__all__ = ["ReportConfig", "ReportContext", "Section", "SECTIONS", "write_report", "ReportError", "GENERATOR"]

#: The ``<meta name="generator">`` of every report: how ``nirvis report`` knows a folder holds one of its reports.
GENERATOR = "nirvis report"

#: Sub-folders of the output folder that belong to the report (its files there are replaced on each run).
ASSET_DIRS = ("figures", "failures")


class ReportError(NirvisError, ValueError):
    """The report cannot be written where asked (the message names the folder and the reason)."""


@dataclass(frozen=True)
class ReportConfig:
    """Settings of a report.

    Attributes
    ----------
    blur_faces
        Blur every face image (:func:`nirvis.report.faces.blur_face`), for a report that may be published.
    max_failures
        At most this many alignment failures are shown as thumbnails; the others are listed as text.
    thumb_size
        Side of the box a thumbnail fits in, pixels.
    title
        Page title; default ``"nirvis report: <protocol>"``.
    """

    blur_faces: bool = False
    max_failures: int = 48
    thumb_size: int = 128
    title: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.max_failures, bool) or not isinstance(self.max_failures, int) or self.max_failures < 0:
            raise ValueError(f"ReportConfig.max_failures must be an int >= 0, got {self.max_failures!r}")
        if isinstance(self.thumb_size, bool) or not isinstance(self.thumb_size, int) or self.thumb_size < 16:
            raise ValueError(f"ReportConfig.thumb_size must be an int >= 16 (pixels), got {self.thumb_size!r}")


class Assets:
    """Writes the report's files under ``root`` atomically and remembers them (stale ones are removed at the end)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.written: set[str] = set()

    def write(self, rel: str, data: bytes) -> str:
        """Write ``data`` to ``root/rel`` (``rel`` under one of :data:`ASSET_DIRS`); return ``rel`` for an ``src``."""
        from nirvis._io import atomic_write_bytes

        if rel.split("/", 1)[0] not in ASSET_DIRS:
            raise ValueError(f"report asset {rel!r} must lie under one of {', '.join(ASSET_DIRS)}")
        atomic_write_bytes(self.root / rel, data)
        self.written.add(rel)
        return rel

    def remove_stale(self) -> list[Path]:
        """Delete files in :data:`ASSET_DIRS` that this run did not write (left by an earlier report)."""
        gone = []
        for d in ASSET_DIRS:
            folder = self.root / d
            if not folder.is_dir():
                continue
            for f in folder.iterdir():
                if f.is_file() and f.suffix == ".png" and f"{d}/{f.name}" not in self.written:
                    f.unlink()
                    gone.append(f)
        return gone


@dataclass
class ReportContext:
    """What a section builder reads: the results, the settings and the file writer."""

    results: Results
    config: ReportConfig
    assets: Assets
    notes: list[str] = field(default_factory=list)
    shows_faces: bool = False  # set by a section that shows faces of dataset people (the page says so)


@dataclass(frozen=True)
class Section:
    """One section of the page; ``body`` is HTML whose every text is already escaped."""

    key: str
    title: str
    body: str


SectionBuilder = Callable[[ReportContext], "Section | None"]


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _pct(v: float) -> str:
    return "n/a" if not math.isfinite(v) else f"{100 * v:.1f}"


def _pm(mean: float, std: float, n_splits: int) -> str:
    return _pct(mean) + (f" ± {_pct(std)}" if n_splits > 1 and math.isfinite(std) else "")


# -- sections ----------------------------------------------------------------------------------------------------

def table_section(ctx: ReportContext) -> Section:
    """Table 2 (paper Sec. 5.2): one row per configuration, the sentence on H and LR, and how it was produced."""
    from nirvis.report.summary import verdict

    res = ctx.results
    n_splits = max((r.n_splits for r in res.rows), default=0)
    sentence, _ = verdict(res)
    parts = [_rows_table(res.rows), f'<p class="verdict">{_e(sentence)}</p>']
    a = res.alignment
    notes = []
    if "nir_images" in a and "vis_images" in a:
        notes.append(f"Aligned: NIR {_pct(float(a.get('nir_rate', math.nan)))}% of {a['nir_images']} images, "
                     f"VIS {_pct(float(a.get('vis_rate', math.nan)))}% of {a['vis_images']}.")
    notes.append(f"Over {n_splits} split(s); ± is the standard deviation over splits (population). Probe counts are "
                 "summed over splits. Faces not aligned count as misses, and their pairs are never accepted in "
                 "VR@FAR.")
    parts.append(f'<p class="note">{_e(" ".join(notes))}</p>')
    parts.append(_provenance_html(res))
    return Section("table", f"Table 2: identification, {res.protocol}", "\n".join(parts))


def _rows_table(rows: Sequence[Row]) -> str:
    head = ("<tr><th>configuration</th><th>rank-1 (%)</th><th>VR@FAR=1% (%)</th><th>VR@FAR=0.1% (%)</th>"
            "<th>probes</th><th>not aligned: probes / gallery</th></tr>")
    body = []
    for r in rows:
        if r.error is not None:
            body.append(f'<tr class="failed"><td>{_e(r.config)}</td><td colspan="5">failed: {_e(r.error)}</td></tr>')
            continue
        body.append(f"<tr><td>{_e(r.config)}</td><td>{_e(_pm(r.rank1_mean, r.rank1_std, r.n_splits))}</td>"
                    f"<td>{_e(_pm(r.vr_1e2, r.vr_1e2_std, r.n_splits))}</td>"
                    f"<td>{_e(_pm(r.vr_1e3, r.vr_1e3_std, r.n_splits))}</td><td>{r.n_probes}</td>"
                    f"<td>{r.n_failed_alignment} / {r.n_gallery_failed}</td></tr>")
    return f'<table class="results"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>'


def tables_section(ctx: ReportContext) -> Section | None:
    """The run's other tables (``nirvis demo --dataset casia``: the paper's Table 3, View 2), when it has any."""
    if not ctx.results.tables:
        return None
    parts = []
    for title, protocol, rows in ctx.results.tables:
        n = max((r.n_splits for r in rows), default=0)
        parts.append(f"<h3>{_e(title)}</h3>{_rows_table(rows)}"
                     f'<p class="note">{_e(protocol)}, over {n} split(s); ± is the standard deviation over splits.</p>')
    return Section("tables", "More tables of this run", "\n".join(parts))


def _provenance_html(res: Results) -> str:
    out = ["<h3>How these numbers were made</h3>"]
    if res.command:
        out.append(f"<p>Command{' (run in ' + _e(res.cwd) + ')' if res.cwd else ''}:</p>"
                   f"<pre><code>{_e(res.command)}</code></pre>")
    else:
        out.append("<p>The results file does not record its command (it was written before nirvis recorded it).</p>")
    facts = [("results file", f"{res.path} (sha256 {res.sha256[:16]}…)")]
    if res.created:
        facts.append(("computed", res.created))
    if res.embedder:
        facts.append(("embedder", " ".join(f"{k} {v}" for k, v in res.embedder.items())))
    facts += [(k, v) for k, v in res.versions.items()]
    if not res.versions:
        facts.append(("software versions", "not recorded in the results file"))
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in facts)
    out.append(f'<table class="facts">{rows}</table>')
    return "\n".join(out)


def curves_section(ctx: ReportContext) -> Section | None:
    """CMC (rank 1-20) and ROC (log FAR) curves of the scored rows, mean over splits."""
    from nirvis.report.plots import cmc_png, roc_png

    rows = [r for r in ctx.results.rows if r.error is None]
    figs = []
    cmc = cmc_png(rows)
    if cmc is not None:
        src = ctx.assets.write("figures/cmc.png", cmc)
        figs.append(_figure(src, "CMC curves: identification rate against rank, mean over splits",
                            "CMC: the fraction of probes whose person is among the first k gallery people."))
    roc = roc_png(rows)
    if roc is not None:
        src = ctx.assets.write("figures/roc.png", roc)
        figs.append(_figure(src, "ROC curves: verification rate against false accept rate, log axis",
                            "ROC: mean verification rate over splits at each sampled FAR. Dotted: FARs below "
                            "the smallest a split can measure (no false accept at all)."))
    if not figs:
        return Section("curves", "CMC and ROC curves",
                       "<p>The results file holds no CMC or ROC per split (written by an older nirvis); rerun "
                       "nirvis evaluate --json to draw them.</p>")
    return Section("curves", "CMC and ROC curves", f'<div class="figs">{"".join(figs)}</div>')


def _figure(src: str, alt: str, caption: str) -> str:
    return (f'<figure><img src="{_e(src)}" alt="{_e(alt)}"><figcaption>{_e(caption)}</figcaption></figure>')


def failures_section(ctx: ReportContext) -> Section:
    """The images that could not be aligned (or read): a contact sheet of thumbnails, each with its reason."""
    from nirvis._io import read_image
    from nirvis.report.faces import blur_face, for_display, png_bytes, thumbnail

    res, cfg = ctx.results, ctx.config
    fails = list(res.failures)
    if not fails:
        return Section("failures", "Alignment failures", "<p>Every image was aligned.</p>")
    cards, text_items = [], []
    for f in fails:
        path, reason = f["path"], f["reason"]
        short = reason[len(path) + 2:] if reason.startswith(path + ": ") else reason
        where = res.resolve(path) if path else None
        shown = len(cards) < cfg.max_failures
        if where is None:
            text_items.append(f"<li><code>{_e(path or f['capture_id'])}</code>: {_e(short)} "
                              "<em>(file not found now)</em></li>")
            continue
        if not shown:
            text_items.append(f"<li><code>{_e(path)}</code>: {_e(short)}</li>")
            continue
        try:
            img = for_display(read_image(where))
        except ImageError as exc:
            text_items.append(f"<li><code>{_e(path)}</code>: {_e(short)} <em>(cannot be shown: {_e(exc)})</em></li>")
            continue
        thumb = thumbnail(img, cfg.thumb_size)
        if cfg.blur_faces:
            thumb = blur_face(thumb)
        src = ctx.assets.write(f"failures/{len(cards):04d}.png", png_bytes(thumb))
        cards.append(f'<figure class="thumb"><img src="{_e(src)}" alt="{_e(Path(path).name)}">'
                     f'<figcaption><code>{_e(Path(path).name)}</code><br>{_e(f["capture_id"])}<br>{_e(short)}'
                     "</figcaption></figure>")
    parts = [f"<p>{len(fails)} image(s) gave no features; they count as misses (probes) or cannot be matched "
             f"(gallery). {len(cards)} shown{' (blurred)' if cfg.blur_faces and cards else ''}"
             f"{f', {len(text_items)} listed below' if text_items else ''}.</p>"]
    if cards:
        parts.append(f'<div class="sheet">{"".join(cards)}</div>')
    if text_items:
        parts.append(f'<ul class="failures">{"".join(text_items)}</ul>')
    return Section("failures", "Alignment failures", "\n".join(parts))


def fig5_section(ctx: ReportContext) -> Section | None:
    """Fig. 5 equivalent from the demo's model (:func:`nirvis.report.demo.fig5_section`)."""
    from nirvis.report.demo import fig5_section as build

    return build(ctx)


def mining_section(ctx: ReportContext) -> Section | None:
    """Mining and training of the demo's model (:func:`nirvis.report.demo.mining_section`)."""
    from nirvis.report.demo import mining_section as build

    return build(ctx)


def fig6_section(ctx: ReportContext) -> Section | None:
    """Fig. 6 equivalent from the demo's features and fits (:func:`nirvis.report.demo.fig6_section`)."""
    from nirvis.report.demo import fig6_section as build

    return build(ctx)


def fig7_section(ctx: ReportContext) -> Section | None:
    """Fig. 7 equivalent from the demo's α sweep (:func:`nirvis.report.demo.fig7_section`)."""
    from nirvis.report.demo import fig7_section as build

    return build(ctx)


#: Today's sections, in page order.
SECTIONS: tuple[SectionBuilder, ...] = (table_section, tables_section, curves_section, fig5_section, fig6_section, fig7_section,
                                        mining_section, failures_section)

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
h3{font-size:1em}table{border-collapse:collapse}td,th{padding:.25em .7em;border-bottom:1px solid #eee;text-align:right}
th:first-child,td:first-child{text-align:left}table.facts th,table.facts td{text-align:left;font-size:.9em}
tr.failed td{color:#a00;text-align:left}.verdict{background:#f4f7fb;border-left:4px solid #4a7ab5;padding:.6em .9em}
.note,.privacy{color:#555;font-size:.9em}.privacy{border:1px solid #e0c080;background:#fff8e8;padding:.5em .8em}
pre{background:#f6f6f6;padding:.6em;overflow-x:auto;white-space:pre-wrap}
.figs{display:flex;flex-wrap:wrap;gap:1em}.figs figure{margin:0;flex:1 1 460px}.figs img{max-width:100%}
figcaption{font-size:.85em;color:#444}.sheet{display:flex;flex-wrap:wrap;gap:.8em}
.thumb{margin:0;width:150px}.thumb figcaption{word-break:break-word;font-size:.75em}
"""


def render(title: str, sections: Sequence[Section], notes: Sequence[str], version: str) -> str:
    """The page's HTML (UTF-8); every text in ``title`` and ``notes`` is escaped here."""
    toc = "".join(f'<li><a href="#{_e(s.key)}">{_e(s.title)}</a></li>' for s in sections)
    body = "\n".join(f'<section id="{_e(s.key)}"><h2>{_e(s.title)}</h2>\n{s.body}\n</section>' for s in sections)
    note_html = "".join(f'<p class="privacy">{_e(n)}</p>' for n in notes)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<meta name="generator" content="{_e(GENERATOR)} {_e(version)}">\n<title>{_e(title)}</title>\n'
            f"<style>{_CSS}</style>\n</head>\n<body>\n<h1>{_e(title)}</h1>\n{note_html}\n"
            f"<nav><ul>{toc}</ul></nav>\n{body}\n</body>\n</html>\n")


def _check_output(out: Path) -> None:
    """Refuse an output folder that is a file, or that holds files but no earlier nirvis report."""
    if out.exists() and not out.is_dir():
        raise ReportError(f"-o {out}: is a file, not a folder")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ReportError(f"-o {out}: {parent} is a file, not a folder")
            break
    if out.is_dir() and any(out.iterdir()):
        index = out / "index.html"
        try:
            head = index.read_text(encoding="utf-8", errors="replace")[:2000] if index.is_file() else ""
        except OSError:
            head = ""
        if not re.search(rf'<meta name="generator" content="{re.escape(GENERATOR)}\b', head):
            raise ReportError(f"-o {out}: the folder is not empty and holds no nirvis report; give a new or empty "
                              "folder (a report replaces its own files only)")


def write_report(results: str | os.PathLike | Results, out_dir: str | os.PathLike,
                 config: ReportConfig | None = None,
                 sections: Sequence[SectionBuilder] = SECTIONS) -> Path:
    """Write ``out_dir/index.html`` and its PNGs from a results file.

    Every file is written atomically, the page last, so a crash never leaves a page pointing at missing files.
    A folder that already holds a nirvis report is updated in place (its old PNGs that the new page does not
    use are removed); any other non-empty folder is refused.

    Parameters
    ----------
    results
        A results file (``nirvis evaluate --json``) or its :class:`~nirvis.report.results.Results`.
    out_dir
        Output folder.
    config
        :class:`ReportConfig`; default settings when ``None``.
    sections
        Section builders, in page order (default :data:`SECTIONS`).

    Returns
    -------
    Path of ``index.html``.

    Raises
    ------
    ResultsError
        When the results file is missing or malformed.
    ReportError
        When ``out_dir`` cannot hold the report.
    """
    from nirvis import __version__
    from nirvis._io import atomic_write

    cfg = config or ReportConfig()
    res = results if isinstance(results, Results) else load_results(results)
    out = Path(out_dir)
    _check_output(out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = ReportContext(res, cfg, Assets(out))
    built = [s for s in (build(ctx) for build in sections) if s is not None]
    notes = list(ctx.notes)
    if res.failures or ctx.shows_faces:
        notes.insert(0, "Every face image in this report is blurred." if cfg.blur_faces else
                     "This report shows faces of the people in the dataset: keep it to yourself. Their terms do not "
                     "allow publishing them; write a report to publish with --blur-faces.")
    title = cfg.title or f"nirvis report: {res.protocol}"
    page = render(title, built, notes, __version__)
    index = atomic_write(out / "index.html", lambda p: p.write_text(page, encoding="utf-8"))
    ctx.assets.remove_stale()
    return index
