"""Checking saliency maps before a metric reads them, and ordering their pixels."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..errors import SalienceError


def as_maps(maps: Any, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Maps (N, h, w) as float32, bilinearly resized to ``size`` = (H, W) when given.

    Accepts a tensor (N, h, w) or (N, 1, h, w) or an `Explanation` (its ``maps``).
    NaN or infinite values raise a `SalienceError`: no metric has a meaning for them.
    """
    maps = getattr(maps, "maps", maps)
    if not isinstance(maps, torch.Tensor):
        maps = torch.as_tensor(maps)
    if maps.dim() == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.dim() != 3:
        raise SalienceError(f"saliency maps must have shape (N, H, W); got {tuple(maps.shape)}")
    maps = maps.detach().float()
    if not torch.isfinite(maps).all():
        bad = (~torch.isfinite(maps)).flatten(1).any(1).nonzero()[:, 0].tolist()
        raise SalienceError(f"saliency maps {bad} contain NaN or infinite values")
    if size is not None and tuple(maps.shape[-2:]) != tuple(size):
        maps = F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return maps


def pixel_ranks(maps: torch.Tensor) -> torch.Tensor:
    """Rank (N, H*W) of every pixel, 0 = most salient.

    A hard, stable descending sort: equal values keep row-major order (top-left first), so
    a constant map removes pixels in reading order. The result is deterministic.
    """
    flat = maps.flatten(1)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    return ranks


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """Each map scaled to [0, 1]; a constant map becomes all zeros."""
    flat = maps.flatten(1)
    lo = flat.min(1).values.view(-1, 1, 1)
    span = flat.max(1).values.view(-1, 1, 1) - lo
    return torch.where(span > 0, (maps - lo) / span.clamp_min(1e-12), torch.zeros_like(maps))
