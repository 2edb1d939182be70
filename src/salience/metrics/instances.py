"""Instance ground truth for detector metrics: which object a detection is, and where the others are.

Ground truth comes per image, one entry per object: ``masks[b]`` (K, h, w) instance masks (any
size; resized with nearest neighbour to the map's grid), ``boxes[b]`` (K, 4) boxes (x0, y0, x1,
y1) in pixels of ``box_frame`` (default the map's grid, i.e. input pixels), ``labels[b]`` (K,)
class indices. Masks are preferred for regions; boxes are derived from masks when not given.

Matching (`match_instances`): a detection is the ground-truth object of the same class (any
class when labels are not given) with which its box has the highest IoU, if that IoU ≥
``iou_threshold`` (0.5, the PASCAL / COCO AP@0.5 criterion); otherwise it is unmatched. Each
detection is matched on its own (no one-to-one assignment), since every explained detection is
scored separately. Unmatched rows get NaN in every instance metric.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..errors import SalienceError, TargetError
from ..methods.drise import box_iou
from ..targets import DetectionTarget
from .ground_truth import boxes_on_grid, masks_on_grid
from .maps import as_maps


def match_instances(det_boxes: torch.Tensor, det_classes: torch.Tensor, gt_boxes: Sequence[torch.Tensor],
                    gt_labels: Sequence[torch.Tensor | None] | None = None, iou_threshold: float = 0.5) -> torch.Tensor:
    """(N,) index of each detection's object in its own image's ground truth, −1 if none.

    ``det_boxes`` (N, 4), ``det_classes`` (N,); ``gt_boxes[r]`` (K_r, 4) and ``gt_labels[r]``
    (K_r,) are the objects of row r's image, boxes in the same frame as the detections.
    """
    if len(gt_boxes) != len(det_boxes):
        raise SalienceError(f"ground truth for {len(gt_boxes)} rows but {len(det_boxes)} detections")
    out = torch.full((len(det_boxes),), -1, dtype=torch.long)
    for r, boxes in enumerate(gt_boxes):
        if boxes is None or len(boxes) == 0:
            continue
        iou = box_iou(det_boxes[r].float().cpu(), torch.as_tensor(boxes).float().cpu().reshape(-1, 4))
        labels = None if gt_labels is None else gt_labels[r]
        if labels is not None:
            iou = torch.where(torch.as_tensor(labels).cpu() == int(det_classes[r]), iou, torch.zeros_like(iou))
        best = int(iou.argmax())
        if iou[best] >= iou_threshold:
            out[r] = best
    return out


@dataclass
class InstanceRegions:
    """Per explained detection: its object's region, the other objects' region, the match."""

    own: torch.Tensor  # (N, H, W) bool
    others: torch.Tensor  # (N, H, W) bool: union of the other objects, minus the own object
    matched: torch.Tensor  # (N,) long, −1 where unmatched


def _per_image(items: Any, n_images: int, what: str) -> list:
    if items is None:
        return [None] * n_images
    items = list(items)
    if len(items) != n_images:
        raise SalienceError(f"got {what} for {len(items)} images but the detections come from {n_images}")
    return items


def instance_regions(target: DetectionTarget, size: tuple[int, int], device: torch.device, masks: Any = None,
                     boxes: Any = None, labels: Any = None, iou_threshold: float = 0.5,
                     box_frame: Sequence[int] | None = None) -> InstanceRegions:
    """Match each target row to its image's objects and rasterise the regions on ``size``."""
    if not isinstance(target, DetectionTarget) or target.boxes is None:
        raise TargetError("instance metrics need detection targets with boxes (an Explanation of a detector)")
    if masks is None and boxes is None:
        raise SalienceError("instance metrics need ground truth: masks=[(K, H, W) per image] or boxes=[(K, 4) ...]")
    n_images = int(target.image_index.max()) + 1
    masks_b = _per_image(masks, n_images, "masks")
    boxes_b = _per_image(boxes, n_images, "boxes")
    labels_b = _per_image(labels, n_images, "labels")
    regions, frames = [], []  # per image: (K, H, W) bool regions and (K, 4) boxes on the grid
    for b in range(n_images):
        if masks_b[b] is not None:
            m = torch.as_tensor(masks_b[b], device=device).bool()
            m = m[None] if m.dim() == 2 else m
            region = masks_on_grid(list(m), len(m), size, device) if len(m) else m.new_zeros(0, *size)
        elif boxes_b[b] is not None:
            kb = torch.as_tensor(boxes_b[b], dtype=torch.float32).reshape(-1, 4)
            region = boxes_on_grid(list(kb), len(kb), size, device, box_frame)
        else:
            region = torch.zeros(0, *size, dtype=torch.bool, device=device)
        if boxes_b[b] is not None:
            kb = torch.as_tensor(boxes_b[b], dtype=torch.float32).reshape(-1, 4)
            if box_frame is not None:
                kb = kb * torch.tensor([size[1] / box_frame[1], size[0] / box_frame[0]] * 2)
        else:
            kb = _mask_boxes(region)
        regions.append(region)
        frames.append(kb)
    rows = target.image_index.tolist()
    matched = match_instances(target.boxes.cpu(), target.classes, [frames[b] for b in rows],
                              None if labels is None else [labels_b[b] for b in rows], iou_threshold)
    own = torch.zeros(len(rows), *size, dtype=torch.bool, device=device)
    others = torch.zeros_like(own)
    for r, (b, k) in enumerate(zip(rows, matched.tolist())):
        if k < 0:
            continue
        own[r] = regions[b][k]
        rest = torch.ones(len(regions[b]), dtype=torch.bool)
        rest[k] = False
        others[r] = regions[b][rest.to(device)].any(0) & ~own[r] if rest.any() else False
    return InstanceRegions(own, others, matched)


def _mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(K, 4) tight pixel-edge boxes of (K, H, W) masks (empty masks: a zero box)."""
    out = torch.zeros(len(masks), 4)
    for k, m in enumerate(masks):
        ys, xs = m.nonzero(as_tuple=True)
        if len(ys):
            out[k] = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
    return out


def own_instance_masks(regions: InstanceRegions) -> list[torch.Tensor | None]:
    """Each row's own object mask, None where unmatched (the mask metrics then give NaN)."""
    return [m if k >= 0 else None for m, k in zip(regions.own, regions.matched.tolist())]


def wrong_instance(
    model: Any, x: torch.Tensor | None, maps: Any, target: DetectionTarget, *, masks: Any = None, boxes: Any = None,
    labels: Any = None, iou_threshold: float = 0.5, box_frame: Sequence[int] | None = None,
) -> torch.Tensor:
    """Per detection, the share of the map's positive energy on the image's OTHER objects, in [0, 1].

    Lower is better: an instance-specific explanation keeps its energy off the other objects
    (pixels shared with the explained object count as its own). NaN for unmatched detections
    and for images with no other object.
    """
    m = as_maps(maps)
    regions = instance_regions(target, tuple(m.shape[-2:]), m.device, masks, boxes, labels, iou_threshold, box_frame)
    energy = m.clamp_min(0).flatten(1)
    total = energy.sum(1)
    share = torch.where(total > 0, (energy * regions.others.flatten(1)).sum(1) / total.clamp_min(1e-30),
                        torch.zeros_like(total))
    valid = (regions.matched.to(m.device) >= 0) & regions.others.flatten(1).any(1)
    return torch.where(valid, share, torch.full_like(share, float("nan")))
