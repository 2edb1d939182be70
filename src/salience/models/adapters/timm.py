"""``timm:NAME``: any timm image classifier as a `Model`, through timm's own code."""

from __future__ import annotations

import difflib
from typing import Any

from PIL import Image
from torch import nn

from ...compat import import_optional
from ...errors import SalienceError, UnknownNameError
from ...preprocessing import Preprocess
from ..imagenet import imagenet_class_names
from ..model import Model
from .anatomy_discovery import timm_anatomy

RESAMPLE = {
    "nearest": Image.NEAREST,
    "bilinear": Image.BILINEAR,
    "bicubic": Image.BICUBIC,
    "lanczos": Image.LANCZOS,
    "box": Image.BOX,
    "hamming": Image.HAMMING,
}


def load_timm(
    name: str,
    pretrained: bool = True,
    checkpoint_path: str | None = None,
    pretrained_cfg_overlay: dict[str, Any] | None = None,
    resize: str = "resize",
    cam_layer: str | None = None,
    **kwargs,
) -> Model:
    """A timm model by name, e.g. ``load_timm("resnet50")``.

    Parameters
    ----------
    name : str
        A timm architecture or pretrained tag (``"vit_base_patch16_224.augreg_in21k"``).
    pretrained : bool
        Load the hub weights (timm's cache, or a download).
    checkpoint_path : str, optional
        A local state dict loaded instead of the hub weights (no network).
    pretrained_cfg_overlay : dict, optional
        Changes to timm's pretrained config, e.g. ``{"file": "weights.pth"}`` to load
        pretrained weights from a local file with timm's adaptation of the classifier.
    resize : str
        The `Preprocess` resize mode; input size, mean, std, interpolation and crop
        fraction come from timm's data config for the model.
    cam_layer : str, optional
        Override the automatically found CAM layer (for ViTs: the last block's ``norm1``).
    **kwargs
        Passed to ``timm.create_model`` (``num_classes=...``, ``img_size=...``,
        ``dynamic_img_size=True`` for ViTs that take any input size).

    Vision transformers (ViT, DeiT, registers, Swin) get their `TokenAnatomy` (patch size,
    prefix tokens, blocks, attention modules) from the module.
    """
    timm = import_optional("timm")
    module = _create(timm, name, pretrained and not checkpoint_path, checkpoint_path, pretrained_cfg_overlay, kwargs)
    config = timm.data.resolve_model_data_config(module)
    _, height, width = config["input_size"]
    preprocess = Preprocess(
        size=(height, width),
        mean=tuple(config["mean"]),
        std=tuple(config["std"]),
        mode=resize,
        crop_pct=config.get("crop_pct", 0.875),
        resample=RESAMPLE.get(config.get("interpolation", "bicubic"), Image.BICUBIC),
    )
    return Model(module, preprocess, class_names=_class_names(timm, module), cam_layer=cam_layer, name=f"timm:{name}",
                 anatomy=timm_anatomy(module))


def _create(timm, name, pretrained, checkpoint_path, overlay, kwargs) -> nn.Module:
    try:
        return timm.create_model(
            name,
            pretrained=pretrained,
            checkpoint_path=checkpoint_path,
            pretrained_cfg_overlay=overlay,
            **kwargs,
        )
    except RuntimeError as err:
        if "Unknown model" not in str(err):
            raise
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.5)
        raise UnknownNameError("timm model", name, close) from None
    except OSError as err:  # no network and nothing cached, or a missing local file
        raise SalienceError(
            f"cannot load the weights of timm model '{name}' ({err}); "
            "use pretrained=False, checkpoint_path=... or pretrained_cfg_overlay={'file': ...}"
        ) from None


def _class_names(timm, module: nn.Module) -> list[str] | None:
    """ImageNet(-12k/-22k) labels when the head matches one of timm's label sets."""
    subset = timm.data.infer_imagenet_subset(module)
    if subset:
        return list(timm.data.ImageNetInfo(subset).label_descriptions())
    if getattr(module, "num_classes", None) == 1000:
        return imagenet_class_names()
    return None
