"""Loading a state dict whose names differ from the module's, tensor by tensor in order."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from ..errors import SalienceError


def load_by_position(module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Copy ``state_dict`` into ``module`` by position, checking every tensor.

    The i-th tensor of ``state_dict`` goes to the i-th entry of ``module.state_dict()``.
    Each pair must agree in shape and in kind (the last name part: ``weight``, ``bias``,
    ``running_mean``, ...); a count, shape or kind mismatch raises `SalienceError` naming
    the first tensor that does not fit.
    """
    target = module.state_dict()
    pairs = list(zip(target.items(), state_dict.items()))
    for (name, tensor), (src_name, src) in pairs:
        kind, src_kind = name.rsplit(".", 1)[-1], src_name.rsplit(".", 1)[-1]
        if tensor.shape != src.shape or kind != src_kind:
            raise SalienceError(
                f"{source}: tensor '{src_name}' {tuple(src.shape)} does not fit '{name}' {tuple(tensor.shape)}"
            )
    if len(target) != len(state_dict):
        names = list(target) if len(target) > len(state_dict) else list(state_dict)
        missing = names[len(pairs)]
        side = "module expects" if len(target) > len(state_dict) else "checkpoint has extra"
        raise SalienceError(
            f"{source}: {len(state_dict)} tensors for a module with {len(target)}; {side} '{missing}'"
        )
    module.load_state_dict({name: src for (name, _), (_, src) in pairs})
