"""Test-only pieces for detector benchmarks, importable as a plugin (``plugins: [tests.bench_detection_plugin]``).

The toy detector ``bench_regions`` (`tests.toys.region_detector`: query 0 finds a ``square`` in
the bright top-left quadrant, query 1 a ``circle`` in the bright bottom-right one), scene
detectors ``bench_scene_detr`` / ``bench_scene_deformable_detr`` read from the checkpoints in
``$BENCH_DETECTORS`` (score threshold 0), the dataset ``quadrants:N`` of 64×64 photos
cycling through the `PATTERNS`, the method ``test_other_quadrant`` (a known wrong answer) and
the metric ``test_slow_mean`` (the map's mean, after ``delay`` seconds).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from salience.bench.datasets import EXTRA_DATASETS, Sample, register_dataset
from salience.bench.metric_fns import EXTRA_METRICS, MetricFn, MetricOutput, register_metric
from salience.methods import REGISTRY, Explainer, register
from salience.models import BUILTIN

from .toys import RegionDetector

# Per image: which quadrants are bright, and the ground truth's class name for each
# (None: the image has no ground truth at all).
PATTERNS = [
    {"tl": "square", "br": "circle"},  # two objects, both detected and matched
    {"tl": "square"},  # one object
    {},  # black: no detection
    {"br": "circle"},
    {"tl": "triangle", "br": "circle"},  # the square detection matches no object (unknown class)
    None,  # a bright top-left quadrant but no ground truth
]
QUADRANTS = {"tl": (slice(0, 32), slice(0, 32)), "br": (slice(32, 64), slice(32, 64))}
BOXES = {"tl": [0.0, 0.0, 32.0, 32.0], "br": [32.0, 32.0, 64.0, 64.0]}


def quadrants(arg: str) -> list[Sample]:
    """``quadrants:N``: image i follows ``PATTERNS[i % 6]``; objects get masks, boxes and names."""
    out = []
    for i in range(int(arg)):
        pattern = PATTERNS[i % len(PATTERNS)]
        image = np.zeros((64, 64, 3), dtype=np.uint8)
        for q in (pattern if pattern is not None else {"tl": None}):
            image[QUADRANTS[q]] = 255
        masks = boxes = None
        if pattern:
            masks = torch.zeros(len(pattern), 64, 64, dtype=torch.bool)
            for k, q in enumerate(pattern):
                masks[(k, *QUADRANTS[q])] = True
            boxes = torch.tensor([BOXES[q] for q in pattern])
        out.append(Sample(Image.fromarray(image), f"quad{i:02d}", masks=masks, boxes=boxes,
                          instance_labels=list(pattern.values()) if pattern else []))
    return out


def _scene(name: str):
    from salience.models.zoo.scene_detectors import load_scene_detector

    return load_scene_detector(Path(os.environ["BENCH_DETECTORS"]) / f"{name}.pt", score_threshold=0.0)


def load_scene_detr():
    return _scene("scene-detr")


def load_scene_deformable_detr():
    return _scene("scene-deformable-detr")


class OtherQuadrant(Explainer):
    """Test only: a toy detection's map is the OTHER query's quadrant (all its energy on the wrong object)."""

    name = "test_other_quadrant"
    family = "test"
    tasks = ("detection",)

    def attribute(self, model, x, target):
        maps = torch.zeros(len(target), *x.shape[-2:], device=x.device)
        for r, q in enumerate(target.queries.tolist()):
            y0, y1, x0, x1 = RegionDetector.regions[1 - q]
            maps[r, y0:y1, x0:x1] = 1.0
        return maps


def _slow_mean(model, x, maps, target, masks=None, boxes=None, delay: float = 0.0) -> MetricOutput:
    time.sleep(delay)
    return MetricOutput(maps.flatten(1).mean(1))


SLOW_MEAN = MetricFn("test_slow_mean", _slow_mean)
MODELS = {"bench_regions": "tests.toys:region_detector",
          "bench_scene_detr": "tests.bench_detection_plugin:load_scene_detr",
          "bench_scene_deformable_detr": "tests.bench_detection_plugin:load_scene_deformable_detr"}


def register_all() -> None:
    BUILTIN.update(MODELS)
    register_dataset("quadrants", quadrants)
    register(OtherQuadrant)
    register_metric(SLOW_MEAN)


def unregister_all() -> None:
    for name in MODELS:
        BUILTIN.pop(name, None)
    EXTRA_DATASETS.pop("quadrants", None)
    REGISTRY.pop(OtherQuadrant.name, None)
    EXTRA_METRICS.pop(SLOW_MEAN.name, None)


register_all()
