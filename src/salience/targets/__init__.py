"""What to explain: targets turn model output into one differentiable score per sample.

`base`: `Target`, `ClassTarget`, `CallableTarget` and `resolve_target` (classifiers, CLIP
prompts, callables); `detection`: `DetectionTarget` and `resolve_detection_target` (one row per
detection of a query-based detector).
"""

from .base import CallableTarget, ClassTarget, Target, resolve_target
from .detection import DetectionTarget, resolve_detection_target

__all__ = ["CallableTarget", "ClassTarget", "DetectionTarget", "Target", "resolve_detection_target", "resolve_target"]
