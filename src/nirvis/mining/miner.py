"""Mining registered NIR/VIS patch pairs from aligned faces (paper Sec. 3.1).

For each training person, every (aligned NIR, aligned VIS) image pair is compared window by window:
the VIS luminance Y is registered to the NIR window by an affine ECC fit, the centre 40x40 of both is
scored, and good pairs are kept. People are the unit of work and of resumption: each finished person
is written atomically to ``<store>.parts/``; a rerun skips the people already there. When every person
is done, the parts are pruned, flipped and assembled into the HDF5 store (again atomically).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import multiprocessing
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from nirvis._io import NPZ_READ_ERRORS, atomic_save_npz, atomic_write, atomic_write_json, read_image, read_json
from nirvis.errors import ImageError, NoFaceError
from nirvis.faces.align import IMAGE_ERRORS, AlignConfig, FaceAligner, valid_mask
from nirvis.faces.types import Face
from nirvis.faces.normalize import match_mean_std, reference_stats
from nirvis.mining.config import MiningConfig
from nirvis.mining.prune import prune_per_location
from nirvis.mining.register import FAIL_ECC, FAIL_FLAT, FAIL_IMPLAUSIBLE, register_window, warp_window
from nirvis.mining.registered import REJECT_KINDS, face_mask, mine_registered_pair, register_frames, warp_registered
from nirvis.mining.score import accept, score_pair
from nirvis.mining.store import FORMAT, VERSION, PatchStore, StoreError, append_pairs, create_store
from nirvis.mining.windows import centre_crop, mirror_x, window_grid

__all__ = ["ImageRef", "PersonJob", "Reference", "jobs_from_samples", "choose_reference", "mine_person",
           "mine_store", "parts_dir_for"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageRef:
    """One source image: its capture id, file and how to read it (see :class:`nirvis.datasets.Sample`)."""

    id: str
    path: str
    channel: str | None = None
    pair_id: str | None = None


@dataclass(frozen=True)
class PersonJob:
    """All images of one training person; the unit of parallel work and of resumption."""

    person: str
    nir: tuple[ImageRef, ...]
    vis: tuple[ImageRef, ...]


@dataclass(frozen=True)
class Reference:
    """Fixed photometric reference (paper Sec. 3.1): per-channel mean and std of one training capture.

    NIR images are set to the reference NIR image's mean/std, VIS images channel by channel to the
    reference VIS (RGB) image's.
    """

    nir_mean: float
    nir_std: float
    vis_mean: tuple[float, float, float]
    vis_std: tuple[float, float, float]
    nir_id: str
    vis_id: str
    #: Where the statistics were measured: ``"face"`` or ``"frame"`` (:attr:`MiningConfig.norm_region`);
    #: inference normalises over the same region.
    region: str = "frame"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Reference:
        return cls(float(d["nir_mean"]), float(d["nir_std"]), tuple(map(float, d["vis_mean"])),
                   tuple(map(float, d["vis_std"])), str(d["nir_id"]), str(d["vis_id"]), str(d.get("region", "frame")))


def jobs_from_samples(samples: Iterable, people: Iterable[str] | None = None) -> list[PersonJob]:
    """One :class:`PersonJob` per person of ``samples`` (``nirvis.datasets.Sample``), sorted by person.

    Images are sorted by capture id, so that pairs come in a canonical order. ``people`` restricts the
    persons (default: all).
    """
    wanted = None if people is None else set(people)
    by: dict[str, dict[str, dict[str, ImageRef]]] = {}
    for s in samples:
        if wanted is not None and s.person not in wanted:
            continue
        d = by.setdefault(s.person, {"nir": {}, "vis": {}})
        d[s.modality][s.capture_id] = ImageRef(s.capture_id, str(s.path), s.channel, s.pair_id)
    return [PersonJob(p, tuple(v for _, v in sorted(by[p]["nir"].items())),
                      tuple(v for _, v in sorted(by[p]["vis"].items()))) for p in sorted(by)]


@functools.lru_cache(maxsize=2)
def _aligner(landmark_model: str = "shape5") -> FaceAligner:
    return FaceAligner(AlignConfig(landmark_model=landmark_model))


def _load(ref: ImageRef, modality: str, *, aligned: bool, size: int, landmark_model: str = "shape5"
          ) -> tuple[np.ndarray | None, Face | None, np.ndarray, np.ndarray] | None:
    """Read and align one image: ``(source, face, aligned, valid)``, ``None`` when no face is found (see
    :func:`load_face`). With ``aligned=True`` there is no source frame nor alignment (``None``)."""
    channel = ref.channel or "gray" if modality == "nir" else ref.channel
    img = read_image(ref.path, channel=channel)
    if modality == "vis" and img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if aligned:
        if img.shape[:2] != (size, size):
            raise ImageError(f"{ref.path}: --aligned needs {size}x{size} aligned faces, "
                             f"got {img.shape[1]}x{img.shape[0]}")
        return None, None, img, np.ones((size, size), bool)
    try:
        face = _aligner(landmark_model).align(img, source=ref.path)
    except NoFaceError:
        return None
    return img, face, face.image, valid_mask(face.matrix, img.shape[:2], size)


def load_face(ref: ImageRef, modality: str, *, aligned: bool, size: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Read and align one image.

    Returns
    -------
    ``(face, valid)``: ``(size, size)`` uint8 for NIR or ``(size, size, 3)`` RGB for VIS, and a boolean
    ``(size, size)`` mask of the template pixels that come from inside the source image (the rest is the
    warp's fill, whose straight edges would otherwise correlate across spectra). ``None`` when no face is
    found. With ``aligned=True`` the file must already be an aligned ``size x size`` face (all valid).
    """
    loaded = _load(ref, modality, aligned=aligned, size=size)
    return None if loaded is None else loaded[2:]


def load_face_with_landmarks(ref: ImageRef, modality: str, *, aligned: bool, size: int,
                             landmark_model: str = "shape5") -> tuple[Face | None, np.ndarray, np.ndarray] | None:
    """:func:`load_face`, with the aligned :class:`~nirvis.faces.types.Face` first (its landmarks place a
    network's own crop: align with that network's ``landmark_model``); ``None`` in its place for an input that
    was already aligned (``aligned=True``)."""
    loaded = _load(ref, modality, aligned=aligned, size=size, landmark_model=landmark_model)
    return None if loaded is None else loaded[1:]


def try_load_face(ref: ImageRef, modality: str, *, aligned: bool, size: int
                  ) -> tuple[tuple[np.ndarray, np.ndarray] | None, str | None]:
    """:func:`load_face`, with an unusable image as ``(None, reason)`` instead of an exception; a readable
    image with no face is ``(None, None)``."""
    try:
        return load_face(ref, modality, aligned=aligned, size=size), None
    except IMAGE_ERRORS as exc:
        return None, str(exc) or type(exc).__name__


def choose_reference(jobs: Sequence[PersonJob], *, aligned: bool = False, size: int = 224,
                     region: str = "frame") -> Reference:
    """The photometric reference: the first NIR and the first VIS image (in person, then capture-id
    order) of the first person with both aligned. Deterministic for a given set of jobs. Its statistics
    are measured over ``region`` (:attr:`MiningConfig.norm_region`).

    Raises
    ------
    ImageError
        If no person has an aligned NIR and an aligned VIS image.
    """
    for job in jobs:
        nir_ref, nir = None, None
        for r in job.nir:
            nir, _ = try_load_face(r, "nir", aligned=aligned, size=size)
            if nir is not None:
                nir_ref = r
                break
        if nir_ref is None:
            continue
        for r in job.vis:
            vis, _ = try_load_face(r, "vis", aligned=aligned, size=size)
            if vis is not None:
                (nm,), (ns,) = reference_stats(nir[0], _norm_mask(nir[1], region))
                vm, vs = reference_stats(vis[0], _norm_mask(vis[1], region))
                return Reference(float(nm), float(ns), tuple(map(float, vm)), tuple(map(float, vs)), nir_ref.id, r.id,
                                 region)
    raise ImageError(f"no person among {len(jobs)} has both an aligned NIR and an aligned VIS image; "
                     "cannot choose the photometric reference")


def _empty_result(patch: int) -> dict[str, np.ndarray]:
    return {"nir": np.zeros((0, patch, patch), np.uint8), "y": np.zeros((0, patch, patch), np.uint8),
            "cb": np.zeros((0, patch, patch), np.uint8), "cr": np.zeros((0, patch, patch), np.uint8),
            "nir_id": np.zeros((0,), "<U1"), "vis_id": np.zeros((0,), "<U1"),
            "loc": np.zeros((0, 2), np.int16), "loc_index": np.zeros((0,), np.int16),
            "s1": np.zeros((0,), np.float32), "s2": np.zeros((0,), np.float32),
            "scored_s1": np.zeros((0,), np.float16), "scored_s2": np.zeros((0,), np.float16),
            "mode": np.zeros((0,), np.uint8)}


def mine_pair(nir: np.ndarray, ycrcb: np.ndarray, config: MiningConfig, valid: np.ndarray | None = None
              ) -> tuple[dict[str, list], dict[str, int]]:
    """Mine one aligned, normalised (NIR, VIS YCrCb) image pair, window by window (paper Sec. 3.1).

    Parameters
    ----------
    nir
        ``(size, size)`` uint8 NIR face.
    ycrcb
        ``(size, size, 3)`` uint8 VIS face in OpenCV's YCrCb order (Y, Cr, Cb).
    valid
        Optional ``(size, size)`` bool mask of pixels inside both source images; a window with any
        invalid pixel is counted as ``outside`` and not registered.

    Returns
    -------
    kept rows (lists, by window location in row-major order; ``loc_index`` indexes
    :meth:`MiningConfig.location_grid`) and counters ``windows``, ``flat``, ``ecc_error``,
    ``implausible``, ``registered``, ``kept``. ``scored_s1``/``scored_s2`` hold the scores of every
    registered window.
    """
    grid = window_grid(config.size, config.window, config.stride)
    fine = config.location_indices()
    w, p = config.window, config.patch
    nir_f = nir.astype(np.float32)
    ycc_f = ycrcb.astype(np.float32)
    rows: dict[str, list] = {k: [] for k in ("nir", "ycc", "loc_index", "s1", "s2", "scored_s1", "scored_s2")}
    counts = {"windows": 0, "outside": 0, FAIL_FLAT: 0, FAIL_ECC: 0, FAIL_IMPLAUSIBLE: 0, "registered": 0, "kept": 0}
    for y0, x0 in grid.tolist():
        counts["windows"] += 1
        if valid is not None and not valid[y0:y0 + w, x0:x0 + w].all():
            counts["outside"] += 1
            continue
        nw = np.ascontiguousarray(nir_f[y0:y0 + w, x0:x0 + w])
        cw = np.ascontiguousarray(ycc_f[y0:y0 + w, x0:x0 + w])
        yw = np.ascontiguousarray(cw[:, :, 0])
        warp, fail = register_window(nw, yw, config)
        if warp is None:
            counts[fail] += 1
            continue
        counts["registered"] += 1
        s1, s2 = score_pair(nw, warp_window(yw, warp), p)
        rows["scored_s1"].append(s1)
        rows["scored_s2"].append(s2)
        if not accept(s1, s2, config):
            continue
        counts["kept"] += 1
        reg = centre_crop(warp_window(cw, warp), p)
        rows["nir"].append(centre_crop(nir[y0:y0 + w, x0:x0 + w], p))
        rows["ycc"].append(np.clip(np.rint(reg), 0, 255).astype(np.uint8))
        rows["loc_index"].append(fine[(y0, x0)])
        rows["s1"].append(s1)
        rows["s2"].append(s2)
    return rows, counts


@dataclass
class _Image:
    """One loaded image of a person: id, source array, its own alignment, and the aligned face with its
    valid mask (see :func:`load_face`)."""

    id: str
    source: np.ndarray | None
    face: Face | None
    aligned: np.ndarray
    valid: np.ndarray


def _norm_mask(valid: np.ndarray, region: str) -> np.ndarray:
    """The pixels whose statistics the photometric normalisation matches (:attr:`MiningConfig.norm_region`)."""
    return valid & face_mask(valid.shape[0]) if region == "face" else valid


#: Counters of one person's stats, summed over people in the summary.
_COUNTERS = ("windows", "outside", FAIL_FLAT, FAIL_ECC, FAIL_IMPLAUSIBLE, "registered", "kept", "same_capture_pairs",
             "same_capture_windows", "same_capture_kept", "geometric_pairs", "geometric_windows", "geometric_kept",
             "geometric_fallback_pairs", *(f"geometric_{k}" for k in REJECT_KINDS))


def mine_person(job: PersonJob, config: MiningConfig, reference: Reference, *, aligned: bool = False
                ) -> tuple[dict[str, np.ndarray], dict]:
    """Mine every (NIR, VIS) image pair of one person.

    Each image is aligned once, normalised to the ``reference`` (paper Sec. 3.1), and every NIR image is
    paired with every VIS image. A NIR frame and the VIS frame taken with it are mined in the geometric
    mode when ``config.simultaneous == "geometric"`` (:mod:`nirvis.mining.registered`); every other pair
    by the paper's tests. Images with no face (``not_aligned``) and images that cannot be used
    (``unreadable``: missing, corrupt, translucent, ...; with the reason) are recorded in the stats and skipped.
    Rows are ordered by NIR capture id, then VIS capture id, then window location; ``mode`` is 1 for the
    rows of geometric pairs, 0 for the others.

    Returns
    -------
    arrays (see :func:`_empty_result` for the keys) and a JSON-able stats dict.
    """
    size = config.size
    images: dict[str, list[_Image]] = {"nir": [], "vis": []}
    failed, unreadable = [], []
    for modality, refs in (("nir", job.nir), ("vis", job.vis)):
        for r in refs:
            try:
                loaded = _load(r, modality, aligned=aligned, size=size)
            except IMAGE_ERRORS as exc:
                unreadable.append({"id": r.id, "reason": str(exc) or type(exc).__name__})
                continue
            if loaded is None:
                failed.append(r.id)
                continue
            src, face, img, valid = loaded
            mask = _norm_mask(valid, config.norm_region)
            if modality == "nir":
                img = match_mean_std(img, reference.nir_mean, reference.nir_std, mask=mask)
            else:
                img = cv2.cvtColor(match_mean_std(img, np.array(reference.vis_mean), np.array(reference.vis_std),
                                                  mask=mask), cv2.COLOR_RGB2YCrCb)
            images[modality].append(_Image(r.id, src, face, img, valid))
    pair_of = {r.id: r.pair_id for r in job.nir}
    grid = config.location_grid()
    out = _empty_result(config.patch)
    acc: dict[str, list] = {k: [] for k in out}
    totals = {k: 0 for k in _COUNTERS}
    registrations = []
    for n in images["nir"]:
        for v in images["vis"]:
            simultaneous = pair_of.get(n.id) is not None and pair_of[n.id] == v.id
            mode = 0
            if simultaneous and config.simultaneous == "geometric" and n.face is not None and v.face is not None:
                rows, counts, reg = _mine_geometric(n, v, config, reference)
                registrations.append({"nir_id": n.id, "vis_id": v.id, "offset": [round(c, 3) for c in reg.offset],
                                      "landmark_offset": [round(c, 3) for c in reg.landmark_offset],
                                      "refined": reg.refined, "residual": round(reg.residual, 3)})
                if rows is not None:
                    mode = 1
                    totals["geometric_pairs"] += 1
                    totals["geometric_windows"] += counts["windows"]
                    totals["geometric_kept"] += counts["kept"]
                    for k in REJECT_KINDS:
                        totals[f"geometric_{k}"] += counts[k]
                else:
                    totals["geometric_fallback_pairs"] += 1
            if mode == 0:
                rows, counts = mine_pair(n.aligned, v.aligned, config, valid=n.valid & v.valid)
                for k in ("outside", FAIL_FLAT, FAIL_ECC, FAIL_IMPLAUSIBLE, "registered"):
                    totals[k] += counts[k]
            totals["windows"] += counts["windows"]
            totals["kept"] += counts["kept"]
            if simultaneous:  # simultaneous frames (RAP3DF)
                totals["same_capture_pairs"] += 1
                totals["same_capture_windows"] += counts["windows"]
                totals["same_capture_kept"] += counts["kept"]
            acc["scored_s1"].append(np.asarray(rows["scored_s1"], np.float16))
            acc["scored_s2"].append(np.asarray(rows["scored_s2"], np.float16))
            k = len(rows["nir"])
            if k == 0:
                continue
            ycc_p = np.stack(rows["ycc"])
            acc["nir"].append(np.stack(rows["nir"]))
            acc["y"].append(ycc_p[..., 0])
            acc["cr"].append(ycc_p[..., 1])
            acc["cb"].append(ycc_p[..., 2])
            acc["nir_id"].append(np.array([n.id] * k))
            acc["vis_id"].append(np.array([v.id] * k))
            li = np.asarray(rows["loc_index"], np.int16)
            acc["loc_index"].append(li)
            acc["loc"].append(grid[li].astype(np.int16))
            acc["s1"].append(np.asarray(rows["s1"], np.float32))
            acc["s2"].append(np.asarray(rows["s2"], np.float32))
            acc["mode"].append(np.full(k, mode, np.uint8))
    for key, parts in acc.items():
        if parts:
            cat = np.concatenate(parts)
            out[key] = cat if key in ("nir_id", "vis_id") else cat.astype(out[key].dtype)
    stats = {"person": job.person, "nir_images": len(job.nir), "vis_images": len(job.vis),
             "nir_aligned": len(images["nir"]), "vis_aligned": len(images["vis"]), "not_aligned": failed,
             "unreadable": unreadable, "image_pairs": len(images["nir"]) * len(images["vis"]), **totals,
             "registrations": registrations}
    return out, stats


def _mine_geometric(n: _Image, v: _Image, config: MiningConfig, reference: Reference):
    """Register a simultaneous pair and mine it geometrically; ``(None, None, registration)`` when its residual
    is above ``config.max_residual`` (the pair then goes through the paper's tests)."""
    vis_gray = cv2.cvtColor(v.source, cv2.COLOR_RGB2GRAY)
    reg = register_frames(n.source, vis_gray, n.face, v.face, config)
    if reg.residual > config.max_residual:
        return None, None, reg
    faces = warp_registered(n.source, v.source, v.face.matrix, reg.offset, config.size)
    mask = _norm_mask(faces.valid, config.norm_region)
    nir = match_mean_std(faces.nir, reference.nir_mean, reference.nir_std, mask=mask)
    rgb = match_mean_std(faces.rgb, np.array(reference.vis_mean), np.array(reference.vis_std), mask=mask)
    rows, counts = mine_registered_pair(nir, cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb), faces, config)
    return rows, counts, reg


def parts_dir_for(output: str | os.PathLike) -> Path:
    """Folder of the per-person results of an unfinished run: ``<store>.parts``."""
    output = Path(output)
    return output.with_name(output.name + ".parts")


def _part_path(parts_dir: Path, person: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", person)[:40]
    return parts_dir / f"{safe}-{hashlib.sha1(person.encode()).hexdigest()[:10]}.npz"


def job_digest(job: PersonJob, aligned: bool) -> str:
    """A digest of what one person's part is mined from: their images (capture ids, channels, pairs and
    file sizes) and ``aligned``. A part mined from other images (another dataset, protocol or
    ``--train-data`` with the same person names) is mined again instead of being reused; the same data
    moved to another folder is not."""
    def size(path: str) -> int:
        try:
            return os.stat(path).st_size
        except OSError:
            return -1

    refs = [[r.id, r.channel, r.pair_id, size(r.path)] for r in (*job.nir, *job.vis)]
    blob = json.dumps([job.person, len(job.nir), refs, bool(aligned)])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _load_part(path: Path, keys: Sequence[str] | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Arrays (all, or only ``keys``) and stats of one person's part file."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in (z.files if keys is None else keys) if k != "stats_json"}
            stats = json.loads(str(z["stats_json"]))
    except NPZ_READ_ERRORS as exc:
        raise StoreError(f"{path}: damaged part file ({type(exc).__name__}: {exc}); delete it and run again "
                         "to mine that person anew") from None
    return arrays, stats


def _part_done(path: Path, digest: str) -> bool:
    """Whether ``path`` holds a readable part mined from the images of ``digest`` (see :func:`job_digest`).
    A damaged part is deleted, and a part of other images is left to be overwritten: both are mined again."""
    if not path.is_file():
        return False
    try:
        with np.load(path, allow_pickle=False) as z:
            stats = json.loads(str(z["stats_json"]))
    except NPZ_READ_ERRORS as exc:
        log.warning("%s: damaged part (%s); mining that person again", path, exc)
        path.unlink(missing_ok=True)
        return False
    if stats.get("job") != digest:
        log.warning("%s: mined from other images of %s; mining again", path, stats.get("person"))
        return False
    return True


def _mine_and_save(task: tuple) -> dict:
    """Worker: mine one person and write their part atomically; returns the stats."""
    job, config_d, ref_d, aligned, parts_dir = task
    config, reference = MiningConfig(**config_d), Reference.from_dict(ref_d)
    t0 = time.perf_counter()
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # one core per worker: parallelism is over people
    try:
        arrays, stats = mine_person(job, config, reference, aligned=aligned)
    finally:
        cv2.setNumThreads(threads)
    stats["job"] = job_digest(job, aligned)
    stats["seconds"] = round(time.perf_counter() - t0, 3)
    atomic_save_npz(_part_path(Path(parts_dir), job.person), stats_json=np.array(json.dumps(stats)), **arrays)
    return stats


def _cleanup_tmp(folder: Path, pattern: str) -> None:
    for p in folder.glob(pattern):
        p.unlink(missing_ok=True)


def _jobs_digest(digests: Iterable[str | None]) -> str:
    return hashlib.sha256(json.dumps(list(digests)).encode()).hexdigest()[:16]


def _store_is_done(output: Path, fingerprint: str, people: list[str], jobs_digest: str) -> bool:
    if not output.is_file():
        return False
    try:
        with PatchStore(output) as st:
            same = (st.config.get("_fingerprint") == fingerprint and st.people == people
                    and st.config.get("_jobs", jobs_digest) == jobs_digest)  # stores before _jobs: not checked
    except StoreError as exc:  # never overwrite a file that is not one of ours
        raise StoreError(f"{exc} -- refusing to overwrite {output}; delete it or choose another -o") from None
    if not same:
        raise StoreError(f"{output}: a patch store with other settings, people or images already exists; delete it or "
                         "choose another -o")
    return True


def mine_store(jobs: Sequence[PersonJob], output: str | os.PathLike, config: MiningConfig | None = None, *,
               workers: int = 1, aligned: bool = False, meta: dict | None = None,
               progress: Callable[[int, int, str], None] | None = None, keep_parts: bool = False,
               parts_dir: str | os.PathLike | None = None) -> dict:
    """Mine ``jobs`` into the HDF5 patch store ``output`` (paper Sec. 3.1); resumable and parallel.

    Parameters
    ----------
    jobs
        One :class:`PersonJob` per training person (see :func:`jobs_from_samples`).
    output
        Path of the store (``.h5``). Per-person results go to ``<output>.parts/`` until assembly.
    config
        Mining settings (default: the paper's).
    workers
        Processes over people (``spawn`` context). The store is identical for any number.
    aligned
        The images are already aligned ``size x size`` faces (no detection).
    meta
        JSON-able description written in the store (``dataset``, ``split``, ...).
    progress
        Called as ``progress(done, total, person)`` after each person.
    keep_parts
        Keep ``<output>.parts/`` after assembly (default: removed).
    parts_dir
        A folder of per-person parts shared by several stores mined with the same settings, e.g. the
        training sets of a protocol's splits, which overlap: each person is mined once, and each store
        is assembled (pruned, flipped) from its own people's parts. The folder is kept. Its photometric
        reference is chosen by the first run; a later run refuses it unless the reference images belong
        to that run's people, so a test person's images never set a training store's normalisation.
        Do not mine into one shared folder from two processes at once.

    Returns
    -------
    The run's summary (see :func:`summarize`), plus ``seconds`` and ``resumed_people``.

    Notes
    -----
    Resumption: a person is done when their part file exists (written to a temporary file, fsynced and
    renamed), can be read and was mined from the same images (:func:`job_digest`). Killing the process at
    any moment and rerunning gives the same store: unfinished people are mined again from scratch, finished
    ones are not, and assembly (pruning with a seeded RNG, flips) runs on the canonical person order.
    """
    config = config or MiningConfig()
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    t0 = time.perf_counter()
    output = Path(output)
    jobs = sorted(jobs, key=lambda j: j.person)
    people = [j.person for j in jobs]
    if len(set(people)) != len(people):
        raise ValueError("mine_store: jobs contain the same person twice")
    fp = config.fingerprint()
    shared = parts_dir is not None
    parts = Path(parts_dir) if shared else parts_dir_for(output)
    keep_parts = keep_parts or shared
    digests = [job_digest(j, aligned) for j in jobs]
    if _store_is_done(output, fp, people, _jobs_digest(digests)):
        log.info("%s is already complete; nothing to do", output)
        if parts.exists() and not keep_parts:
            shutil.rmtree(parts, ignore_errors=True)
        with PatchStore(output) as st:
            return {**st.summary, "seconds": round(time.perf_counter() - t0, 3), "resumed_people": len(people)}
    parts.mkdir(parents=True, exist_ok=True)
    _cleanup_tmp(parts, ".*.tmp*")
    _cleanup_tmp(output.parent, f".{output.name}.*.tmp*")
    reference = _parts_manifest(parts, jobs, config, aligned, meta or {}, shared)
    todo = [j for j, d in zip(jobs, digests) if not _part_done(_part_path(parts, j.person), d)]
    resumed = len(jobs) - len(todo)
    log.info("mining %d people (%d already done) with %d worker(s)", len(todo), resumed, workers)
    tasks = [(j, config.to_dict(), reference.to_dict(), aligned, str(parts)) for j in todo]
    done = resumed
    if progress:
        progress(done, len(jobs), "")
    if workers == 1 or len(tasks) <= 1:
        for t in tasks:
            st = _mine_and_save(t)
            done += 1
            if progress:
                progress(done, len(jobs), st["person"])
    else:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(min(workers, len(tasks))) as pool:
            for st in pool.imap_unordered(_mine_and_save, tasks):
                done += 1
                if progress:
                    progress(done, len(jobs), st["person"])
    summary = assemble(output, jobs, parts, config, reference, meta=meta or {})
    if not keep_parts:
        shutil.rmtree(parts, ignore_errors=True)
    return {**summary, "seconds": round(time.perf_counter() - t0, 3), "resumed_people": resumed}


def _parts_manifest(parts: Path, jobs: Sequence[PersonJob], config: MiningConfig, aligned: bool, meta: dict,
                    shared: bool) -> Reference:
    """Read or create the parts folder's manifest; return the photometric reference of the run.

    A private folder (``<store>.parts``) belongs to one set of people; a shared one (``parts_dir``) to one
    set of settings, and its reference must come from images of the current ``jobs``.
    """
    people = [j.person for j in jobs]
    manifest_path = parts / "manifest.json"
    manifest = {"config": config.to_dict(), "fingerprint": config.fingerprint(), "aligned": aligned,
                "shared": shared, **({} if shared else {"people": people, "meta": meta})}
    keys = ("fingerprint", "aligned", "shared") + (() if shared else ("people",))
    if not manifest_path.is_file():
        reference = choose_reference(jobs, aligned=aligned, size=config.size, region=config.norm_region)
        atomic_write_json(manifest_path, {**manifest, "reference": reference.to_dict()})
        return reference
    old = read_json(manifest_path, StoreError)
    if not isinstance(old, dict) or not isinstance(old.get("reference"), dict):
        raise StoreError(f"{manifest_path}: not a parts manifest (no 'reference'); delete the folder {parts} "
                         "and run again")
    if any(old.get(k, False if k == "shared" else None) != manifest[k] for k in keys):
        what = "other settings" if shared else "other settings or people"
        raise StoreError(f"{parts}: holds parts mined with {what}; delete the folder or choose another one")
    reference = Reference.from_dict(old["reference"])
    if shared:
        ids = {r.id for j in jobs for r in (*j.nir, *j.vis)}
        missing = [i for i in (reference.nir_id, reference.vis_id) if i not in ids]
        if missing:
            raise StoreError(f"{parts}: its photometric reference ({', '.join(missing)}) is not an image of this "
                             "run's people; mine this training set with its own parts folder")
    return reference


def assemble(output: Path, jobs: Sequence[PersonJob], parts: Path, config: MiningConfig, reference: Reference,
             *, meta: dict) -> dict:
    """Prune, flip and write the parts of ``jobs`` (in person order) into the store, atomically.

    Pruning (:func:`nirvis.mining.prune.prune_per_location`) sees all people's kept pairs in canonical
    order; each kept pair is followed by its horizontal flip at the mirrored location.
    """
    people = [j.person for j in jobs]
    n_loc = len(config.location_grid())
    locs, stats_all, id_len = [], [], 1
    for j in jobs:
        # The patches are read in write() below, one person at a time; here only what pruning needs.
        arrays, stats = _load_part(_part_path(parts, j.person), keys=("loc_index", "nir_id", "vis_id"))
        locs.append(arrays["loc_index"].astype(np.int64))
        stats_all.append(stats)
        for k in ("nir_id", "vis_id"):
            if arrays[k].size:
                id_len = max(id_len, max(len(s.encode()) for s in arrays[k]))
    all_loc = np.concatenate(locs) if locs else np.zeros(0, np.int64)
    keep, cap = prune_per_location(all_loc, n_loc, config.prune_quantile, config.seed)
    summary = summarize(stats_all, all_loc, keep, cap, n_loc, config)
    config_d = {**config.to_dict(), "_fingerprint": config.fingerprint(),
                "_jobs": _jobs_digest(s.get("job") for s in stats_all)}

    def write(tmp: Path) -> None:
        import h5py

        with h5py.File(tmp, "w", track_order=True) as h5:
            create_store(h5, config.patch, id_len)
            start = 0
            for pi, j in enumerate(jobs):
                arrays, _ = _load_part(_part_path(parts, j.person))
                n = arrays["loc_index"].shape[0]
                k = keep[start:start + n]
                start += n
                append_pairs(h5, {"scored/s1": arrays["scored_s1"], "scored/s2": arrays["scored_s2"]})
                m = int(k.sum())
                if m == 0:
                    continue
                rows = {f: arrays[f][k] for f in ("nir", "y", "cb", "cr", "loc", "s1", "s2")}
                rows["mode"] = arrays["mode"][k] if "mode" in arrays else np.zeros(m, np.uint8)
                rows["nir_id"] = np.char.encode(arrays["nir_id"][k], "utf-8")
                rows["vis_id"] = np.char.encode(arrays["vis_id"][k], "utf-8")
                rows["person"] = np.full(m, pi, np.int32)
                rows["flip"] = np.zeros(m, bool)
                if config.flip:
                    fl = dict(rows)
                    for f in ("nir", "y", "cb", "cr"):
                        fl[f] = rows[f][:, :, ::-1]
                    fl["loc"] = rows["loc"].copy()
                    fl["loc"][:, 1] = mirror_x(rows["loc"][:, 1], config.size, config.window)
                    fl["flip"] = np.ones(m, bool)
                    # interleave: each pair, then its flip
                    rows = {f: np.stack([rows[f], fl[f]], axis=1).reshape(2 * m, *rows[f].shape[1:]) for f in rows}
                append_pairs(h5, rows)
            h5.attrs["format"] = FORMAT
            h5.attrs["version"] = VERSION
            h5.attrs["people"] = json.dumps(people)
            h5.attrs["config"] = json.dumps(config_d, sort_keys=True)
            h5.attrs["reference"] = json.dumps(reference.to_dict(), sort_keys=True)
            h5.attrs["summary"] = json.dumps(summary, sort_keys=True)
            h5.attrs["meta"] = json.dumps(meta, sort_keys=True, default=str)
            h5.attrs["complete"] = True

    atomic_write(output, write)
    log.info("wrote %s: %d pairs from %d people", output, summary["pairs_stored"], len(people))
    return summary


def summarize(stats: list[dict], loc_index: np.ndarray, keep: np.ndarray, cap: int, n_loc: int,
              config: MiningConfig) -> dict:
    """Totals and per-person counts of a run (deterministic: no timings)."""
    keys = (*_COUNTERS, "image_pairs", "nir_images", "vis_images", "nir_aligned", "vis_aligned")
    tot = {k: int(sum(s.get(k, 0) for s in stats)) for k in keys}
    residuals = np.array([r["residual"] for s in stats for r in s.get("registrations", [])], np.float64)
    paper_windows = tot["windows"] - tot["geometric_windows"]
    kept_after = int(keep.sum())
    per_person = []
    start = 0
    for s in stats:
        n = s["kept"]
        per_person.append({"person": s["person"], "image_pairs": s["image_pairs"], "windows": s["windows"],
                           "registered": s["registered"], "kept": n,
                           "same_capture_kept": s["same_capture_kept"], "kept_after_prune": int(keep[start:start + n].sum()),
                           "not_aligned": s["not_aligned"], "unreadable": s.get("unreadable", []),
                           "acceptance": round(n / s["windows"], 4) if s["windows"] else None})
        start += n
    return {
        "people": len(stats), **{f"total_{k}": v for k, v in tot.items()},
        "images_not_aligned": sum(len(s["not_aligned"]) for s in stats),
        "images_unreadable": sum(len(s.get("unreadable", [])) for s in stats),
        "windows_tried": tot["windows"],
        "windows_outside_image": tot["outside"],
        "registration_failures": tot[FAIL_FLAT] + tot[FAIL_ECC] + tot[FAIL_IMPLAUSIBLE],
        "registration_failures_by_kind": {FAIL_FLAT: tot[FAIL_FLAT], FAIL_ECC: tot[FAIL_ECC],
                                          FAIL_IMPLAUSIBLE: tot[FAIL_IMPLAUSIBLE]},
        "pairs_kept": tot["kept"], "pairs_pruned": tot["kept"] - kept_after, "pairs_after_prune": kept_after,
        "pairs_stored": kept_after * (2 if config.flip else 1), "prune_cap_per_location": cap,
        "acceptance_of_windows": round(tot["kept"] / tot["windows"], 4) if tot["windows"] else None,
        "acceptance_of_registered": (round((tot["kept"] - tot["geometric_kept"]) / tot["registered"], 4)
                                     if tot["registered"] else None),  # the paper's tests, of ECC-registered windows
        "acceptance_same_capture": (round(tot["same_capture_kept"] / tot["same_capture_windows"], 4)
                                    if tot["same_capture_windows"] else None),
        "acceptance_other_pairs": (round((tot["kept"] - tot["same_capture_kept"])
                                         / (tot["windows"] - tot["same_capture_windows"]), 4)
                                   if tot["windows"] > tot["same_capture_windows"] else None),
        "acceptance_by_mode": {
            "geometric": round(tot["geometric_kept"] / tot["geometric_windows"], 4) if tot["geometric_windows"] else None,
            "paper": (round((tot["kept"] - tot["geometric_kept"]) / paper_windows, 4) if paper_windows else None)},
        "pairs_kept_by_mode": {"geometric": tot["geometric_kept"], "paper": tot["kept"] - tot["geometric_kept"]},
        "geometric_rejected_by_kind": {k: tot[f"geometric_{k}"] for k in REJECT_KINDS},
        "registration_residual_px": ({"pairs": int(residuals.size), "mean": round(float(residuals.mean()), 3),
                                      "median": round(float(np.median(residuals)), 3),
                                      "p90": round(float(np.quantile(residuals, 0.9)), 3)} if residuals.size else None),
        "kept_per_location": np.bincount(loc_index, minlength=n_loc).tolist(),
        "kept_per_location_after_prune": np.bincount(loc_index[keep], minlength=n_loc).tolist(),
        "per_person": per_person,
    }
