"""CPU forward time of the scene detectors at 256², relative to EfficientNet-Lite0 at 224².

The shipped detectors (`sl.load_model("scene-detr")`, ...) with their trained configs, or
random heads at the classes' default configs where no weights are shipped (speed does not
depend on the weights); one image per call, single-threaded by default so the ratio does not
depend on the machine's other load. Also prints each head's parameter count and the size of
its head-only checkpoint.

    PYTHONPATH=src python benchmarks/detector_speed.py [--threads 1] [--repeats 20]
"""

from __future__ import annotations

import argparse
import io

import torch

import salience as sl
from salience.errors import SalienceError
from salience.metrics.cost import median_seconds
from salience.models.zoo.efficientnet_lite import build
from salience.models.checkpoint import head_state_dict
from salience.models.zoo.scene_deformable_detr import SceneDeformableDETR
from salience.models.zoo.scene_detr import SceneDETR


def seconds_per_call(module: torch.nn.Module, x: torch.Tensor, repeats: int) -> float:
    """Median wall time of one forward pass in inference mode (after two warm-up calls)."""
    def call():
        with torch.inference_mode():
            module(x)

    call(), call()
    return median_seconds(call, repeats, x.device)


def head_megabytes(module: torch.nn.Module) -> float:
    """Size of the module's head-only checkpoint (everything but the frozen backbone)."""
    buffer = io.BytesIO()
    torch.save(head_state_dict(module), buffer)
    return buffer.tell() / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--classes", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    lite = build("efficientnet_lite0").eval()
    base = seconds_per_call(lite, torch.randn(1, 3, 224, 224), args.repeats)
    print(f"threads={args.threads} repeats={args.repeats}")
    print(f"efficientnet_lite0 @224: {base * 1000:.1f} ms (1.00x)")
    x = torch.randn(1, 3, 256, 256)
    for name, cls in (("scene-detr", SceneDETR), ("scene-deformable-detr", SceneDeformableDETR)):
        try:
            module, source = sl.load_model(name).module, "shipped weights"
        except SalienceError:
            module, source = cls(num_classes=args.classes).eval(), "random head, default config"
        params = sum(p.numel() for k, p in module.named_parameters() if not k.startswith("backbone."))
        t = seconds_per_call(module, x, args.repeats)
        print(f"{name} ({source}) @256: {t * 1000:.1f} ms ({t / base:.2f}x), head {params / 1e6:.2f} M params, "
              f"{head_megabytes(module):.2f} MB; config {module.config}")


if __name__ == "__main__":
    main()
