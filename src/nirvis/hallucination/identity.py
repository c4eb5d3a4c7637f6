"""Hallucination trained for recognition: an identity loss through the frozen dlib network (``H(id)``).

Beyond the paper, which trains its CNNs on patch MSE alone (Sec. 3). Here the same three networks
(:class:`~nirvis.hallucination.nets.HallucinationNets`) run on whole aligned NIR faces, their output goes
(differentiably) through dlib's chip extraction and dlib's ResNet (:mod:`nirvis.features.dlib_torch`, frozen),
and the loss is a softmax cross-entropy over the training people: the cosine of the hallucinated face's
descriptor to each training person's mean VIS descriptor, scaled by :attr:`IdentityTrainConfig.scale`. The
recogniser's weights never change; only the hallucination networks learn.

The networks start as the identity (Y = the NIR, neutral chroma). By default the NIR faces are *not*
photometrically normalised (the reference records ``"normalize": false``), so step 0 is exactly the NIR face
the recogniser sees without hallucination: a mean/std normalisation alone changed dlib's rank-1 by -1.3 to -3.4
points on RAP3DF splits whose validation kept step 0 (docs/BENCHMARKS.md). A share of the training people is held out; their NIR -> VIS rank-1 through the hallucination is measured
every :attr:`IdentityTrainConfig.val_every` steps, and the best state (step 0 included) is the model that is
saved, with its validation curve. The model is a regular hallucination model folder (``nirvis evaluate
--hallucination MODEL --alpha 0``): no eq. (1) blend was trained with it.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nirvis._io import atomic_write_json
from nirvis.errors import NirvisError
from nirvis.faces.types import Face
from nirvis.hallucination.io import HallucinationModel, save_model
from nirvis.hallucination.nets import HallucinationNets, preset

__all__ = ["IdentityTrainConfig", "FaceBatch", "chip_matrix", "identity_nets", "train_identity_hallucination",
           "prepare_faces", "training_data"]

log = logging.getLogger(__name__)

#: dlib's chip: 150x150 pixels, the face box grown by 25% (``dlib.get_face_chip``'s defaults, as the embedder).
CHIP, CHIP_PADDING = 150, 0.25


@dataclass(frozen=True)
class IdentityTrainConfig:
    """Settings of :func:`train_identity_hallucination`.

    Attributes
    ----------
    preset
        Networks (:data:`~nirvis.hallucination.nets.PRESETS`).
    lr
        Adam learning rate.
    batch_size
        Faces per step.
    max_seconds, max_steps
        Stop after this much training time, or this many steps (whichever comes first).
    scale
        Cosine-to-logit scale of the cross-entropy (dlib's descriptors of two people differ by a few hundredths
        of cosine).
    val_fraction
        Share of the training people held out to choose the step (at least 2 people); of the candidates, when
        :func:`train_identity_hallucination` is given ``val_candidates``. A quarter: 6 of a RAP3DF split's 24
        training people of 2019, the setting measured in docs/BENCHMARKS.md (issue 11, step 5); with a sixth (4
        people) a held-out run kept step 0.
    val_every
        Steps between validations.
    seed
        Seed of the person split, the initialisation and the batches.
    threads
        Torch threads (``None``: torch's setting).
    """

    preset: str = "cpu"
    lr: float = 1e-3
    batch_size: int = 8
    max_seconds: float = 300.0
    max_steps: int = 100_000
    scale: float = 60.0
    val_fraction: float = 0.25
    val_every: int = 40
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        if not (self.lr > 0 and self.scale > 0 and self.max_seconds > 0):
            raise ValueError(f"IdentityTrainConfig: lr, scale and max_seconds must be > 0, got {self.lr}, "
                             f"{self.scale}, {self.max_seconds}")
        if self.batch_size < 1 or self.max_steps < 1 or self.val_every < 1 or self.seed < 0:
            raise ValueError("IdentityTrainConfig: batch_size, max_steps and val_every must be >= 1 and seed >= 0")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"IdentityTrainConfig: val_fraction must be in (0, 1), got {self.val_fraction}")
        preset(self.preset)


def chip_matrix(face: Face, size: int = CHIP, padding: float = CHIP_PADDING) -> np.ndarray:
    """``(2, 3)`` affine map from dlib's chip pixels ``(u, v, 1)`` to the aligned face's pixels ``(x, y)``.

    Measured, not re-derived: dlib cuts the chip (bilinearly, as :func:`nirvis.features.dlib_resnet.dlib_chip`
    does) from an image whose red and green channels hold each pixel's x and y, and the map is the least-squares
    fit to the coordinates it returns (every step of the map is affine, so the fit is exact up to rounding).
    """
    from nirvis.features.dlib_resnet import dlib_chip

    h, w = face.image.shape[:2]
    if max(h, w) > 255:
        raise ValueError(f"chip_matrix: faces up to 255 px, got {w}x{h}")
    yy, xx = np.mgrid[0:h, 0:w]
    coords = np.stack([xx, yy, np.zeros_like(xx)], axis=-1).astype(np.uint8)
    chip = dlib_chip(Face(coords, face.landmarks, face.anchors, face.matrix, face.method, face.score), size,
                     padding).astype(np.float64)
    v, u = np.mgrid[0:size, 0:size]
    inside = (chip[..., 0] > 0) & (chip[..., 0] < w - 1) & (chip[..., 1] > 0) & (chip[..., 1] < h - 1)
    A = np.stack([u[inside], v[inside], np.ones(int(inside.sum()))], axis=1)
    sol, *_ = np.linalg.lstsq(A, chip[inside][:, :2], rcond=None)
    return sol.T


@dataclass
class FaceBatch:
    """Prepared training faces: ``nir`` ``(N, H, W)`` uint8 normalised aligned NIR faces, ``grids``
    ``(N, 150, 150, 2)`` float32 sampling grids of their dlib chips (``grid_sample`` units), ``person`` ``(N,)``
    int indices into ``people``."""

    nir: np.ndarray
    grids: np.ndarray
    person: np.ndarray
    people: list[str]


def _grid(matrix: np.ndarray, h: int, w: int, size: int = CHIP) -> np.ndarray:
    v, u = np.mgrid[0:size, 0:size].astype(np.float64)
    x = matrix[0, 0] * u + matrix[0, 1] * v + matrix[0, 2]
    y = matrix[1, 0] * u + matrix[1, 1] * v + matrix[1, 2]
    return np.stack([x / (w - 1) * 2 - 1, y / (h - 1) * 2 - 1], axis=-1).astype(np.float32)


def prepare_faces(faces: Sequence[Face], people: Sequence[str], reference: dict[str, Any]) -> FaceBatch:
    """Normalise aligned NIR ``faces`` to ``reference`` exactly as inference does
    (:meth:`~nirvis.hallucination.infer.Hallucinator.normalize`) and measure their chips."""
    from nirvis.faces.align import as_gray, valid_mask
    from nirvis.hallucination.infer import Hallucinator

    names = sorted(set(people))
    norm, grids = [], []
    hal = Hallucinator(HallucinationModel(identity_nets(preset("cpu")), dict(reference)), blend=None,
                       method="direct")
    for f in faces:
        g = as_gray(f.image, f.source)
        valid = valid_mask(f.matrix, f.meta["source_shape"], g.shape[0]) if "source_shape" in f.meta else None
        norm.append(hal.normalize(g, valid))
        grids.append(_grid(chip_matrix(f), *g.shape[:2]))
    return FaceBatch(np.stack(norm), np.stack(grids), np.array([names.index(p) for p in people]), names)


def identity_nets(specs: dict | str = "cpu", seed: int = 0) -> HallucinationNets:
    """Networks that start as the identity: Y = the NIR (a residual Y net with a zero last layer), Cb = Cr =
    128/255 (neutral chroma)."""
    torch.manual_seed(seed)
    nets = HallucinationNets(specs)
    with torch.no_grad():
        for c, net in nets.nets.items():
            last = net.body[-1]
            last.weight.zero_()
            last.bias.fill_(0.0 if net.spec.residual else 128 / 255)
    return nets


def _rgb(out: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` Y, Cb, Cr in [0, 1] -> RGB in 0..255, OpenCV's ``COLOR_YCrCb2RGB`` (8-bit)."""
    y, cb, cr = out[:, 0], out[:, 1] - 128 / 255, out[:, 2] - 128 / 255
    rgb = torch.stack([y + 1.403 * cr, y - 0.714 * cr - 0.344 * cb, y + 1.773 * cb], dim=1)
    return rgb.clamp(0, 1) * 255


def _descriptors(nets: HallucinationNets, dlib_net, nir_u8: np.ndarray, grids: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(nir_u8.astype(np.float32) / 255.0)[:, None]
    chips = F.grid_sample(_rgb(nets(x)), torch.from_numpy(grids), mode="bilinear", padding_mode="zeros",
                          align_corners=True)
    return F.normalize(dlib_net(chips), dim=1)


def _rank1(nets, dlib_net, batch: FaceBatch, rows: np.ndarray, centroids: torch.Tensor, cls: np.ndarray) -> float:
    """NIR -> VIS rank-1 of ``rows`` against the centroids of the classes ``cls``."""
    with torch.no_grad():
        feats = torch.cat([_descriptors(nets, dlib_net, batch.nir[rows[i:i + 16]], batch.grids[rows[i:i + 16]])
                           for i in range(0, len(rows), 16)])
        sims = feats @ centroids[cls].T
    best = cls[sims.argmax(dim=1).numpy()]
    return float(np.mean(best == batch.person[rows]))


def train_identity_hallucination(batch: FaceBatch, vis_centroids: np.ndarray, reference: dict[str, Any],
                                 output: str | os.PathLike, config: IdentityTrainConfig = IdentityTrainConfig(),
                                 *, meta: dict[str, Any] | None = None,
                                 progress: Callable[[str], None] | None = None,
                                 val_candidates: Sequence[str] | None = None) -> dict[str, Any]:
    """Train the hallucination networks with the identity loss and save the best validated state.

    Parameters
    ----------
    batch
        The training people's NIR faces (:func:`prepare_faces`).
    vis_centroids
        ``(len(batch.people), 128)``: each person's mean dlib descriptor of their VIS faces, L2-normalised.
    reference
        Photometric reference the faces were normalised to (saved with the model).
    output
        Model folder (``weights.safetensors`` + ``config.json``, atomic).
    meta
        Written into the model's config (e.g. ``train_people``, ``dataset``); ``val_people``, the validation
        curve and the settings are added.
    val_candidates
        The people the validation people are drawn from (default: all). On RAP3DF the test people are of the 2019
        set, whose NIR camera differs from the 2017 set's: validating on 2019 people chooses the step for them (a
        model chosen on mostly 2017 people gained 4-10 points on those and lost on 2019 test people;
        docs/BENCHMARKS.md).

    Validation ranks each held-out person's NIR faces against the VIS centroids of *every* training person (the
    held-out ones included), a gallery of all of them, so that the step is chosen on a task as hard as the test.

    Returns
    -------
    The training record: steps, seconds, ``val_rank1`` per validation, ``best_step``.
    """
    from nirvis.features.dlib_torch import load_dlib_resnet

    cfg = config
    n_people = len(batch.people)
    rng = np.random.default_rng(cfg.seed)
    pool = np.arange(n_people) if val_candidates is None else \
        np.array([i for i, p in enumerate(batch.people) if p in set(val_candidates)], dtype=int)
    n_val = max(2, int(math.ceil(cfg.val_fraction * len(pool))))
    if n_people - n_val < 2:
        raise NirvisError(f"identity training needs at least 4 people, got {n_people}")
    if len(pool) < n_val:
        raise NirvisError(f"identity training: {len(pool)} of the training people may validate, {n_val} are needed")
    val_cls = np.sort(rng.permutation(pool)[:n_val])
    is_val = np.isin(batch.person, val_cls)
    train_rows, val_rows = np.flatnonzero(~is_val), np.flatnonzero(is_val)
    train_cls = np.setdiff1d(np.arange(n_people), val_cls)
    if len(train_rows) == 0 or len(val_rows) == 0:
        raise NirvisError("identity training: no NIR face among the training or the validation people")
    previous = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        dlib_net = load_dlib_resnet()
        nets = identity_nets(preset(cfg.preset), cfg.seed)
        opt = torch.optim.Adam(nets.parameters(), lr=cfg.lr)
        centroids = F.normalize(torch.from_numpy(np.asarray(vis_centroids, np.float32)), dim=1)
        # the training classes' logits: a person's NIR face against every training person's VIS centroid
        remap = np.full(n_people, -1)
        remap[train_cls] = np.arange(len(train_cls))
        history: dict[str, list] = {"step": [], "val_rank1": [], "loss": []}
        best = (-1.0, 0, {k: v.clone() for k, v in nets.state_dict().items()})
        t0, step, losses = time.perf_counter(), 0, []

        def validate() -> None:
            nonlocal best
            nets.eval()
            r1 = _rank1(nets, dlib_net, batch, val_rows, centroids, np.arange(n_people))
            nets.train()
            history["step"].append(step)
            history["val_rank1"].append(r1)
            history["loss"].append(float(np.mean(losses)) if losses else None)
            losses.clear()
            if r1 > best[0]:
                best = (r1, step, {k: v.clone() for k, v in nets.state_dict().items()})
            if progress:
                progress(f"step {step}: validation rank-1 {100 * r1:.1f}% ({len(val_cls)} people, gallery of "
                         f"{n_people})")

        validate()
        order = rng.permutation(train_rows)
        pos = 0
        while step < cfg.max_steps and time.perf_counter() - t0 < cfg.max_seconds:
            if pos + cfg.batch_size > len(order):
                order, pos = rng.permutation(train_rows), 0
            rows = np.sort(order[pos:pos + cfg.batch_size])
            pos += cfg.batch_size
            feats = _descriptors(nets, dlib_net, batch.nir[rows], batch.grids[rows])
            logits = cfg.scale * feats @ centroids[train_cls].T
            loss = F.cross_entropy(logits, torch.from_numpy(remap[batch.person[rows]]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise NirvisError(f"identity training diverged at step {step} (loss {value})")
            losses.append(value)
            step += 1
            if step % cfg.val_every == 0:
                validate()
        if step % cfg.val_every:
            validate()
        seconds = time.perf_counter() - t0
    finally:
        torch.set_num_threads(previous)
    nets.load_state_dict(best[2])
    record = {"steps": step, "seconds": round(seconds, 1), "best_step": best[1], "best_val_rank1": best[0],
              "history": history, "config": asdict(cfg)}
    model_meta = {**(meta or {}), "val_people": [batch.people[i] for i in val_cls], "preset": cfg.preset,
                  "training": {"kind": "identity", **record}, "alpha": 0.0}
    save_model(output, HallucinationModel(nets=nets.eval(), reference=dict(reference), meta=model_meta))
    atomic_write_json(Path(output) / "history.json", record)
    return record


def _face_region_stats(face: Face) -> np.ndarray:
    """Per-channel means then standard deviations of an aligned face over the template's face region inside
    its source image (the statistics of a ``"region": "face"`` reference)."""
    from nirvis.faces.align import valid_mask
    from nirvis.faces.normalize import reference_stats
    from nirvis.mining.registered import face_mask

    side = face.image.shape[0]
    return np.concatenate(reference_stats(face.image, valid_mask(face.matrix, face.meta["source_shape"], side)
                                          & face_mask(side)))


def training_data(rec, train: Sequence, *, workers: int = 1, normalize: bool = False,
                  progress: Callable[[int], None] | None = None) -> tuple[FaceBatch, np.ndarray, dict[str, Any]]:
    """What :func:`train_identity_hallucination` needs from a split's training samples
    (:class:`~nirvis.datasets.Sample`), with ``rec`` (a :class:`~nirvis.pipeline.Recognizer` with dlib's
    embedder and, ideally, a cache):

    - the aligned NIR faces of the training people who also have an aligned VIS face, prepared;
    - each such person's VIS centroid: the mean of their VIS descriptors (``rec``'s features), L2-normalised;
    - the photometric reference: the medians, over those NIR (and VIS) faces, of the face region's mean and
      standard deviation (``"region": "face"``), so that no single odd capture sets it. The NIR faces are
      normalised to it only when ``normalize`` is True; otherwise it is recorded with ``"normalize": false``
      and the faces are used as they are, in training and at inference.

    Faces that cannot be aligned are left out (the count is in the returned batch's size).
    """
    vis = [s for s in train if s.modality == "vis"]
    fs = rec.featurize(vis, workers=workers, progress=progress)
    X, ok = fs.take(vis)
    centroid: dict[str, np.ndarray] = {}
    for person in sorted({s.person for s in vis}):
        rows = [i for i, s in enumerate(vis) if s.person == person and ok[i]]
        if rows:
            c = X[rows].mean(axis=0)
            centroid[person] = c / max(float(np.linalg.norm(c)), 1e-12)
    faces, people, nir_stats = [], [], []
    for s in train:
        if s.modality != "nir" or s.person not in centroid:
            continue
        try:
            f = rec.align_sample(s)
        except (NirvisError, OSError):
            continue
        if progress:
            progress(1)
        faces.append(f)
        people.append(s.person)
        nir_stats.append(_face_region_stats(f))
    if len(set(people)) < 4:
        raise NirvisError(f"identity training needs NIR and VIS faces of at least 4 people; got {len(set(people))}")
    vis_stats = [_face_region_stats(rec.align_sample(s)) for s, o in zip(vis, ok) if o]
    nm, ns = np.median(np.array(nir_stats), axis=0)
    vs = np.median(np.array(vis_stats), axis=0)
    reference = {"nir_mean": float(nm), "nir_std": float(ns), "vis_mean": vs[:3].tolist(), "vis_std": vs[3:].tolist(),
                 "region": "face", "nir_id": "median of the training NIR faces",
                 "vis_id": "median of the training VIS faces", "normalize": bool(normalize)}
    batch = prepare_faces(faces, people, reference)
    return batch, np.stack([centroid[p] for p in batch.people]), reference
