"""A benchmark grid: models × methods (with params) × metrics (with preset) × one dataset.

Read from YAML (`load_grid`) or built by `salience evaluate` from its options, then checked
as a whole by `validate` before anything runs: an unknown model, method, method parameter,
metric, dataset kind or config key is a one-line `SalienceError` naming the closest valid
name. Example::

    name: classifier-realmini
    dataset: realmini:../shared/data/realmini   # or a list of specs, read one after the other
    models: [efficientnet_lite0]
    methods:
      - gradcam
      - {name: integrated_gradients, params: {steps: 32}}
      - {name: rise, subset: 100}   # only on 100 of the images, evenly spaced (costly methods)
    metrics: [insertion, deletion, miou]
    preset: rise
    batch_size: 8
    device: cpu
    limit: null          # every image
    shuffle: null        # or a seed: visit the images in a seeded random order (limit and subsets then sample)
    require_masks: false # true: only the images that have instance masks
    target: top1         # or: label (the dataset label where known, else top1)
    max_detections: null # detectors: explain at most this many kept detections per image
    score_threshold: null  # detectors: keep detections scoring at least this (null: the model's)
    store: results/classifier.sqlite
    out: results/classifier
    plugins: []          # modules imported first: they may register methods, metrics, datasets

A detector model (task ``detection``) is run by `salience.bench.detection_runner`: its kept
detections are the targets (``target`` does not apply), one result row per detection.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import methods as registry
from ..errors import SalienceError, UnknownNameError
from ..models import BUILTIN, PREFIXES
from .datasets import open_dataset
from .metric_fns import MetricFn, get_metric, metric_kwargs
from .store import canonical_json

CONFIG_KEYS = ("name", "dataset", "models", "methods", "metrics", "preset", "batch_size", "device",
               "limit", "shuffle", "require_masks", "target", "max_detections", "score_threshold", "store", "out", "plugins")
TARGETS = ("top1", "label")


@dataclass
class MethodSpec:
    """A method name with its parameters (as written by the user) and, optionally, the number
    of images it runs on (``subset``: evenly spaced over the grid's images; classifiers only)."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    subset: int | None = None


@dataclass
class MetricSpec:
    """A metric name with its parameters; the grid's preset is added where the metric takes one."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Grid:
    """Everything one benchmark run needs, validated by `validate`."""

    dataset: str | list[str]
    models: list[str]
    methods: list[MethodSpec]
    metrics: list[MetricSpec]
    name: str = "run"
    preset: str | None = None
    batch_size: int = 8
    device: str | None = None
    limit: int | None = None
    shuffle: int | None = None
    require_masks: bool = False
    target: str = "top1"
    max_detections: int | None = None
    score_threshold: float | None = None
    store: str = "results.sqlite"
    out: str | None = None
    plugins: list[str] = field(default_factory=list)


def load_grid(path: str | Path) -> Grid:
    """Read a YAML grid config (not yet validated)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise SalienceError(f"config {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0] if str(err) else "invalid YAML"
        raise SalienceError(f"config {path}: not valid YAML ({first})") from None
    if not isinstance(data, dict):
        raise SalienceError(f"config {path}: expected a mapping of keys ({', '.join(CONFIG_KEYS)})")
    return grid_from_dict(data, source=str(path))


def grid_from_dict(data: dict[str, Any], source: str = "config") -> Grid:
    """Build a `Grid` from a parsed config mapping; unknown keys are one-line errors."""
    for key in data:
        if key not in CONFIG_KEYS:
            raise UnknownNameError(f"key in {source}", str(key), list(CONFIG_KEYS))
    for key in ("dataset", "models", "methods", "metrics"):
        if not data.get(key):
            raise SalienceError(f"{source}: '{key}' is missing or empty")
    models = data["models"]
    values = dict(data)
    values["models"] = [str(m) for m in (models if isinstance(models, list) else [models])]
    values["methods"] = [MethodSpec(*_named(m, source, "methods"), subset=_subset(m, source))
                         for m in _as_list(data["methods"])]
    values["metrics"] = [MetricSpec(*_named(m, source, "metrics")) for m in _as_list(data["metrics"])]
    values["plugins"] = [str(p) for p in _as_list(data.get("plugins") or [])]
    grid = Grid(**values)
    if not isinstance(grid.batch_size, int) or grid.batch_size < 1:
        raise SalienceError(f"{source}: batch_size must be a positive integer, got {grid.batch_size!r}")
    if grid.limit is not None and (not isinstance(grid.limit, int) or grid.limit < 1):
        raise SalienceError(f"{source}: limit must be a positive integer or null, got {grid.limit!r}")
    if grid.shuffle is not None and (isinstance(grid.shuffle, bool) or not isinstance(grid.shuffle, int)):
        raise SalienceError(f"{source}: shuffle must be an integer seed or null, got {grid.shuffle!r}")
    if not isinstance(grid.require_masks, bool):
        raise SalienceError(f"{source}: require_masks must be true or false, got {grid.require_masks!r}")
    if grid.max_detections is not None and (not isinstance(grid.max_detections, int) or grid.max_detections < 1):
        raise SalienceError(f"{source}: max_detections must be a positive integer or null, got {grid.max_detections!r}")
    threshold = grid.score_threshold
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                  or not 0 <= threshold <= 1):
        raise SalienceError(f"{source}: score_threshold must be a number in [0, 1] or null, got {threshold!r}")
    if grid.target not in TARGETS:
        raise UnknownNameError("target", str(grid.target), list(TARGETS))
    return grid


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _subset(entry: Any, source: str) -> int | None:
    """A method entry's ``subset`` (a positive number of images), or None."""
    subset = entry.get("subset") if isinstance(entry, dict) else None
    if subset is not None and (isinstance(subset, bool) or not isinstance(subset, int) or subset < 1):
        raise SalienceError(f"{source}: subset of method '{entry.get('name')}' must be a positive integer, got {subset!r}")
    return subset


def _named(entry: Any, source: str, what: str) -> tuple[str, dict[str, Any]]:
    """``name`` or ``{name: ..., params: {...}}`` (methods may add ``subset``) -> (name, params)."""
    if isinstance(entry, str):
        return entry, {}
    keys = {"name", "params", "subset"} if what == "methods" else {"name", "params"}
    if isinstance(entry, dict) and "name" in entry and set(entry) <= keys:
        params = entry.get("params") or {}
        if not isinstance(params, dict):
            raise SalienceError(f"{source}: params of {what} entry '{entry['name']}' must be a mapping")
        return str(entry["name"]), dict(params)
    raise SalienceError(f"{source}: each entry of '{what}' is a name or {{name: ..., params: {{...}}}}, got {entry!r}")


@dataclass
class ResolvedMethod:
    """A method ready to run: registry name, the explainer, its parameter key for the store, and
    the number of images it runs on (None: all)."""

    name: str
    explainer: Any
    key: str
    subset: int | None = None

    def positions(self, eligible: list[int]) -> set[int]:
        """The dataset positions it runs on: ``subset`` of ``eligible``, evenly spaced (all if None)."""
        if self.subset is None or self.subset >= len(eligible):
            return set(eligible)
        return {eligible[i * len(eligible) // self.subset] for i in range(self.subset)}


@dataclass
class ResolvedMetric:
    """A metric ready to run: the function, its keyword arguments and their key for the store."""

    name: str
    fn: MetricFn
    kwargs: dict[str, Any]
    key: str


@dataclass
class Plan:
    """A validated grid: resolved methods and metrics and the opened dataset."""

    grid: Grid
    methods: list[ResolvedMethod]
    metrics: list[ResolvedMetric]
    dataset: Any


def validate(grid: Grid, metric_table: dict[str, MetricFn] | None = None) -> Plan:
    """Check every name and parameter of ``grid`` up front; return what the runner needs."""
    for plugin in grid.plugins:
        try:
            importlib.import_module(plugin)
        except ImportError as err:
            raise SalienceError(f"plugin '{plugin}' cannot be imported ({err})") from None
    for model in grid.models:
        check_model_name(model)
    methods = [resolve_method(m) for m in grid.methods]
    metrics = [resolve_metric(m, grid.preset, metric_table) for m in grid.metrics]
    for kind, specs in (("method", methods), ("metric", metrics)):
        keys = [(s.name, s.key) for s in specs]
        if len(set(keys)) != len(keys):
            raise SalienceError(f"the same {kind} with the same parameters is listed twice")
    dataset = open_dataset(grid.dataset)
    return Plan(grid, methods, metrics, dataset)


def check_model_name(name: str) -> None:
    """A one-line error for a model name `load_model` cannot resolve (nothing is loaded)."""
    prefix = name.split(":", 1)[0]
    if ":" in name and prefix in PREFIXES:
        return
    if name.strip().lower() not in BUILTIN:
        raise UnknownNameError("model", name, sorted(BUILTIN) + [f"{p}:NAME" for p in PREFIXES])


def resolve_method(spec: MethodSpec) -> ResolvedMethod:
    """The explainer for a method spec; unknown names or parameters are one-line errors."""
    try:
        explainer = registry.get_explainer(spec.name, **spec.params)
    except TypeError as err:
        known = _init_params(registry.REGISTRY.get(spec.name.strip().lower().replace("-", "_")))
        bad = [p for p in spec.params if p not in known]
        close = difflib.get_close_matches(bad[0], known, n=1) if bad else []
        hint = f" Did you mean '{close[0]}'?" if close else ""
        what = f"no parameter '{bad[0]}'.{hint} Known: {', '.join(known)}" if bad else str(err)
        raise SalienceError(f"method '{spec.name}': {what}") from None
    except ValueError as err:
        raise SalienceError(f"method '{spec.name}': {err}") from None
    params = {k: v for k, v in explainer.params.items() if k != "batch_size"}
    return ResolvedMethod(explainer.name, explainer, canonical_json(params), spec.subset)


def _init_params(cls: Any) -> list[str]:
    if cls is None:
        return []
    return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]


def resolve_metric(spec: MetricSpec, preset: str | None, table: dict[str, MetricFn] | None) -> ResolvedMetric:
    """The metric function for a metric spec, with its preset and parameters."""
    fn = get_metric(spec.name, table)
    kwargs = metric_kwargs(fn, preset, spec.params)
    return ResolvedMetric(fn.name, fn, kwargs, canonical_json(kwargs))
