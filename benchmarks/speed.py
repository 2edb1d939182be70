"""Cost of each method as a ratio to one forward pass, side by side with peer libraries.

Run:  python benchmarks/speed.py            (CPU, default model, 224x224, batch 1)
      python benchmarks/speed.py --batch 16 --device cuda

For every method the script times `explainer.attribute` (the map computation, with the
target class given, as the peers get it) and the peer library's call on the same input,
each as the median of --repeats runs, and divides by the median time of one forward pass of
the same batch measured in the same run. Peak extra memory (RSS high-water mark above the
resident size before the call; Linux only) is reported for IG.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import salience as sl  # noqa: E402
from salience.compat import import_optional  # noqa: E402
from salience.metrics.cost import median_seconds  # noqa: E402
from salience.targets import ClassTarget  # noqa: E402


def timed(fn, repeats: int, device: torch.device) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after one warm-up."""
    fn()
    return median_seconds(fn, repeats, device)


def peak_extra_mib(fn) -> float | None:
    """Peak resident memory above the current level while ``fn`` runs, in MiB (Linux)."""
    status = Path("/proc/self/status")
    if not status.exists():
        return None

    def read(key):
        for line in status.read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) / 1024
        return 0.0

    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark
    before = read("VmRSS:")
    fn()
    return read("VmHWM:") - before


def example_batch(model: sl.Model, batch: int) -> torch.Tensor:
    skimage_data = import_optional("skimage.data")
    photos = [skimage_data.coffee(), skimage_data.chelsea(), skimage_data.astronaut()]
    images = sl.load_images([photos[i % len(photos)] for i in range(batch)])
    return model.prepare(images)[0]


def our_methods(rise_masks: int) -> dict[str, dict]:
    return {
        "saliency": {},
        "input_x_gradient": {},
        "guided_backprop": {},
        "smoothgrad": {"n_samples": 25},
        "integrated_gradients": {"steps": 50},
        "gradcam": {},
        "gradcam_pp": {},
        "layercam": {},
        "scorecam": {},
        "occlusion": {},
        "rise": {"n_masks": rise_masks},
    }


def peer_calls(model: sl.Model, x: torch.Tensor, classes: torch.Tensor) -> dict[str, tuple[str, callable]]:
    """Our method name -> (peer label, zero-argument call) for the methods peers share."""
    calls: dict[str, tuple[str, callable]] = {}
    net, target = model.module, classes.tolist()
    try:
        captum = import_optional("captum.attr")
        stdev = 0.15 * float(x.max() - x.min())
        calls["saliency"] = ("captum Saliency", lambda: captum.Saliency(net).attribute(x, target=target, abs=True))
        calls["input_x_gradient"] = ("captum InputXGradient", lambda: captum.InputXGradient(net).attribute(x, target=target))
        calls["guided_backprop"] = ("captum GuidedBackprop", lambda: captum.GuidedBackprop(net).attribute(x, target=target))
        calls["smoothgrad"] = ("captum NoiseTunnel(Saliency) 25", lambda: captum.NoiseTunnel(captum.Saliency(net)).attribute(
            x, nt_type="smoothgrad", nt_samples=25, nt_samples_batch_size=25, stdevs=stdev, target=target))
        calls["integrated_gradients"] = ("captum IG-50 (internal batch 10)", lambda: captum.IntegratedGradients(net).attribute(
            x, target=target, n_steps=50, internal_batch_size=10))
    except Exception as err:  # noqa: BLE001
        print(f"captum unavailable: {err}", file=sys.stderr)
    try:
        gc = import_optional("pytorch_grad_cam")
        outs = import_optional("pytorch_grad_cam.utils.model_targets")
        layer = [model.cam_layer]
        tgts = [outs.ClassifierOutputTarget(c) for c in target]
        for ours, cls in [("gradcam", gc.GradCAM), ("gradcam_pp", gc.GradCAMPlusPlus), ("layercam", gc.LayerCAM),
                          ("scorecam", gc.ScoreCAM)]:
            cam = cls(model=net, target_layers=layer)
            calls[ours] = (f"pytorch-grad-cam {cls.__name__}", lambda cam=cam: cam(input_tensor=x, targets=tgts))
    except Exception as err:  # noqa: BLE001
        print(f"pytorch-grad-cam unavailable: {err}", file=sys.stderr)
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rise-masks", type=int, default=4000)
    parser.add_argument("--methods", default="", help="comma-separated subset of our methods")
    parser.add_argument("--no-peers", action="store_true")
    args = parser.parse_args()

    device = torch.device(args.device)
    model = sl.load_model(args.model, device=args.device)
    x = example_batch(model, args.batch).to(device)
    with torch.inference_mode():
        classes = model(x).argmax(1).cpu()
    target = ClassTarget(classes, torch.arange(args.batch), model.class_names)

    def forward():
        with torch.inference_mode():
            model(x)

    t_forward = timed(forward, max(args.repeats, 20), device)
    print(f"# {args.model} on {device.type} ({torch.get_num_threads()} threads), batch {args.batch}, "
          f"input {tuple(x.shape[-2:])}; one forward = {t_forward * 1000:.1f} ms (median)\n")
    methods = our_methods(args.rise_masks)
    if args.methods:
        methods = {k: v for k, v in methods.items() if k in args.methods.split(",")}
    peers = {} if args.no_peers else peer_calls(model, x, classes)

    if "integrated_gradients" in methods and device.type == "cpu":
        # First, in a fresh process: later runs leave freed memory in the allocator.
        ig = sl.get_explainer("integrated_gradients", **methods["integrated_gradients"])
        mib = peak_extra_mib(lambda: ig.attribute(model, x, target))
        if mib is not None:
            print(f"IG-50 (internal batch {ig.batch_size}): peak extra resident memory {mib:.0f} MiB\n")

    print("| method | ours s/batch | ours × forward | peer | peer × forward | peer / ours |")
    print("|---|---|---|---|---|---|")
    for name, params in methods.items():
        explainer = sl.get_explainer(name, **params)
        slow = name in ("rise", "scorecam", "occlusion", "integrated_gradients", "smoothgrad")
        reps = 1 if slow else args.repeats
        t_ours = timed(lambda: explainer.attribute(model, x, target), reps, device)
        row = f"| {name} | {t_ours:.3f} | {t_ours / t_forward:.1f} |"
        if name in peers:
            label, call = peers[name]
            t_peer = timed(call, reps, device)
            row += f" {label} | {t_peer / t_forward:.1f} | {t_peer / t_ours:.2f} |"
        else:
            row += " – | – | – |"
        print(row, flush=True)


if __name__ == "__main__":
    np.random.seed(0)
    torch.manual_seed(0)
    main()
