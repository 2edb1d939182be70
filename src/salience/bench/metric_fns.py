"""The metrics a benchmark can name, as one uniform call the runner makes.

A `MetricFn` is ``fn(model, x, maps, target, masks=None, boxes=None, **params) ->
MetricOutput``: per-image values (N,) and, for curve metrics, the curves (N, K). ``needs``
says which ground truth it reads (``"masks"``, ``"boxes"`` or ``None``); images that lack it
are skipped and counted by the runner. The suite's own metrics (`salience.metrics`) are
listed here; `register_metric` adds others (tests, plugins).

On a detector the runner calls it the way `salience.evaluate` takes detections: ``x`` and
``maps`` have one row per detection, ``target`` is a `DetectionTarget` whose ``image_index``
numbers the images, and a metric that needs ground truth gets per-image lists ``masks``
[(K, H, W)], ``boxes`` [(K, 4)] and ``labels=`` [(K,)] (None entries where an image lacks one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..errors import UnknownNameError


@dataclass
class MetricOutput:
    """Per-image values (N,) and optional curves (N, K) of one metric on one batch."""

    values: torch.Tensor
    curves: torch.Tensor | None = None


@dataclass
class MetricFn:
    """A named metric: the function, the ground truth it needs, and whether it takes a preset."""

    name: str
    fn: Callable[..., MetricOutput]
    needs: str | None = None
    takes_preset: bool = False

    def __call__(self, model, x, maps, target, masks=None, boxes=None, **params) -> MetricOutput:
        out = self.fn(model, x, maps, target, masks=masks, boxes=boxes, **params)
        return out if isinstance(out, MetricOutput) else MetricOutput(torch.as_tensor(out))


EXTRA_METRICS: dict[str, MetricFn] = {}


def register_metric(metric: MetricFn) -> MetricFn:
    """Make a metric available to `salience evaluate` / `salience bench` by its name."""
    EXTRA_METRICS[metric.name] = metric
    return metric


# Ground truth of the suite's localisation metrics: mIoU is defined against masks; the
# pointing games use the mask, or the boxes' area where a dataset has boxes only.
SUITE_NEEDS = {"miou": "masks", "pointing_game": "region", "energy_pointing_game": "region",
               "wrong_instance": "region", "max_sensitivity": "method"}
SUITE_PRESET = ("insertion", "deletion", "id")


def suite_metrics() -> dict[str, MetricFn]:
    """The metrics of `salience.metrics`, wrapped as `MetricFn` (empty if it is not installed)."""
    try:
        from .. import metrics as suite
    except ImportError:
        return {}
    table = {n: MetricFn(n, _suite_call(n), SUITE_NEEDS.get(n), n in SUITE_PRESET) for n in suite.METRICS}
    if hasattr(suite, "randomization_sanity"):
        table["sanity"] = MetricFn("sanity", _sanity, needs="method")
    return table


def _suite_call(name: str) -> Callable[..., MetricOutput]:
    def call(model, x, maps, target, masks=None, boxes=None, **params) -> MetricOutput:
        from .. import metrics as suite

        result = suite.evaluate(model, x, maps, target, metrics=[name], masks=masks, boxes=boxes,
                                return_curves=True, **params)[name]
        if isinstance(result, torch.Tensor):
            return MetricOutput(result)
        return MetricOutput(result.values, result.curves)

    return call


def _sanity(model, x, maps, target, method=None, layers: int = 3, seed: int = 0, **_timing) -> MetricOutput:
    """Spearman correlation with the original map after cascading randomisation of the top
    ``layers`` layers (value: the last step; curve: every step)."""
    from ..metrics import randomization_sanity

    result = randomization_sanity(model, x, target, method, layers=layers, seed=seed)
    return MetricOutput(result.values[:, -1], result.values)


def _cost(model, x, maps, target, method=None, method_seconds: float = 0.0, forward_seconds: float = 1.0,
          **_unused) -> MetricOutput:
    """Seconds of the explanation / seconds of one forward pass of the same batch (one timing each)."""
    return MetricOutput(torch.full((x.shape[0],), method_seconds / max(forward_seconds, 1e-12)))


BENCH_METRICS = {"cost": MetricFn("cost", _cost, needs="method")}


def available_metrics() -> dict[str, MetricFn]:
    """Every metric name a config may use."""
    return {**suite_metrics(), **BENCH_METRICS, **EXTRA_METRICS}


def get_metric(name: str, table: dict[str, MetricFn] | None = None) -> MetricFn:
    """A metric by name, or a one-line `UnknownNameError` naming the closest one."""
    table = available_metrics() if table is None else table
    key = name.strip().lower().replace("-", "_")
    if key not in table:
        raise UnknownNameError("metric", name, list(table))
    return table[key]


def metric_kwargs(metric: MetricFn, preset: str | None, params: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments a metric gets: its params, plus the preset where it takes one."""
    return {**({"preset": preset} if metric.takes_preset and preset else {}), **params}
