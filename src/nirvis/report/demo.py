"""Report sections drawn from the stages of ``nirvis demo`` (paper Sec. 3-5): the mining report and the training
curves of the hallucination model, the Fig. 5 sheet (NIR | CNN output | blended | real VIS) of a few test
people, the Fig. 6 projection of a few test people's features through the fitted embeddings, and the Fig. 7 α
sweep when the demo ran one.

The stages are found through the ``demo`` section of the results file: each stage's ``path`` (recorded since the
report reads them), else ``<stage_cache>/<stage>/<key>``, else the folder of ``hallucination_model``. Each section
is ``None`` when the results file is not a demo's or its stages are gone. Nothing is computed again except cheap
plots: the mining report's figures from the stored patches, the hallucination of a few faces whose
alignments the feature cache keeps, and a 2-D PCA of a few stored feature vectors.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nirvis.report.page import ReportContext, Section, _e, _figure

__all__ = ["stage_folder", "mining_section", "fig5_section", "fig5_faces", "FIG5_PEOPLE", "fig6_section",
           "fig6_projection", "Projection", "FIG6_PEOPLE", "FIG6_ROWS", "fig7_section"]

#: Test people on the Fig. 5 sheet.
FIG5_PEOPLE = 4

#: Pairs on the mining report's sheet of sample pairs.
MINING_SHEET = 16

#: Test people on the Fig. 6 projection (the paper shows five).
FIG6_PEOPLE = 5

#: Fig. 6's panels, in order: ``raw`` and the demo's rows whose fitted embedding was kept (paper: raw, ITML,
#: LMNN, low-rank).
FIG6_ROWS = ("raw", "itml", "LR")


def stage_folder(demo: dict[str, Any], stage: str) -> Path | None:
    """The folder of the demo's finished ``stage`` (``None`` when the results file does not say, or it is gone)."""
    rec = next((s for s in demo.get("stages") or [] if isinstance(s, dict) and s.get("stage") == stage), None)
    if rec is None:
        return None
    cands = []
    if isinstance(rec.get("path"), str):
        cands.append(Path(rec["path"]))
    key = rec.get("key")
    if isinstance(key, str):
        if isinstance(demo.get("stage_cache"), str):
            cands.append(Path(demo["stage_cache"]) / stage / key)
        if isinstance(demo.get("hallucination_model"), str):  # <stage_cache>/train/<key>/model
            cands.append(Path(demo["hallucination_model"]).parents[2] / stage / key)
    return next((c for c in cands if c.is_dir()), None)


def _model_folder(demo: dict[str, Any]) -> Path | None:
    train = stage_folder(demo, "train")
    cands = ([train / "model"] if train is not None else []) + (
        [Path(demo["hallucination_model"])] if isinstance(demo.get("hallucination_model"), str) else [])
    return next((c for c in cands if (c / "config.json").is_file()), None)


# -- mining and training -------------------------------------------------------------------------------------------

def mining_section(ctx: ReportContext) -> Section | None:
    """Mining and training (paper Sec. 3.1, 3): the mining report of the demo's patch store (heatmap of kept
    pairs per window, score histograms, a sheet of sample pairs) and the training and validation curves of its
    hallucination model."""
    import json

    from nirvis.report.plots import history_png

    demo = ctx.results.demo
    if not demo:
        return None
    mine, model = stage_folder(demo, "mine"), _model_folder(demo)
    store = mine / "patches.h5" if mine is not None else None
    history = model / "history.json" if model is not None else None
    if (store is None or not store.is_file()) and (history is None or not history.is_file()):
        return None
    parts = []
    if store is not None and store.is_file():
        parts.append(_mining_figures(ctx, store))
    else:
        parts.append("<p>The demo's patch store is not in its stage cache any more: no mining report.</p>")
    if history is not None and history.is_file():
        try:
            png = history_png(json.loads(history.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            parts.append(f"<p>The training history {_e(history)} cannot be read ({_e(exc)}).</p>")
        else:
            if png is None:
                parts.append(f"<p>The training history {_e(history)} holds no loss yet.</p>")
            else:
                src = ctx.assets.write("figures/training.png", png)
                info = next((s.get("info") or {} for s in demo.get("stages") or []
                             if isinstance(s, dict) and s.get("stage") == "train"), {})
                caption = (f"Hallucination CNNs ({_steps(info)}): mean training MSE of each channel over the logged "
                           f"steps (thin), and the MSE on the validation people (dots). Model: {model}.")
                fig = _figure(src, "training loss and validation MSE per channel", caption)
                parts.append(f'<div class="figs">{fig}</div>')
    else:
        parts.append("<p>The demo's hallucination model is not in its stage cache any more: no training curves.</p>")
    return Section("mining", "Mining and training", "\n".join(parts))


def _steps(info: dict[str, Any]) -> str:
    bits = []
    if info.get("steps") is not None:
        bits.append(f"{info['steps']} steps")
    if info.get("train_people") is not None:
        bits.append(f"{info['train_people']} training and {info.get('val_people', '?')} validation people")
    return ", ".join(bits) or "training"


def _mining_figures(ctx: ReportContext, store: Path) -> str:
    from nirvis.errors import NirvisError
    from nirvis.mining.report import write_report as mining_report
    from nirvis.report.faces import blur_face

    blur = ctx.config.blur_faces
    try:
        with tempfile.TemporaryDirectory(prefix="nirvis-report-mining-") as tmp:
            files = mining_report(store, tmp, n_sheet=MINING_SHEET, patch_filter=blur_face if blur else None)
            got = {name: Path(files[name]).read_bytes() for name in ("heatmap", "scores", "sheet")}
    except (NirvisError, OSError, ValueError, KeyError) as exc:
        return f"<p>The mining report of {_e(store)} cannot be drawn ({_e(type(exc).__name__)}: {_e(exc)}).</p>"
    ctx.shows_faces = True  # patches of dataset people's faces
    figs = [
        _figure(ctx.assets.write("figures/mining_heatmap.png", got["heatmap"]), "kept patch pairs per window",
                "Kept NIR/VIS patch pairs per window location of the aligned face, before and after pruning."),
        _figure(ctx.assets.write("figures/mining_scores.png", got["scores"]), "score histograms",
                "Scores of every registered window: s1 (patch correlation) and s2 (gradient correlation), with "
                "the thresholds a kept pair must pass."),
    ]
    sheet = _figure(ctx.assets.write("figures/mining_sheet.png", got["sheet"]), "sample patch pairs",
                    f"{MINING_SHEET} stored pairs drawn at random (seed 0): NIR | VIS Y | VIS RGB"
                    + (", every patch blurred." if blur else "."))
    return (f'<p>Patch store: <code>{_e(store)}</code>.</p><div class="figs">{"".join(figs)}</div>'
            f'<div class="figs">{sheet}</div>')


# -- Fig. 5 ------------------------------------------------------------------------------------------------------

class _NoEmbedder:
    """The report aligns faces (through the feature cache) and never embeds them."""

    fingerprint = "report-no-embedder"
    dim = 0

    def __init__(self, landmark_model: str = "shape5") -> None:
        self.landmark_model = landmark_model  # the demo's alignment, so that its cached faces are found

    def embed(self, faces):  # pragma: no cover - never called
        raise RuntimeError("the report does not embed faces")


def fig5_faces(demo: dict[str, Any], n: int = FIG5_PEOPLE) -> tuple[list[tuple[str, Any, Any]], list[str]]:
    """``([(person, nir_face, vis_face)], problems)`` for the first ``n`` test people (sorted ids) of the demo's
    first split: each one's first NIR probe and the VIS frame taken with it (else the person's gallery VIS
    image), aligned through the feature cache (:meth:`~nirvis.pipeline.Recognizer.align_sample`: no face is
    detected again when the demo aligned it)."""
    from nirvis.datasets import load_protocol
    from nirvis.errors import NirvisError
    from nirvis.features.cache import FeatureCache
    from nirvis.pipeline import Recognizer

    root = demo.get("data_root")
    if not isinstance(root, str) or not Path(root).exists():
        return [], [f"the data folder {root!r} recorded by the demo is not there" if root else
                    "the results file does not record the demo's data folder (written by an older nirvis demo)"]
    _, splits, every = load_protocol(str(demo.get("dataset") or "rap3df"), root, demo.get("protocol_arg"))
    chosen = (demo.get("config") or {}).get("splits")
    split = splits[chosen[0] if chosen else 0]
    by_id = {s.capture_id: s for s in every}
    cache = demo.get("feature_cache")
    rec = Recognizer(_NoEmbedder(str(demo.get("landmark_model") or "shape5")),
                     cache=FeatureCache(cache) if isinstance(cache, str) else None)
    got, problems = [], []
    for person in sorted(split.test_people):
        if len(got) >= n:
            break
        nirs = [s for s in split.probes if s.person == person and s.modality == "nir"]
        vis = [by_id[p.pair_id] for p in nirs if p.pair_id in by_id] + \
              [s for s in split.gallery if s.person == person and s.modality == "vis"]
        if not nirs or not vis:
            continue
        try:
            got.append((person, rec.align_sample(nirs[0]), rec.align_sample(vis[0])))
        except (NirvisError, OSError) as exc:
            problems.append(f"{person}: {exc}")
    return got, problems


def fig5_section(ctx: ReportContext) -> Section | None:
    """Fig. 5 equivalent: for a few test people, NIR | CNN output | blended | real VIS, from the demo's model."""
    from nirvis.errors import NirvisError
    from nirvis.hallucination.blend import BlendConfig
    from nirvis.hallucination.infer import Hallucinator, face_inputs
    from nirvis.hallucination.io import load_model
    from nirvis.hallucination.sheet import sheet_image, sheet_row, sheet_titles
    from nirvis.report.faces import blur_face, png_bytes

    demo = ctx.results.demo
    model = _model_folder(demo) if demo else None
    if model is None:
        return None
    title = "Fig. 5: hallucinated faces of test people"
    cfg = demo.get("config") or {}
    try:
        faces, problems = fig5_faces(demo)
        if not faces:
            why = "; ".join(problems) or "no test person with a NIR probe and a VIS image"
            return Section("fig5", title, f"<p>No face to show: {_e(why)}.</p>")
        blend = BlendConfig(alpha=float(cfg.get("alpha", 0.6)), reading=str(cfg.get("reading", "log")))
        loaded = load_model(model)
        hal = Hallucinator(loaded, blend, "fft")
        res = hal.hallucinate(*face_inputs([nir for _, nir, _ in faces]))
    except (NirvisError, OSError, ValueError) as exc:
        return Section("fig5", title, f"<p>The sheet cannot be drawn ({_e(type(exc).__name__)}: {_e(exc)}).</p>")
    blur = blur_face if ctx.config.blur_faces else None
    rows = [sheet_row(res, i, vis.image, tile_filter=blur) for i, (_, _, vis) in enumerate(faces)]
    src = ctx.assets.write("figures/fig5.png", png_bytes(sheet_image(rows, sheet_titles(blend, True))))
    ctx.shows_faces = True
    people = ", ".join(p for p, _, _ in faces)
    meta = loaded.meta or {}
    seen = {str(p) for k in ("store_people", "train_people", "val_people") for p in meta.get(k) or []}
    unseen = bool(seen) and not seen & {p for p, _, _ in faces}
    caption = (f"Test people {people} (one row each{'; the model never saw them' if unseen else ''}): the "
               "normalised NIR probe, the "
               f"CNNs' output, its eq. (1) blend with the NIR (alpha {blend.alpha:g}, {blend.reading}) and the "
               f"real VIS image" + (" - every face blurred." if blur else ".") + f" Model: {model}.")
    body = f'<div class="figs">{_figure(src, "NIR, CNN output, blended and real VIS faces", caption)}</div>'
    if problems:
        body += f'<p class="note">Left out: {_e("; ".join(problems))}.</p>'
    return Section("fig5", title, body)


# -- Fig. 6 ------------------------------------------------------------------------------------------------------

@dataclass
class Projection:
    """Fig. 6's data: the faces of a few test people of one split, projected to 2-D (PCA) per row.

    Attributes
    ----------
    split
        The split whose test people are shown and whose training people fitted the embeddings.
    person, modality
        ``(n,)`` each face's person and ``"nir"`` / ``"vis"``.
    panels
        ``(row, (n, 2) points, gap)``: ``gap`` is the mean distance between a person's NIR and VIS centroids
        over the mean distance between two people's centroids, in the row's full space on L2-normalised
        features (lower: the two spectra of a person sit closer, relative to how far people are apart).
    problems
        Rows left out, and why.
    """

    split: str
    person: np.ndarray
    modality: np.ndarray
    panels: list[tuple[str, np.ndarray, float]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _gap(Z: np.ndarray, person: np.ndarray, modality: np.ndarray) -> float:
    people = sorted(set(person.tolist()))
    within = [np.linalg.norm(Z[(person == p) & (modality == "nir")].mean(0) - Z[(person == p) & (modality == "vis")].mean(0))
              for p in people]
    cent = np.stack([Z[person == p].mean(0) for p in people])
    between = [np.linalg.norm(cent[i] - cent[j]) for i in range(len(people)) for j in range(i + 1, len(people))]
    return float(np.mean(within) / max(float(np.mean(between)), 1e-12))


def fig6_projection(demo: dict[str, Any], n: int = FIG6_PEOPLE) -> tuple[Projection | None, str]:
    """The projection of Fig. 6, or ``(None, why not)``.

    The first ``n`` test people (sorted ids) of the demo's first split who have at least two aligned NIR faces and
    one aligned VIS face; every capture of theirs that the demo embedded (the features stage's ``features.npz``),
    raw and through the embeddings the split's fits kept (``demo.fits``: ``embedding.npz`` + ``.json``). Each
    panel is the 2-D PCA of its L2-normalised features (cosine is what the rows match with)."""
    from sklearn.decomposition import PCA

    from nirvis.datasets import load_protocol
    from nirvis.demo.pipeline import FIT_EMBEDDING
    from nirvis.embedding.io import load_embedding

    feats = stage_folder(demo, "features")
    if feats is None or not (feats / "features.npz").is_file():
        return None, "the demo's features are not in its stage cache any more"
    root = demo.get("data_root")
    if not isinstance(root, str) or not Path(root).exists():
        return None, f"the data folder {root!r} recorded by the demo is not there"
    _, splits, every = load_protocol(str(demo.get("dataset") or "rap3df"), root, demo.get("protocol_arg"))
    chosen = (demo.get("config") or {}).get("splits")
    split = splits[chosen[0] if chosen else 0]
    with np.load(feats / "features.npz", allow_pickle=False) as z:
        ids, X, ok = z["capture_id"].tolist(), z["features"], z["ok"]
    by_id = {s.capture_id: s for s in every}
    rows = [i for i, c in enumerate(ids) if ok[i] and c in by_id and by_id[c].person in split.test_people]
    person = np.array([by_id[ids[i]].person for i in rows])
    modality = np.array([by_id[ids[i]].modality for i in rows])
    people = [p for p in sorted(set(person.tolist()))
              if ((person == p) & (modality == "nir")).sum() >= 2 and ((person == p) & (modality == "vis")).any()][:n]
    if len(people) < 2:
        return None, f"split {split.name} has fewer than 2 test people with NIR and VIS features"
    keep = np.isin(person, people)
    X, person, modality = X[np.array(rows)[keep]].astype(np.float64), person[keep], modality[keep]
    proj = Projection(split.name, person, modality)
    folders = {f.get("row"): Path(f["path"]) for f in demo.get("fits") or []
               if isinstance(f, dict) and f.get("split") == split.name and isinstance(f.get("path"), str)}
    for row in FIG6_ROWS:
        if row == "raw":
            Z = X
        elif row not in folders:
            if "fits" not in demo:  # else the demo did not fit it (the quick run fits LR only)
                proj.problems.append(f"{row}: the results do not list the demo's fitted embeddings (written by an "
                                     "older nirvis demo; run it again)")
            continue
        else:
            try:
                Z = load_embedding(folders[row] / FIT_EMBEDDING).transform(X, modality=modality)
            except (OSError, ValueError) as exc:
                proj.problems.append(f"{row}: {exc}")
                continue
        Z = Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)
        proj.panels.append((row, PCA(n_components=2, random_state=0).fit_transform(Z), _gap(Z, person, modality)))
    return proj, ""


def fig6_section(ctx: ReportContext) -> Section | None:
    """Fig. 6 equivalent: a few test people's NIR and VIS features in 2-D, raw and through ITML and LR."""
    from nirvis.errors import NirvisError
    from nirvis.report.plots import projection_png

    demo = ctx.results.demo
    if not demo:
        return None
    title = "Fig. 6: features of test people, NIR and VIS, in two dimensions"
    try:
        proj, why = fig6_projection(demo)
    except (NirvisError, OSError, ValueError, KeyError) as exc:
        return Section("fig6", title, f"<p>The projection cannot be drawn ({_e(type(exc).__name__)}: {_e(exc)}).</p>")
    if proj is None:
        return Section("fig6", title, f"<p>No projection: {_e(why)}.</p>")
    png = projection_png([(f"{row} (gap {gap:.2f})", pts) for row, pts, gap in proj.panels], proj.person,
                         proj.modality)
    src = ctx.assets.write("figures/fig6.png", png)
    n_people = len(set(proj.person.tolist()))
    caption = (f"{n_people} test people of split {proj.split} ({len(proj.person)} faces: "
               f"{int((proj.modality == 'nir').sum())} NIR, {int((proj.modality == 'vis').sum())} VIS), each panel "
               "the 2-D PCA of its L2-normalised features; one colour per person, VIS filled circles, NIR open "
               "diamonds. The embeddings were fitted on the split's training people only. gap: the mean distance "
               "between a person's NIR and VIS centroids over the mean distance between two people's centroids, "
               "in the full space (lower: the spectra of one person closer together).")
    body = f'<div class="figs">{_figure(src, "2-D projections of NIR and VIS features per row", caption)}</div>'
    if proj.problems:
        body += f'<p class="note">Left out: {_e("; ".join(proj.problems))}.</p>'
    return Section("fig6", title, body)


# -- Fig. 7 ------------------------------------------------------------------------------------------------------

def fig7_section(ctx: ReportContext) -> Section | None:
    """Fig. 7 equivalent: rank-1 of H against eq. (1)'s α, both readings, when the demo ran the sweep
    (``nirvis demo --alpha-sweep``)."""
    from nirvis.report.plots import alpha_sweep_png

    demo = ctx.results.demo
    sweep = demo.get("alpha_sweep") if demo else None
    if not isinstance(sweep, dict):
        return None
    title = "Fig. 7: rank-1 against the blending weight alpha"
    raw = next((r.rank1_mean for r in ctx.results.rows if r.config == "raw" and r.error is None), None)
    try:
        png = alpha_sweep_png(sweep, raw)
    except (KeyError, TypeError, ValueError) as exc:
        return Section("fig7", title, f"<p>The sweep cannot be drawn ({_e(type(exc).__name__)}: {_e(exc)}).</p>")
    if png is None:
        return Section("fig7", title, "<p>The sweep holds no result.</p>")
    src = ctx.assets.write("figures/fig7.png", png)
    best = []
    for name, cell in (sweep.get("readings") or {}).items():
        r, a = max(zip(cell["rank1"], sweep["alphas"]))
        best.append(f"{name}: best {100 * r:.1f} at alpha {a:g}")
    caption = ("Rank-1 of H (the demo's hallucination model, no learned embedding) on every split's probes, for each "
               "alpha of eq. (1) and both readings: log (Laplacian of Gaussian, ours) and gaussian (the literal "
               "text); alpha 0 is the CNN output alone. Dotted: the demo's alpha. " + "; ".join(best) + ".")
    return Section("fig7", title, f'<div class="figs">{_figure(src, "rank-1 against alpha", caption)}</div>')
