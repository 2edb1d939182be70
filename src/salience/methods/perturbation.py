"""Perturbation methods: explain a model by changing its input and watching the score.

Both methods perturb in pixel space. The model sees normalised input x = (p − mean) / std,
so replacing a pixel p by a colour c, or scaling it by a mask value m towards c, is
``x' = fill + (x − fill)·m`` with ``fill = (c − mean) / std`` (m = 0 gives the colour c,
m = 1 the original pixel). RISE multiplies the photo by its masks (c = black, as in the
paper); Occlusion paints windows with a baseline colour (the normalisation mean by default,
which is 0 in normalised space, Captum's usual baseline).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Callable, Sequence

import torch

from ..models.fast import inference_forward
from ..models.model import Model
from ..targets import ClassTarget, Target
from .base import Explainer, batches, register
from .masks import rise_masks

SCORES = ("probability", "logit")
AUTOCAST = (None, "bf16")


def pixel_fill(model: Model, colour: float | str | Sequence[float], device) -> torch.Tensor:
    """The (1, 3, 1, 1) normalised value of a pixel colour: a float in [0, 1] for every
    channel, three floats, or ``"mean"`` (the model's normalisation mean colour)."""
    pre = model.preprocess
    if isinstance(colour, str):
        if colour != "mean":
            raise ValueError(f"baseline must be a pixel value in [0, 1], three of them, or 'mean'; got '{colour}'")
        return torch.zeros(1, 3, 1, 1, device=device)
    value = torch.as_tensor(colour, dtype=torch.float32, device=device).expand(3).reshape(1, 3, 1, 1)
    mean = torch.tensor(pre.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, device=device).view(1, 3, 1, 1)
    return (value - mean) / std


def target_scores(model: Model, images: torch.Tensor, target: Target, rows: torch.Tensor, score: str,
                  forward: Callable | None = None) -> torch.Tensor:
    """Float scores of ``images`` for target rows ``rows`` (through ``forward``, default the model).

    ``score="probability"`` reads class targets from the softmax of the logits (when there
    is more than one, e.g. several CLIP prompts); other targets (callables) always give
    their own score.
    """
    output = (forward or model)(images)
    if score == "probability" and isinstance(target, ClassTarget) and output.shape[1] > 1:
        output = output.float().softmax(1)
    return target.score(output, rows).float()


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


@register
class RISE(Explainer):
    """RISE: random smooth masks weighted by the model's score on the masked photo.

    saliency = Σ_i score(x ⊙ M_i)·M_i / (N·p1), masks from `masks.rise_masks` (Petsiuk et
    al.'s generator: s x s Bernoulli(p1) grids, bilinear upsampling, random shift). The
    masks multiply the photo in pixel space (masked-out pixels are black).

    Parameters
    ----------
    n_masks, grid_size, p1, seed :
        Number of masks N, grid size s, keep probability, and the seed of the masks
        (the same masks on every device and for every batch size).
    score : {"probability", "logit"}
        Class targets score the softmax probability (as in the paper) or the logit.
    autocast : {None, "bf16"}
        Run the masked forwards under bfloat16 autocast. It is used only if it keeps the
        top-1 class of every explained image (checked on the clean images); otherwise a
        warning is issued and the run stays in float32. The map keeps its float32
        accumulation; bf16 scores carry ~3 significant digits of noise. Worth it only where
        the hardware has bf16 units (GPUs, CPUs with AVX512-BF16/AMX): on an AVX2 CPU
        without them a bf16 forward measured ~9x slower than float32.
    trace, channels_last :
        Run the masked batches through `salience.models.fast.inference_forward` (a
        frozen TorchScript trace, verified against the eager model; channels-last images,
        None: on CPU only). Tracing halves the cost per image on EfficientNet-Lite0 on CPU.
    batch_size : int or None
        Masked images per forward pass; None: 4 on CPU, 64 on GPU. On CPU, large batches
        are memory-bound: per image, batch 4 took 0.76x and batch 32 1.58x the time of a
        batch-1 forward (EfficientNet-Lite0, channels-last, one thread, eager).
    """

    name = "rise"
    family = "perturbation"

    def __init__(
        self,
        n_masks: int = 4000,
        grid_size: int = 7,
        p1: float = 0.5,
        seed: int = 0,
        score: str = "probability",
        autocast: str | None = None,
        trace: bool = True,
        channels_last: bool | None = None,
        batch_size: int | None = None,
    ):
        super().__init__(batch_size=batch_size)
        _check_choice("score", score, SCORES)
        _check_choice("autocast", autocast, AUTOCAST)
        self.trace = trace
        self.n_masks = n_masks
        self.grid_size = grid_size
        self.p1 = p1
        self.seed = seed
        self.score = score
        self.autocast = autocast
        self.channels_last = channels_last

    def attribute(self, model: Model, x: torch.Tensor, target: Target) -> torch.Tensor:
        n, _, h, w = x.shape
        rows = torch.arange(n, device=x.device)
        fill = pixel_fill(model, 0.0, x.device)
        with torch.inference_mode():
            offset = x.float() - fill
            saliency = torch.zeros(n, h * w, device=x.device)
            batch = self.batch_for(x.device, cpu=4, gpu=64)
            scores_of = self._scorer(model, x, target, batch)
            masks = rise_masks(self.n_masks, (h, w), self.grid_size, self.p1, self.seed, batch, x.device)
            for mask in masks:
                flat = mask.flatten(1).T  # (H·W, B)
                for r in range(n):
                    images = torch.addcmul(fill, offset[r : r + 1], mask)
                    scores = scores_of(images, rows[r].expand(len(mask)))
                    saliency[r].addmv_(flat, scores)
        return (saliency / (self.n_masks * self.p1)).view(n, h, w)

    def _scorer(self, model: Model, x: torch.Tensor, target: Target, batch: int) -> Callable:
        """``(images, rows) -> scores`` in this run's precision, through the fast forward."""
        if self.autocast == "bf16" and _keeps_top1(model, x, target):
            def scores_of(images: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
                with _bf16(x.device):
                    return target_scores(model, images, target, rows, self.score)

            return scores_of
        forward = inference_forward(model, x[:1].expand(batch, -1, -1, -1), self.trace, self.channels_last)
        return lambda images, rows: target_scores(model, images, target, rows, self.score, forward)


def _bf16(device: torch.device) -> torch.autocast:
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _keeps_top1(model: Model, x: torch.Tensor, target: Target) -> bool:
    """Whether bf16 autocast leaves each clean image's top-1 class (or, for outputs that are
    not logits, each target score within 5%) as float32 gives it; warn if not."""
    with torch.inference_mode():
        exact = model(x)
        with _bf16(x.device):
            fast = model(x)
    if isinstance(exact, torch.Tensor) and exact.dim() == 2:
        same = torch.equal(exact.argmax(1), fast.argmax(1))
    else:
        rows = torch.arange(len(target), device=x.device)
        a, b = target.score(exact, rows).float(), target.score(fast, rows).float()
        same = bool(((a - b).abs() <= 0.05 * a.abs().clamp_min(1e-6)).all())
    if not same:
        warnings.warn("bf16 autocast changes the model's prediction on these images; RISE runs in float32",
                      stacklevel=3)
    return same


@register
class Occlusion(Explainer):
    """Occlusion: score drop when a sliding window is painted over, averaged per pixel.

    Every window position (see `window_positions`: Captum's ``Occlusion`` positions) is
    painted with the baseline colour on all channels; each pixel gets the mean of (clean score − occluded score) over the windows covering it.

    Parameters
    ----------
    window, stride : int or (int, int)
        Window size and step in input pixels (height, width).
    baseline : float, three floats, or "mean"
        The paint colour in pixel space ([0, 1]); "mean" is the normalisation mean.
    score : {"logit", "probability"}
        What a class target scores.
    trace, channels_last :
        The fast forward of `salience.models.fast.inference_forward` (see `rise`).
    batch_size : int or None
        Occluded images per forward pass; None: 4 on CPU, 64 on GPU.
    """

    name = "occlusion"
    family = "perturbation"

    def __init__(
        self,
        window: int | tuple[int, int] = 16,
        stride: int | tuple[int, int] = 8,
        baseline: float | str | Sequence[float] = "mean",
        score: str = "logit",
        trace: bool = True,
        channels_last: bool | None = None,
        batch_size: int | None = None,
    ):
        super().__init__(batch_size=batch_size)
        _check_choice("score", score, SCORES)
        self.trace = trace
        self.channels_last = channels_last
        self.window = window
        self.stride = stride
        self.baseline = baseline
        self.score = score

    def attribute(self, model: Model, x: torch.Tensor, target: Target) -> torch.Tensor:
        n, _, h, w = x.shape
        rows_in, cols_in = window_positions((h, w), _pair(self.window), _pair(self.stride), x.device)
        coverage = rows_in.sum(0)[:, None] * cols_in.sum(0)[None, :]  # windows covering each pixel
        n_cols = len(cols_in)
        fill = pixel_fill(model, self.baseline, x.device)
        maps = torch.zeros(n, h, w, device=x.device)
        rows = torch.arange(n, device=x.device)
        batch = self.batch_for(x.device, cpu=4, gpu=64)
        with torch.inference_mode():
            clean = target_scores(model, x, target, rows, self.score)
            forward = inference_forward(model, x[:1].expand(batch, -1, -1, -1), self.trace, self.channels_last)
            for chunk in batches(len(rows_in) * n_cols, batch):
                index = torch.arange(chunk.start, chunk.stop, device=x.device)
                in_rows, in_cols = rows_in[index // n_cols].float(), cols_in[index % n_cols].float()
                windows = (in_rows[:, None, :, None] * in_cols[:, None, None, :]).bool()  # (K, 1, H, W)
                for r in range(n):
                    images = torch.where(windows, fill, x[r : r + 1])
                    scores = target_scores(model, images, target, rows[r].expand(len(images)), self.score, forward)
                    drop = clean[r] - scores
                    maps[r] += in_rows.T @ (drop[:, None] * in_cols)
        return maps / coverage


def window_positions(size: tuple[int, int], window: tuple[int, int], stride: tuple[int, int], device=None):
    """Per axis, a (positions, n) boolean table of which pixels each window position covers.

    Positions start at 0, ``stride`` apart, ceil((n − window) / stride) + 1 of them, the
    last one cut at the edge: Captum's ``Occlusion`` positions. Window k (row-major) covers
    ``rows[k // len(cols)] x cols[k % len(cols)]``.
    """
    axes = []
    for n, k, step in zip(size, window, stride):
        if not 1 <= k <= n or step < 1 or (k < n and step > k):
            raise ValueError(f"need 1 <= window <= {n} and 1 <= stride <= window; got window {k}, stride {step}")
        starts = torch.arange(-(-(n - k) // step) + 1, device=device) * step
        pixels = torch.arange(n, device=device)
        axes.append((pixels >= starts[:, None]) & (pixels < starts[:, None] + k))
    return tuple(axes)


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))
