"""Detections of photos, drawn on the photos and written as PNG + JSON (``salience explain``
with a detector and no detector method)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .. import viz
from ..images import ImageBatch
from ..models.detection import DetectorModel


def detect(model: DetectorModel, batch: ImageBatch) -> list[list[dict]]:
    """Per photo, the kept detections (model's threshold and top-k) with boxes on the photo."""
    x, geometries = model.prepare(batch)
    _, kept = model.detections(x)
    results = []
    for selection, geo in zip(kept, geometries):
        boxes = geo.boxes_to_original(selection.box.float())
        results.append([
            {"query": int(q), "label": int(c), "class": _name(model, int(c)), "score": float(s),
             "box": [round(v, 2) for v in box], "box_input": [round(v, 2) for v in input_box]}
            for q, c, s, box, input_box in zip(selection.query, selection.label, selection.score,
                                               boxes.tolist(), selection.box.tolist())
        ])
    return results


def _name(model: DetectorModel, label: int) -> str:
    return model.class_names[label] if model.class_names else str(label)


def save_detections(model: DetectorModel, batch: ImageBatch, results: list[list[dict]], directory) -> list[str]:
    """Write ``<image>_detections.png`` (boxes on the photo) and ``.json``; return the paths."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for photo, name, found in zip(batch.originals, batch.names, results):
        boxes = torch.tensor([d["box"] for d in found], dtype=torch.float32).reshape(-1, 4)
        picture = viz.draw_detections(photo, boxes, [d["class"] for d in found], [d["score"] for d in found])
        png, js = out / f"{name}_detections.png", out / f"{name}_detections.json"
        picture.save(png)
        meta = {"model": model.name, "image": name, "score_threshold": model.score_threshold, "top_k": model.top_k,
                "original_size": [photo.height, photo.width], "detections": found}
        js.write_text(json.dumps(meta, indent=2))
        paths += [str(png), str(js)]
    return paths
