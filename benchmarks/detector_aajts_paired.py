"""AAJTS's effect on EIVE, paired by ground-truth object: reads the store of detector-aajts.yaml.

The two detectors keep different detections, so their means in the summary are over different
sets. Here each localisation metric is compared on the objects both detectors matched (same
image, same ground-truth object; the best-scoring detection of each), as mean with AAJTS −
mean without, with the shares of objects where AAJTS is higher and lower (the rest: ties).

    python benchmarks/detector_aajts_paired.py [--store results/detector-aajts.sqlite]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics

BASE = "checkpoint:runs/aajts/runs/scene-detr/scene-detr.pt"
AAJTS = "checkpoint:runs/aajts/runs/scene-detr-aajts1/scene-detr.pt"
METRICS = ("insertion", "deletion", "pointing_game", "energy_pointing_game", "miou", "wrong_instance")


def per_object(db: sqlite3.Connection, model: str, params: str, metric: str, metric_params: str
               ) -> dict[tuple[str, int], float]:
    """(image, object) -> the metric of that object's best-scoring detection."""
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
    args = parser.parse_args()
    db = sqlite3.connect(args.store)
    fusions = [p for (p,) in db.execute("SELECT DISTINCT params FROM results WHERE method='eive' ORDER BY params")]
    metrics = db.execute("SELECT DISTINCT metric, metric_params FROM results ORDER BY metric_params").fetchall()
    print("| EIVE fusion | metric | objects | without AAJTS | with AAJTS | difference | AAJTS higher / lower |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for params in fusions:
        for metric, metric_params in sorted(metrics, key=lambda m: METRICS.index(m[0])):
            base = per_object(db, BASE, params, metric, metric_params)
            aajts = per_object(db, AAJTS, params, metric, metric_params)
            common = sorted(set(base) & set(aajts))
            if not common:
                continue
            a, b = [base[k] for k in common], [aajts[k] for k in common]
            higher = sum(y > x for x, y in zip(a, b)) / len(common)
            lower = sum(y < x for x, y in zip(a, b)) / len(common)
            name = metric + (" (D-RISE sim.)" if "drise" in metric_params else "")
            print(f"| {json.loads(params)['fusion']} | {name} | {len(common)} | {statistics.mean(a):.3f} | "
                  f"{statistics.mean(b):.3f} | {statistics.mean(b) - statistics.mean(a):+.3f} | {higher:.0%} / {lower:.0%} |")


if __name__ == "__main__":
    main()
