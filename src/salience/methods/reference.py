"""Reference maps every results table needs as a floor: random noise and a centred Gaussian."""

from __future__ import annotations

import torch

from ..models.model import Model
from ..targets import Target
from .base import Explainer, register


@register
class RandomMap(Explainer):
    """Random baseline: uniform noise, reproducible from ``seed`` (same seed, same maps)."""

    name = "random"
    family = "reference"

    def __init__(self, seed: int = 0, batch_size: int = 32):
        super().__init__(batch_size=batch_size)
        self.seed = seed

    def attribute(self, model: Model, x: torch.Tensor, target: Target) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed)
        return torch.rand((x.shape[0], *x.shape[-2:]), generator=generator).to(x.device)


@register
class CenterMap(Explainer):
    """Centre-bias baseline: a Gaussian centred on the image, ``sigma`` as a fraction of each side."""

    name = "center"
    family = "reference"

    def __init__(self, sigma: float = 0.25, batch_size: int = 32):
        super().__init__(batch_size=batch_size)
        self.sigma = sigma

    def attribute(self, model: Model, x: torch.Tensor, target: Target) -> torch.Tensor:
        h, w = x.shape[-2:]
        ys = (torch.arange(h, device=x.device, dtype=torch.float32) + 0.5) / h - 0.5
        xs = (torch.arange(w, device=x.device, dtype=torch.float32) + 0.5) / w - 0.5
        bump = torch.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * self.sigma**2))
        return bump.expand(x.shape[0], h, w).clone()
