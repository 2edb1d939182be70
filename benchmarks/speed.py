"""Cost of each method as a ratio to one forward pass, side by side with peer libraries.

Run:  python benchmarks/speed.py            (CPU, default model, 224x224, batch 1)
      python benchmarks/speed.py --batch 16 --device cuda
      python benchmarks/speed.py --only vit  (attention methods on ViT-S/16, batches 1 and 16)

For every method the script times `explainer.attribute` (the map computation, with the
target class given, as the peers get it) and the peer library's call on the same input,
each as the median of --repeats runs, and divides by the median time of one forward pass of
the same batch measured in the same run. Peak extra memory (RSS high-water mark above the
resident size before the call; Linux only) is reported for IG.

``--only vit`` times the attention methods (raw attention, rollout, Chefer) and Grad-CAM on
a randomly initialised timm ViT-S/16 at 224 px, batches 1 and 16, against pytorch-grad-cam's
GradCAM with its ViT ``reshape_transform``, each call alternating with a forward pass of the
same batch (`metrics.cost.alternating_seconds`, medians of --repeats pairs) so that drifting
machine load hits both alike, and reports the memory taken by capturing all attention maps of
ViT-B/16 at batch 16 (the exact sum of the captured tensors' bytes).
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
from salience.metrics.cost import alternating_seconds, median_seconds  # noqa: E402
from salience.attention import capture_attention  # noqa: E402
from salience.models.adapters.anatomy_discovery import timm_anatomy  # noqa: E402
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


def timm_vit(name: str, device: torch.device) -> sl.Model:
    """A randomly initialised timm ViT at 224 px with its discovered token anatomy."""
    timm = import_optional("timm")
    torch.manual_seed(0)
    module = timm.create_model(name, pretrained=False).eval().to(device)
    model = sl.wrap(module, input_size=224, name=name)
    model.anatomy = timm_anatomy(module)
    return model


def grad_cam_reads_tokens(model: sl.Model) -> bool:
    """Whether our Grad-CAM uses token features: a block's output or a layer inside a block
    but outside its attention (without token CAMs the automatic choice on a timm ViT is
    ``blocks.11.attn.k_norm``, whose (B, heads, N, d) output only looks spatial)."""
    try:
        layer = model.cam_layer_name
    except Exception:  # noqa: BLE001 - no usable CAM layer at all
        return False
    anatomy = model.anatomy
    inside_attention = any(layer == a or layer.startswith(a + ".") for a in anatomy.attentions)
    return not inside_attention and any(layer == b or layer.startswith(b + ".") for b in anatomy.blocks)


def vit_rows(device: torch.device, repeats: int) -> None:
    """Attention methods and Grad-CAM on ViT-S/16 (batches 1 and 16); ViT-B/16 map memory."""
    model = timm_vit("vit_small_patch16_224", device)
    net = model.module
    gc = import_optional("pytorch_grad_cam")
    outs = import_optional("pytorch_grad_cam.utils.model_targets")

    def reshape_transform(tensor, height=14, width=14):
        return tensor[:, net.num_prefix_tokens:].reshape(tensor.size(0), height, width, -1).permute(0, 3, 1, 2)

    ours = {"raw_attention": "≤ 1.2", "rollout": "≤ 1.2", "chefer": "≤ 2.5", "gradcam": "≤ 2.5"}
    for batch in (1, 16):
        x = example_batch(model, batch).to(device)
        with torch.inference_mode():
            classes = model(x).argmax(1).cpu()
        target = ClassTarget(classes, torch.arange(batch))

        def forward():
            with torch.inference_mode():
                model(x)

        t_forward = timed(forward, 2 * repeats, device)
        print(f"\n# vit_small_patch16_224 (random weights) on {device.type} ({torch.get_num_threads()} threads), "
              f"batch {batch}; one forward = {t_forward * 1000:.1f} ms (median)\n")
        print("| method | goal × forward | ours s/batch | ours × forward |")
        print("|---|---|---|---|")
        for name, goal in ours.items():
            if name == "gradcam" and not grad_cam_reads_tokens(model):
                print(f"| gradcam (token CAM) | {goal} | skipped: no token CAM layer in this branch | – |", flush=True)
                continue
            explainer = sl.get_explainer(name)
            t_ours, t_fwd = alternating_seconds(lambda: explainer.attribute(model, x, target), forward, repeats, device)
            print(f"| {name} | {goal} | {t_ours:.3f} | {t_ours / t_fwd:.2f} |", flush=True)
        cam = gc.GradCAM(model=net, target_layers=[net.blocks[-1].norm1], reshape_transform=reshape_transform)
        tgts = [outs.ClassifierOutputTarget(c) for c in classes.tolist()]
        t_peer, t_fwd = alternating_seconds(lambda: cam(input_tensor=x, targets=tgts), forward, repeats, device)
        print(f"| pytorch-grad-cam GradCAM (blocks[-1].norm1, reshape_transform) | peer | {t_peer:.3f} | "
              f"{t_peer / t_fwd:.2f} |", flush=True)

    base = timm_vit("vit_base_patch16_224", device)
    x = torch.randn(16, 3, 224, 224, device=device)
    with torch.inference_mode(), capture_attention(base) as record:
        base(x)
    total = sum(a.numel() * a.element_size() for a in record.maps)
    shape = tuple(record.maps[0].shape)
    print(f"\nViT-B/16, batch 16: capturing all attention maps keeps {len(record.maps)} maps of {shape} "
          f"{record.maps[0].dtype}, {total / 2**20:.0f} MiB (sum of the captured tensors' bytes)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rise-masks", type=int, default=4000)
    parser.add_argument("--methods", default="", help="comma-separated subset of our methods")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--only", choices=["vit"], help="run only this group of rows")
    args = parser.parse_args()

    device = torch.device(args.device)
    if args.only == "vit":
        vit_rows(device, args.repeats)
        return
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
