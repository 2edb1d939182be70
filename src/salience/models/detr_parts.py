"""Building blocks shared by the project's own DETR-style detectors.

Sine position encodings (of a feature grid and of anchor boxes), a small MLP, the inverse
sigmoid used for box refinement, a post-norm feed-forward block, and the switch that makes
the decoder's cross-attention modules record what they attend to.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from .detection import CrossAttentionRecord


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """logit(x), with x clamped to [eps, 1 - eps] so boxes on the border stay finite."""
    x = x.clamp(eps, 1 - eps)
    return torch.log(x / (1 - x))


def sine_encoding(coords: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Sine/cosine features of coordinates in [0, 1]: (..., n) -> (..., n · dim).

    Each coordinate gets ``dim`` features (``dim`` even), as in DETR's ``PositionEmbeddingSine``
    with ``normalize=True``: the coordinate is scaled by 2π and divided by geometric
    frequencies, and sines and cosines are interleaved.
    """
    freqs = temperature ** (2 * (torch.arange(dim, device=coords.device) // 2) / dim)
    angles = coords[..., None].float() * (2 * math.pi) / freqs  # (..., n, dim)
    feats = torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1).flatten(-2)
    return feats.flatten(-2)


def grid_positions(h: int, w: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """(h·w, dim) sine encoding of the token centres of an h×w grid, row by row, (y, x) halves."""
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return sine_encoding(torch.stack((yy, xx), -1).reshape(-1, 2), dim // 2)


def grid_centres(h: int, w: int, device: torch.device | None = None) -> torch.Tensor:
    """(h·w, 2) normalised (x, y) centres of an h×w grid's cells, row by row."""
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((xx, yy), -1).reshape(-1, 2)


class MLP(nn.Module):
    """``layers`` linear layers with ReLU between them."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, layers: int):
        super().__init__()
        dims = [in_dim] + [hidden] * (layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


class FeedForward(nn.Module):
    """Post-norm residual feed-forward block: ``norm(x + W2 relu(W1 x))``."""

    def __init__(self, d_model: int, hidden: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, d_model))
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.dropout(self.net(x)))


class RecordingAttention(nn.Module):
    """Base for cross-attention modules that can record their attention.

    ``record`` is None except inside `capture_cross_attention`, where it is the list that
    the module appends one `GridAttention` or `DeformableAttention` to per call. Modules
    with ``recorded = False`` (an encoder's self-attention built from the same class) are
    left alone.
    """

    record: list | None = None
    recorded: bool = True


@contextmanager
def capture_cross_attention(module: nn.Module) -> Iterator[CrossAttentionRecord]:
    """Record the decoder cross-attention of ``module``'s forward passes inside the block.

    Every `RecordingAttention` in the decoder appends its entry in call order, so one
    forward pass adds one entry per decoder layer. Nothing is computed differently: the
    modules only keep references to tensors they compute anyway.
    """
    record = CrossAttentionRecord()
    recorders = [m for m in module.modules() if isinstance(m, RecordingAttention) and m.recorded]
    try:
        for m in recorders:
            m.record = record.layers
        yield record
    finally:
        for m in recorders:
            m.record = None
