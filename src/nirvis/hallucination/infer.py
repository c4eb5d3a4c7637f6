"""Cross-spectral hallucination of aligned NIR faces (paper Sec. 3): NIR -> Y, Cb, Cr -> eq. (1) -> RGB.

Steps, for a batch of aligned ``224 x 224`` NIR faces:

1. Photometric normalisation to the model's reference (paper Sec. 3.1), exactly as mining did:
   ``match_mean_std(nir, reference["nir_mean"], reference["nir_std"], mask=valid)`` to uint8, with the
   mask limited to the template's face region when the reference was measured there (``"region": "face"``).
2. ``/ 255`` and the three CNNs (fully convolutional, on the whole face; :mod:`.fastconv` for speed).
   Their outputs are OpenCV's YCrCb channels / 255, as the training targets were.
3. Equation (1) on the luminance, in [0, 1] units (:mod:`.blend`), then clipping to [0, 1].
4. ``COLOR_YCrCb2RGB`` (OpenCV, 8-bit) for the recognition network.

:class:`Hallucinator` does this on arrays; :class:`HallucinatedFaces` applies it to aligned
:class:`~nirvis.faces.types.Face` records (a :class:`~nirvis.pipeline.FaceTransform` for NIR probes).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from numbers import Integral
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from nirvis.errors import NirvisError
from nirvis.faces.normalize import match_mean_std
from nirvis.hallucination.blend import BlendConfig, blend_luminance, ycrcb_to_rgb
from nirvis.hallucination.fastconv import METHODS, PRECISIONS, accelerate, keep_freed_memory
from nirvis.hallucination.io import HallucinationModel, check_reference, load_model

if TYPE_CHECKING:
    from nirvis.faces.types import Face

__all__ = ["Hallucinator", "Hallucination", "HallucinatedFaces", "HallucinationInputError", "face_inputs"]

#: Value of a chroma plane that has no network (gray), 8-bit units.
NEUTRAL_CHROMA = 128


class HallucinationInputError(NirvisError, ValueError):
    """The NIR faces (or their masks) given to a :class:`Hallucinator` have the wrong type or shape."""


@dataclass(frozen=True)
class Hallucination:
    """Result of :meth:`Hallucinator.hallucinate` for ``B`` faces of ``H x W`` pixels.

    Attributes
    ----------
    nir
        ``(B, H, W)`` uint8, the photometrically normalised NIR faces the networks saw.
    y_raw, cb, cr
        ``(B, H, W)`` float32, the networks' outputs in [0, 1] (8-bit YCrCb value / 255), unclipped.
        A channel without a network is 128/255 (chroma) or the normalised NIR (luminance).
    y
        ``(B, H, W)`` float32 in [0, 1]: ``y_raw`` blended with the NIR by equation (1), clipped.
    rgb
        ``(B, H, W, 3)`` uint8 RGB of (``y``, ``cr``, ``cb``): the hallucinated VIS face.
    rgb_raw
        ``(B, H, W, 3)`` uint8 RGB of (``y_raw``, ``cr``, ``cb``): the CNN output before blending, computed
        on first use (only sheets show it).
    """

    nir: np.ndarray
    y_raw: np.ndarray
    cb: np.ndarray
    cr: np.ndarray
    y: np.ndarray
    rgb: np.ndarray

    @functools.cached_property
    def rgb_raw(self) -> np.ndarray:
        return ycrcb_to_rgb(self.y_raw * 255.0, self.cr * 255.0, self.cb * 255.0)

    def __len__(self) -> int:
        return len(self.nir)


class Hallucinator:
    """NIR faces -> hallucinated VIS faces (paper Sec. 3), batched.

    Parameters
    ----------
    model
        A :class:`~nirvis.hallucination.io.HallucinationModel` or the path of a model folder
        (``weights.safetensors`` + ``config.json``, read by :func:`~nirvis.hallucination.io.load_model`).
    blend
        Equation (1) settings; default ``BlendConfig()`` (α = 0.6, σ = 1, Laplacian of Gaussian). ``None``
        skips blending (``y`` is the clipped ``y_raw``).
    method
        ``"fft"`` (:func:`~nirvis.hallucination.fastconv.accelerate`: 11x11 and 5x5 convolutions by FFT,
        several times faster on a CPU) or ``"direct"`` (stock PyTorch convolutions).
    precision
        ``"fp32"``, or ``"bf16"`` operands (FFT products and direct convolutions): faster on CPUs with
        AVX512-BF16, about 1e-3 of the output range away from fp32.
    batch_size
        Faces per forward pass. With the paper's networks and ``method="fft"``, batch 8 runs at about
        1 CPU-second per 224x224 face and peaks near 3 GB of memory (0.7 GB of it kernel spectra).
    device
        Torch device of the networks (``"cpu"``, ``"cuda"``, ...).
    threads
        Torch (and FFT) threads during :meth:`hallucinate`; ``None`` keeps torch's setting. The previous
        setting is restored afterwards.
    keep_memory
        With ``method="fft"`` on the CPU, call :func:`~nirvis.hallucination.fastconv.keep_freed_memory`:
        glibc then keeps freed memory for reuse instead of unmapping it, which makes FFT inference about
        2x faster at batch 8 (the temporaries of every layer are not page-faulted in again). This is a
        process-wide allocator setting (the process keeps its peak memory until it exits); pass ``False``
        to leave the allocator alone.

    Examples
    --------
    >>> hal = Hallucinator("models/hallucination")          # doctest: +SKIP
    >>> out = hal.hallucinate(aligned_nir_faces)            # doctest: +SKIP
    >>> out.rgb.shape                                       # doctest: +SKIP
    (8, 224, 224, 3)
    """

    def __init__(self, model: HallucinationModel | str | os.PathLike, blend: BlendConfig | None = BlendConfig(),
                 method: str = "fft", *, precision: str = "fp32", batch_size: int = 8, device: str = "cpu",
                 threads: int | None = None, keep_memory: bool = True) -> None:
        import torch

        if method not in METHODS:
            raise ValueError(f"Hallucinator: method must be one of {METHODS}, got {method!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"Hallucinator: precision must be one of {PRECISIONS}, got {precision!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, Integral) or batch_size < 1:
            raise ValueError(f"Hallucinator: batch_size must be an int >= 1, got {batch_size!r}")
        if threads is not None and threads < 1:
            raise ValueError(f"Hallucinator: threads must be >= 1 or None, got {threads}")
        try:
            dev = torch.device(device)
            torch.empty(0, device=dev)  # an unknown, unbuilt or absent device fails here, not mid-run
        except (RuntimeError, AssertionError, NotImplementedError) as exc:
            raise ValueError(f"Hallucinator: device {device!r} is not usable here ({str(exc).splitlines()[0]})"
                             ) from None
        if dev.type == "meta":
            raise ValueError("Hallucinator: device 'meta' holds no data; use cpu or cuda")
        if not isinstance(model, HallucinationModel):
            model = load_model(Path(model), device=device)
        try:  # checked by load_model for saved models; a model built in memory is checked here
            check_reference(model.reference)
        except (KeyError, TypeError, ValueError) as exc:
            raise HallucinationInputError(f"Hallucinator: the model's photometric reference is unusable "
                                          f"({type(exc).__name__}: {exc})") from None
        self.model = model
        self.blend = blend
        self.method = method
        self.precision = precision
        self.batch_size = int(batch_size)
        self.device = dev
        self.threads = threads
        self.nets = accelerate(model.nets, method, precision=precision, direct_precision=precision).to(self.device)
        if keep_memory and method == "fft" and self.device.type == "cpu":
            keep_freed_memory()
        self._fingerprint: str | None = None

    @property
    def channels(self) -> tuple[str, ...]:
        """The networks of the model, among ``("y", "cb", "cr")``."""
        return tuple(self.model.nets.channels)

    @property
    def min_size(self) -> int:
        """Smallest face side accepted: the largest kernel of the networks."""
        return max(s.kernel for s in self.model.nets.specs.values())

    @property
    def fingerprint(self) -> str:
        """Digest of everything that determines the output: the model (weights, reference), the blend and the
        arithmetic (method, precision). Features of hallucinated faces must be cached under it."""
        if self._fingerprint is None:
            blob = json.dumps({"model": self.model.fingerprint, "blend": None if self.blend is None else
                               self.blend.to_dict(), "method": self.method, "precision": self.precision,
                               "version": 1}, sort_keys=True)
            self._fingerprint = hashlib.sha256(blob.encode()).hexdigest()[:16]
        return self._fingerprint

    def _check(self, nir: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        arr = nir if isinstance(nir, np.ndarray) else None
        if arr is None:
            raise HallucinationInputError(f"Hallucinator: NIR faces must be a numpy array, got {type(nir).__name__}")
        if arr.dtype != np.uint8:
            raise HallucinationInputError(f"Hallucinator: NIR faces must be uint8 (8-bit), got dtype {arr.dtype}")
        if arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.shape[0] > 4:
            raise HallucinationInputError(f"Hallucinator: got shape {arr.shape}, which looks like one colour image; "
                                          "NIR faces are gray: convert to gray first (e.g. cv2.COLOR_RGB2GRAY)")
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3:
            raise HallucinationInputError(f"Hallucinator: NIR faces must be (H, W) or (B, H, W) gray, got shape "
                                          f"{nir.shape}")
        if arr.shape[0] == 0:
            raise HallucinationInputError("Hallucinator: got a batch of 0 faces")
        if min(arr.shape[1:]) < self.min_size:
            raise HallucinationInputError(f"Hallucinator: faces of {arr.shape[1]}x{arr.shape[2]} pixels are smaller "
                                          f"than the networks' {self.min_size}x{self.min_size} kernels; give "
                                          "aligned 224x224 faces")
        if valid is None:
            return arr, None
        mask = np.asarray(valid)
        if mask.ndim == 2:
            mask = mask[None]
        if mask.dtype != bool or mask.shape != arr.shape:
            raise HallucinationInputError(f"Hallucinator: valid must be a bool mask of the faces' shape {arr.shape}, "
                                          f"got {mask.dtype} {np.shape(valid)}")
        empty = [i for i in range(len(mask)) if not mask[i].any()]
        if empty:
            raise HallucinationInputError(f"Hallucinator: the valid masks of faces {empty[:10]} select no pixel")
        return arr, mask

    def normalize(self, nir: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """Photometric normalisation to the model's reference (paper Sec. 3.1), as in mining: ``(B, H, W)``
        or ``(H, W)`` uint8 -> same shape uint8. ``valid``: bool masks of the pixels whose statistics count."""
        arr, mask = self._check(nir, valid)
        out = self._normalize(arr, mask)
        return out if np.ndim(nir) == 3 else out[0]

    def _normalize(self, arr: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        ref = self.model.reference
        if ref.get("normalize", True) is False:  # a model trained on the NIR faces as they are (e.g. H(id))
            return arr.copy()
        if ref.get("region", "frame") == "face":  # statistics of the face region, as the store's mining measured them
            from nirvis.mining.registered import face_mask

            face = face_mask(arr.shape[1]) if arr.shape[1] == arr.shape[2] else np.ones(arr.shape[1:], bool)
            mask = np.broadcast_to(face, arr.shape) if mask is None else mask & face
            mask = np.where(mask.any(axis=(1, 2))[:, None, None], mask, True)  # never an empty selection
        return np.stack([match_mean_std(im, ref["nir_mean"], ref["nir_std"], mask=None if mask is None else mask[i])
                         for i, im in enumerate(arr)])

    def _forward(self, x01: np.ndarray) -> np.ndarray:
        """``(B, H, W)`` float32 in [0, 1] -> ``(B, C, H, W)`` float32 network outputs, in batches."""
        import torch

        outs = []
        with torch.inference_mode():
            for i in range(0, len(x01), self.batch_size):
                x = torch.from_numpy(np.ascontiguousarray(x01[i:i + self.batch_size]))[:, None].to(self.device)
                outs.append(self.nets(x).float().cpu().numpy())
        return np.concatenate(outs)

    def hallucinate(self, nir: np.ndarray, valid: np.ndarray | None = None) -> Hallucination:
        """Hallucinate VIS faces from aligned NIR faces (paper Sec. 3, eq. (1)).

        Parameters
        ----------
        nir
            ``(B, H, W)`` or ``(H, W)`` uint8 aligned NIR faces (224x224 for the paper's template; any size
            of at least the kernel works, the networks being fully convolutional).
        valid
            Optional bool masks of the same shape: the pixels inside the source image (the rest is the
            alignment warp's black fill). Only they count in the photometric statistics, as in mining.

        Returns
        -------
        Hallucination
            Always batched (``B = 1`` for a single ``(H, W)`` face).

        Raises
        ------
        HallucinationInputError
            On a wrong dtype, a colour image, a wrong rank, faces smaller than the kernels, or masks of the
            wrong shape.
        """
        import torch

        norm = self._normalize(*self._check(nir, valid))
        x01 = norm.astype(np.float32) / 255.0
        previous = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        try:
            out = self._forward(x01)
        finally:
            if self.threads is not None:
                torch.set_num_threads(previous)
        planes = {c: out[:, k] for k, c in enumerate(self.channels)}
        neutral = np.full(x01.shape, NEUTRAL_CHROMA / 255.0, np.float32)
        y_raw = planes.get("y", x01)
        cb, cr = planes.get("cb", neutral), planes.get("cr", neutral)
        y = y_raw if self.blend is None else blend_luminance(y_raw, x01, self.blend)
        y = np.clip(y, 0.0, 1.0).astype(np.float32)
        rgb = ycrcb_to_rgb(y * 255.0, cr * 255.0, cb * 255.0)
        return Hallucination(nir=norm, y_raw=y_raw, cb=cb, cr=cr, y=y, rgb=rgb)


class HallucinatedFaces:
    """Aligned NIR :class:`~nirvis.faces.types.Face` records -> the same faces with the hallucinated RGB image.

    A :class:`~nirvis.pipeline.FaceTransform`: ``fingerprint`` is the hallucinator's, so that cached features
    of hallucinated probes are keyed by the model and blend settings. The landmarks, anchors and alignment
    matrix are kept (hallucination does not move the face); ``meta["hallucination"]`` records the
    fingerprint. When a face's ``meta`` has its ``source_shape``, the pixels inside the source image are
    used for the photometric statistics, as in mining.
    """

    def __init__(self, hallucinator: Hallucinator) -> None:
        self.hallucinator = hallucinator

    @property
    def fingerprint(self) -> str:
        """The hallucinator's fingerprint (model weights and blend settings)."""
        return self.hallucinator.fingerprint

    def __call__(self, faces: Sequence[Face]) -> list[Face]:
        """Hallucinate a batch of aligned NIR faces of one size; raises :class:`HallucinationInputError`."""
        faces = list(faces)
        if not faces:
            return []
        out = self.hallucinator.hallucinate(*face_inputs(faces))
        return [replace(f, image=out.rgb[i], meta={**f.meta, "hallucination": self.fingerprint})
                for i, f in enumerate(faces)]


def face_inputs(faces: Sequence[Face]) -> tuple[np.ndarray, np.ndarray]:
    """``(gray, valid)`` of aligned NIR faces of one size, as :meth:`Hallucinator.hallucinate` takes them: the
    gray faces ``(B, H, W)`` and the masks of their pixels inside the source image (all pixels when a face's
    ``meta`` has no ``source_shape``); raises :class:`HallucinationInputError`."""
    from nirvis.faces.align import as_gray, valid_mask

    gray = [as_gray(f.image, f.source) for f in faces]
    shapes = {g.shape for g in gray}
    if len(shapes) != 1:
        raise HallucinationInputError(f"HallucinatedFaces: faces of different sizes {sorted(shapes)}")
    masks = [valid_mask(f.matrix, f.meta["source_shape"], g.shape[0]) if min(f.meta.get("source_shape", (0,))) > 0
             else np.ones(g.shape, bool) for f, g in zip(faces, gray)]
    return np.stack(gray), np.stack(masks)
