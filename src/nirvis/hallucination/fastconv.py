"""Fast inference of the hallucination CNNs (paper Sec. 3, Table 1): FFT convolution, lower precision.

The paper's Y network is 11 layers of 11x11 convolutions with 148/36 filters: about 2.4 M multiply-
accumulates (MAC) per pixel, and the three networks together about 0.3 TFLOP per 224x224 face. Direct
convolution spends ``k * k`` MAC per input channel, output channel and pixel. In the frequency domain a
convolution is a pointwise product, so a layer costs one complex matrix product ``(tiles, C_in) @
(C_in, C_out)`` per frequency (4 real MAC per complex MAC, about 0.7 frequencies per output pixel) plus
the FFTs of its ``C_in`` inputs and ``C_out`` outputs: for 11x11 kernels about 40x fewer multiplications,
for 5x5 about 8x. The FFTs then take most of the time (scipy's pocketfft, about 0.3 ns per
``T^2 log2(T^2)`` per transform on one core), so FFT pays only for layers with many channels:
:func:`accelerate` decides layer by layer with a cost model (:func:`fft_cost`, :func:`direct_cost`).

:class:`FFTConv2d` computes what :class:`torch.nn.Conv2d` (stride 1, 'same' zero padding, cross-
correlation) computes, by *overlap-save*: the zero-padded input is cut into overlapping ``T x T`` tiles
with stride ``S = T - k + 1``; each tile's real 2-D FFT is multiplied by the *conjugate* kernel spectra
(conjugation turns circular convolution into the cross-correlation of ``nn.Conv2d``); the first ``S x S``
samples of each tile's inverse FFT are exact outputs (the last ``k - 1`` rows and columns wrapped around
and are dropped). A layer's bias is added to the DC coefficient of every tile. Tiles keep the
per-frequency weights small: ``T (T // 2 + 1) C_in C_out`` complex numbers, 96 MB for the Y network's
148x36 layer at ``T = 66`` against 1.3 GB for one 234x234 spectrum; the spectra of the paper's networks
take about 0.7 GB in all (computed on the first call, kept).

Lower precision: ``precision="bf16"`` rounds the operands of the frequency-domain products to bfloat16
(fp32 FFTs and accumulation); :class:`BF16Conv2d` runs a direct convolution in bfloat16 (oneDNN uses the
CPU's AVX512-BF16 dot products). Both change the outputs by a few 8-bit levels (PSNR about 50 dB), so the
default is fp32; ``benchmarks/bench_hallucination.py`` reports the speed and output difference of each
variant.

Layout: FFT layers read and write channels-last (NHWC) memory; pocketfft reads the overlapping tiles through
their strides (no gathering copy), and the inverse runs in two passes, the second only on the kept rows, with
its axes ordered so that its result is already in the output layout. The layers that stay direct run on
channels-last memory too (:class:`ChannelsLastConv2d`), and a convolution with one output channel is one
matrix product plus a col2im sum (:class:`ColumnConv2d`). On the paper's networks these took the CPU time per
face from 0.96 s to 0.74 s (1 thread, ``benchmarks/bench_hallucination.py --breakdown``).

Large temporary arrays are allocated anew for every layer; on Linux (glibc), :func:`keep_freed_memory`
stops the allocator from returning them to the system, which removes the page faults of re-allocating
them: without it, FFT inference of the paper networks at batch 8 took 2.3x longer in the benchmark.
"""

from __future__ import annotations

import copy
import ctypes
import ctypes.util
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FFT_BACKENDS", "FFTConv2d", "BF16Conv2d", "ChannelsLastConv2d", "ColumnConv2d", "accelerate", "choose_tile",
           "fft_cost", "direct_cost", "column_cost", "keep_freed_memory", "PRECISIONS", "METHODS"]

#: Accepted ``precision`` values: fp32 everywhere, or bfloat16 operands.
PRECISIONS = ("fp32", "bf16")
#: Accepted ``method`` values of :func:`accelerate`.
METHODS = ("fft", "direct")

# Cost model (seconds per unit, one thread of a 2-core AVX-512 CPU, benchmarks/bench_hallucination.py
# --tiles): a complex MAC of the frequency-domain products; one real 2-D FFT (forward or inverse) per
# unit of T^2 log2(T^2) (scipy's pocketfft); one element of a tile in the copies around the FFTs
# (padding, putting outputs in place; refitted by least squares to the --tiles timings once the tiles
# were read through their strides: 3.0 ns before); a MAC of oneDNN's direct convolution, which is
# about 12x slower per MAC with a single output channel.
_MAC_S = 0.14e-9
_FFT_S = 0.30e-9
_COPY_S = 1.0e-9
_DIRECT_S = 0.025e-9
# A MAC of :class:`ColumnConv2d`'s product plus its share of the col2im sum (least-squares fit to the same
# --tiles run as _COPY_S: 148 -> 1 at 11x11 and 5x5, 66 -> 1 at 3x3).
_COLUMN_S = 0.037e-9


def _is_smooth(n: int, primes: tuple[int, ...] = (2, 3, 5, 7, 11)) -> bool:
    for p in primes:
        while n % p == 0:
            n //= p
    return n == 1


_CANDIDATES = tuple(n for n in range(8, 257) if _is_smooth(n))


def fft_cost(tile: int, size: tuple[int, int], kernel: int, c_in: int, c_out: int) -> float:
    """Modelled seconds of one :class:`FFTConv2d` layer on one ``size`` image with tile side ``tile``."""
    s = tile - kernel + 1
    tiles = math.ceil(size[0] / s) * math.ceil(size[1] / s)
    per_tile = (_MAC_S * tile * (tile // 2 + 1) * c_in * c_out
                + (_FFT_S * tile * tile * math.log2(tile * tile) + _COPY_S * tile * tile) * (c_in + c_out))
    return tiles * per_tile


def direct_cost(size: tuple[int, int], kernel: int, c_in: int, c_out: int) -> float:
    """Modelled seconds of one direct (oneDNN) convolution on one ``size`` image."""
    return _DIRECT_S * kernel * kernel * c_in * c_out * size[0] * size[1] * max(1.0, 12 / c_out)


def column_cost(size: tuple[int, int], kernel: int, c_in: int) -> float:
    """Modelled seconds of one :class:`ColumnConv2d` (``c_in -> 1``) on one ``size`` image."""
    return _COLUMN_S * kernel * kernel * c_in * size[0] * size[1]


def choose_tile(size: tuple[int, int], kernel: int, c_in: int, c_out: int, *, max_tile: int = 96,
                candidates: Sequence[int] | None = None) -> int:
    """Overlap-save tile side ``T`` for one layer and image size, by the cost model :func:`fft_cost`.

    Tiles that cover the image exactly win (224 = 4 x 56: ``T = 66`` for 11x11 kernels, ``T = 60`` for 5x5).

    Parameters
    ----------
    size
        ``(H, W)`` of the layer's input, pixels.
    kernel
        Odd kernel side ``k``.
    c_in, c_out
        Channels of the layer.
    max_tile
        Largest tile side considered (larger tiles mean few, small matrix products per frequency and
        large kernel spectra: ``T (T//2 + 1) C_in C_out`` complex64).
    candidates
        Tile sides to consider (default: numbers whose prime factors are 2, 3, 5, 7 and 11).

    Returns
    -------
    int
        The tile side, ``> kernel``.
    """
    pool = [t for t in (candidates or _CANDIDATES) if t > kernel]
    if not pool:
        raise ValueError(f"no tile side among {list(candidates or _CANDIDATES)} is larger than the kernel ({kernel})")
    limited = [t for t in pool if t <= max(max_tile, 2 * kernel + 8)] or pool
    # Past one tile covering the image, larger tiles only cost more.
    useful = [t for t in limited if t - kernel + 1 <= max(size) + 8] or [min(limited)]
    return min(useful, key=lambda t: fft_cost(t, size, kernel, c_in, c_out))


def keep_freed_memory() -> bool:
    """Ask glibc's allocator to keep freed memory for reuse instead of returning it to the system.

    FFT inference allocates and frees arrays of tens to hundreds of MB for every layer; by default glibc
    maps each with ``mmap`` and unmaps it when freed, so every layer pays page faults again. This sets
    ``M_MMAP_MAX = 0`` and a large ``M_TRIM_THRESHOLD`` (the ``MALLOC_MMAP_MAX_`` and
    ``MALLOC_TRIM_THRESHOLD_`` environment variables do the same at start-up). It affects the whole
    process: memory once used stays with it until it exits. Call it once in a program that runs
    inference (the ``nirvis hallucinate`` command does).

    Returns
    -------
    bool
        ``True`` if the settings were applied, ``False`` where there is no glibc (macOS, Windows, musl).
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))


def _check_same_conv(conv: nn.Conv2d, what: str) -> int:
    k = conv.kernel_size
    pad = conv.padding
    same = pad == "same" or tuple(pad) == (k[0] // 2, k[1] // 2)
    if (k[0] != k[1] or k[0] % 2 == 0 or tuple(conv.stride) != (1, 1) or tuple(conv.dilation) != (1, 1)
            or conv.groups != 1 or conv.padding_mode != "zeros" or not same):
        raise ValueError(f"{what} replaces only convolutions with an odd square kernel, stride 1, no dilation or "
                         f"groups and 'same' zero padding; got {conv}")
    return k[0]


FFT_BACKENDS = ("auto", "scipy", "torch")


def _use_scipy(x: torch.Tensor, backend: str) -> bool:
    return backend == "scipy" or (backend == "auto" and x.device.type == "cpu")


def _rfft2_lead(x: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Real 2-D FFT over the two leading dims of ``(t, t, ...)`` float32 (any strides, overlapping ones too)
    -> C-contiguous ``(t, t//2+1, ...)``
    complex64. ``backend="auto"``: scipy's pocketfft on the CPU (vectorised over the trailing dims,
    ``workers`` = torch's thread count; 2-4x faster than ``torch.fft`` for this layout), ``torch.fft``
    elsewhere."""
    if _use_scipy(x, backend):
        import scipy.fft

        return torch.from_numpy(scipy.fft.rfftn(x.cpu().numpy(), axes=(0, 1), workers=torch.get_num_threads())
                                ).to(x.device)
    return torch.fft.rfft2(x, dim=(0, 1)).contiguous()


def _irfft2_tiles(prod: torch.Tensor, t: int, s: int, grid: tuple[int, int, int],
                  backend: str = "auto") -> torch.Tensor:
    """Inverse of :func:`_rfft2_lead` for frequency-major tile spectra ``(t * (t//2+1), tiles, C)`` complex64,
    keeping only the exact ``s x s`` corner of each ``t x t`` tile: ``(B, nh, s, nw, s, C)`` float32 for the
    ``grid = (B, nh, nw)`` of tiles (a strided view; ``prod`` may be overwritten).

    On the CPU (scipy's pocketfft) the 2-D inverse is split in two passes so that the second runs only on the
    ``s`` rows that are kept, and its axes are ordered so that the result already has the output layout:
    about half the time of a full ``irfftn`` followed by a transposing copy."""
    b, nh, nw = grid
    tr, c = t // 2 + 1, prod.shape[-1]
    if _use_scipy(prod, backend):
        import scipy.fft

        workers = torch.get_num_threads()
        z = scipy.fft.ifft(prod.cpu().numpy().reshape(t, tr, b, nh, nw, c), axis=0, overwrite_x=True,
                           workers=workers)[:s]                                    # (s, tr, B, nh, nw, C)
        y = scipy.fft.irfft(z.transpose(2, 3, 0, 4, 1, 5), n=t, axis=4, overwrite_x=True, workers=workers)
        return torch.from_numpy(y).to(prod.device)[..., :s, :]                    # (B, nh, s, nw, s, C)
    y = torch.fft.irfft2(prod.view(t, tr, b * nh * nw, c), s=(t, t), dim=(0, 1))
    return y[:s, :s].view(s, s, b, nh, nw, c).permute(2, 3, 0, 4, 1, 5)


class FFTConv2d(nn.Module):
    """Eval-only replacement of a stride-1, 'same'-padded :class:`torch.nn.Conv2d`, computed by FFT.

    Input ``(B, C_in, H, W)`` -> output ``(B, C_out, H, W)`` float32, equal to the ``nn.Conv2d`` it was built
    from up to float rounding (about 1e-6 of the output's magnitude in fp32). Any ``H, W >= 1``.

    Parameters
    ----------
    conv
        The convolution to replace: odd square kernel ``k``, ``stride=1``, ``dilation=1``, ``groups=1``,
        ``padding_mode='zeros'`` and ``padding == k // 2`` (or ``'same'``).
    tile
        Overlap-save tile side ``T > k``; ``None`` chooses it per input size with :func:`choose_tile`.
    precision
        ``"fp32"``: complex64 products. ``"bf16"``: operands of the products rounded to bfloat16 (the
        complex product as one real matrix product on interleaved real/imaginary parts; FFTs and
        accumulation stay fp32).
    max_tiles
        At most this many tiles go through the FFTs and products at once (bounds the memory of large
        batches; images are never split).
    fft_backend
        ``"auto"`` (scipy's pocketfft on the CPU, ``torch.fft`` on other devices), ``"scipy"`` or ``"torch"``.

    Notes
    -----
    The kernel spectra are computed once per tile side, on first use, from a copy of the weights taken at
    construction (buffers, not parameters). The output is a channels-last strided view, which is what the
    next :class:`FFTConv2d` reads fastest; call ``.contiguous()`` for NCHW memory.
    """

    def __init__(self, conv: nn.Conv2d, tile: int | None = None, precision: str = "fp32", max_tiles: int = 64,
                 fft_backend: str = "auto") -> None:
        super().__init__()
        self.kernel = _check_same_conv(conv, "FFTConv2d")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if tile is not None and tile <= self.kernel:
            raise ValueError(f"tile must be larger than the kernel ({self.kernel}), got {tile}")
        if max_tiles < 1:
            raise ValueError(f"max_tiles must be >= 1, got {max_tiles}")
        if fft_backend not in FFT_BACKENDS:
            raise ValueError(f"fft_backend must be one of {FFT_BACKENDS}, got {fft_backend!r}")
        self.tile, self.precision, self.max_tiles, self.fft_backend = tile, precision, max_tiles, fft_backend
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.register_buffer("weight", conv.weight.detach().clone().float())
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().clone().float())
        self._spectra: dict[tuple[int, torch.device], torch.Tensor] = {}

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel}, tile={self.tile or 'auto'}, "
                f"precision={self.precision}")

    def _apply(self, fn, recurse=True):  # nn.Module hook (.to(), .cuda()): moved weights need new spectra
        self._spectra = {}
        return super()._apply(fn, recurse)

    def spectrum(self, t: int) -> torch.Tensor:
        """Conjugate kernel spectra for tile side ``t``, frequency-major (the batch dimension of the
        products): ``(t * (t//2 + 1), C_in, C_out)`` complex64 for fp32, or for bf16 the equivalent real
        ``(t * (t//2 + 1), 2 C_in, 2 C_out)`` bfloat16 matrix acting on interleaved (real, imaginary) pairs."""
        key = (t, self.weight.device)
        if key not in self._spectra:
            with torch.no_grad():
                k = self.kernel
                padded = self.weight.new_zeros((t, t, self.in_channels, self.out_channels))
                padded[:k, :k] = self.weight.permute(2, 3, 1, 0)
                spec = _rfft2_lead(padded, self.fft_backend)                               # (t, tr, C_in, C_out)
                spec.imag.neg_()                                                           # conjugate
                spec = spec.view(-1, self.in_channels, self.out_channels)
                if self.precision == "bf16":  # [re, im] @ [[a, b], [-b, a]] = [re a - im b, re b + im a]
                    a, b = spec.real, spec.imag
                    spec = torch.stack([torch.stack([a, b], -1), torch.stack([-b, a], -1)], 2)
                    spec = spec.reshape(-1, 2 * self.in_channels, 2 * self.out_channels).to(torch.bfloat16)
                self._spectra[key] = spec.contiguous()
        return self._spectra[key]

    def _product(self, spec: torch.Tensor, t: int) -> torch.Tensor:
        """Per-frequency ``X @ conj(W)``: ``(F, tiles, C_in)`` -> ``(F, tiles, C_out)`` complex64."""
        w = self.spectrum(t)
        if self.precision == "fp32":
            return torch.bmm(spec, w)
        f, n, _ = spec.shape
        out = torch.bmm(torch.view_as_real(spec).view(f, n, 2 * self.in_channels).to(torch.bfloat16), w)
        return torch.view_as_complex(out.to(torch.float32).view(f, n, self.out_channels, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W)`` -> ``(B, C_out, H, W)`` float32 (channels-last strides)."""
        if torch.is_grad_enabled() and x.requires_grad:
            raise RuntimeError("FFTConv2d is for inference only (no gradients); train with nn.Conv2d")
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"FFTConv2d expects (B, {self.in_channels}, H, W), got shape {tuple(x.shape)}")
        b, c, h, w = x.shape
        k, co = self.kernel, self.out_channels
        t = self.tile or choose_tile((h, w), k, c, co)
        s, p, tr = t - k + 1, k // 2, t // 2 + 1
        nh, nw = math.ceil(h / s), math.ceil(w / s)
        # Channels-last, zero-padded input: 'same' padding, plus zeros so that the tiles cover the image.
        xp = torch.empty((b, nh * s + k - 1, nw * s + k - 1, c), dtype=torch.float32, device=x.device)
        xp[:, :p].zero_()
        xp[:, p + h:].zero_()
        xp[:, p:p + h, :p].zero_()
        xp[:, p:p + h, p + w:].zero_()
        xp[:, p:p + h, p:p + w] = x.permute(0, 2, 3, 1)
        out = torch.empty((b, nh, s, nw, s, co), dtype=torch.float32, device=x.device)
        step = max(1, self.max_tiles // (nh * nw))
        for b0 in range(0, b, step):
            bc = min(step, b - b0)
            n = bc * nh * nw
            # Overlapping t x t tiles with stride s as (t, t, tiles, C): the FFT runs over the leading dims
            # and leaves the spectra frequency-major, (t * tr, tiles, C), as the batched products need.
            # pocketfft reads the overlapping tiles through their strides: no gathering copy.
            tiles = xp[b0:b0 + bc].unfold(1, t, s).unfold(2, t, s).permute(4, 5, 0, 1, 2, 3)
            spec = _rfft2_lead(tiles, self.fft_backend).view(t * tr, n, c)
            del tiles
            prod = self._product(spec, t)                                            # (t * tr, tiles, C_out)
            del spec
            if self.bias is not None:  # a constant is the DC coefficient of each tile (irfft2 divides by t^2)
                prod[0] += self.bias * (t * t)
            # The first s x s samples of each tile are exact; the other k - 1 rows and columns wrapped around.
            out[b0:b0 + bc] = _irfft2_tiles(prod, t, s, (bc, nh, nw), self.fft_backend)
            del prod
        return out.view(b, nh * s, nw * s, co)[:, :h, :w].permute(0, 3, 1, 2)


def _frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy in eval mode with ``requires_grad`` off (the original stays trainable)."""
    out = copy.deepcopy(module).eval()
    for prm in out.parameters():
        prm.requires_grad_(False)
    return out


class BF16Conv2d(nn.Module):
    """Eval-only direct convolution in bfloat16: ``(B, C_in, H, W)`` float32 -> ``(B, C_out, H, W)`` float32.

    The input and weights are rounded to bfloat16 (8 significant bits); oneDNN accumulates in fp32 and
    uses AVX512-BF16 / AMX dot products where the CPU has them (about 2x the fp32 speed on AVX512-BF16).
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = _frozen_copy(conv).to(torch.bfloat16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.to(torch.bfloat16)).to(torch.float32)


class ChannelsLastConv2d(nn.Module):
    """Eval-only direct convolution on channels-last (NHWC) memory: ``(B, C_in, H, W)`` -> ``(B, C_out, H, W)``
    float32 with channels-last strides, the layout :class:`FFTConv2d` reads and writes without transposing.

    Same arithmetic as the wrapped :class:`torch.nn.Conv2d` (oneDNN picks its NHWC kernels; outputs agree to
    float rounding). Benchmarked on 224x224 faces (1 thread, ``bench_hallucination.py --tiles``): the 1 -> 148
    first layers 1.3x (11x11) and 1.7x (5x5) and the 3x3 Cb layers 1.1-1.3x faster than on NCHW, and the next
    FFT layer skips a transposing copy.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = _frozen_copy(conv).to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # oneDNN's NHWC kernels keep the layout; a few other paths (1x1 kernels) return NCHW, made NHWC here.
        return self.conv(x.contiguous(memory_format=torch.channels_last)).contiguous(memory_format=torch.channels_last)


class ColumnConv2d(nn.Module):
    """Eval-only convolution with **one output channel** as one matrix product and a col2im sum.

    A ``C_in -> 1`` convolution with a ``k x k`` kernel is ``k^2`` weighted sums over the input channels, one
    per kernel tap, each shifted into place: a ``(k^2, C_in) @ (B, C_in, H W)`` matrix product (BLAS speed,
    where a direct convolution with one output channel runs at a small fraction of it), then
    :func:`torch.nn.functional.fold` adds the ``k^2`` shifted planes. The taps are flipped because ``fold``
    scatters each column into its block where the convolution gathers. Same result as the wrapped
    :class:`torch.nn.Conv2d` (stride 1, 'same' zero padding) to float rounding. Benchmarked
    (``bench_hallucination.py --tiles --threads 1``, ms per 224x224 face, 148 -> 1): 5x5 12.5 against 66.0
    direct and 54.6 :class:`FFTConv2d`; 11x11 32.0 against 268.4 direct and 65.5 :class:`FFTConv2d`.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.kernel = _check_same_conv(conv, "ColumnConv2d")
        if conv.out_channels != 1:
            raise ValueError(f"ColumnConv2d replaces convolutions with one output channel, got {conv.out_channels}")
        self.in_channels = conv.in_channels
        k = self.kernel
        taps = conv.weight.detach()[0].flip(1, 2).reshape(self.in_channels, k * k).t()
        self.register_buffer("taps", taps.float().clone().contiguous())                  # (k^2, C_in)
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().clone().float())

    def extra_repr(self) -> str:
        return f"{self.in_channels}, 1, kernel_size={self.kernel}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W)`` (channels-last strides are read without a copy) -> ``(B, 1, H, W)`` float32."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"ColumnConv2d expects (B, {self.in_channels}, H, W), got shape {tuple(x.shape)}")
        b, c, h, w = x.shape
        k = self.kernel
        # (k^2, C) @ (B, C, H W): the product writes the tap-major columns that fold reads fastest.
        cols = self.taps @ x.permute(0, 2, 3, 1).reshape(b, h * w, c).transpose(1, 2)   # (B, k^2, H W)
        out = F.fold(cols, (h, w), k, padding=k // 2)                                   # (B, 1, H, W)
        return out if self.bias is None else out + self.bias.view(1, 1, 1, 1)


def _fast_conv(conv: nn.Conv2d, size: tuple[int, int], min_kernel: int, policy: str, tile: int | None,
               precision: str, direct_precision: str) -> nn.Module:
    """The cheapest modelled replacement of one convolution for ``method="fft"``."""
    k, ci, co = conv.kernel_size[0], conv.in_channels, conv.out_channels
    costs = {"direct": direct_cost(size, k, ci, co)}
    if k >= min_kernel:
        if policy == "all":
            return FFTConv2d(conv, tile=tile, precision=precision)
        costs["fft"] = fft_cost(tile or choose_tile(size, k, ci, co), size, k, ci, co)
    if co == 1:
        costs["column"] = column_cost(size, k, ci)
    best = min(costs, key=costs.get)
    if best == "fft":
        return FFTConv2d(conv, tile=tile, precision=precision)
    if best == "column":
        return ColumnConv2d(conv)
    return BF16Conv2d(conv) if direct_precision == "bf16" else ChannelsLastConv2d(conv)


def _replace_convs(module: nn.Module, size: tuple[int, int], min_kernel: int, policy: str, tile: int | None,
                   precision: str, direct_precision: str, fft: bool) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.Conv2d) and tuple(child.dilation) != (1, 1):
            continue  # dilated convolutions (the cpu presets' middle layers) stay stock PyTorch
        if isinstance(child, nn.Conv2d):
            if fft:
                setattr(module, name, _fast_conv(child, size, min_kernel, policy, tile, precision, direct_precision))
            elif direct_precision == "bf16":
                setattr(module, name, BF16Conv2d(child))
        else:
            _replace_convs(child, size, min_kernel, policy, tile, precision, direct_precision, fft)


def accelerate(nets: nn.Module, method: str = "fft", *, min_kernel: int = 5, policy: str = "auto",
               size: tuple[int, int] = (224, 224), tile: int | None = None, precision: str = "fp32",
               direct_precision: str = "fp32") -> nn.Module:
    """An eval-only copy of ``nets`` (e.g. :class:`~nirvis.hallucination.nets.HallucinationNets`) for fast
    inference (paper Sec. 3: the CNNs run on whole 224x224 faces).

    Parameters
    ----------
    nets
        The networks; not modified.
    method
        ``"fft"``: each convolution becomes the cheapest of :class:`FFTConv2d` (kernel side at least
        ``min_kernel``), :class:`ColumnConv2d` (one output channel) and a direct convolution on channels-last
        memory (:class:`ChannelsLastConv2d`), by the cost model at ``size``. ``"direct"``: every
        convolution stays the stock PyTorch one (NCHW).
    min_kernel
        Smallest kernel side computed by FFT (default 5: the paper's Y (11x11) and Cr (5x5) networks).
    policy
        ``"auto"``: by the cost model (:func:`fft_cost`, :func:`column_cost`, :func:`direct_cost`); for the
        paper's networks every 11x11 and 5x5 layer is FFT but the first (one input channel, cheap direct)
        and the last (one output channel, column); Cb (3x3) is direct but its last layer (column). ``"all"``:
        FFT for every convolution with a kernel of at least ``min_kernel``, the cost model for the others.
    size
        Face size ``(H, W)`` the ``"auto"`` policy plans for (any size still works).
    tile
        Overlap-save tile side of every FFT layer; ``None`` chooses per layer and input size.
    precision
        ``"fp32"`` or ``"bf16"`` operands of the frequency-domain products (``method="fft"``).
    direct_precision
        ``"fp32"`` (stock) or ``"bf16"`` (:class:`BF16Conv2d`) for the convolutions that stay direct.

    Returns
    -------
    torch.nn.Module
        A deep copy in eval mode with ``requires_grad`` off, on the same device.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if policy not in ("auto", "all"):
        raise ValueError(f"policy must be 'auto' or 'all', got {policy!r}")
    for label, value in (("precision", precision), ("direct_precision", direct_precision)):
        if value not in PRECISIONS:
            raise ValueError(f"{label} must be one of {PRECISIONS}, got {value!r}")
    if min_kernel < 1:
        raise ValueError(f"min_kernel must be >= 1, got {min_kernel}")
    out = _frozen_copy(nets)
    _replace_convs(out, tuple(size), min_kernel, policy, tile, precision, direct_precision, method == "fft")
    return out
