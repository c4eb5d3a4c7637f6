"""The Fig. 5 sheet of the paper: one row per face, NIR | CNN output | blended | real VIS.

Drawn by ``nirvis hallucinate --sheet`` and by ``nirvis report`` (from the demo's model)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["sheet_row", "sheet_titles", "sheet_image"]


def sheet_row(result, i: int, vis: np.ndarray | None = None,
              tile_filter: Callable[[np.ndarray], np.ndarray] | None = None) -> list[np.ndarray]:
    """The RGB tiles of face ``i`` of a :class:`~nirvis.hallucination.infer.Hallucination`: the normalised
    NIR, the CNN output, the eq. (1) blend, and ``vis`` (an RGB face of the same size) when given.
    ``tile_filter`` is applied to every tile (e.g. a blur)."""
    tiles = [np.repeat(result.nir[i][:, :, None], 3, axis=2), result.rgb_raw[i], result.rgb[i]]
    if vis is not None:
        tiles.append(np.repeat(vis[:, :, None], 3, axis=2) if vis.ndim == 2 else vis)
    return [tile_filter(t) for t in tiles] if tile_filter is not None else tiles


def sheet_titles(blend, with_vis: bool) -> list[str]:
    """Column titles of the sheet; ``blend`` is the :class:`~nirvis.hallucination.blend.BlendConfig` (or ``None``:
    no blend)."""
    titles = ["NIR (normalised)", "CNN output",
              f"eq. (1) {blend.reading} a={blend.alpha:g}" if blend is not None else "no blend (a=0)"]
    return titles + (["VIS"] if with_vis else [])


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    import cv2

    bar = np.zeros((18, tile.shape[1], 3), np.uint8)
    cv2.putText(bar, text[:40], (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([bar, tile])


def sheet_image(rows: list[list[np.ndarray]], titles: list[str]) -> np.ndarray:
    """One RGB image: a title bar, then one row of equally sized RGB tiles per face (Fig. 5 of the paper)."""
    cols = max(len(r) for r in rows)
    side = rows[0][0].shape[0]
    blank = np.full((side, side, 3), 40, np.uint8)
    body = [np.hstack(r + [blank] * (cols - len(r))) for r in rows]
    header = np.hstack([_label(np.zeros((0, side, 3), np.uint8), t) for t in titles + [""] * (cols - len(titles))])
    return np.vstack([header] + body)
