"""``nirvis hallucinate``: NIR face images -> hallucinated VIS face images (paper Sec. 3, eq. (1), Fig. 5).

Register it on the CLI app with ``app.command("hallucinate")(hallucinate)``. Only typer and the standard
library are imported at the top, so ``nirvis --help`` stays instant.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

__all__ = ["hallucinate", "collect_images", "output_paths"]

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class Reading(str, Enum):
    log = "log"
    gaussian = "gaussian"


class Method(str, Enum):
    fft = "fft"
    direct = "direct"


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"


def collect_images(inputs: list[Path]) -> list[tuple[Path, Path]]:
    """``(file, name)`` pairs of the images in ``inputs`` (files, or folders searched recursively, sorted):
    ``name`` is the path relative to its folder (the file's own name for a file argument).

    Raises
    ------
    nirvis.errors.ImageError
        Naming an input that does not exist.
    """
    from nirvis.errors import ImageError

    found: list[tuple[Path, Path]] = []
    for p in inputs:
        if p.is_dir():
            found += [(f, f.relative_to(p)) for f in sorted(p.rglob("*"))
                      if f.is_file() and f.suffix.lower() in IMAGE_EXTS]
        elif p.is_file():
            found.append((p, Path(p.name)))
        else:
            raise ImageError(f"{p}: no such image file or folder")
    return found


def output_paths(images: list[tuple[Path, Path]], inputs: list[Path], output: Path) -> list[Path]:
    """Where each hallucinated image goes: ``output`` itself for one input file given with an image suffix,
    else ``output/<name>.png`` (folder structure and names kept, extension ``.png``).

    Raises
    ------
    ValueError
        If two inputs would write the same output file.
    """
    if len(inputs) == 1 and inputs[0].is_file() and output.suffix.lower() in IMAGE_EXTS:
        return [output]
    outs = [output / name.with_suffix(".png") for _, name in images]
    seen: dict[Path, Path] = {}
    for (src, _), dst in zip(images, outs):
        if dst in seen:
            raise ValueError(f"{src} and {seen[dst]} would both be written to {dst}; give them separately")
        seen[dst] = src
    return outs


def _write_rgb(path: Path, rgb) -> None:
    import cv2

    from nirvis._io import atomic_write_bytes
    from nirvis.errors import ImageError

    ext = path.suffix.lower() or ".png"  # the format follows the file name (png, jpg, bmp, tif)
    try:
        ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    except cv2.error:
        ok = False
    if not ok:
        raise ImageError(f"{path}: could not encode the image as {ext} (use .png, .jpg, .bmp or .tif)")
    atomic_write_bytes(path, buf.tobytes())


def _score(emb, nir_face, rgb, vis_face) -> tuple[float, float] | None:
    """Cosines to the VIS face, through ``emb``, of the NIR face and of its hallucination (same landmarks)."""
    from dataclasses import replace

    if nir_face is None or vis_face is None:
        return None
    nir, hal, vis = emb.embed([nir_face, replace(nir_face, image=rgb), vis_face])
    return float(nir @ vis), float(hal @ vis)


def _print_scores(emb, scores: list) -> None:
    if not scores:
        typer.echo(f"{emb.name}: no face had a VIS image to score against (--vis)")
        return
    for name, nir, hal in scores:
        typer.echo(f"{name}: cosine to the VIS image through {emb.name}: NIR {nir:.3f}, hallucinated {hal:.3f}")
    gain = [hal - nir for _, nir, hal in scores]
    typer.echo(f"{emb.name}: the hallucinated faces are closer to their VIS images for {sum(g > 0 for g in gain)} of "
               f"{len(gain)} faces (mean cosine change {sum(gain) / len(gain):+.3f})")


def hallucinate(
    inputs: Annotated[list[Path], typer.Argument(help="NIR image files or folders (png, jpg, bmp, tif).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output image (one input file; its suffix picks png, jpg, bmp or tif) or folder (keeps names, writes .png).")],
    model: Annotated[Path, typer.Option("--model", "-m", help="Hallucination model folder (weights.safetensors + config.json).")],
    aligned: Annotated[bool, typer.Option(help="Inputs are already aligned 224x224 faces (no detection).")] = False,
    channel: Annotated[str, typer.Option(help="Channel to read as NIR: gray, red (RAP3DF IR), green or blue.")] = "gray",
    alpha: Annotated[float, typer.Option(min=0.0, help="Eq. (1) weight α (paper: 0.6); 0 = no blending.")] = 0.6,
    sigma: Annotated[float, typer.Option(min=0.0, help="Eq. (1) Gaussian σ, pixels (paper: 1).")] = 1.0,
    reading: Annotated[Reading, typer.Option(help="Eq. (1) reading: log (Laplacian of Gaussian) or gaussian (literal).")] = Reading.log,
    method: Annotated[Method, typer.Option(help="Convolutions: fft (fast on CPU) or direct (stock PyTorch).")] = Method.fft,
    precision: Annotated[Precision, typer.Option(help="fp32, or bf16 operands (faster on AVX512-BF16 CPUs).")] = Precision.fp32,
    batch_size: Annotated[int, typer.Option(min=1, help="Faces per forward pass.")] = 8,
    threads: Annotated[Optional[int], typer.Option(min=1, help="Torch threads (default: torch's).")] = None,
    device: Annotated[str, typer.Option(help="Torch device: cpu, cuda, ...")] = "cpu",
    sheet: Annotated[Optional[Path], typer.Option(help="Also write a sheet: rows NIR | raw CNN | blended | VIS (paper Fig. 5).")] = None,
    vis: Annotated[Optional[Path], typer.Option(help="For the sheet: a real VIS image of the person, or a folder of VIS images named like the inputs (same stem).")] = None,
    sheet_rows: Annotated[int, typer.Option(min=1, help="At most this many faces on the sheet.")] = 16,
    embedder: Annotated[Optional[str], typer.Option("--embedder", help="With --vis: score each face with this network (dlib, edgeface-xs, edgeface-xxs, onnx:PATH): its cosine to the VIS image, for the NIR face and for the hallucinated one.")] = None,
    models_dir: Annotated[Optional[Path], typer.Option("--models-dir", help="Folder of model files for --embedder, looked in first.")] = None,
) -> None:
    """Hallucinate VIS faces from NIR face images (paper Sec. 3): align, normalise, CNNs, eq. (1) blend, RGB.

    Images that cannot be read or have no face are reported and skipped; the exit code is non-zero only
    if every image failed. With --embedder and --vis, each face's cosine to its VIS image through that network
    says whether the hallucination brought it closer (what recognition needs), for the NIR face and for the
    hallucinated one.
    """
    import numpy as np
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from nirvis.errors import ImageError, NirvisError, NoFaceError
    from nirvis.hallucination.blend import BlendConfig
    from nirvis.hallucination.infer import Hallucinator
    from nirvis.hallucination.sheet import sheet_image, sheet_row, sheet_titles

    if channel not in ("gray", "red", "green", "blue"):
        typer.echo(f"error: --channel {channel!r}: use gray, red, green or blue", err=True)
        raise typer.Exit(code=2)
    try:
        images = collect_images(inputs)
        if not images:
            raise ImageError(f"no images ({', '.join(IMAGE_EXTS)}) found in {', '.join(map(str, inputs))}")
        outs = output_paths(images, inputs, output)
        sources = {src.resolve() for src, _ in images}
        clash = next((dst for dst in outs if dst.resolve() in sources), None)
        if clash is not None:
            raise ValueError(f"-o {output}: would overwrite the input image {clash}; write elsewhere")
        if sheet is not None and sheet.resolve() in sources | {dst.resolve() for dst in outs}:
            raise ValueError(f"--sheet {sheet}: is an input image or one of the outputs; the sheet would replace it")
        if vis is not None and not vis.exists():
            raise ImageError(f"--vis {vis}: no such image file or folder")
        if embedder is not None and (vis is None or aligned):
            raise ValueError("--embedder scores each face against its VIS image: give --vis, and images that are "
                             "not yet aligned (the network cuts its crop from the landmarks)")
        blend = BlendConfig(alpha=alpha, sigma=sigma, reading=reading.value) if alpha > 0 else None
        hal = Hallucinator(model, blend, method.value, precision=precision.value, batch_size=batch_size,
                           device=device, threads=threads)
    except (NirvisError, ValueError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc

    from nirvis.mining.miner import IMAGE_ERRORS, ImageRef, load_face_with_landmarks

    emb = None
    if embedder is not None:
        from nirvis.cli import _embedder

        emb = _embedder(embedder, models_dir, None)

    def load_with_face(path: Path, modality: str, ch: str | None):
        """``(Face or None when --aligned, aligned image, valid mask)``; raises ImageError / NoFaceError."""
        got = load_face_with_landmarks(ImageRef(str(path), str(path), ch), modality, aligned=aligned, size=224,
                                       landmark_model=emb.landmark_model if emb is not None else "shape5")
        if got is None:
            raise NoFaceError(f"{path}: no face found")
        return got

    seen_vis: dict[Path, tuple | None] = {}

    def vis_of(src: Path) -> tuple | None:
        """``(Face, aligned RGB face)`` of the VIS image given for ``src`` by --vis (``None`` when there is none or
        it has no face), read once for the sheet and the scores."""
        if vis is None:
            return None
        if src not in seen_vis:
            cand = vis if vis.is_file() else next((p for p in sorted(vis.iterdir()) if p.stem == src.stem
                                                  and p.suffix.lower() in IMAGE_EXTS), None) if vis.is_dir() else None
            seen_vis[src] = None
            if cand is not None:
                try:
                    seen_vis[src] = load_with_face(cand, "vis", None)[:2]
                except (NirvisError, *IMAGE_ERRORS) as exc:
                    typer.echo(f"warning: the VIS image of {src.name}: {exc}", err=True)
        return seen_vis[src]

    failures: list[str] = []
    scores: list[tuple[str, float, float]] = []  # (input, NIR -> VIS cosine, hallucinated -> VIS cosine)
    rows: list[list[np.ndarray]] = []
    done = 0
    with Progress(TextColumn("hallucinating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=True) as bar:
        task = bar.add_task("faces", total=len(images))
        for start in range(0, len(images), batch_size):
            chunk = list(zip(images[start:start + batch_size], outs[start:start + batch_size]))
            faces, masks, keep, records = [], [], [], []
            for (src, _), dst in chunk:
                try:
                    record, face, mask = load_with_face(src, "nir", channel)
                except (NoFaceError, *IMAGE_ERRORS) as exc:
                    failures.append(str(exc))
                    typer.echo(f"warning: {exc}", err=True)
                    continue
                faces.append(face)
                masks.append(mask)
                records.append(record)
                keep.append((src, dst))
            if faces:
                try:
                    res = hal.hallucinate(np.stack(faces), np.stack(masks))
                except (NirvisError, OSError) as exc:
                    failures += [f"{src}: {exc}" for src, _ in keep]
                    typer.echo(f"warning: {exc}", err=True)
                    keep = []
                for i, (src, dst) in enumerate(keep):
                    try:
                        _write_rgb(dst, res.rgb[i])
                    except (NirvisError, OSError) as exc:
                        failures.append(f"{dst}: {exc}")
                        typer.echo(f"warning: {dst}: {exc}", err=True)
                        continue
                    done += 1
                    if emb is not None:
                        got = vis_of(src)
                        scored = _score(emb, records[i], res.rgb[i], got[0] if got else None)
                        if scored is not None:
                            scores.append((src.name, *scored))
                    if sheet is not None and len(rows) < sheet_rows:
                        got = vis_of(src)
                        rows.append(sheet_row(res, i, got[1] if got else None))
            bar.update(task, advance=len(chunk))
    sheet_written = False
    if sheet is not None and rows:
        titles = sheet_titles(blend, any(len(r) > 3 for r in rows))
        try:
            _write_rgb(sheet, sheet_image(rows, titles))
            sheet_written = True
        except (NirvisError, OSError) as exc:
            typer.echo(f"warning: --sheet {sheet}: not written ({exc})", err=True)
    if emb is not None:
        _print_scores(emb, scores)
    wrote = [str(outs[0] if len(outs) == 1 else output)] if done else []
    wrote += [str(sheet)] if sheet_written else []
    typer.echo(f"hallucinated {done} of {len(images)} images; failed {len(failures)}"
               + (f"; wrote {' and '.join(wrote)}" if wrote else "; nothing written"))
    if done == 0:
        raise typer.Exit(code=1)
