"""A detector's batch as the benchmark scores it: kept detections as targets, instance ground truth.

Per image, the kept detections (score ≥ the model's ``score_threshold``, best first, at most
``max_detections``) are the target rows; images without one are set aside (the runner records
them, nothing explains them). For each image with detections the ground truth is mapped to the
model input through its `Geometry`: instance masks (K, H, W), boxes (K, 4) in input pixels and
class labels (K,). Labels come from the instances' class names matched to the detector's class
names (case, spaces, ``_`` and ``-`` ignored); a name the detector does not know becomes −1, so
no detection matches that object, but it still counts as another object for ``wrong_instance``.
Without names, the dataset's class ids are used as they are (they must be the detector's own).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..images import ImageBatch
from ..metrics.instances import instance_regions
from ..models.detection import DetectorModel, Selection
from ..targets import DetectionTarget, resolve_detection_target
from .datasets import Sample
from .ground_truth import boxes_to_input, masks_to_input


@dataclass
class DetectionInputs:
    """A prepared detector batch.

    Attributes
    ----------
    samples : every image of the batch.
    kept : positions in ``samples`` of the images with at least one kept detection.
    x : (len(kept), 3, H, W) the model input of those images.
    target : the kept detections (``image_index`` into ``x``), or None when there is none.
    masks, boxes, labels : per kept image, its (K, H, W) masks, (K, 4) boxes and (K,) labels on
        the input, each None where the dataset has none.
    objects : (N,) the ground-truth object each detection is matched to (IoU ≥ 0.5, same class),
        −1 when unmatched, −2 when its image has neither masks nor boxes.
    """

    samples: list[Sample]
    kept: list[int]
    x: torch.Tensor
    target: DetectionTarget | None
    masks: list[torch.Tensor | None]
    boxes: list[torch.Tensor | None]
    labels: list[torch.Tensor | None]
    objects: torch.Tensor

    def __len__(self) -> int:
        return 0 if self.target is None else len(self.target)

    @property
    def empty(self) -> list[Sample]:
        """The images without a kept detection."""
        return [s for j, s in enumerate(self.samples) if j not in self.kept]

    def image_of(self, row: int) -> Sample:
        return self.samples[self.kept[int(self.target.image_index[row])]]

    def row_key(self, row: int) -> str:
        """The store's image key of detection ``row``: ``<image id>/q<query>c<class>``."""
        t = self.target
        return f"{self.image_of(row).image_id}/q{int(t.queries[row])}c{int(t.classes[row])}"

    def has_truth(self, need: str | None) -> torch.Tensor:
        """(N,) bool: whether each detection's image has the ground truth ``need`` names."""
        if need == "masks":
            per_image = torch.tensor([m is not None for m in self.masks])
        elif need == "region":
            per_image = torch.tensor([m is not None or b is not None for m, b in zip(self.masks, self.boxes)])
        else:
            per_image = torch.ones(len(self.kept), dtype=torch.bool)
        return per_image[self.target.image_index]

    def subset(self, rows: torch.Tensor) -> tuple[torch.Tensor, DetectionTarget, dict]:
        """Detections ``rows``: one input row each, their target (images renumbered) and the
        per-image ``masks`` / ``boxes`` / ``labels`` lists of their images."""
        t = self.target
        images, local = torch.unique(t.image_index[rows], return_inverse=True)
        target = DetectionTarget(local, t.queries[rows], t.classes[rows], t.class_names, t.boxes[rows],
                                 t.detection_scores[rows])
        truth = {k: _none_if_empty([v[i] for i in images.tolist()])
                 for k, v in (("masks", self.masks), ("boxes", self.boxes), ("labels", self.labels))}
        return self.x[t.image_index[rows].to(self.x.device)], target, truth


def prepare_detections(model: DetectorModel, samples: list[Sample], max_detections: int | None = None) -> DetectionInputs:
    """Run the detector on the batch and lay out its kept detections and their ground truth."""
    x, geometries = model.prepare(ImageBatch([s.image for s in samples], [s.image_id for s in samples]))
    _, selections = model.detections(x)
    if max_detections is not None:
        selections = [_first(s, max_detections) for s in selections]
    kept = [j for j, s in enumerate(selections) if len(s)]
    if not kept:
        return DetectionInputs(samples, [], x[:0], None, [], [], [], torch.zeros(0, dtype=torch.long))
    target = resolve_detection_target("all", [selections[j] for j in kept], model.class_names)
    masks = [None if samples[j].masks is None else masks_to_input(samples[j].masks, geometries[j]) for j in kept]
    boxes = [None if samples[j].boxes is None else boxes_to_input(samples[j].boxes, geometries[j]) for j in kept]
    labels = [instance_labels(samples[j], model.class_names) for j in kept]
    inputs = DetectionInputs(samples, kept, x[kept], target, masks, boxes, labels, torch.empty(0, dtype=torch.long))
    inputs.objects = _matched_objects(inputs)
    return inputs


def instance_labels(sample: Sample, class_names: Sequence[str] | None) -> torch.Tensor | None:
    """(K,) detector class indices of the sample's instances (−1: a class it does not know), or None."""
    if sample.instance_labels and class_names is not None:
        index = {_normal(n): i for i, n in enumerate(class_names)}
        return torch.tensor([index.get(_normal(n), -1) for n in sample.instance_labels])
    return sample.instance_classes


def _normal(name: str) -> str:
    return "".join(c for c in str(name).lower() if c.isalnum())


def _first(selection: Selection, k: int) -> Selection:
    return Selection(selection.query[:k], selection.label[:k], selection.score[:k], selection.box[:k])


def _none_if_empty(items: list) -> list | None:
    return None if all(i is None for i in items) else items


def _matched_objects(inputs: DetectionInputs) -> torch.Tensor:
    objects = torch.full((len(inputs),), -2, dtype=torch.long)
    rows = inputs.has_truth("region").nonzero()[:, 0]
    if len(rows):
        x, target, truth = inputs.subset(rows)
        objects[rows] = instance_regions(target, tuple(x.shape[-2:]), x.device, **truth).matched.cpu()
    return objects
