"""A results table with 95 % bootstrap intervals, and paired tests, from a benchmark store.

Run:  python benchmarks/results_table.py --store results/classifier-imagenet.sqlite [--top 3] [--common]

Rows: methods (in the store's order), columns: metrics; each cell ``mean [low, high]`` over
the photos the method has (n per method in its own column), ID derived from insertion and
deletion. Then, per metric, the best method against the next ``--top`` on the photos they
share: mean paired difference, its bootstrap interval and the Wilcoxon signed-rank p-value
(`salience.bench.report`). Works on a partly computed store (n says how far it got).
``--common``: only the photos every method has (the costly methods' subset), so all rows are
paired. Paired tests rank only methods with at least ``--min-n`` photos (default 10).
``--timing``: instead, the measured wall seconds per photo of each method and of all its
metrics together (means over the stored rows; they include whatever else the machine ran).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from salience.bench.report import (LOWER_IS_BETTER, bootstrap_mean_ci, paired_test, per_image,  # noqa: E402
                                   with_derived_id)
from salience.bench.store import ResultStore  # noqa: E402

ARROWS = {True: "↓", False: "↑"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--top", type=int, default=3)
    parser.add_argument("--common", action="store_true", help="only the photos every method has")
    parser.add_argument("--min-n", type=int, default=10)
    parser.add_argument("--timing", action="store_true", help="seconds per photo of each method and its metrics")
    args = parser.parse_args()
    with ResultStore(args.store) as store:
        rows = store.rows()
    if args.timing:
        print_timing(rows)
        return
    values = per_image(with_derived_id(rows))
    if args.common:
        shared = set.intersection(*(set(v) for v in values.values()))
        values = {k: {i: x for i, x in v.items() if i in shared} for k, v in values.items()}
    methods = list(dict.fromkeys(k[1] for k in values))
    metrics = list(dict.fromkeys(k[2] for k in values))
    header = "| method | n | " + " | ".join(f"{m} {ARROWS[m.split(' ')[0] in LOWER_IS_BETTER]}" for m in metrics) + " |"
    print(header)
    print("|---|---:|" + "---|" * len(metrics))
    for method in methods:
        cells, n = [], 0
        for metric in metrics:
            v = list(values.get((next(iter(values))[0], method, metric), {}).values())
            n = max(n, len(v))
            if not v:
                cells.append("–")
                continue
            low, high = bootstrap_mean_ci(v)
            digits = 1 if metric == "cost" else 3
            cells.append(f"{sum(v) / len(v):.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]")
        print(f"| `{method}` | {n} | " + " | ".join(cells) + " |")
    print()
    print("| metric | best | vs | paired photos | mean difference | 95 % CI | Wilcoxon p |")
    print("|---|---|---|---:|---:|---|---:|")
    model = next(iter(values))[0]
    for metric in metrics:
        if metric == "cost":
            continue
        lower = metric.split(" ")[0] in LOWER_IS_BETTER
        ranked = sorted((sum(v.values()) / len(v), m) for (mo, m, me), v in values.items()
                        if me == metric and len(v) >= args.min_n)
        if len(ranked) < 2:
            continue
        ranked = ranked if lower else ranked[::-1]
        best = ranked[0][1]
        for _, other in ranked[1:args.top + 1]:
            t = paired_test(model, metric, best, other, values[(model, best, metric)], values[(model, other, metric)])
            print(f"| {metric} | `{best}` | `{other}` | {t.n} | {t.mean_difference:+.3f} | "
                  f"[{t.ci[0]:+.3f}, {t.ci[1]:+.3f}] | {t.p_value:.2g} |")


def print_timing(rows) -> None:
    """Per method: photos, mean method seconds per photo, mean seconds of all metrics per photo."""
    method_seconds: dict[str, dict[str, float]] = {}
    metric_seconds: dict[str, dict[str, float]] = {}
    for r in rows:
        if r.method_seconds is not None:
            method_seconds.setdefault(r.method, {})[r.image] = r.method_seconds
        if r.seconds is not None:
            per_photo = metric_seconds.setdefault(r.method, {})
            per_photo[r.image] = per_photo.get(r.image, 0.0) + r.seconds
    print("| method | photos | method s / photo | metrics s / photo |")
    print("|---|---:|---:|---:|")
    for method, by_image in method_seconds.items():
        metrics = metric_seconds.get(method, {})
        mean_metrics = sum(metrics.values()) / max(len(metrics), 1)
        print(f"| `{method}` | {len(by_image)} | {sum(by_image.values()) / len(by_image):.1f} | {mean_metrics:.1f} |")


if __name__ == "__main__":
    main()
