"""Running a validated grid: explain, score, store — one batch of images at a time.

For each batch of this rank's images, each model and each method: unless every row of the
batch is stored already (with ``resume``), the batch is explained in one call and timed,
then every metric runs on it and each metric's rows are written and committed at once.
A partly stored batch is recomputed whole, so methods whose maps depend on the batch
(seeded noise drawn per row) give a resumed run exactly the values of an uninterrupted one. Images
lacking the masks or boxes a metric needs get a NULL row marked ``skipped`` (counted in the
summary), and a metric that rejects a map (NaN values) gets a NULL row with the error.

Detectors (task ``detection``) go to `detection_runner.run_detector`, with the same batches,
store and resume rules and one row per kept detection.

Reproducibility: every (batch, model, method) unit seeds torch from its image ids, so a
run and its resume give the same values. Stochastic methods (rise, random) depend on the
batch they are computed in; a sharded run batches different images together than a
single-process run, so for them the two agree in distribution, not value for value.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from ..errors import SalienceError
from ..images import ImageBatch
from ..models import load_model
from ..models.model import Model
from ..targets import ClassTarget
from .datasets import Sample, as_sample
from .detection_runner import run_detector
from .distributed import Shard
from .grid import Plan, ResolvedMethod, ResolvedMetric
from .ground_truth import boxes_mask, boxes_to_input, mask_to_input
from .store import ResultRow, ResultStore
from .units import RunStats, done_by_image, forward_seconds, seed_unit


def run_plan(plan: Plan, store: ResultStore, shard: Shard | None = None, resume: bool = False,
             progress: bool = True) -> RunStats:
    """Evaluate every (image, model, method, metric) of ``plan`` on this shard into ``store``."""
    shard = shard or Shard(device=plan.grid.device)
    device = shard.device or ("cuda" if torch.cuda.is_available() else "cpu")
    grid = plan.grid
    dataset = plan.dataset if hasattr(plan.dataset, "__getitem__") else list(plan.dataset)
    eligible = [i for i in range(len(dataset)) if not grid.require_masks or as_sample(dataset[i], i).masks is not None]
    if grid.shuffle is not None:
        order = torch.randperm(len(eligible), generator=torch.Generator().manual_seed(grid.shuffle)).tolist()
        eligible = [eligible[k] for k in order]
    eligible = eligible[:grid.limit]
    positions = [eligible[k] for k in shard.indices(len(eligible))]
    batches = [positions[i:i + grid.batch_size] for i in range(0, len(positions), grid.batch_size)]
    stats = RunStats()
    total = len(batches) * len(grid.models) * len(plan.methods)
    with _progress(progress and shard.is_main, total) as advance:
        for model_name in grid.models:
            model = load_model(model_name, device=device)
            if model.task == "detection":
                run_detector(plan, store, model_name, model, batches, dataset, resume, stats, advance)
            else:
                chosen = {m.key: m.positions(eligible) for m in plan.methods}
                run_classifier(plan, store, model_name, model, batches, dataset, resume, stats, advance, chosen)
    return stats


def run_classifier(plan: Plan, store: ResultStore, model_name: str, model: Model, batches: list[list[int]],
                   dataset: Any, resume: bool, stats: RunStats, advance: Callable[[str], None],
                   chosen: dict[str, set[int]] | None = None) -> None:
    """Every batch × method of one classifier: one row per image and metric.

    ``chosen``: per method key, the dataset positions it runs on (default: all); in each batch
    a method explains only its chosen images.
    """
    done = {m.key: done_by_image(store, model_name, m) for m in plan.methods} if resume else {}
    expected = {(m.name, m.key) for m in plan.metrics}
    for batch in batches:
        samples = [as_sample(dataset[i], i) for i in batch]
        picks = {m.key: [j for j, i in enumerate(batch) if chosen is None or i in chosen[m.key]] for m in plan.methods}
        pending = {m.key: bool(picks[m.key]) and (not resume or any(
            not expected <= done[m.key].get(samples[j].image_id, set()) for j in picks[m.key])) for m in plan.methods}
        inputs = _prepare(model, samples, plan.grid.target) if any(pending.values()) else None
        for method in plan.methods:
            stats.resumed += not pending[method.key] and bool(picks[method.key])
            if pending[method.key]:
                picked = picks[method.key]
                stats.rows += _run_unit(store, plan.grid.name, model_name, model, method, plan.metrics,
                                        [samples[j] for j in picked], inputs.select(picked), stats)
                stats.units += 1
            advance(f"{model_name} · {method.name}")


@dataclass
class Inputs:
    """A prepared batch: model input, the target class of each image, masks and boxes on the input."""

    x: torch.Tensor
    classes: torch.Tensor
    masks: list[torch.Tensor | None]
    regions: list[torch.Tensor | None]
    class_names: Sequence[str] | None

    def target(self) -> ClassTarget:
        return ClassTarget(self.classes, torch.arange(len(self.classes)), self.class_names)

    def select(self, picked: list[int]) -> "Inputs":
        """The same batch restricted to the images at positions ``picked``."""
        if picked == list(range(len(self.classes))):
            return self
        index = torch.tensor(picked)
        return Inputs(self.x[index.to(self.x.device)], self.classes[index], [self.masks[j] for j in picked],
                      [self.regions[j] for j in picked], self.class_names)


def _prepare(model: Model, samples: list[Sample], target: str) -> Inputs:
    x, geometries = model.prepare(ImageBatch([s.image for s in samples], [s.image_id for s in samples]))
    with torch.inference_mode():
        predicted = model(x).argmax(1).cpu()
    if target == "label":
        labels = torch.tensor([-1 if s.label is None else s.label for s in samples])
        predicted = torch.where(labels >= 0, labels, predicted)
    masks = [None if s.masks is None else mask_to_input(s.masks, g) for s, g in zip(samples, geometries)]
    regions = [m if m is not None or s.boxes is None else boxes_mask(boxes_to_input(s.boxes, g), g.input_size)
               for m, s, g in zip(masks, samples, geometries)]
    return Inputs(x, predicted, masks, regions, model.class_names)


def _run_unit(store: ResultStore, run: str, model_name: str, model: Model, method: ResolvedMethod, metrics: list[ResolvedMetric],
              samples: list[Sample], inputs: Inputs, stats: RunStats) -> int:
    """Explain one batch with one method, score it with every metric, store each metric's rows."""
    seed_unit(method.name, [s.image_id for s in samples])
    target = inputs.target()
    expl = method.explainer(model, inputs.x, target)
    method_seconds = expl.seconds / len(samples)
    timing = {"method": method.explainer, "method_seconds": expl.seconds}
    if any(m.fn.needs == "method" for m in metrics):
        timing["forward_seconds"] = forward_seconds(model, inputs.x)
    written = 0
    for metric in metrics:
        rows = _score(model, method, metric, samples, inputs, target, expl.maps, timing)
        for row in rows:
            row.run, row.model, row.method_seconds = run, model_name, method_seconds
            if "error" in row.extra:
                stats.errors.append(f"{row.image} · {method.name} · {metric.name}: {row.extra['error']}")
        written += store.add(rows)
    return written


def _score(model: Model, method: ResolvedMethod, metric: ResolvedMetric, samples: list[Sample],
           inputs: Inputs, target: ClassTarget, maps: torch.Tensor, timing: dict[str, Any]) -> list[ResultRow]:
    """One metric on the images that have the ground truth it needs; NULL rows for the rest."""
    need = metric.fn.needs
    truth = {"masks": inputs.masks, "region": inputs.regions}.get(need, [True] * len(samples))
    have = [j for j, t in enumerate(truth) if t is not None]
    reason = "no masks" if need == "masks" else "no masks or boxes"
    rows = [_row(samples[j], method, metric, None, {"skipped": reason}) for j, t in enumerate(truth) if t is None]
    if not have:
        return rows
    kwargs = dict(metric.kwargs)
    if need in ("masks", "region"):
        kwargs["masks"] = torch.stack([truth[j] for j in have]).to(model.device)
    if need == "method":
        kwargs.update(timing)
    sub_target = ClassTarget(target.classes[have], torch.arange(len(have)), target.class_names)
    start = time.perf_counter()
    try:
        out = metric.fn(model, inputs.x[have], maps[have], sub_target, **kwargs)
    except SalienceError as err:
        return rows + [_row(samples[j], method, metric, None, {"error": str(err)}) for j in have]
    seconds = (time.perf_counter() - start) / len(have)
    values = out.values.detach().float().cpu()
    curves = None if out.curves is None else out.curves.detach().float().cpu()
    for k, j in enumerate(have):
        value = float(values[k])
        extra = {} if curves is None else {"curve": [round(float(v), 6) for v in curves[k]]}
        if value != value:  # NaN: no value (e.g. a mask that is empty on the model input), counted as skipped
            value, extra = None, {**extra, "skipped": "metric undefined (NaN)"}
        rows.append(_row(samples[j], method, metric, value, extra, seconds))
    return rows


def _row(sample: Sample, method: ResolvedMethod, metric: ResolvedMetric, value: Any, extra: dict,
         seconds: float | None = None) -> ResultRow:
    return ResultRow(image=sample.image_id, model="", method=method.name, params=method.key, metric=metric.name,
                     metric_params=metric.key, value=value, seconds=seconds, extra=extra)


def _progress(enabled: bool, total: int):
    """A context giving ``advance(label)``: a Rich progress bar, or nothing when disabled."""
    if not enabled:
        return nullcontext(lambda _label: None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    class _Bar:
        def __enter__(self):
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeRemainingColumn(), transient=False)
            self.progress.__enter__()
            task = self.progress.add_task("evaluating", total=total)
            return lambda label: self.progress.update(task, advance=1, description=label)

        def __exit__(self, *exc):
            return self.progress.__exit__(*exc)

    return _Bar()
