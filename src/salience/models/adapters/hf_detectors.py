"""``hf:PATH`` detectors: Hugging Face DETR, Conditional DETR, Deformable DETR and RT-DETR.

The module runs through transformers' own code (eager attention, so attention weights
exist). Its output is decoded like the model's own ``post_process_object_detection``:
DETR takes a softmax and drops the no-object class (one detection per query); Conditional
DETR, Deformable DETR and RT-DETR (focal loss) take a sigmoid per class and rank every
(query, class) pair. The decoder's cross-attention is read with forward hooks on each
decoder layer's ``encoder_attn``: for DETR / Conditional DETR its probabilities
(B, heads, Q, h·w) on the grid of ``input_projection``; for the deformable ones the
sampling locations and weights passed to the inner ``MultiScaleDeformableAttention``.
DETR and Conditional DETR also record every attention map (`transformer_attention`): the
probabilities their eager attention returns are the tensors it multiplies with the values.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn

from ...compat import import_optional
from ...errors import SalienceError
from ..detection import (CrossAttentionRecord, DeformableAttention, DetectorModel, Detections, GridAttention,
                         TransformerAttention, cxcywh_to_pixels)
from .hf_common import from_pretrained, processor_preprocess, register_hf_family

GRID_MODELS = ("detr", "conditional_detr")
DEFORMABLE_MODELS = ("deformable_detr", "rt_detr")


def is_hf_detector(config) -> bool:
    """Whether a transformers config describes one of the supported detectors."""
    return getattr(config, "model_type", None) in GRID_MODELS + DEFORMABLE_MODELS


def is_object_detector(config) -> bool:
    """Whether a transformers config is an object detector's (``hf:`` routes it here; an
    unsupported one is then refused by name)."""
    return any(a.endswith("ForObjectDetection") for a in getattr(config, "architectures", None) or [])


def load_hf_detector(
    name_or_path: str,
    resize: str = "resize",
    score_threshold: float = 0.5,
    top_k: int | None = None,
    input_size: int | tuple[int, int] | None = None,
    cam_layer: str | None = None,
    **kwargs,
) -> DetectorModel:
    """A Hugging Face DETR-family detector as a `DetectorModel`.

    ``input_size`` overrides the processor's size (DETRs resize to a shortest edge of 800
    by default, read as 800×800); ``score_threshold`` and ``top_k`` are the
    post-processing defaults (``top_k`` as in transformers: 100, the number of queries for
    RT-DETR); ``cam_layer`` names the CAM methods' layer (default: found by a forward pass).
    Other keyword arguments go to ``from_pretrained``.
    """
    transformers = import_optional("transformers")
    module = from_pretrained(transformers.AutoModelForObjectDetection, name_or_path,
                              {"attn_implementation": "eager", **kwargs})  # attention weights returned
    config = module.config
    if not is_hf_detector(config):
        raise SalienceError(f"'{name_or_path}' is a {config.model_type} detector; supported: "
                            f"{', '.join(GRID_MODELS + DEFORMABLE_MODELS)}")
    preprocess = processor_preprocess(name_or_path, config, resize)
    if input_size is not None:
        size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        preprocess = type(preprocess)(**{**preprocess.__dict__, "size": size})
    softmax = config.model_type == "detr" or (config.model_type == "rt_detr" and not config.use_focal_loss)
    id2label = config.id2label or {}
    class_names = [str(id2label.get(i, i)) for i in range(config.num_labels)]
    if top_k is None:
        top_k = config.num_queries if config.model_type == "rt_detr" else 100
    grid = config.model_type in GRID_MODELS
    capture = grid_cross_attention if grid else deformable_cross_attention
    return DetectorModel(module, preprocess, class_names, decode=decode_softmax if softmax else decode_sigmoid,
                         cross_attention=capture, attention=transformer_attention if grid else None,
                         score_threshold=score_threshold, top_k=top_k, cam_layer=cam_layer,
                         name=f"hf:{name_or_path}")


def decode_softmax(raw: Any, input_size: tuple[int, int]) -> Detections:
    """DETR's post-processing: softmax, no-object column (last) dropped."""
    logits = raw.logits
    return Detections(boxes=cxcywh_to_pixels(raw.pred_boxes, input_size), probs=logits.softmax(-1)[..., :-1],
                      logits=logits)


def decode_sigmoid(raw: Any, input_size: tuple[int, int]) -> Detections:
    """Conditional / Deformable / RT-DETR post-processing: a sigmoid per (query, class)."""
    logits = raw.logits
    return Detections(boxes=cxcywh_to_pixels(raw.pred_boxes, input_size), probs=logits.sigmoid(), logits=logits,
                      multi_label=True)


def _decoder_cross_attentions(module: nn.Module) -> list[nn.Module]:
    layers = module.model.decoder.layers
    return [layer.encoder_attn for layer in layers]


@contextmanager
def grid_cross_attention(module: nn.Module) -> Iterator[CrossAttentionRecord]:
    """DETR / Conditional DETR: each decoder layer's cross-attention probabilities as `GridAttention`."""
    record, grid = CrossAttentionRecord(), []

    def on_projection(_mod, _inputs, output):
        grid.append(tuple(output.shape[-2:]))

    def on_cross_attention(_mod, _inputs, output):
        weights = output[1] if isinstance(output, tuple) else None
        if weights is None:
            raise SalienceError("the model returned no attention weights; load it with attn_implementation='eager'")
        record.layers.append(GridAttention(weights=weights.unflatten(-1, grid[-1])))

    handles = []
    try:
        handles.append(module.model.input_projection.register_forward_hook(on_projection))
        handles += [attn.register_forward_hook(on_cross_attention) for attn in _decoder_cross_attentions(module)]
        yield record
    finally:
        for h in handles:
            h.remove()


@contextmanager
def deformable_cross_attention(module: nn.Module) -> Iterator[CrossAttentionRecord]:
    """Deformable DETR / RT-DETR: sampling locations and weights of each decoder layer."""
    record = CrossAttentionRecord()
    names = ("value", "value_spatial_shapes", "value_spatial_shapes_list", "level_start_index",
             "sampling_locations", "attention_weights")

    def on_sampling(_mod, args, kwargs, _output):
        call = {**dict(zip(names, args)), **kwargs}
        shapes = [(int(h), int(w)) for h, w in call["value_spatial_shapes_list"]]
        record.layers.append(DeformableAttention(locations=call["sampling_locations"],
                                                 weights=call["attention_weights"], level_shapes=shapes))

    handles = []
    try:
        handles += [attn.attn.register_forward_hook(on_sampling, with_kwargs=True)
                    for attn in _decoder_cross_attentions(module)]
        yield record
    finally:
        for h in handles:
            h.remove()


@contextmanager
def transformer_attention(module: nn.Module, grad: bool = False) -> Iterator[TransformerAttention]:
    """DETR / Conditional DETR: every encoder, decoder self- and cross-attention map.

    Forward hooks read the probabilities each attention module returns (eager attention
    returns the tensor it multiplies with the values, so gradients reach it). With
    ``grad=True`` a pre-hook makes an attention module's untracked ``hidden_states`` a leaf
    that requires grad (the first encoder layer and the first decoder self-attention when
    the parameters are frozen), so every map is part of the graph. Outputs are unchanged.
    """
    record = TransformerAttention()
    model = module.model

    def on_projection(_mod, _inputs, output):
        record.grid = tuple(output.shape[-2:])

    def track(_mod, args, kwargs):
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        if not torch.is_grad_enabled() or hidden.requires_grad:
            return None
        hidden = hidden.detach().requires_grad_(True)
        if "hidden_states" in kwargs:
            return args, {**kwargs, "hidden_states": hidden}
        return (hidden, *args[1:]), kwargs

    def recorder(maps: list):
        def on_attention(_mod, _inputs, output):
            if not isinstance(output, tuple) or output[1] is None:
                raise SalienceError("the model returned no attention weights; load it with attn_implementation='eager'")
            maps.append(output[1])
        return on_attention

    groups = [([layer.self_attn for layer in model.encoder.layers], record.encoder),
              ([layer.self_attn for layer in model.decoder.layers], record.decoder_self),
              ([layer.encoder_attn for layer in model.decoder.layers], record.cross)]
    handles = [model.input_projection.register_forward_hook(on_projection)]
    try:
        for modules, maps in groups:
            for attn in modules:
                if grad:
                    handles.append(attn.register_forward_pre_hook(track, with_kwargs=True))
                handles.append(attn.register_forward_hook(recorder(maps)))
        yield record
    finally:
        for h in handles:
            h.remove()


register_hf_family(is_object_detector, load_hf_detector)
