"""`salience evaluate` and `salience bench`: thin commands over grid, runner, store and report.

The main CLI registers them with::

    app.command("evaluate")(evaluate_command)
    app.command("bench")(bench_command)

Bad input (unknown names, a corrupt store, a bad config) ends with one line on stderr and
exit code 1, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import SalienceError
from .distributed import init_shard
from .grid import Grid, MethodSpec, MetricSpec, Plan, grid_from_dict, load_grid, validate
from .report import summarize, to_markdown, with_derived_id, write_report
from .runner import run_plan
from .store import ResultStore


def evaluate_command(
    dataset: str = typer.Option(..., help="KIND:PATH, e.g. realmini:../shared/data/realmini or folder:DIR"),
    methods: str = typer.Option(..., help="Comma-separated method names, e.g. gradcam,rise"),
    metrics: str = typer.Option(..., help="Comma-separated metric names, e.g. insertion,deletion,miou"),
    model: str = typer.Option("efficientnet_lite0", help="Model name (bundled, timm:NAME, hf:NAME)"),
    preset: Optional[str] = typer.Option(None, help="Metric protocol preset (rise, keio, aha)"),
    store: Path = typer.Option(Path("results.sqlite"), help="SQLite result store (created if missing)"),
    out: Optional[Path] = typer.Option(None, help="Folder for summary.md, summary.csv and plots"),
    resume: bool = typer.Option(False, help="Skip work whose rows are already in the store"),
    limit: Optional[int] = typer.Option(None, help="Evaluate only the first N images"),
    batch_size: int = typer.Option(8, help="Images per batch"),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1, ..."),
    target: str = typer.Option("top1", help="top1 (the prediction) or label (the dataset label where known)"),
    param: List[str] = typer.Option([], help="method.key=value, repeatable, e.g. integrated_gradients.steps=32"),
    plugin: List[str] = typer.Option([], help="Python module to import first (registers methods/metrics/datasets)"),
) -> None:
    """Evaluate one model's explanations of a dataset with several methods and metrics."""
    def build() -> Grid:
        names = _split(methods)
        params = _method_params(param, names)
        return grid_from_dict({
            "name": "evaluate", "dataset": dataset, "models": [model],
            "methods": [{"name": m, "params": params.get(m, {})} for m in names],
            "metrics": _split(metrics), "preset": preset, "batch_size": batch_size, "device": device,
            "limit": limit, "target": target, "store": str(store), "out": None if out is None else str(out),
            "plugins": list(plugin),
        }, source="options")

    _execute(build, resume)


def bench_command(
    config: Path = typer.Option(..., help="YAML grid: models × methods × metrics × dataset"),
    resume: bool = typer.Option(False, help="Skip work whose rows are already in the store"),
    out: Optional[Path] = typer.Option(None, help="Folder for tables and plots (overrides the config's out)"),
    store: Optional[Path] = typer.Option(None, help="Result store (overrides the config's store)"),
) -> None:
    """Run a benchmark grid from a YAML config into the result store, then summarise it."""
    def build() -> Grid:
        grid = load_grid(config)
        if out is not None:
            grid.out = str(out)
        if store is not None:
            grid.store = str(store)
        return grid

    _execute(build, resume)


def _execute(build, resume: bool) -> None:
    """Validate, run (sharded under torchrun), then summarise on rank 0; one-line errors."""
    shard = None
    try:
        grid = build()
        plan = validate(grid)
        result_store = ResultStore(grid.store)
        shard = init_shard(grid.device)
        stats = run_plan(plan, result_store, shard, resume=resume)
        stats.units, stats.resumed, stats.empty_images = shard.total(
            [stats.units, stats.resumed, stats.empty_images])  # also a barrier
        if shard.is_main:
            _summarise(plan, result_store, stats)
    except SalienceError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    finally:
        if shard is not None:
            shard.close()


def _summarise(plan: Plan, store: ResultStore, stats) -> None:
    grid = plan.grid
    methods = {(m.name, m.key) for m in plan.methods}
    metrics = {(m.name, m.key) for m in plan.metrics}
    rows = [r for r in store.rows() if r.model in grid.models and (r.method, r.params) in methods
            and (r.metric, r.metric_params) in metrics]
    summary = summarize(with_derived_id(rows))
    typer.echo(to_markdown(summary))
    skipped = sum(s.skipped for s in summary)
    failed = sum(s.failed for s in summary)
    typer.echo(f"{len(rows)} rows in {store.path}; {stats.units} units computed, {stats.resumed} already stored; "
               f"{skipped} rows skipped (no ground truth, no detection or no matching object), {failed} failed")
    if stats.empty_images:
        typer.echo(f"{stats.empty_images} image×model with no kept detection (rows marked 'skipped: no detections')")
    for line in stats.errors[:5]:
        typer.echo(f"  failed: {line}", err=True)
    if grid.out:
        paths = write_report(rows, grid.out)
        typer.echo(f"wrote {len(paths['tables'])} tables and {len(paths['curves']) + len(paths['bars'])} plots to {grid.out}")


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _method_params(items: list[str], methods: list[str]) -> dict[str, dict]:
    """``method.key=value`` options -> {method: {key: value}}; values read as YAML scalars."""
    import yaml

    out: dict[str, dict] = {}
    for item in items:
        head, sep, value = item.partition("=")
        method, dot, key = head.partition(".")
        if not sep or not dot or not key:
            raise SalienceError(f"--param '{item}': write it as method.key=value")
        if method not in methods:
            raise SalienceError(f"--param '{item}': method '{method}' is not among --methods ({', '.join(methods)})")
        out.setdefault(method, {})[key] = yaml.safe_load(value)
    return out


app = typer.Typer(add_completion=False, help="Evaluate and benchmark saliency methods.")
app.command("evaluate")(evaluate_command)
app.command("bench")(bench_command)
