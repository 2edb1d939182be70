"""Building blocks shared by the project's own DETR-style detectors.

Sine position encodings (of a feature grid and of anchor boxes), a small MLP, the inverse
sigmoid used for box refinement, a post-norm feed-forward block, the switch that makes
the decoder's cross-attention modules record what they attend to, and `explicit_attention`,
which runs ``nn.MultiheadAttention`` modules with explicit, recorded probabilities.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import SalienceError
from ..detection import CrossAttentionRecord


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


def _recording_forward(mha: nn.MultiheadAttention, maps: list, grad: bool):
    """A forward for ``mha`` (batch first, no masks) that appends its (B, heads, L, S)
    probabilities to ``maps``; with ``grad``, untracked probabilities become leaves that
    require grad. Returns ``(output, None)`` like ``need_weights=False``."""

    def forward(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if key_padding_mask is not None or attn_mask is not None or is_causal:
            raise SalienceError("recording nn.MultiheadAttention supports no attention masks")
        heads = mha.num_heads
        w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
        b_q, b_k, b_v = mha.in_proj_bias.chunk(3) if mha.in_proj_bias is not None else (None,) * 3

        def split(x, w, b):
            y = F.linear(x, w, b)
            return y.unflatten(-1, (heads, -1)).transpose(1, 2)  # (B, heads, n, d/heads)

        q, k, v = split(query, w_q, b_q), split(key, w_k, b_k), split(value, w_v, b_v)
        probs = torch.softmax((q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2), dim=-1)
        if grad and torch.is_grad_enabled() and not probs.requires_grad:
            probs.requires_grad_(True)
        maps.append(probs)
        out = F.dropout(probs, mha.dropout, training=mha.training) @ v
        return mha.out_proj(out.transpose(1, 2).flatten(2)), None

    return forward


@contextmanager
def explicit_attention(modules: Sequence[nn.MultiheadAttention], maps: list, grad: bool = False) -> Iterator[list]:
    """Run batch-first ``nn.MultiheadAttention`` modules with explicit probabilities.

    Inside the block each module's calls append their (B, heads, L, S) attention
    probabilities to ``maps``, in call order: the very tensors multiplied with the values,
    so they can be differentiated. Outputs equal the module's own up to float rounding
    (its fused kernels are replaced by matrix products). The modules' own forwards are
    restored on exit.
    """
    for mha in modules:
        if not mha.batch_first or not mha._qkv_same_embed_dim or mha.bias_k is not None or mha.add_zero_attn:
            raise SalienceError("explicit_attention supports batch-first nn.MultiheadAttention with one "
                                "input projection, no bias_k/bias_v and no zero attention")
    try:
        for mha in modules:
            mha.forward = _recording_forward(mha, maps, grad)
        yield maps
    finally:
        for mha in modules:
            mha.__dict__.pop("forward", None)
