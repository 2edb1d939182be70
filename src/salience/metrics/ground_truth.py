"""Ground-truth regions (masks or boxes) on the saliency map's pixel grid.

Masks may come at any size (e.g. the original photo's): each is resized with nearest
neighbour to the map's grid. That is right when the map covers the same field of view as
the mask, which holds for the ``resize`` preprocessing (the whole photo, stretched); for
``center_crop`` / ``letterbox`` inputs, map the masks through the image's `Geometry` first.
Boxes are (x0, y0, x1, y1) in pixels of a frame of size ``frame`` = (height, width), by
default the map's grid; a pixel is inside a box when its centre is.

Either may be given per row as a tensor (N, h, w) / (N, 4), or as a list with one entry per
row: a (h, w) or (K, h, w) mask, a (4,) or (K, 4) box array (several instances: their
union), or None for a row without ground truth. Rows without ground truth (None, or an
empty mask) get NaN in every mask metric: skipped, and countable with ``isnan``.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ..errors import SalienceError


def _rows(items: Any, n: int, what: str) -> list:
    if isinstance(items, torch.Tensor) or hasattr(items, "__array__"):
        items = list(torch.as_tensor(items))
    items = list(items)
    if len(items) != n:
        raise SalienceError(f"got {what} for {len(items)} rows but {n} maps")
    return items


def masks_on_grid(masks: Any, n: int, size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """(N, H, W) bool: each row's mask (union of its instances), resized (nearest) to ``size``."""
    out = torch.zeros(n, *size, dtype=torch.bool, device=device)
    for i, m in enumerate(_rows(masks, n, "masks")):
        if m is None:
            continue
        m = torch.as_tensor(m, device=device)
        if m.dim() == 3:
            m = m.bool().any(0)
        if m.dim() != 2:
            raise SalienceError(f"mask {i} must be (H, W) or (K, H, W); got shape {tuple(m.shape)}")
        m = m.bool()
        if tuple(m.shape) != tuple(size):
            m = F.interpolate(m[None, None].float(), size=size, mode="nearest")[0, 0] > 0.5
        out[i] = m
    return out


def boxes_on_grid(
    boxes: Any, n: int, size: tuple[int, int], device: torch.device, frame: Sequence[int] | None = None
) -> torch.Tensor:
    """(N, H, W) bool: pixels whose centre lies in any of the row's boxes."""
    h, w = size
    fh, fw = frame if frame is not None else size
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * (fh / h)
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * (fw / w)
    out = torch.zeros(n, h, w, dtype=torch.bool, device=device)
    for i, b in enumerate(_rows(boxes, n, "boxes")):
        if b is None:
            continue
        b = torch.as_tensor(b, device=device, dtype=torch.float32).reshape(-1, 4)
        inside_y = (ys[None, :] >= b[:, 1:2]) & (ys[None, :] <= b[:, 3:4])  # (K, H)
        inside_x = (xs[None, :] >= b[:, 0:1]) & (xs[None, :] <= b[:, 2:3])  # (K, W)
        out[i] = (inside_y[:, :, None] & inside_x[:, None, :]).any(0)
    return out


def ground_truth(
    n: int, size: tuple[int, int], device: torch.device, masks: Any = None, boxes: Any = None,
    box_frame: Sequence[int] | None = None,
) -> torch.Tensor:
    """The ground-truth region per row from masks (preferred) or boxes."""
    if masks is not None:
        return masks_on_grid(masks, n, size, device)
    if boxes is not None:
        return boxes_on_grid(boxes, n, size, device, box_frame)
    raise SalienceError("this metric needs ground truth: pass masks=... or boxes=...")
