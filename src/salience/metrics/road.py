"""ROAD: RemOve And Debias (Rong et al. 2022), MoRF and LeRF orders, noisy linear imputation.

Pixels are removed in the map's order, most relevant first (MoRF, lower AUC is better) or
least relevant first (LeRF, higher is better), at each fraction of ``fractions`` (default
10 %, 20 %, ..., 90 %, the paper's). Removed pixels are not painted a colour (which leaves
a tell-tale pattern the model reacts to, the off-distribution artefact of deletion) but
*imputed*: each removed pixel becomes the weighted mean of its 8 neighbours (weights 1/6
for the 4 direct neighbours, 1/12 for the diagonal ones, neighbours outside the image left
out) — one linear system over all removed pixels of an image, per channel, as in the
authors' ``NoisyLinearImputer`` — and then gets Gaussian noise of std ``noise`` (their
default 0.01; here in the model's input space). The score of the target is recorded at
each fraction; the AUC is the trapezoid over the fractions divided by their span.

The system is solved in torch, batched over all (image, fraction) pairs of a chunk, by a
coarse-to-fine pyramid (`impute`): the known pixels are averaged down to a coarse grid,
the coarse problem is solved there, its solution is upsampled as the starting point one
level up and smoothed by Jacobi sweeps of the same 8-neighbour equations, up to the full
resolution. It is checked against a sparse direct solve of the authors' system
(``tests/test_road.py``). The noise is seeded per (image, fraction): ``seed``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..models.model import Model
from .curves import CurveResult, as_target, perturbation_curves, pixel_counts, trapezoid_auc
from .maps import as_maps, pixel_ranks
from .scoring import Score, score_function

ROAD_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: Jacobi sweeps of the imputation at full resolution, doubling one level coarser (see `impute`).
SWEEPS = 3
COARSE_SWEEPS = 32


def neighbour_mean_terms(v: torch.Tensor) -> torch.Tensor:
    """Σ_j w_j v_j over the 8 neighbours (1/6 direct, 1/12 diagonal; zero outside the image).

    The stencil is (outer([1,2,1], [1,2,1]) − 4·centre) / 12, applied separably.
    """
    p = F.pad(v, (1, 1, 1, 1))
    rows = p[..., :-2] + 2 * p[..., 1:-1] + p[..., 2:]
    box = rows[..., :-2, :] + 2 * rows[..., 1:-1, :] + rows[..., 2:, :]
    return (box - 4 * v) / 12


def impute(x: torch.Tensor, missing: torch.Tensor, sweeps: int = SWEEPS) -> torch.Tensor:
    """``x`` (N, C, H, W) with the ``missing`` (N, 1, H, W) pixels filled by the 8-neighbour mean
    equations (the module doc), without noise.

    Coarse to fine: known pixels are averaged 2×2 onto a coarse grid (a coarse pixel is known
    when one of its children is), the coarse problem is filled the same way, upsampled
    bilinearly as the start of the missing pixels here, then ``sweeps`` Jacobi sweeps of the
    equations (twice as many one level coarser, at most `COARSE_SWEEPS`). Pixels of an image
    with no known pixel get 0.
    """
    h, w = x.shape[-2:]
    weight = neighbour_mean_terms(torch.ones(1, 1, h, w, dtype=x.dtype, device=x.device))
    known = (~missing).to(x.dtype)
    if min(h, w) <= 4:
        start = (x * known).sum((2, 3), keepdim=True) / known.sum((2, 3), keepdim=True).clamp_min(1)
        sweeps = COARSE_SWEEPS
    else:
        pad = (0, w % 2, 0, h % 2)
        share = F.avg_pool2d(F.pad(known, pad), 2)
        mass = F.avg_pool2d(F.pad(x * known, pad), 2)
        coarse_missing = share == 0
        coarse = impute(torch.where(coarse_missing, 0.0, mass / share.clamp_min(1e-12)), coarse_missing,
                        min(2 * sweeps, COARSE_SWEEPS))
        start = F.interpolate(coarse, scale_factor=2, mode="bilinear", align_corners=False)[..., :h, :w]
    x = torch.where(missing, start, x)
    for _ in range(sweeps):
        x = torch.where(missing, neighbour_mean_terms(x) / weight, x)
    return x


def _road(most_relevant_first: bool, model: Model, x: torch.Tensor, maps: Any, target: Any = "top1", *,
          fractions: tuple[float, ...] = ROAD_FRACTIONS, noise: float = 0.01, score: Score = "probability",
          seed: int = 0, sweeps: int = SWEEPS, batch_size: int = 8, precision: str = "fp32",
          channels_last: bool | None = None, trace: bool = True) -> CurveResult:
    x = x.to(model.device)
    h, w = x.shape[-2:]
    m = as_maps(maps, (h, w)).to(x.device)
    ranks = pixel_ranks(m if most_relevant_first else -m)
    target = as_target(model, x, target)
    counts = pixel_counts(h * w, fractions=torch.tensor(fractions))

    def imputed(images: torch.Tensor, steps: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
        filled = impute(x[images].float(), removed, sweeps)
        if noise > 0:
            draws = [torch.randn(x.shape[1:], generator=torch.Generator().manual_seed(
                seed * 1_000_003 + int(i) * len(fractions) + int(k))) for i, k in zip(images.tolist(), steps.tolist())]
            filled = torch.where(removed, filled + noise * torch.stack(draws).to(x.device), filled)
        return filled.to(x.dtype)

    curves = perturbation_curves(model, ranks, x, x, counts, target, score_function(score), batch_size, precision,
                                 channels_last, trace, perturb=imputed)
    fr = torch.tensor(fractions, device=curves.device, dtype=torch.float32)
    return CurveResult(trapezoid_auc(curves, fr), curves, fr)


def road_morf(model: Model, x: torch.Tensor, maps: Any, target: Any = "top1", **options) -> CurveResult:
    """ROAD, most relevant first (Rong et al. 2022; noisy linear imputation): AUC, lower is better.

    Options: ``fractions`` (default 0.1..0.9), ``noise`` (0.01), ``score`` (probability |
    logit | accuracy | callable), ``seed``, ``sweeps``, ``batch_size``, ``precision``,
    ``channels_last``, ``trace``.
    """
    return _road(True, model, x, maps, target, **options)


def road_lerf(model: Model, x: torch.Tensor, maps: Any, target: Any = "top1", **options) -> CurveResult:
    """ROAD, least relevant first (Rong et al. 2022; noisy linear imputation): AUC, higher is better."""
    return _road(False, model, x, maps, target, **options)
