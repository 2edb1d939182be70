"""Random colour textures (stripes, checker, smooth noise, gradient) as (H, W, 3) uint8.

They paint the procedural shapes and make procedural backgrounds, so scenes can be built
with nothing but NumPy.
"""

from __future__ import annotations

import numpy as np

TEXTURES = ("stripes", "checker", "noise", "gradient")


def random_colour(rng: np.random.Generator) -> np.ndarray:
    """An RGB colour (3,) float32 in [0, 255]."""
    return rng.uniform(0, 255, 3).astype(np.float32)


def _coordinates(h: int, w: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (H, W) rotated by a random angle: (along, across)."""
    angle = rng.uniform(0, np.pi)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    return xs * c + ys * s, -xs * s + ys * c


def _blend(weight: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(H, W) weights in [0, 1] -> colours between ``a`` (0) and ``b`` (1)."""
    return a + weight[..., None] * (b - a)


def texture(h: int, w: int, rng: np.random.Generator, kind: str | None = None, contrast: float = 1.0) -> np.ndarray:
    """A random texture of ``kind`` (one of `TEXTURES`; random when None), (h, w, 3) uint8;
    ``contrast`` < 1 pulls its two colours towards their middle."""
    kind = kind or TEXTURES[rng.integers(len(TEXTURES))]
    a, b = random_colour(rng), random_colour(rng)
    middle = (a + b) / 2
    a, b = middle + contrast * (a - middle), middle + contrast * (b - middle)
    if kind == "stripes":
        along, _ = _coordinates(h, w, rng)
        weight = (np.floor(along / rng.uniform(3, 16)) % 2).astype(np.float32)
    elif kind == "checker":
        along, across = _coordinates(h, w, rng)
        cell = rng.uniform(4, 20)
        weight = ((np.floor(along / cell) + np.floor(across / cell)) % 2).astype(np.float32)
    elif kind == "noise":
        weight = smooth_noise(h, w, rng, cells=int(rng.integers(3, 12)))
    elif kind == "gradient":
        along, _ = _coordinates(h, w, rng)
        weight = (along - along.min()) / max(float(np.ptp(along)), 1.0)
    else:
        raise ValueError(f"unknown texture '{kind}'; known: {', '.join(TEXTURES)}")
    return np.clip(_blend(weight, a, b), 0, 255).astype(np.uint8)


def smooth_noise(h: int, w: int, rng: np.random.Generator, cells: int = 6) -> np.ndarray:
    """Value noise in [0, 1] (h, w): a ``cells`` x ``cells`` random grid, bilinearly upsampled."""
    grid = rng.random((cells + 1, cells + 1), dtype=np.float32)
    ys = np.linspace(0, cells, h, dtype=np.float32)
    xs = np.linspace(0, cells, w, dtype=np.float32)
    y0 = np.minimum(ys.astype(int), cells - 1)
    x0 = np.minimum(xs.astype(int), cells - 1)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy
