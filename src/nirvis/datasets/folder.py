"""A user's own NIR-VIS data as plain folders, evaluated like the paper's datasets (Sec. 5).

Layout::

    <root>/<person>/vis/*.jpg     # VIS (RGB) images: the first one (sorted) enrols the person
    <root>/<person>/nir/*.png     # NIR images: every one is a probe

The ``nir``/``vis`` folder names and the extensions (``png``, ``jpg``, ``jpeg``, ``bmp``, ``tif``, ``tiff``) are
matched case-insensitively; hidden files and folders are ignored. 16-bit PNG and TIFF files (as NIR cameras write
them) are read by :func:`nirvis._io.read_image`'s rule.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from nirvis.datasets.base import Sample, Split, people
from nirvis.errors import DatasetError

__all__ = ["IMAGE_EXTENSIONS", "scan_folder", "folder_split"]

logger = logging.getLogger(__name__)

#: Image extensions picked up (lower case; matched case-insensitively).
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

_MODALITY_FOLDERS = ("nir", "vis")
_LAYOUT_HELP = "expected <root>/<person>/nir/*.png and <root>/<person>/vis/*.jpg (png, jpg, jpeg, bmp or tif)"


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def _images(folder: Path) -> list[str]:
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if e.is_file() and not e.name.startswith(".")
                      and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS)


def scan_folder(root: str | os.PathLike) -> list[Sample]:
    """List every image of a ``<root>/<person>/{nir,vis}/`` folder.

    Parameters
    ----------
    root
        Folder with one sub-folder per person, each holding ``nir`` and/or ``vis`` sub-folders.

    Returns
    -------
    list of Sample
        Sorted by person, then modality (``nir`` before ``vis``), then file name. ``capture_id`` is
        the posix path relative to ``root`` (``"alice/nir/001.png"``); NIR samples are read as gray
        (``channel="gray"``), VIS ones as stored (``channel=None``).

    Raises
    ------
    DatasetError
        If ``root`` is not a folder, or has no person folder with a ``nir`` or ``vis`` sub-folder.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"image folder {str(root)!r}: no such folder")
    samples: list[Sample] = []
    n_people = 0
    skipped: list[str] = []
    for person_dir in _visible_dirs(root):
        found = [p for p in _visible_dirs(person_dir) if p.name.lower() in _MODALITY_FOLDERS]
        subdirs = {p.name.lower(): p for p in found}
        if len(subdirs) < len(found):
            raise DatasetError(f"{person_dir}: more than one folder per modality "
                               f"({', '.join(sorted(p.name for p in found))}); merge them into one nir/ and one vis/")
        if not subdirs:
            skipped.append(person_dir.name)
            continue
        n_people += 1
        for modality in _MODALITY_FOLDERS:
            if modality not in subdirs:
                continue
            mdir = subdirs[modality]
            for name in _images(mdir):
                samples.append(Sample(
                    person=person_dir.name,
                    modality=modality,
                    path=mdir / name,
                    capture_id=f"{person_dir.name}/{mdir.name}/{name}",
                    channel="gray" if modality == "nir" else None,
                ))
    if n_people == 0:
        raise DatasetError(f"image folder {str(root)!r}: no person folders found; {_LAYOUT_HELP}")
    if skipped:
        logger.warning("image folder %s: %d folder(s) without a nir/ or vis/ sub-folder skipped (%s); %s", root,
                       len(skipped), ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else ""), _LAYOUT_HELP)
    if not samples:
        raise DatasetError(f"image folder {str(root)!r}: {n_people} person folders but no image files; {_LAYOUT_HELP}")
    return samples


def folder_split(root: str | os.PathLike, train_root: str | os.PathLike | None = None) -> Split:
    """An evaluation split of a ``<root>/<person>/{nir,vis}/`` folder (the protocol of Sec. 5).

    Parameters
    ----------
    root
        Test folder (see :func:`scan_folder`).
    train_root
        Optional training folder of the same layout, e.g. to fit the low-rank embedding (Sec. 4).

    Returns
    -------
    Split
        ``name="folder-<root name>"``. ``gallery``: the first VIS image (sorted by file name) of each
        person; ``probes``: every NIR image; ``train``: every image of ``train_root``, or empty.
        A person without VIS image keeps their probes, which then count as misses; a warning is
        logged for them.

    Raises
    ------
    DatasetError
        If ``root`` or ``train_root`` is missing or not laid out as expected, or if a person folder name is in
        both (it names one person: a person must not train and be tested; and images of the two folders
        would share capture ids, so one would be scored with the other's features).
    """
    root = Path(root).expanduser()
    samples = scan_folder(root)
    gallery: list[Sample] = []
    enrolled: set[str] = set()
    for s in samples:
        if s.modality == "vis" and s.person not in enrolled:
            enrolled.add(s.person)
            gallery.append(s)
    probes = tuple(s for s in samples if s.modality == "nir")
    name = f"folder-{root.resolve().name}"

    no_vis = sorted({s.person for s in probes} - enrolled)
    if no_vis:
        logger.warning("%s: %d people have NIR images but no VIS image to enrol (%s); their probes count as misses",
                       name, len(no_vis), ", ".join(no_vis[:5]) + (", ..." if len(no_vis) > 5 else ""))
    if not probes:
        logger.warning("%s: no NIR image under %s; the split has no probes", name, root)

    train: tuple[Sample, ...] = ()
    if train_root is not None:
        train = tuple(scan_folder(train_root))
        overlap = sorted(set(people(train)) & set(people(samples)))
        if overlap:
            raise DatasetError(f"{name}: {len(overlap)} person folder(s) are in both the training folder {train_root} "
                               f"and the test folder {root} ({', '.join(overlap[:5])}{', ...' if len(overlap) > 5 else ''}); "
                               "a person must not train and be tested. If these are different people, rename "
                               "their folders so that every person has one name")
    return Split(name=name, train=train, gallery=tuple(gallery), probes=probes)
