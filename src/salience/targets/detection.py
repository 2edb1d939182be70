"""Detection targets: one row per detection (image, query, class) of a query-based detector.

A row's score is that query's probability for that class in the detector's `Detections`,
so gradient methods differentiate it, perturbation metrics track it and EIVE reads the
query's cross-attention. `resolve_detection_target` turns what a user writes into one:

- ``"all"`` (default; ``"top1"`` is read the same way): every kept detection of every image,
- an int k: the k-th kept detection (best first) of every image,
- a list of ints: one detection index per image,
- a `DetectionTarget`, used as is.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..errors import TargetError
from ..models.detection import Detections, Selection
from .base import Target


class DetectionTarget(Target):
    """One detection per row, scored by its query's class probability.

    Attributes
    ----------
    image_index, queries, classes : (N,) long tensors
    boxes : (N, 4) tensor or None, the detection's box (x0, y0, x1, y1) in input pixels.
    detection_scores : (N,) tensor or None, the score the detector gave it.
    """

    def __init__(self, image_index: torch.Tensor, queries: torch.Tensor, classes: torch.Tensor,
                 class_names: Sequence[str] | None = None, boxes: torch.Tensor | None = None,
                 detection_scores: torch.Tensor | None = None):
        self.image_index = image_index.long().cpu()
        self.queries = queries.long().cpu()
        self.classes = classes.long().cpu()
        self.class_names = class_names
        self.boxes = boxes
        self.detection_scores = detection_scores

    def score(self, output: Detections, rows: torch.Tensor) -> torch.Tensor:
        if not isinstance(output, Detections):
            raise TargetError("a detection target needs a detector's Detections output")
        rows = rows.cpu()
        sample = torch.arange(len(rows), device=output.probs.device)
        return output.probs[sample, self.queries[rows].to(sample.device), self.classes[rows].to(sample.device)]

    def probability(self, output: Detections, rows: torch.Tensor) -> torch.Tensor:
        """The score is already a probability (perturbation metrics' ``score="probability"``)."""
        return self.score(output, rows)

    def labels(self) -> list[str]:
        names = self.class_names
        out = []
        for r in range(len(self)):
            c = int(self.classes[r])
            text = names[c] if names is not None else f"class {c}"
            if self.detection_scores is not None:
                text += f" {float(self.detection_scores[r]):.2f}"
            out.append(f"{text} (query {int(self.queries[r])})")
        return out


def resolve_detection_target(spec: Any, selections: list[Selection],
                             class_names: Sequence[str] | None = None) -> DetectionTarget:
    """The rows a user asked for, among the kept detections ``selections`` (one per image)."""
    if isinstance(spec, DetectionTarget):
        return spec
    n_images = len(selections)
    if isinstance(spec, str) and spec.strip().lower() in ("all", "top1", "top", "detections"):
        picks = [list(range(len(s))) for s in selections]
    elif isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
        picks = [[int(spec)]] * n_images
    elif isinstance(spec, (list, tuple)) and all(isinstance(k, int) for k in spec):
        if len(spec) != n_images:
            raise TargetError(f"got {len(spec)} detection indices for {n_images} images")
        picks = [[k] for k in spec]
    else:
        raise TargetError(f"cannot use {spec!r} as a detection target; use 'all', a detection index or a list of them")
    rows = []
    for b, (sel, ks) in enumerate(zip(selections, picks)):
        for k in ks:
            if not 0 <= k < len(sel):
                raise TargetError(f"detection {k} out of range: image {b} has {len(sel)} detections above the "
                                  f"score threshold" + (" (0..{})".format(len(sel) - 1) if len(sel) else ""))
            rows.append((b, int(sel.query[k]), int(sel.label[k]), sel.box[k], float(sel.score[k])))
    if not rows:
        raise TargetError("no detections above the score threshold in any image; lower the threshold to explain "
                          "weaker detections")
    return DetectionTarget(
        image_index=torch.tensor([r[0] for r in rows]),
        queries=torch.tensor([r[1] for r in rows]),
        classes=torch.tensor([r[2] for r in rows]),
        class_names=class_names,
        boxes=torch.stack([r[3] for r in rows]),
        detection_scores=torch.tensor([r[4] for r in rows]),
    )
