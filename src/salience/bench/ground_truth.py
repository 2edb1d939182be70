"""Masks and boxes from photo pixels to the model input, where the maps live."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import SalienceError
from ..preprocessing import Geometry


def mask_to_input(masks: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """Union of instance masks (K, h, w) on the photo -> one (H, W) bool mask on the input."""
    return masks_to_input(masks, geometry).any(0)


def masks_to_input(masks: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """Instance masks (K, h, w) on the photo -> (K, H, W) bool masks on the input.

    The part of the photo the model sees (``source_box``) is resized (nearest) onto where it
    lies in the input (``target_box``); padding is background.
    """
    h0, w0 = geometry.original_size
    if tuple(masks.shape[-2:]) != (h0, w0):
        raise SalienceError(
            f"mask of size {tuple(masks.shape[-2:])} does not match its image of size {(h0, w0)} (height, width)"
        )
    masks = masks.reshape(-1, h0, w0).float()
    sx0, sy0, sx1, sy1 = (round(v) for v in geometry.source_box)
    tx0, ty0, tx1, ty1 = (round(v) for v in geometry.target_box)
    region = F.interpolate(masks[None, :, sy0:sy1, sx0:sx1], size=(ty1 - ty0, tx1 - tx0), mode="nearest")[0]
    out = torch.zeros(len(masks), *geometry.input_size, dtype=torch.bool)
    out[:, ty0:ty1, tx0:tx1] = region > 0.5
    return out


def boxes_to_input(boxes: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """(K, 4) x0, y0, x1, y1 boxes in photo pixels -> input pixels (clipped to the input)."""
    sx0, sy0, sx1, sy1 = geometry.source_box
    tx0, ty0, tx1, ty1 = geometry.target_box
    scale = torch.tensor([(tx1 - tx0) / (sx1 - sx0), (ty1 - ty0) / (sy1 - sy0)] * 2)
    out = (boxes.float() - torch.tensor([sx0, sy0, sx0, sy0])) * scale + torch.tensor([tx0, ty0, tx0, ty0])
    h, w = geometry.input_size
    return torch.stack([out[:, 0].clamp(0, w), out[:, 1].clamp(0, h), out[:, 2].clamp(0, w), out[:, 3].clamp(0, h)], 1)


def boxes_mask(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(H, W) bool: the pixels whose centre lies inside any of the (K, 4) boxes."""
    h, w = size
    ys = torch.arange(h, dtype=torch.float32) + 0.5
    xs = torch.arange(w, dtype=torch.float32) + 0.5
    inside_y = (ys[None] >= boxes[:, 1:2]) & (ys[None] <= boxes[:, 3:4])
    inside_x = (xs[None] >= boxes[:, 0:1]) & (xs[None] <= boxes[:, 2:3])
    return (inside_y[:, :, None] & inside_x[:, None, :]).any(0)
