"""Contact sheets: aligned faces with their landmarks, for checking alignment by eye."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from nirvis.faces.types import TEMPLATE_ANCHORS, Face

__all__ = ["contact_sheet"]


def _tile(face: Face | np.ndarray | None, label: str, size: int) -> np.ndarray:
    if isinstance(face, np.ndarray):  # an image as is (e.g. a network's crop), no markers
        tile = np.ascontiguousarray(np.repeat(face[:, :, None], 3, axis=2) if face.ndim == 2 else face)
        tile = cv2.resize(tile, (size, size), interpolation=cv2.INTER_NEAREST if tile.shape[0] < size else
                          cv2.INTER_AREA)
    elif face is None:
        tile = np.full((size, size, 3), 40, np.uint8)
        cv2.line(tile, (20, 20), (size - 20, size - 20), (200, 40, 40), 3)
        cv2.line(tile, (size - 20, 20), (20, size - 20), (200, 40, 40), 3)
    else:
        tile = np.ascontiguousarray(face.rgb()).copy()
        if tile.shape[0] != size:
            tile = cv2.resize(tile, (size, size))
        s = size / face.image.shape[0]
        for x, y in TEMPLATE_ANCHORS * s:
            cv2.drawMarker(tile, (int(x), int(y)), (0, 120, 255), cv2.MARKER_CROSS, 9, 1)
        for x, y in face.landmarks * s:
            cv2.circle(tile, (int(round(x)), int(round(y))), 2, (0, 255, 0), -1)
        for x, y in face.anchors * s:
            cv2.circle(tile, (int(round(x)), int(round(y))), 3, (255, 0, 0), 1)
    bar = np.zeros((16, size, 3), np.uint8)
    cv2.putText(bar, label[:34], (2, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([tile, bar])


def contact_sheet(items: Sequence[tuple[Face | np.ndarray | None, str]], cols: int = 8, size: int = 160) -> np.ndarray:
    """One RGB image of ``items`` (face, image or ``None`` for a failure, label), ``cols`` tiles a row.

    On a face: green dots, the 5 landmarks; red circles, eye and mouth centres; orange crosses, the template's.
    An image (uint8, gray or RGB) is drawn as it is, resized to the tile.
    A failure is a grey tile with a red cross. Returns ``(rows * (size + 16), cols * size, 3)`` uint8.
    """
    if not items:
        raise ValueError("contact_sheet needs at least one item")
    tiles = [_tile(f, lab, size) for f, lab in items]
    blank = np.zeros_like(tiles[0])
    tiles += [blank] * (-len(tiles) % cols)
    rows = [np.hstack(tiles[i : i + cols]) for i in range(0, len(tiles), cols)]
    return np.vstack(rows)
