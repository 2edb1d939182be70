"""Speed goals of issue 17, as ratios measured in one run, each pair timed alternately.

Run:  python benchmarks/baselines_speed.py [--repeats 5] [--threads 1] [--device cuda]

On the bundled EfficientNet-Lite0 and scikit-image's coffee photo (224x224), target = the
top-1 class:

- FullGrad ÷ one forward pass of the same batch (batch 1 and 8; goal ≤ 3);
- LIME / Kernel SHAP, ours ÷ Captum's ``Lime`` / ``KernelShap`` with the same number of
  samples on the same superpixels (Captum evaluating the same number of masked images per
  forward as ours, ``perturbations_per_eval``; goal ≤ 1, i.e. at least as fast);
- ROAD (MoRF, 9 fractions, noisy linear imputation) ÷ plain deletion with the same fractions
  (Chefer's positive perturbation, the pixels painted the mean colour; goal ≤ 1.2).

Each pair is called alternately after a warm-up (`salience.metrics.cost.alternating_seconds`),
medians of ``--repeats``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import salience as sl  # noqa: E402
from salience.compat import import_optional  # noqa: E402
from salience.methods import get_explainer  # noqa: E402
from salience.methods.segments import input_photos, superpixels  # noqa: E402
from salience.metrics import positive_perturbation, road_morf  # noqa: E402
from salience.metrics.cost import alternating_seconds  # noqa: E402
from salience.metrics.road import ROAD_FRACTIONS  # noqa: E402
from salience.targets import ClassTarget  # noqa: E402

PHOTO = Path(__file__).resolve().parents[1] / "examples" / "coffee.jpg"


def fullgrad_rows(model, x, repeats):
    rows = []
    for batch in (1, 8):
        xb = x.expand(batch, -1, -1, -1).contiguous()
        target = ClassTarget(model(xb).argmax(1).detach(), torch.arange(batch))
        method = get_explainer("fullgrad")

        def forward():
            with torch.inference_mode():
                model(xb)

        ours, fwd = alternating_seconds(lambda: method.attribute(model, xb, target), forward, repeats, model.device)
        rows.append((f"fullgrad, batch {batch}", ours / fwd, "≤ 3", f"one forward {fwd * 1000:.1f} ms"))
    return rows


def surrogate_rows(model, x, repeats, n_samples):
    attr = import_optional("captum.attr")
    cls = int(model(x).argmax())
    target = ClassTarget(torch.tensor([cls]), torch.arange(1))
    segments = superpixels(input_photos(model, x)[0], "slic", 50)
    feature_mask = segments.to(x.device)[None, None].expand(1, 3, -1, -1)
    batch = 4 if x.device.type == "cpu" else 64

    def probabilities(images):
        return model(images).softmax(1)

    rows = []
    for name, peer in (("lime", attr.Lime(probabilities)), ("kernel_shap", attr.KernelShap(probabilities))):
        method = get_explainer(name, n_samples=n_samples, batch_size=batch)

        def theirs():
            with torch.no_grad():
                peer.attribute(x, target=cls, baselines=0.0, feature_mask=feature_mask, n_samples=n_samples,
                               perturbations_per_eval=batch)

        ours, captum = alternating_seconds(lambda: method.attribute(model, x, target), theirs, repeats, model.device)
        rows.append((f"{name}, {n_samples} samples", ours / captum, "≤ 1 (÷ Captum)",
                     f"ours {ours:.2f} s, Captum {captum:.2f} s"))
    return rows


def road_rows(model, x, repeats):
    target = ClassTarget(model(x).argmax(1).detach(), torch.arange(len(x)))
    maps = sl.explain(model, x, "gradcam", target=target).maps

    def road():
        road_morf(model, x, maps, target)

    def deletion():
        positive_perturbation(model, x, maps, target, fractions=ROAD_FRACTIONS)

    ours, plain = alternating_seconds(road, deletion, repeats, model.device)
    return [(f"road_morf, {len(ROAD_FRACTIONS)} fractions, batch {len(x)}", ours / plain, "≤ 1.2 (÷ deletion)",
             f"ROAD {ours:.2f} s, deletion {plain:.2f} s")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--samples", type=int, default=200, help="LIME / Kernel SHAP samples")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = sl.load_model("efficientnet_lite0", device=args.device)
    x = model.prepare(sl.load_images([str(PHOTO)]))[0].to(model.device)
    rows = fullgrad_rows(model, x, args.repeats)
    rows += surrogate_rows(model, x, max(1, args.repeats // 2), args.samples)
    rows += road_rows(model, x.expand(4, -1, -1, -1).contiguous(), args.repeats)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    print("| what | ratio | goal | detail |")
    print("|---|---:|---|---|")
    for what, ratio, goal, detail in rows:
        print(f"| {what} | {ratio:.2f} | {goal} | {detail} |")


if __name__ == "__main__":
    main()
