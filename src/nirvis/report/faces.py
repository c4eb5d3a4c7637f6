"""Face images in a report: thumbnails of image files, and the blur that makes a report fit to publish.

Faces of dataset people belong in the user's own report only; :func:`blur_face` makes every face in a report
unrecognisable (``nirvis report --blur-faces``), for a report that may be published (e.g. in ``docs/``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["for_display", "thumbnail", "blur_face", "png_bytes", "BLUR_CELLS", "EMPTY_LEVEL"]

#: Cells across the longer side of a blurred face: the face is averaged down to this many cells, then smoothed;
#: at 6, eyes, nose and mouth fall into one or two cells each, so no identity is left, only the skin tone.
BLUR_CELLS = 6

#: The largest value of a channel that counts as empty in :func:`for_display` (RAP3DF's 2017 IR views hold 0 or 1
#: in green).
EMPTY_LEVEL = 2


def for_display(image: np.ndarray) -> np.ndarray:
    """An image as a viewer should see it: an RGB image whose green and blue channels hold (almost) nothing, at
    most :data:`EMPTY_LEVEL` (NIR kept in the red channel, as RAP3DF stores it), becomes its red channel in gray;
    anything else is unchanged. For display only: recognition reads the channel the dataset names.

    Parameters
    ----------
    image
        ``(H, W)`` or ``(H, W, 3)`` uint8.
    """
    if image.ndim == 3 and image.shape[2] == 3 and int(image[:, :, 1:].max()) <= EMPTY_LEVEL:
        return np.ascontiguousarray(image[:, :, 0])
    return image


def thumbnail(image: np.ndarray, size: int) -> np.ndarray:
    """``image`` scaled (area averaging; never enlarged) to fit a ``size`` x ``size`` box, aspect kept."""
    import cv2

    h, w = image.shape[:2]
    scale = min(1.0, size / max(h, w))
    if scale >= 1.0:
        return image
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def blur_face(image: np.ndarray, cells: int = BLUR_CELLS) -> np.ndarray:
    """Make a face unrecognisable: average it down to ``cells`` cells across its longer side, scale it back up
    smoothly and blur the cell edges. The whole image is blurred (a face that could not be aligned has no known
    position). Same shape and dtype as ``image``."""
    import cv2

    h, w = image.shape[:2]
    k = cells / max(h, w)
    small = cv2.resize(image, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)
    big = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    sigma = max(h, w) / (2.0 * cells)
    return cv2.GaussianBlur(big, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)


def png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding of a gray ``(H, W)`` or RGB ``(H, W, 3)`` uint8 image."""
    import cv2

    arr = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", arr)
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 gray or BGR image
        raise ValueError(f"could not encode an image of shape {image.shape} as PNG")
    return buf.tobytes()
