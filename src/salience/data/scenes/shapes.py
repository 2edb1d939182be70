"""Procedural shapes: six classes of hard-edged binary masks, painted with random textures.

Each shape fills a square of the requested side (up to a random rotation for the polygons),
is drawn without anti-aliasing, and is cropped to its tight bounding box, so the mask is
exactly the set of pixels that the shape paints.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from .textures import texture

SHAPES = ("circle", "square", "triangle", "star", "ring", "cross")


def _regular_polygon(corners: int, radius: float, angle: float, inner: float | None = None) -> np.ndarray:
    """Vertices (n, 2) of a regular polygon (or a star with ``inner`` radius ratio) at the origin."""
    if inner is None:
        t = angle + np.arange(corners) * 2 * np.pi / corners
        return radius * np.stack([np.cos(t), np.sin(t)], 1)
    t = angle + np.arange(2 * corners) * np.pi / corners
    r = np.where(np.arange(2 * corners) % 2 == 0, radius, radius * inner)
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def _cross(radius: float, angle: float, arm: float) -> np.ndarray:
    """Vertices (12, 2) of a plus sign with half-width ``arm`` x radius, rotated by ``angle``."""
    a, r = arm * radius, radius
    pts = np.array([[-a, -r], [a, -r], [a, -a], [r, -a], [r, a], [a, a], [a, r], [-a, r], [-a, a], [-r, a],
                    [-r, -a], [-a, -a]])
    c, s = np.cos(angle), np.sin(angle)
    return pts @ np.array([[c, s], [-s, c]])


def shape_mask(name: str, side: int, rng: np.random.Generator) -> np.ndarray:
    """The mask (h, w) bool of shape ``name`` drawn in a ``side`` x ``side`` square, tight-cropped."""
    canvas = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(canvas)
    centre, radius = (side - 1) / 2, (side - 1) / 2
    angle = rng.uniform(0, 2 * np.pi)
    if name == "circle":
        draw.ellipse([0, 0, side - 1, side - 1], fill=255)
    elif name == "ring":
        draw.ellipse([0, 0, side - 1, side - 1], fill=255)
        hole = radius * rng.uniform(0.45, 0.65)
        draw.ellipse([centre - hole, centre - hole, centre + hole, centre + hole], fill=0)
    else:
        points = {
            "square": lambda: _regular_polygon(4, radius, angle),
            "triangle": lambda: _regular_polygon(3, radius, angle),
            "star": lambda: _regular_polygon(5, radius, angle, inner=rng.uniform(0.38, 0.5)),
            "cross": lambda: _cross(radius, angle, arm=rng.uniform(0.25, 0.35)),
        }
        if name not in points:
            raise ValueError(f"unknown shape '{name}'; known: {', '.join(SHAPES)}")
        draw.polygon([tuple(p) for p in points[name]() + centre], fill=255)
    mask = np.asarray(canvas) > 0
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def textured_shape(name: str, side: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(rgb (h, w, 3) uint8, mask (h, w) bool): shape ``name`` painted with a random texture."""
    mask = shape_mask(name, side, rng)
    return texture(*mask.shape, rng), mask
