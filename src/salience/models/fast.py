"""A faster forward for inference-only batches (perturbation methods and metrics).

`inference_forward` returns a function ``images -> output`` that runs the model as a frozen
TorchScript trace (batch norm folded into convolutions, constants inlined) on channels-last
inputs. On EfficientNet-Lite0 on CPU this halves the cost per image. The trace is checked
against the eager model on the example batch and dropped, with a warning, if tracing fails
or the outputs disagree; batches of another shape run eagerly. Traces are cached on the
`Model` and rebuilt when any parameter or buffer changes (tensor version counters), so a
model edited in place is never explained with stale weights.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import torch

from .model import Model

_CACHE_ATTR = "_inference_traces"
_CACHE_SIZE = 4


def _weights_key(model: Model) -> tuple:
    tensors = [*model.module.parameters(), *model.module.buffers()]
    return tuple((t.data_ptr(), t._version) for t in tensors)


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        scale = b.abs().max().clamp_min(1.0)
        return a.shape == b.shape and bool(((a.float() - b.float()).abs().max() <= 1e-3 * scale).item())
    return False


def _trace(model: Model, example: torch.Tensor) -> Callable | None:
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.freeze(torch.jit.trace(model.module, example, check_trace=False, strict=False))
            same = _close(model.postprocess(traced(example)), model(example))
    except Exception as err:  # noqa: BLE001 - any tracing failure means: run eagerly
        warnings.warn(f"{model.name}: running eagerly, tracing failed ({type(err).__name__}: {err})", stacklevel=3)
        return None
    if not same:
        warnings.warn(f"{model.name}: running eagerly, the traced model disagrees with the eager one", stacklevel=3)
        return None
    return traced


def inference_forward(model: Model, example: torch.Tensor, trace: bool = True,
                      channels_last: bool | None = None) -> Callable[[torch.Tensor], Any]:
    """``images -> model output`` for inference-only batches shaped like ``example``.

    Parameters
    ----------
    trace : bool
        Use a frozen TorchScript trace of the module (verified, cached, see module doc).
    channels_last : bool, optional
        Feed images channels-last; default: on CPU.
    """
    if channels_last is None:
        channels_last = example.device.type == "cpu"
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    example = example.contiguous(memory_format=fmt)
    traced = None
    if trace and model.task != "detection" and not model.forward_kwargs:  # detectors decode per input size; a trace takes no keywords
        cache = model.__dict__.setdefault(_CACHE_ATTR, {})
        key = (tuple(example.shape), example.dtype, str(example.device), channels_last)
        weights = _weights_key(model)
        if key in cache and cache[key][0] == weights:
            traced = cache[key][1]
        else:
            traced = _trace(model, example)
            cache.pop(key, None)
            while len(cache) >= _CACHE_SIZE:  # each trace holds a copy of the weights
                cache.pop(next(iter(cache)))
            cache[key] = (weights, traced)

    def forward(images: torch.Tensor) -> Any:
        images = images.contiguous(memory_format=fmt)
        if traced is not None and images.shape == example.shape:
            return model.postprocess(traced(images))
        return model(images)

    return forward
