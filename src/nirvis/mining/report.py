"""The mining report: summary, heatmap of kept pairs per location, score histograms, a sheet of pairs."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from nirvis._io import atomic_write, atomic_write_json
from nirvis.mining.config import MiningConfig
from nirvis.mining.store import PatchStore

__all__ = ["write_report", "pair_sheet", "report_dir_for"]

log = logging.getLogger(__name__)


def report_dir_for(output: str | os.PathLike) -> Path:
    """Folder of the report of store ``output``: ``<output stem>_report``."""
    output = Path(output)
    return output.with_name(output.stem + "_report")


def pair_sheet(nir: np.ndarray, y: np.ndarray, cr: np.ndarray, cb: np.ndarray, labels: list[str],
               cols: int = 4, scale: int = 3) -> np.ndarray:
    """RGB sheet: one tile per pair, ``NIR | VIS Y | VIS RGB`` side by side, ``scale`` x enlarged."""
    tiles = []
    for i in range(nir.shape[0]):
        rgb = cv2.cvtColor(np.stack([y[i], cr[i], cb[i]], axis=-1), cv2.COLOR_YCrCb2RGB)
        row = np.hstack([np.repeat(nir[i][..., None], 3, 2), np.repeat(y[i][..., None], 3, 2), rgb])
        row = cv2.resize(row, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
        bar = np.zeros((14, row.shape[1], 3), np.uint8)
        cv2.putText(bar, labels[i][:48], (2, 10), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (255, 255, 255), 1, cv2.LINE_AA)
        tile = np.vstack([row, bar])
        tiles.append(np.pad(tile, ((2, 2), (2, 2), (0, 0))))
    if not tiles:
        return np.zeros((40, 200, 3), np.uint8)
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    return np.vstack([np.hstack(tiles[r:r + cols]) for r in range(0, len(tiles), cols)])


def _save_png(path: Path, rgb: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    atomic_write(path, lambda p: p.write_bytes(buf.tobytes()))


def _save_fig(fig, path: Path) -> None:
    atomic_write(path, lambda p: fig.savefig(p, dpi=110, format="png"))


def write_report(store: str | os.PathLike, out_dir: str | os.PathLike | None = None, *, n_sheet: int = 32,
                 seed: int = 0, run_info: dict | None = None,
                 patch_filter: Callable[[np.ndarray], np.ndarray] | None = None) -> dict[str, Path]:
    """Write the report of a patch store (paper Sec. 3.1 mining).

    Files: ``summary.json`` (windows tried, registration failures, pairs kept and pruned, per person),
    ``heatmap.png`` (kept pairs per window location, before and after pruning), ``scores.png``
    (histograms of s1 and s2 of every registered window, with the thresholds), ``sheet.png`` (``n_sheet``
    random stored non-flipped pairs: NIR | VIS Y | VIS RGB). ``patch_filter`` is applied to every patch of the
    sheet (each of NIR, Y, Cr, Cb) before it is drawn, e.g. a blur for a report that may be published.

    Returns
    -------
    ``{name: path}`` of the files written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    store = Path(store)
    out = Path(out_dir) if out_dir is not None else report_dir_for(store)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    with PatchStore(store) as st:
        summary, cfg, people = st.summary, st.config, st.people
        s1_all = st.dataset("scored/s1")[:].astype(np.float32)
        s2_all = st.dataset("scored/s2")[:].astype(np.float32)
        flip = st.dataset("flip")[:]
        orig = np.flatnonzero(~flip)
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(orig, size=min(n_sheet, orig.size), replace=False)) if orig.size else orig
        rows = st.read(pick) if pick.size else None
    files["summary"] = atomic_write_json(out / "summary.json", {**summary, **(run_info or {}), "store": str(store)})

    grid = MiningConfig.from_dict(cfg).location_grid()
    side = int(round(np.sqrt(len(grid))))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    for ax, key, title in zip(axes, ("kept_per_location", "kept_per_location_after_prune"),
                              ("kept pairs per window", f"after pruning (cap {summary['prune_cap_per_location']})")):
        im = ax.imshow(np.asarray(summary[key]).reshape(side, side), cmap="viridis")
        ax.set_title(title)
        ticks = np.arange(side)[::2]
        ax.set_xticks(ticks, [str(int(grid[t, 1])) for t in ticks])
        ax.set_yticks(ticks, [str(int(grid[t * side, 0])) for t in ticks])
        ax.set_xlabel("window x (px)")
        ax.set_ylabel("window y (px)")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    files["heatmap"] = out / "heatmap.png"
    _save_fig(fig, files["heatmap"])
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, vals, name, thr in zip(axes, (s1_all, s2_all), ("s1 (patch correlation)", "s2 (gradient correlation)"),
                                   (cfg["min_s1"], cfg["min_s2"])):
        ax.hist(vals, bins=np.linspace(-1, 1, 81), color="tab:blue")
        ax.axvline(thr, color="tab:red", ls="--", label=f"threshold {thr}")
        ax.set_title(f"{name}, {vals.size} registered windows")
        ax.legend()
    fig.tight_layout()
    files["scores"] = out / "scores.png"
    _save_fig(fig, files["scores"])
    plt.close(fig)

    if rows is not None:
        labels = [f"{people[p]} ({int(l[0])},{int(l[1])}) s1={a:.2f} s2={b:.2f}"
                  for p, l, a, b in zip(rows["person"], rows["loc"], rows["s1"], rows["s2"])]
        patches = [rows[k] for k in ("nir", "y", "cr", "cb")]
        if patch_filter is not None:
            patches = [np.stack([patch_filter(p) for p in arr]) for arr in patches]
        sheet = pair_sheet(*patches, labels)
    else:
        sheet = pair_sheet(np.zeros((0, 1, 1), np.uint8), *(np.zeros((0, 1, 1), np.uint8),) * 3, [])
    files["sheet"] = out / "sheet.png"
    _save_png(files["sheet"], sheet)
    log.info("wrote report to %s", out)
    return files
