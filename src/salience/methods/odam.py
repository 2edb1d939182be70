"""ODAM: gradient maps for single detections (Zhao et al., ICLR 2023).

On a feature map A (N, C, h, w) of the detector (``layer``, default the model's CAM layer),
the map of one predicted output y of one detection is

    H = relu(Σ_k ∂y/∂A_k ⊙ A_k)

with the gradient kept element-wise: unlike Grad-CAM, which averages ∂y/∂A_k over the map
and so spreads one detection's weights over every object showing the same channels, ODAM
keeps where the gradient is, which is what makes the map instance-specific.

y is the detection's class probability (``outputs="class"``), its box coordinates x0, y0,
x1, y1 in input pixels (``"box"``: four maps), or all five (``"both"``). Maps of several
outputs are combined by their element-wise maximum, as in the paper; because a pixel
coordinate and a probability have different scales, each output's map is first divided by
its own maximum (our decision, documented: the paper does not say how it scales them). With
one output the raw map is returned.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ..errors import LayerNotFoundError, SalienceError
from ..hooks import capture_layer, frozen_parameters
from ..models.detection import Detections, DetectorModel
from ..targets import DetectionTarget
from .base import batches, register
from .cam import CamExplainer, _captured, combine
from .drise import check_detection_target

OUTPUTS = ("class", "box", "both")


@register
class ODAM(CamExplainer):
    """ODAM: element-wise gradient × activation for one detection's class score and/or box.

    Parameters
    ----------
    layer : str, optional
        Dotted name of the feature map's layer; default ``model.cam_layer``.
    outputs : str
        ``class`` (default), ``box`` or ``both``.
    batch_size : int or None
        Detections per backward pass.
    """

    name: ClassVar[str] = "odam"
    tasks: ClassVar[tuple[str, ...]] = ("detection",)

    def __init__(self, layer: str | None = None, outputs: str = "class", batch_size: int | None = 32):
        super().__init__(layer=layer, batch_size=batch_size)
        if outputs not in OUTPUTS:
            raise SalienceError(f"outputs must be one of {OUTPUTS}, got '{outputs}'")
        self.outputs = outputs

    def attribute(self, model: DetectorModel, x: torch.Tensor, target: DetectionTarget) -> torch.Tensor:
        check_detection_target(model, target, self.name)
        layer = model.cam_layer if self.layer is None else model.layer(self.layer)
        rows = torch.arange(x.shape[0], device=x.device)
        chunks = batches(x.shape[0], self.batch_for(x.device, cpu=32, gpu=32))
        return torch.cat([self._maps(model, layer, x[c], target, rows[c]) for c in chunks])

    def _maps(self, model, layer, x, target, rows) -> torch.Tensor:
        with frozen_parameters(model.module), capture_layer(layer, requires_grad=True) as cap, torch.enable_grad():
            outputs = self._explained(model(x), target, rows)
            activations = _captured(cap, layer)
            if not outputs[0].requires_grad:
                raise LayerNotFoundError("the detection's outputs do not depend on the chosen layer's output")
            maps = []
            for i, y in enumerate(outputs):
                (gradients,) = torch.autograd.grad(y.sum(), activations, retain_graph=i < len(outputs) - 1)
                maps.append(combine(activations.detach(), gradients, x.shape[-2:]))
        if len(maps) == 1:
            return maps[0]
        stacked = torch.stack(maps)
        return (stacked / stacked.amax((2, 3), keepdim=True).clamp_min(1e-30)).amax(0)

    def _explained(self, detections: Detections, target: DetectionTarget, rows: torch.Tensor) -> list[torch.Tensor]:
        """The outputs y, each (n,): the class probability and/or the four box coordinates."""
        outputs = []
        if self.outputs in ("class", "both"):
            outputs.append(target.score(detections, rows))
        if self.outputs in ("box", "both"):
            sample = torch.arange(len(rows), device=detections.boxes.device)
            boxes = detections.boxes[sample, target.queries[rows.cpu()].to(sample.device)]
            outputs.extend(boxes.unbind(-1))
        return outputs
