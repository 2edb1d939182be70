"""CPU forward time of the scene ViT at 224², relative to EfficientNet-Lite0 at 224².

Random transformer at the recipe's config (speed does not depend on the weights); one image
per call, single-threaded by default so the ratio does not depend on the machine's other
load. Also prints the transformer's parameter count and the size of its head-only checkpoint.

    PYTHONPATH=src python benchmarks/scene_vit_speed.py [--threads 1] [--repeats 20]
"""

from __future__ import annotations

import argparse

import torch

from detector_speed import head_megabytes, seconds_per_call
from salience.models.zoo.efficientnet_lite import build
from salience.models.zoo.scene_vit import build_scene_vit
from salience.train.classifier import CLASSIFIER_RECIPES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--classes", type=int, default=18)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(1, 3, 224, 224)
    lite = build("efficientnet_lite0").eval()
    vit = build_scene_vit({**CLASSIFIER_RECIPES["scene-vit"].model, "num_classes": args.classes}).eval()
    base = seconds_per_call(lite, x, args.repeats)
    backbone = seconds_per_call(vit.backbone, x, args.repeats)
    t = seconds_per_call(vit, x, args.repeats)
    params = sum(p.numel() for k, p in vit.named_parameters() if not k.startswith("backbone."))
    print(f"threads={args.threads} repeats={args.repeats}")
    print(f"efficientnet_lite0 @224: {base * 1000:.1f} ms (1.00x)")
    print(f"SceneViT backbone (Lite0 up to C16) @224: {backbone * 1000:.1f} ms ({backbone / base:.2f}x)")
    print(f"SceneViT @224: {t * 1000:.1f} ms ({t / base:.2f}x), transformer {params / 1e6:.2f} M params, "
          f"{head_megabytes(vit):.2f} MB; config {vit.config}")


if __name__ == "__main__":
    main()
