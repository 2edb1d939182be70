"""D-RISE: black-box maps for detections (Petsiuk et al., CVPR 2021).

The image is multiplied by N random smooth masks (RISE's masks, `masks.rise_masks`, with a
finer grid: s = 16). For each masked image the detector's detections are compared with the
explained detection; the weight of the mask is the best similarity over the masked image's
detections, and the map is the weighted sum of the masks.

Similarity (`detection_similarity`) of the target detection d_t = (L_t, P_t, O_t) to a
detection d_j of the masked image::

    s(d_t, d_j) = IoU(L_t, L_j) · cos(P_t, P_j) · O_j

L: boxes; O: objectness where the detector predicts it (else the factor is 1); P: the class
vector, the K class probabilities followed by the background share 1 − Σ_k p_k. For a softmax
DETR that share is exactly the no-object probability (`Detections.probs` leaves it out), the
counterpart of the background class in the paper's Faster R-CNN vectors; without it the
cosine, blind to scale, would not see an object fade into no-object. For sigmoid detectors
(deformable DETR) it is the remainder clamped at 0.

Normalisation (documented decision): the paper defines H = Σ_i w_i M_i; we divide by N·p1
as RISE's code does. It is a constant factor, so the normalised map is the paper's, and the
raw values do not grow with N. (The xaitk-saliency implementation instead divides per pixel
by Σ_i M_i and max-abs scales.)

All target rows of one image share each masked forward pass: the cost is N forwards per
image, whatever the number of detections explained.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ..errors import SalienceError
from ..models.detection import Detections, DetectorModel
from ..targets import DetectionTarget
from .base import Explainer, register
from .masks import rise_masks
from .perturbation import pixel_fill


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of (x0, y0, x1, y1) boxes ``a`` (..., 4) and ``b`` (..., 4), broadcast → (...)."""
    lo = torch.maximum(a[..., :2], b[..., :2])
    hi = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (hi - lo).clamp_min(0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp_min(0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp_min(0).prod(-1)
    return inter / (area_a + area_b - inter).clamp_min(1e-12)


def class_vectors(probs: torch.Tensor) -> torch.Tensor:
    """(..., K) class probabilities → (..., K + 1) with the background share 1 − Σ p appended."""
    background = (1 - probs.sum(-1, keepdim=True)).clamp_min(0)
    return torch.cat([probs, background], -1)


def detection_similarity(target_box: torch.Tensor, target_probs: torch.Tensor, detections: Detections) -> torch.Tensor:
    """D-RISE similarity of a target detection to every query of ``detections``.

    Parameters
    ----------
    target_box : (..., 4) tensor
        The target's box in input pixels.
    target_probs : (..., K) tensor
        The target's class probabilities (all K classes, as in `Detections.probs`).
    detections : Detections
        B images' predictions, boxes (B, Q, 4), probs (B, Q, K).

    Returns
    -------
    (..., Q) tensor: IoU · cosine of class vectors · objectness, where the leading ``...`` of
    the target broadcasts against B (a (B, 4) target gives (B, Q): row b against image b; a
    (R, 1, 4) target gives (R, B, Q): every target against every image).
    """
    boxes, probs = detections.boxes.float(), detections.probs.float()
    iou = box_iou(target_box.float().unsqueeze(-2), boxes)
    target_vec = class_vectors(target_probs.float()).unsqueeze(-2)
    cosine = torch.nn.functional.cosine_similarity(target_vec, class_vectors(probs), dim=-1, eps=1e-12)
    similarity = iou * cosine
    if detections.objectness is not None:
        similarity = similarity * detections.objectness.float()
    return similarity


def best_match_similarity(target_box: torch.Tensor, target_probs: torch.Tensor, detections: Detections) -> torch.Tensor:
    """(B,): for row b, the highest similarity among image b's detections (the D-RISE weight)."""
    return detection_similarity(target_box, target_probs, detections).amax(-1)


def target_vectors(model: DetectorModel, x: torch.Tensor, target: DetectionTarget) -> tuple[torch.Tensor, torch.Tensor]:
    """The target rows' boxes (N, 4) and class probabilities (N, K) on their clean images.

    ``x`` holds one input per target row (rows of the same image are identical); each distinct
    image runs through the detector once.
    """
    first = first_rows(target.image_index)
    with torch.inference_mode():
        clean = model(x[torch.tensor(list(first.values()), device=x.device)])
    local = torch.tensor([list(first).index(int(i)) for i in target.image_index], device=x.device)
    queries = target.queries.to(x.device)
    return clean.boxes[local, queries].float(), clean.probs[local, queries].float()


def first_rows(image_index: torch.Tensor) -> dict[int, int]:
    """{image: first row explaining it}, in order of first appearance."""
    first: dict[int, int] = {}
    for row, image in enumerate(image_index.tolist()):
        first.setdefault(int(image), row)
    return first


@register
class DRISE(Explainer):
    """D-RISE: random masks weighted by how well the masked image still has the detection.

    Parameters
    ----------
    n_masks, grid_size, p1, seed :
        Number of masks N (paper: 5000), grid size s (16), keep probability (0.5), and
        the masks' seed (the same masks on every device and for every batch size).
    batch_size : int or None
        Masked images per forward pass; None: 1 on CPU (larger batches measured slower per
        mask there: 27, 25, 14 masks/s at 1, 4, 16), 32 on GPU.
    """

    name: ClassVar[str] = "drise"
    aliases: ClassVar[tuple[str, ...]] = ("d_rise",)
    family: ClassVar[str] = "perturbation"
    tasks: ClassVar[tuple[str, ...]] = ("detection",)

    def __init__(self, n_masks: int = 5000, grid_size: int = 16, p1: float = 0.5, seed: int = 0,
                 batch_size: int | None = None):
        super().__init__(batch_size=batch_size)
        if n_masks < 1 or grid_size < 1:
            raise SalienceError("n_masks and grid_size must be >= 1")
        if not 0.0 < p1 <= 1.0:
            raise SalienceError(f"p1 must be in (0, 1], got {p1}")
        self.n_masks, self.grid_size, self.p1, self.seed = n_masks, grid_size, p1, seed

    def masks_per_forward(self, device: torch.device) -> int:
        """Masked images per detector forward: ``batch_size``, else 1 on CPU (batching does not
        pay there, docs/benchmarks.md) and 32 on GPU."""
        return self.batch_for(device, cpu=1, gpu=32)

    def attribute(self, model: DetectorModel, x: torch.Tensor, target: DetectionTarget) -> torch.Tensor:
        check_detection_target(model, target, self.name)
        n, _, h, w = x.shape
        boxes, probs = target_vectors(model, x, target)
        groups = [(row, (target.image_index == image).nonzero()[:, 0].to(x.device))
                  for image, row in first_rows(target.image_index).items()]
        fill = pixel_fill(model, 0.0, x.device)
        saliency = torch.zeros(n, h * w, device=x.device)
        batch = self.masks_per_forward(x.device)
        with torch.inference_mode():
            for mask in rise_masks(self.n_masks, (h, w), self.grid_size, self.p1, self.seed, batch, x.device):
                flat = mask.flatten(1)  # (m, H·W)
                for first, rows in groups:
                    detections = model(torch.addcmul(fill, x[first : first + 1].float() - fill, mask))
                    weights = best_match_similarity(boxes[rows, None], probs[rows, None], detections)  # (R, m)
                    saliency[rows] += weights @ flat
        return (saliency / (self.n_masks * self.p1)).view(n, h, w)


def check_detection_target(model, target, method: str) -> None:
    """A clear error unless ``target`` is a detection target (the task is checked by `check_task`)."""
    if not isinstance(target, DetectionTarget):
        raise SalienceError(f"'{method}' needs detection targets, got {type(target).__name__}")
