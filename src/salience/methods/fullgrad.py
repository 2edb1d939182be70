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
input's and all of them at once. Each hook hands the next layer a copy of the output, so
in-place activations downstream cannot overwrite what was recorded.
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
    layers = bias_layers(model.module)
    outputs: list[tuple[nn.Module, torch.Tensor]] = []

    def record(layer, _inputs, output):
        outputs.append((layer, output))
        return output.clone()  # an in-place op downstream (ReLU(inplace=True)) then leaves the record intact

    x = x.detach().requires_grad_(True)
    with frozen_parameters(model.module), forward_hooks(layers, record), torch.enable_grad():
        score = target.score(model(x), rows)
        used = [(layer, out) for layer, out in outputs if out.requires_grad]
        grads = torch.autograd.grad(score.sum(), [x] + [out for _, out in used], allow_unused=True)
    bias_grads = []
    for (layer, out), grad in zip(used, grads[1:]):
        if grad is None:
            continue
        shape = (1, -1) + (1,) * (out.dim() - 2)
        bias_grads.append(grad * layer_bias(layer).detach().view(shape))
    return grads[0], bias_grads


def rescale(t: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """ψ: |t| min-max scaled per image over all its channels and positions (the authors' postprocess)."""
    t = t.abs()
    flat = t.flatten(1)
    t = t - flat.min(1).values.view(-1, *[1] * (t.dim() - 1))
    return t / (t.flatten(1).max(1).values.view(-1, *[1] * (t.dim() - 1)) + eps)


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
            input_grad, bias_grads = full_gradients(model, x[chunk], target, rows[chunk])
            cam = rescale(input_grad * x[chunk]).sum(1)
            for grad in bias_grads:
                if grad.dim() == 4:
                    part = rescale(grad).sum(1, keepdim=True)  # channel sum first: upsampling is linear
                    cam += F.interpolate(part, size=x.shape[-2:], mode="bilinear", align_corners=True)[:, 0]
            maps.append(cam)
        return torch.cat(maps)
