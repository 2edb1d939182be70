"""CAM methods: a map from one layer's activations, weighted per channel or per position.

Every method here computes ``relu(Σ_k W_k · A_k)`` on the activations ``A`` (N, C, h, w)
of one layer (``layer``, a dotted module name; default: the model's CAM layer), then
upsamples the map bilinearly to the input resolution. Maps are raw: no min-max
normalisation (`Explanation.normalized` does that). A method only says how to weight
the activations (the pytorch-grad-cam idea): gradient methods override
`GradientCam.weights`; Score-CAM gets its weights from masked forward passes.

Transformers: token features (B, prefix + h·w, C) and Swin's (B, h, w, C) are turned into
(B, C, h, w) maps by the model's `TokenAnatomy` (prefix tokens dropped, grid from the input
size), for activations and gradients alike, so no ``reshape_transform`` is needed; the
default layer of a ViT is its last block's first norm.

Fast gradient path: the layer's output is detached and made a leaf that requires grad,
and the model's parameters are frozen, so autograd records and backpropagates only the
part of the network after the layer, with no parameter gradients, in one
``torch.autograd.grad`` call per batch.
"""

from __future__ import annotations

from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LayerNotFoundError
from ..hooks import capture_layer, frozen_parameters
from ..models.fast import inference_forward
from ..models.model import Model
from ..targets import ClassTarget, Target
from .base import Explainer, batches, register


class CamExplainer(Explainer):
    """Base class of CAM methods: weights for one layer's activations -> one map per row.

    Parameters
    ----------
    layer : str, optional
        Dotted name of the layer whose output is used; default ``model.cam_layer``.
    batch_size : int
        Rows (or masked images, for Score-CAM) per pass through the model.
    """

    family: ClassVar[str] = "cam"

    def __init__(self, layer: str | None = None, batch_size: int | None = 32):
        super().__init__(batch_size=batch_size)
        self.layer = layer

    def attribute(self, model: Model, x: torch.Tensor, target: Target) -> torch.Tensor:
        layer = model.cam_layer if self.layer is None else model.layer(self.layer)
        rows = torch.arange(x.shape[0], device=x.device)
        maps = []
        for chunk in batches(x.shape[0], self.batch_for(x.device, cpu=32, gpu=32)):
            activations, weights = self.activations_and_weights(model, layer, x[chunk], target, rows[chunk])
            maps.append(combine(activations, weights, x.shape[-2:]))
        return torch.cat(maps)

    def activations_and_weights(
        self, model: Model, layer: nn.Module, x: torch.Tensor, target: Target, rows: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's activations (n, C, h, w) and weights broadcastable to them."""
        raise NotImplementedError


def combine(activations: torch.Tensor, weights: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """``relu(Σ_k W_k · A_k)`` at the layer's resolution, upsampled bilinearly to ``size``."""
    cam = (weights * activations).sum(1).relu()
    return F.interpolate(cam[:, None].float(), size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


def _captured(capture, layer: nn.Module) -> torch.Tensor:
    if capture.output is None:
        raise LayerNotFoundError(f"layer {type(layer).__name__} did not run in the model's forward pass")
    return capture.output


def layer_maps(model: Model, features: torch.Tensor, input_size: torch.Size) -> torch.Tensor:
    """A layer's output as (N, C, h, w): transformer token features through the model's anatomy."""
    if model.anatomy is not None:
        features = model.anatomy.maps(features, tuple(input_size))
    if features.dim() != 4:
        raise LayerNotFoundError(
            f"the CAM layer gives {features.dim()}-D output {tuple(features.shape)}, not a (N, C, h, w) map")
    return features


class GradientCam(CamExplainer):
    """Base class of gradient CAMs: subclasses override `weights` only."""

    reads_clean_output = True

    def activations_and_weights(self, model, layer, x, target, rows):
        with frozen_parameters(model.module), capture_layer(layer, requires_grad=True) as cap, torch.enable_grad():
            scores = target.score(model(x), rows)
            activations = _captured(cap, layer)
            if not scores.requires_grad:
                raise LayerNotFoundError("the target score does not depend on the chosen layer's output")
            (gradients,) = torch.autograd.grad(scores.sum(), activations)
        activations = layer_maps(model, activations.detach(), x.shape[-2:])
        gradients = layer_maps(model, gradients, x.shape[-2:])
        return activations, self.weights(activations, gradients, scores.detach())

    def weights(self, activations: torch.Tensor, gradients: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Weights broadcastable to ``activations`` (N, C, h, w), from ∂score/∂A and the scores (N,)."""
        raise NotImplementedError


@register
class GradCam(GradientCam):
    """Grad-CAM: channels weighted by their spatially averaged gradient (Selvaraju et al. 2017)."""

    name = "gradcam"

    def weights(self, activations, gradients, scores):
        return gradients.mean((2, 3), keepdim=True)


@register
class GradCamPlusPlus(GradientCam):
    """Grad-CAM++: gradient weights with per-position α (Chattopadhay et al. 2018).

    α_ij = g²_ij / (2 g²_ij + Σ_ab A_ab · g³_ij) and w_k = Σ_ij α_ij · relu(g_ij), with g the
    gradient of the target score itself (no exp(S) factor), as in pytorch-grad-cam. We
    evaluate α as 1 / (2 + Σ_ab A_ab · g_ij + ε / g²_ij) where g > 0 (only those positions
    count), which equals the formula with ε added to its denominator, and set α = 0 where
    the denominator vanishes. pytorch-grad-cam uses ε = 1e-6; the default here is ε = 0 (the
    paper): gradients at a late layer are often ~1e-3, so their ε damps α noticeably.
    The formula assumes non-negative activations (a post-ReLU layer, as in the paper); on a
    layer with negative activations the denominator can approach zero and α explode.

    Parameters
    ----------
    eps : float
        ε in the denominator of α (1e-6 reproduces pytorch-grad-cam).
    exp_score : bool
        The paper's variant for Y = exp(S): α is unchanged (exp(S) cancels) and every weight
        is multiplied by exp(S), so the map is scaled by that per-row constant (the
        normalised map is identical). Overflows float32 for scores above ~88.
    """

    name = "gradcam_pp"
    aliases = ("gradcam++", "gradcampp", "grad_cam++", "grad_cam_pp")

    def __init__(self, layer: str | None = None, eps: float = 0.0, exp_score: bool = False, batch_size: int = 32):
        super().__init__(layer=layer, batch_size=batch_size)
        self.eps = eps
        self.exp_score = exp_score

    def weights(self, activations, gradients, scores):
        positive = gradients > 0
        g = torch.where(positive, gradients, 1)
        denominator = 2 + activations.sum((2, 3), keepdim=True) * g + self.eps / g.square()
        usable = positive & (denominator != 0)
        alpha = torch.where(usable, 1 / torch.where(usable, denominator, 1), 0)
        w = (alpha * gradients.relu()).sum((2, 3), keepdim=True)
        if self.exp_score:
            w = w * scores.exp()[:, None, None, None]
        return w


@register
class LayerCam(GradientCam):
    """LayerCAM: every position weighted by its positive gradient, relu(g)·A (Jiang et al. 2021)."""

    name = "layercam"

    def weights(self, activations, gradients, scores):
        return gradients.relu()


SCORE_WEIGHTINGS = ("probability", "channel_softmax")
BASELINES = ("none", "subtract")


@register
class ScoreCam(CamExplainer):
    """Score-CAM: channels weighted by the score of the input masked by each channel (Wang et al. 2020).

    For each channel k, the activation A_k is upsampled to the input size (bilinear, corners
    aligned) and min-max normalised to a mask M_k; the model scores ``x · M_k`` (x in the
    model's normalised input space, as pytorch-grad-cam does). Channels whose activation is
    constant have M_k = 0: their masked image is the all-zero input, scored once per batch
    instead of once per channel (same result, about half the passes on EfficientNet-Lite0).

    Parameters
    ----------
    layer : str, optional
        Dotted layer name; default ``model.cam_layer``.
    weighting : str
        ``probability`` (the paper): w_k = softmax over classes of the logits of ``x · M_k``,
        at the target class; for a target that is not a class of a logits output, the
        target's own score. ``channel_softmax`` (pytorch-grad-cam): w = softmax over the
        channels k of the target's score (the logit) of ``x · M_k``.
    baseline : str
        ``none``, or ``subtract``: subtract the score of the all-zero input (the paper's
        CIC, increase of confidence). No effect with ``channel_softmax`` (shift-invariant).
    batch_size : int or None
        Masked images per forward pass; None: 8 on CPU (larger CPU batches are slower per
        image), 64 on GPU.
    trace, channels_last :
        Run the masked passes through `salience.models.fast.inference_forward` (a frozen
        TorchScript trace verified against the eager model, channels-last inputs; None:
        channels-last on CPU only).
    """

    name = "scorecam"

    def __init__(
        self,
        layer: str | None = None,
        weighting: str = "probability",
        baseline: str = "none",
        batch_size: int | None = None,
        trace: bool = True,
        channels_last: bool | None = None,
    ):
        super().__init__(layer=layer, batch_size=batch_size)
        if weighting not in SCORE_WEIGHTINGS:
            raise ValueError(f"weighting must be one of {SCORE_WEIGHTINGS}, got '{weighting}'")
        if baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}, got '{baseline}'")
        self.weighting = weighting
        self.baseline = baseline
        self.trace = trace
        self.channels_last = channels_last

    def attribute(self, model: Model, x: torch.Tensor, target: Target) -> torch.Tensor:
        with torch.inference_mode():
            return super().attribute(model, x, target)

    def activations_and_weights(self, model, layer, x, target, rows):
        with capture_layer(layer) as cap:
            model(x)
        activations = layer_maps(model, _captured(cap, layer), x.shape[-2:]).float()
        n, channels = activations.shape[:2]
        varying = (activations.amax((2, 3)) > activations.amin((2, 3))).nonzero()  # (pairs, 2): row, channel
        zero_scores = self._scores(model, torch.zeros_like(x[:1]).expand_as(x), target, rows)
        batch = self.batch_for(x.device, cpu=8, gpu=64)
        example = x[:1].expand(min(batch, max(len(varying), 1)), -1, -1, -1)
        forward = inference_forward(model, example, self.trace, self.channels_last)
        scores = zero_scores[:, None].repeat(1, channels)
        for chunk in batches(len(varying), batch):
            i, k = varying[chunk].unbind(1)
            masks = F.interpolate(activations[i, k][:, None], size=x.shape[-2:], mode="bilinear", align_corners=True)
            low, high = masks.amin((2, 3), keepdim=True), masks.amax((2, 3), keepdim=True)
            masks = (masks - low) / (high - low + 1e-8)
            scores[i, k] = self._scores(forward, x[i] * masks.to(x.dtype), target, rows[i])
        if self.weighting == "channel_softmax":
            weights = scores.softmax(1)
        elif self.baseline == "subtract":
            weights = scores - zero_scores[:, None]
        else:
            weights = scores
        return activations, weights[:, :, None, None]

    def _scores(self, forward: Callable, x: torch.Tensor, target: Target, rows: torch.Tensor) -> torch.Tensor:
        output = forward(x)
        if (self.weighting == "probability" and isinstance(target, ClassTarget) and isinstance(output, torch.Tensor)
                and output.shape[1] > 1):  # one output (a single CLIP prompt): its score
            classes = target.classes.to(output.device)[rows]
            return output.float().softmax(1).gather(1, classes[:, None])[:, 0]
        return target.score(output, rows).float()
