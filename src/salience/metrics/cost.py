"""Cost of an explanation: seconds of one explainer call / seconds of one forward pass."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import torch

from ..models.model import Model
from .curves import as_target


def median_seconds(fn: Callable[[], Any], repeats: int, device: torch.device) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` calls (CUDA work waited for)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cost_ratio(model: Model, x: torch.Tensor, target: Any, method: Any, repeats: int = 3, **params) -> torch.Tensor:
    """Median explainer seconds / median forward seconds on the same batch, per image (N,).

    One warm-up call of each comes first. The ratio is one number for the batch; it is
    repeated for each image so it fits the per-image tables.
    """
    from ..methods import Explainer, get_explainer

    explainer = method if isinstance(method, Explainer) else get_explainer(method, **params)
    x = x.to(model.device)
    target = as_target(model, x, target)

    def forward():
        with torch.inference_mode():
            model(x)

    forward()
    explainer(model, x, target)
    ratio = median_seconds(lambda: explainer(model, x, target), repeats, model.device) / median_seconds(
        forward, repeats, model.device
    )
    return torch.full((len(target),), ratio)
