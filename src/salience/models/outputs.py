"""Normalise what a classifier returns (tensor, tuple, dict, HF ModelOutput) to logits."""

from __future__ import annotations

from typing import Any

import torch


def to_logits(output: Any, key: str | None = None) -> torch.Tensor:
    """The (batch, classes) logits inside a model's output.

    Tensors pass through; tuples and lists give their first tensor; dicts and Hugging Face
    ``ModelOutput`` give ``output[key]`` if a key is named, else ``logits``, else their first
    tensor value.
    """
    if isinstance(output, torch.Tensor):
        return output
    if key is not None:
        return to_logits(output[key])
    if isinstance(output, dict) or hasattr(output, "keys"):
        if "logits" in output.keys():
            return output["logits"]
        values = [output[k] for k in output.keys()]
    elif isinstance(output, (tuple, list)):
        values = list(output)
    else:
        raise TypeError(f"cannot find logits in a model output of type {type(output).__name__}")
    for v in values:
        if isinstance(v, torch.Tensor):
            return v
    raise TypeError(f"no tensor in a model output of type {type(output).__name__}")
