"""ROAD's AUCs with the torch imputation against an exact sparse solve of the authors' system.

Run:  python benchmarks/road_imputation_check.py [--photos 4] [--threads 1]

`salience.metrics.road.impute` solves Rong et al.'s noisy-linear-imputation system
approximately (coarse to fine, a few Jacobi sweeps per level). This recomputes ROAD MoRF
and LeRF with the system solved exactly by scipy's sparse solver (`tests.test_road`'s
reference), the same noise and seeds, and prints the AUC differences per photo.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

import salience as sl  # noqa: E402
import salience.metrics.road as road  # noqa: E402
from salience.data import load_dataset  # noqa: E402
from salience.targets import ClassTarget  # noqa: E402
from tests.test_road import reference_impute  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "realmini"


def exact_impute(x: torch.Tensor, missing: torch.Tensor, sweeps: int = 0) -> torch.Tensor:
    return torch.stack([torch.from_numpy(reference_impute(x[i].double().numpy(), missing[i, 0].numpy())).float()
                        for i in range(len(x))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = sl.load_model("efficientnet_lite0")
    dataset = load_dataset(f"realmini:{DATA}")
    picks = range(0, len(dataset), max(1, len(dataset) // args.photos))[:args.photos]
    x = model.prepare(sl.load_images([dataset[i].image for i in picks]))[0]
    target = ClassTarget(model(x).argmax(1).detach(), torch.arange(len(x)))
    fast = road.impute
    print("| method | order | AUCs (ours) | AUCs (exact solve) | largest difference | seconds ours / exact |")
    print("|---|---|---|---|---:|---|")
    for method in ("gradcam", "saliency", "random"):
        maps = sl.explain(model, x, method, target=target).maps
        for fn in (road.road_morf, road.road_lerf):
            results = []
            for impute in (fast, exact_impute):
                road.impute = impute
                start = time.perf_counter()
                results.append((fn(model, x, maps, target).values, time.perf_counter() - start))
            road.impute = fast
            (a, ta), (b, tb) = results
            print(f"| {method} | {fn.__name__} | {', '.join(f'{v:.3f}' for v in a.tolist())} | "
                  f"{', '.join(f'{v:.3f}' for v in b.tolist())} | {float((a - b).abs().max()):.4f} | {ta:.1f} / {tb:.1f} |")


if __name__ == "__main__":
    main()
