"""Chefer et al. 2021, generic relevance for encoder-decoder transformers, on DETR detections.

"Generic Attention-model Explainability for Interpreting Bi-Modal and Encoder-Decoder
Transformers" (ICCV 2021), the gradient-weighted (LRP-free) variant, following the authors'
code: hila-chefer/Transformer-MM-Explainability, ``DETR/modules/ExplanationGenerator.py``
(``Generator.generate_ours`` with ``use_lrp=False``: ``avg_heads``,
``apply_self_attention_rules``, ``apply_mm_attention_rules``, ``handle_residual``).

Relevance matrices start as R^ii = I (image tokens), R^qq = I (queries), R^qi = 0. Every
attention map A with the gradient ∇A of the target score gives Ā = mean_heads((∇A ⊙ A)⁺).
In forward order:

- encoder self-attention:  R^ii += Ā R^ii
- per decoder layer, self-attention:  R^qq += Ā R^qq,  R^qi += Ā R^qi (both from the old R^qq, R^qi),
- then its cross-attention:  R^qi += (R̄^qq)ᵀ Ā R̄^ii,  R̄ = rownorm(R − I) + I.

The map of a detection (image, query q, class c) is row q of R^qi over the encoder's h×w
tokens, upsampled bilinearly to the input size. The target score is the raw class logit of
query q for class c (as the authors' code, which backpropagates ``pred_logits``), not the
softmax or sigmoid probability.

One difference from the authors' code: a row of R − I that sums to zero (a query or token
that received no relevance) stays zero in rownorm; their code divides 0 by 0 and then zeroes
every NaN of the cross-attention term, which drops the whole term as soon as one row is
empty.

Cost: one forward pass (with the attention graph) per batch of images, and one backward
pass per detection rank: the k-th detections of all images in the batch share a backward
pass (images of a batch are independent, so the gradient of the sum of their scores is each
image's own gradient). An image with n detections thus costs one batched forward share and n
backward passes, which stop at the first attention map (no gradient reaches the backbone).
`Explainer.__call__` adds its usual inference pass to pick the detections.
"""

from __future__ import annotations

from typing import ClassVar, Sequence

import torch
import torch.nn.functional as F

from ..errors import SalienceError
from ..hooks import frozen_parameters
from ..models.model import Model
from ..targets import DetectionTarget
from .base import Explainer, batches, register


def gradient_weighted(attention: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """Ā = mean over heads of (∇A ⊙ A)⁺: (n, heads, L, S) → (n, L, S)."""
    return (gradient * attention).clamp(min=0).mean(1)


def normalise_residual(relevance: torch.Tensor) -> torch.Tensor:
    """R̄ = rownorm(R − I) + I for (n, m, m) matrices; rows of R − I summing to zero stay zero."""
    eye = torch.eye(relevance.shape[-1], dtype=relevance.dtype, device=relevance.device)
    rest = relevance - eye
    sums = rest.sum(-1, keepdim=True)
    return torch.where(sums != 0, rest / torch.where(sums != 0, sums, 1), 0) + eye


def generic_relevance(encoder: Sequence[torch.Tensor], decoder_self: Sequence[torch.Tensor],
                      cross: Sequence[torch.Tensor]) -> torch.Tensor:
    """R^qi (n, Q, N) from the gradient-weighted maps Ā of every layer, in forward order.

    ``encoder``: (n, N, N) per encoder layer; ``decoder_self``: (n, Q, Q) and ``cross``:
    (n, Q, N) per decoder layer.
    """
    if len(decoder_self) != len(cross) or not cross:
        raise SalienceError(f"{len(decoder_self)} decoder self-attention maps for {len(cross)} cross-attention maps")
    n, q, tokens = cross[0].shape
    like = dict(dtype=cross[0].dtype, device=cross[0].device)
    r_ii = torch.eye(tokens, **like).expand(n, tokens, tokens)
    for a in encoder:
        r_ii = r_ii + a @ r_ii
    r_qq = torch.eye(q, **like).expand(n, q, q)
    r_qi = torch.zeros(n, q, tokens, **like)
    r_ii_bar = normalise_residual(r_ii)
    for a_self, a_cross in zip(decoder_self, cross):
        r_qq, r_qi = r_qq + a_self @ r_qq, r_qi + a_self @ r_qi
        r_qi = r_qi + normalise_residual(r_qq).transpose(-1, -2) @ a_cross @ r_ii_bar
    return r_qi


def _ranks(groups: torch.Tensor) -> torch.Tensor:
    """For each element, how many earlier elements share its group (0, 1, ... per group)."""
    same = groups[:, None] == groups[None, :]
    return torch.tril(same, diagonal=-1).sum(1)


@register
class CheferDETR(Explainer):
    """Chefer generic relevance (2021) for DETR detections: gradient-weighted attention of
    encoder, decoder self- and cross-attention propagated into query-to-token relevance.

    Parameters
    ----------
    batch_size : int or None
        Images per forward pass (all of a batch's attention graph is held in memory).
        None: 4 on CPU, 16 on GPU.
    """

    name: ClassVar[str] = "chefer_detr"
    aliases: ClassVar[tuple[str, ...]] = ("chefer_generic",)
    family: ClassVar[str] = "relevance"
    tasks: ClassVar[tuple[str, ...]] = ("detection",)

    def __init__(self, batch_size: int | None = None):
        super().__init__(batch_size=batch_size)

    def attribute(self, model: Model, x: torch.Tensor, target: DetectionTarget) -> torch.Tensor:
        if model.task != "detection" or not isinstance(target, DetectionTarget):
            raise SalienceError(f"'{self.name}' explains detections of a DETR detector; {model.name} is a "
                                f"{model.task} model")
        if not model.has_attention:
            raise SalienceError(f"{model.name} has no dense attention over image tokens (deformable attention "
                                f"samples points), through which '{self.name}' propagates relevance; use eive, "
                                "drise, odam or gradcam for it")
        images = target.image_index.to(x.device)
        unique, inverse = torch.unique(images, return_inverse=True)
        first = torch.full((len(unique),), len(images), device=x.device).scatter_reduce(
            0, inverse, torch.arange(len(images), device=x.device), "amin")
        maps = x.new_zeros(len(target), *x.shape[-2:], dtype=torch.float32)
        for chunk in batches(len(unique), self.batch_for(x.device, cpu=4, gpu=16)):
            rows = ((inverse >= chunk.start) & (inverse < chunk.stop)).nonzero()[:, 0]
            maps[rows] = self._explain_batch(model, x[first[chunk]], target, rows, inverse[rows] - chunk.start)
        return maps

    def _explain_batch(self, model: Model, x: torch.Tensor, target: DetectionTarget, rows: torch.Tensor,
                       local: torch.Tensor) -> torch.Tensor:
        """Maps of target ``rows`` whose images are ``x[local]``: one forward, one backward per rank."""
        with frozen_parameters(model.module), torch.enable_grad(), model.capture_attention(grad=True) as record:
            logits = model(x).logits
        attention = record.encoder + record.decoder_self + record.cross
        n_enc, n_dec = len(record.encoder), len(record.decoder_self)
        h, w = record.grid
        queries, classes = target.queries.to(x.device)[rows], target.classes.to(x.device)[rows]
        ranks = _ranks(local)
        out = torch.empty(len(rows), *x.shape[-2:], device=x.device)
        last = int(ranks.max())
        for rank in range(last + 1):
            pick = (ranks == rank).nonzero()[:, 0]
            img = local[pick]
            score = logits[img, queries[pick], classes[pick]].sum()
            grads = torch.autograd.grad(score, attention, retain_graph=rank < last)
            weighted = [gradient_weighted(a[img].flatten(3).float(), g[img].flatten(3).float())
                        for a, g in zip(attention, grads)]
            r_qi = generic_relevance(weighted[:n_enc], weighted[n_enc:n_enc + n_dec], weighted[n_enc + n_dec:])
            relevance = r_qi[torch.arange(len(pick), device=x.device), queries[pick]].view(-1, 1, h, w)
            out[pick] = F.interpolate(relevance, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]
        return out
