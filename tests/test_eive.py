"""EIVE: splatting, CLHCF fusion and per-detection maps on a detector with known attention."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

import salience as sl
from salience.targets import DetectionTarget
from salience.errors import SalienceError, TargetError
from salience.methods.eive import fuse_layers, splat_levels
from salience.models.detection import (CrossAttentionRecord, DeformableAttention, DetectorModel, Detections,
                                       GridAttention)
from salience.preprocessing import Preprocess


def splat(locations, weights, shape):
    """One level of `splat_levels`."""
    return splat_levels(locations[..., None, :, :], weights[..., None, :], [shape])[0]


def test_splat_at_a_cell_centre_lands_in_that_cell():
    loc = torch.tensor([[[(2 + 0.5) / 4, (1 + 0.5) / 3]]])  # x cell 2, y cell 1
    out = splat(loc, torch.ones(1, 1), (3, 4))
    expected = torch.zeros(3, 4)
    expected[1, 2] = 1
    assert torch.allclose(out[0], expected)


def test_splat_between_four_centres_shares_equally_and_drops_mass_outside():
    between = torch.tensor([[[2 / 4, 1 / 2]]])  # the corner shared by cells (0..1, 1..2)
    out = splat(between, torch.tensor([[2.0]]), (2, 4))[0]
    assert torch.allclose(out[:, 1:3], torch.full((2, 2), 0.5))
    assert out.sum() == pytest.approx(2.0)
    corner = splat(torch.tensor([[[0.0, 0.0]]]), torch.ones(1, 1), (2, 2))[0]
    assert corner.sum() == pytest.approx(0.25)  # three of the four neighbours are outside


def test_levels_splatted_together_equal_each_level_alone():
    torch.manual_seed(0)
    locations, weights = torch.rand(2, 3, 2, 5, 2) * 1.2 - 0.1, torch.rand(2, 3, 2, 5)
    shapes = [(6, 8), (3, 4)]
    together = splat_levels(locations, weights, shapes)
    for level, shape in enumerate(shapes):
        alone = splat(locations[..., level, :, :], weights[..., level, :], shape)
        torch.testing.assert_close(together[level], alone)
    assert [m.shape for m in together] == [(2, 3, 6, 8), (2, 3, 3, 4)]


def test_fusion_closed_forms():
    a = torch.tensor([[0.5, 0.5, 0.0, 0.0]]).view(1, 1, 2, 2)
    b = torch.tensor([[0.0, 0.5, 0.5, 0.0]]).view(1, 1, 2, 2)
    maps = torch.cat([a, b])  # (L=2, N=1, 2, 2)
    assert torch.equal(fuse_layers(maps, "last"), b[0])
    mean = fuse_layers(maps, "mean", layer_weights=[1, 1])
    assert torch.allclose(mean.flatten(), torch.tensor([0.25, 0.5, 0.25, 0.0]))
    product = fuse_layers(maps, "product", layer_weights=[1, 1])
    eps = 1e-3 / 4  # 1e-3 of a uniform map's value
    geometric = ((a + eps) * (b + eps)).sqrt()[0]
    assert torch.allclose(product, geometric / geometric.sum())
    assert product.flatten()[1] > 0.95  # the cell both layers agree on dominates
    hybrid = fuse_layers(maps, "hybrid", mix=0.5, layer_weights=[1, 1])
    assert torch.allclose(hybrid, 0.5 * mean + 0.5 * product)
    weighted = fuse_layers(maps, "mean")  # default weights 1, 2: the later layer counts more
    assert torch.allclose(weighted.flatten(), torch.tensor([1 / 6, 0.5, 1 / 3, 0.0]))


class GridToyDetector(nn.Module):
    """Q=3 queries over a 4×4 grid; query q attends to cell (q, q) in every layer.

    Query 0 and 2 are confident detections (class 1 and 0), query 1 is background.
    """

    def __init__(self, layers: int = 2):
        super().__init__()
        self.layers = layers
        self.record: CrossAttentionRecord | None = None

    def forward(self, x):
        b = x.shape[0]
        weights = torch.zeros(b, 2, 3, 4, 4)
        for q in range(3):
            weights[:, :, q, q, q] = 1
        if self.record is not None:
            self.record.layers.extend(GridAttention(weights.clone()) for _ in range(self.layers))
        probs = torch.tensor([[0.1, 0.9], [0.2, 0.1], [0.8, 0.1]]).expand(b, 3, 2)
        boxes = torch.tensor([[0.0, 0, 8, 8], [8, 8, 16, 16], [16, 16, 32, 32]]).expand(b, 3, 4)
        return {"probs": probs + 0 * x.mean(), "boxes": boxes}


@contextlib.contextmanager
def grid_capture(module):
    module.record = CrossAttentionRecord()
    try:
        yield module.record
    finally:
        module.record = None


def toy_detector(capture=grid_capture) -> DetectorModel:
    def decode(raw, size):
        return Detections(boxes=raw["boxes"], probs=raw["probs"], logits=raw["probs"].log())

    return DetectorModel(GridToyDetector(), Preprocess(size=(32, 32), mean=(0.5,) * 3, std=(0.5,) * 3),
                         class_names=["square", "circle"], decode=decode, cross_attention=capture,
                         score_threshold=0.5, name="toy")


def test_eive_maps_peak_on_each_querys_cell_one_map_per_detection():
    model = toy_detector()
    expl = sl.explain(model, torch.zeros(2, 3, 32, 32), "eive")
    assert expl.image_index.tolist() == [0, 0, 1, 1]
    assert expl.labels[0] == "circle 0.90 (query 0)" and expl.labels[1] == "square 0.80 (query 2)"
    assert expl.boxes.shape == (4, 4) and expl.classes.tolist() == [1, 0, 1, 0]
    for row, q in enumerate([0, 2, 0, 2]):
        peak = int(expl.maps[row].argmax())
        assert (peak // 32) // 8 == q and (peak % 32) // 8 == q  # inside grid cell (q, q) of 8-px cells
    assert model.module.record is None  # nothing left attached


def test_detection_target_errors_are_clear():
    model = toy_detector()
    with pytest.raises(TargetError, match="detection 5 out of range: image 0 has 2 detections"):
        sl.explain(model, torch.zeros(1, 3, 32, 32), "eive", target=5)
    model.score_threshold = 0.95
    with pytest.raises(TargetError, match="no detections above the score threshold"):
        sl.explain(model, torch.zeros(1, 3, 32, 32), "eive")
    blind = toy_detector(capture=None)
    with pytest.raises(SalienceError, match="does not expose decoder cross-attention.*methods that explain it: .*drise.*gradcam.*odam"):
        sl.explain(blind, torch.zeros(1, 3, 32, 32), "eive")


def test_detection_target_scores_the_querys_class_probability():
    model = toy_detector()
    dets = model(torch.zeros(2, 3, 32, 32))
    t = DetectionTarget(torch.tensor([0, 1]), torch.tensor([2, 0]), torch.tensor([0, 1]))
    assert torch.allclose(t.score(dets.index(t.image_index), torch.arange(2)), torch.tensor([0.8, 0.9]))


def test_eive_on_deformable_attention_splats_sampling_points():
    class DeformableToy(GridToyDetector):
        def forward(self, x):
            out = super().forward(x)
            if self.record is not None:
                self.record.layers.clear()
                b = x.shape[0]
                # 3 queries, 1 head, 2 levels (4x4 and 2x2), 1 point each, at query-specific places
                loc = torch.zeros(b, 3, 1, 2, 1, 2)
                for q, (cx, cy) in enumerate([(0.125, 0.125), (0.5, 0.5), (0.875, 0.875)]):
                    loc[:, q, 0, :, 0] = torch.tensor([cx, cy])
                w = torch.full((b, 3, 1, 2, 1), 0.5)
                self.record.layers.append(DeformableAttention(loc, w, [(4, 4), (2, 2)]))
            return out

    model = toy_detector()
    model.module = DeformableToy()
    expl = sl.explain(model, torch.zeros(1, 3, 32, 32), "eive", fusion="last")
    top_left, bottom_right = expl.maps[0], expl.maps[1]
    assert top_left[:8, :8].mean() > 3 * top_left[16:, 16:].mean()
    assert bottom_right[24:, 24:].mean() > 3 * bottom_right[:16, :16].mean()


def test_gradient_methods_take_detection_targets_through_the_common_path():
    """A generic method on a detector explains each kept detection's class probability."""
    model = toy_detector()
    expl = sl.explain(model, torch.rand(2, 3, 32, 32), "saliency")
    assert expl.image_index.tolist() == [0, 0, 1, 1]
    assert torch.allclose(expl.scores, torch.tensor([0.9, 0.8, 0.9, 0.8]))
    assert expl.classes.tolist() == [1, 0, 1, 0] and expl.boxes.shape == (4, 4)
