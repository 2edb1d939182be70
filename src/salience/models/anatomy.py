"""Where a transformer keeps its tokens: patch size, token grid, prefix tokens, blocks.

Explainers read a model's `TokenAnatomy` (``model.anatomy``; None for CNNs) instead of
asking users for a ``reshape_transform``: token features are turned into (B, C, h, w) maps
by `TokenAnatomy.to_spatial`, and attention methods learn the grid and the prefix tokens
(class, distillation, register) from it. Adapters (timm, Hugging Face, open_clip, the
project's own models) fill it in when a model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class TokenAnatomy:
    """The token layout of a vision transformer.

    Parameters
    ----------
    patch_size : (int, int)
        Input pixels per token along height and width (for hybrids: the backbone stride).
    prefix_tokens : int
        Tokens before the patch grid (class, distillation, register tokens); 0 for none.
    blocks : list of str
        Dotted module names of the transformer blocks, in order (their output: token features).
    attentions : list of str
        Dotted module names of each block's self-attention module, in block order.
    layout : str
        ``"tokens"``: features are (B, prefix + h·w, C); ``"nhwc"``: (B, h, w, C) as in Swin.
    hierarchical : bool
        True when the grid changes between blocks (Swin): single-grid attention methods
        (rollout, Chefer) do not apply, CAMs do.
    cam_layer : str, optional
        The layer CAM methods use by default (the last block's first norm for ViTs);
        `Model.cam_layer_name` prefers it to searching for a spatial output.
    """

    patch_size: tuple[int, int]
    prefix_tokens: int
    blocks: list[str] = field(default_factory=list)
    attentions: list[str] = field(default_factory=list)
    layout: str = "tokens"
    hierarchical: bool = False
    cam_layer: str | None = None

    def grid(self, input_size: tuple[int, int]) -> tuple[int, int]:
        """The (h, w) patch grid for an input of this (H, W)."""
        return input_size[0] // self.patch_size[0], input_size[1] // self.patch_size[1]

    def to_spatial(self, features: torch.Tensor) -> torch.Tensor:
        """Token features -> (B, C, h, w): prefix tokens dropped, grid restored.

        (B, C, h, w) maps pass through, so CNN layers and hybrids need no special case.
        For a non-square token count the grid is taken as square; pass (B, N, C) features
        of an input whose grid is known through `tokens_to_grid` instead.
        """
        if features.dim() == 4 and self.layout == "nhwc":
            return features.permute(0, 3, 1, 2)
        if features.dim() == 4:
            return features
        n = features.shape[1] - self.prefix_tokens
        side = int(round(n**0.5))
        if side * side != n:
            raise ValueError(f"{n} patch tokens do not form a square grid; use tokens_to_grid with the grid")
        return self.tokens_to_grid(features, (side, side))

    def maps(self, features: torch.Tensor, input_size: tuple[int, int]) -> torch.Tensor:
        """Any layer's features -> (B, C, h, w), the token grid taken from the input's (H, W).

        (B, prefix + h·w, C) tokens use `grid`; NHWC and (B, C, h, w) maps go through
        `to_spatial`.
        """
        if features.dim() == 3:
            return self.tokens_to_grid(features, self.grid(input_size))
        return self.to_spatial(features)

    def tokens_to_grid(self, features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """(B, prefix + h·w, C) -> (B, C, h, w) for a known grid."""
        patches = features[:, self.prefix_tokens:]
        b, n, c = patches.shape
        if n != grid[0] * grid[1]:
            raise ValueError(f"{n} patch tokens do not match the grid {grid}")
        return patches.transpose(1, 2).reshape(b, c, *grid)
