"""Models: the `Model` core, hub adapters and the project's own architectures.

The core sits here (`model`, `detection`, `anatomy`, `outputs`, `fast`, `checkpoint`,
`weights`, `imagenet`); `adapters/` wraps the hub libraries' models, `zoo/` holds the
project's architectures and their shipped weights. This module loads them by name: bundled
names, ``timm:NAME``, ``hf:NAME``, ``open_clip:ARCH/PRETRAINED``, ``checkpoint:PATH``; and
`wrap` for any module.
"""

from __future__ import annotations

import importlib
from typing import Callable, Sequence

from torch import nn

from ..errors import UnknownNameError
from ..preprocessing import Preprocess
from . import adapters, zoo  # noqa: F401 - they register hf: families and checkpoint: architectures
from .model import Model

# Bundled models: name -> "module:function" building a `Model` with no network access.
BUILTIN: dict[str, str] = {
    "efficientnet_lite0": "salience.models.zoo.efficientnet_lite:load_lite0",
    "efficientnet_lite1": "salience.models.zoo.efficientnet_lite:load_lite1",
    "efficientnet_lite2": "salience.models.zoo.efficientnet_lite:load_lite2",
    "scene-detr": "salience.models.zoo.scene_detectors:load_scene_detr",
    "scene-deformable-detr": "salience.models.zoo.scene_detectors:load_scene_deformable_detr",
    "scene-vit": "salience.models.zoo.scene_vit:load_scene_vit",
}

# Hub prefixes: "prefix:NAME" -> "module:function(NAME, **kwargs)".
PREFIXES: dict[str, str] = {
    "timm": "salience.models.adapters.timm:load_timm",
    "hf": "salience.models.adapters.hf:load_hf",
    "open_clip": "salience.models.adapters.clip:load_open_clip",
    "checkpoint": "salience.models.checkpoint:load_checkpoint",
}

DEFAULT_MODEL = "efficientnet_lite0"


def _resolve(path: str) -> Callable:
    module, func = path.split(":")
    return getattr(importlib.import_module(module), func)


def available_models() -> list[str]:
    """Bundled model names, then the hub prefixes as ``prefix:NAME``."""
    return sorted(BUILTIN) + [f"{p}:NAME" for p in PREFIXES]


def load_model(name: str = DEFAULT_MODEL, device: str | None = None, **kwargs) -> Model:
    """A `Model` by name: a bundled one (``efficientnet_lite0``), ``timm:NAME``, ``hf:NAME``
    or ``open_clip:ARCH/PRETRAINED`` (a zero-shot `ClipModel`; so is ``hf:`` of a CLIPModel),
    or ``checkpoint:PATH`` (a scene model trained with ``salience train``).

    Hub names load through the hub library's own code (weights cached or local paths);
    a local directory saved with ``save_pretrained`` works with ``hf:PATH``.
    """
    key = name.strip()
    if ":" in key and key.split(":", 1)[0] in PREFIXES:
        prefix, rest = key.split(":", 1)
        model = _resolve(PREFIXES[prefix])(rest, **kwargs)
    elif key.lower() in BUILTIN:
        model = _resolve(BUILTIN[key.lower()])(**kwargs)
    else:
        raise UnknownNameError("model", name, sorted(BUILTIN) + [f"{p}:" for p in PREFIXES])
    return model.to(device) if device else model


def wrap(
    module: nn.Module,
    task: str = "classification",
    input_size: int | tuple[int, int] = 224,
    mean: Sequence[float] = (0.485, 0.456, 0.406),
    std: Sequence[float] = (0.229, 0.224, 0.225),
    resize: str = "resize",
    class_names: Sequence[str] | None = None,
    cam_layer: str | None = None,
    output_key: str | None = None,
    name: str = "model",
) -> Model:
    """Wrap any `nn.Module` as a `Model` (it is put in eval mode; nothing else changes)."""
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    pre = Preprocess(size=size, mean=tuple(mean), std=tuple(std), mode=resize)
    return Model(module, pre, task=task, class_names=class_names, cam_layer=cam_layer, output_key=output_key, name=name)
