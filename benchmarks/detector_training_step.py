"""Seconds per training step (forward + backward + AdamW) of the scene detectors' heads.

Random features of the backbone's shapes at 256², batch 32, DETR's set criterion on two
random objects per image; `SceneDeformableDETR` with 0, 1 and 2 encoder layers (why the
shipped one has none), `SceneDETR` at its recipe. Median of ``--repeats`` after one warm-up.

    PYTHONPATH=src python benchmarks/detector_training_step.py [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from salience.models.zoo.scene_detectors import build_scene_detector
from salience.train.recipes import DETECTOR_RECIPES


def step_seconds(config: dict, features: list[torch.Tensor], repeats: int) -> float:
    module = build_scene_detector({**config, "num_classes": 18}, pretrained_backbone=False)
    module.train()
    crit = DETECTOR_RECIPES[config["architecture"]].criterion
    params = [p for p in module.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, 1e-4)
    g = torch.Generator().manual_seed(0)
    targets = [{"labels": torch.randint(0, 18, (2,), generator=g),
                "boxes": torch.rand(2, 4, generator=g) * 0.4 + 0.2} for _ in range(features[0].shape[0])]
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        loss, _ = crit(module.head(features), targets)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if i:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    features = [torch.randn(32, c, s, s) for c, s in ((40, 32), (112, 16), (320, 8))]
    print(f"threads={args.threads}, batch 32, median of {args.repeats}")
    detr = DETECTOR_RECIPES["scene-detr"].model
    print(f"scene-detr (recipe, 3 encoder layers): {step_seconds(detr, features, args.repeats):.2f} s/step")
    deformable = DETECTOR_RECIPES["scene-deformable-detr"].model
    for layers in (0, 1, 2):
        t = step_seconds({**deformable, "encoder_layers": layers}, features, args.repeats)
        print(f"scene-deformable-detr, {layers} encoder layers: {t:.2f} s/step")


if __name__ == "__main__":
    main()
