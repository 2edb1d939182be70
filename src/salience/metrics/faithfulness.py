"""SaCo, the salience-guided faithfulness coefficient (Wu et al., CVPR 2024).

Does the score drop grow with the attributed mass removed? The pixels are ranked by the map
and cut into ``groups`` equal groups G_1 … G_K (most salient first; K = 10 as the paper).
For each group: its salience s_i = Σ_{p∈G_i} map(p) and the score drop Δ_i = f(x) −
f(x with G_i alone replaced by the reference). For every pair i < j (so s_i ≥ s_j) the
pair counts +(s_i − s_j) when Δ_i ≥ Δ_j and −(s_i − s_j) otherwise; the sum divided by
Σ |s_i − s_j| is the coefficient in [−1, 1] (the paper's Algorithm 1): 1 when the drops
are ordered like the salience, −1 when reversed. Each group is removed on its own from the
clean image, so the coefficient does not build up a growing hole of removed pixels as
deletion does. A map whose groups all carry equal salience gives 0. Higher is better.
"""

from __future__ import annotations

from typing import Any

import torch

from ..models.model import Model
from .curves import as_target, forward_mode, score_samples
from .maps import as_maps, pixel_ranks
from .references import Reference, reference_image
from .scoring import Score, score_function


def saco_coefficient(salience: torch.Tensor, drops: torch.Tensor) -> torch.Tensor:
    """The coefficient (N,) from group saliences and score drops (N, K), groups in rank order."""
    k = salience.shape[1]
    i, j = torch.triu_indices(k, k, 1, device=salience.device)
    gap = salience[:, i] - salience[:, j]
    sign = torch.where(drops[:, i] >= drops[:, j], 1.0, -1.0).to(gap.dtype)
    total = gap.abs().sum(1)
    return torch.where(total > 0, (sign * gap).sum(1) / total.clamp_min(1e-300), torch.zeros_like(total))


def saco(model: Model, x: torch.Tensor, maps: Any, target: Any = "top1", *, groups: int = 10,
         reference: Reference = "input-zero", score: Score = "probability", batch_size: int = 8,
         channels_last: bool | None = None, trace: bool = True) -> torch.Tensor:
    """SaCo per image (Wu et al. 2024; see the module doc), in [−1, 1], higher is better.

    Options: ``groups`` (K, 10), ``reference`` (what a removed pixel becomes, as for Chefer's
    perturbation: default 0 in the normalised input), ``score``, ``batch_size``.
    """
    x = x.to(model.device)
    n, _, h, w = x.shape
    m = as_maps(maps, (h, w)).to(x.device)
    target = as_target(model, x, target)
    group_of = (pixel_ranks(m) * groups) // (h * w)  # (N, H*W): group 0 = most salient
    salience = torch.zeros(n, groups, dtype=torch.float64, device=x.device)
    salience.scatter_add_(1, group_of, m.flatten(1).double())
    ref = reference_image(x, reference, model.preprocess)
    score_fn = score_function(score)
    rows = torch.arange(n, device=x.device).repeat_interleave(groups)
    ks = torch.arange(groups, device=x.device).repeat(n)

    def build(chunk: slice) -> torch.Tensor:
        removed = (group_of[rows[chunk]] == ks[chunk, None]).view(-1, 1, h, w)
        return torch.where(removed, ref[rows[chunk]], x[rows[chunk]])

    with forward_mode(model):
        clean = score_fn(model(x), target, torch.arange(n, device=x.device)).float()
    scores = score_samples(model, x[:1], rows, build, target, score_fn, batch_size, "fp32", channels_last, trace)
    drops = clean[:, None] - scores.view(n, groups)
    return saco_coefficient(salience, drops.double()).float()
