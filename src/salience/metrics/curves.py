"""The engine of every perturbation metric: score curves of progressively perturbed images.

Step k of image n shows ``finish`` on the ``counts[k]`` pixels ranked first and ``start``
elsewhere. All (image, step) pairs are laid out in one flat list and streamed through the
model in chunks of ``batch_size``: each chunk's images are built at once from the pixel
ranks (``rank < count``), so memory stays bounded and there is no Python loop per step.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from ..errors import TargetError
from ..models.fast import inference_forward
from ..models.model import Model
from ..targets import Target, resolve_detection_target, resolve_target
from .scoring import ScoreFn

PRECISIONS = ("fp32", "bf16")


@dataclass
class CurveResult:
    """A curve metric's result.

    Attributes
    ----------
    values : Tensor (N,)
        The per-image AUC (the metric's value); ``auc`` is the same tensor.
    curves : Tensor (N, K)
        The score after each step, for plotting.
    fractions : Tensor (K,)
        The fraction of pixels changed at each step (the curve's x axis).
    """

    values: torch.Tensor
    curves: torch.Tensor
    fractions: torch.Tensor

    @property
    def auc(self) -> torch.Tensor:
        return self.values


def trapezoid_auc(curves: torch.Tensor, fractions: torch.Tensor) -> torch.Tensor:
    """Trapezoid area under each curve, divided by the fraction span (so [0, 1] for scores in [0, 1]).

    With evenly spaced fractions over [0, 1] this is RISE's ``(sum - a0/2 - a_last/2) / (K - 1)``.
    """
    span = (fractions[-1] - fractions[0]).clamp_min(1e-12)
    return torch.trapezoid(curves, fractions.to(curves), dim=1) / span


def pixel_counts(n_pixels: int, step: int | None = None, n_steps: int | None = None,
                 fractions: torch.Tensor | None = None) -> torch.Tensor:
    """How many pixels are changed at each point of the curve, from 0 to all.

    ``step`` pixels per step (the last step may be partial, as in RISE), or ``n_steps``
    even steps (counts rounded), or explicit ``fractions`` in [0, 1].
    """
    if fractions is not None:
        return (torch.as_tensor(fractions, dtype=torch.float64) * n_pixels).round().long()
    if step is not None:
        if step < 1:
            raise ValueError("step must be >= 1 pixel")
        n = -(-n_pixels // step)
        return (torch.arange(n + 1) * step).clamp_max(n_pixels)
    if n_steps is None or n_steps < 1:
        raise ValueError("give step (pixels), n_steps (>= 1) or fractions")
    return torch.linspace(0, n_pixels, n_steps + 1, dtype=torch.float64).round().long()


def as_target(model: Model, x: torch.Tensor, target: Any) -> Target:
    """A `Target` from anything `resolve_target` accepts (``"top1"`` runs one forward).

    For a detector, one detection per row of ``x``: a `DetectionTarget`, or a detection index
    (or a list of them, one per row; ``"top1"`` is the best detection of each row).
    """
    if isinstance(target, Target):
        return target
    with torch.inference_mode():
        output = model(x)
    if model.task == "detection":
        spec = 0 if isinstance(target, str) and target.strip().lower() in ("top1", "top") else target
        resolved = resolve_detection_target(spec, output.select(model.score_threshold, model.top_k), model.class_names)
        if len(resolved) != x.shape[0]:
            raise TargetError(f"{len(resolved)} detections for {x.shape[0]} images: a detector metric scores one "
                              "detection per image row; pass the Explanation or a detection index")
        return resolved
    return resolve_target(target, output, model.class_names)


@contextmanager
def forward_mode(model: Model, precision: str = "fp32") -> Iterator[None]:
    """Inference mode, optionally with bf16 autocast."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    with torch.inference_mode(), torch.autocast(
        device_type=model.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"
    ):
        yield


def perturbation_curves(
    model: Model,
    ranks: torch.Tensor,
    start: torch.Tensor,
    finish: torch.Tensor,
    counts: torch.Tensor,
    target: Target,
    score_fn: ScoreFn,
    batch_size: int = 8,
    precision: str = "fp32",
    channels_last: bool | None = None,
    trace: bool = True,
    perturb: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Scores (N, K): image n with its ``counts[k]`` first-ranked pixels taken from ``finish``.

    ``ranks`` (N, H*W) from `pixel_ranks`; ``start`` / ``finish`` (N, 3, H, W); sample n
    belongs to target row n. Batches run through `inference_forward` (channels-last, frozen
    trace in fp32; see `salience.models.fast`). ``perturb(images, steps, changed)``, if given,
    builds a chunk's perturbed batch instead (image and step numbers (b,), changed pixels
    (b, 1, H, W)); ``finish`` is then unused (ROAD's imputation).
    """
    n, k = ranks.shape[0], counts.numel()
    h, w = start.shape[-2:]
    device = start.device
    counts = counts.to(device)
    image_of = torch.arange(n, device=device).repeat_interleave(k)
    step_of = torch.arange(k, device=device).repeat(n)

    def build(chunk: slice) -> torch.Tensor:
        images = image_of[chunk]
        changed = (ranks[images] < counts[step_of[chunk]][:, None]).view(-1, 1, h, w)
        if perturb is None:
            return torch.where(changed, finish[images], start[images])
        return perturb(images, step_of[chunk], changed)

    return score_samples(model, start[:1], image_of, build, target, score_fn, batch_size, precision, channels_last,
                         trace).view(n, k)


def score_samples(
    model: Model,
    example: torch.Tensor,
    rows: torch.Tensor,
    build: Callable[[slice], torch.Tensor],
    target: Target,
    score_fn: ScoreFn,
    batch_size: int = 8,
    precision: str = "fp32",
    channels_last: bool | None = None,
    trace: bool = True,
) -> torch.Tensor:
    """Scores (len(rows),) of perturbed images made chunk by chunk: ``build(chunk)`` gives the
    images of samples ``chunk`` (a slice), sample i belonging to target row ``rows[i]``.

    The chunks (``batch_size`` images) run through `inference_forward` (channels-last, frozen
    trace in fp32; see `salience.models.fast`); ``example`` (1, 3, H, W) gives their shape.
    """
    scores = torch.empty(len(rows), device=example.device)
    with forward_mode(model, precision):
        forward = inference_forward(model, example.expand(min(batch_size, len(rows)), -1, -1, -1),
                                    trace=trace and precision == "fp32", channels_last=channels_last)
        for begin in range(0, len(rows), batch_size):
            chunk = slice(begin, min(begin + batch_size, len(rows)))
            scores[chunk] = score_fn(forward(build(chunk)), target, rows[chunk]).float()
    return scores
