"""COCO-format annotations (``instances_*.json``): polygon and RLE masks (via pycocotools).

The file is checked when opened: every field the loader uses must be there with the right
type, every annotation must point at a known image and category, RLE sizes must match their
image; a problem is a `SalienceError` naming the file and the field (``annotations[3].bbox``).
When an image is read, its real size must match the recorded ``height`` and ``width``.

Optional extension written by `salience.data.scenes.write_coco`: an image record may carry
``category_id``, its image-level class (the sample's ``label``).
"""

from __future__ import annotations

import json
from numbers import Number
from pathlib import Path

import numpy as np

from ..compat import import_optional
from ..errors import SalienceError
from .sample import Dataset, Sample, read_image, require_file


class Coco(Dataset):
    """One sample per image that has annotations (crowd regions skipped).

    Boxes are COCO's (x, y, w, h) turned into (x0, y0, x1, y1). ``class_names`` are the
    category names in order of category id; ``instance_classes`` and ``label`` index them.
    """

    def __init__(self, annotations: str | Path, image_dir: str | Path | None = None):
        self.mask_utils = import_optional("pycocotools.mask")
        self.file = require_file(Path(annotations), "COCO annotation file")
        self.image_dir = Path(image_dir) if image_dir is not None else self.file.parent
        data = _read_json(self.file)
        self.images = {img["id"]: img for img in _records(self.file, data, "images", {"id": Number,
                       "file_name": str, "height": int, "width": int})}
        categories = _records(self.file, data, "categories", {"id": Number, "name": str})
        self.category_ids = sorted(c["id"] for c in categories)
        self.categories = {c["id"]: c["name"] for c in categories}
        self.class_names = tuple(self.categories[c] for c in self.category_ids)
        anns = _records(self.file, data, "annotations", {"image_id": Number, "category_id": Number, "bbox": list,
                                                          "segmentation": (list, dict)})
        self.annotations: dict = {}
        for i, a in enumerate(anns):
            self._check_annotation(i, a)
            if not a.get("iscrowd", 0):
                self.annotations.setdefault(a["image_id"], []).append(a)
        for i, img in enumerate(data["images"]):
            if "category_id" in img and img["category_id"] not in self.categories:
                raise SalienceError(f"{self.file}: images[{i}].category_id {img['category_id']} is not a category")
        self.ids = sorted(self.annotations)
        if not self.ids:
            raise SalienceError(f"{self.file}: no image has a (non-crowd) annotation")

    def _check_annotation(self, i: int, a: dict) -> None:
        where = f"{self.file}: annotations[{i}]"
        if a["image_id"] not in self.images:
            raise SalienceError(f"{where}.image_id {a['image_id']} is not in 'images'")
        if a["category_id"] not in self.categories:
            raise SalienceError(f"{where}.category_id {a['category_id']} is not in 'categories'")
        bbox = a["bbox"]
        if len(bbox) != 4 or not all(isinstance(v, Number) for v in bbox) or min(bbox[2:]) < 0:
            raise SalienceError(f"{where}.bbox must be [x, y, width, height] with width, height >= 0; got {bbox}")
        seg, img = a["segmentation"], self.images[a["image_id"]]
        if isinstance(seg, dict):
            if "counts" not in seg or list(seg.get("size", [])) != [img["height"], img["width"]]:
                raise SalienceError(f"{where}.segmentation: RLE needs 'counts' and size [height, width] = "
                                    f"{[img['height'], img['width']]} of its image; got size {seg.get('size')}")
        elif not seg or not all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 for p in seg):
            raise SalienceError(f"{where}.segmentation: polygons must be lists of at least 3 (x, y) pairs")

    def __len__(self) -> int:
        return len(self.ids)

    def _mask(self, a: dict, h: int, w: int) -> np.ndarray:
        seg = a["segmentation"]
        if isinstance(seg, list):
            rle = self.mask_utils.merge(self.mask_utils.frPyObjects(seg, h, w))
        elif isinstance(seg["counts"], list):
            rle = self.mask_utils.frPyObjects(seg, h, w)
        else:
            rle = dict(seg, counts=seg["counts"].encode() if isinstance(seg["counts"], str) else seg["counts"])
        return self.mask_utils.decode(rle).astype(bool)

    def __getitem__(self, i: int) -> Sample:
        info = self.images[self.ids[i]]
        anns = self.annotations[info["id"]]
        image = read_image(self.image_dir / info["file_name"])
        h, w = info["height"], info["width"]
        if image.size != (w, h):
            raise SalienceError(f"{self.file}: image {info['file_name']} is {image.size[0]}x{image.size[1]} "
                                f"but its record says width {w}, height {h}")
        boxes = np.array([[x, y, x + bw, y + bh] for x, y, bw, bh in (a["bbox"] for a in anns)], dtype=np.float32)
        label = self.category_ids.index(info["category_id"]) if "category_id" in info else None
        return Sample(
            image=image,
            label=label,
            label_name=None if label is None else self.class_names[label],
            masks=np.stack([self._mask(a, h, w) for a in anns]),
            boxes=boxes,
            instance_labels=[self.categories[a["category_id"]] for a in anns],
            image_id=str(info["id"]),
            instance_classes=np.array([self.category_ids.index(a["category_id"]) for a in anns], np.int64),
        )


def _read_json(file: Path) -> dict:
    try:
        data = json.loads(file.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise SalienceError(f"{file} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise SalienceError(f"{file}: a COCO file is a JSON object with images, annotations and categories")
    return data


def _records(file: Path, data: dict, key: str, required: dict) -> list[dict]:
    """``data[key]``: a list of objects each holding the ``required`` fields with their types."""
    records = data.get(key)
    if not isinstance(records, list):
        raise SalienceError(f"{file}: missing or not a list: '{key}'")
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise SalienceError(f"{file}: {key}[{i}] is not an object")
        for field, kind in required.items():
            if field not in r:
                raise SalienceError(f"{file}: {key}[{i}] has no '{field}'")
            if not isinstance(r[field], kind) or isinstance(r[field], bool):
                raise SalienceError(f"{file}: {key}[{i}].{field} has the wrong type ({type(r[field]).__name__})")
    return records
