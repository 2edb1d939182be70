"""The manifest format of ``shared/data/realmini``.

``manifest.json`` = ``{"images": [{"id", "file", "imagenet_class" (int or null),
"imagenet_label", "objects": [{"label", "mask" (PNG, 255 = object, optional), "box"
[x0, y0, x1, y1]}]}]}``, paths relative to the manifest's folder. Images without objects
have no masks or boxes (None); boxes exist for every object, masks only when all objects
of the image have one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import SalienceError
from .sample import Dataset, Sample, read_binary_mask, read_image, require_file


class Manifest(Dataset):
    """Images, ImageNet labels and object masks / boxes listed in a ``manifest.json``."""

    def __init__(self, path: str | Path):
        path = Path(path)
        self.file = require_file(path / "manifest.json" if path.is_dir() else path, "manifest")
        self.root = self.file.parent
        try:
            self.entries = json.loads(self.file.read_text())["images"]
        except (ValueError, KeyError, TypeError) as err:
            raise SalienceError(f"{self.file} is not a salience manifest (needs an 'images' list): {err}") from err

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> Sample:
        e = self.entries[i]
        objects = e.get("objects") or []
        boxes = np.array([o["box"] for o in objects], dtype=np.float32).reshape(-1, 4) if objects else None
        masks = None
        if objects and all(o.get("mask") for o in objects):
            masks = np.stack([read_binary_mask(self.root / o["mask"]) for o in objects])
        return Sample(
            image=read_image(self.root / e["file"]),
            label=e.get("imagenet_class"),
            label_name=e.get("imagenet_label"),
            masks=masks,
            boxes=boxes,
            instance_labels=[o.get("label", "") for o in objects],
            image_id=str(e.get("id", i)),
        )
