"""Detection AP with pycocotools (COCO's own evaluation) for the project's detectors."""

from __future__ import annotations

import contextlib
import io
from typing import Sequence

import torch

from ..compat import import_optional
from ..models.detection import Detections


def coco_ground_truth(targets: Sequence[dict], size: tuple[int, int], num_classes: int) -> dict:
    """A COCO ``instances`` dict from per-image ``labels`` and normalised cxcywh ``boxes``."""
    h, w = size
    images = [{"id": i, "width": w, "height": h} for i in range(len(targets))]
    annotations = []
    for i, t in enumerate(targets):
        for label, (cx, cy, bw, bh) in zip(t["labels"].tolist(), t["boxes"].tolist()):
            box = [(cx - bw / 2) * w, (cy - bh / 2) * h, bw * w, bh * h]
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": int(label), "bbox": box,
                                "area": box[2] * box[3], "iscrowd": 0})
    return {"images": images, "annotations": annotations, "categories": [{"id": c} for c in range(num_classes)]}


def coco_predictions(detections: Detections, first_image: int = 0, top_k: int = 100) -> list[dict]:
    """COCO result entries of every image's best ``top_k`` detections (no score threshold)."""
    results = []
    for b, sel in enumerate(detections.select(threshold=0.0, top_k=top_k)):
        for label, score, (x0, y0, x1, y1) in zip(sel.label.tolist(), sel.score.tolist(), sel.box.tolist()):
            results.append({"image_id": first_image + b, "category_id": int(label), "score": float(score),
                            "bbox": [x0, y0, x1 - x0, y1 - y0]})
    return results


def detection_ap(ground_truth: dict, predictions: list[dict]) -> dict[str, float]:
    """COCO box AP (IoU 0.5:0.95), AP50 and AP75 of ``predictions`` against ``ground_truth``."""
    coco = import_optional("pycocotools.coco")
    cocoeval = import_optional("pycocotools.cocoeval")
    if not predictions:
        return {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = coco.COCO()
        gt.dataset = ground_truth
        gt.createIndex()
        dt = gt.loadRes(predictions)
        ev = cocoeval.COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = ev.stats
    return {"AP": float(stats[0]), "AP50": float(stats[1]), "AP75": float(stats[2])}


@torch.no_grad()
def evaluate_detector(head, decode, levels: Sequence[torch.Tensor | None], targets: Sequence[dict],
                      input_size: int, num_classes: int, batch_size: int = 64) -> dict[str, float]:
    """AP / AP50 / AP75 of a detector head on cached features ``levels`` (n, C, h, w) per level."""
    n = len(targets)
    predictions = []
    for start in range(0, n, batch_size):
        feats = [None if f is None else f[start:start + batch_size].float() for f in levels]
        predictions += coco_predictions(decode(head(feats), (input_size, input_size)), first_image=start)
    return detection_ap(coco_ground_truth(targets, (input_size, input_size), num_classes), predictions)
