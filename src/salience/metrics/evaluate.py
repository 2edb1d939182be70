"""`evaluate`: several metrics of one set of maps, by name (``sl.evaluate``)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from ..errors import UnknownNameError
from ..models.model import Model
from ..targets import ClassTarget, DetectionTarget
from .curves import CurveResult, as_target
from .insertion_deletion import deletion, id_score, insertion
from .instances import instance_regions, own_instance_masks, wrong_instance
from .miou import miou
from .perturbation_auc import negative_perturbation, positive_perturbation
from .pointing import energy_pointing_game, pointing_game
from .faithfulness import saco
from .road import road_lerf, road_morf
from .robustness import infidelity, max_sensitivity

METRICS: dict[str, Callable[..., Any]] = {
    "insertion": insertion,
    "deletion": deletion,
    "id": id_score,
    "positive_perturbation": positive_perturbation,
    "negative_perturbation": negative_perturbation,
    "road_morf": road_morf,
    "road_lerf": road_lerf,
    "saco": saco,
    "infidelity": infidelity,
    "max_sensitivity": max_sensitivity,
    "miou": miou,
    "pointing_game": pointing_game,
    "energy_pointing_game": energy_pointing_game,
    "wrong_instance": wrong_instance,
}
CURVE_METRICS = ("insertion", "deletion", "id", "positive_perturbation", "negative_perturbation", "road_morf", "road_lerf")
DEFAULT_METRICS = ("insertion", "deletion", "id")
TARGET_METRICS = (insertion, deletion, id_score, positive_perturbation, negative_perturbation, road_morf, road_lerf,
                  saco, infidelity, max_sensitivity)
ALIASES = {"id_score": "id", "sensitivity_max": "max_sensitivity", "road": "road_morf", "pointing": "pointing_game", "energy_pointing": "energy_pointing_game", "iou": "miou"}


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
    labels: Any = None,
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

    Detectors: pass a detector's `Explanation` (one map per detection; its queries are
    re-scored) or maps with a `DetectionTarget`. Ground truth is then given per IMAGE, one
    entry per object: ``masks`` [(K, h, w)], ``boxes`` [(K, 4)] in input pixels (or
    ``box_frame``), ``labels`` [(K,)] classes. Each detection is matched to its object
    (`metrics.instances.match_instances`: same class, best IoU ≥ ``iou_threshold``, 0.5);
    ``pointing_game``, ``energy_pointing_game`` and ``miou`` use that object's mask (or box),
    ``wrong_instance`` the other objects'; unmatched detections give NaN.
    """
    functions = {name: metric_function(name) for name in metrics}
    maps = getattr(explanation_or_maps, "maps", explanation_or_maps)
    index = getattr(explanation_or_maps, "image_index", None)
    x = x.to(model.device)
    if index is not None and (len(index) != x.shape[0] or not torch.equal(index.cpu(), torch.arange(x.shape[0]))):
        x = x[index.to(x.device)]
    classes = getattr(explanation_or_maps, "classes", None)
    queries = getattr(explanation_or_maps, "queries", None)
    if target is None and queries is not None:
        target = DetectionTarget(index.cpu(), queries, classes, model.class_names,
                                 boxes=explanation_or_maps.boxes)
    elif target is None and classes is not None:
        target = ClassTarget(classes, torch.arange(len(classes)), model.class_names)
    needs_target = any(f in TARGET_METRICS for f in functions.values())
    target = as_target(model, x, "top1" if target is None else target) if needs_target else target
    truth = {"masks": masks, "boxes": boxes}
    if model.task == "detection" and (masks is not None or boxes is not None) and any(
            f in (miou, pointing_game, energy_pointing_game) for f in functions.values()):
        regions = instance_regions(target, tuple(x.shape[-2:]), x.device, masks, boxes, labels,
                                   options.get("iou_threshold", 0.5), options.get("box_frame"))
        truth = {"masks": own_instance_masks(regions), "boxes": None}
    results: dict[str, Any] = {}
    for name, fn in functions.items():
        given = {"masks": masks, "boxes": boxes, "labels": labels} if fn is wrong_instance else truth
        kwargs = _accepted(fn, {**options, "preset": preset, **given})
        result = fn(model, x, maps, target, **kwargs)
        results[name] = result if return_curves or not isinstance(result, CurveResult) else result.values
    return results


_OPTIONS = {
    insertion: {"preset", "reference", "step", "n_steps", "score", "batch_size", "precision", "channels_last", "trace"},
    positive_perturbation: {"fractions", "reference", "score", "batch_size", "precision", "channels_last", "trace"},
    miou: {"masks", "boxes", "threshold", "box_frame"},
    pointing_game: {"masks", "boxes", "tolerance", "box_frame"},
    energy_pointing_game: {"masks", "boxes", "box_frame"},
    wrong_instance: {"masks", "boxes", "labels", "iou_threshold", "box_frame"},
}
_OPTIONS[road_morf] = {"fractions", "noise", "score", "seed", "sweeps", "batch_size", "precision", "channels_last",
                       "trace"}
_OPTIONS[road_lerf] = _OPTIONS[road_morf]
_OPTIONS[saco] = {"groups", "reference", "score", "batch_size", "channels_last", "trace"}
_OPTIONS[infidelity] = {"n_perturbations", "noise", "normalize", "score", "seed", "perturbations", "batch_size",
                        "channels_last", "trace"}
_OPTIONS[max_sensitivity] = {"method", "n_perturbations", "radius", "seed", "perturbations"}
_OPTIONS[deletion] = _OPTIONS[id_score] = _OPTIONS[insertion]
_OPTIONS[negative_perturbation] = _OPTIONS[positive_perturbation]


def _accepted(fn: Callable[..., Any], options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k in _OPTIONS[fn]}
