"""``hf:NAME``: a Hugging Face image classifier as a `Model`, through transformers' own code."""

from __future__ import annotations

import importlib
from typing import Any

from PIL import Image

from ..compat import import_optional
from ..errors import SalienceError
from ..preprocessing import Preprocess
from .model import Model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_hf(
    name_or_path: str,
    resize: str = "resize",
    cam_layer: str | None = None,
    **kwargs,
) -> Model:
    """A Hugging Face image classifier by hub name or local ``save_pretrained`` folder.

    Loaded with ``AutoModelForImageClassification.from_pretrained`` and, where the
    architecture has attention, ``attn_implementation="eager"`` so attention weights can be
    read. Input size, mean, std, interpolation and crop fraction come from the saved image
    processor config; without one, the size comes from the model config and the mean/std are
    ImageNet's. Class names come from ``config.id2label``. Extra keyword arguments go to
    ``from_pretrained`` (``revision=...``, ``local_files_only=True``). Object detectors (the
    DETR family) are loaded by `hf_detectors.load_hf_detector` instead.
    """
    transformers = import_optional("transformers")
    if _is_detector(transformers, name_or_path, kwargs):
        from .hf_detectors import load_hf_detector

        return load_hf_detector(name_or_path, resize=resize, **kwargs)
    module = _from_pretrained(transformers.AutoModelForImageClassification, name_or_path, kwargs)
    preprocess = _preprocess(name_or_path, module.config, resize)
    id2label = getattr(module.config, "id2label", None) or {}
    class_names = [str(id2label[i]) for i in sorted(id2label, key=int)] if id2label else None
    return Model(module, preprocess, class_names=class_names, cam_layer=cam_layer, name=f"hf:{name_or_path}")


def _is_detector(transformers, name_or_path: str, kwargs: dict[str, Any]) -> bool:
    """Whether the config names an object detector (then `hf_detectors` loads it)."""
    try:
        hub = {k: kwargs[k] for k in ("revision", "local_files_only", "cache_dir", "token") if k in kwargs}
        config = transformers.AutoConfig.from_pretrained(name_or_path, **hub)
    except (OSError, ValueError, TypeError):  # the classifier path reports the problem
        return False
    return any(a.endswith("ForObjectDetection") for a in getattr(config, "architectures", None) or [])


def _from_pretrained(auto_class, name_or_path: str, kwargs: dict[str, Any]):
    try:
        try:
            return auto_class.from_pretrained(name_or_path, **{"attn_implementation": "eager", **kwargs})
        except (ValueError, TypeError) as err:  # architectures without a choice of attention
            if "attn" not in str(err).lower() or "attn_implementation" in kwargs:
                raise
            return auto_class.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError) as err:  # missing files, no network, not an image classifier
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SalienceError(f"cannot load Hugging Face model '{name_or_path}': {first_line}") from None


def _preprocess(name_or_path: str, config, resize: str) -> Preprocess:
    """Preprocessing from ``preprocessor_config.json``, read as a dict: instantiating the
    processor is not needed, and its fast variants would need a working torchvision."""
    mixin = importlib.import_module("transformers.image_processing_utils").ImageProcessingMixin
    try:
        processor, _ = mixin.get_image_processor_dict(name_or_path)
    except OSError:  # no preprocessor_config.json saved
        processor = {}
    size = _input_size(processor) or _config_size(config)
    return Preprocess(
        size=size,
        mean=tuple(processor.get("image_mean") or IMAGENET_MEAN),
        std=tuple(processor.get("image_std") or IMAGENET_STD),
        mode=resize,
        crop_pct=processor.get("crop_pct") or 0.875,
        resample=int(processor.get("resample", Image.BILINEAR)),
    )


def _input_size(processor: dict[str, Any]) -> tuple[int, int] | None:
    """The (height, width) the processor feeds the model: the crop if it crops, else the resize."""
    for key in ("crop_size", "size") if processor.get("do_center_crop") else ("size",):
        size = processor.get(key)
        if isinstance(size, int):
            return (size, size)
        if isinstance(size, dict):
            if size.get("height") and size.get("width"):
                return (int(size["height"]), int(size["width"]))
            if size.get("shortest_edge"):
                return (int(size["shortest_edge"]),) * 2
    return None


def _config_size(config) -> tuple[int, int]:
    size = getattr(config, "image_size", None) or 224
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
