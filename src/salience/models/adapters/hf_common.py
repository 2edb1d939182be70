"""What the Hugging Face adapters share: reading a saved model, its preprocessing, and the
routing of ``hf:NAME`` to the loader of its family.

A family module (`clip`, `hf_detectors`) registers ``(matches(config) -> bool, loader)``
with `register_hf_family`; `hf.load_hf` reads the config and hands the name to the first
family that matches, or loads an image classifier. None of the three modules imports another.
"""

from __future__ import annotations

import importlib
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from PIL import Image

from ...compat import import_optional
from ...errors import SalienceError
from ...preprocessing import Preprocess
from ..model import Model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CONFIG_KWARGS = ("revision", "local_files_only", "cache_dir", "token", "trust_remote_code")

#: ``(matches(config), loader(name_or_path, **kwargs))`` per family, in registration order.
HF_FAMILIES: list[tuple[Callable[[Any], bool], Callable[..., Model]]] = []


def register_hf_family(matches: Callable[[Any], bool], loader: Callable[..., Model]) -> None:
    """Route ``hf:NAME`` to ``loader(NAME, **kwargs)`` when ``matches(config)`` (a transformers config)."""
    HF_FAMILIES.append((matches, loader))


def hf_family(config: Any) -> Callable[..., Model] | None:
    """The loader of the first registered family ``config`` belongs to (None: an image classifier)."""
    if config is None:
        return None
    return next((loader for matches, loader in HF_FAMILIES if matches(config)), None)


def read_config(name_or_path: str, kwargs: dict[str, Any]):
    """The model's config, or None when none can be read (the loader then reports the problem)."""
    transformers = import_optional("transformers")
    try:
        return transformers.AutoConfig.from_pretrained(
            name_or_path, **{k: v for k, v in kwargs.items() if k in CONFIG_KWARGS})
    except (OSError, ValueError, TypeError):
        return None


@contextmanager
def loading_errors(what: str, name_or_path: str) -> Iterator[None]:
    """Turn transformers' loading errors (missing files, no network, wrong model kind) into one
    `SalienceError` line: ``cannot load <what> '<name>': <first line of the error>``."""
    try:
        yield
    except (OSError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SalienceError(f"cannot load {what} '{name_or_path}': {first_line}") from None


def from_pretrained(auto_class, name_or_path: str, kwargs: dict[str, Any]):
    """``auto_class.from_pretrained(name_or_path, **kwargs)`` with one-line errors."""
    with loading_errors("Hugging Face model", name_or_path):
        return auto_class.from_pretrained(name_or_path, **kwargs)


def processor_preprocess(name_or_path: str, config, resize: str) -> Preprocess:
    """Preprocessing from ``preprocessor_config.json``, read as a dict: instantiating the
    processor is not needed, and its fast variants would need a working torchvision. Without
    one, the size comes from ``config`` and the mean/std are ImageNet's."""
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
