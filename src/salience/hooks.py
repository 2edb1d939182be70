"""Context-managed hooks: nothing stays attached to the user's model after a call.

Every helper here undoes what it did in a ``finally`` block, so an exception inside the
``with`` leaves the model exactly as it was.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def frozen_parameters(module: nn.Module) -> Iterator[None]:
    """Turn off ``requires_grad`` on every parameter, restoring each flag afterwards.

    Methods that need gradients only with respect to the input or one activation use this
    so autograd neither records nor computes parameter gradients.
    """
    params = [p for p in module.parameters() if p.requires_grad]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class LayerCapture:
    """The output of one layer during forward passes (see `capture_layer`)."""

    def __init__(self) -> None:
        self.output: torch.Tensor | None = None


@contextlib.contextmanager
def capture_layer(layer: nn.Module, requires_grad: bool = False) -> Iterator[LayerCapture]:
    """Record ``layer``'s output on each forward pass.

    With ``requires_grad=True`` the output is detached and made a leaf that requires grad,
    so backward stops at this layer: gradients flow only through the part of the network
    after it (the fast path of CAM methods). Combine with `frozen_parameters`.
    """
    cap = LayerCapture()

    def hook(_module, _inputs, output):
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"layer {type(_module).__name__} returns {type(output).__name__}, not a tensor")
        if requires_grad:
            output = output.detach().requires_grad_(True)
        cap.output = output
        return output if requires_grad else None

    handle = layer.register_forward_hook(hook)
    try:
        yield cap
    finally:
        handle.remove()


@contextlib.contextmanager
def forward_hooks(modules: list[nn.Module], hook) -> Iterator[None]:
    """Register one forward hook on many modules; remove them all afterwards."""
    handles = []
    try:
        for m in modules:
            handles.append(m.register_forward_hook(hook))
        yield
    finally:
        for h in handles:
            h.remove()
