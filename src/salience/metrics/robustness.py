"""Infidelity and max-sensitivity (Yeh et al. 2019), with Captum's definitions.

Maps are per pixel; they enter both metrics as attributions of every colour channel alike,
``A[n, c] = map[n]`` (Captum's attributions have the input's shape).

- ``infidelity``: INFD = mean over perturbations I of (Σ I ⊙ A − (f(x) − f(x − I)))²,
  with, when ``normalize`` (default, as Yeh et al.'s evaluation), A first scaled by the
  β minimising it: β = mean(Σ I⊙A · Δf) / mean((Σ I⊙A)²) (Captum ``infidelity(...,
  normalize=True)``). Perturbations: Gaussian, std ``noise`` in the model's input space,
  ``n_perturbations`` per image, seeded (`infidelity_perturbations`). Lower is better.
- ``max_sensitivity``: max over perturbations δ of ‖Φ(x + δ) − Φ(x)‖_F / ‖Φ(x)‖_F (1 in
  the denominator when Φ(x) = 0), δ uniform in the L∞ ball of radius ``radius`` (Captum's
  ``sensitivity_max`` defaults: 0.02, 10 perturbations), Φ the method re-run on the
  perturbed input for the same target. Lower is better; needs the ``method``.
"""

from __future__ import annotations

from typing import Any

import torch

from ..models.model import Model
from .curves import as_target, forward_mode, score_samples
from .maps import as_maps
from .scoring import Score, score_function


def infidelity_perturbations(x: torch.Tensor, n: int, noise: float, seed: int) -> torch.Tensor:
    """(N, n, C, H, W) Gaussian perturbations of std ``noise``; image i's depend on (seed, i) only."""
    draws = [torch.randn(n, *x.shape[1:], generator=torch.Generator().manual_seed(seed * 1_000_003 + i))
             for i in range(x.shape[0])]
    return noise * torch.stack(draws).to(x.device, x.dtype)


def infidelity(model: Model, x: torch.Tensor, maps: Any, target: Any = "top1", *, n_perturbations: int = 16,
               noise: float = 0.1, normalize: bool = True, score: Score = "probability", seed: int = 0,
               perturbations: torch.Tensor | None = None, batch_size: int = 8,
               channels_last: bool | None = None, trace: bool = True) -> torch.Tensor:
    """Infidelity per image (Yeh et al. 2019; Captum's ``infidelity``), lower is better.

    ``perturbations`` (N, S, C, H, W) replaces the seeded Gaussian ones when given.
    """
    x = x.to(model.device)
    n = x.shape[0]
    attributions = as_maps(maps, tuple(x.shape[-2:])).to(x.device)[:, None]
    target = as_target(model, x, target)
    pert = perturbations if perturbations is not None else infidelity_perturbations(x, n_perturbations, noise, seed)
    pert = pert.to(x.device, x.dtype)
    s = pert.shape[1]
    score_fn = score_function(score)
    rows = torch.arange(n, device=x.device).repeat_interleave(s)
    flat = pert.flatten(0, 1)
    with forward_mode(model):
        clean = score_fn(model(x), target, torch.arange(n, device=x.device)).float()
    scores = score_samples(model, x[:1], rows, lambda chunk: x[rows[chunk]] - flat[chunk], target, score_fn,
                           batch_size, "fp32", channels_last, trace)
    drops = (clean[rows] - scores).view(n, s).double()
    explained = (pert.double() * attributions[:, None].double()).flatten(2).sum(2)  # (N, S)
    if normalize:
        denominator = (explained**2).mean(1)
        beta = torch.where(denominator > 0, (explained * drops).mean(1) / denominator.clamp_min(1e-300),
                           torch.zeros_like(denominator))
        explained = beta[:, None] * explained
    return ((explained - drops) ** 2).mean(1).float()


def sensitivity_perturbations(x: torch.Tensor, n: int, radius: float, seed: int) -> torch.Tensor:
    """(N, n, C, H, W) uniform perturbations in [−radius, radius]; image i's depend on (seed, i) only."""
    draws = [torch.rand(n, *x.shape[1:], generator=torch.Generator().manual_seed(seed * 1_000_003 + i))
             for i in range(x.shape[0])]
    return ((torch.stack(draws) * 2 - 1) * radius).to(x.device, x.dtype)


def max_sensitivity(model: Model, x: torch.Tensor, maps: Any, target: Any = "top1", *, method: Any = None,
                    n_perturbations: int = 10, radius: float = 0.02, seed: int = 0,
                    perturbations: torch.Tensor | None = None) -> torch.Tensor:
    """Max-sensitivity per image (Yeh et al. 2019; Captum's ``sensitivity_max``), lower is better.

    ``method``: the explainer (or its name) that made ``maps``; it is re-run on each
    perturbed input for the same target rows. ``perturbations`` (N, S, C, H, W) replaces the
    seeded uniform ones when given.
    """
    from ..methods import Explainer, get_explainer
    from ..targets import ClassTarget
    from ..errors import SalienceError

    if method is None:
        raise SalienceError("max_sensitivity re-runs the method: pass method=...")
    explainer = method if isinstance(method, Explainer) else get_explainer(method)
    x = x.to(model.device)
    n = x.shape[0]
    clean = as_maps(maps, tuple(x.shape[-2:])).to(x.device).flatten(1).double()
    target = as_target(model, x, target)
    pert = perturbations if perturbations is not None else sensitivity_perturbations(x, n_perturbations, radius, seed)
    pert = pert.to(x.device, x.dtype)
    norm = clean.norm(dim=1)
    norm = torch.where(norm == 0, torch.ones_like(norm), norm)
    worst = torch.zeros(n, dtype=torch.float64, device=x.device)
    for k in range(pert.shape[1]):
        spec = ClassTarget(target.classes, torch.arange(n), target.class_names) if isinstance(target, ClassTarget) else target
        perturbed = explainer(model, x + pert[:, k], spec).maps.flatten(1).double()
        worst = torch.maximum(worst, (perturbed - clean).norm(dim=1) / norm)
    return worst.float()
