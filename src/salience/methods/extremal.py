"""Extremal perturbation (Fong, Patrick & Vedaldi 2019), TorchRay's formulation, batched.

For each target row and each area a, a smooth mask m of area ≈ a is optimised to maximise
the target's score on the image perturbed outside the mask (``variant="preserve"``; or
minimise it on the image perturbed inside, ``"delete"``). As TorchRay's
``extremal_perturbation`` (defaults included):

- perturbation: a pyramid of ``num_levels`` Gaussian blurs of the input, σ_l = 20·(1 − l/(L−1))
  (TorchRay's ``imsmooth``: kernel ±⌈4σ⌉, zero padding); a mask value selects the level by
  linear interpolation (1: the input, 0: the strongest blur);
- mask: parameters on a grid of ``step`` pixels, turned into a smooth mask by TorchRay's
  ``MaskGenerator`` (a soft max over the (2r+1)² neighbouring parameters weighted by
  exp(−2·relu(d/σ − 1/2)²), coldness 20, ``sigma`` pixels, margin σ, clamped to [0, 1]);
- energy: the target's score (reward) − λ·mean((sort(m) − r_a)²), with r_a the sorted
  reference vector holding a fraction a of ones; λ = 300, growing ×1.0035 per iteration;
- optimiser: SGD, learning rate 0.01, momentum 0.9 with dampening 0.9, parameters clamped
  to [0, 1] after each step, ``max_iter`` steps; the input flipped horizontally on even steps
  (``jitter``).

The map is the sum of the masks over ``areas`` (one area: the mask itself, in [0, 1]).
Rows and areas are optimised together in one batch: N·K masks per forward/backward pass,
parameters of the model frozen. The known answer is tested on a model whose score depends
on one region only, and the masks against TorchRay's own function.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from ..hooks import frozen_parameters
from ..models.model import Model
from ..targets import Target
from .base import Explainer, register

VARIANTS = ("preserve", "delete")


def smooth(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """TorchRay's ``imsmooth``: separable Gaussian, kernel ±⌈4σ⌉ normalised to 1, zero padding."""
    if sigma <= 0:
        return x
    width = math.ceil(4 * sigma)
    taps = torch.arange(-width, width + 1, dtype=torch.float32, device=x.device) / (math.sqrt(2) * sigma + torch.finfo(torch.float32).eps)
    taps = torch.exp(-taps * taps)
    taps = (taps / taps.sum()).to(x.dtype)
    c = x.shape[1]
    x = F.conv2d(x, taps.view(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(width, 0), groups=c)
    return F.conv2d(x, taps.view(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, width), groups=c)


def blur_pyramid(x: torch.Tensor, num_levels: int = 8, max_blur: float = 20.0) -> torch.Tensor:
    """(N, L, C, H, W): level l is ``x`` blurred with σ = max_blur·(1 − l/(L−1)); the last is ``x``."""
    levels = torch.linspace(0, 1, num_levels).tolist()
    return torch.stack([smooth(x, (1 - t) * max_blur) for t in levels], 1)


def apply_masks(pyramid: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Images (n, C, H, W): each pixel's pyramid level chosen by its mask value (n, 1, H, W), linearly."""
    levels = pyramid.shape[1]
    w = masks * (levels - 1)
    k = w.floor().detach()
    w = w - k
    k = k.long().clamp(0, levels - 1)
    index = k.expand(-1, pyramid.shape[2], -1, -1)[:, None]
    y0 = pyramid.gather(1, index)[:, 0]
    y1 = pyramid.gather(1, (index + 1).clamp_max(levels - 1))[:, 0]
    return (1 - w) * y0 + w * y1


class MaskGenerator:
    """TorchRay's smooth mask from a coarse parameter grid (see the module doc).

    ``shape_in``: the parameter grid; `generate` returns the mask cropped to ``shape`` and the
    full mask with its margin (``shape_out``), both (n, 1, ·, ·).
    """

    coldness = 20

    def __init__(self, shape: tuple[int, int], step: int, sigma: float, device=None):
        self.shape, self.step, self.sigma = shape, step, sigma
        self.margin = sigma
        self.padding = 1 + math.ceil((self.margin + sigma) / step)
        self.radius = 1 + math.ceil(sigma / step)
        self.shape_in = [math.ceil(z / step) for z in shape]
        self.shape_mid = [z + 2 * self.padding - (2 * self.radius + 1) + 1 for z in self.shape_in]
        self.shape_up = [step * z for z in self.shape_mid]
        self.shape_out = [z - step + 1 for z in self.shape_up]
        side = 2 * self.radius + 1
        uy, ux = torch.meshgrid(torch.arange(self.shape_out[0], dtype=torch.float32),
                                torch.arange(self.shape_out[1], dtype=torch.float32), indexing="ij")
        inv = [torch.tensor(m, dtype=torch.float32) / torch.tensor(u, dtype=torch.float32)
               for m, u in zip(self.shape_mid, self.shape_up)]
        weight = torch.zeros(1, side * side, *self.shape_out)
        for ky in range(side):
            for kx in range(side):
                iy = torch.floor(inv[0] * uy) + ky - self.padding
                ix = torch.floor(inv[1] * ux) + kx - self.padding
                delta = torch.sqrt((uy - (self.margin + step * iy)) ** 2 + (ux - (self.margin + step * ix)) ** 2)
                weight[0, ky * side + kx] = torch.exp(-2 * ((delta / sigma - 0.5).clamp(min=0) ** 2))
        self.weight = weight.to(device)

    def generate(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        side = 2 * self.radius + 1
        mask = F.unfold(params, (side, side), padding=(self.padding,) * 2)
        mask = mask.reshape(len(params), -1, *self.shape_mid)
        mask = F.interpolate(mask, size=self.shape_up, mode="nearest")
        mask = F.pad(mask, (0, -self.step + 1, 0, -self.step + 1))
        mask = self.weight * mask
        mask = (mask * F.softmax(self.coldness * mask, dim=1)).sum(dim=1, keepdim=True).clamp(0, 1)
        m = round(self.margin)
        return mask[:, :, m:m + self.shape[0], m:m + self.shape[1]], mask


def extremal_masks(model: Model, x: torch.Tensor, target: Target, areas: Sequence[float] = (0.1,),
                   max_iter: int = 800, num_levels: int = 8, step: int = 7, sigma: float = 21,
                   jitter: bool = True, variant: str = "preserve") -> torch.Tensor:
    """Masks (N, K, H, W) in [0, 1] for the N rows of ``x`` and the K ``areas`` (module doc)."""
    n, k = x.shape[0], len(areas)
    pyramid = blur_pyramid(x.detach(), num_levels).repeat_interleave(k, 0)  # mask j belongs to row j // K
    generator = MaskGenerator(tuple(x.shape[-2:]), step, sigma, x.device)
    params = torch.ones(n * k, 1, *generator.shape_in, device=x.device)
    size = math.prod(generator.shape_out)
    reference = torch.ones(n * k, size, device=x.device)
    for j, a in enumerate(list(areas) * n):
        reference[j, :int(size * (1 - a))] = 0
    rows = torch.arange(n).repeat_interleave(k)
    optimizer = torch.optim.SGD([params], lr=0.01, momentum=0.9, dampening=0.9)
    weight = 300.0
    sign = 1.0 if variant == "preserve" else -1.0
    with frozen_parameters(model.module), torch.enable_grad():
        for t in range(max_iter):
            params.requires_grad_(True)
            cropped, full = generator.generate(params)
            images = apply_masks(pyramid, cropped if variant == "preserve" else 1 - cropped)
            if jitter and t % 2 == 0:
                images = torch.flip(images, dims=(3,))
            reward = sign * target.score(model(images), rows)
            regul = -((full.reshape(n * k, -1).sort(dim=1)[0] - reference) ** 2).mean(dim=1) * weight
            optimizer.zero_grad()
            (-(reward + regul).sum()).backward()
            optimizer.step()
            params.data = params.data.clamp(0, 1)
            weight *= 1.0035
    return cropped.detach().view(n, k, *x.shape[-2:])


@register
class ExtremalPerturbation(Explainer):
    """Extremal perturbation (Fong et al. 2019, TorchRay's formulation): smooth masks of fixed area, optimised.

    Parameters
    ----------
    areas : sequence of float
        Target mask areas (fractions of the image); the map sums their masks. TorchRay: (0.1,).
    max_iter : int
        Optimisation steps (TorchRay: 800).
    num_levels, step, sigma, jitter :
        Blur pyramid levels, mask parameter step and smoothing in pixels, horizontal flips.
    variant : {"preserve", "delete"}
        Keep the score with only the mask shown, or destroy it by blurring the mask.
    batch_size : unused (all rows and areas are optimised in one batch); kept for the signature.
    """

    name = "extremal_perturbation"
    aliases = ("extremal",)
    family = "perturbation"

    def __init__(self, areas: Sequence[float] = (0.1,), max_iter: int = 800, num_levels: int = 8, step: int = 7,
                 sigma: float = 21, jitter: bool = True, variant: str = "preserve", batch_size: int | None = None):
        super().__init__(batch_size=batch_size)
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        areas = [float(a) for a in ([areas] if isinstance(areas, (int, float)) else areas)]
        if not areas or not all(0 < a < 1 for a in areas):
            raise ValueError("areas must be fractions in (0, 1)")
        self.areas, self.max_iter, self.num_levels = tuple(areas), max_iter, num_levels
        self.step, self.sigma, self.jitter, self.variant = step, sigma, jitter, variant

    def attribute(self, model: Model, x: torch.Tensor, target: Target) -> torch.Tensor:
        masks = extremal_masks(model, x, target, self.areas, self.max_iter, self.num_levels, self.step,
                               self.sigma, self.jitter, self.variant)
        return masks.sum(1)
