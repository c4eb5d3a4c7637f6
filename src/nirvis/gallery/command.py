"""``nirvis enroll``, ``nirvis identify`` and ``nirvis gallery list|stats|remove|threshold|check``.

Register them with ``app.command("enroll")(enroll)``, ``app.command("identify")(identify)`` and
``app.add_typer(gallery_app, name="gallery")``. Only typer and the standard library are imported at the top,
so ``nirvis --help`` stays instant.

Exit status: 0 when the work was done (an enrolment whose images were all already enrolled included);
1 when nothing could be done because every input failed (no image enrolled, every probe failed), or the
gallery is empty; 2 for a bad command line, a missing gallery, or a pipeline that differs from the gallery's.
"""

from __future__ import annotations

import csv as csv_mod
import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

__all__ = ["enroll", "identify", "gallery_app", "collect_people"]

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
SHOWN = 20  # failures / duplicates listed one per line; the rest are counted

GalleryOpt = Annotated[Path, typer.Option("--gallery", "-g", help="The gallery folder.")]
ModelsDirOpt = Annotated[Optional[Path], typer.Option("--models-dir", help="Folder of model files, looked in first (then $NIRVIS_MODELS, ~/.cache/nirvis/models, ../shared/models).")]
CacheOpt = Annotated[Optional[Path], typer.Option("--cache-dir", help="Feature cache (default $NIRVIS_CACHE or ~/.cache/nirvis).")]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Do not read or write the feature cache.")]
EmbedderOpt = Annotated[Optional[str], typer.Option("--embedder", help="Face network of a new gallery: dlib (default), edgeface-xs, edgeface-xxs or onnx:PATH. For an existing gallery it must be the gallery's (checked).")]
EmbeddingOpt = Annotated[Optional[Path], typer.Option("--embedding", help="A saved embedding (fit-embedding output) applied to every vector; recorded (copied) in a new gallery, checked against an existing one.")]
HallucinationOpt = Annotated[Optional[Path], typer.Option("--hallucination", help="A hallucination model folder applied to NIR probes before embedding; recorded (copied) in a new gallery, checked against an existing one.")]


class Modality(str, Enum):
    nir = "nir"
    vis = "vis"


class Channel(str, Enum):
    gray = "gray"
    red = "red"
    green = "green"
    blue = "blue"


def _fail(msg: str, code: int = 2) -> None:
    from nirvis.cli import _fail as fail

    fail(msg, code)


def _images_under(folder: Path) -> list[Path]:
    return sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTS
                  and not any(part.startswith(".") for part in f.relative_to(folder).parts))


def _person_images(folder: Path) -> list[Path]:
    """A person's images: those under ``vis/`` when the folder holds ``nir/`` and ``vis/`` (the layout of
    ``--dataset folder``), else every image under it."""
    if (folder / "vis").is_dir() and (folder / "nir").is_dir():
        return _images_under(folder / "vis")
    return _images_under(folder)


def collect_people(paths: list[Path], person: str | None = None) -> list[tuple[str, Path]]:
    """``(person, image)`` pairs from the command line's PATHS.

    - a file: its parent folder's name is the person (``--person`` overrides);
    - a folder holding image files (or ``nir/`` + ``vis/`` sub-folders, whose ``vis/`` images are taken): one
      person, the folder's name;
    - a folder holding only sub-folders: each sub-folder with images is a person, named by it.

    Raises
    ------
    FileNotFoundError
        Naming a path that does not exist or a folder with no image.
    ValueError
        For a folder that holds both images and sub-folders of images (which person would they be?).
    """
    out: list[tuple[str, Path]] = []
    for p in paths:
        if p.is_file():
            out.append((person or p.absolute().parent.name, p))
            continue
        if not p.is_dir():
            raise FileNotFoundError(f"{p}: no such file or folder")
        name = p.absolute().name
        if (p / "vis").is_dir() and (p / "nir").is_dir():
            out += [(person or name, f) for f in _person_images(p)]
            continue
        direct = [f for f in sorted(p.iterdir()) if f.is_file() and f.suffix.lower() in IMAGE_EXTS]
        subs = [d for d in sorted(p.iterdir()) if d.is_dir() and not d.name.startswith(".") and _person_images(d)]
        if direct and subs and person is None:
            raise ValueError(f"{p}: holds images ({direct[0].name}, ...) and sub-folders of images ({subs[0].name}, "
                             "...): is it one person or a folder of people? Give the person folders themselves, "
                             "or --person ID")
        if direct:
            out += [(person or name, f) for f in (_images_under(p) if not subs else direct)]
        for sub in subs if not direct or person is not None else []:
            out += [(person or sub.name, f) for f in _person_images(sub)]
        if not direct and not subs:
            raise FileNotFoundError(f"{p}: no image files ({', '.join(IMAGE_EXTS)}) in this folder or its "
                                    "sub-folders")
    return out


def read_people_csv(path: Path) -> list[tuple[str, Path]]:
    """``(person, image)`` rows of a CSV with the columns ``person,path`` (a header line); relative paths are
    relative to the CSV's folder.

    Raises
    ------
    ValueError
        Naming the file and line of a malformed row.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"--csv {path}: cannot read it ({exc})") from None
    reader = csv_mod.DictReader(text.splitlines())
    fields = [f.strip().lower() for f in (reader.fieldnames or [])]
    if "person" not in fields or "path" not in fields:
        raise ValueError(f"--csv {path}: the first line must name the columns person,path (got "
                         f"{','.join(reader.fieldnames or []) or 'nothing'})")
    reader.fieldnames = fields
    out = []
    for row in reader:
        person, img = (row.get("person") or "").strip(), (row.get("path") or "").strip()
        if not person and not img:
            continue
        if not person or not img:
            raise ValueError(f"--csv {path}, line {reader.line_num}: needs both a person and a path")
        p = Path(img).expanduser()
        out.append((person, p if p.is_absolute() else path.parent / p))
    return out


def _check_ids(pairs: list[tuple[str, Path]]) -> None:
    from nirvis.gallery.gallery import PERSON_ID_PATTERN

    bad = {}
    for person, p in pairs:
        if not PERSON_ID_PATTERN.match(person):
            bad.setdefault(person, p)
    if bad:
        shown = "; ".join(f"{k!r} (from {v})" for k, v in list(bad.items())[:5])
        _fail(f"{len(bad)} person id(s) are not valid: {shown}{' ...' if len(bad) > 5 else ''}. A person id is 1-128 "
              "letters, digits, '.', '_' or '-', starting with a letter or digit: rename the folders, or give "
              "--person ID or a --csv")


def _cache(cache_dir: Path | None, no_cache: bool):
    from nirvis.features.cache import FeatureCache

    return None if no_cache else FeatureCache(cache_dir)


def _notice(g) -> None:
    from nirvis.features.models import licence_notice

    notice = licence_notice(g._pipe().recognizer.embedder)
    if notice:
        typer.echo(notice, err=True)


def _open(gallery: Path, models_dir: Path | None, cache=None, **expect):
    """Open an existing gallery, or fail with one line (exit 2)."""
    from nirvis.gallery.errors import GalleryError

    if not gallery.exists():
        _fail(f"--gallery {gallery}: no such gallery folder (create one with `nirvis enroll --gallery {gallery} "
              "IMAGES`)")
    try:
        from nirvis.gallery import Gallery

        return Gallery.open(gallery, models_dir, cache=cache, **expect)
    except GalleryError as exc:
        _fail(str(exc))


def enroll(
    gallery: GalleryOpt,
    paths: Annotated[Optional[list[Path]], typer.Argument(help="Image files or folders: a folder of images is one person (the folder's name); a folder of such folders is one person per sub-folder; a file's person is its folder's name.", show_default=False)] = None,
    csv: Annotated[Optional[Path], typer.Option("--csv", help="A CSV with the columns person,path (relative paths are relative to the CSV).")] = None,
    person: Annotated[Optional[str], typer.Option("--person", help="Enrol every image given as this person.")] = None,
    embedder: EmbedderOpt = None,
    embedding: EmbeddingOpt = None,
    hallucination: HallucinationOpt = None,
    aligned: Annotated[bool, typer.Option("--aligned", help="The images are already aligned 224x224 faces (e.g. from `nirvis align --save-dir`): no detection.")] = False,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Images per transaction (default: the gallery's, 32).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report (enrolled, duplicates, failures) as JSON.")] = False,
    models_dir: ModelsDirOpt = None,
    cache_dir: CacheOpt = None,
    no_cache: NoCacheOpt = False,
) -> None:
    """Enrol VIS face images into a gallery (created when absent): align, embed, store.

    Images that cannot be read or hold no face are listed and counted, and the rest goes in; an image whose
    content is already enrolled is skipped. Exit status 1 when no image at all could be enrolled.
    """
    from nirvis.gallery import Gallery
    from nirvis.gallery.errors import GalleryError

    if not paths and csv is None:
        _fail("give image files or folders, or --csv people.csv")
    try:
        pairs = read_people_csv(csv) if csv is not None else []
        pairs += collect_people(list(paths or []), person)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    if not pairs:
        _fail("no images to enrol")
    _check_ids(pairs)
    if gallery.exists() and not gallery.is_dir():
        _fail(f"--gallery {gallery}: is a file; a gallery is a folder")
    try:
        g, created = Gallery.open_or_create(gallery, embedder, embedding, hallucination, models_dir,
                                            cache=_cache(cache_dir, no_cache))
    except GalleryError as exc:
        _fail(str(exc))
    with g:
        if created:
            typer.echo(f"created gallery {gallery} (embedder {g.pipeline['embedder']})", err=True)
        try:
            _notice(g)
            rep = g.enroll(pairs, progress=len(pairs) >= 10 and not json_out, aligned=aligned, batch_size=batch_size)
        except GalleryError as exc:
            _fail(str(exc))
        n_people, n_images = g._store.counts()
    if json_out:
        typer.echo(json.dumps({**rep.to_dict(), "gallery": {"path": str(gallery), "people": n_people,
                                                            "images": n_images}}, indent=2))
    else:
        for p, src, who in rep.duplicates[:SHOWN]:
            note = "" if who == p else f" (not as {p})"
            typer.echo(f"skipped, already enrolled as {who}{note}: {src}", err=True)
        if len(rep.duplicates) > SHOWN:
            typer.echo(f"  ... and {len(rep.duplicates) - SHOWN} more already enrolled", err=True)
        for src, reason in rep.failures[:SHOWN]:
            typer.echo(f"failed: {reason if src in reason else f'{src}: {reason}'}", err=True)
        if len(rep.failures) > SHOWN:
            typer.echo(f"  ... and {len(rep.failures) - SHOWN} more failed (all listed with --json)", err=True)
        people = len({p for p, _ in rep.enrolled})
        typer.echo(f"enrolled {len(rep.enrolled)} image(s) of {people} people; {len(rep.duplicates)} already "
                   f"enrolled (skipped); {len(rep.failures)} failed. Gallery {gallery}: {n_people} people, "
                   f"{n_images} images")
    if not rep.enrolled and rep.failures:
        raise typer.Exit(1)


def _expand_probes(probes: list[Path]) -> tuple[list[Path], bool]:
    files, folder = [], False
    for p in probes:
        if p.is_dir():
            folder = True
            files += _images_under(p)
        else:
            files.append(p)  # a missing file is reported as that probe's error
    return files, folder


def identify(
    gallery: GalleryOpt,
    probes: Annotated[list[Path], typer.Argument(help="Probe image files (or folders of them).", show_default=False)],
    top: Annotated[int, typer.Option("--top", "-k", min=1, help="People to list per probe.")] = 5,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON: one object per probe (a list when several).")] = False,
    channel: Annotated[Optional[Channel], typer.Option("--channel", help="Read NIR probes from this channel (red for RAP3DF IR); default gray (luminance).")] = None,
    modality: Annotated[Modality, typer.Option("--modality", help="nir (default: hallucinated when the gallery has a model) or vis.")] = Modality.nir,
    aligned: Annotated[bool, typer.Option("--aligned", help="The probes are already aligned 224x224 faces: no detection.")] = False,
    embedder: Annotated[Optional[str], typer.Option("--embedder", help="Check that the gallery uses this network (it always uses its own).")] = None,
    embedding: Annotated[Optional[Path], typer.Option("--embedding", help="Check that the gallery applies this embedding.")] = None,
    hallucination: Annotated[Optional[Path], typer.Option("--hallucination", help="Check that the gallery applies this hallucination model.")] = None,
    models_dir: ModelsDirOpt = None,
    cache_dir: CacheOpt = None,
    no_cache: NoCacheOpt = False,
) -> None:
    """Identify probe faces (NIR by default) in a gallery: ranked matches with cosine scores, and a decision
    at the gallery's threshold.

    A probe that fails (unreadable, no face) gets one line (in JSON an object with "error"); the exit status
    is 1 when every probe failed.
    """
    from nirvis.errors import NirvisError
    from nirvis.faces.align import IMAGE_ERRORS
    from nirvis.gallery.errors import EmptyGalleryError, GalleryError

    g = _open(gallery, models_dir, _cache(cache_dir, no_cache), embedder=embedder, embedding=embedding,
              hallucination=hallucination)
    files, folder = _expand_probes(probes)
    if not files:
        g.close()
        _fail("no probe images found")
    out: list[dict[str, Any]] = []
    n_ok = 0
    with g:
        try:
            _notice(g)
        except GalleryError as exc:
            _fail(str(exc))
        thr = g.threshold
        for f in files:
            try:
                res = g.identify(f, top=top, modality=modality.value,
                                 channel=None if channel is None else channel.value, aligned=aligned)
            except EmptyGalleryError as exc:
                _fail(str(exc), code=1)
            except GalleryError as exc:
                _fail(str(exc))
            except (NirvisError, *IMAGE_ERRORS) as exc:
                msg = str(exc) or type(exc).__name__
                out.append({"probe": str(f), "error": msg})
                if not json_out:
                    typer.echo(f"error: {msg if str(f) in msg else f'{f}: {msg}'}", err=True)
                continue
            n_ok += 1
            out.append(res.to_dict())
            if not json_out:
                _print_identification(res)
    if json_out:
        typer.echo(json.dumps(out if (len(out) > 1 or folder or len(probes) > 1) else out[0], indent=2))
    elif thr.get("threshold") is None and n_ok:
        typer.echo("note: the gallery has no decision threshold; set one with `nirvis gallery threshold --far F "
                   "--from results.json`", err=True)
    if n_ok == 0:
        raise typer.Exit(1)


def _print_identification(res) -> None:
    d = res.decision
    best = res.matches[0] if res.matches else None
    if best is None:
        typer.echo(f"{res.probe}: no match (nothing found)")
        return
    if d["threshold"] is None:
        verdict = "no decision (no threshold set)"
    elif d["person"] is not None:
        verdict = f"MATCH {d['person']} (score {best.score:.3f} >= threshold {d['threshold']:.3f}" + (
            f", FAR {d['far']:g})" if d["far"] is not None else ")")
    else:
        verdict = f"no match (best score {best.score:.3f} < threshold {d['threshold']:.3f}" + (
            f", FAR {d['far']:g})" if d["far"] is not None else ")")
    typer.echo(f"{res.probe}: {verdict}")
    width = max(len(m.person) for m in res.matches)
    for rank, m in enumerate(res.matches, 1):
        typer.echo(f"  {rank}. {m.person:<{width}}  {m.score:.4f}  {m.path}")


gallery_app = typer.Typer(no_args_is_help=True, help="Inspect and manage a gallery: list, stats, remove, threshold, check.")


@gallery_app.command("list")
def gallery_list(
    gallery: GalleryOpt,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The enrolled people: id, number of images, first enrolment time (UTC)."""
    g = _open(gallery, None)
    with g:
        people = g.people()
    if json_out:
        typer.echo(json.dumps(people, indent=2))
        return
    if not people:
        typer.echo(f"{gallery}: empty gallery")
        return
    width = max(len(p["person"]) for p in people)
    for p in people:
        typer.echo(f"{p['person']:<{width}}  {p['images']:>4} image(s)  since {p['enrolled_at']}")
    typer.echo(f"{len(people)} people, {sum(p['images'] for p in people)} images")


@gallery_app.command("stats")
def gallery_stats(
    gallery: GalleryOpt,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """People, images, pipeline (embedder and fingerprint, models), index kind, threshold, size on disk."""
    from nirvis.gallery.errors import GalleryError

    g = _open(gallery, None)
    with g:
        try:
            st = g.stats()
        except GalleryError as exc:
            _fail(str(exc))
    if json_out:
        typer.echo(json.dumps(st, indent=2))
        return
    for k, v in st.items():
        if k == "size_bytes":
            v = f"{v / 1e6:.2f} MB"
        typer.echo(f"{k:<22} {v}")


@gallery_app.command("remove")
def gallery_remove(
    person: Annotated[str, typer.Argument(help="The person id to remove (every image of them).")],
    gallery: GalleryOpt,
) -> None:
    """Remove a person (all their images) from the gallery."""
    from nirvis.gallery.errors import GalleryError

    g = _open(gallery, None)
    with g:
        try:
            n = g.remove(person)
        except GalleryError as exc:
            _fail(str(exc), code=1)
    typer.echo(f"removed {person}: {n} image(s)")


@gallery_app.command("threshold")
def gallery_threshold(
    gallery: GalleryOpt,
    far: Annotated[Optional[float], typer.Option("--far", help="Target false-accept rate per comparison, e.g. 0.01.")] = None,
    results: Annotated[Optional[Path], typer.Option("--from", help="`nirvis evaluate --json` output measured with this gallery's pipeline.")] = None,
    config: Annotated[Optional[str], typer.Option("--config", help="The results row to use (default: the only one, or raw).")] = None,
    value: Annotated[Optional[float], typer.Option("--value", help="Set this cosine threshold directly instead.")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the threshold (identify then ranks without deciding).")] = False,
) -> None:
    """Set the decision threshold at a FAR, from an evaluation's ROC: in each split the grid FAR that is the
    largest not above --far, averaged over splits. Without options, show the current one."""
    from nirvis._io import read_json
    from nirvis.gallery.errors import GalleryError
    from nirvis.gallery.threshold import threshold_from_results

    g = _open(gallery, None)
    with g:
        try:
            if clear:
                g.set_threshold(None, source="cleared")
                typer.echo(f"{gallery}: threshold cleared (identify ranks without deciding)")
                return
            if value is not None:
                g.set_threshold(value, far, source="given with --value")
                typer.echo(f"{gallery}: threshold {value:g}" + (f" (FAR {far:g}, as given)" if far else ""))
                return
            if results is None:
                t = g.threshold
                if t.get("threshold") is None:
                    typer.echo(f"{gallery}: no threshold (set one with --far F --from results.json)")
                else:
                    typer.echo(f"{gallery}: threshold {t['threshold']:.4f} at FAR {t.get('far')} "
                               f"({t.get('source')})")
                return
            if far is None:
                _fail("--from needs --far (e.g. --far 0.01)")
            if not results.is_file():
                _fail(f"--from {results}: no such file")
            choice = threshold_from_results(read_json(results, GalleryError), far, g.pipeline, config, str(results))
            g.set_threshold(choice.threshold, far, source=str(results), config=choice.config,
                            far_target=choice.far_target, far_measured=choice.far_measured, vr=choice.vr,
                            n_splits=choice.n_splits)
        except GalleryError as exc:
            _fail(str(exc))
    skipped = f"; {choice.n_skipped} split(s) reach no threshold at that FAR, left out" if choice.n_skipped else ""
    typer.echo(f"{gallery}: threshold {choice.threshold:.4f} at FAR {far:g} (grid FAR {choice.far_target:.3g}; "
               f"measured FAR {choice.far_measured:.3g}, VR {100 * choice.vr:.1f}%; mean over {choice.n_splits} "
               f"split(s) of {choice.config!r} in {results}{skipped})")


@gallery_app.command("check")
def gallery_check(gallery: GalleryOpt) -> None:
    """Verify every row (vector size, unit length, hash) and that the index holds exactly the rows (it is
    brought up to date first). Exit status 1 on a problem."""
    from nirvis.gallery.errors import GalleryError

    g = _open(gallery, None)
    with g:
        try:
            res = g.check()
        except GalleryError as exc:
            _fail(str(exc), code=1)
    for p in res["problems"]:
        typer.echo(f"problem: {p}", err=True)
    typer.echo(f"{gallery}: {res['rows']} rows, index {res['index_rows']} rows: "
               + ("consistent" if res["ok"] else f"{len(res['problems'])} problem(s)"))
    if not res["ok"]:
        raise typer.Exit(1)
