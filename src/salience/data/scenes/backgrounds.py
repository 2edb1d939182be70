"""Scene backgrounds: random crops of photos, or procedural textures, resized to the scene size.

Background specs:

- ``"photos"`` — photos bundled with installed packages that show none of the default
  object classes (no people, chairs, bottles or tables): scikit-image's ``chelsea``,
  ``rocket``, ``brick``, ``grass``, ``gravel``, ``hubble_deep_field``
  and scikit-learn's ``china`` and ``flower``; packages that are missing are skipped;
- ``"textures"`` — procedural textures (`textures.texture`), softened so objects stand out;
- ``"folder:DIR"`` — every image in a folder (shrunk to at most 512 px on the longer side).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from ...errors import SalienceError
from ...images import expand_sources, load_image
from .textures import texture

SKIMAGE_PHOTOS = ("chelsea", "rocket", "brick", "grass", "gravel", "hubble_deep_field")
MAX_SIDE = 512


def _shrunk(image: Image.Image) -> Image.Image:
    image = image.convert("RGB")
    image.thumbnail((MAX_SIDE, MAX_SIDE), Image.BILINEAR)
    return image


@lru_cache(maxsize=1)
def bundled_photos() -> tuple[Image.Image, ...]:
    """The background photos of installed packages (see module doc), shrunk to `MAX_SIDE`."""
    photos = []
    try:
        import skimage.data

        for name in SKIMAGE_PHOTOS:
            array = getattr(skimage.data, name)()
            photos.append(Image.fromarray(array[0] if isinstance(array, tuple) else array))
    except ImportError:
        pass
    try:
        from sklearn.datasets import load_sample_images

        photos += [Image.fromarray(a) for a in load_sample_images().images]
    except ImportError:
        pass
    return tuple(_shrunk(p) for p in photos)


@lru_cache(maxsize=8)
def folder_photos(folder: str) -> tuple[Image.Image, ...]:
    """Every readable image in ``folder`` (recursively), shrunk to `MAX_SIDE`."""
    root = Path(folder)
    if not root.is_dir():
        raise SalienceError(f"background folder not found: {root}")
    photos = tuple(_shrunk(load_image(f)[0]) for f in expand_sources([str(root)]))
    if not photos:
        raise SalienceError(f"background folder {root} holds no images")
    return photos


def random_crop(photo: Image.Image, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random crop of ``photo`` with the aspect of ``size`` (H, W), 50-100 % of the largest
    such crop, randomly flipped, resized to ``size``: (H, W, 3) uint8."""
    h, w = size
    pw, ph = photo.size
    full = min(pw / w, ph / h)
    scale = full * rng.uniform(0.5, 1.0)
    cw, ch = max(1, int(w * scale)), max(1, int(h * scale))
    x0, y0 = int(rng.integers(0, pw - cw + 1)), int(rng.integers(0, ph - ch + 1))
    crop = photo.resize((w, h), Image.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))
    array = np.asarray(crop)
    return array[:, ::-1] if rng.random() < 0.5 else array


def soft_texture(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A procedural texture at half contrast: (H, W, 3) uint8."""
    return texture(*size, rng, contrast=0.5)


class Backgrounds:
    """Draws backgrounds from the given specs: first a spec uniformly, then an image of it."""

    def __init__(self, specs: tuple[str, ...]):
        if not specs:
            raise SalienceError("no background sources given")
        self.pools: list[tuple[Image.Image, ...] | None] = []
        for spec in specs:
            if spec == "textures":
                self.pools.append(None)
            elif spec == "photos":
                photos = bundled_photos()
                if not photos:
                    raise SalienceError("background 'photos': neither scikit-image nor scikit-learn is installed")
                self.pools.append(photos)
            elif spec.startswith("folder:"):
                self.pools.append(folder_photos(spec.partition(":")[2]))
            else:
                raise SalienceError(f"unknown background source '{spec}': use photos, textures or folder:DIR")

    def draw(self, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        """A background (H, W, 3) uint8 of ``size`` (H, W)."""
        pool = self.pools[rng.integers(len(self.pools))]
        if pool is None:
            return soft_texture(size, rng)
        return random_crop(pool[rng.integers(len(pool))], size, rng)
