"""Attention methods for vision transformers: raw attention, attention rollout, Chefer.

All three read the self-attention probabilities recorded by `capture_attention` and the
token layout of ``model.anatomy`` (patch grid, prefix tokens). The map is the row of the
class token (the first prefix token) over the patch tokens; distillation and register
tokens are left out of the map. For a model without prefix tokens (global average pooling)
the mean of all token rows is used instead. The patch grid is reshaped and upsampled
bilinearly to the input resolution. Maps are raw (no normalisation).

- `raw_attention`: one layer's attention (default the last), heads fused.
- `rollout` (Abnar & Zuidema 2020): heads fused, the weakest weights of each row dropped
  (``discard_ratio``), Â = rownorm(A + I), joint attention Â_L ⋯ Â_1.
- `chefer` (Chefer, Gur & Wolf 2021, "Generic attention-model explainability", the
  gradient × attention variant without LRP): Ā = mean_heads((∂s/∂A ⊙ A)⁺) per block,
  R = I, R ← R + Ā R from the first block on; one forward and one backward per batch.

Only the class row of the product is needed, so it is computed as a row vector times one
(N, N) matrix per layer: no (N, N) × (N, N) products.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from ..attention import capture_attention
from ..errors import SalienceError
from ..hooks import frozen_parameters
from ..models.anatomy import TokenAnatomy
from ..models.model import Model
from ..targets import Target
from .base import Explainer, batches, register

HEAD_FUSIONS = ("mean", "max", "min")
GRID_FREE_METHODS = "gradcam, layercam, gradcam_pp, saliency, integrated_gradients, rise"


class AttentionExplainer(Explainer):
    """Base class of methods built from the self-attention maps of a single-grid ViT.

    Subclasses implement `token_relevance`: (n, N) relevance of every token for the class
    token, from which the patch map at input resolution is made.
    """

    family: ClassVar[str] = "attention"
    tasks: ClassVar[tuple[str, ...]] = ("classification", "zero_shot")
    reads_clean_output = True

    def __init__(self, batch_size: int | None = None):
        super().__init__(batch_size=batch_size)

    def attribute(self, model: Model, x: torch.Tensor, target: Target) -> torch.Tensor:
        anatomy = token_anatomy(model, self.name)
        grid = anatomy.grid(tuple(x.shape[-2:]))
        rows = torch.arange(x.shape[0], device=x.device)
        maps = []
        for chunk in batches(x.shape[0], self.batch_for(x.device, cpu=16, gpu=64)):
            relevance = self.token_relevance(model, x[chunk], target, rows[chunk], anatomy.prefix_tokens)
            maps.append(patch_map(relevance, anatomy.prefix_tokens, grid, x.shape[-2:]))
        return torch.cat(maps)

    def token_relevance(self, model: Model, x: torch.Tensor, target: Target, rows: torch.Tensor,
                        prefix: int) -> torch.Tensor:
        """Relevance (n, N) of every token for the class token (or the mean token)."""
        raise NotImplementedError

    def recorded_maps(self, model: Model, x: torch.Tensor, target: Target, rows: torch.Tensor,
                      layers: list[int] | None = None, exact_outputs: bool = True) -> list[torch.Tensor]:
        """One inference forward with attention captured (the target is scored on it too);
        ``layers``: only these of the anatomy's attention modules; ``exact_outputs=False``:
        outputs from the recorded maps (within rounding, cheaper when every layer is read)."""
        with torch.inference_mode(), capture_attention(model, layers=layers, exact_outputs=exact_outputs) as record:
            target.score(model(x), rows)
        return checked(record.maps, self.name)


def token_anatomy(model: Model, method: str) -> TokenAnatomy:
    """The model's token anatomy, or a clear error naming methods that do apply."""
    anatomy = getattr(model, "anatomy", None)
    if anatomy is None:
        raise SalienceError(
            f"'{method}' needs a vision transformer with a known token layout, and {model.name} has no "
            f"anatomy (load it through timm:, hf: or open_clip:, or set model.anatomy = TokenAnatomy(...)). "
            f"Methods that work on any model: {GRID_FREE_METHODS}."
        )
    if anatomy.hierarchical or anatomy.layout != "tokens":
        raise SalienceError(
            f"'{method}' needs one token grid through all blocks; {model.name} is hierarchical (e.g. Swin), "
            f"so its attention maps do not chain. Use {GRID_FREE_METHODS} instead."
        )
    return anatomy


def checked(maps: list[torch.Tensor], method: str) -> list[torch.Tensor]:
    if not maps:
        raise SalienceError(f"'{method}': no self-attention was recorded in the forward pass")
    shapes = {tuple(m.shape[-2:]) for m in maps}
    if len(shapes) != 1 or maps[0].shape[-1] != maps[0].shape[-2]:
        raise SalienceError(f"'{method}' needs square self-attention maps of one size; got {sorted(shapes)}")
    return maps


def fuse_heads(attention: torch.Tensor, how: str) -> torch.Tensor:
    """(B, heads, N, N) -> (B, N, N) by mean, max or min over heads."""
    if how == "mean":
        return attention.mean(1)
    if how == "max":
        return attention.amax(1)
    if how == "min":
        return attention.amin(1)
    raise ValueError(f"head_fusion must be one of {HEAD_FUSIONS}, got '{how}'")


def query_row(matrix: torch.Tensor, prefix: int) -> torch.Tensor:
    """The class-token row (B, N) of (B, N, N), or the mean row without prefix tokens."""
    return matrix[:, 0] if prefix > 0 else matrix.mean(1)


def patch_map(relevance: torch.Tensor, prefix: int, grid: tuple[int, int], size) -> torch.Tensor:
    """(B, prefix + h·w) token relevance -> (B, H, W) patch map, bilinear upsampling."""
    patches = relevance[:, prefix:]
    if patches.shape[1] != grid[0] * grid[1]:
        raise SalienceError(
            f"{patches.shape[1]} patch tokens after {prefix} prefix tokens do not match the {grid[0]}×{grid[1]} grid"
        )
    patches = patches.float().reshape(-1, 1, *grid)
    return F.interpolate(patches, size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


@register
class RawAttention(AttentionExplainer):
    """Raw attention: the class token's attention over the patches in one layer.

    Parameters
    ----------
    layer : int
        Which self-attention call, in forward order (negative counts from the end).
    head_fusion : str
        ``mean``, ``max`` or ``min`` over heads.
    """

    name = "raw_attention"

    def __init__(self, layer: int = -1, head_fusion: str = "mean", batch_size: int | None = None):
        super().__init__(batch_size=batch_size)
        fuse_heads(torch.zeros(1, 1, 1, 1), head_fusion)
        self.layer = layer
        self.head_fusion = head_fusion

    def token_relevance(self, model, x, target, rows, prefix):
        n_layers = len(model.anatomy.attentions)
        if n_layers:  # record the chosen module only; the other layers keep their fused attention
            if not -n_layers <= self.layer < n_layers:
                raise SalienceError(f"raw_attention: layer {self.layer} out of range for {n_layers} attention layers")
            (chosen,) = self.recorded_maps(model, x, target, rows, layers=[self.layer])
        else:
            maps = self.recorded_maps(model, x, target, rows)
            if not -len(maps) <= self.layer < len(maps):
                raise SalienceError(f"raw_attention: layer {self.layer} out of range for {len(maps)} attention layers")
            chosen = maps[self.layer]
        return query_row(fuse_heads(chosen, self.head_fusion), prefix)


@register
class AttentionRollout(AttentionExplainer):
    """Attention rollout: attention chained through all layers (Abnar & Zuidema 2020).

    Per layer the heads are fused, then in every row the ``discard_ratio`` fraction of
    weakest weights is set to zero (never the class-token column), the identity is added
    for the residual connection and rows are renormalised: Â = rownorm(A + I). The map is
    the class-token row of Â_L ⋯ Â_1 over the patch tokens.

    jacobgil's vit-explain drops the weakest weights of the whole flattened matrix (and
    protects only entry (0, 0)); here the fraction is taken per row, so every token keeps
    its strongest links. With ``discard_ratio=0`` both are the same.

    Parameters
    ----------
    head_fusion : str
        ``mean`` (the paper), ``max`` or ``min`` over heads.
    discard_ratio : float
        Fraction in [0, 1) of each row's weights dropped before adding the identity.
    """

    name = "rollout"
    aliases = ("attention_rollout",)

    def __init__(self, head_fusion: str = "mean", discard_ratio: float = 0.0, batch_size: int | None = None):
        super().__init__(batch_size=batch_size)
        fuse_heads(torch.zeros(1, 1, 1, 1), head_fusion)
        if not 0 <= discard_ratio < 1:
            raise ValueError(f"discard_ratio must be in [0, 1), got {discard_ratio}")
        self.head_fusion = head_fusion
        self.discard_ratio = discard_ratio

    def token_relevance(self, model, x, target, rows, prefix):
        maps = self.recorded_maps(model, x, target, rows, exact_outputs=False)
        layers = [self.residual_attention(fuse_heads(a, self.head_fusion).float()) for a in maps]
        row = query_row(layers[-1], prefix)
        for layer in reversed(layers[:-1]):
            row = torch.bmm(row[:, None], layer)[:, 0]
        return row

    def residual_attention(self, fused: torch.Tensor) -> torch.Tensor:
        """rownorm(drop_weakest(A) + I) for fused attention (B, N, N)."""
        n = fused.shape[-1]
        drop = int(n * self.discard_ratio)
        if drop > 0:
            ranked = fused.clone()
            ranked[..., 0] = float("inf")  # never drop the class-token column
            weakest = ranked.topk(drop, dim=-1, largest=False).indices
            fused = fused.scatter(-1, weakest, 0.0)
        fused = fused + torch.eye(n, device=fused.device, dtype=fused.dtype)
        return fused / fused.sum(-1, keepdim=True)


@register
class CheferAttribution(AttentionExplainer):
    """Chefer et al. 2021: gradient-weighted attention rolled out from the first block.

    For every block Ā = mean over heads of (∂s/∂A ⊙ A)⁺, with s the target score; starting
    from R = I, R ← R + Ā R block by block; the map is the class-token row of R over the
    patches. This is the LRP-free variant of "Generic attention-model explainability"
    (ICCV 2021); the LRP relevance of A of the 2021 CVPR method is not implemented. One
    forward (fused attention kept) and one backward per batch, parameters frozen.
    """

    name = "chefer"
    aliases = ("transformer_attribution", "chefer2021")

    def token_relevance(self, model, x, target, rows, prefix):
        maps, grads = self.maps_and_gradients(model, x, target, rows)
        weighted = [(g * a).clamp(min=0).mean(1) for a, g in zip(maps, grads)]
        n = maps[0].shape[-1]
        eye = torch.eye(n, device=x.device, dtype=weighted[0].dtype)
        row = query_row(eye[None] + weighted[-1], prefix)
        for layer in reversed(weighted[:-1]):
            row = row + torch.bmm(row[:, None], layer)[:, 0]
        return row.float()

    def maps_and_gradients(self, model, x, target, rows) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The attention maps and ∂s/∂A from one forward (fused attention kept) and one
        backward: ∂s/∂A = (∂s/∂O)·Vᵀ from the gradients of the attention outputs O."""
        with frozen_parameters(model.module), torch.enable_grad():
            with capture_attention(model, keep_outputs=True) as record:
                scores = target.score(model(x), rows)
            maps = checked(record.maps, self.name)
            used = [o for o in record.outputs if o.requires_grad]
            if not used or not scores.requires_grad:
                raise SalienceError(f"{self.name}: the target score does not depend on the attention maps")
            found = iter(torch.autograd.grad(scores.sum(), used, allow_unused=True))
        grads = [next(found) if o.requires_grad else None for o in record.outputs]
        return maps, record.map_gradients([torch.zeros_like(o) if g is None else g for g, o in zip(grads, record.outputs)])
