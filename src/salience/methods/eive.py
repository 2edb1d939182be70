"""EIVE: one map per detection, read from the decoder's cross-attention (seed 000).

Each detection of a DETR-like detector comes from one object query; that query's
cross-attention over the image features, in every decoder layer, is read as the
attribution of its instance. No gradient, no perturbation: the maps come from the
detector's own forward pass, captured while it runs (`DetectorModel.capture_cross_attention`).

Per layer, a query's attention becomes a map on a token grid: single-scale DETRs give
weights over the encoder's h×w grid (`GridAttention`); deformable DETRs give sampling
points, whose weights are splatted bilinearly at their locations on each level's grid, each
level resized to the finest grid (mass kept) and summed (`deformable_maps`). Heads are
reduced (mean or max) and each layer's map is normalised to sum 1.

CLHCF (cross-layer hybrid consensus fusion). The paper does not publish its formulas; ours
(documented decision, see docs): with layer weights w_l (default l + 1: later layers count
more),

    additive       A_add = Σ_l w_l A_l / Σ_l w_l
    multiplicative A_mul = normalise(exp(Σ_l w_l log(A_l + ε) / Σ_l w_l))   (weighted geometric mean)
    hybrid         A = (1 - mix) · A_add + mix · A_mul

The geometric mean keeps only regions every layer agrees on; the additive mean keeps their
union. ``fusion`` selects ``hybrid`` (CLHCF), ``mean`` (additive only), ``product``
(multiplicative only) or ``last`` (the last decoder layer alone), the ablations of the
benchmark. ε = 1e-3 of a uniform map's value.
"""

from __future__ import annotations

import time
from typing import ClassVar, Sequence

import torch
import torch.nn.functional as F

from ..errors import SalienceError
from ..explanation import Explanation
from ..models.detection import DeformableAttention, DetectorModel, GridAttention
from ..targets import DetectionTarget
from .base import Explainer, available_methods, check_task, register, resolve_for

FUSIONS = ("hybrid", "mean", "product", "last")
HEAD_REDUCTIONS = ("mean", "max")


def splat_levels(locations: torch.Tensor, weights: torch.Tensor, shapes: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
    """Splat point weights bilinearly onto each level's h×w grid, in one scatter.

    ``locations`` (..., levels, P, 2) are (x, y) in [0, 1] of each level's map (grid_sample's
    ``align_corners=False`` convention: cell centres at (i + 0.5) / w); ``weights``
    (..., levels, P). Returns one (..., h, w) map per level. Mass falling outside a grid is
    dropped, as a bilinear sample there would read zero padding.
    """
    lead = weights.shape[:-2]
    sizes = [rows * cols for rows, cols in shapes]
    starts = [sum(sizes[:level]) for level in range(len(shapes))]
    # per level (h, w, first flat index), built host-side: no device-to-host sync
    h, w, offsets = torch.tensor([[rows, cols, start] for (rows, cols), start in zip(shapes, starts)],
                                 device=weights.device).T[..., None]
    px = locations[..., 0] * w - 0.5
    py = locations[..., 1] * h - 0.5
    x0, y0 = px.floor(), py.floor()
    fx, fy = px - x0, py - y0
    indices, values = [], []
    for dx, dy, share in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = (x0 + dx).long(), (y0 + dy).long()
        inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        indices.append(torch.minimum(yi.clamp(min=0), h - 1) * w + torch.minimum(xi.clamp(min=0), w - 1) + offsets)
        values.append(share * inside * weights)
    columns = 4 * weights.shape[-1] * weights.shape[-2]
    out = weights.new_zeros(lead.numel(), sum(sizes))
    out.scatter_add_(1, torch.stack(indices, -1).reshape(-1, columns), torch.stack(values, -1).reshape(-1, columns))
    return [level.reshape(*lead, *shape) for level, shape in zip(out.split(sizes, 1), shapes)]


def deformable_maps(locations: torch.Tensor, weights: torch.Tensor, shapes: Sequence[tuple[int, int]]) -> torch.Tensor:
    """(..., h, w) on the finest level's grid from points (..., levels, P, 2) and weights
    (..., levels, P): every level splatted, resized, summed.

    A coarse cell's mass is spread evenly over the fine cells it covers (bilinear resize,
    divided by the area ratio), so each level contributes the weight its points carry.
    """
    finest = max(shapes, key=lambda s: s[0] * s[1])
    lead = weights.shape[:-2]
    total = 0
    for level_map, shape in zip(splat_levels(locations, weights, shapes), shapes):
        if tuple(shape) != tuple(finest):
            level_map = F.interpolate(level_map.reshape(-1, 1, *shape), size=finest, mode="bilinear",
                                      align_corners=False).reshape(*lead, *finest)
            level_map = level_map * (shape[0] * shape[1]) / (finest[0] * finest[1])
        total = total + level_map
    return total


def query_maps(layer: GridAttention | DeformableAttention) -> torch.Tensor:
    """(B, Q, h, w): every query's head-averaged attention map of one decoder layer, summing to 1
    (differentiable: the AAJTS training loss reads it)."""
    if isinstance(layer, GridAttention):
        return layer.weights.mean(1)
    return deformable_maps(layer.locations, layer.weights, layer.level_shapes).mean(2)


def layer_maps(layers: Sequence[GridAttention | DeformableAttention], target: DetectionTarget,
               head_reduction: str) -> torch.Tensor:
    """(L, N, h, w): every decoder layer's map per target row, heads reduced, each summing to 1.

    Single-scale: the target queries' attention over the token grid; deformable: their
    sampling points as maps (`deformable_maps`), all layers splatted together.
    """
    device = layers[0].weights.device
    b, q = target.image_index.to(device), target.queries.to(device)
    if isinstance(layers[0], GridAttention):
        maps = torch.stack([layer.weights[b, :, q] for layer in layers])
    else:
        locations = torch.stack([layer.locations[b, q] for layer in layers])  # (L, N, heads, levels, P, 2)
        weights = torch.stack([layer.weights[b, q] for layer in layers])
        if head_reduction == "mean":  # splatting is linear: the heads' mean is one splat of all their points
            locations = locations.transpose(2, 3).flatten(3, 4)[:, :, None]
            weights = weights.transpose(2, 3).flatten(3, 4)[:, :, None] / weights.shape[2]
        maps = deformable_maps(locations, weights, layers[0].level_shapes)
    maps = maps.float().mean(2) if head_reduction == "mean" else maps.float().amax(2)
    return maps / maps.sum((-1, -2), keepdim=True).clamp_min(1e-12)


def fuse_layers(maps: torch.Tensor, fusion: str = "hybrid", mix: float = 0.5,
                layer_weights: Sequence[float] | None = None) -> torch.Tensor:
    """CLHCF over per-layer maps (L, N, h, w), each summing to 1 → (N, h, w) summing to 1."""
    n_layers = maps.shape[0]
    if fusion == "last":
        return maps[-1]
    w = torch.tensor(layer_weights if layer_weights is not None else [l + 1.0 for l in range(n_layers)],
                     dtype=maps.dtype, device=maps.device)
    if w.numel() != n_layers:
        raise SalienceError(f"layer_weights has {w.numel()} values for {n_layers} decoder layers")
    w = (w / w.sum()).view(-1, 1, 1, 1)
    additive = (w * maps).sum(0)
    if fusion == "mean":
        return additive
    eps = 1e-3 / (maps.shape[-1] * maps.shape[-2])
    product = torch.exp((w * torch.log(maps + eps)).sum(0))
    product = product / product.sum((1, 2), keepdim=True)
    if fusion == "product":
        return product
    return (1 - mix) * additive + mix * product


@register
class EIVE(Explainer):
    """EIVE: per-detection maps from decoder cross-attention, fused across layers (CLHCF).

    Parameters
    ----------
    fusion : str
        ``hybrid`` (CLHCF, default), ``mean``, ``product`` or ``last``.
    mix : float
        Weight of the multiplicative consensus in the hybrid, in [0, 1].
    layer_weights : list of float, optional
        One weight per decoder layer; default 1, 2, ..., L (later layers count more).
    head_reduction : str
        ``mean`` or ``max`` over attention heads.
    """

    name: ClassVar[str] = "eive"
    family: ClassVar[str] = "attention"
    tasks: ClassVar[tuple[str, ...]] = ("detection",)

    def __init__(self, fusion: str = "hybrid", mix: float = 0.5, layer_weights: Sequence[float] | None = None,
                 head_reduction: str = "mean"):
        super().__init__(batch_size=None)
        if fusion not in FUSIONS:
            raise SalienceError(f"fusion must be one of {FUSIONS}, got '{fusion}'")
        if head_reduction not in HEAD_REDUCTIONS:
            raise SalienceError(f"head_reduction must be one of {HEAD_REDUCTIONS}, got '{head_reduction}'")
        if not 0.0 <= mix <= 1.0:
            raise SalienceError(f"mix must be in [0, 1], got {mix}")
        self.fusion, self.mix, self.layer_weights, self.head_reduction = fusion, mix, layer_weights, head_reduction

    def __call__(self, model: DetectorModel, x: torch.Tensor, target="all") -> Explanation:
        check_task(self, model)
        check_cross_attention(model, self.name)
        x = x.to(model.device)
        start = time.perf_counter()
        with torch.inference_mode(), model.capture_cross_attention() as record:
            detections = model(x)
        target = resolve_for(model, target, detections)
        if not record.layers:
            raise SalienceError(f"{model.name} recorded no decoder cross-attention during its forward pass")
        per_layer = layer_maps(record.layers, target, self.head_reduction)
        fused = fuse_layers(per_layer, self.fusion, self.mix, self.layer_weights)
        maps = F.interpolate(fused[:, None], size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]
        if model.device.type == "cuda":
            torch.cuda.synchronize(model.device)
        return Explanation(
            maps=maps.float(), image_index=target.image_index, labels=target.labels(), method=self.name,
            params=self.params, seconds=time.perf_counter() - start, scores=target.detection_scores,
            classes=target.classes, boxes=target.boxes, queries=target.queries, model_name=model.name,
        )


def check_cross_attention(model: DetectorModel, method: str) -> None:
    """A clear error, naming the methods that do apply, when EIVE meets a detector without
    exposed cross-attention."""
    if not model.has_cross_attention:
        others = [m for m in available_methods("detection") if m != method
                  and not (m == "chefer_detr" and not model.has_attention) and not m.startswith("_")]
        raise SalienceError(f"{model.name} does not expose decoder cross-attention, which '{method}' reads; "
                            f"methods that explain it: {', '.join(others)}")
