"""`Explanation`: the maps a method produced, with everything needed to read them.

Maps stay raw (float32, on the model's device, at input resolution). One row per target
row: ``image_index[r]`` says which image row r explains, so ``topk`` targets or one map per
detection fit the same structure.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .images import ImageBatch
from .preprocessing import Geometry


@dataclass
class Explanation:
    """Saliency maps with their targets, scores, method and cost.

    Attributes
    ----------
    maps : Tensor (N, H, W)
        Raw maps, float32, on the model's device.
    image_index : Tensor (N,)
        The image each map explains.
    labels : list of str
        A human label of each map's target (class name, prompt, detection).
    scores : Tensor (N,) or None
        The target's score on the unperturbed image (a logit for classes).
    probabilities : Tensor (N,) or None
        The target class's softmax probability, for classifiers.
    classes : Tensor (N,) or None
        The target class index of each map, where targets are classes.
    boxes : Tensor (N, 4) or None
        The explained detection's box (x0, y0, x1, y1) in input pixels, for detectors.
    queries : Tensor (N,) or None
        The explained detection's query index, for detectors (metrics re-score that query).
    method, params, seconds
        Which method made the maps, with which parameters, and how long it took.
    images, geometries
        The photos and where each went in the model input, to draw maps on the originals.
    """

    maps: torch.Tensor
    image_index: torch.Tensor
    labels: list[str]
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    scores: torch.Tensor | None = None
    probabilities: torch.Tensor | None = None
    classes: torch.Tensor | None = None
    boxes: torch.Tensor | None = None
    queries: torch.Tensor | None = None
    images: ImageBatch | None = None
    geometries: list[Geometry] | None = None
    model_name: str = ""

    def __len__(self) -> int:
        return self.maps.shape[0]

    def normalized(self) -> "Explanation":
        """Each map min-max scaled to [0, 1] (a constant map becomes all zeros)."""
        m = self.maps
        flat = m.reshape(m.shape[0], -1)
        lo = flat.min(1).values.view(-1, 1, 1)
        hi = flat.max(1).values.view(-1, 1, 1)
        span = hi - lo
        out = torch.where(span > 0, (m - lo) / span.clamp_min(1e-12), torch.zeros_like(m))
        return replace(self, maps=out)

    def upsampled(self, size: tuple[int, int]) -> "Explanation":
        """Maps bilinearly resized to ``size`` = (H, W)."""
        out = F.interpolate(self.maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
        return replace(self, maps=out)

    def original_maps(self, fill: float = 0.0) -> list[torch.Tensor]:
        """Each map on its original photo's pixel grid (sizes differ, hence a list)."""
        if self.geometries is None:
            raise ValueError("this explanation has no image geometry; explain images loaded with load_images")
        return [self.geometries[int(i)].map_to_original(m, fill) for m, i in zip(self.maps, self.image_index)]

    def to_numpy(self) -> np.ndarray:
        return self.maps.detach().float().cpu().numpy()

    def save(self, directory: str | os.PathLike) -> list[str]:
        """Write an overlay PNG, the raw map (.npy) and a JSON record per map; return the paths."""
        from .viz import save_explanation

        return save_explanation(self, directory)
