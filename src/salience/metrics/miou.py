"""mIoU: the thresholded map against the ground-truth mask, per image.

Each map is min-max scaled to [0, 1] and thresholded: ``threshold=0.5`` (the ALA paper's
protocol) keeps pixels strictly above 0.5; ``threshold="mean"`` keeps pixels strictly above
the map's mean (Chefer's segmentation protocol). A constant map selects no pixel, so its IoU
is 0. Rows without ground truth give NaN; the mean over images is ``nanmean``.
"""

from __future__ import annotations

from typing import Any

import torch

from .ground_truth import ground_truth
from .maps import as_maps, minmax


def binarize(maps: torch.Tensor, threshold: float | str = 0.5) -> torch.Tensor:
    """(N, H, W) bool: min-max scaled maps above ``threshold`` (a number, or ``"mean"``)."""
    scaled = minmax(maps)
    if threshold == "mean":
        return scaled > scaled.flatten(1).mean(1).view(-1, 1, 1)
    if isinstance(threshold, str):
        raise ValueError(f"threshold must be a number or 'mean', got {threshold!r}")
    return scaled > float(threshold)


def miou(
    model: Any, x: torch.Tensor | None, maps: Any, target: Any = None, *, masks: Any = None, boxes: Any = None,
    threshold: float | str = 0.5, box_frame: Any = None,
) -> torch.Tensor:
    """Per-image IoU (N,) of the binarised map with the ground-truth mask (or boxes)."""
    m = as_maps(maps)
    gt = ground_truth(m.shape[0], tuple(m.shape[-2:]), m.device, masks, boxes, box_frame)
    pred = binarize(m, threshold)
    inter = (pred & gt).flatten(1).sum(1).float()
    union = (pred | gt).flatten(1).sum(1).float()
    iou = inter / union.clamp_min(1)
    return torch.where(gt.flatten(1).any(1), iou, torch.full_like(iou, float("nan")))
