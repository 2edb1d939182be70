"""``hf:NAME``: a Hugging Face image classifier (or CLIP model) as a `Model`, through
transformers' own code."""

from __future__ import annotations

import importlib
from typing import Any

from PIL import Image

from ..compat import import_optional
from ..errors import SalienceError
from ..preprocessing import Preprocess
from .model import Model
from .token_anatomy_discovery import hf_anatomy

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_TYPES = ("clip",)
CONFIG_KWARGS = ("revision", "local_files_only", "cache_dir", "token", "trust_remote_code")


def load_hf(
    name_or_path: str,
    resize: str = "resize",
    cam_layer: str | None = None,
    interpolate_pos_encoding: bool = False,
    **kwargs,
) -> Model:
    """A Hugging Face image classifier or CLIP model by hub name or local ``save_pretrained`` folder.

    Classifiers load with ``AutoModelForImageClassification.from_pretrained`` and the
    library's default attention (SDPA where available; attention maps are captured by
    intercepting it, see `salience.attention`); pass ``attn_implementation="eager"`` to
    choose another. A folder or hub id of a ``CLIPModel`` gives a zero-shot `ClipModel`
    (`salience.models.clip.load_hf_clip`). Input size, mean, std, interpolation and crop
    fraction come from the saved image processor config; without one, the size comes from
    the model config and the mean/std are ImageNet's. Class names come from
    ``config.id2label``. Vision transformers (ViT, DeiT, CLIP towers) get their
    `TokenAnatomy`. ``interpolate_pos_encoding=True`` passes that flag on every call, so
    inputs of another size than the model's work. Extra keyword arguments go to
    ``from_pretrained`` (``revision=...``, ``local_files_only=True``). Object detectors (the
    DETR family) are loaded by `hf_detectors.load_hf_detector` instead.
    """
    transformers = import_optional("transformers")
    config = _read_config(transformers, name_or_path, kwargs)
    if any(a.endswith("ForObjectDetection") for a in getattr(config, "architectures", None) or []):
        from .hf_detectors import load_hf_detector

        return load_hf_detector(name_or_path, resize=resize, **kwargs)
    if getattr(config, "model_type", None) in CLIP_TYPES:
        from .clip import load_hf_clip

        return load_hf_clip(name_or_path, resize=resize, cam_layer=cam_layer,
                            interpolate_pos_encoding=interpolate_pos_encoding, **kwargs)
    module = _from_pretrained(transformers.AutoModelForImageClassification, name_or_path, kwargs)
    preprocess = _preprocess(name_or_path, module.config, resize)
    id2label = getattr(module.config, "id2label", None) or {}
    class_names = [str(id2label[i]) for i in sorted(id2label, key=int)] if id2label else None
    return Model(module, preprocess, class_names=class_names, cam_layer=cam_layer, name=f"hf:{name_or_path}",
                 anatomy=hf_anatomy(module),
                 forward_kwargs={"interpolate_pos_encoding": True} if interpolate_pos_encoding else None)


def _read_config(transformers, name_or_path: str, kwargs: dict[str, Any]):
    """The model's config, or None when none can be read (the loader then reports the problem)."""
    try:
        return transformers.AutoConfig.from_pretrained(
            name_or_path, **{k: v for k, v in kwargs.items() if k in CONFIG_KWARGS})
    except (OSError, ValueError, TypeError):
        return None


def _from_pretrained(auto_class, name_or_path: str, kwargs: dict[str, Any]):
    try:
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
