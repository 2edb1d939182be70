"""Summaries of a result store: mean ± std tables (Markdown, CSV) and plots (PNG).

Per model × method × metric: the mean and the sample standard deviation (ddof = 1; empty
for n < 2) over the images with a value, n, and how many images were skipped (no masks or
boxes for the metric; for detectors also images without a kept detection and detections
matching no object) or failed (the method or the metric rejected the input). Plots: for every curve
metric (insertion, deletion, ...) the mean curve of each method; for every metric a bar
chart of the methods' means with std error bars. ID (insertion − deletion) is derived
per image from stored insertion and deletion rows when it was not computed itself (skipped
where either is skipped).

Which differences are real (`confidence_report`, written as ``confidence.md``): per method
and metric a 95 % bootstrap confidence interval of the mean over images (percentile
bootstrap, 2000 resamples of the images, seeded); per metric, the best method paired with
each of the next ones on the images both have: the mean paired difference, its bootstrap
interval and the two-sided Wilcoxon signed-rank p-value (scipy).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from .store import ResultRow

#: Metrics where a lower value is the better one (the others: higher is better).
LOWER_IS_BETTER = ("deletion", "positive_perturbation", "road_morf", "cost", "infidelity", "max_sensitivity",
                   "wrong_instance")


@dataclass
class SummaryRow:
    """mean ± std of one metric for one method under one model."""

    model: str
    method: str
    metric: str
    mean: float | None
    std: float | None
    n: int
    skipped: int
    failed: int


def with_derived_id(rows: list[ResultRow]) -> list[ResultRow]:
    """Add an ``id`` row (insertion − deletion) for every image that has both and no stored ``id``.

    ID is defined as that difference, so a run need not recompute both curves for it.
    """
    stored = {(r.image, r.model, r.method, r.params) for r in rows if r.metric == "id"}
    deletion = {(r.image, r.model, r.method, r.params, r.metric_params): r for r in rows if r.metric == "deletion"}
    derived = []
    for r in rows:
        d = deletion.get((r.image, r.model, r.method, r.params, r.metric_params))
        if r.metric != "insertion" or d is None or (r.image, r.model, r.method, r.params) in stored:
            continue
        value = None if r.value is None or d.value is None else r.value - d.value
        extra = {"derived": "insertion - deletion"}
        skipped = r.extra.get("skipped") or d.extra.get("skipped")
        if value is None and skipped:
            extra["skipped"] = skipped
        derived.append(ResultRow(r.image, r.model, r.method, r.params, "id", r.metric_params, value,
                                 extra=extra, run=r.run))
    return rows + derived


def summarize(rows: list[ResultRow]) -> list[SummaryRow]:
    """Group rows by (model, method, metric) in first-seen order and reduce them."""
    method_label = _labeller([(r.method, r.params) for r in rows])
    metric_label = _labeller([(r.metric, r.metric_params) for r in rows])
    groups: dict[tuple[str, str, str], list[ResultRow]] = {}
    for row in rows:
        key = (row.model, method_label(row.method, row.params), metric_label(row.metric, row.metric_params))
        groups.setdefault(key, []).append(row)
    out = []
    for (model, method, metric), group in groups.items():
        values = [r.value for r in group if r.value is not None]
        n = len(values)
        mean = sum(values) / n if n else None
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
        skipped = sum(1 for r in group if r.value is None and "skipped" in r.extra)
        out.append(SummaryRow(model, method, metric, mean, std, n, skipped, sum(1 for r in group if r.value is None) - skipped))
    return out


def _labeller(pairs: list[tuple[str, str]]):
    """``label(name, params)``: the name, plus the params where one name comes with several."""
    settings: dict[str, set[str]] = {}
    for name, params in pairs:
        settings.setdefault(name, set()).add(params)
    return lambda name, params: name if len(settings[name]) == 1 or params == "{}" else f"{name} {params}"


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def to_markdown(summary: list[SummaryRow]) -> str:
    """A Markdown table: model, method, metric, mean ± std, n, skipped, failed."""
    lines = ["| model | method | metric | mean ± std | n | skipped | failed |",
             "|---|---|---|---|---:|---:|---:|"]
    for s in summary:
        cell = "–" if s.mean is None else (f"{s.mean:.4f}" + ("" if s.std is None else f" ± {s.std:.4f}"))
        lines.append(f"| {s.model} | {s.method} | {s.metric} | {cell} | {s.n} | {s.skipped} | {s.failed} |")
    return "\n".join(lines) + "\n"


def to_csv(summary: list[SummaryRow]) -> str:
    """The same table as CSV, with mean and std in separate columns."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["model", "method", "metric", "mean", "std", "n", "skipped", "failed"])
    for s in summary:
        writer.writerow([s.model, s.method, s.metric, _fmt(s.mean), _fmt(s.std), s.n, s.skipped, s.failed])
    return buf.getvalue()


def mean_curves(rows: list[ResultRow]) -> dict[tuple[str, str], dict[str, list[float]]]:
    """(model, metric) -> method -> the mean curve over images (curves of equal length)."""
    method_label = _labeller([(r.method, r.params) for r in rows])
    metric_label = _labeller([(r.metric, r.metric_params) for r in rows])
    sums: dict[tuple[str, str], dict[str, tuple[list[float], int]]] = {}
    for row in rows:
        curve = row.extra.get("curve")
        if not curve:
            continue
        by_method = sums.setdefault((row.model, metric_label(row.metric, row.metric_params)), {})
        method = method_label(row.method, row.params)
        total, count = by_method.get(method, ([0.0] * len(curve), 0))
        if len(total) != len(curve):
            continue
        by_method[method] = ([a + b for a, b in zip(total, curve)], count + 1)
    return {k: {m: [v / c for v in t] for m, (t, c) in d.items()} for k, d in sums.items()}


def bootstrap_mean_ci(values: list[float], resamples: int = 2000, level: float = 0.95,
                      seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampling the values, seeded)."""
    t = torch.tensor(values, dtype=torch.float64)
    if len(t) < 2:
        return (float("nan"), float("nan"))
    picks = torch.randint(len(t), (resamples, len(t)), generator=torch.Generator().manual_seed(seed))
    means = t[picks].mean(1)
    low, high = torch.quantile(means, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64))
    return float(low), float(high)


@dataclass
class PairedResult:
    """Method ``a`` against method ``b`` on the images both have, for one metric."""

    model: str
    metric: str
    a: str
    b: str
    n: int
    mean_difference: float  # a − b
    ci: tuple[float, float]
    p_value: float


def per_image(rows: list[ResultRow]) -> dict[tuple[str, str, str], dict[str, float]]:
    """(model, method label, metric label) -> image -> value, for rows with a value."""
    method_label = _labeller([(r.method, r.params) for r in rows])
    metric_label = _labeller([(r.metric, r.metric_params) for r in rows])
    out: dict[tuple[str, str, str], dict[str, float]] = {}
    for r in rows:
        if r.value is not None:
            out.setdefault((r.model, method_label(r.method, r.params), metric_label(r.metric, r.metric_params)),
                           {})[r.image] = r.value
    return out


def paired_test(model: str, metric: str, a: str, b: str, values_a: dict[str, float],
                values_b: dict[str, float]) -> PairedResult:
    """Paired comparison on the common images: mean difference, bootstrap CI, Wilcoxon p-value."""
    from scipy.stats import wilcoxon

    common = sorted(set(values_a) & set(values_b))
    diffs = [values_a[i] - values_b[i] for i in common]
    if len(diffs) < 2:
        return PairedResult(model, metric, a, b, len(diffs), float("nan"), (float("nan"),) * 2, float("nan"))
    p = 1.0 if all(d == 0 for d in diffs) else float(wilcoxon(diffs).pvalue)
    return PairedResult(model, metric, a, b, len(diffs), sum(diffs) / len(diffs), bootstrap_mean_ci(diffs), p)


def _base_metric(label: str) -> str:
    return label.split(" ", 1)[0]


def confidence_report(rows: list[ResultRow], top: int = 3) -> str:
    """Markdown: mean [95 % CI] per method and metric, and paired tests of the best method of
    each metric against the next ``top`` (see the module doc)."""
    values = per_image(with_derived_id(rows))
    lines = ["| model | method | metric | n | mean | 95 % CI |", "|---|---|---|---:|---:|---|"]
    for (model, method, metric), by_image in values.items():
        v = list(by_image.values())
        low, high = bootstrap_mean_ci(v)
        lines.append(f"| {model} | {method} | {metric} | {len(v)} | {sum(v) / len(v):.4f} | [{low:.4f}, {high:.4f}] |")
    lines += ["", "| model | metric | best | vs | n (paired) | mean difference | 95 % CI | Wilcoxon p |",
              "|---|---|---|---|---:|---:|---|---:|"]
    for model, metric in dict.fromkeys((k[0], k[2]) for k in values):
        lower = _base_metric(metric) in LOWER_IS_BETTER
        ranked = sorted(((sum(v.values()) / len(v), m) for (mo, m, me), v in values.items()
                         if mo == model and me == metric), reverse=not lower)
        if _base_metric(metric) == "cost" or len(ranked) < 2:
            continue
        best = ranked[0][1]
        for _, other in ranked[1:top + 1]:
            t = paired_test(model, metric, best, other, values[(model, best, metric)], values[(model, other, metric)])
            lines.append(f"| {model} | {metric} | {best} | {other} | {t.n} | {t.mean_difference:+.4f} | "
                         f"[{t.ci[0]:+.4f}, {t.ci[1]:+.4f}] | {t.p_value:.2g} |")
    return "\n".join(lines) + "\n"


def write_report(rows: list[ResultRow], out: str | Path) -> dict[str, list[Path]]:
    """Write summary.md, summary.csv, confidence.md and the PNG plots into ``out``; return the paths by kind."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(with_derived_id(rows))
    (out / "summary.md").write_text(to_markdown(summary))
    (out / "summary.csv").write_text(to_csv(summary))
    (out / "confidence.md").write_text(confidence_report(rows))
    return {"tables": [out / "summary.md", out / "summary.csv", out / "confidence.md"],
            "curves": plot_curves(rows, out), "bars": plot_bars(summary, out)}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(rows: list[ResultRow], out: Path) -> list[Path]:
    """One PNG per (model, curve metric): each method's mean curve over the fraction of pixels."""
    plt = _pyplot()
    paths = []
    for (model, metric), by_method in mean_curves(rows).items():
        fig, ax = plt.subplots(figsize=(6, 4))
        colours = plt.get_cmap("tab20")
        for i, (method, curve) in enumerate(sorted(by_method.items())):
            xs = [i / max(len(curve) - 1, 1) for i in range(len(curve))]
            ax.plot(xs, curve, label=method, color=colours(i % 20), linestyle="-" if i < 10 else "--")
        xlabel = "layers randomised (fraction of the cascade)" if metric.startswith("sanity") else "fraction of pixels changed"
        ax.set(xlabel=xlabel, ylabel="score", title=f"{metric} · {model} (mean curve)")
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        path = out / f"curve_{_slug(model)}_{_slug(metric)}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_bars(summary: list[SummaryRow], out: Path) -> list[Path]:
    """One PNG per (model, metric): the mean of each method with std error bars."""
    plt = _pyplot()
    groups: dict[tuple[str, str], list[SummaryRow]] = {}
    for s in summary:
        if s.mean is not None:
            groups.setdefault((s.model, s.metric), []).append(s)
    paths = []
    for (model, metric), group in groups.items():
        fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(group) + 2), 4))
        ax.bar([s.method for s in group], [s.mean for s in group], yerr=[s.std or 0.0 for s in group], capsize=3)
        ax.set(ylabel=metric, title=f"{metric} · {model} (mean ± std)")
        ax.tick_params(axis="x", rotation=45, labelsize=8)
        fig.tight_layout()
        path = out / f"bars_{_slug(model)}_{_slug(metric)}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def _slug(text: str) -> str:
    slug = "".join(c if c.isalnum() or c in "-" else "_" for c in text)
    return "_".join(part for part in slug.split("_") if part)
