"""FFT convolution (overlap-save) against torch's nn.Conv2d, layer by layer and on whole networks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nirvis.hallucination.fastconv import (BF16Conv2d, ChannelsLastConv2d, ColumnConv2d, FFTConv2d, accelerate,
                                          choose_tile)
from nirvis.hallucination.nets import ChannelNetSpec, HallucinationNets


def _conv(cin: int, cout: int, k: int, bias: bool = True, seed: int = 0) -> nn.Conv2d:
    torch.manual_seed(seed)
    return nn.Conv2d(cin, cout, k, padding=k // 2, bias=bias).eval()


@pytest.mark.parametrize("k, cin, cout, b, h, w, tile, bias", [
    (11, 3, 5, 2, 37, 29, None, True),   # odd sizes, batch > 1
    (11, 2, 3, 1, 5, 7, None, False),    # image smaller than the kernel
    (5, 4, 6, 3, 41, 40, 16, True),      # small tile: many tiles, exact borders between them
    (3, 2, 3, 2, 9, 10, 4, True),        # smallest tile
    (1, 3, 2, 1, 6, 5, None, True),      # 1x1 kernel
    (7, 1, 4, 4, 23, 31, 20, True),      # first-layer shape
])
def test_fftconv_matches_conv2d(k: int, cin: int, cout: int, b: int, h: int, w: int, tile: int | None,
                                bias: bool) -> None:
    conv = _conv(cin, cout, k, bias)
    x = torch.randn(b, cin, h, w)
    with torch.no_grad():
        ref = conv(x)
        out = FFTConv2d(conv, tile=tile)(x)
    assert out.shape == ref.shape and out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def test_fftconv_chunks_and_bf16() -> None:
    conv = _conv(6, 5, 5)
    x = torch.randn(5, 6, 30, 33)
    with torch.no_grad():
        ref = conv(x)
        torch.testing.assert_close(FFTConv2d(conv, tile=16, max_tiles=7)(x), ref, atol=1e-4, rtol=1e-4)
        low = FFTConv2d(conv, precision="bf16")(x)
        direct_low = BF16Conv2d(conv)(x)
    scale = ref.abs().max()
    assert (low - ref).abs().max() < 2e-2 * scale and (low - ref).abs().max() > 0  # bf16 really used
    assert (direct_low - ref).abs().max() < 2e-2 * scale and direct_low.dtype == torch.float32


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_torch_fft_backend(precision: str) -> None:
    """The torch.fft path (used on GPUs) gives the same result as scipy's pocketfft (used on CPUs)."""
    conv = _conv(3, 4, 5)
    x = torch.randn(2, 3, 19, 23)
    with torch.no_grad():
        ref = conv(x)
        out = FFTConv2d(conv, tile=12, precision=precision, fft_backend="torch")(x)
    torch.testing.assert_close(out, ref, atol=1e-4 if precision == "fp32" else 5e-2, rtol=1e-3)


def test_whole_network_matches() -> None:
    specs = {"y": ChannelNetSpec(layers=5, wide=6, narrow=4, kernel=11, residual=True),
             "cb": ChannelNetSpec(layers=4, wide=5, narrow=3, kernel=3),
             "cr": ChannelNetSpec(layers=4, wide=6, narrow=4, kernel=5)}
    torch.manual_seed(1)
    nets = HallucinationNets(specs).eval()
    x = torch.rand(3, 1, 45, 38)
    fast = accelerate(nets, "fft", policy="all")
    kinds = {c: type(fast.nets[c].body[0]).__name__ for c in ("y", "cb", "cr")}
    assert kinds == {"y": "FFTConv2d", "cb": "ChannelsLastConv2d", "cr": "FFTConv2d"}  # min_kernel=5: 3x3 direct
    with torch.inference_mode():
        ref = nets(x)
        torch.testing.assert_close(fast(x), ref, atol=1e-4, rtol=1e-4)
        all_fft = accelerate(nets, "fft", min_kernel=1, policy="all", tile=24)
        torch.testing.assert_close(all_fft(x), ref, atol=1e-4, rtol=1e-4)
    assert isinstance(nets.nets["y"].body[0], nn.Conv2d) and nets.training is False  # original untouched
    assert all(not p.requires_grad for p in fast.parameters()) and not fast.training


def test_paper_preset_auto_policy_and_small_face() -> None:
    torch.manual_seed(2)
    nets = HallucinationNets("paper").eval()
    fast = accelerate(nets)  # planned for 224x224 faces by the cost model
    letter = {FFTConv2d: "F", ChannelsLastConv2d: "d", ColumnConv2d: "c"}
    kinds = {c: "".join(letter[type(m)] for m in fast.nets[c].body if not isinstance(m, nn.PReLU))
             for c in ("y", "cb", "cr")}
    # The first layers (one input channel) are cheap direct, 3x3 stays direct, and the 1-channel outputs are
    # cheapest as one matrix product (column).
    assert kinds == {"y": "d" + "F" * 9 + "c", "cb": "d" * 6 + "c", "cr": "d" + "F" * 6 + "c"}
    x = torch.rand(1, 1, 14, 17)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), nets(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("k, cin, bias, channels_last", [(5, 7, True, True), (3, 4, False, False), (1, 3, True, False)])
def test_column_and_channels_last_convs_match_conv2d(k: int, cin: int, bias: bool, channels_last: bool) -> None:
    last = _conv(cin, 1, k, bias, seed=3)
    first = _conv(1, cin, k, bias, seed=4)
    x = torch.randn(2, cin, 13, 9)
    if channels_last:  # what an FFTConv2d layer hands on
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(ColumnConv2d(last)(x), last(x), atol=1e-5, rtol=1e-5)
        img = torch.randn(2, 1, 13, 9)
        out = ChannelsLastConv2d(first)(img)
        torch.testing.assert_close(out, first(img), atol=1e-5, rtol=1e-5)
    assert out.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="one output channel, got 2"):
        ColumnConv2d(_conv(3, 2, 3))
    with pytest.raises(ValueError, match=rf"expects \(B, {cin}, H, W\), got shape \(1, {cin + 1}, 5, 5\)"):
        ColumnConv2d(last)(torch.zeros(1, cin + 1, 5, 5))


def test_direct_method_and_bf16_direct() -> None:
    nets = HallucinationNets({"y": ChannelNetSpec(layers=4, wide=3, narrow=2, kernel=3, residual=True)}, channels=("y",))
    direct = accelerate(nets, "direct")
    assert isinstance(direct.nets["y"].body[0], nn.Conv2d)
    low = accelerate(nets, "direct", direct_precision="bf16")
    assert isinstance(low.nets["y"].body[0], BF16Conv2d)
    x = torch.rand(2, 1, 12, 12)
    with torch.inference_mode():
        assert (low(x) - nets(x)).abs().max() < 2e-2


def test_errors() -> None:
    with pytest.raises(ValueError, match="stride 1"):
        FFTConv2d(nn.Conv2d(2, 2, 3, stride=2, padding=1))
    with pytest.raises(ValueError, match="odd square kernel"):
        FFTConv2d(nn.Conv2d(2, 2, 4, padding=2))
    with pytest.raises(ValueError, match="'same' zero padding"):
        FFTConv2d(nn.Conv2d(2, 2, 3, padding=0))
    with pytest.raises(ValueError, match="tile must be larger than the kernel \\(5\\), got 5"):
        FFTConv2d(_conv(1, 1, 5), tile=5)
    with pytest.raises(ValueError, match="precision must be one of"):
        FFTConv2d(_conv(1, 1, 5), precision="fp16")
    with pytest.raises(ValueError, match="fft_backend must be one of .*'fftw'"):
        FFTConv2d(_conv(1, 1, 5), fft_backend="fftw")
    with pytest.raises(ValueError, match="method must be one of .*'winograd'"):
        accelerate(nn.Sequential(), "winograd")
    f = FFTConv2d(_conv(2, 3, 3))
    with pytest.raises(ValueError, match=r"expects \(B, 2, H, W\), got shape \(1, 3, 8, 8\)"):
        f(torch.zeros(1, 3, 8, 8))
    with pytest.raises(RuntimeError, match="inference only"):
        f(torch.zeros(1, 2, 8, 8, requires_grad=True))


def test_choose_tile() -> None:
    # 224 = 4 x 56: the tiles of the paper's layers cover the face exactly.
    assert choose_tile((224, 224), 11, 148, 36) == 66
    assert choose_tile((224, 224), 5, 148, 48) == 60
    for k in (3, 5, 11):
        assert choose_tile((7, 9), k, 4, 4) > k


def test_dilated_layers_widen_the_field_and_stay_stock_convolutions() -> None:
    spec = ChannelNetSpec(layers=7, wide=4, narrow=4, kernel=3, residual=True, dilation=4)
    assert spec.dilations() == [1, 1, 4, 4, 4, 1, 1]
    assert spec.receptive_field() == 1 + 2 * 4 + 2 * 4 * 3 == 33
    assert ChannelNetSpec(layers=5, wide=4, narrow=4, kernel=3).receptive_field() == 11
    torch.manual_seed(0)
    nets = HallucinationNets({"y": spec}, channels=("y",)).eval()
    x = torch.rand(2, 1, 64, 48)
    with torch.no_grad():
        ref = nets(x)
        assert ref.shape == x.shape  # 'same' padding with the dilation
        fast = accelerate(nets, "fft", size=(64, 48))
        dilated = [m for m in fast.modules() if isinstance(m, nn.Conv2d) and m.dilation != (1, 1)]
        assert len(dilated) == 3
        torch.testing.assert_close(fast(x), ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="dilation must be >= 1"):
        ChannelNetSpec(layers=5, wide=4, narrow=4, kernel=3, dilation=0)
