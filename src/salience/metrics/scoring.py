"""What a perturbation metric records at each step: a score per sample.

``score`` is ``"logit"`` (the target's own differentiable score, e.g. the class logit),
``"probability"`` (softmax of the logits at the target class; other targets may provide a
``probability(output, rows)`` method), ``"accuracy"`` (1 where the target class is still the
top-1 prediction, else 0) or a callable ``fn(output, target, rows) -> (len(rows),)``.
Going through `Target` keeps the metrics free of class assumptions, so a detection target
with its own score plugs in unchanged.
"""

from __future__ import annotations

from typing import Any, Callable, Union

import torch

from ..errors import TargetError
from ..methods.drise import best_match_similarity, target_vectors
from ..targets import ClassTarget, DetectionTarget, Target

ScoreFn = Callable[[Any, Target, torch.Tensor], torch.Tensor]
Score = Union[str, ScoreFn]
SCORES = ("logit", "probability", "accuracy")


def _logit(output: Any, target: Target, rows: torch.Tensor) -> torch.Tensor:
    return target.score(output, rows)


def _class_of(target: Target, rows: torch.Tensor, kind: str) -> torch.Tensor:
    if not isinstance(target, ClassTarget):
        raise TargetError(f"score='{kind}' needs a class target; use score='logit' or a callable")
    return target.classes[rows.cpu()]


def _probability(output: Any, target: Target, rows: torch.Tensor) -> torch.Tensor:
    if not isinstance(target, ClassTarget) and hasattr(target, "probability"):
        return target.probability(output, rows)
    classes = _class_of(target, rows, "probability").to(output.device)
    return output.float().softmax(1).gather(1, classes[:, None])[:, 0]


def _accuracy(output: Any, target: Target, rows: torch.Tensor) -> torch.Tensor:
    classes = _class_of(target, rows, "accuracy").to(output.device)
    return (output.argmax(1) == classes).float()


def drise_score(model: Any, x: torch.Tensor, target: Target) -> ScoreFn:
    """Score = D-RISE similarity of the best-matching detection to the original one (detectors).

    The original detection of each target row (box and class probabilities) is read from the
    clean images ``x`` (one row per target row); each perturbed image is then scored by
    `salience.methods.drise.best_match_similarity` (IoU · class-vector cosine · objectness).
    """
    if not isinstance(target, DetectionTarget):
        raise TargetError("score='drise' needs detection targets (a detector's Explanation)")
    boxes, probs = target_vectors(model, x, target)

    def score(output: Any, target: Target, rows: torch.Tensor) -> torch.Tensor:
        rows = rows.to(boxes.device)
        return best_match_similarity(boxes[rows], probs[rows], output)

    return score


def score_function(score: Score) -> ScoreFn:
    """The function ``(output, target, rows) -> scores`` that ``score`` names."""
    if callable(score):
        return score
    table = {"logit": _logit, "probability": _probability, "accuracy": _accuracy}
    if score not in table:
        raise ValueError(f"score must be one of {SCORES} or a callable, got {score!r}")
    return table[score]
