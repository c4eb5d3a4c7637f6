"""CASIA NIR-VIS 2.0: the image tree, its protocol lists and the evaluation splits of the paper (Sec. 5).

The dataset is licensed and never shipped with nirvis. Once obtained, its image tree looks like::

    <root>/s1/NIR/10001/001.bmp
    <root>/s1/VIS/10001/001.jpg
    ...
    <root>/s4/...

possibly one level down in ``<root>/NIR-VIS-2.0``. The protocol lists (``vis_gallery_{1..10,dev}.txt``,
``nir_probe_{1..10,dev}.txt``, ``vis_train_dev.txt``, ``nir_train_dev.txt``) hold one Windows path per
line, e.g. ``s2\\VIS\\10153\\003.jpg``: session, modality, person, file. NIR files on disk are ``.bmp``
even where a list says ``.jpg``, so a listed file is found by trying the listed extension first and
then the others.
"""

from __future__ import annotations

import logging
import numbers
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from nirvis.datasets.base import Sample, Split, by_person
from nirvis.errors import DatasetError

__all__ = [
    "IMAGE_EXTENSIONS",
    "N_VIEW2_FOLDS",
    "N_SIX_FOLDS",
    "scan_tree",
    "read_list",
    "find_protocols_dir",
    "view1_split",
    "view2_split",
    "six_fold_splits",
]

logger = logging.getLogger(__name__)

#: Extensions tried, in this order after the listed one, when a listed file is not on disk.
IMAGE_EXTENSIONS: tuple[str, ...] = (".bmp", ".jpg", ".jpeg", ".png")
#: Number of View 2 folds.
N_VIEW2_FOLDS = 10
#: Number of folds of the person-disjoint 6-fold protocol.
N_SIX_FOLDS = 6
#: Name of the folder that the dataset archive unpacks to.
ARCHIVE_FOLDER = "NIR-VIS-2.0"
#: Name of the protocol folder next to the image root, as in ``../shared/data``.
PROTOCOLS_FOLDER = "casia-nir-vis-2.0-protocols"

_SESSION_RE = re.compile(r"^s\d+$", re.IGNORECASE)
_MODALITY_FOLDERS = {"nir": "nir", "vis": "vis"}
_LAYOUT_HELP = (
    "expected session folders s1..s4 holding NIR/<person>/<n>.bmp and VIS/<person>/<n>.jpg, "
    f"directly under the root or under <root>/{ARCHIVE_FOLDER} (with --data pointing at a data folder, the root "
    "is <data>/casia)"
)

PathLike = str | os.PathLike


# --------------------------------------------------------------------------------------------------
# The image tree
# --------------------------------------------------------------------------------------------------
def _person_key(person: str) -> tuple[int, int, str]:
    """Sort key of the dataset's numbering: numeric ids in numeric order, any other id after them."""
    return (0, int(person), person) if person.isdigit() else (1, 0, person)


def _session_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and _SESSION_RE.match(p.name)),
                  key=lambda p: p.name.lower())


def _image_root(root: PathLike) -> Path:
    """The folder that holds ``s1..s4``: ``root`` itself or ``root/NIR-VIS-2.0``."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"CASIA NIR-VIS 2.0 root {str(root)!r}: no such folder")
    if _session_dirs(root):
        return root
    nested = root / ARCHIVE_FOLDER
    if _session_dirs(nested):
        return nested
    raise DatasetError(f"CASIA NIR-VIS 2.0 root {str(root)!r}: no image tree found; {_LAYOUT_HELP}")


def _is_image(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _scan(image_root: Path) -> list[Sample]:
    samples: list[Sample] = []
    for session_dir in _session_dirs(image_root):
        session = session_dir.name
        for modality_dir in sorted(session_dir.iterdir(), key=lambda p: p.name):
            modality = _MODALITY_FOLDERS.get(modality_dir.name.lower())
            if modality is None or not modality_dir.is_dir():
                continue
            for person_dir in sorted(modality_dir.iterdir(), key=lambda p: p.name):
                if not person_dir.is_dir() or person_dir.name.startswith("."):
                    continue
                with os.scandir(person_dir) as it:
                    names = sorted(e.name for e in it if e.is_file() and _is_image(e.name))
                for name in names:
                    rel = f"{session}/{modality_dir.name}/{person_dir.name}/{name}"
                    samples.append(Sample(
                        person=person_dir.name,
                        modality=modality,
                        path=person_dir / name,
                        capture_id=rel,
                        channel="gray" if modality == "nir" else None,
                        meta={"session": session},
                    ))
    samples.sort(key=lambda s: s.capture_id)
    return samples


def scan_tree(root: PathLike) -> list[Sample]:
    """List every image of a CASIA NIR-VIS 2.0 image tree (Sec. 5).

    Parameters
    ----------
    root
        Folder holding the session folders ``s1..s4``, or holding ``NIR-VIS-2.0/s1..s4``.

    Returns
    -------
    list of Sample
        One sample per image file (``.bmp``, ``.jpg``, ``.jpeg``, ``.png``, any case), sorted by
        ``capture_id``. ``modality`` comes from the ``NIR``/``VIS`` folder, ``person`` is the person
        folder's name, ``capture_id`` the posix path relative to the image root
        (``"s2/NIR/10153/001.bmp"``) and ``meta["session"]`` the session folder (``"s2"``).
        NIR samples are read as gray (``channel="gray"``), VIS ones as stored (``channel=None``).

    Raises
    ------
    DatasetError
        If ``root`` does not exist, has no session folders, or holds no image.
    """
    image_root = _image_root(root)
    samples = _scan(image_root)
    if not samples:
        raise DatasetError(f"CASIA NIR-VIS 2.0 root {str(image_root)!r}: no image files found; {_LAYOUT_HELP}")
    return samples


# --------------------------------------------------------------------------------------------------
# Protocol lists
# --------------------------------------------------------------------------------------------------
def read_list(path: PathLike) -> list[str]:
    """Read one CASIA NIR-VIS 2.0 protocol list (Sec. 5).

    Parameters
    ----------
    path
        A list such as ``nir_probe_1.txt``: one path per line, Windows (``s2\\NIR\\10153\\001.bmp``)
        or posix separators, LF or CRLF line ends. Blank lines are ignored.

    Returns
    -------
    list of str
        The listed paths as relative posix paths (``"s2/NIR/10153/001.bmp"``), in list order.

    Raises
    ------
    DatasetError
        If the file is missing or unreadable, or a line is not ``<session>/<NIR|VIS>/<person>/<file>``
        (possibly below a leading folder); the message names the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"CASIA protocol list {path.name!r} not found: {str(path)!r} is not a file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"CASIA protocol list {str(path)!r} cannot be read: {exc}") from exc
    entries: list[str] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        parts = [p for p in line.replace("\\", "/").split("/") if p not in ("", ".")]
        if len(parts) < 4 or parts[-3].lower() not in _MODALITY_FOLDERS or not _SESSION_RE.match(parts[-4]):
            raise DatasetError(
                f"CASIA protocol list {str(path)!r}, line {lineno}: expected "
                f"'<session>\\<NIR|VIS>\\<person>\\<file>' such as 's2\\VIS\\10153\\003.jpg', got {line!r}"
            )
        entries.append("/".join(parts))
    return entries


def _protocol_candidates(root: PathLike) -> list[Path]:
    root = Path(root).expanduser()
    cands = [root / "protocols", root, root / ARCHIVE_FOLDER / "protocols", root / ARCHIVE_FOLDER,
             root.parent / PROTOCOLS_FOLDER]
    seen: list[Path] = []
    for c in cands:
        if c not in seen:
            seen.append(c)
    return seen


def find_protocols_dir(root: PathLike, protocols_dir: PathLike | None = None,
                       required: Sequence[str] = ("vis_gallery_1.txt",)) -> Path:
    """Find the folder that holds the CASIA NIR-VIS 2.0 protocol lists.

    Parameters
    ----------
    root
        The dataset root passed to the split functions.
    protocols_dir
        Explicit protocol folder. When ``None``, the lists are looked for in ``root/protocols``,
        ``root``, ``root/NIR-VIS-2.0/protocols``, ``root/NIR-VIS-2.0`` and
        ``root/../casia-nir-vis-2.0-protocols``, in this order.
    required
        File names that the folder must hold.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    DatasetError
        If ``protocols_dir`` is given but is not a folder, or no candidate holds every ``required``
        file; the message names the first missing file and where it was looked for.
    """
    if protocols_dir is not None:
        pdir = Path(protocols_dir).expanduser()
        if not pdir.is_dir():
            raise DatasetError(f"CASIA protocols_dir {str(pdir)!r}: no such folder")
        for name in required:
            if not (pdir / name).is_file():
                raise DatasetError(f"CASIA protocol list {name!r} not found in protocols_dir {str(pdir)!r}")
        return pdir
    cands = _protocol_candidates(root)
    for cand in cands:
        if all((cand / name).is_file() for name in required):
            return cand
    first_missing = next((n for n in required if not any((c / n).is_file() for c in cands)), required[0])
    looked = ", ".join(repr(str(c)) for c in cands)
    raise DatasetError(
        f"CASIA protocol list {first_missing!r} not found; looked in {looked}. "
        "Pass protocols_dir= the folder holding vis_gallery_*.txt and nir_probe_*.txt"
    )


def _split_key(entry: str) -> tuple[tuple[str, str, str, str], str]:
    """``(session, modality, person, stem)`` in lower case, and the lower-case extension, of a list entry."""
    session, modality, person, name = entry.split("/")[-4:]
    stem, ext = os.path.splitext(name)
    return (session.lower(), modality.lower(), person.lower(), stem.lower()), ext.lower()


def _index(samples: Iterable[Sample]) -> dict[tuple[str, str, str, str], dict[str, Sample]]:
    index: dict[tuple[str, str, str, str], dict[str, Sample]] = {}
    for s in samples:
        key, ext = _split_key(s.capture_id)
        index.setdefault(key, {})[ext] = s
    return index


def _resolve(entries: Sequence[str], index: dict[tuple[str, str, str, str], dict[str, Sample]],
             list_name: str, modality: str, image_root: Path) -> tuple[list[Sample], list[str]]:
    """Samples of every listed entry, and the entries whose file is not on disk.

    A missing entry is still returned as a sample at its listed path, so that the evaluation records it as a
    failure and counts it (a missing probe is a miss) instead of dropping it.
    """
    found: list[Sample] = []
    missing: list[str] = []
    for entry in entries:
        key, ext = _split_key(entry)
        if key[1] != modality:
            raise DatasetError(
                f"CASIA protocol list {list_name!r}: entry {entry!r} is a {key[1].upper()} image, "
                f"but this list must hold {modality.upper()} images only"
            )
        by_ext = index.get(key, {})
        sample = by_ext.get(ext) or next((by_ext[e] for e in IMAGE_EXTENSIONS if e in by_ext), None)
        if sample is None:
            missing.append(entry)
            sample = Sample(person=entry.split("/")[-2], modality=modality, path=image_root / entry,
                            capture_id=entry, channel="gray" if modality == "nir" else None,
                            meta={"session": entry.split("/")[-4], "missing": True})
        found.append(sample)
    return found, missing


def _listed_people(entries: Iterable[str]) -> set[str]:
    return {e.split("/")[-2] for e in entries}


def _warn_missing(name: str, image_root: Path, what: str, missing: Sequence[str], total: int, consequence: str) -> None:
    if missing:
        logger.warning("%s: %d of %d listed %s files are missing under %s (first: %s); %s",
                       name, len(missing), total, what, image_root, missing[0], consequence)


def _test_split(name: str, image_root: Path, index: dict[tuple[str, str, str, str], dict[str, Sample]], pdir: Path,
                gallery_list: str, probe_list: str) -> tuple[list[Sample], list[Sample], list[str], set[str]]:
    gallery_entries = read_list(pdir / gallery_list)
    probe_entries = read_list(pdir / probe_list)
    gallery, missing_g = _resolve(gallery_entries, index, gallery_list, "vis", image_root)
    probes, missing_p = _resolve(probe_entries, index, probe_list, "nir", image_root)
    missing = missing_g + missing_p
    _warn_missing(name, image_root, "gallery/probe", missing, len(gallery_entries) + len(probe_entries),
                  "they are recorded in Split.missing and count as failures (a missing probe is a miss)")
    test_people = _listed_people(gallery_entries) | _listed_people(probe_entries)
    return gallery, probes, missing, test_people


def _check_fold(fold: object) -> int:
    if isinstance(fold, bool) or not isinstance(fold, numbers.Integral) or not 1 <= int(fold) <= N_VIEW2_FOLDS:
        raise ValueError(f"view2_split: fold must be an integer in 1..{N_VIEW2_FOLDS}, got {fold!r}")
    return int(fold)


# --------------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------------
def view2_split(root: PathLike, fold: int, protocols_dir: PathLike | None = None) -> Split:
    """One fold of the CASIA NIR-VIS 2.0 View 2 protocol (10 folds, Sec. 5).

    Parameters
    ----------
    root
        Image root (see :func:`scan_tree`).
    fold
        Fold number, 1 to 10.
    protocols_dir
        Folder of the protocol lists; found next to ``root`` when ``None`` (see :func:`find_protocols_dir`).

    Returns
    -------
    Split
        ``name="view2-fold<k>"``. ``gallery``: the VIS images of ``vis_gallery_<k>.txt`` (one per
        person); ``probes``: the NIR images of ``nir_probe_<k>.txt``. ``train``: every image of the
        tree whose person is in neither list. The per-fold training lists are not public, so training
        on everyone outside the fold's test people is the common practice; View 1's training list is
        never used here (it shares people with the View 2 galleries). Listed files absent from disk stay
        in the split at their listed path (the evaluation records them as failures: a missing probe is
        a miss) and are also listed in ``missing``, with a logged warning.

    Raises
    ------
    ValueError
        If ``fold`` is not an integer in 1..10.
    DatasetError
        If the tree or a protocol list is missing or malformed; the message names it.
    """
    fold = _check_fold(fold)
    name = f"view2-fold{fold}"
    gallery_list, probe_list = f"vis_gallery_{fold}.txt", f"nir_probe_{fold}.txt"
    image_root = _image_root(root)
    pdir = find_protocols_dir(root, protocols_dir, required=(gallery_list, probe_list))
    samples = scan_tree(image_root)
    gallery, probes, missing, test_people = _test_split(name, image_root, _index(samples), pdir,
                                                        gallery_list, probe_list)
    train = tuple(s for s in samples if s.person not in test_people)
    return Split(name=name, train=train, gallery=tuple(gallery), probes=tuple(probes), missing=tuple(missing))


def view1_split(root: PathLike, protocols_dir: PathLike | None = None) -> Split:
    """The CASIA NIR-VIS 2.0 View 1 (development) split, used to tune parameters (Sec. 5).

    Parameters
    ----------
    root
        Image root (see :func:`scan_tree`).
    protocols_dir
        Folder of the protocol lists; found next to ``root`` when ``None`` (see :func:`find_protocols_dir`).

    Returns
    -------
    Split
        ``name="view1"``. ``gallery``/``probes``: ``vis_gallery_dev.txt``/``nir_probe_dev.txt``;
        ``train``: ``vis_train_dev.txt`` then ``nir_train_dev.txt``. Missing gallery/probe files stay
        in the split (they count as failures) and are recorded in ``missing``; missing training files are only left out and logged (they are not
        test entries, so they must not count as misses).

    Raises
    ------
    DatasetError
        If the tree or a protocol list is missing or malformed; the message names it.
    """
    name = "view1"
    lists = ("vis_gallery_dev.txt", "nir_probe_dev.txt", "vis_train_dev.txt", "nir_train_dev.txt")
    image_root = _image_root(root)
    pdir = find_protocols_dir(root, protocols_dir, required=lists)
    index = _index(scan_tree(image_root))
    gallery, probes, missing, _ = _test_split(name, image_root, index, pdir, lists[0], lists[1])
    train: list[Sample] = []
    for list_name, modality in ((lists[2], "vis"), (lists[3], "nir")):
        entries = read_list(pdir / list_name)
        found, lost = _resolve(entries, index, list_name, modality, image_root)
        found = [s for s in found if not s.meta.get("missing")]
        _warn_missing(name, image_root, f"training ({list_name})", lost, len(entries), "they are left out")
        train.extend(found)
    return Split(name=name, train=tuple(train), gallery=tuple(gallery), probes=tuple(probes), missing=tuple(missing))


def six_fold_splits(root: PathLike) -> list[Split]:
    """The person-disjoint 6-fold protocol on CASIA NIR-VIS 2.0 (Sec. 5).

    The people of the tree, in the dataset's numbering order (numeric id order), are cut into 6
    contiguous folds whose sizes differ by at most one (the first folds take the extra people). No
    list files are needed. This is the paper's reading ("folds in the natural order of the dataset's
    numbering", PAPER-NOTES); as CASIA's ids encode the capture session, each fold holds people of one or
    two sessions, not a random draw.

    Parameters
    ----------
    root
        Image root (see :func:`scan_tree`).

    Returns
    -------
    list of Split
        Six splits named ``"six-fold<k>"``, k = 1..6. In split k the test people are those of fold k
        and the training set is every image of the other five folds; ``gallery`` is the first VIS
        image (in ``capture_id`` order) of each test person and ``probes`` all NIR images of the
        test people. A test person without VIS image keeps their probes (scored as misses) and is
        logged.

    Raises
    ------
    DatasetError
        If the tree is missing or holds fewer than 6 people.
    """
    samples = scan_tree(root)
    everyone = sorted({s.person for s in samples}, key=_person_key)
    n = len(everyone)
    if n < N_SIX_FOLDS:
        raise DatasetError(f"CASIA NIR-VIS 2.0 root {str(Path(root))!r}: the 6-fold protocol needs at least "
                           f"{N_SIX_FOLDS} people, found {n}")
    base, extra = divmod(n, N_SIX_FOLDS)
    folds: list[list[str]] = []
    start = 0
    for k in range(N_SIX_FOLDS):
        size = base + (1 if k < extra else 0)
        folds.append(everyone[start:start + size])
        start += size

    splits: list[Split] = []
    for k, test_people in enumerate(folds, start=1):
        name = f"six-fold{k}"
        test = by_person(samples, test_people)
        gallery: list[Sample] = []
        seen: set[str] = set()
        for s in test:  # samples are in capture_id order
            if s.modality == "vis" and s.person not in seen:
                seen.add(s.person)
                gallery.append(s)
        no_vis = [p for p in test_people if p not in seen]
        if no_vis:
            logger.warning("%s: %d test people have no VIS image (first: %s); their probes count as misses",
                           name, len(no_vis), no_vis[0])
        probes = tuple(s for s in test if s.modality == "nir")
        train = by_person(samples, [p for j, f in enumerate(folds, start=1) if j != k for p in f])
        splits.append(Split(name=name, train=train, gallery=tuple(gallery), probes=probes))
    return splits

