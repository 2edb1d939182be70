"""Test-only pieces for the benchmark runner, importable as a plugin (``plugins: [tests.bench_plugin]``).

A tiny classifier (``bench_tiny``), a deterministic method with an optional delay
(``test_channel_mean``), a synthetic dataset (``synthetic:N``; even images have a mask and a
box) and four metrics: ``test_deletion`` (a curve), ``test_energy`` (needs masks),
``test_region_energy`` (the same, on masks or else boxes) and ``test_mean``. Setting ``BENCH_TEST_LOG`` makes the method append ``pid image`` lines there.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
from PIL import Image
from torch import nn

import salience as sl
from salience.bench.datasets import EXTRA_DATASETS, Sample, register_dataset
from salience.bench.metric_fns import EXTRA_METRICS, MetricFn, MetricOutput, register_metric
from salience.methods import REGISTRY, Explainer, register
from salience.models import BUILTIN


def load_tiny() -> sl.Model:
    """A fixed-seed 3-class CNN on 32×32 inputs."""
    gen = torch.Generator().manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    return sl.wrap(module, input_size=32, class_names=["a", "b", "c"], name="bench_tiny")


class ChannelMean(Explainer):
    """Test only: |x| averaged over channels, scaled by (1 + target class); optional delay and
    ``noise``: seeded noise drawn per row of the batch, so maps depend on the batch (as `random`'s do)."""

    name = "test_channel_mean"
    family = "test"

    def __init__(self, delay: float = 0.0, noise: float = 0.0, batch_size: int = 32):
        super().__init__(batch_size=batch_size)
        self.delay = delay
        self.noise = noise

    def attribute(self, model, x, target):
        log = os.environ.get("BENCH_TEST_LOG")
        if log:
            with open(log, "a") as f:
                f.write("".join(f"{os.getpid()} {float(x[i].sum()):.6f}\n" for i in range(len(x))))
        time.sleep(self.delay * len(x))
        maps = x.abs().mean(1) * (1 + target.classes.to(x.device).float().view(-1, 1, 1))
        if self.noise:
            maps = maps + self.noise * torch.rand(maps.shape, generator=torch.Generator().manual_seed(0))
        return maps


def synthetic(arg: str) -> list[Sample]:
    """``synthetic:N``: N seeded 40×48 photos; even ones have a mask (top-left block) and its box,
    images 1, 5, 9, ... only a box (the bottom-right block), the others nothing."""
    out = []
    for i in range(int(arg)):
        rng = np.random.default_rng(i)
        image = Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
        masks = boxes = None
        if i % 2 == 0:
            masks = torch.zeros(1, 40, 48, dtype=torch.bool)
            masks[0, :20, :24] = True
            boxes = torch.tensor([[0.0, 0.0, 24.0, 20.0]])
        elif i % 4 == 1:
            boxes = torch.tensor([[24.0, 20.0, 48.0, 40.0]])
        out.append(Sample(image, f"syn{i:03d}", label=i % 3, masks=masks, boxes=boxes))
    return out


def _deletion(model, x, maps, target, masks=None, boxes=None, steps: int = 4) -> MetricOutput:
    """Probability of the target after zeroing the top fraction k/steps of pixels, k = 0..steps."""
    n, _, h, w = x.shape
    order = maps.flatten(1).argsort(1, descending=True)
    curve = []
    with torch.inference_mode():
        for k in range(steps + 1):
            keep = torch.ones(n, h * w, device=x.device)
            keep.scatter_(1, order[:, : round(k / steps * h * w)], 0.0)
            probs = model(x * keep.view(n, 1, h, w)).softmax(1)
            curve.append(probs.gather(1, target.classes.to(x.device)[:, None])[:, 0])
    curves = torch.stack(curve, 1)
    return MetricOutput(values=torch.trapezoid(curves, dx=1.0 / steps, dim=1), curves=curves)


def _energy(model, x, maps, target, masks=None, boxes=None) -> MetricOutput:
    """Share of the positive map inside the mask."""
    pos = maps.clamp_min(0)
    return MetricOutput((pos * masks).flatten(1).sum(1) / pos.flatten(1).sum(1).clamp_min(1e-12))


def _mean(model, x, maps, target, masks=None, boxes=None, delay: float = 0.0) -> MetricOutput:
    time.sleep(delay)
    return MetricOutput(maps.flatten(1).mean(1))


METRICS = [MetricFn("test_deletion", _deletion), MetricFn("test_energy", _energy, needs="masks"),
           MetricFn("test_mean", _mean), MetricFn("test_region_energy", _energy, needs="region")]


def register_all() -> None:
    """Put the model, method, dataset kind and metrics in their registries."""
    BUILTIN["bench_tiny"] = "tests.bench_plugin:load_tiny"
    register(ChannelMean)
    register_dataset("synthetic", synthetic)
    for metric in METRICS:
        register_metric(metric)


def unregister_all() -> None:
    """Take them out again, so other test files see the registries as shipped."""
    BUILTIN.pop("bench_tiny", None)
    REGISTRY.pop(ChannelMean.name, None)
    EXTRA_DATASETS.pop("synthetic", None)
    for metric in METRICS:
        EXTRA_METRICS.pop(metric.name, None)


register_all()  # importing the module (``plugins: [tests.bench_plugin]``) registers everything
