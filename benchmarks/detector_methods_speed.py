"""Detector methods' time for all kept detections of one image, as a ratio to one forward pass.

For scene-detr and scene-deformable-detr, on one held-out generated scene (seed 2): EIVE (goal
≤ 1.1×), D-RISE (5000 masks, the paper's setting), ODAM, Grad-CAM and chefer_detr, each called
as `sl.explain` calls it (its own clean pass and target resolution included), timed as the
median of ``--repeats`` calls alternating with forward passes of that image (inference mode,
decoding included, as `metrics.cost` times them), after a warm-up, and divided by the forward's
median. D-RISE (``--drise-repeats``, warmed up on a few masks) is divided by a forward timed
on its own.

D-RISE also gets seconds per image, masks per second and its ratio to a naive loop: one
forward per mask with no batching, as one peer implementation does (same masks, same
similarity), timed over ``--naive-masks`` masks and extrapolated linearly to the same number of
masks (printed as an extrapolation). Published D-RISE figures: about 70–170 s per image on a
V100 with 5000 masks.

Weights: the trained ``models/zoo/weights/<name>.pt`` where present; otherwise an untrained
detector of the training recipe's configuration that explains its top ``--detections``
queries (score threshold 0), the same work per detection as a trained one. The script prints
which it used.

    PYTHONPATH=src python benchmarks/detector_methods_speed.py [--device cpu|cuda] [--threads 1]
        [--repeats 5] [--drise-masks 5000] [--drise-repeats 1] [--drise-batch B] [--naive-masks 200]
        [--detections 4] [--image 0] [--methods eive,odam,gradcam,chefer_detr,drise]

``--methods`` times only the listed methods (``drise`` includes the naive loop).
"""

from __future__ import annotations

import argparse
from typing import Callable

import torch

from salience.data.scenes import SceneDataset
from salience.targets import resolve_detection_target
from salience.errors import SalienceError
from salience.images import ImageBatch
from salience.methods import get_explainer
from salience.methods.drise import best_match_similarity, target_vectors
from salience.methods.masks import rise_masks
from salience.methods.perturbation import pixel_fill
from salience.metrics.cost import alternating_seconds, median_seconds
from salience.models.detection import DetectorModel
from salience.models.zoo.lite_features import WEIGHTS_DIR
from salience.models.zoo.scene_detectors import as_detector_model, build_scene_detector, load_scene_detector
from salience.train.recipes import detector_recipe

DETECTORS = ("scene-detr", "scene-deformable-detr")
METHODS = ("eive", "odam", "gradcam", "chefer_detr", "drise")


def seconds(fn: Callable[[], object], repeats: int, device: torch.device, warmup: Callable[[], object] | None = None) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls, after one call of ``warmup`` (default ``fn``)."""
    (warmup or fn)()
    return median_seconds(fn, repeats, device)


def detector(name: str, class_names, device: str, detections: int) -> tuple[DetectorModel, str]:
    """The trained detector if its weights exist, else an untrained one keeping its top queries."""
    path = WEIGHTS_DIR / f"{name}.pt"
    if path.is_file():
        return load_scene_detector(name).to(device), f"trained weights {path}"
    torch.manual_seed(0)
    config = {**detector_recipe(name).model, "num_classes": len(class_names)}
    model = as_detector_model(build_scene_detector(config).eval(), class_names, score_threshold=0.0, top_k=detections)
    return model.to(device), f"UNTRAINED (no {path}): recipe config, top {detections} queries at score threshold 0"


def naive_drise(model: DetectorModel, x: torch.Tensor, target, n_masks: int, grid_size: int = 16, p1: float = 0.5) -> None:
    """D-RISE as a per-mask loop: one masked image per forward, no batching."""
    h, w = x.shape[-2:]
    rows = x[target.image_index.to(x.device)]
    boxes, probs = target_vectors(model, rows, target)
    fill = pixel_fill(model, 0.0, x.device)
    saliency = torch.zeros(len(target), h * w, device=x.device)
    with torch.inference_mode():
        for mask in rise_masks(n_masks, (h, w), grid_size, p1, 0, 1, x.device):
            detections = model(torch.addcmul(fill, x[:1] - fill, mask))
            weights = best_match_similarity(boxes[:, None], probs[:, None], detections)  # (N, 1)
            saliency += weights * mask.flatten(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--drise-masks", type=int, default=5000)
    parser.add_argument("--drise-repeats", type=int, default=1)
    parser.add_argument("--drise-batch", type=int, default=None, help="masked images per forward (default: the method's)")
    parser.add_argument("--naive-masks", type=int, default=200)
    parser.add_argument("--detections", type=int, default=4, help="untrained detectors: queries explained")
    parser.add_argument("--image", type=int, default=0, help="index of the held-out scene (seed 2)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    args = parser.parse_args()
    methods = args.methods.split(",")
    if set(methods) - set(METHODS):
        parser.error(f"unknown methods {sorted(set(methods) - set(METHODS))}; known: {', '.join(METHODS)}")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    scenes = SceneDataset(args.image + 1, "detection", seed=2)
    photo = scenes[args.image].image
    print(f"device={device} threads={torch.get_num_threads()} repeats={args.repeats} torch={torch.__version__}; "
          f"scene {args.image} of scenes:detection seed 2 ({photo.width}x{photo.height})")
    for name in DETECTORS:
        model, source = detector(name, scenes.class_names, args.device, args.detections)
        x, _ = model.prepare(ImageBatch([photo], ["scene"]))
        n_kept = len(model.detections(x)[1][0])
        forward = seconds(lambda: model.detections(x), args.repeats, device) if n_kept else 0.0  # inference mode
        print(f"\n{name}: {source}\n  {n_kept} kept detections; one forward pass {forward * 1000:.1f} ms")
        if not n_kept:
            print("  no detection to explain on this image; pick another with --image")
            continue
        for method in [m for m in methods if m != "drise"]:
            explainer = get_explainer(method)
            try:
                t, t_forward = alternating_seconds(lambda: explainer(model, x, "all"), lambda: model.detections(x),
                                                   args.repeats, device)
            except SalienceError as err:
                print(f"  {method:<12} n/a: {err}")
                continue
            print(f"  {method:<12} {t * 1000:10.1f} ms  {t / t_forward:8.2f}x forward (timed alternately with it)")
        if "drise" not in methods:
            continue
        drise = get_explainer("drise", n_masks=args.drise_masks, batch_size=args.drise_batch)
        t = seconds(lambda: drise(model, x, "all"), args.drise_repeats, device,
                    warmup=lambda: get_explainer("drise", n_masks=8)(model, x, "all"))
        batch = drise.masks_per_forward(device)
        print(f"  {'drise':<12} {t * 1000:10.1f} ms  {t / forward:8.2f}x forward  ({args.drise_masks} masks, batches of "
              f"{batch}: {t:.1f} s per image, {args.drise_masks / t:.1f} masks/s)")
        rows = resolve_detection_target("all", model.detections(x)[1], model.class_names)
        naive = seconds(lambda: naive_drise(model, x, rows, args.naive_masks), 1, device,
                        warmup=lambda: naive_drise(model, x, rows, 4))
        per_mask = naive / args.naive_masks
        print(f"  {'naive drise':<12} {naive * 1000:10.1f} ms for {args.naive_masks} masks, one forward each "
              f"({args.naive_masks / naive:.1f} masks/s); extrapolated to {args.drise_masks} masks: "
              f"{per_mask * args.drise_masks:.1f} s per image; ours / naive = {t / (per_mask * args.drise_masks):.2f} (time)")


if __name__ == "__main__":
    main()
