"""`explain`: the one-call entry point (model + images + method + target -> Explanation)."""

from __future__ import annotations

from typing import Any

import torch

from .explanation import Explanation
from .images import ImageBatch, load_images
from .methods import Explainer, get_explainer
from .models.model import Model


def explain(
    model: Model, images: Any, method: "str | Explainer" = "gradcam", target: Any = "top1", **params
) -> Explanation:
    """Explain ``model``'s output on ``images`` with ``method``.

    ``images`` is an `ImageBatch` (from `load_images`), a path, a list of paths or arrays,
    or an already preprocessed (B, 3, H, W) tensor. ``params`` go to the method.
    """
    explainer = method if isinstance(method, Explainer) else get_explainer(method, **params)
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        return explainer(model, images, target)
    batch = images if isinstance(images, ImageBatch) else load_images(images)
    x, geometries = model.prepare(batch)
    expl = explainer(model, x, target)
    expl.images, expl.geometries = batch, geometries
    return expl

