"""Evaluation metrics for saliency maps, each returning one value per image.

Perturbation metrics (`insertion`, `deletion`, `id_score`, `positive_perturbation`,
`negative_perturbation`, `road_morf`, `road_lerf`) take ``(model, x, maps, target, **options)`` and return a
`CurveResult` (``.values`` = ``.auc`` per image, ``.curves``, ``.fractions``). Localisation
metrics (`miou`, `pointing_game`, `energy_pointing_game`) take ``masks=`` or ``boxes=`` and
return a (N,) tensor, NaN for rows without ground truth. `saco` (faithfulness coefficient)
and `infidelity` return (N,) tensors; `max_sensitivity` also takes ``method=``.
`randomization_sanity` and `cost_ratio` take a method instead of maps. `evaluate` runs several by name.
"""

from .cost import cost_ratio
from .curves import CurveResult
from .evaluate import METRICS, available_metrics, evaluate, metric_function
from .insertion_deletion import PRESETS, deletion, id_score, insertion
from .miou import miou
from .perturbation_auc import negative_perturbation, positive_perturbation
from .instances import match_instances, wrong_instance
from .pointing import energy_pointing_game, pointing_game
from .randomization import SanityResult, randomization_sanity, spearman
from .faithfulness import saco
from .road import road_lerf, road_morf
from .robustness import infidelity, max_sensitivity

__all__ = [
    "METRICS",
    "PRESETS",
    "CurveResult",
    "SanityResult",
    "available_metrics",
    "cost_ratio",
    "deletion",
    "energy_pointing_game",
    "evaluate",
    "id_score",
    "infidelity",
    "insertion",
    "match_instances",
    "max_sensitivity",
    "metric_function",
    "miou",
    "negative_perturbation",
    "pointing_game",
    "positive_perturbation",
    "randomization_sanity",
    "road_lerf",
    "road_morf",
    "saco",
    "spearman",
    "wrong_instance",
]
