"""Running a grid on a detector: one result row per kept detection, same store and resume rules.

Per batch the detector runs once (`detection_inputs.prepare_detections`); its kept detections
(capped by the grid's ``max_detections`` per image; ``score_threshold`` overrides the model's)
are the targets every method explains, in one call per (batch, method). Each detection gets a
row per metric, keyed ``<image id>/q<query>c<class>``, with its class, score, query and matched
ground-truth object (``object``: −1 unmatched, −2 no ground truth) in ``extra``. Metrics get the
instance ground truth of the detections' images (per-image masks, boxes and class labels on the
input), as `salience.evaluate` takes it, so a stored value is what ``sl.evaluate`` gives for the
same detections. An image without any kept detection gets one NULL row per method and metric,
keyed by its image id and marked ``skipped: no detections``.

A method that cannot explain the detector (``chefer_detr`` on a deformable DETR, a classifier-only
method) raises a `SalienceError`; its rows are NULL with that one-line ``error``, and the run goes
on. ``cost`` is the batch's explanation time over one detector forward pass of the same batch
(every kept detection of an image explained, per image forward); the rows' ``method_seconds`` is
the explanation time per detection.

Resume: a (batch, method) unit is skipped when every row it would write is stored (the detections
are found again by the one forward pass, which is deterministic); a partly stored unit is redone
whole, as for classifiers.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import torch

from ..errors import SalienceError
from ..models.detection import DetectorModel
from .datasets import Sample, as_sample
from .detection_inputs import DetectionInputs, prepare_detections
from .grid import Plan, ResolvedMethod, ResolvedMetric
from .store import ResultRow, ResultStore
from .units import RunStats, done_by_image, forward_seconds, seed_unit

NO_DETECTIONS = "no detections"
REASONS = {"masks": "no masks", "region": "no masks or boxes"}


def run_detector(plan: Plan, store: ResultStore, model_name: str, model: DetectorModel, batches: list[list[int]],
                 dataset: Any, resume: bool, stats: RunStats, advance: Callable[[str], None]) -> None:
    """Every batch × method of one detector into ``store``."""
    grid = plan.grid
    if grid.score_threshold is not None:
        model.score_threshold = float(grid.score_threshold)
    done = {m.key: done_by_image(store, model_name, m) for m in plan.methods} if resume else {}
    expected = {(m.name, m.key) for m in plan.metrics}
    for batch in batches:
        inputs = prepare_detections(model, [as_sample(dataset[i], i) for i in batch], grid.max_detections)
        stats.empty_images += len(inputs.empty)
        keys = [inputs.row_key(r) for r in range(len(inputs))] + [s.image_id for s in inputs.empty]
        for method in plan.methods:
            pending = not resume or any(not expected <= done[method.key].get(k, set()) for k in keys)
            stats.resumed += not pending
            if pending:
                stats.rows += _run_unit(store, grid.name, model_name, model, method, plan.metrics, inputs, stats)
                stats.units += 1
            advance(f"{model_name} · {method.name}")


def _run_unit(store: ResultStore, run: str, model_name: str, model: DetectorModel, method: ResolvedMethod,
              metrics: list[ResolvedMetric], inputs: DetectionInputs, stats: RunStats) -> int:
    """Explain one batch's detections with one method, score them with every metric, store the rows."""
    seed_unit(method.name, [s.image_id for s in inputs.samples])
    expl, failure = None, None
    if len(inputs):
        try:
            expl = method.explainer(model, inputs.x, inputs.target)
        except SalienceError as err:
            failure = str(err)
            stats.error(f"{model_name} · {method.name}: {failure}")
    timing: dict[str, Any] = {}
    if expl is not None:
        timing = {"method": method.explainer, "method_seconds": expl.seconds}
        if any(m.fn.needs == "method" for m in metrics):
            timing["forward_seconds"] = forward_seconds(model, inputs.x)
    per_detection = None if expl is None else expl.seconds / len(inputs)
    written = 0
    for metric in metrics:
        if expl is not None:
            rows = _score(model, method, metric, inputs, expl.maps, timing)
        else:
            rows = [_row(inputs, r, method, metric, None, {"error": failure}) for r in range(len(inputs))]
        for row in rows:
            row.method_seconds = per_detection
            if "error" in row.extra and failure is None:
                stats.error(f"{row.image} · {method.name} · {metric.name}: {row.extra['error']}")
        rows += [_empty_row(s, method, metric) for s in inputs.empty]
        for row in rows:
            row.run, row.model = run, model_name
        written += store.add(rows)
    return written


def _score(model: DetectorModel, method: ResolvedMethod, metric: ResolvedMetric, inputs: DetectionInputs,
           maps: torch.Tensor, timing: dict[str, Any]) -> list[ResultRow]:
    """One metric on the detections whose images have the ground truth it needs; NULL rows for the rest."""
    need = metric.fn.needs
    has = inputs.has_truth(need)
    rows = [_row(inputs, r, method, metric, None, {"skipped": REASONS[need]}) for r in (~has).nonzero()[:, 0].tolist()]
    pick = has.nonzero()[:, 0]
    if not len(pick):
        return rows
    x, target, truth = inputs.subset(pick)
    kwargs = dict(metric.kwargs)
    if need in REASONS:
        kwargs.update(truth)
    if need == "method":
        kwargs.update(timing)
    start = time.perf_counter()
    try:
        out = metric.fn(model, x, maps[pick.to(maps.device)], target, **kwargs)
    except SalienceError as err:
        return rows + [_row(inputs, r, method, metric, None, {"error": str(err)}) for r in pick.tolist()]
    seconds = (time.perf_counter() - start) / len(pick)
    values = out.values.detach().float().cpu()
    curves = None if out.curves is None else out.curves.detach().float().cpu()
    for k, r in enumerate(pick.tolist()):
        value = float(values[k])
        extra = {} if curves is None else {"curve": [round(float(v), 6) for v in curves[k]]}
        if need == "method":
            extra["forward_seconds"] = timing["forward_seconds"]
        if value != value:  # NaN: an unmatched detection, or an image without another object
            reason = "no matching object" if inputs.objects[r] == -1 else "metric undefined (NaN)"
            value, extra = None, {**extra, "skipped": reason}
        rows.append(_row(inputs, r, method, metric, value, extra, seconds))
    return rows


def _row(inputs: DetectionInputs, r: int, method: ResolvedMethod, metric: ResolvedMetric, value: float | None,
         extra: dict, seconds: float | None = None) -> ResultRow:
    """The row of detection ``r``, its class, score, query and matched object in ``extra``."""
    t = inputs.target
    c = int(t.classes[r])
    detection = {"class": t.class_names[c] if t.class_names is not None else c,
                 "score": round(float(t.detection_scores[r]), 6), "query": int(t.queries[r])}
    if inputs.objects[r] != -2:
        detection["object"] = int(inputs.objects[r])
    return ResultRow(image=inputs.row_key(r), model="", method=method.name, params=method.key, metric=metric.name,
                     metric_params=metric.key, value=value, seconds=seconds, extra={**detection, **extra})


def _empty_row(sample: Sample, method: ResolvedMethod, metric: ResolvedMetric) -> ResultRow:
    return ResultRow(image=sample.image_id, model="", method=method.name, params=method.key, metric=metric.name,
                     metric_params=metric.key, value=None, extra={"skipped": NO_DETECTIONS})
