"""DETR's set criterion: Hungarian matching of queries to objects, then class and box losses.

Following DETR (Carion et al., 2020) and, for sigmoid classifiers, Deformable DETR
(Zhu et al., 2021):

- matching cost per (query, object): ``class_cost · C_cls + l1_cost · |b − b̂|₁ −
  giou_cost · GIoU(b, b̂)``; C_cls is −p(class) for softmax heads, the focal-loss
  difference for sigmoid heads; solved per image with `scipy.optimize.linear_sum_assignment`;
- losses: cross-entropy over K + 1 classes with the no-object class weighted
  ``no_object_weight`` (softmax) or sigmoid focal loss (α = 0.25, γ = 2, normalised by the
  number of objects); L1 and 1 − GIoU on matched boxes (normalised cx, cy, w, h);
- the same loss on every earlier decoder layer's output (auxiliary losses), each matched on
  its own.

Optional AAJTS term (seed 000's attention-aware joint training, our form): the share of each
matched query's cross-attention mass that falls outside its object's box, averaged over
layers, heads and objects, weighted ``attention_weight``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), -1)


def box_iou_union(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairwise IoU and union of xyxy boxes (n, 4) × (m, 4)."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / union.clamp(min=1e-9), union


def generalized_box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise generalised IoU (Rezatofighi et al., 2019) of xyxy boxes (n, 4) × (m, 4)."""
    iou, union = box_iou_union(a, b)
    lt = torch.min(a[:, None, :2], b[None, :, :2])
    rb = torch.max(a[:, None, 2:], b[None, :, 2:])
    hull = (rb - lt).clamp(min=0).prod(-1)
    return iou - (hull - union) / hull.clamp(min=1e-9)


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Element-wise focal loss (Lin et al., 2017) of sigmoid logits against 0/1 targets."""
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    return (alpha * targets + (1 - alpha) * (1 - targets)) * loss


@dataclass(frozen=True)
class SetCriterion:
    """DETR's matching and losses for one output format.

    Attributes
    ----------
    sigmoid : bool
        Sigmoid per class with focal loss (Deformable DETR) or softmax over K + 1 (DETR).
    class_cost, l1_cost, giou_cost : float
        Matching cost weights.
    class_weight, l1_weight, giou_weight : float
        Loss weights.
    no_object_weight : float
        Softmax only: weight of the no-object class in the cross-entropy.
    attention_weight : float
        AAJTS: weight of the attention-mass-outside-the-box term (0: off).
    """

    sigmoid: bool = False
    class_cost: float = 2.0
    l1_cost: float = 5.0
    giou_cost: float = 2.0
    class_weight: float = 2.0
    l1_weight: float = 5.0
    giou_weight: float = 2.0
    no_object_weight: float = 0.1
    attention_weight: float = 0.0

    @torch.no_grad()
    def match(self, logits: torch.Tensor, boxes: torch.Tensor, targets: list[dict]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per image, (query indices, object indices) of the optimal assignment."""
        from scipy.optimize import linear_sum_assignment

        out = []
        for b, t in enumerate(targets):
            labels, gt = t["labels"], t["boxes"]
            if len(labels) == 0:
                empty = torch.zeros(0, dtype=torch.long)
                out.append((empty, empty))
                continue
            if self.sigmoid:
                p = logits[b].sigmoid()[:, labels]
                pos = 0.25 * (1 - p) ** 2 * -(p + 1e-8).log()
                neg = 0.75 * p ** 2 * -(1 - p + 1e-8).log()
                cls = pos - neg
            else:
                cls = -logits[b].softmax(-1)[:, labels]
            l1 = torch.cdist(boxes[b], gt, p=1)
            giou = generalized_box_iou(cxcywh_to_xyxy(boxes[b]), cxcywh_to_xyxy(gt))
            cost = self.class_cost * cls + self.l1_cost * l1 - self.giou_cost * giou
            q, o = linear_sum_assignment(cost.float().cpu().numpy())
            out.append((torch.as_tensor(q, dtype=torch.long), torch.as_tensor(o, dtype=torch.long)))
        return out

    def layer_loss(self, logits: torch.Tensor, boxes: torch.Tensor, targets: list[dict],
                   matches: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Class, L1 and GIoU losses of one decoder layer's output (B, Q, ·)."""
        b_idx = torch.cat([torch.full_like(q, b) for b, (q, _) in enumerate(matches)])
        q_idx = torch.cat([q for q, _ in matches])
        matched_labels = torch.cat([t["labels"][o] for t, (_, o) in zip(targets, matches)]).to(logits.device)
        matched_boxes = torch.cat([t["boxes"][o] for t, (_, o) in zip(targets, matches)]).to(boxes.device)
        n_objects = max(1, len(matched_labels))
        if self.sigmoid:
            onehot = torch.zeros_like(logits)
            onehot[b_idx, q_idx, matched_labels] = 1.0
            cls = sigmoid_focal_loss(logits, onehot).sum() / n_objects
        else:
            classes = torch.full(logits.shape[:2], logits.shape[-1] - 1, dtype=torch.long, device=logits.device)
            classes[b_idx, q_idx] = matched_labels
            weight = torch.ones(logits.shape[-1], device=logits.device)
            weight[-1] = self.no_object_weight
            cls = F.cross_entropy(logits.flatten(0, 1), classes.flatten(), weight=weight)
        pred = boxes[b_idx, q_idx]
        l1 = (pred - matched_boxes).abs().sum() / n_objects
        giou = (1 - torch.diag(generalized_box_iou(cxcywh_to_xyxy(pred), cxcywh_to_xyxy(matched_boxes)))).sum() / n_objects
        return {"class": cls, "l1": l1, "giou": giou}

    def __call__(self, output: dict, targets: list[dict], attention: list[torch.Tensor] | None = None
                 ) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss over the final and auxiliary outputs, and its parts (final layer) as floats.

        ``attention``: per decoder layer, the (B, Q, h, w) head-averaged cross-attention maps,
        needed when ``attention_weight`` > 0.
        """
        layers = [*output.get("aux", []), {"logits": output["logits"], "boxes": output["boxes"]}]
        total, parts, last_matches = 0.0, {}, None
        for layer in layers:
            matches = self.match(layer["logits"], layer["boxes"], targets)
            parts = self.layer_loss(layer["logits"], layer["boxes"], targets, matches)
            total = total + self.class_weight * parts["class"] + self.l1_weight * parts["l1"] + self.giou_weight * parts["giou"]
            last_matches = matches
        scalars = {k: float(v.detach()) for k, v in parts.items()}
        if self.attention_weight > 0:
            outside = attention_outside_boxes(attention, targets, last_matches)
            total = total + self.attention_weight * outside
            scalars["attention_outside"] = float(outside.detach())
        return total, scalars


def box_masks(boxes: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """(n, h, w) soft masks of normalised cxcywh boxes on an h×w grid: each cell's covered fraction."""
    h, w = shape
    xyxy = cxcywh_to_xyxy(boxes).clamp(0, 1)
    xs = torch.arange(w, dtype=boxes.dtype, device=boxes.device)
    ys = torch.arange(h, dtype=boxes.dtype, device=boxes.device)
    cover_x = ((xyxy[:, 2:3] * w).clamp(max=xs + 1) - (xyxy[:, 0:1] * w).clamp(min=xs)).clamp(min=0, max=1)
    cover_y = ((xyxy[:, 3:4] * h).clamp(max=ys + 1) - (xyxy[:, 1:2] * h).clamp(min=ys)).clamp(min=0, max=1)
    return cover_y[:, :, None] * cover_x[:, None, :]


def attention_outside_boxes(attention: list[torch.Tensor], targets: list[dict],
                            matches: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """AAJTS: mean share of the matched queries' attention outside their objects' boxes.

    ``attention``: per layer (B, Q, h, w) maps summing to 1 over the grid.
    """
    b_idx = torch.cat([torch.full_like(q, b) for b, (q, _) in enumerate(matches)])
    q_idx = torch.cat([q for q, _ in matches])
    if len(q_idx) == 0:
        return attention[0].sum() * 0
    gt = torch.cat([t["boxes"][o] for t, (_, o) in zip(targets, matches)]).to(attention[0].device)
    inside = box_masks(gt, tuple(attention[0].shape[-2:]))
    shares = [1 - (a[b_idx, q_idx] * inside).sum((-1, -2)) for a in attention]
    return torch.stack(shares).mean()
