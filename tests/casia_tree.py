"""A CASIA NIR-VIS 2.0 image tree generated from the real protocol lists: a tiny real image (4x4 gray BMP for NIR,
RGB JPEG for VIS) at each listed path, as the licensed dataset lays them out. Shared by the loader's tests and the
demo's."""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

DATA = Path(os.environ["NIRVIS_DATA"]) if os.environ.get("NIRVIS_DATA") else (
    Path(__file__).resolve().parents[1].parent / "shared" / "data")
LISTS = DATA / "casia-nir-vis-2.0-protocols"


def _encode(mode: str, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (4, 4), 128).save(buf, format=fmt)
    return buf.getvalue()


NIR_BYTES = _encode("L", "BMP")
VIS_BYTES = _encode("RGB", "JPEG")


def disk_path(image_root: Path, rel: str) -> Path:
    """Where a listed file lies on disk: NIR always as ``.bmp``, as in the real dataset."""
    session, modality, person, name = rel.split("/")
    if modality.upper() == "NIR":
        name = os.path.splitext(name)[0] + ".bmp"
    return image_root / session / modality / person / name


def write_images(image_root: Path, rels: Iterable[str]) -> None:
    """Write a tiny real image at each listed path."""
    paths = sorted({disk_path(image_root, rel) for rel in rels})
    for folder in sorted({p.parent for p in paths}):
        folder.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=8) as pool:  # file creation is I/O-latency bound
        list(pool.map(lambda p: p.write_bytes(NIR_BYTES if p.suffix == ".bmp" else VIS_BYTES), paths, chunksize=256))


def raw_entries(name: str) -> list[str]:
    """The entries of one protocol list, with POSIX separators."""
    return [line.strip().replace("\\", "/") for line in (LISTS / name).read_text().splitlines() if line.strip()]
