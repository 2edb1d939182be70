"""Positive and negative perturbation (Chefer et al.): AUC while removing 10%..90% of pixels.

Positive perturbation removes the most relevant pixels first (lower AUC is better);
negative removes the least relevant first (higher is better). Removed pixels become the
reference, by default ``input-zero`` (0 in the normalised input, as Chefer's code does).
The curve starts at 0% removed. ``score="accuracy"`` records whether the target class is
still the top-1 prediction (Chefer compare with the label; pass the label as target).
"""

from __future__ import annotations

from typing import Any

import torch

from ..models.model import Model
from .curves import CurveResult, as_target, perturbation_curves, pixel_counts, trapezoid_auc
from .maps import as_maps, pixel_ranks
from .references import Reference, reference_image
from .scoring import Score, score_function

CHEFER_FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _perturbation(
    highest_first: bool,
    model: Model,
    x: torch.Tensor,
    maps: Any,
    target: Any = "top1",
    *,
    fractions: tuple[float, ...] = CHEFER_FRACTIONS,
    reference: Reference = "input-zero",
    score: Score = "probability",
    batch_size: int = 8,
    precision: str = "fp32",
    channels_last: bool | None = None,
    trace: bool = True,
) -> CurveResult:
    x = x.to(model.device)
    h, w = x.shape[-2:]
    m = as_maps(maps, (h, w)).to(x.device)
    ranks = pixel_ranks(m if highest_first else -m)
    target = as_target(model, x, target)
    counts = pixel_counts(h * w, fractions=torch.tensor(fractions))
    curves = perturbation_curves(
        model, ranks, x, reference_image(x, reference, model.preprocess), counts, target,
        score_function(score), batch_size, precision, channels_last, trace,
    )
    fr = torch.tensor(fractions, device=curves.device, dtype=torch.float32)
    return CurveResult(trapezoid_auc(curves, fr), curves, fr)


def positive_perturbation(model: Model, x: torch.Tensor, maps: Any, target: Any = "top1", **options) -> CurveResult:
    """AUC (normalised by the fraction span) removing the most relevant pixels first; lower is better."""
    return _perturbation(True, model, x, maps, target, **options)


def negative_perturbation(model: Model, x: torch.Tensor, maps: Any, target: Any = "top1", **options) -> CurveResult:
    """AUC removing the least relevant pixels first; higher is better."""
    return _perturbation(False, model, x, maps, target, **options)
