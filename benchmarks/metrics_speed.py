"""Cost of insertion + deletion (224 steps each at 224x224) as a ratio to one forward pass.

Run:  python benchmarks/metrics_speed.py [--device cuda]

Side by side in one run, on the default model and a real photo with a random map: ours
(fp32 eager, fp32 with the frozen-trace fast path, bf16 autocast if --bf16), a naive loop
with one model call per step, and Quantus `PixelFlipping` (deletion only, as Quantus has no
insertion; 224 pixels per step). AUCs of the fast path are compared with the
fp32 eager path.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import salience as sl  # noqa: E402
from salience.compat import import_optional  # noqa: E402
from salience.metrics import deletion, insertion  # noqa: E402
from salience.metrics.references import reference_image  # noqa: E402


def timed(fn, repeats: int) -> tuple[float, object]:
    result = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def naive_both(model, x, maps, cls, step):
    """One model call per step, deletion to black and insertion from blur (the rise preset)."""
    order = maps.flatten().argsort(descending=True)
    black = reference_image(x, "zero", model.preprocess)
    blur = reference_image(x, "blur", model.preprocess)
    n = order.numel()
    for start, finish in ((x, black), (blur, x)):
        current = start.clone().flatten(2)
        with torch.inference_mode():
            model(current.view_as(x)).softmax(1)[0, cls]
            for k in range(0, n, step):
                current[..., order[k:k + step]] = finish.flatten(2)[..., order[k:k + step]]
                model(current.view_as(x)).softmax(1)[0, cls]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bf16", action="store_true", help="also time bf16 autocast (slow without bf16 hardware)")
    args = parser.parse_args()
    model = sl.load_model("efficientnet_lite0", device=args.device)
    skimage_data = import_optional("skimage.data")
    x = model.prepare(sl.load_images([skimage_data.coffee()]))[0]
    maps = torch.rand(1, 224, 224, generator=torch.Generator().manual_seed(0)).to(x.device)
    with torch.inference_mode():
        cls = int(model(x).argmax())
    t_forward, _ = timed(lambda: _inference(model, x), 20)

    def ours(**options):
        return lambda: (insertion(model, x, maps, "top1", preset="rise", **options).auc,
                        deletion(model, x, maps, "top1", preset="rise", **options).auc)

    rows = []
    t_eager, ref = timed(ours(trace=False, channels_last=False), args.repeats)
    rows.append(("ours, fp32 eager", t_eager, ref))
    t_fast, fast = timed(ours(), args.repeats)
    rows.append(("ours, fp32 frozen trace + channels-last (default)", t_fast, fast))
    if args.bf16:
        t_bf16, bf16 = timed(ours(precision="bf16"), 1)
        rows.append(("ours, bf16 autocast", t_bf16, bf16))
    t_naive, _ = timed(lambda: naive_both(model, x, maps, cls, 224), 1)
    rows.append(("naive loop, one call per step", t_naive, None))
    print(f"# insertion + deletion, 224 steps each, efficientnet_lite0 on {args.device} "
          f"({torch.get_num_threads()} threads); one forward = {t_forward * 1000:.1f} ms (median)\n")
    print("| implementation | seconds | × forward | ins AUC | del AUC |")
    print("|---|---|---|---|---|")
    for label, t, aucs in rows:
        a = f"{float(aucs[0][0]):.4f} | {float(aucs[1][0]):.4f}" if aucs is not None else "– | –"
        print(f"| {label} | {t:.2f} | {t / t_forward:.0f} | {a} |")
    try:
        quantus = import_optional("quantus")
        metric = quantus.PixelFlipping(features_in_step=224, perturb_baseline=-1.0, disable_warnings=True,
                                       display_progressbar=False, abs=False, normalise=False)
        a_batch = maps[:, None].cpu().numpy()
        t_q, curves = timed(lambda: metric(model=model.module, x_batch=x.cpu().numpy(), y_batch=np.array([cls]),
                                           a_batch=a_batch, softmax=True, channel_first=True, device=args.device), 1)
        print(f"| Quantus PixelFlipping, deletion only ({len(curves[0])} steps) | {t_q:.2f} | {t_q / t_forward:.0f} "
              "| – | – |")
    except Exception as err:  # noqa: BLE001
        print(f"\nQuantus unavailable: {err}")
    diff = max(abs(float(fast[0][0] - ref[0][0])), abs(float(fast[1][0] - ref[1][0])))
    print(f"\nlargest AUC difference, fast path vs fp32 eager: {diff:.2e}")


def _inference(model, x):
    with torch.inference_mode():
        return model(x)


if __name__ == "__main__":
    main()
