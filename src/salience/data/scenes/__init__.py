"""Synthetic scenes with exact ground truth, deterministic from a seed.

Objects (procedural textured shapes, cut-outs of masked instances from datasets) are pasted
onto backgrounds (photos, textures) at random scales and positions, flipped and colour
jittered; masks are the visible pixels after occlusion, boxes their tight boxes. Modules:
`textures`, `shapes` (procedural objects), `sources` (object sources and the cut-out rule),
`backgrounds`, `config` (`SceneConfig`, the default class list), `compose` (the scene
itself), `dataset` (`SceneDataset`), `coco_writer` (`write_coco`), `preview`.
"""

from .compose import Scene, SceneGenerator
from .config import DEFAULT_CLASSES, DEFAULT_SOURCES, TASKS, SceneConfig
from .coco_writer import write_coco
from .dataset import SceneDataset

__all__ = ["DEFAULT_CLASSES", "DEFAULT_SOURCES", "TASKS", "Scene", "SceneConfig", "SceneDataset", "SceneGenerator",
           "write_coco"]
