"""The three hallucination CNNs, one per YCbCr channel (paper Sec. 3, Table 1).

Each network maps a NIR image (1 channel, values in [0, 1]) to one VIS channel (values in [0, 1], the
8-bit YCbCr value / 255 as OpenCV's ``COLOR_RGB2YCrCb`` defines it). Every convolution has stride 1 and
'same' zero padding, so the networks are fully convolutional: trained on 40x40 patches, run on whole
224x224 faces. Every layer but the last has a PReLU. The Y network predicts the residual Y - NIR
(the paper's skip connection from the input to the last layer, PAPER-NOTES "Hallucination CNNs").

Layer plan for ``layers = L``, ``wide = W``, ``narrow = N``::

    conv(1 -> W), conv(W -> N), (L - 4) x conv(N -> N), conv(N -> W), conv(W -> 1)

so that "first and last" (the first conv and the conv before the 1-channel output) are wide and the
middle is narrow: an hourglass.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from numbers import Integral

import torch
from torch import nn

__all__ = ["ChannelNetSpec", "ChannelNet", "HallucinationNets", "PRESETS", "CHANNELS", "preset", "macs_per_pixel"]

CHANNELS = ("y", "cb", "cr")


@dataclass(frozen=True)
class ChannelNetSpec:
    """Shape of one channel's network (one row of the paper's Table 1).

    Attributes
    ----------
    layers
        Number of convolutions, the 1-channel output layer included (>= 4).
    wide
        Filters of the first conv and of the conv before the output.
    narrow
        Filters of the middle convs.
    kernel
        Odd kernel side, in pixels, of every conv.
    residual
        Add the input to the output (the network predicts channel - NIR).
    dilation
        Dilation of the middle (narrow -> narrow) convolutions (beyond the paper): it widens the receptive
        field (:meth:`receptive_field`) at no extra cost, so that a small network can see facial
        structure. 1 (default) is the paper's plain convolution.
    """

    layers: int
    wide: int
    narrow: int
    kernel: int
    residual: bool = False
    dilation: int = 1

    def __post_init__(self) -> None:
        for name in ("layers", "wide", "narrow", "kernel", "dilation"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, Integral):
                raise ValueError(f"ChannelNetSpec.{name} must be an int, got {v!r}")
        if not isinstance(self.residual, bool):  # "false" from a hand-edited config.json would be truthy
            raise ValueError(f"ChannelNetSpec.residual must be true or false, got {self.residual!r}")
        if self.layers < 4:
            raise ValueError(f"layers must be >= 4, got {self.layers}")
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"kernel must be a positive odd number, got {self.kernel}")
        if self.wide < 1 or self.narrow < 1:
            raise ValueError(f"wide and narrow must be >= 1, got {self.wide}, {self.narrow}")
        if self.dilation < 1:
            raise ValueError(f"dilation must be >= 1, got {self.dilation}")

    def channels(self) -> list[tuple[int, int]]:
        """``(in, out)`` channels of every conv, in order."""
        w, n = self.wide, self.narrow
        return [(1, w), (w, n)] + [(n, n)] * (self.layers - 4) + [(n, w), (w, 1)]

    def dilations(self) -> list[int]:
        """Dilation of every conv, in order (:attr:`dilation` for the middle ones)."""
        return [1, 1] + [self.dilation] * (self.layers - 4) + [1, 1]

    def receptive_field(self) -> int:
        """Side, in pixels, of the input square that one output pixel depends on."""
        return 1 + sum((self.kernel - 1) * d for d in self.dilations())


#: Table 1 of the paper (``paper``) and a small preset that trains in minutes on a 2-core CPU (``cpu``;
#: chosen by ``benchmarks/hallucination_presets.py``, see docs/BENCHMARKS.md).
PRESETS: dict[str, dict[str, ChannelNetSpec]] = {
    "paper": {
        "y": ChannelNetSpec(layers=11, wide=148, narrow=36, kernel=11, residual=True),
        "cb": ChannelNetSpec(layers=7, wide=66, narrow=32, kernel=3),
        "cr": ChannelNetSpec(layers=8, wide=148, narrow=48, kernel=5),
    },
    "cpu": {
        "y": ChannelNetSpec(layers=5, wide=16, narrow=8, kernel=3, residual=True),
        "cb": ChannelNetSpec(layers=4, wide=8, narrow=4, kernel=3),
        "cr": ChannelNetSpec(layers=4, wide=8, narrow=4, kernel=3),
    },
}


def preset(name: str) -> dict[str, ChannelNetSpec]:
    """The specs of a named preset (``paper`` or ``cpu``)."""
    try:
        return dict(PRESETS[name])
    except KeyError:
        raise ValueError(f"unknown hallucination preset {name!r}; choose one of {sorted(PRESETS)}") from None


def macs_per_pixel(spec: ChannelNetSpec) -> int:
    """Multiply-accumulates per output pixel of one network (1 MAC = 2 FLOP)."""
    return sum(i * o * spec.kernel ** 2 for i, o in spec.channels())


class ChannelNet(nn.Module):
    """One channel's CNN: ``(B, 1, H, W)`` NIR in [0, 1] -> ``(B, 1, H, W)`` channel in [0, 1] (unclipped)."""

    def __init__(self, spec: ChannelNetSpec) -> None:
        super().__init__()
        self.spec = spec
        layers: list[nn.Module] = []
        pairs = spec.channels()
        for k, ((cin, cout), d) in enumerate(zip(pairs, spec.dilations())):
            layers.append(nn.Conv2d(cin, cout, spec.kernel, stride=1, padding=d * (spec.kernel // 2), dilation=d))
            if k < len(pairs) - 1:
                layers.append(nn.PReLU(cout))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return out + x if self.spec.residual else out


class HallucinationNets(nn.Module):
    """The Y, Cb and Cr networks together: ``(B, 1, H, W)`` NIR -> ``(B, 3, H, W)`` Y, Cb, Cr in [0, 1].

    ``channels`` selects which networks exist (default all three); missing ones are absent from the output.
    """

    def __init__(self, specs: dict[str, ChannelNetSpec] | str = "paper", channels: tuple[str, ...] = CHANNELS) -> None:
        super().__init__()
        specs = preset(specs) if isinstance(specs, str) else dict(specs)
        channels = tuple(channels)
        bad = [c for c in channels if c not in CHANNELS or c not in specs]
        if bad:
            raise ValueError(f"channels {bad} are not among {CHANNELS} or have no spec")
        if not channels or len(set(channels)) != len(channels):
            raise ValueError(f"channels must name at least one of {CHANNELS}, each once, got {channels}")
        self.specs = {c: specs[c] for c in channels}
        self.nets = nn.ModuleDict({c: ChannelNet(s) for c, s in self.specs.items()})

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(self.nets.keys())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.nets[c](x) for c in self.channels], dim=1)

    def config(self) -> dict:
        """JSON-able description from which :meth:`from_config` rebuilds the networks."""
        return {c: asdict(s) for c, s in self.specs.items()}

    @classmethod
    def from_config(cls, config: dict) -> HallucinationNets:
        specs = {c: ChannelNetSpec(**d) for c, d in config.items()}
        return cls(specs, channels=tuple(c for c in CHANNELS if c in specs))
