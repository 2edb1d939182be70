"""Random smooth masks of RISE (Petsiuk et al., 2018), streamed in batches.

Each mask is an s x s grid of independent Bernoulli(p1) cells, upsampled bilinearly to
(s + 1)·cell pixels (cell = ceil(size / s)) and cropped to the input size at a random
shift in [0, cell) along each axis. This reproduces the reference code
(``skimage.transform.resize(grid, up_size, order=1, mode="reflect", anti_aliasing=False)``
then ``[x:x + H, y:y + W]``) exactly, mirror border included.

The small random part (N grids and N shifts) is drawn at once on the CPU from a seeded
`torch.Generator`, so the masks are the same on every device and for every batch size;
the full-resolution masks are built batch by batch on the target device, so memory is
bounded by one batch whatever N is. D-RISE uses the same masks (with s = 16).
"""

from __future__ import annotations

import math
from typing import Iterator

import torch


def draw_grids(n_masks: int, grid_size: int, p1: float, cell: tuple[int, int], seed: int):
    """The random part of N masks: (N, s, s) binary grids and (N, 2) row/column shifts."""
    if not 0.0 < p1 <= 1.0:
        raise ValueError(f"p1 must be in (0, 1], got {p1}")
    if n_masks < 1 or grid_size < 1:
        raise ValueError("n_masks and grid_size must be >= 1")
    generator = torch.Generator().manual_seed(seed)
    grids = (torch.rand(n_masks, grid_size, grid_size, generator=generator) < p1).float()
    shifts = torch.stack(
        [torch.randint(0, c, (n_masks,), generator=generator) for c in cell], dim=1
    )
    return grids, shifts


def interpolation_matrix(n_in: int, n_out: int, device=None) -> torch.Tensor:
    """(n_out, n_in) weights of linear resampling with pixel-centre alignment, mirror border.

    Output pixel j reads input coordinate (j + 0.5)·n_in/n_out − 0.5 (as skimage's
    ``resize`` and ``align_corners=False``); coordinates before the first or after the last
    input centre are reflected about it (skimage's ``mode="reflect"``).
    """
    coord = (torch.arange(n_out, dtype=torch.float64, device=device) + 0.5) * (n_in / n_out) - 0.5
    low = coord.floor()
    frac = coord - low
    weights = torch.zeros(n_out, n_in, dtype=torch.float64, device=device)
    rows = torch.arange(n_out, device=device)
    for index, w in ((low, 1 - frac), (low + 1, frac)):
        weights.index_put_((rows, _mirror(index.long(), n_in)), w, accumulate=True)
    return weights.float()


def _mirror(index: torch.Tensor, n: int) -> torch.Tensor:
    if n == 1:
        return torch.zeros_like(index)
    period = 2 * (n - 1)
    index = index.remainder(period)
    return torch.where(index < n, index, period - index)


def upsample_grids(grids: torch.Tensor, shifts: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, s, s) grids and (B, 2) shifts -> (B, 1, H, W) masks, computed on the grids' device.

    The upsampled (s+1)·cell image is never built: each mask is ``R @ grid @ Cᵀ`` where R
    and C are the rows of the interpolation matrices that its crop keeps.
    """
    s, device = grids.shape[-1], grids.device
    rows = _crops(s, size[0], device).index_select(0, shifts[:, 0].to(device))  # (B, H, s)
    cols = _crops(s, size[1], device).transpose(1, 2).contiguous().index_select(0, shifts[:, 1].to(device))
    return torch.bmm(torch.bmm(rows, grids), cols).unsqueeze(1)


def _crops(grid_size: int, n: int, device) -> torch.Tensor:
    """(cell, n, s): for each shift k, rows k..k+n-1 of the (s+1)·cell x s interpolation matrix."""
    cell = math.ceil(n / grid_size)
    matrix = interpolation_matrix(grid_size, (grid_size + 1) * cell, device)
    return matrix.unfold(0, n, 1)[:cell].transpose(1, 2).contiguous()


def rise_masks(
    n_masks: int,
    size: tuple[int, int],
    grid_size: int = 7,
    p1: float = 0.5,
    seed: int = 0,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> Iterator[torch.Tensor]:
    """Yield N RISE masks in (batch, 1, H, W) float batches on ``device``, values in [0, 1]."""
    cell = tuple(math.ceil(n / grid_size) for n in size)
    grids, shifts = draw_grids(n_masks, grid_size, p1, cell, seed)
    grids = grids.to(device)
    for start in range(0, n_masks, batch_size):
        chunk = slice(start, min(start + batch_size, n_masks))
        yield upsample_grids(grids[chunk], shifts[chunk], size)
