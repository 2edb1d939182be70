"""FullGrad (Srinivas & Fleuret 2019): input-gradient plus every spatial layer's bias-gradient.

The full-gradient decomposition of a piecewise-linear network's score is exact:
``f(x) = Σ ∇ₓf ⊙ x + Σ_layers Σ ∇_b f ⊙ b`` (completeness), where a layer's bias-gradient
``∇_b f ⊙ b`` is the gradient of the score with respect to the layer's output times the
layer's bias, per channel and position. Bias layers are ``nn.Conv2d`` with a bias and
``nn.BatchNorm2d``, whose bias in eval mode is the implicit ``β − γ·μ/√(σ² + ε)`` (as the
authors' code, ``idiap/fullgrad-saliency``). The map is the authors' aggregation:
``ψ(|∇ₓf ⊙ x|)`` summed over channels plus, for every bias layer with a spatial (4-D)
output, ``ψ(|∇_b f ⊙ b|)`` upsampled bilinearly (``align_corners=True``) and summed over
channels, where ψ min-max scales each image's whole (C, h, w) tensor to [0, 1].

One forward pass and one backward pass (parameters frozen): the layers' outputs are recorded
by forward hooks (`salience.hooks.forward_hooks`) and ``torch.autograd.grad`` gives the
input's and all of them at once. If an in-place operation downstream overwrote a recorded
output (its version counter moved), the pass is redone with each hook handing the next
layer a copy. Each layer's ψ is summed over channels without being built
(`rescaled_channel_sum`), and layers of the same resolution are added before one bilinear
upsampling per resolution (upsampling is linear, so this is exact).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SalienceError
from ..hooks import forward_hooks, frozen_parameters
from ..models.model import Model
from ..targets import Target
from .base import Explainer, batches, register


def bias_layers(module: nn.Module) -> list[nn.Module]:
    """The layers that add a bias: convolutions with a bias and batch norms (their implicit bias)."""
    return [m for m in module.modules()
            if isinstance(m, nn.BatchNorm2d) or (isinstance(m, nn.Conv2d) and m.bias is not None)]


def layer_bias(layer: nn.Module) -> torch.Tensor:
    """A bias layer's bias per output channel (a batch norm's in eval mode)."""
    if isinstance(layer, nn.BatchNorm2d):
        if layer.running_mean is None:
            raise SalienceError("FullGrad needs batch norms with running statistics (eval mode)")
        scale = layer.weight if layer.weight is not None else torch.ones_like(layer.running_mean)
        shift = layer.bias if layer.bias is not None else torch.zeros_like(layer.running_mean)
        return shift - layer.running_mean * scale / torch.sqrt(layer.running_var + layer.eps)
    return layer.bias


def full_gradients(model: Model, x: torch.Tensor, target: Target, rows: torch.Tensor
                   ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The full-gradient decomposition of ``x``'s target scores.

    Returns the input-gradient (N, C, H, W) and, per bias layer in forward order, its
    bias-gradient ``∂score/∂output ⊙ bias`` (N, C_l, h_l, w_l); they sum to the score on
    piecewise-linear networks (`bias_layers` lists the layers).
    """
    input_grad, pairs = output_gradients(model, x, target, rows)
    return input_grad, [grad * bias.view((1, -1) + (1,) * (grad.dim() - 2)) for grad, bias in pairs]


def output_gradients(model: Model, x: torch.Tensor, target: Target, rows: torch.Tensor
                     ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """The input-gradient and, per bias layer, (∂score/∂output, the layer's bias)."""
    grads, used = _gradients(model, x, target, rows, copy=False)
    if any(out._version != version for _, out, version in used):  # an in-place op overwrote a record
        grads, used = _gradients(model, x, target, rows, copy=True)
    pairs = [(grad, layer_bias(layer).detach()) for (layer, _, _), grad in zip(used, grads[1:]) if grad is not None]
    return grads[0], pairs


def _gradients(model: Model, x: torch.Tensor, target: Target, rows: torch.Tensor, copy: bool):
    """One forward and backward: gradients of the scores for ``x`` and each bias layer's output.

    The layers' outputs are recorded with their version counters; with ``copy`` the next layer
    gets a copy, so in-place activations downstream (``ReLU(inplace=True)``) cannot overwrite
    what was recorded.
    """
    outputs: list[tuple[nn.Module, torch.Tensor, int]] = []

    def record(layer, _inputs, output):
        outputs.append((layer, output, output._version))
        return output.clone() if copy else None

    x = x.detach().requires_grad_(True)
    with frozen_parameters(model.module), forward_hooks(bias_layers(model.module), record), torch.enable_grad():
        score = target.score(model(x), rows)
        used = [entry for entry in outputs if entry[1].requires_grad]
        grads = torch.autograd.grad(score.sum(), [x] + [out for _, out, _ in used], allow_unused=True)
    return grads, used


def rescale(t: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """ψ: |t| min-max scaled per image over all its channels and positions (the authors' postprocess)."""
    t = t.abs()
    flat = t.flatten(1)
    t = t - flat.min(1).values.view(-1, *[1] * (t.dim() - 1))
    return t / (t.flatten(1).max(1).values.view(-1, *[1] * (t.dim() - 1)) + eps)


def rescaled_bias_channel_sum(grad: torch.Tensor, bias: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """`rescaled_channel_sum` of ``grad ⊙ bias`` (bias per channel) without building the product:
    |g·b| = |g|·|b|, its min / max are per-channel min / max of |g| times |b|, its channel sum a
    |b|-weighted sum. Overwrites ``grad`` with |grad|."""
    a = grad.abs_()
    weight = bias.abs().to(a.dtype)
    low, high = a.flatten(2).aminmax(dim=2)  # (N, C) each
    low, high = (low * weight).amin(1), (high * weight).amax(1)
    total = torch.einsum("nchw,c->nhw", a, weight)[:, None]
    shape = (-1, 1, 1, 1)
    return (total - a.shape[1] * low.view(shape)) / (high - low + eps).view(shape)


def rescaled_channel_sum(t: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """ψ(t) summed over channels, (N, 1, h, w), without building ψ(t):
    Σ_c (|t| − m) / (M − m + eps) = (Σ_c |t| − C·m) / (M − m + eps), m, M = min, max of |t|."""
    a = t.abs()
    low, high = a.flatten(1).aminmax(dim=1)
    shape = (-1, 1, 1, 1)
    return (a.sum(1, keepdim=True) - a.shape[1] * low.view(shape)) / (high - low + eps).view(shape)


@register
class FullGrad(Explainer):
    """FullGrad (Srinivas & Fleuret 2019): ψ|∇ₓf ⊙ x| + Σ_layers upsampled ψ|∇_b f ⊙ b|.

    CNNs only: the bias layers with spatial outputs (convolutions with a bias, batch norms)
    carry the bias-gradients; a model without any gets the input-gradient term alone.

    Parameters
    ----------
    batch_size : int
        Rows per forward/backward pass.
    """

    name = "fullgrad"
    family = "gradient"
    reads_clean_output = True

    def __init__(self, batch_size: int = 16):
        super().__init__(batch_size=batch_size)

    def attribute(self, model: Model, x: torch.Tensor, target: Target) -> torch.Tensor:
        rows = torch.arange(x.shape[0])
        maps = []
        for chunk in batches(x.shape[0], self.batch_size):
            input_grad, pairs = output_gradients(model, x[chunk], target, rows[chunk])
            cam = rescaled_channel_sum(input_grad * x[chunk])[:, 0]
            by_size: dict[tuple[int, int], torch.Tensor] = {}  # upsampling is linear: sum per size first
            for grad, bias in pairs:
                if grad.dim() == 4:
                    part = rescaled_bias_channel_sum(grad, bias)
                    size = tuple(part.shape[-2:])
                    by_size[size] = part if size not in by_size else by_size[size] + part
            for part in by_size.values():
                cam += F.interpolate(part, size=x.shape[-2:], mode="bilinear", align_corners=True)[:, 0]
            maps.append(cam)
        return torch.cat(maps)
