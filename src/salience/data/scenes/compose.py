"""Scene composition: objects pasted onto a background with exact visible-part ground truth.

Every object is pasted with a hard mask, so the image shows the object's (resized,
flipped, jittered) pixels exactly where its mask is. An owner map records which object
shows at each pixel; an instance's mask is the pixels it owns in the end: its visible part
after occlusion. Placements that would leave any object less than ``min_visible`` of its
area (or fewer than ``min_pixels`` pixels) visible are retried elsewhere, then abandoned.

Detection: 1-6 objects, later ones on top. Classification: one main object on top, with
optional smaller distractors of other classes drawn beneath it.

Scene ``index`` of ``seed`` uses the generator ``numpy.random.default_rng([seed, index])``,
so it is the same whichever process makes it, in whatever order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import SalienceError
from .backgrounds import Backgrounds
from .config import DEFAULT_CLASSES, SceneConfig, check_task
from .sources import load_source


@dataclass
class Scene:
    """One generated image and its instances (in paste order).

    Attributes
    ----------
    image : ndarray (H, W, 3) uint8
    masks : ndarray (K, H, W) bool
        Visible pixels of each instance; disjoint.
    boxes : ndarray (K, 4) float32
        Tight boxes of the masks, (x0, y0, x1, y1) in pixel edges: a mask's pixels are
        x0 <= x < x1, y0 <= y < y1.
    classes : ndarray (K,) int64
        Class ids (indices into the vocabulary).
    visible : ndarray (K,) float
        Fraction of each object that is visible (1 = not occluded).
    main : int or None
        Classification: index of the main object; None for detection.
    """

    image: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray
    visible: np.ndarray
    main: int | None = None


def tight_boxes(masks: np.ndarray) -> np.ndarray:
    """(K, 4) float32 boxes (x0, y0, x1, y1), pixel edges, of (K, H, W) non-empty masks."""
    boxes = np.zeros((len(masks), 4), np.float32)
    for k, m in enumerate(masks):
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        boxes[k] = cols[0], rows[0], cols[-1] + 1, rows[-1] + 1
    return boxes


def jitter_colours(rgb: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast and saturation each scaled by a factor in 1 ± ``strength``."""
    b, c, s = rng.uniform(1 - strength, 1 + strength, 3)
    x = rgb.astype(np.float32)
    grey = x.mean(-1, keepdims=True)
    x = grey + s * (x - grey)
    mean = x.mean()
    x = (mean + c * (x - mean)) * b
    return np.clip(x, 0, 255).astype(np.uint8)


class Canvas:
    """An image being composed, with the owner map (-1 = background) and each object's area."""

    def __init__(self, background: np.ndarray):
        self.image = background.copy()
        self.owner = np.full(background.shape[:2], -1, np.int16)
        self.full: list[int] = []
        self.visible: list[int] = []

    def needed(self, area: int, min_visible: float, min_pixels: int) -> float:
        """Pixels an object of ``area`` must keep visible."""
        return max(min_visible * area, min_pixels)

    def fits(self, mask: np.ndarray, top: int, left: int, beneath: bool, min_visible: float,
             min_pixels: int, max_visible: float = np.inf) -> bool:
        """Whether pasting ``mask`` at (top, left) keeps every object (itself too) visible enough."""
        h, w = mask.shape
        region = self.owner[top:top + h, left:left + w]
        if beneath:
            visible = int((mask & (region < 0)).sum())
            return self.needed(int(mask.sum()), min_visible, min_pixels) <= visible <= max_visible
        if mask.sum() < min_pixels:
            return False
        lost = np.bincount(region[mask].astype(np.int64) + 1, minlength=len(self.full) + 1)[1:]
        return all(v - l >= self.needed(f, min_visible, min_pixels)
                   for f, v, l in zip(self.full, self.visible, lost) if l)

    def paste(self, rgb: np.ndarray, mask: np.ndarray, top: int, left: int, beneath: bool) -> int:
        """Paste an object on top of (or ``beneath``) the others; return its index."""
        h, w = mask.shape
        index = len(self.full)
        region = self.owner[top:top + h, left:left + w]
        cover = mask & (region < 0) if beneath else mask
        if not beneath:
            lost = np.bincount(region[mask].astype(np.int64) + 1, minlength=index + 1)[1:]
            self.visible = [v - int(l) for v, l in zip(self.visible, lost)]
        region[cover] = index
        self.image[top:top + h, left:left + w][cover] = rgb[cover]
        self.full.append(int(mask.sum()))
        self.visible.append(int(cover.sum()))
        return index

    def masks(self) -> np.ndarray:
        """(K, H, W) bool visible masks."""
        return self.owner[None] == np.arange(len(self.full), dtype=np.int16)[:, None, None]


class SceneGenerator:
    """Makes scenes for one task and config; loads the sources and backgrounds once."""

    def __init__(self, task: str = "detection", config: SceneConfig | None = None):
        self.task = check_task(task)
        self.config = config or SceneConfig()
        self.size = self.config.image_size(task)
        self.sources = [load_source(spec) for spec in self.config.sources]
        self.class_names = self._vocabulary()
        self.providers = [[s for s in self.sources if name in s.classes] for name in self.class_names]
        self.backgrounds = Backgrounds(self.config.backgrounds)
        if task == "classification" and self.config.distractors[1] > 0 and len(self.class_names) < 2:
            raise SalienceError("classification scenes with distractors need at least two classes")

    def _vocabulary(self) -> tuple[str, ...]:
        provided = [c for s in self.sources for c in s.classes]
        if self.config.classes is not None:
            missing = [c for c in self.config.classes if c not in provided]
            if missing:
                raise SalienceError(f"no scene source has objects of class {', '.join(map(repr, missing))} "
                                    f"(sources {', '.join(self.config.sources)} provide: "
                                    f"{', '.join(dict.fromkeys(provided))})")
            return tuple(self.config.classes)
        return tuple(dict.fromkeys([c for c in DEFAULT_CLASSES if c in provided] + provided))

    def _object(self, class_id: int, scale: tuple[float, float], rng: np.random.Generator):
        """(rgb, mask) of a random object of ``class_id`` at a random scale, flipped and jittered."""
        providers = self.providers[class_id]
        source = providers[rng.integers(len(providers))]
        side = max(2, round(rng.uniform(*scale) * min(self.size)))
        rgb, mask = source.draw(self.class_names[class_id], min(side, *self.size), rng)
        if self.config.flip and rng.random() < 0.5:
            rgb, mask = rgb[:, ::-1], mask[:, ::-1]
        if self.config.jitter > 0:
            rgb = jitter_colours(rgb, self.config.jitter, rng)
        return rgb, mask

    def _place(self, canvas: Canvas, class_id: int, scale, rng, beneath: bool = False,
               max_visible: float = np.inf) -> int | None:
        """Draw an object and paste it where it fits; its index, or None after ``tries`` misses."""
        cfg = self.config
        rgb, mask = self._object(class_id, scale, rng)
        h, w = mask.shape
        for _ in range(cfg.tries):
            top, left = int(rng.integers(0, self.size[0] - h + 1)), int(rng.integers(0, self.size[1] - w + 1))
            if canvas.fits(mask, top, left, beneath, cfg.min_visible, cfg.min_pixels, max_visible):
                return canvas.paste(rgb, mask, top, left, beneath)
        return None

    def scene(self, seed: int, index: int) -> Scene:
        """Scene ``index`` of ``seed`` (see module doc)."""
        if seed < 0 or index < 0:
            raise SalienceError(f"scene seed and index must be >= 0, got seed={seed}, index={index}")
        rng = np.random.default_rng([seed, index])
        cfg = self.config
        canvas = Canvas(self.backgrounds.draw(self.size, rng))
        n_classes = len(self.class_names)
        classes, main = [], None
        if self.task == "detection":
            wanted = int(rng.integers(cfg.objects[0], cfg.objects[1] + 1))
            for attempt in range(wanted + cfg.tries):
                if len(classes) == wanted or (attempt >= wanted and classes):
                    break
                class_id = int(rng.integers(n_classes))
                if self._place(canvas, class_id, cfg.scale_range(self.task), rng) is not None:
                    classes.append(class_id)
        else:
            main_class = int(rng.integers(n_classes))
            main = self._place(canvas, main_class, cfg.scale_range(self.task), rng)
            classes += [main_class] if main is not None else []
            for _ in range(int(rng.integers(cfg.distractors[0], cfg.distractors[1] + 1))):
                class_id = (main_class + 1 + int(rng.integers(n_classes - 1))) % n_classes
                limit = cfg.max_distractor_area * canvas.full[main]
                if self._place(canvas, class_id, cfg.distractor_scale, rng, True, limit) is not None:
                    classes.append(class_id)
        if not classes:
            raise SalienceError(f"scene {index} of seed {seed}: no object could be placed; objects of scale "
                                f"{cfg.scale_range(self.task)} x {min(self.size)} px are smaller than "
                                f"min_pixels={cfg.min_pixels}")
        masks = canvas.masks()
        visible = np.array(canvas.visible, np.float64) / np.array(canvas.full, np.float64)
        return Scene(canvas.image, masks, tight_boxes(masks), np.array(classes, np.int64), visible, main)
