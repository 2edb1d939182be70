"""Guided Backpropagation (Springenberg et al. 2015), for module and functional activations.

During the forward pass a `TorchFunctionMode` routes every rectifier call through an
autograd function with the guided backward rule, whether it comes from ``nn.ReLU``,
``nn.ReLU6``, ``F.relu``, ``torch.relu``, ``Tensor.relu``, ``F.relu6``, ``F.hardtanh`` with
``min_val=0`` or ``clamp(min=0)``; in-place variants are handled too. The mode is active
only inside the forward and is removed on exit, also when the forward raises. Nothing is
attached to the model: no hooks, no module replacement.

The rule at a rectifier y = clamp(x, 0, u) (u = ∞ for ReLU, 6 for ReLU6):
``grad_in = relu(grad_out) · 1[0 < x < u]``: the gradient passes only where the forward
input is positive (and below the cap, where the forward gradient is non-zero) and the
incoming gradient is positive.

Smooth activations (GELU, SiLU/Swish, Hardswish, Mish, ELU, LeakyReLU, Softplus), option
``smooth``:

- ``"guided"`` (default): the same rule written as ``grad_in = f'(x) · relu(grad_out)``, which
  is exactly the rule above for rectifiers: negative incoming gradients are dropped, then
  the local derivative is applied (so small negative inputs of GELU/SiLU, whose derivative
  is non-zero, still pass gradient).
- ``"plain"``: their ordinary gradient (only rectifiers are guided).

Activations written out by hand (``x * torch.sigmoid(x)``), TorchScript modules and custom
autograd functions are not seen and keep their plain gradient. When a forward pass meets
no activation the method can guide, the result is the plain gradient and a warning says so.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..hooks import frozen_parameters
from ..models.model import Model
from ..targets import Target
from .base import Explainer, batches, register
from .gradient import REDUCTIONS, reduce_channels


class GuidedRectifier(torch.autograd.Function):
    """clamp(x, 0, upper) forward; guided backward relu(g) · 1[0 < x < upper].

    The mask is read from the output y (0 < y < upper exactly where 0 < x < upper), so
    in-place calls work and nothing beyond the output is kept.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, upper: float, inplace: bool) -> torch.Tensor:
        if inplace:
            ctx.mark_dirty(x)
            y = x.clamp_(0, upper) if math.isfinite(upper) else x.clamp_(min=0)
        else:
            y = x.clamp(0, upper) if math.isfinite(upper) else x.clamp(min=0)
        ctx.save_for_backward(y)
        ctx.upper = upper
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (y,) = ctx.saved_tensors
        positive = grad.clamp(min=0)
        if math.isfinite(ctx.upper):
            return torch.ops.aten.hardtanh_backward(positive, y, 0.0, ctx.upper), None, None
        return torch.ops.aten.threshold_backward(positive, y, 0), None, None


class GuidedSmooth(torch.autograd.Function):
    """An elementwise activation f forward; backward f'(x) · relu(g)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor], inplace: bool) -> torch.Tensor:
        ctx.fn = fn
        if inplace:
            ctx.save_for_backward(x.clone())
            ctx.mark_dirty(x)
            return x.copy_(fn(x))
        ctx.save_for_backward(x)
        return fn(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (grad_in,) = torch.autograd.grad(ctx.fn(x), x, grad.clamp(min=0))
        return grad_in, None, None


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _rectifier_cap(func: Callable, args: tuple, kwargs: dict) -> tuple[float, bool] | None:
    """(upper, inplace) if this call is a rectifier clamp(x, 0, upper), else None."""
    if func in (F.relu, torch.relu, torch.Tensor.relu):
        return math.inf, bool(_arg(args, kwargs, 1, "inplace", False)) if func is F.relu else False
    if func in (torch.relu_, torch.Tensor.relu_):
        return math.inf, True
    if func is F.relu6:
        return 6.0, bool(_arg(args, kwargs, 1, "inplace", False))
    if func in (F.hardtanh, F.hardtanh_):
        low, high = _arg(args, kwargs, 1, "min_val", -1.0), _arg(args, kwargs, 2, "max_val", 1.0)
        inplace = func is F.hardtanh_ or bool(_arg(args, kwargs, 3, "inplace", False))
        return (float(high), inplace) if low == 0 and high > 0 else None
    if func in (torch.clamp, torch.Tensor.clamp, torch.clamp_, torch.Tensor.clamp_, torch.clip, torch.Tensor.clip):
        low, high = _arg(args, kwargs, 1, "min", None), _arg(args, kwargs, 2, "max", None)
        if isinstance(low, (int, float)) and low == 0 and (high is None or isinstance(high, (int, float)) and high > 0):
            return math.inf if high is None else float(high), func in (torch.clamp_, torch.Tensor.clamp_)
        return None
    if func in (torch.clamp_min, torch.Tensor.clamp_min, torch.clamp_min_, torch.Tensor.clamp_min_):
        low = _arg(args, kwargs, 1, "min", None)
        if isinstance(low, (int, float)) and low == 0:
            return math.inf, func in (torch.clamp_min_, torch.Tensor.clamp_min_)
    return None


# Smooth activations and how many positional arguments after the input they take
# (excluding ``inplace``).
SMOOTH_ACTIVATIONS = {F.gelu: 1, F.silu: 0, F.hardswish: 0, F.mish: 0, F.elu: 1, F.leaky_relu: 1, F.softplus: 2}


def _smooth_function(func: Callable, args: tuple, kwargs: dict) -> tuple[Callable, bool] | None:
    """(the activation as a function of its input alone, inplace) if ``func`` is a smooth one."""
    n_extra = SMOOTH_ACTIVATIONS.get(func)
    if n_extra is None:
        return None
    rest = args[1 : 1 + n_extra]
    inplace = bool(args[1 + n_extra]) if len(args) > 1 + n_extra else bool(kwargs.get("inplace", False))
    extra = {k: v for k, v in kwargs.items() if k != "inplace"}
    return (lambda t: func(t, *rest, **extra)), inplace


RECTIFIERS = frozenset({
    F.relu, torch.relu, torch.Tensor.relu, torch.relu_, torch.Tensor.relu_, F.relu6, F.hardtanh, F.hardtanh_,
    torch.clamp, torch.Tensor.clamp, torch.clamp_, torch.Tensor.clamp_, torch.clip, torch.Tensor.clip,
    torch.clamp_min, torch.Tensor.clamp_min, torch.clamp_min_, torch.Tensor.clamp_min_,
})
INTERCEPTED = RECTIFIERS | frozenset(SMOOTH_ACTIVATIONS)


class GuidedMode(TorchFunctionMode):
    """Routes rectifier (and optionally smooth activation) calls through guided backward.

    ``self.guided`` counts the activations rerouted in the forward passes run under it.
    """

    def __init__(self, smooth: str = "guided"):
        super().__init__()
        self.smooth = smooth
        self.guided = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in INTERCEPTED:  # the fast path: every other op runs untouched
            return func(*args, **kwargs)
        x = args[0] if args else None
        if isinstance(x, torch.Tensor) and x.requires_grad and torch.is_grad_enabled():
            cap = _rectifier_cap(func, args, kwargs)
            if cap is not None:
                self.guided += 1
                return GuidedRectifier.apply(x, *cap)
            smooth = _smooth_function(func, args, kwargs) if self.smooth == "guided" else None
            if smooth is not None:
                self.guided += 1
                return GuidedSmooth.apply(x, *smooth)
        return func(*args, **kwargs)


def guided_gradients(
    model: Model, x: torch.Tensor, target: Target, smooth: str = "guided", batch_size: int = 32
) -> torch.Tensor:
    """Guided-backprop gradients (N, C, H, W) of target row i's score w.r.t. ``x[i]``."""
    if smooth not in ("guided", "plain"):
        raise ValueError(f"smooth must be 'guided' or 'plain', got '{smooth}'")
    rows = torch.arange(x.shape[0])
    grads = torch.empty_like(x)
    guided = 0
    with frozen_parameters(model.module):
        for chunk in batches(x.shape[0], batch_size):
            xc = x[chunk].detach().requires_grad_(True)
            with torch.enable_grad():
                with GuidedMode(smooth) as mode:
                    score = target.score(model(xc), rows[chunk])
                (grads[chunk],) = torch.autograd.grad(score.sum(), xc)
            guided += mode.guided
    if guided == 0:
        warnings.warn(
            "guided_backprop: no ReLU-like activation found in the forward pass"
            + (" (smooth activations left plain)" if smooth == "plain" else "")
            + "; the result equals the plain gradient",
            stacklevel=3,
        )
    return grads


@register
class GuidedBackprop(Explainer):
    """Guided Backprop: gradient passed only through positive inputs and positive gradients.

    Works for ``nn.ReLU``, ``nn.ReLU6``, functional relu/relu6/hardtanh(0, u)/clamp(min=0)
    (see `salience.methods.guided` for the rule and for GELU/SiLU).

    Parameters
    ----------
    smooth : str
        ``"guided"`` (default): GELU/SiLU/Hardswish/Mish/ELU/LeakyReLU/Softplus backward is
        f'(x)·relu(grad); ``"plain"``: their ordinary gradient.
    reduce : str
        Channel reduction: ``"abs_max"`` (default), ``"abs_sum"`` or ``"sum"``.
    batch_size : int
        Images per backward pass.
    """

    reads_clean_output = True

    name = "guided_backprop"
    family = "gradient"

    def __init__(self, smooth: str = "guided", reduce: str = "abs_max", batch_size: int = 32):
        super().__init__(batch_size=batch_size)
        if smooth not in ("guided", "plain"):
            raise ValueError(f"smooth must be 'guided' or 'plain', got '{smooth}'")
        if reduce not in REDUCTIONS:
            raise ValueError(f"reduce must be one of {REDUCTIONS}, got '{reduce}'")
        self.smooth, self.reduce = smooth, reduce

    def attribute(self, model: Model, x: torch.Tensor, target: Target) -> torch.Tensor:
        return reduce_channels(guided_gradients(model, x, target, self.smooth, self.batch_size), self.reduce)
