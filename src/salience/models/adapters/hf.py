"""``hf:NAME``: a Hugging Face model as a `Model`, through transformers' own code.

The config decides the family: a registered one (`hf_common.register_hf_family`: CLIP in
`clip`, DETR-family detectors in `hf_detectors`) or, by default, an image classifier.
"""

from __future__ import annotations

from ...compat import import_optional
from ..model import Model
from .anatomy_discovery import hf_anatomy
from .hf_common import from_pretrained, hf_family, processor_preprocess, read_config


def load_hf(name_or_path: str, **options) -> Model:
    """The model a hub id or local ``save_pretrained`` folder holds: the loader of the family its
    config belongs to (a zero-shot `ClipModel` for a ``CLIPModel``, a `DetectorModel` for the DETR
    family), else `load_hf_classifier`; ``options`` go to that loader."""
    loader = hf_family(read_config(name_or_path, options)) or load_hf_classifier
    return loader(name_or_path, **options)


def load_hf_classifier(
    name_or_path: str,
    resize: str = "resize",
    cam_layer: str | None = None,
    interpolate_pos_encoding: bool = False,
    **kwargs,
) -> Model:
    """A Hugging Face image classifier by hub name or local ``save_pretrained`` folder.

    Classifiers load with ``AutoModelForImageClassification.from_pretrained`` and the
    library's default attention (SDPA where available; attention maps are captured by
    intercepting it, see `salience.attention`); pass ``attn_implementation="eager"`` to
    choose another. Input size, mean, std, interpolation and crop fraction come from the
    saved image processor config; without one, the size comes from the model config and the
    mean/std are ImageNet's. Class names come from ``config.id2label``. Vision transformers
    (ViT, DeiT) get their `TokenAnatomy`. ``interpolate_pos_encoding=True`` passes that flag
    on every call, so inputs of another size than the model's work. Extra keyword arguments
    go to ``from_pretrained`` (``revision=...``, ``local_files_only=True``).
    """
    transformers = import_optional("transformers")
    module = from_pretrained(transformers.AutoModelForImageClassification, name_or_path, kwargs)
    preprocess = processor_preprocess(name_or_path, module.config, resize)
    id2label = getattr(module.config, "id2label", None) or {}
    class_names = [str(id2label[i]) for i in sorted(id2label, key=int)] if id2label else None
    return Model(module, preprocess, class_names=class_names, cam_layer=cam_layer, name=f"hf:{name_or_path}",
                 anatomy=hf_anatomy(module),
                 forward_kwargs={"interpolate_pos_encoding": True} if interpolate_pos_encoding else None)
