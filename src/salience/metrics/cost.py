"""Cost of an explanation: seconds of one explainer call / seconds of one forward pass."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import torch

from ..methods import Explainer, get_explainer
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


def alternating_seconds(fn: Callable[[], Any], reference: Callable[[], Any], repeats: int,
                        device: torch.device) -> tuple[float, float]:
    """Median seconds of ``fn()`` and of ``reference()``, called alternately ``repeats`` times
    (after one warm-up each), so that a machine's drifting load hits both alike."""
    fn(), reference()
    pairs = [(median_seconds(fn, 1, device), median_seconds(reference, 1, device)) for _ in range(repeats)]
    return tuple(statistics.median(column) for column in zip(*pairs))


def cost_ratio(model: Model, x: torch.Tensor, target: Any, method: Any, repeats: int = 3, **params) -> torch.Tensor:
    """Median explainer seconds / median forward seconds on the same batch, per image (N,).

    The two are called alternately after one warm-up each (`alternating_seconds`). The ratio
    is one number for the batch; it is repeated for each image so it fits the per-image tables.
    """
    explainer = method if isinstance(method, Explainer) else get_explainer(method, **params)
    x = x.to(model.device)
    target = as_target(model, x, target)

    def forward():
        with torch.inference_mode():
            model(x)

    t_explainer, t_forward = alternating_seconds(lambda: explainer(model, x, target), forward, repeats, model.device)
    return torch.full((len(target),), t_explainer / t_forward)
