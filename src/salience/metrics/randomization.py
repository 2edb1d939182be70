"""Model-randomisation sanity check (Adebayo et al., 2018), cascading from the top.

On a deep copy of the network, layers with parameters are re-initialised one after the
other from the output towards the input; after each, the map is recomputed with the same
method and target and compared with the original map by Spearman rank correlation. A
method that reads the model must lose correlation as layers are randomised.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..methods import Explainer, get_explainer
from ..models.model import Model
from .curves import as_target


@dataclass
class SanityResult:
    """Spearman correlations (N, steps) with the original map; ``layers[s]`` is the deepest
    layer randomised at step s (all layers above it are randomised too)."""

    values: torch.Tensor
    layers: list[str]


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation per row of (N, ...) tensors, with average ranks for ties.

    NaN where a row is constant (no ranking exists).
    """
    ra, rb = _average_ranks(a.flatten(1).double()), _average_ranks(b.flatten(1).double())
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    denom = (ra.square().sum(1) * rb.square().sum(1)).sqrt()
    return ((ra * rb).sum(1) / denom).float()


def _average_ranks(v: torch.Tensor) -> torch.Tensor:
    ranks = torch.empty_like(v)
    for i, row in enumerate(v):
        values, order = torch.sort(row)
        _, inverse, counts = torch.unique_consecutive(values, return_inverse=True, return_counts=True)
        first = torch.cumsum(counts, 0) - counts
        ranks[i, order] = (first + (counts - 1) / 2).double()[inverse]
    return ranks


def _parameterised_layers(module: nn.Module) -> list[str]:
    """Names of modules owning parameters directly, in registration (roughly forward) order."""
    return [name for name, m in module.named_modules() if name and any(True for _ in m.parameters(recurse=False))]


def _reinitialise(layer: nn.Module, generator: torch.Generator) -> None:
    if hasattr(layer, "reset_parameters"):
        layer.reset_parameters()
        return
    with torch.no_grad():
        for p in layer.parameters(recurse=False):
            p.copy_(torch.randn(p.shape, generator=generator).to(p) * 0.02)


def randomization_sanity(
    model: Model, x: torch.Tensor, target: Any, method: Any, layers: int | list[str] | None = None,
    seed: int = 0, **params,
) -> SanityResult:
    """Cascading randomisation: correlations (N, steps) of each step's maps with the original.

    ``method`` is a method name or an `Explainer`; ``layers`` is the number of layers to
    randomise from the top (None: all with parameters) or their names (randomised in the
    order given, cumulatively). The model itself is never changed.
    """
    explainer = method if isinstance(method, Explainer) else get_explainer(method, **params)
    x = x.to(model.device)
    target = as_target(model, x, target)
    original = explainer(model, x, target).maps
    names = _parameterised_layers(model.module)[::-1]
    if isinstance(layers, int):
        names = names[:layers]
    elif layers is not None:
        names = list(layers)
    copy_ = copy.copy(model)
    copy_.module = copy.deepcopy(model.module)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    correlations = []
    for name in names:
        _reinitialise(copy_.layer(name), generator)
        correlations.append(spearman(original, explainer(copy_, x, target).maps))
    values = torch.stack(correlations, 1) if correlations else torch.empty(len(target), 0)
    return SanityResult(values, names)
