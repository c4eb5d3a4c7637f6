"""Settings of patch mining (paper Sec. 3.1)."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["MiningConfig"]


#: Registration models, see :class:`MiningConfig`.
MOTIONS = ("translation+affine", "affine", "translation")
#: How simultaneous frames are mined, see :class:`MiningConfig`.
SIMULTANEOUS_MODES = ("geometric", "paper")
#: Where the photometric statistics are measured, see :class:`MiningConfig`.
NORM_REGIONS = ("face", "frame")


@dataclass(frozen=True)
class MiningConfig:
    """Settings of patch mining; the defaults are the paper's (Sec. 3.1) where it gives them.

    Attributes
    ----------
    size
        Side of the aligned faces (the 224x224 template).
    window
        Side of the sliding windows (paper: 60).
    stride
        Step between windows (paper: 12). With 224/60/12 there are 14 x 14 = 196 locations.
    patch
        Side of the centre crop kept after registration (paper: 40).
    min_sum, min_s1, min_s2
        Acceptance: ``s1 + s2 > min_sum`` and ``s1 >= min_s1`` and ``s2 >= min_s2`` (paper: 1, 0.4, 0.4).
    motion
        ``"translation+affine"`` (default): ECC with ``MOTION_TRANSLATION``, then refined with
        ``MOTION_AFFINE`` from that start; the affine result is kept when it converges within the bounds
        below, else the translation. ``"affine"``: ``MOTION_AFFINE`` from the identity (the paper's
        literal reading). ``"translation"``: translation only. On RAP3DF's small faces (upsampled about
        3.5x into the template, so windows are smooth) affine ECC from the identity fails on most windows;
        12 simultaneous front pairs kept 11 pairs with ``"affine"`` and 200 with the default
        (``benchmarks/mining_motion.py``, docs/BENCHMARKS.md).
    ecc_iterations, ecc_eps
        Termination of OpenCV's ``findTransformECC``: at most this many iterations (per stage), or an
        update smaller than ``ecc_eps``.
    ecc_blur
        ``gaussFiltSize`` of ``findTransformECC`` (OpenCV's default 5).
    max_shift
        A registration whose translation exceeds this many pixels is counted as failed: the 40x40 centre
        would leave the 60x60 window (margin 10).
    max_linear
        A registration whose linear part differs from the identity by more than this (max abs entry)
        is counted as failed (a degenerate or runaway warp; OpenCV does not report hitting the cap).
    min_window_std
        A window whose NIR or Y standard deviation (gray levels) is below this is flat (e.g. the black
        border of the template) and is counted as a registration failure without running ECC.
    prune_quantile
        Pruning (paper: "roughly uniform over face locations"): each window location keeps at most
        ``ceil(quantile(counts of the non-empty locations, prune_quantile))`` pairs, drawn at random with
        ``seed``. 1.0 disables pruning.
    flip
        Add the horizontal flip of every kept pair at the mirrored location (paper: 600k -> 1.2M).
    seed
        Seed of pruning and of the report's random sheet.
    simultaneous
        How a NIR frame and the VIS frame taken at the same moment (``Sample.pair_id``) are mined.
        ``"paper"`` (default): like every other pair (Sec. 3.1). ``"geometric"`` (beyond the paper): the pair
        is registered as a whole and every unbroken face window is kept (:mod:`nirvis.mining.registered`); a
        pair whose registration residual exceeds ``max_residual`` falls back to the paper's tests. It keeps
        about 7x more, better registered pairs, but a patch-MSE model trained on them hurt recognition far more
        (split 0: H 46.6 against 63.5 with the paper's pairs; docs/BENCHMARKS.md), so it is not the default.
    geometric_stride
        Step between the windows of a registered pair (denser than ``stride``: no ECC runs there).
    max_refine
        Pixels (source) around the landmark estimate of a pair's offset searched by its refinement.
    max_residual
        Mean landmark residual (source pixels) above which a simultaneous pair is not trusted as registered.
    norm_region
        Pixels whose statistics the photometric normalisation matches (Sec. 3.1): ``"frame"`` (default: all of
        the source image inside the template; backgrounds then weigh as much as faces) or ``"face"`` (the
        template's face ellipse, :func:`nirvis.mining.registered.face_mask`, inside the source image).
    """

    size: int = 224
    window: int = 60
    stride: int = 12
    patch: int = 40
    min_sum: float = 1.0
    min_s1: float = 0.4
    min_s2: float = 0.4
    motion: str = "translation+affine"
    ecc_iterations: int = 50
    ecc_eps: float = 1e-4
    ecc_blur: int = 5
    max_shift: float = 10.0
    max_linear: float = 0.25
    min_window_std: float = 1.0
    prune_quantile: float = 0.9
    flip: bool = True
    seed: int = 0
    simultaneous: str = "paper"
    geometric_stride: int = 6
    max_refine: float = 6.0
    max_residual: float = 4.0
    norm_region: str = "frame"

    def __post_init__(self) -> None:
        if not 0 < self.patch <= self.window <= self.size:
            raise ValueError(f"MiningConfig: need 0 < patch <= window <= size, got patch={self.patch}, "
                             f"window={self.window}, size={self.size}")
        if (self.window - self.patch) % 2:
            raise ValueError(f"MiningConfig: window - patch must be even to take a centre crop, got "
                             f"window={self.window}, patch={self.patch}")
        if self.stride < 1:
            raise ValueError(f"MiningConfig: stride must be >= 1, got {self.stride}")
        if self.motion not in MOTIONS:
            raise ValueError(f"MiningConfig: motion must be one of {', '.join(MOTIONS)}, got {self.motion!r}")
        if self.simultaneous not in SIMULTANEOUS_MODES:
            raise ValueError(f"MiningConfig: simultaneous must be one of {', '.join(SIMULTANEOUS_MODES)}, "
                             f"got {self.simultaneous!r}")
        if self.norm_region not in NORM_REGIONS:
            raise ValueError(f"MiningConfig: norm_region must be one of {', '.join(NORM_REGIONS)}, "
                             f"got {self.norm_region!r}")
        if self.geometric_stride < 1:
            raise ValueError(f"MiningConfig: geometric_stride must be >= 1, got {self.geometric_stride}")
        if self.ecc_iterations < 1:
            raise ValueError(f"MiningConfig: ecc_iterations must be >= 1, got {self.ecc_iterations}")
        if not 0.0 < self.prune_quantile <= 1.0:
            raise ValueError(f"MiningConfig: prune_quantile must be in (0, 1], got {self.prune_quantile}")
        for name in ("min_sum", "min_s1", "min_s2", "ecc_eps", "max_refine", "max_residual"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"MiningConfig: {name} must be a finite number, got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> MiningConfig:
        """The settings recorded in a store or manifest (entries starting with ``_`` are ignored); settings
        added since the store was written take their defaults, which are the old behaviour."""
        return cls(**{k: v for k, v in d.items() if not k.startswith("_")})

    @property
    def location_step(self) -> int:
        """Step of the grid that window locations are counted on (pruning, heatmaps): ``stride``, or with
        geometric mining the largest step that holds both window grids."""
        return math.gcd(self.stride, self.geometric_stride) if self.simultaneous == "geometric" else self.stride

    def location_grid(self) -> np.ndarray:
        """Top-left corners ``(L, 2)`` ``(y, x)`` of every window location a kept pair can have."""
        from nirvis.mining.windows import window_grid

        return window_grid(self.size, self.window, self.location_step)

    def location_indices(self) -> dict[tuple[int, int], int]:
        """``{(y, x): index in location_grid()}`` for every window location."""
        return {(y, x): i for i, (y, x) in enumerate(self.location_grid().tolist())}

    def fingerprint(self) -> str:
        """Short hash of the settings, written in the store and checked when a run resumes."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
