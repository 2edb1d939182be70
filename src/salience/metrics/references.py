"""What removed pixels become: the reference image of insertion / deletion.

All references are built in the model's input space (normalised tensors):

- ``"zero"``: black in pixel space, i.e. ``(0 - mean) / std`` per channel;
- ``"input-zero"``: 0 in the normalised input, i.e. the normalisation's mean colour
  (what RISE's and Chefer's code actually use when they write ``zeros_like``);
- ``"mean"``: each image's own mean colour;
- ``"blur"``: RISE's blur, a depthwise 11×11 Gaussian (sigma 5) with zero padding,
  applied to the normalised input as RISE's code does;
- or a tensor broadcastable to (N, 3, H, W).
"""

from __future__ import annotations

from typing import Union

import torch
import torch.nn.functional as F

from ..preprocessing import Preprocess

Reference = Union[str, torch.Tensor]
REFERENCES = ("zero", "input-zero", "mean", "blur")


def rise_kernel(size: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """RISE's ``gkern``: ``scipy.ndimage.gaussian_filter`` of a centred delta, (size, size).

    scipy's filter is separable, truncates at 4 sigma and reflects at the array's edges
    (mode ``reflect``: d c b a | a b c d | d c b a), so the kernel is not exactly a sampled
    Gaussian; it is rebuilt here in torch, tap by tap.
    """
    radius = int(4.0 * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    taps = torch.exp(-0.5 * (offsets / sigma) ** 2)
    taps = taps / taps.sum()
    centre = size // 2
    line = torch.zeros(size, dtype=torch.float64)
    for i in range(size):
        for j, offset in enumerate(range(-radius, radius + 1)):
            p = (i + offset) % (2 * size)
            if (p if p < size else 2 * size - 1 - p) == centre:
                line[i] += taps[j]
    return torch.outer(line, line).float()


def blur(x: torch.Tensor, size: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """RISE's blur of a (N, C, H, W) batch: depthwise conv with `rise_kernel`, zero padding."""
    kernel = rise_kernel(size, sigma).to(x.device, x.dtype)
    weight = kernel.expand(x.shape[1], 1, size, size)
    return F.conv2d(x, weight, padding=size // 2, groups=x.shape[1])


def reference_image(x: torch.Tensor, reference: Reference, preprocess: Preprocess | None) -> torch.Tensor:
    """The reference (N, 3, H, W) for the normalised batch ``x``."""
    if isinstance(reference, torch.Tensor):
        return reference.to(x.device, x.dtype).expand_as(x)
    if reference == "zero":
        mean, std = (preprocess.mean, preprocess.std) if preprocess is not None else ((0.0,) * 3, (1.0,) * 3)
        black = -torch.tensor(mean, device=x.device, dtype=x.dtype) / torch.tensor(std, device=x.device, dtype=x.dtype)
        return black.view(1, -1, 1, 1).expand_as(x)
    if reference == "input-zero":
        return torch.zeros_like(x)
    if reference == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    if reference == "blur":
        return blur(x)
    raise ValueError(f"reference must be one of {REFERENCES} or a tensor, got {reference!r}")
