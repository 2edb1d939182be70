"""Tiny vision transformers for attention tests: timm, and toys with forced attention."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

import salience as sl
from salience.models.anatomy import TokenAnatomy

from .conftest import require


def tiny_timm_vit(size: int = 32, depth: int = 2, **kwargs) -> nn.Module:
    timm = require("timm")
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=size, num_classes=5, depth=depth,
                             embed_dim=32, num_heads=2, **kwargs).eval()


def timm_model(size: int = 32, depth: int = 2, **kwargs) -> sl.Model:
    """A tiny timm ViT as a `Model` with its anatomy filled in by hand."""
    module = tiny_timm_vit(size, depth, **kwargs)
    model = sl.wrap(module, input_size=size, name="tiny-vit")
    prefix = module.num_prefix_tokens
    model.anatomy = TokenAnatomy(patch_size=(16, 16), prefix_tokens=prefix,
                                 blocks=[f"blocks.{i}" for i in range(depth)],
                                 attentions=[f"blocks.{i}.attn" for i in range(depth)])
    return model


class ForcedBlock(nn.Module):
    """One attention layer whose queries and keys are fixed: the attention is known.

    The value of every token is its one scalar state h; the layer adds the head-averaged
    attention output to h (a residual connection).
    """

    def __init__(self, q: torch.Tensor, k: torch.Tensor, heads: int):
        super().__init__()
        self.register_buffer("q", q)
        self.register_buffer("k", k)
        self.heads = heads

    def forward(self, h):  # h: (B, N, 1)
        b = h.shape[0]
        q = self.q.expand(b, self.heads, *self.q.shape)
        k = self.k.expand(b, self.heads, *self.k.shape)
        v = h[:, None].expand(b, self.heads, *h.shape[1:])
        return h + F.scaled_dot_product_attention(q, k, v).mean(1)


class ForcedAttentionViT(nn.Module):
    """A toy ViT (class token + 16-px patches) with forced attention in every layer.

    ``mode``: ``identity`` (every token attends to itself), ``uniform`` (to all tokens
    alike), ``patch`` (every token attends to patch ``patch``). The image enters only the
    values; patch ``patch`` carries a large positive value, and the logits are (h_cls, -h_cls).
    """

    def __init__(self, mode: str, size: int = 64, patch: int = 0, depth: int = 3, heads: int = 2):
        super().__init__()
        side = size // 16
        n = 1 + side * side
        strength = 60.0
        if mode == "identity":
            q = k = torch.eye(n) * math.sqrt(strength * math.sqrt(n))
        elif mode == "uniform":
            q, k = torch.zeros(n, n), torch.randn(n, n)
        elif mode == "patch":
            q = torch.zeros(n, n)
            q[:, 0] = strength * math.sqrt(n)
            k = torch.zeros(n, n)
            k[1 + patch, 0] = 1.0
        else:
            raise ValueError(mode)
        self.embed = nn.Conv2d(3, 1, 16, 16)
        nn.init.normal_(self.embed.weight, std=0.01)
        value = torch.zeros(n, 1)
        value[1 + patch] = 5.0
        self.register_buffer("value", value)
        self.blocks = nn.ModuleList(ForcedBlock(q, k, heads) for _ in range(depth))

    def forward(self, x):
        content = self.embed(x).flatten(2).transpose(1, 2)
        h = torch.cat([content.new_zeros(x.shape[0], 1, 1), content], 1) + self.value
        for block in self.blocks:
            h = block(h)
        return torch.cat([h[:, 0], -h[:, 0]], 1)


def forced_model(mode: str, size: int = 64, patch: int = 0, depth: int = 3) -> sl.Model:
    torch.manual_seed(0)
    model = sl.wrap(ForcedAttentionViT(mode, size, patch, depth), input_size=size, name=f"forced-{mode}")
    model.anatomy = TokenAnatomy(patch_size=(16, 16), prefix_tokens=1, blocks=[f"blocks.{i}" for i in range(depth)],
                                 attentions=[f"blocks.{i}" for i in range(depth)])
    return model
