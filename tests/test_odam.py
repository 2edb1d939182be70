"""ODAM, Grad-CAM and Grad-CAM++ on detection targets: closed forms on the RegionDetector toy.

On a white 32×32 image the toy's feature map is A = 1 (two channels, full resolution) and
query q's probability p = sigmoid(12 (v − 0.5)) with v = (mean of A over q's quadrant + 1)/2,
so ∂p/∂A = p (1 − p) · 12 · ½ / (2 · 256) on the quadrant and 0 elsewhere.
"""

from __future__ import annotations

import math

import pytest
import torch

import salience as sl
from salience.errors import SalienceError

from .toys import region_detector, tiny_model

P = 1 / (1 + math.exp(-6))  # v = 1 on a white image
GRAD = P * (1 - P) * 6 / 512  # ∂p/∂A per pixel and channel inside the quadrant


def white():
    return torch.ones(1, 3, 32, 32)


def test_odam_is_elementwise_gradient_times_activation_on_the_instance_only():
    expl = sl.explain(region_detector(), white(), "odam")
    top_left, bottom_right = expl.maps
    expected = torch.zeros(32, 32)
    expected[:16, :16] = 2 * GRAD  # Σ over two channels of g · A, A = 1
    assert torch.allclose(top_left, expected, rtol=1e-4, atol=1e-9)
    assert torch.allclose(bottom_right, expected.flip(0, 1), rtol=1e-4, atol=1e-9)


def test_gradcam_pools_the_gradient_so_its_map_is_not_instance_specific():
    expl = sl.explain(region_detector(), white(), "gradcam")
    # w_k = mean of g_k over the 32×32 map = GRAD / 4; map = relu(Σ_k w_k A_k) = GRAD / 2 everywhere
    assert torch.allclose(expl.maps, torch.full((2, 32, 32), GRAD / 2), rtol=1e-4)
    assert expl.labels == ["square 1.00 (query 0)", "circle 1.00 (query 1)"]


def test_gradcam_pp_takes_detection_targets():
    expl = sl.explain(region_detector(), white(), "gradcam_pp")
    # α = 1 / (2 + Σ_ab A · g) where g > 0 (256 positions), w = Σ α g, map = Σ_k w_k A_k
    alpha = 1 / (2 + 1024 * GRAD)
    assert torch.allclose(expl.maps, torch.full((2, 32, 32), 2 * 256 * alpha * GRAD), rtol=1e-4)


def test_odam_box_outputs_and_their_max():
    model = region_detector()
    # only the right edge x1 = 12 + 4 v moves (∂x1/∂A = 4 · ½ / 512 on the quadrant); the other
    # three coordinates give zero maps; four outputs → each scaled to max 1, then the max
    box = sl.explain(model, white(), "odam", outputs="box").maps
    quadrant = torch.zeros(32, 32)
    quadrant[:16, :16] = 1
    assert torch.allclose(box[0], quadrant, atol=1e-5)
    assert torch.allclose(box[1], quadrant.flip(0, 1), atol=1e-5)
    x = torch.rand(1, 3, 32, 32)
    cls = sl.explain(model, x, "odam").maps
    box = sl.explain(model, x, "odam", outputs="box").maps
    both = sl.explain(model, x, "odam", outputs="both").maps
    scaled = cls / cls.amax((1, 2), keepdim=True)
    assert torch.allclose(both, torch.maximum(scaled, box), atol=1e-6)


def test_odam_errors():
    with pytest.raises(SalienceError, match="outputs must be one of"):
        sl.explain(region_detector(), white(), "odam", outputs="score")
    with pytest.raises(SalienceError, match="does not explain classification models"):
        sl.explain(tiny_model(), torch.rand(1, 3, 32, 32), "odam")


def test_odam_batches_agree():
    model = region_detector()
    x = torch.rand(3, 3, 32, 32) * 0.3 + 0.7
    a = sl.explain(model, x, "odam", batch_size=1)
    b = sl.explain(model, x, "odam")
    assert len(a) == 6 and torch.allclose(a.maps, b.maps, atol=1e-9)


@pytest.mark.parametrize("architecture", ["scene-detr", "scene-deformable-detr"])
def test_detector_methods_run_on_random_head_scene_detectors(architecture):
    from salience.models.zoo.scene_detectors import as_detector_model, build_scene_detector

    config = dict(architecture=architecture, num_classes=3, num_queries=5, d_model=64, heads=8, ffn=64,
                  encoder_layers=1, decoder_layers=2, input_size=64)
    if architecture == "scene-deformable-detr":
        config["points"] = 2
    model = as_detector_model(build_scene_detector(config, pretrained_backbone=False).eval(), ["a", "b", "c"],
                              score_threshold=0.0, top_k=2)
    assert model.cam_layer_name.startswith("input_proj")
    x = torch.rand(2, 3, 64, 64)
    for method, params in (("odam", {}), ("gradcam", {}), ("drise", {"n_masks": 8})):
        expl = sl.explain(model, x, method, **params)
        assert expl.maps.shape == (4, 64, 64) and torch.isfinite(expl.maps).all()
        assert expl.image_index.tolist() == [0, 0, 1, 1]
    # ODAM of two different detections of one image differ (element-wise gradients)
    odam = sl.explain(model, x, "odam").maps
    assert not torch.allclose(odam[0], odam[1])
