"""Detectors: every query's prediction as `Detections`, and the decoder's cross-attention.

A detector `Model` (task ``detection``) returns `Detections` for all queries of every image,
differentiable, so a target can score one query (image, query, class). `Detections.select`
applies the post-processing (score threshold, top-k) that decides which queries are shown
and explained. Query-based detectors also expose their decoder cross-attention per layer
through `DetectorModel.capture_cross_attention`: single-scale DETRs as `GridAttention`
(weights over the encoder's token grid), deformable ones as `DeformableAttention`
(sampling locations and weights per feature level). Single-scale DETRs also record every
attention map of their transformer (`DetectorModel.capture_attention`), which relevance
methods differentiate.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, ContextManager, Sequence

import torch

from ..errors import SalienceError
from ..preprocessing import Preprocess
from .model import Model


@dataclass
class Detections:
    """Predictions of all Q queries for B images, boxes in preprocessed-input pixels.

    Attributes
    ----------
    boxes : (B, Q, 4) tensor, (x0, y0, x1, y1) in input pixels.
    probs : (B, Q, K) tensor, class probabilities over the K real classes (a DETR's
        no-object column is not included; softmax DETRs keep its mass out of the K).
    logits : (B, Q, K') tensor, the raw class logits (K' = K + 1 with a no-object class).
    objectness : (B, Q) tensor or None, where the detector predicts one.
    multi_label : bool
        How `select` ranks: False, one detection per query (its best class, as DETR's
        softmax post-processing); True, every (query, class) pair is a candidate, so a query
        may be kept with several classes (the sigmoid post-processing of Conditional,
        Deformable and RT-DETR).
    """

    boxes: torch.Tensor
    probs: torch.Tensor
    logits: torch.Tensor
    objectness: torch.Tensor | None = None
    multi_label: bool = False

    @property
    def scores(self) -> torch.Tensor:
        """(B, Q) the best class probability of each query."""
        return self.probs.max(-1).values

    @property
    def labels(self) -> torch.Tensor:
        """(B, Q) the best class of each query."""
        return self.probs.argmax(-1)

    def index(self, rows: torch.Tensor) -> "Detections":
        """The images ``rows`` (used to repeat or select samples, like ``tensor[rows]``)."""
        obj = None if self.objectness is None else self.objectness[rows]
        return replace(self, boxes=self.boxes[rows], probs=self.probs[rows], logits=self.logits[rows], objectness=obj)

    def __len__(self) -> int:
        return self.boxes.shape[0]

    def select(self, threshold: float = 0.5, top_k: int = 100) -> list["Selection"]:
        """Per image, the detections whose score ≥ ``threshold``, best first, at most ``top_k``.

        A detection is a query with its best class, or any (query, class) pair when
        ``multi_label``.
        """
        out = []
        if self.multi_label:
            num_classes = self.probs.shape[-1]
            flat = self.probs.detach().flatten(1)
            queries = torch.arange(flat.shape[1], device=flat.device) // num_classes
            labels = torch.arange(flat.shape[1], device=flat.device) % num_classes
        else:
            flat, labels = self.scores.detach(), self.labels.detach()
        for b in range(len(self)):
            keep = (flat[b] >= threshold).nonzero()[:, 0]
            keep = keep[flat[b, keep].argsort(descending=True)][:top_k]
            query = queries[keep] if self.multi_label else keep
            label = labels[keep] if self.multi_label else labels[b, keep]
            out.append(Selection(query=query.cpu(), label=label.cpu(), score=flat[b, keep].cpu(),
                                 box=self.boxes[b, query].detach().cpu()))
        return out


@dataclass
class Selection:
    """The detections kept for one image: query indices, classes, scores, boxes (input px)."""

    query: torch.Tensor
    label: torch.Tensor
    score: torch.Tensor
    box: torch.Tensor

    def __len__(self) -> int:
        return int(self.query.numel())


def cxcywh_to_pixels(boxes: torch.Tensor, input_size: tuple[int, int]) -> torch.Tensor:
    """Normalised (cx, cy, w, h) -> (x0, y0, x1, y1) in pixels of an (H, W) input (DETRs' box format)."""
    h, w = input_size
    cx, cy, bw, bh = boxes.unbind(-1)
    xyxy = torch.stack((cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2), -1)
    return xyxy * torch.tensor([w, h, w, h], dtype=boxes.dtype, device=boxes.device)


@dataclass
class GridAttention:
    """One decoder layer's cross-attention over a single-scale token grid.

    ``weights`` is (B, heads, Q, h, w): each query's attention probabilities over the
    encoder's h×w tokens (summing to 1 over the grid per head).
    """

    weights: torch.Tensor


@dataclass
class DeformableAttention:
    """One deformable decoder layer's sampling points.

    ``locations`` (B, Q, heads, levels, points, 2): (x, y) in [0, 1] of each level's map;
    ``weights`` (B, Q, heads, levels, points): attention weight of each point (summing to 1
    over levels × points per head); ``level_shapes``: (h, w) of each feature level.
    """

    locations: torch.Tensor
    weights: torch.Tensor
    level_shapes: list[tuple[int, int]]


@dataclass
class CrossAttentionRecord:
    """Filled during a forward pass inside `DetectorModel.capture_cross_attention`."""

    layers: list[GridAttention | DeformableAttention] = field(default_factory=list)


@dataclass
class TransformerAttention:
    """Every attention map of a single-scale DETR's forward passes, in call order.

    Filled inside `DetectorModel.capture_attention`. Each entry is the probability tensor
    the model multiplies with its values, so with ``grad=True`` ``torch.autograd.grad(score,
    maps)`` gives the score's gradient with respect to each map.

    Attributes
    ----------
    encoder : list of (B, heads, N, N) tensors, the encoder's self-attention over its N = h·w tokens.
    decoder_self : list of (B, heads, Q, Q) tensors, the decoder's self-attention among queries.
    cross : list of (B, heads, Q, N) tensors (or their (B, heads, Q, h, w) views), the decoder's
        cross-attention over the encoder tokens.
    grid : (h, w) of the encoder's token grid, row by row.
    """

    encoder: list[torch.Tensor] = field(default_factory=list)
    decoder_self: list[torch.Tensor] = field(default_factory=list)
    cross: list[torch.Tensor] = field(default_factory=list)
    grid: tuple[int, int] | None = None


class DetectorModel(Model):
    """A detector: the module's raw output decoded into `Detections`.

    Parameters
    ----------
    module, preprocess, class_names, name
        As for `Model`.
    decode : callable
        ``decode(raw_output, input_size) -> Detections`` with boxes in input pixels.
    cross_attention : callable, optional
        ``cross_attention(module) -> context manager`` yielding a `CrossAttentionRecord`
        that the module's next forward passes fill, one entry per decoder layer. Must leave
        the module's outputs unchanged and remove everything it attached on exit.
    attention : callable, optional
        ``attention(module, grad) -> context manager`` yielding a `TransformerAttention` that
        the module's next forward passes fill (single-scale DETRs). With ``grad=True`` every
        map must be part of the autograd graph even when the parameters are frozen; outputs
        stay equal up to float rounding; everything attached is removed on exit.
    score_threshold, top_k : post-processing defaults for `detections`.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        preprocess: Preprocess,
        class_names: Sequence[str],
        decode: Callable[[Any, tuple[int, int]], Detections],
        cross_attention: Callable[[torch.nn.Module], ContextManager[CrossAttentionRecord]] | None = None,
        attention: Callable[[torch.nn.Module, bool], ContextManager[TransformerAttention]] | None = None,
        score_threshold: float = 0.5,
        top_k: int = 100,
        cam_layer: str | None = None,
        name: str = "detector",
    ):
        super().__init__(module, preprocess, task="detection", class_names=class_names, cam_layer=cam_layer, name=name)
        self.decode = decode
        self._cross_attention = cross_attention
        self._attention = attention
        self.score_threshold = score_threshold
        self.top_k = top_k

    def __call__(self, x: torch.Tensor) -> Detections:
        return self.decode(self.module(x), tuple(x.shape[-2:]))

    def detections(self, x: torch.Tensor) -> tuple[Detections, list[Selection]]:
        """All queries' predictions (no gradient) and the kept detections per image."""
        with torch.inference_mode():
            dets = self(x)
        return dets, dets.select(self.score_threshold, self.top_k)

    @property
    def has_cross_attention(self) -> bool:
        return self._cross_attention is not None

    def capture_cross_attention(self) -> ContextManager[CrossAttentionRecord]:
        """Record the decoder's cross-attention of the forward passes run inside the block."""
        if self._cross_attention is None:
            raise SalienceError(f"{self.name} does not expose decoder cross-attention")
        return self._cross_attention(self.module)

    @property
    def has_attention(self) -> bool:
        return self._attention is not None

    def capture_attention(self, grad: bool = False) -> ContextManager[TransformerAttention]:
        """Record every encoder, decoder self- and cross-attention map of the forward passes
        run inside the block; with ``grad=True`` the maps can be differentiated."""
        if self._attention is None:
            raise SalienceError(f"{self.name} does not expose its transformer's attention maps")
        return self._attention(self.module, grad)
