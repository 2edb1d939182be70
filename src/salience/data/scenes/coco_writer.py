"""`write_coco`: a dataset of `Sample`s with masks as PNG images plus a COCO ``instances.json``.

Written atomically: everything goes to a sibling folder ``DIR.partial`` that is renamed to
``DIR`` at the end, so ``DIR`` either does not exist or is complete. An interrupted run
leaves ``DIR.partial``; the next run with the same dataset (same length, classes and, for
scenes, task, seed and config, recorded in ``DIR.partial/settings.json``) resumes it,
keeping the images already written (the generator is deterministic, so they are the same);
a different dataset starts afresh. Segmentations are compressed RLE
(pycocotools), boxes ``[x, y, width, height]`` of the tight visible box, ``category_id`` =
class index + 1. Image-level labels (classification) are stored as the image record's
``category_id``. ``classes.txt`` lists the class names in id order; ``settings.json``
records the dataset's length, classes and (for a `SceneDataset`) task, seed and config.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ...compat import import_optional
from ...errors import SalienceError
from ..sample import Dataset


def _class_names(dataset: Dataset) -> tuple[str, ...]:
    names = getattr(dataset, "class_names", None)
    if not names:
        raise SalienceError("write_coco needs a dataset with a 'class_names' list")
    return tuple(names)


def _settings(dataset: Dataset, names: tuple[str, ...]) -> dict:
    """What identifies the dataset being written (for resuming)."""
    settings = {"n": len(dataset), "class_names": list(names)}
    if hasattr(dataset, "config") and hasattr(dataset, "seed"):
        settings.update(task=dataset.task, seed=dataset.seed, config=dataset.config.to_dict())
    return settings


def _read_text(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


def _annotations(sample, image_id: int, first_id: int, names: tuple[str, ...], mask_utils) -> list[dict]:
    if sample.masks is None or len(sample.masks) == 0:
        raise SalienceError(f"sample {sample.image_id}: no instance masks to write")
    w, h = sample.image.size
    if sample.masks.shape[1:] != (h, w):
        raise SalienceError(f"sample {sample.image_id}: masks are {sample.masks.shape[1:]}, the image ({h}, {w})")
    classes = sample.instance_classes
    if classes is None:
        classes = [names.index(n) for n in sample.instance_labels]
    anns = []
    for k, (mask, box, c) in enumerate(zip(sample.masks, sample.boxes, classes)):
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        x0, y0, x1, y1 = (float(v) for v in box)
        anns.append({"id": first_id + k, "image_id": image_id, "category_id": int(c) + 1, "iscrowd": 0,
                     "bbox": [x0, y0, x1 - x0, y1 - y0], "area": int(mask.sum()),
                     "segmentation": {"size": [h, w], "counts": rle["counts"].decode()}})
    return anns


def write_coco(dataset: Dataset, out_dir: str | Path, overwrite: bool = False, progress: bool = True) -> Path:
    """Write ``dataset`` to ``out_dir`` (``images/NNNNNN.png``, ``instances.json``,
    ``classes.txt``); return the folder. Read it back with ``load_dataset("coco:DIR/instances.json")``.
    """
    mask_utils = import_optional("pycocotools.mask")
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise SalienceError(f"{out_dir} already exists (pass overwrite=True / --overwrite to replace it)")
    names = _class_names(dataset)
    partial = out_dir.with_name(out_dir.name + ".partial")
    settings = json.dumps(_settings(dataset, names), sort_keys=True)
    if partial.exists() and _read_text(partial / "settings.json") != settings:
        shutil.rmtree(partial)
    (partial / "images").mkdir(parents=True, exist_ok=True)
    (partial / "settings.json").write_text(settings)
    images, annotations = [], []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    console = Console(stderr=True)
    with Progress(*columns, console=console, transient=True, disable=not (progress and console.is_terminal)) as bar:
        task = bar.add_task(f"writing {out_dir.name}", total=len(dataset))
        for i in range(len(dataset)):
            sample = dataset[i]
            file_name = f"images/{i:06d}.png"
            anns = _annotations(sample, i + 1, len(annotations) + 1, names, mask_utils)
            record = {"id": i + 1, "file_name": file_name, "width": sample.image.size[0],
                      "height": sample.image.size[1]}
            if sample.label is not None:
                record["category_id"] = int(sample.label) + 1
            image_path = partial / file_name
            if not image_path.exists():
                tmp = image_path.with_suffix(".tmp.png")
                sample.image.save(tmp, compress_level=1)
                tmp.replace(image_path)
            images.append(record)
            annotations += anns
            bar.advance(task)
    categories = [{"id": k + 1, "name": n, "supercategory": ""} for k, n in enumerate(names)]
    (partial / "instances.json").write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": categories}))
    (partial / "classes.txt").write_text("\n".join(names) + "\n")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    partial.replace(out_dir)
    return out_dir
