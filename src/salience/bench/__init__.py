"""The benchmark runner: grids of models × methods × metrics over a dataset, stored in SQLite.

`grid` reads and validates a config, `runner` evaluates it (sharded under ``torchrun``),
`store` keeps every result row, `report` turns rows into tables and plots, `cli` holds the
``salience evaluate`` and ``salience bench`` commands.
"""

from .grid import Grid, MethodSpec, MetricSpec, Plan, load_grid, validate
from .metric_fns import MetricFn, MetricOutput, available_metrics, register_metric
from .datasets import Sample, open_dataset, register_dataset
from .report import summarize, write_report
from .runner import run_plan
from .store import ResultRow, ResultStore

__all__ = [
    "Grid", "MethodSpec", "MetricFn", "MetricOutput", "MetricSpec", "Plan", "ResultRow", "ResultStore",
    "Sample", "available_metrics", "load_grid", "open_dataset", "register_dataset", "register_metric",
    "run_plan", "summarize", "validate", "write_report",
]
