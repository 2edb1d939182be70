"""CUB-200-2011 on disk: ``images.txt``, ``image_class_labels.txt``, ``classes.txt``,
``bounding_boxes.txt``, ``train_test_split.txt``, ``images/``, and ``segmentations/``
(the separately distributed PNGs, same relative paths with ``.png``) when present.

Labels are 0-based (CUB's ids are 1-based); the box is CUB's (x, y, w, h) as
(x0, y0, x1, y1). Segmentations are soft (annotator agreement, 0-255); the mask keeps
pixels >= 128, i.e. at least half the annotators.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import SalienceError
from .sample import Dataset, Sample, read_binary_mask, read_image, require_file

SPLITS = ("test", "train", "all")


def _table(path: Path) -> dict[int, list[str]]:
    rows = (line.split() for line in require_file(path, "CUB file").read_text().splitlines() if line.strip())
    return {int(r[0]): r[1:] for r in rows}


class Cub(Dataset):
    """CUB-200-2011 images of one split with bird class, box and (if present) mask."""

    def __init__(self, root: str | Path, split: str = "test"):
        if split not in SPLITS:
            raise SalienceError(f"CUB split must be one of {SPLITS}, got '{split}'")
        self.root = Path(root)
        if (self.root / "CUB_200_2011" / "images.txt").exists():
            self.root = self.root / "CUB_200_2011"
        paths = _table(self.root / "images.txt")
        self.labels = {i: int(r[0]) - 1 for i, r in _table(self.root / "image_class_labels.txt").items()}
        self.classes = [r[0] for _, r in sorted(_table(self.root / "classes.txt").items())]
        self.boxes = {i: [float(v) for v in r] for i, r in _table(self.root / "bounding_boxes.txt").items()}
        is_train = {i: r[0] == "1" for i, r in _table(self.root / "train_test_split.txt").items()}
        keep = {"test": lambda i: not is_train[i], "train": lambda i: is_train[i], "all": lambda i: True}[split]
        self.items = [(i, paths[i][0]) for i in sorted(paths) if keep(i)]
        self.segmentations = self.root / "segmentations"
        if not self.segmentations.is_dir() and (self.root.parent / "segmentations").is_dir():
            self.segmentations = self.root.parent / "segmentations"

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Sample:
        image_id, rel = self.items[i]
        x, y, w, h = self.boxes[image_id]
        seg = self.segmentations / Path(rel).with_suffix(".png")
        label = self.labels[image_id]
        return Sample(
            image=read_image(self.root / "images" / rel),
            label=label,
            label_name=self.classes[label],
            masks=read_binary_mask(seg)[None] if seg.exists() else None,
            boxes=np.array([[x, y, x + w, y + h]], dtype=np.float32),
            instance_labels=[self.classes[label]],
            image_id=str(image_id),
        )
