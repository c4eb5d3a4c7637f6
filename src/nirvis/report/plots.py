"""Cheap plots of results already computed, as PNG bytes: CMC and ROC curves of Table 2's rows (paper Sec. 5), the
loss and validation curves of a hallucination model's training (its ``history.json``), the 2-D projection of a few
people's features (Fig. 6) and rank-1 against eq. (1)'s α (Fig. 7).

matplotlib is driven through its object API on the Agg canvas: no pyplot state, no display needed."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

from nirvis.report.results import Row

__all__ = ["mean_cmc", "mean_roc", "cmc_png", "roc_png", "history_png", "projection_png", "alpha_sweep_png"]


def mean_cmc(row: Row) -> np.ndarray | None:
    """``(K,)`` identification rate at ranks 1..K, the mean over the row's splits (K: the shortest split's
    CMC); ``None`` when no split recorded one."""
    curves = [s.cmc for s in row.splits if s.cmc is not None and len(s.cmc)]
    if not curves:
        return None
    k = min(len(c) for c in curves)
    return np.nanmean(np.stack([c[:k] for c in curves]), axis=0)


def mean_roc(row: Row) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(far_targets, mean VR, measured)``: the mean over the row's splits of the VR at each sampled FAR target
    (splits sampled at other targets, or without a ROC, are left out). ``measured`` is False at targets where no
    split's operating point had a single false accept: there the FAR is below what the split can measure, and
    the VR is that of accepting no impostor at all. ``None`` when no split has a ROC."""
    rocs = [s.roc for s in row.splits if s.roc is not None]
    if not rocs:
        return None
    targets = rocs[0]["far_target"]
    same = [r for r in rocs if len(r["far_target"]) == len(targets) and np.allclose(r["far_target"], targets)]
    vr = np.nanmean(np.stack([r["vr"] for r in same]), axis=0)
    if all("far" in r for r in same):
        measured = np.nanmax(np.stack([r["far"] for r in same]), axis=0) > 0
    else:
        measured = np.ones(len(targets), bool)
    return targets, vr, measured


def _figure(width: float = 6.4, height: float = 4.4):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def cmc_png(rows: Sequence[Row], title: str = "") -> bytes | None:
    """CMC curves (identification rate against rank 1..20, mean over splits) of ``rows``, as PNG bytes;
    ``None`` when no row has a CMC."""
    curves = [(r.config, c) for r in rows if (c := mean_cmc(r)) is not None]
    if not curves:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    for name, c in curves:
        ax.plot(np.arange(1, len(c) + 1), 100 * c, marker="o", ms=3, lw=1.5, label=name)
    ax.set_xlabel("rank")
    ax.set_ylabel("identification rate (%)")
    ax.set_xlim(1, max(len(c) for _, c in curves))
    ax.set_xticks(range(1, max(len(c) for _, c in curves) + 1, 2 if max(len(c) for _, c in curves) > 10 else 1))
    ax.set_ylim(0, 100)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title or "CMC (mean over splits)", fontsize=10)
    return _png(fig)


def roc_png(rows: Sequence[Row], title: str = "") -> bytes | None:
    """ROC curves (verification rate against false-accept rate, log axis; mean VR over splits at each sampled
    FAR) of ``rows``, as PNG bytes, with FAR = 1% and 0.1% marked; the part below the smallest measurable FAR
    (see :func:`mean_roc`) is dotted. ``None`` when no row has a ROC."""
    curves = [(r.config, c) for r in rows if (c := mean_roc(r)) is not None]
    if not curves:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    for name, (far, vr, measured) in curves:
        line, = ax.plot(np.where(measured, far, np.nan), 100 * np.where(measured, vr, np.nan), marker="o", ms=3,
                        lw=1.5, label=name)
        if not measured.all():  # below the smallest measurable FAR: dotted, open markers
            last = int(np.flatnonzero(~measured).max())
            upto = min(last + 2, len(far))  # joined to the first measured point
            ax.plot(far[:upto], 100 * vr[:upto], marker="o", ms=3, lw=1, ls=":", mfc="none", color=line.get_color())
    for far in (1e-3, 1e-2):
        ax.axvline(far, color="0.5", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("false accept rate (FAR)")
    ax.set_ylabel("verification rate (%)")
    ax.set_ylim(0, 100)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title or "ROC (mean VR over splits; dashed: FAR 0.1% and 1%; dotted: no false accept)",
                 fontsize=10)
    return _png(fig)


def history_png(history: dict) -> bytes | None:
    """Training loss (per logged step) and validation MSE of each channel of the hallucination CNNs against the
    optimiser step, from a model's ``history.json`` (:mod:`nirvis.hallucination.train`), as PNG bytes; ``None``
    when it holds no loss at all."""
    colors = {"y": "tab:gray", "cb": "tab:blue", "cr": "tab:red"}
    channels = [str(c) for c in history.get("channels") or []]
    log, val = history.get("log") or [], history.get("val") or []
    fig = _figure()
    ax = fig.add_subplot()
    drawn = False
    for c in channels:
        tr = [(e["step"], e["train"][c]) for e in log if c in (e.get("train") or {})]
        if tr:
            ax.plot(*zip(*tr), color=colors.get(c), alpha=0.5, lw=1, label=f"{c} training")
        va = [(e["step"], e["val"][c]) for e in val if c in (e.get("val") or {})]
        if va:
            ax.plot(*zip(*va), color=colors.get(c), marker="o", ms=3, lw=1.5, label=f"{c} validation")
        drawn = drawn or bool(tr or va)
    if not drawn:
        return None
    if all(v > 0 for e in log for v in (e.get("train") or {}).values()) and \
            all(v > 0 for e in val for v in (e.get("val") or {}).values()):
        ax.set_yscale("log")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("MSE (values in [0, 1])")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("hallucination CNNs: training loss and validation MSE per channel", fontsize=10)
    return _png(fig)


def projection_png(panels: Sequence[tuple[str, np.ndarray]], person: Sequence[str], modality: Sequence[str]) -> bytes:
    """Fig. 6: one panel per ``(title, (n, 2) points)``, the same ``n`` faces in each; one colour per person, VIS
    a filled circle and NIR an open diamond (the paper's markers)."""
    person, modality = np.asarray(person), np.asarray(modality)
    people = sorted(set(person.tolist()))
    fig = _figure(4.0 * len(panels), 4.3)
    colors = [f"C{i % 10}" for i in range(len(people))]
    for k, (title, pts) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        for p, color in zip(people, colors):
            vis = (person == p) & (modality == "vis")
            nir = (person == p) & (modality == "nir")
            ax.scatter(pts[vis, 0], pts[vis, 1], s=36, marker="o", color=color, label=f"{p} VIS" if k == 0 else None)
            ax.scatter(pts[nir, 0], pts[nir, 1], s=40, marker="D", facecolors="none", edgecolors=color, linewidths=1.3,
                       label=f"{p} NIR" if k == 0 else None)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_aspect("equal", adjustable="datalim")
    fig.legend(loc="lower center", ncol=min(2 * len(people), 10), fontsize=7, frameon=False)
    fig.subplots_adjust(bottom=0.2)
    return _png(fig)


def alpha_sweep_png(sweep: dict, raw_rank1: float | None = None) -> bytes | None:
    """Fig. 7: rank-1 of ``H`` (mean over splits, ± one standard deviation shaded) against eq. (1)'s α, one line
    per reading; ``raw_rank1`` (the NIR probes without hallucination) as a dashed line. ``None`` when the sweep
    holds no reading."""
    alphas = np.asarray(sweep.get("alphas") or [], float)
    readings = sweep.get("readings") or {}
    if not len(alphas) or not readings:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    for name, cell in readings.items():
        r1 = 100 * np.asarray(cell["rank1"], float)
        sd = 100 * np.asarray(cell.get("rank1_std") or np.zeros_like(r1), float)
        line, = ax.plot(alphas, r1, marker="o", ms=4, lw=1.5, label=f"H, eq. (1) read as {name}")
        ax.fill_between(alphas, r1 - sd, r1 + sd, color=line.get_color(), alpha=0.12)
    if raw_rank1 is not None and np.isfinite(raw_rank1):
        ax.axhline(100 * raw_rank1, color="0.3", lw=1, ls="--", label="raw (no hallucination)")
    if isinstance(sweep.get("demo_alpha"), (int, float)):
        ax.axvline(float(sweep["demo_alpha"]), color="0.6", lw=0.8, ls=":")
    ax.set_xlabel("alpha (weight of the NIR term in eq. (1))")
    ax.set_ylabel("rank-1 (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"Rank-1 of H against alpha ({sweep.get('probes', '?')} probes, "
                 f"{len(sweep.get('splits') or [])} split(s); shaded: ± 1 std over splits)", fontsize=10)
    return _png(fig)
