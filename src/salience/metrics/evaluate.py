"""`evaluate`: several metrics of one set of maps, by name (``sl.evaluate``)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from ..errors import UnknownNameError
from ..models.model import Model
from ..targets import ClassTarget
from .curves import CurveResult, as_target
from .insertion_deletion import deletion, id_score, insertion
from .miou import miou
from .perturbation_auc import negative_perturbation, positive_perturbation
from .pointing import energy_pointing_game, pointing_game

METRICS: dict[str, Callable[..., Any]] = {
    "insertion": insertion,
    "deletion": deletion,
    "id": id_score,
    "positive_perturbation": positive_perturbation,
    "negative_perturbation": negative_perturbation,
    "miou": miou,
    "pointing_game": pointing_game,
    "energy_pointing_game": energy_pointing_game,
}
CURVE_METRICS = ("insertion", "deletion", "id", "positive_perturbation", "negative_perturbation")
DEFAULT_METRICS = ("insertion", "deletion", "id")
ALIASES = {"id_score": "id", "pointing": "pointing_game", "energy_pointing": "energy_pointing_game", "iou": "miou"}


def metric_function(name: str) -> Callable[..., Any]:
    """A metric by name (case, ``-`` and a few aliases tolerated)."""
    key = name.strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in METRICS:
        raise UnknownNameError("metric", name, list(METRICS))
    return METRICS[key]


def available_metrics() -> dict[str, str]:
    """Metric names with the first line of their docstring."""
    return {n: (f.__doc__ or "").strip().splitlines()[0] for n, f in METRICS.items()}


def evaluate(
    model: Model,
    x: torch.Tensor,
    explanation_or_maps: Any,
    target: Any = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    masks: Any = None,
    boxes: Any = None,
    preset: str = "rise",
    return_curves: bool = False,
    **options,
) -> dict[str, Any]:
    """Per-image values {metric: (N,)} of maps (or an `Explanation`) on the batch ``x``.

    ``x`` holds one row per image; an `Explanation`'s rows are matched to images by its
    ``image_index`` and its target classes are reused when ``target`` is None (else "top1").
    ``preset`` applies to insertion / deletion / id; other ``options`` (batch_size,
    precision, channels_last, score, threshold, tolerance, ...) go to every metric that
    takes them. With ``return_curves=True`` curve metrics give their `CurveResult`.
    """
    functions = {name: metric_function(name) for name in metrics}
    maps = getattr(explanation_or_maps, "maps", explanation_or_maps)
    index = getattr(explanation_or_maps, "image_index", None)
    x = x.to(model.device)
    if index is not None and (len(index) != x.shape[0] or not torch.equal(index.cpu(), torch.arange(x.shape[0]))):
        x = x[index.to(x.device)]
    classes = getattr(explanation_or_maps, "classes", None)
    if target is None and classes is not None:
        target = ClassTarget(classes, torch.arange(len(classes)), model.class_names)
    needs_target = any(f in (insertion, deletion, id_score, positive_perturbation, negative_perturbation)
                       for f in functions.values())
    target = as_target(model, x, "top1" if target is None else target) if needs_target else target
    results: dict[str, Any] = {}
    for name, fn in functions.items():
        kwargs = _accepted(fn, {**options, "preset": preset, "masks": masks, "boxes": boxes})
        result = fn(model, x, maps, target, **kwargs)
        results[name] = result if return_curves or not isinstance(result, CurveResult) else result.values
    return results


_OPTIONS = {
    insertion: {"preset", "reference", "step", "n_steps", "score", "batch_size", "precision", "channels_last", "trace"},
    positive_perturbation: {"fractions", "reference", "score", "batch_size", "precision", "channels_last", "trace"},
    miou: {"masks", "boxes", "threshold", "box_frame"},
    pointing_game: {"masks", "boxes", "tolerance", "box_frame"},
    energy_pointing_game: {"masks", "boxes", "box_frame"},
}
_OPTIONS[deletion] = _OPTIONS[id_score] = _OPTIONS[insertion]
_OPTIONS[negative_perturbation] = _OPTIONS[positive_perturbation]


def _accepted(fn: Callable[..., Any], options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k in _OPTIONS[fn]}
