"""D-RISE: similarity closed forms and maps on a detector whose detections need a visible region."""

from __future__ import annotations

import pytest
import torch

import salience as sl
from salience.errors import SalienceError
from salience.methods.drise import box_iou, class_vectors, detection_similarity
from salience.models.detection import Detections

from .toys import region_detector, tiny_model


def test_box_iou_and_similarity_closed_forms():
    a = torch.tensor([0.0, 0, 4, 4])
    assert box_iou(a, torch.tensor([2.0, 0, 6, 4])) == pytest.approx(8 / 24)
    assert box_iou(a, torch.tensor([5.0, 5, 6, 6])) == 0
    probs = torch.tensor([[[0.6, 0.2], [0.0, 0.5]]])  # one image, two queries
    dets = Detections(boxes=torch.tensor([[[0.0, 0, 4, 4], [2.0, 0, 6, 4]]]), probs=probs, logits=probs,
                      objectness=torch.tensor([[1.0, 0.5]]))
    sim = detection_similarity(torch.tensor([[0.0, 0, 4, 4]]), torch.tensor([[0.6, 0.2]]), dets)
    v = class_vectors(probs[0])  # background share appended
    assert torch.allclose(v, torch.tensor([[0.6, 0.2, 0.2], [0.0, 0.5, 0.5]]))
    cos = torch.nn.functional.cosine_similarity(v[0], v[1], dim=0)
    assert torch.allclose(sim, torch.tensor([[1.0, 8 / 24 * cos * 0.5]]))
    # a (R, 1, 4) target against every image gives (R, B, Q)
    assert detection_similarity(torch.zeros(3, 1, 4), torch.zeros(3, 1, 2), dets).shape == (3, 1, 2)


def test_a_faded_object_is_dissimilar_because_of_the_background_share():
    probs = torch.tensor([[[0.9, 0.0], [0.1, 0.0]]])  # same class ratio, but query 1 mostly no-object
    dets = Detections(boxes=torch.zeros(1, 2, 4) + torch.tensor([0.0, 0, 1, 1]), probs=probs, logits=probs)
    sim = detection_similarity(torch.tensor([[0.0, 0, 1, 1]]), torch.tensor([[0.9, 0.0]]), dets)
    assert sim[0, 0] == pytest.approx(1.0)
    assert sim[0, 1] == pytest.approx(0.18 / 0.82)  # cos([.9, 0, .1], [.1, 0, .9]); 1 without the share


def test_drise_map_lies_in_the_region_each_detection_needs():
    model = region_detector()
    # a coarse grid (8-px cells): a quadrant is a few cells, so each mask changes the score a lot
    expl = sl.explain(model, torch.ones(1, 3, 32, 32), "drise", n_masks=400, grid_size=4, batch_size=50)
    assert expl.labels == ["square 1.00 (query 0)", "circle 1.00 (query 1)"]
    top_left, bottom_right = expl.maps
    assert top_left[:16, :16].mean() > top_left[16:, 16:].mean() + 0.1
    assert bottom_right[16:, 16:].mean() > bottom_right[:16, :16].mean() + 0.1
    for saliency, quadrant in ((top_left, (0, 0)), (bottom_right, (1, 1))):
        peak = int(saliency.argmax())
        assert ((peak // 32) // 16, (peak % 32) // 16) == quadrant
    assert top_left.min() >= 0 and top_left.max() <= 1 / 0.5  # weights in [0, 1], divided by p1


def test_drise_is_seeded_and_batches_agree():
    model = region_detector()
    x = torch.rand(2, 3, 32, 32) * 0.2 + 0.8
    a = sl.explain(model, x, "drise", n_masks=64, batch_size=64)
    b = sl.explain(model, x, "drise", n_masks=64, batch_size=7)
    assert torch.allclose(a.maps, b.maps, atol=1e-5)
    single = sl.explain(model, x[1:], "drise", n_masks=64, batch_size=64)
    assert torch.allclose(a.maps[2:], single.maps, atol=1e-5)  # image 1's rows alone give the same maps
    other = sl.explain(model, x, "drise", n_masks=64, seed=1)
    assert not torch.allclose(a.maps, other.maps)


def test_drise_runs_one_forward_per_mask_batch_per_image():
    model = region_detector()
    calls = []
    model.module.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    sl.explain(model, torch.ones(2, 3, 32, 32), "drise", n_masks=20, batch_size=10)
    # clean pass of both images, the target vectors' pass, then 2 mask batches × 2 images
    assert calls == [2, 2, 10, 10, 10, 10]


def test_drise_on_a_classifier_is_a_clear_error():
    with pytest.raises(SalienceError, match="does not explain classification models.*methods that do: .*gradcam"):
        sl.explain(tiny_model(), torch.rand(1, 3, 32, 32), "drise", n_masks=2)
