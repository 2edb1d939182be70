"""Insertion, deletion and ID score (Petsiuk et al., RISE), with the seed papers' presets.

Deletion starts from the image and replaces the most salient pixels by the reference,
step by step; insertion starts from the reference and reveals the most salient pixels of
the image. The score is recorded at every step (the unperturbed and fully perturbed ends
included) and summarised by the trapezoid AUC over the fraction of pixels changed.
ID score = insertion AUC − deletion AUC.

Presets (explicit arguments override them; none changes the target, which is ``top1``,
the predicted class, unless given):

- ``rise``: probability; insertion from RISE's blur, deletion to black; one image row of
  pixels per step (W pixels, so H steps: 224 steps at 224², as RISE's ``step=224``).
- ``keio`` (the ALA paper): probability; black reference for both; 48 even steps
  (3072 pixels per step at 384²; at other sizes the step is H·W/48, rounded).
- ``aha``: probability; each image's mean colour for both; 21 fractions 0, 5%, ..., 100%.

Detectors: the target is one detection per row (an Explanation's detections, or a
`DetectionTarget`); ``score="probability"`` (the presets' choice) tracks that query's class
probability, ``score="drise"`` the D-RISE similarity of the perturbed image's best-matching
detection to the original detection (`scoring.drise_score`), which does not assume the same
query keeps the object.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import UnknownNameError
from ..models.model import Model
from .curves import CurveResult, as_target, perturbation_curves, pixel_counts, trapezoid_auc
from .maps import as_maps, pixel_ranks
from .references import Reference, reference_image
from .scoring import Score, drise_score, score_function

PRESETS: dict[str, dict[str, Any]] = {
    "rise": {"score": "probability", "insertion_reference": "blur", "deletion_reference": "zero", "step": "row"},
    "keio": {"score": "probability", "insertion_reference": "zero", "deletion_reference": "zero", "n_steps": 48},
    "aha": {"score": "probability", "insertion_reference": "mean", "deletion_reference": "mean", "n_steps": 20},
}


def _settings(preset: str, mode: str, width: int, reference, step, n_steps, score) -> dict[str, Any]:
    if preset not in PRESETS:
        raise UnknownNameError("preset", preset, list(PRESETS))
    p = PRESETS[preset]
    if step is None and n_steps is None:
        step = width if p.get("step") == "row" else None
        n_steps = p.get("n_steps")
    return {
        "reference": reference if reference is not None else p[f"{mode}_reference"],
        "step": step,
        "n_steps": n_steps,
        "score": score if score is not None else p["score"],
    }


def causal_curve(
    mode: str,
    model: Model,
    x: torch.Tensor,
    maps: Any,
    target: Any = "top1",
    *,
    preset: str = "rise",
    reference: Reference | None = None,
    step: int | None = None,
    n_steps: int | None = None,
    score: Score | None = None,
    batch_size: int = 8,
    precision: str = "fp32",
    channels_last: bool | None = None,
    trace: bool = True,
) -> CurveResult:
    """Insertion (``mode="insertion"``) or deletion curves and AUCs; see the module doc."""
    x = x.to(model.device)
    h, w = x.shape[-2:]
    s = _settings(preset, mode, w, reference, step, n_steps, score)
    ranks = pixel_ranks(as_maps(maps, (h, w)).to(x.device))
    target = as_target(model, x, target)
    ref = reference_image(x, s["reference"], model.preprocess)
    start, finish = (ref, x) if mode == "insertion" else (x, ref)
    counts = pixel_counts(h * w, s["step"], s["n_steps"])
    score_fn = drise_score(model, x, target) if s["score"] == "drise" else score_function(s["score"])
    curves = perturbation_curves(
        model, ranks, start, finish, counts, target, score_fn, batch_size, precision, channels_last, trace,
    )
    fractions = counts.to(curves.device, torch.float32) / (h * w)
    return CurveResult(trapezoid_auc(curves, fractions), curves, fractions)


def insertion(model: Model, x: torch.Tensor, maps: Any, target: Any = "top1", **options) -> CurveResult:
    """Insertion AUC per image (higher is better): reveal the most salient pixels first.

    Options: ``preset`` (rise | keio | aha), ``reference`` (zero | input-zero | mean | blur
    | tensor), ``step`` (pixels) or ``n_steps``, ``score`` (probability | logit | callable),
    ``batch_size``, ``precision`` (fp32 | bf16), ``channels_last``, ``trace``.
    """
    return causal_curve("insertion", model, x, maps, target, **options)


def deletion(model: Model, x: torch.Tensor, maps: Any, target: Any = "top1", **options) -> CurveResult:
    """Deletion AUC per image (lower is better): remove the most salient pixels first."""
    return causal_curve("deletion", model, x, maps, target, **options)


def id_score(model: Model, x: torch.Tensor, maps: Any, target: Any = "top1", **options) -> CurveResult:
    """Insertion AUC − deletion AUC per image; the curve is the difference of the two curves."""
    target = as_target(model, x.to(model.device), target)
    ins = insertion(model, x, maps, target, **options)
    dele = deletion(model, x, maps, target, **options)
    return CurveResult(ins.values - dele.values, ins.curves - dele.curves, ins.fractions)
