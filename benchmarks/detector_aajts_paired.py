"""AAJTS's effect on EIVE, paired by ground-truth object: reads the store of detector-aajts.yaml.

The detectors keep different detections, so their means in the summary are over different
sets. Here each metric of each detector trained with AAJTS is compared with the one trained
without it on the objects both matched (same image, same ground-truth object; the
best-scoring detection matched to it), as mean with AAJTS − mean without, with the shares of
objects where AAJTS is higher and lower (the rest: ties). Also prints each training's
held-out AP from its run folder.

    python benchmarks/detector_aajts_paired.py [--store results/detector-aajts.sqlite] [--fusion hybrid]
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import statistics
from pathlib import Path

BASE = "checkpoint:runs/aajts/runs/scene-detr/scene-detr.pt"
METRICS = ("insertion", "deletion", "pointing_game", "energy_pointing_game", "miou", "wrong_instance")


def weight_of(model: str) -> float:
    """The AAJTS weight in a run folder's name (``scene-detr-aajts0.3``), 0 without."""
    found = re.search(r"aajts([0-9.]+)/", model)
    return float(found.group(1)) if found else 0.0


def per_object(db: sqlite3.Connection, model: str, params: str, metric: str, metric_params: str
               ) -> dict[tuple[str, int], float]:
    """(image, object) -> the metric of the best-scoring detection matched to that object."""
    best: dict[tuple[str, int], tuple[float, float]] = {}
    rows = db.execute("SELECT image, value, extra FROM results WHERE model=? AND method='eive' AND params=? "
                      "AND metric=? AND metric_params=? AND value IS NOT NULL", (model, params, metric, metric_params))
    for image, value, extra in rows:
        info = json.loads(extra)
        if info.get("object", -1) < 0:  # no matching ground-truth object
            continue
        key = (image.split("/")[0], info["object"])
        if key not in best or info["score"] > best[key][0]:
            best[key] = (info["score"], value)
    return {k: v for k, (_, v) in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="results/detector-aajts.sqlite")
    parser.add_argument("--fusion", default="hybrid", help="EIVE fusion to compare (hybrid, mean, last)")
    args = parser.parse_args()
    db = sqlite3.connect(args.store)
    models = sorted((m for (m,) in db.execute("SELECT DISTINCT model FROM results")), key=weight_of)
    print("| AAJTS weight | held-out AP | AP50 |\n|---:|---:|---:|")
    for model in models:
        result = Path(model.split(":", 1)[1]).parent / "result.json"
        if result.is_file():
            held_out = json.loads(result.read_text())["held_out"]
            print(f"| {weight_of(model):g} | {held_out['AP']:.3f} | {held_out['AP50']:.3f} |")
    params = next(p for (p,) in db.execute("SELECT DISTINCT params FROM results WHERE method='eive'")
                  if json.loads(p)["fusion"] == args.fusion)
    metrics = sorted(db.execute("SELECT DISTINCT metric, metric_params FROM results").fetchall(),
                     key=lambda m: (METRICS.index(m[0]), m[1]))
    print(f"\nEIVE ({args.fusion}), paired by object against the detector trained without AAJTS:\n")
    print("| AAJTS weight | metric | objects | without AAJTS | with AAJTS | difference | AAJTS higher / lower |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for model in models[1:]:
        for metric, metric_params in metrics:
            base = per_object(db, BASE, params, metric, metric_params)
            other = per_object(db, model, params, metric, metric_params)
            common = sorted(set(base) & set(other))
            if not common:
                continue
            a, b = [base[k] for k in common], [other[k] for k in common]
            higher = sum(y > x for x, y in zip(a, b)) / len(common)
            lower = sum(y < x for x, y in zip(a, b)) / len(common)
            name = metric + (" (D-RISE sim.)" if "drise" in metric_params else "")
            print(f"| {weight_of(model):g} | {name} | {len(common)} | {statistics.mean(a):.3f} | "
                  f"{statistics.mean(b):.3f} | {statistics.mean(b) - statistics.mean(a):+.3f} | {higher:.0%} / {lower:.0%} |")


if __name__ == "__main__":
    main()
