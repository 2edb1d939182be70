"""Pointing game (Zhang et al.) and energy-based pointing game (Score-CAM).

Pointing game: a hit (1.0) when the map's maximum lies in the ground truth, or within
``tolerance`` pixels (Euclidean, on the map's grid; the usual value is 15) of it. With
several equal maxima the first in row-major order counts, so a constant map points at the
top-left pixel. Energy-based pointing game: Σ_inside L⁺ / Σ L⁺ with L⁺ = max(L, 0); a map
with no positive value has no energy anywhere and scores 0. Rows without ground truth: NaN.
"""

from __future__ import annotations

from typing import Any

import torch

from .ground_truth import ground_truth
from .maps import as_maps


def _valid(values: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    return torch.where(gt.flatten(1).any(1), values, torch.full_like(values, float("nan")))


def pointing_game(
    model: Any, x: torch.Tensor | None, maps: Any, target: Any = None, *, masks: Any = None, boxes: Any = None,
    tolerance: float = 0.0, box_frame: Any = None,
) -> torch.Tensor:
    """Per-image hit (1.0) or miss (0.0) of the map's maximum."""
    m = as_maps(maps)
    n, h, w = m.shape
    gt = ground_truth(n, (h, w), m.device, masks, boxes, box_frame)
    peak = m.flatten(1).argmax(1)
    py, px = (peak // w).float(), (peak % w).float()
    ys = torch.arange(h, device=m.device, dtype=torch.float32).view(1, h, 1)
    xs = torch.arange(w, device=m.device, dtype=torch.float32).view(1, 1, w)
    near = (ys - py.view(-1, 1, 1)) ** 2 + (xs - px.view(-1, 1, 1)) ** 2 <= float(tolerance) ** 2
    hit = (near & gt).flatten(1).any(1).float()
    return _valid(hit, gt)


def energy_pointing_game(
    model: Any, x: torch.Tensor | None, maps: Any, target: Any = None, *, masks: Any = None, boxes: Any = None,
    box_frame: Any = None,
) -> torch.Tensor:
    """Per-image share of the map's positive energy inside the ground truth, in [0, 1]."""
    m = as_maps(maps)
    gt = ground_truth(m.shape[0], tuple(m.shape[-2:]), m.device, masks, boxes, box_frame)
    energy = m.clamp_min(0).flatten(1)
    inside = (energy * gt.flatten(1)).sum(1)
    total = energy.sum(1)
    return _valid(torch.where(total > 0, inside / total.clamp_min(1e-30), torch.zeros_like(total)), gt)
