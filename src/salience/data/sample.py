"""`Sample`: one image with its label and, where they exist, instance masks and boxes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import SalienceError
from ..images import load_image


@dataclass
class Sample:
    """One dataset item.

    Attributes
    ----------
    image : PIL.Image (RGB)
    label : int or None
        The image-level class index in the dataset's own class list.
    label_name : str or None
    masks : ndarray (K, H, W) bool or None
        Instance masks at the image's size.
    boxes : ndarray (K, 4) float or None
        Instance boxes (x0, y0, x1, y1) in image pixels.
    instance_labels : list of str
        One name per instance.
    image_id : str
    instance_classes : ndarray (K,) int or None
        One class id per instance, an index into the dataset's ``class_names``, for datasets
        with a fixed class list.
    """

    image: Image.Image
    label: int | None
    label_name: str | None
    masks: np.ndarray | None
    boxes: np.ndarray | None
    instance_labels: list[str] = field(default_factory=list)
    image_id: str = ""
    instance_classes: np.ndarray | None = None

    @property
    def mask(self) -> np.ndarray | None:
        """The union of the instance masks (H, W), or None."""
        return None if self.masks is None or len(self.masks) == 0 else self.masks.any(0)


class Dataset:
    """Base class: a sized, indexable sequence of `Sample`."""

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, i: int) -> Sample:
        raise NotImplementedError

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def require_file(path: Path, what: str) -> Path:
    """``path`` if it exists, else a `SalienceError` naming what is missing."""
    if not path.exists():
        raise SalienceError(f"{what} not found: {path}")
    return path


def read_image(path: Path) -> Image.Image:
    """An RGB photo (via `salience.images.load_image`, which explains unreadable files)."""
    return load_image(require_file(path, "image"))[0]


def read_binary_mask(path: Path, threshold: int = 128) -> np.ndarray:
    """A mask PNG as (H, W) bool: grey value >= ``threshold``."""
    return np.asarray(Image.open(require_file(path, "mask")).convert("L")) >= threshold
