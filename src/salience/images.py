"""Reading photos: files, folders, PIL images and arrays -> RGB PIL images with names.

Grayscale, palette, RGBA (composited on white), 16-bit and huge images are converted to
8-bit RGB; huge images are downscaled on load so the long side is at most ``max_side``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Union

import numpy as np
import torch
from PIL import Image, ImageFile, UnidentifiedImageError

from .errors import ImageLoadError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
MAX_SIDE = 4096

ImageSource = Union[str, os.PathLike, Image.Image, np.ndarray, torch.Tensor]


@dataclass
class ImageBatch:
    """Photos as the user gave them, with a name each. Models turn them into tensors."""

    originals: list[Image.Image]
    names: list[str]

    def __len__(self) -> int:
        return len(self.originals)

    def __getitem__(self, idx: slice) -> "ImageBatch":
        return ImageBatch(self.originals[idx], self.names[idx])


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB (16-bit rescaled, alpha composited on white)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        image = Image.fromarray(arr.round().astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return image.convert("RGB") if image.mode != "RGB" else image


def _shrink(image: Image.Image, max_side: int) -> Image.Image:
    if max(image.size) <= max_side:
        return image
    scale = max_side / max(image.size)
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BILINEAR)


def open_image(path: str | os.PathLike, max_side: int = MAX_SIDE) -> Image.Image:
    """Open one image file as RGB, with a clear error for missing, non-image or corrupt files."""
    path = Path(path)
    if not path.exists():
        raise ImageLoadError(f"{path}: no such file")
    if path.is_dir():
        raise ImageLoadError(f"{path}: is a folder, not an image")
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    previous_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # huge photos are shrunk below instead of refused
    try:
        with Image.open(path) as im:
            im.draft("RGB", (max_side, max_side))  # cheap JPEG downscale for huge photos
            im.load()
            return _shrink(to_rgb(im), max_side)
    except UnidentifiedImageError:
        raise ImageLoadError(f"{path}: not an image (format not recognised)") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageLoadError(f"{path}: corrupt or truncated image ({err})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous_limit


def _from_array(arr: np.ndarray | torch.Tensor) -> Image.Image:
    if isinstance(arr, torch.Tensor):
        arr = arr.detach().cpu().numpy()
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # CHW -> HWC
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float64)
        arr = arr * 255.0 if arr.max() <= 1.0 else arr
        arr = np.clip(arr, 0, 255).round().astype(np.uint8)
    if arr.ndim not in (2, 3):
        raise ImageLoadError(f"an image array must be HxW, HxWxC or CxHxW, got shape {arr.shape}")
    return to_rgb(Image.fromarray(arr))


def list_image_files(folder: str | os.PathLike) -> list[Path]:
    """The image files in a folder (sorted, not recursive), by suffix."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def expand_sources(sources: ImageSource | Iterable[ImageSource]) -> list[ImageSource]:
    """Flatten one source or a list of sources, replacing folders by their image files."""
    if isinstance(sources, (str, os.PathLike, Image.Image, np.ndarray, torch.Tensor)):
        sources = [sources]
    out: list[ImageSource] = []
    for src in sources:
        if isinstance(src, (str, os.PathLike)) and Path(src).is_dir():
            out.extend(list_image_files(src))
        else:
            out.append(src)
    return out


def load_image(source: ImageSource, max_side: int = MAX_SIDE) -> tuple[Image.Image, str]:
    """One source -> (RGB PIL image, name)."""
    if isinstance(source, (str, os.PathLike)):
        return open_image(source, max_side), Path(source).stem
    if isinstance(source, Image.Image):
        return _shrink(to_rgb(source), max_side), "image"
    if isinstance(source, (np.ndarray, torch.Tensor)):
        return _shrink(_from_array(source), max_side), "image"
    raise ImageLoadError(f"cannot read an image from {type(source).__name__}")


def load_images(sources: ImageSource | Iterable[ImageSource], max_side: int = MAX_SIDE) -> ImageBatch:
    """Load paths, folders, PIL images or arrays into an `ImageBatch`.

    Raises `ImageLoadError` on the first bad source; `salience explain` uses
    `load_image` per file instead, so it can report and skip bad files.
    """
    images, names = [], []
    for i, src in enumerate(expand_sources(sources)):
        im, name = load_image(src, max_side)
        images.append(im)
        names.append(name if name != "image" else f"image{i}")
    if not images:
        raise ImageLoadError("no images found")
    return ImageBatch(images, _unique(names))


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        k = seen.get(n, 0)
        seen[n] = k + 1
        out.append(n if k == 0 else f"{n}_{k}")
    return out
