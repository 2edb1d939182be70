"""Instance metrics for detectors, with known answers on the RegionDetector toy.

On a white 32×32 image the toy detects class 0 in the top-left quadrant (query 0) and class 1
in the bottom-right one (query 1); ODAM's map of each is exactly its quadrant.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

import salience as sl
from salience.targets import DetectionTarget
from salience.metrics import deletion, insertion, match_instances
from salience.metrics.instances import instance_regions

from .toys import region_detector

TL = torch.zeros(32, 32, dtype=torch.bool)
TL[:16, :16] = True
MASKS = [torch.stack([TL, TL.flip(0, 1)])]  # one image, two objects
BOXES = [torch.tensor([[0.0, 0, 16, 16], [16, 16, 32, 32]])]
LABELS = [torch.tensor([0, 1])]


@pytest.fixture(scope="module")
def setup():
    model = region_detector()
    x = torch.ones(1, 3, 32, 32)
    return model, x, sl.explain(model, x, "odam")


def test_matching_needs_the_same_class_and_iou_at_least_half():
    gt = [torch.tensor([[0.0, 0, 10, 10], [0, 0, 4, 4]])] * 3
    dets = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 4.9], [0, 0, 5, 5]])
    matched = match_instances(dets, torch.tensor([1, 2, 1, 2]), [gt[0]] * 4, [torch.tensor([1, 2])] * 4)
    # row 1: only object 1 has class 2 (IoU 0.16 < 0.5); row 2: IoU 0.49; row 3: IoU 0.64 with object 1
    assert matched.tolist() == [0, -1, -1, 1]
    assert match_instances(dets[1:2], torch.tensor([2]), gt[:1]).tolist() == [0]  # without labels: best IoU


def test_a_map_on_its_own_instance_scores_perfectly(setup):
    model, x, expl = setup
    scores = sl.evaluate(model, x, expl, metrics=["energy_pointing_game", "pointing_game", "miou", "wrong_instance"],
                         masks=MASKS, labels=LABELS)
    for name in ("energy_pointing_game", "pointing_game", "miou"):
        assert scores[name].tolist() == [1.0, 1.0], name
    assert scores["wrong_instance"].tolist() == [0.0, 0.0]


def test_a_map_on_the_other_instance_is_all_wrong(setup):
    model, x, expl = setup
    swapped = replace(expl, maps=expl.maps.flip(0))
    scores = sl.evaluate(model, x, swapped, metrics=["energy_pointing_game", "wrong_instance", "miou"],
                         boxes=BOXES, labels=LABELS)  # boxes only: the regions are the boxes
    assert scores["energy_pointing_game"].tolist() == [0.0, 0.0]
    assert scores["wrong_instance"].tolist() == [1.0, 1.0]
    assert scores["miou"].tolist() == [0.0, 0.0]
    half = replace(expl, maps=expl.maps + expl.maps.flip(0))  # both quadrants equally
    assert sl.evaluate(model, x, half, metrics=["wrong_instance"], masks=MASKS)["wrong_instance"].tolist() == [0.5, 0.5]


def test_unmatched_detections_and_lonely_objects_give_nan(setup):
    model, x, expl = setup
    wrong_class = [torch.tensor([1, 0])]
    scores = sl.evaluate(model, x, expl, metrics=["energy_pointing_game", "wrong_instance"], masks=MASKS,
                         labels=wrong_class)
    assert scores["energy_pointing_game"].isnan().all() and scores["wrong_instance"].isnan().all()
    lonely = sl.evaluate(model, x, expl, metrics=["wrong_instance"], masks=[MASKS[0][:1]])["wrong_instance"]
    assert math.isnan(lonely[0]) and math.isnan(lonely[1])  # row 0: no other object; row 1: unmatched


def test_instance_regions_from_masks_derive_boxes_and_exclude_overlap():
    target = DetectionTarget(torch.tensor([0]), torch.tensor([0]), torch.tensor([0]),
                             boxes=torch.tensor([[0.0, 0, 16, 16]]))
    big = torch.zeros(32, 32, dtype=torch.bool)
    big[:24, :24] = True  # another object overlapping the first
    regions = instance_regions(target, (32, 32), torch.device("cpu"), masks=[torch.stack([TL, big])])
    assert regions.matched.tolist() == [0]
    assert torch.equal(regions.others[0], big & ~TL)


def test_deletion_and_insertion_track_the_detection(setup):
    model, x, expl = setup
    p = 1 / (1 + math.exp(-6))
    good = deletion(model, x.expand(2, -1, -1, -1), expl, DetectionTarget(torch.tensor([0, 0]), torch.tensor([0, 1]),
                    torch.tensor([0, 1]), boxes=expl.boxes), preset="keio", n_steps=8)
    assert torch.allclose(good.curves[:, 0], torch.tensor([p, p]))  # the clean image's probability
    bad = sl.evaluate(model, x, replace(expl, maps=expl.maps.flip(0)), metrics=["deletion", "insertion"],
                      preset="keio", n_steps=8)
    ours = sl.evaluate(model, x, expl, metrics=["deletion", "insertion"], preset="keio", n_steps=8)
    assert torch.allclose(ours["deletion"], good.values)
    assert (ours["deletion"] < bad["deletion"] - 0.2).all()
    assert (ours["insertion"] > bad["insertion"] + 0.2).all()


def test_drise_score_starts_at_one_and_follows_the_detection(setup):
    model, x, expl = setup
    ours = sl.evaluate(model, x, expl, metrics=["deletion"], preset="keio", n_steps=8, score="drise",
                       return_curves=True)["deletion"]
    assert torch.allclose(ours.curves[:, 0], torch.ones(2))  # the detection matches itself
    bad = sl.evaluate(model, x, replace(expl, maps=expl.maps.flip(0)), metrics=["deletion"], preset="keio",
                      n_steps=8, score="drise")["deletion"]
    assert (ours.values < bad - 0.2).all()


def test_plain_maps_on_a_detector_take_a_detection_index(setup):
    model, x, expl = setup
    by_index = insertion(model, x, expl.maps[:1], 0, preset="keio", n_steps=4)
    by_expl = sl.evaluate(model, x, expl, metrics=["insertion"], preset="keio", n_steps=4)["insertion"]
    assert torch.allclose(by_index.values, by_expl[:1])
    with pytest.raises(sl.errors.TargetError, match="one detection per image row"):
        insertion(model, x, expl.maps[:1], "all", preset="keio", n_steps=4)
