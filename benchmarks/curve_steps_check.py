"""What 16 even steps change against the `rise` preset's 224 steps (one row per step).

Run:  python benchmarks/curve_steps_check.py [--photos 8] [--threads 1]

classifier-imagenet.yaml computes insertion and deletion with the `rise` preset's references
and score but 16 even steps (17 points) instead of 224 (225 points), to fit 800 photos on
the CPU. On the first ``--photos`` photos of ../shared/data/realmini (not the benchmark's
photos) and a few methods, this prints both AUCs per method (means), their largest
per-photo difference, and whether the methods' order by mean AUC is the same.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import salience as sl  # noqa: E402
from salience.data import load_dataset  # noqa: E402
from salience.metrics import deletion, insertion  # noqa: E402
from salience.targets import ClassTarget  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "realmini"
METHODS = ("gradcam", "saliency", "input_x_gradient", "random", "center")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = sl.load_model("efficientnet_lite0")
    dataset = load_dataset(f"realmini:{DATA}")
    x = model.prepare(sl.load_images([dataset[i].image for i in range(args.photos)]))[0]
    target = ClassTarget(model(x).argmax(1).detach(), torch.arange(len(x)))
    print(f"{args.photos} realmini photos; AUC means with 224 steps (rise preset) and with 16 even steps")
    print("| method | curve | 224 steps | 16 steps | largest difference per photo |")
    print("|---|---|---:|---:|---:|")
    orders = {}
    for curve in (insertion, deletion):
        means = {}
        for method in METHODS:
            maps = sl.explain(model, x, method, target=target).maps
            full = curve(model, x, maps, target, preset="rise").values
            coarse = curve(model, x, maps, target, preset="rise", n_steps=16).values
            means[method] = (float(full.mean()), float(coarse.mean()))
            print(f"| {method} | {curve.__name__} | {means[method][0]:.4f} | {means[method][1]:.4f} | "
                  f"{float((full - coarse).abs().max()):.4f} |")
        orders[curve.__name__] = [sorted(means, key=lambda m: means[m][k]) for k in (0, 1)]
    for name, (full, coarse) in orders.items():
        print(f"{name}: same order of methods by mean AUC: {full == coarse} ({' < '.join(full)} with 224 steps)")


if __name__ == "__main__":
    main()
