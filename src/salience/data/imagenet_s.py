"""ImageNet-S (Gao et al.): ``<root>/validation/<wnid>/<name>.JPEG`` with semantic masks in
``<root>/validation-segmentation/<wnid>/<name>.png``.

A mask PNG encodes the ImageNet-S category id of each pixel as R + 256·G (0 = background,
1000 = ignore). The sample's mask is every pixel of a category (not background, not
ignored); ``label`` is that category id (ImageNet-S's own, 1-based; the most frequent one
when there are several), ``label_name`` the wnid folder. ``root`` may be the dataset folder
(e.g. ``ImageNetS919``) or its parent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import SalienceError
from ..images import IMAGE_SUFFIXES
from .sample import Dataset, Sample, read_image

IGNORE = 1000


def decode_segmentation(path: Path) -> np.ndarray:
    """(H, W) int category ids of an ImageNet-S mask PNG."""
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1]


class ImageNetS(Dataset):
    """ImageNet-S images of a split that have a segmentation PNG."""

    def __init__(self, root: str | Path, split: str = "validation"):
        root = Path(root)
        found = [d for d in [root, *sorted(root.glob("ImageNetS*"))] if (d / split).is_dir()]
        if not found:
            raise SalienceError(f"no ImageNet-S '{split}' folder under {root}")
        self.root = found[0]
        self.images, self.masks = self.root / split, self.root / f"{split}-segmentation"
        if not self.masks.is_dir():
            raise SalienceError(f"ImageNet-S masks folder not found: {self.masks}")
        self.items = sorted(
            p.relative_to(self.images) for p in self.images.rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES and (self.masks / p.relative_to(self.images)).with_suffix(".png").exists()
        )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Sample:
        rel = self.items[i]
        ids = decode_segmentation((self.masks / rel).with_suffix(".png"))
        objects = (ids != 0) & (ids != IGNORE)
        values, counts = np.unique(ids[objects], return_counts=True)
        label = int(values[counts.argmax()]) if len(values) else None
        wnid = rel.parts[0] if len(rel.parts) > 1 else None
        return Sample(
            image=read_image(self.images / rel),
            label=label,
            label_name=wnid,
            masks=objects[None] if label is not None else None,
            boxes=None,
            instance_labels=[wnid or str(label)] if label is not None else [],
            image_id=str(rel.with_suffix("")),
        )
