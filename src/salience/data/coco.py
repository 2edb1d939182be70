"""COCO-format annotations (``instances_*.json``) via pycocotools: polygon and RLE masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..compat import import_optional
from .sample import Dataset, Sample, read_image, require_file


class Coco(Dataset):
    """One sample per image that has annotations (crowd regions skipped); label = None.

    Boxes are COCO's (x, y, w, h) turned into (x0, y0, x1, y1).
    """

    def __init__(self, annotations: str | Path, image_dir: str | Path | None = None):
        pycocotools_coco = import_optional("pycocotools.coco")
        self.file = require_file(Path(annotations), "COCO annotation file")
        self.image_dir = Path(image_dir) if image_dir is not None else self.file.parent
        self.coco = pycocotools_coco.COCO(str(self.file))
        self.ids = sorted(i for i in self.coco.getImgIds() if self.coco.getAnnIds(imgIds=i, iscrowd=False))
        self.categories = {c["id"]: c["name"] for c in self.coco.loadCats(self.coco.getCatIds())}

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> Sample:
        info = self.coco.loadImgs(self.ids[i])[0]
        anns = self.coco.loadAnns(self.coco.getAnnIds(imgIds=info["id"], iscrowd=False))
        masks = np.stack([self.coco.annToMask(a).astype(bool) for a in anns])
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], dtype=np.float32)
        return Sample(
            image=read_image(self.image_dir / info["file_name"]),
            label=None,
            label_name=None,
            masks=masks,
            boxes=boxes,
            instance_labels=[self.categories[a["category_id"]] for a in anns],
            image_id=str(info["id"]),
        )
