"""Training: box losses and matching against closed forms and brute force, COCO AP of
perfect predictions, resumable loop and feature cache, a tiny end-to-end detector run."""

import itertools
import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from salience.cli.app import app
from salience.data.scenes import SceneConfig, SceneDataset
from salience.errors import SalienceError
from salience.models.zoo.scene_detectors import decode_softmax, load_scene_detector
from salience.train.coco_eval import coco_ground_truth, coco_predictions, detection_ap
from salience.train.detection import (SetCriterion, attention_outside_boxes, box_masks, cxcywh_to_xyxy,
                                      generalized_box_iou, sigmoid_focal_loss)
from salience.train.features import cached_features
from salience.train.loop import Schedule, batch_indices, fit


def test_generalized_iou_closed_forms():
    a = torch.tensor([[0.0, 0, 1, 1]])
    assert generalized_box_iou(a, a).item() == pytest.approx(1.0)
    # disjoint, side by side: IoU 0, union 2, hull 3 -> -1/3
    assert generalized_box_iou(a, torch.tensor([[2.0, 0, 3, 1]])).item() == pytest.approx(-1 / 3)
    # half overlap: inter 0.5, union 1.5, hull 1.5 -> 1/3
    assert generalized_box_iou(a, torch.tensor([[0.5, 0, 1.5, 1]])).item() == pytest.approx(1 / 3)


def test_focal_loss_closed_form():
    logit, p = torch.tensor([0.0]), 0.5
    positive = sigmoid_focal_loss(logit, torch.tensor([1.0])).item()
    negative = sigmoid_focal_loss(logit, torch.tensor([0.0])).item()
    ce = -torch.log(torch.tensor(p)).item()
    assert positive == pytest.approx(0.25 * (1 - p) ** 2 * ce)
    assert negative == pytest.approx(0.75 * p ** 2 * ce)


def _brute_force(cost: torch.Tensor) -> float:
    q, o = cost.shape
    return min(sum(cost[p[j], j].item() for j in range(o)) for p in itertools.permutations(range(q), o))


@pytest.mark.parametrize("sigmoid", [False, True])
def test_matching_is_optimal(sigmoid):
    g = torch.Generator().manual_seed(0)
    crit = SetCriterion(sigmoid=sigmoid)
    logits = torch.randn(1, 5, 4 if sigmoid else 5, generator=g)
    boxes = torch.rand(1, 5, 4, generator=g) * 0.5 + 0.2
    target = {"labels": torch.tensor([0, 2, 1]), "boxes": torch.rand(3, 4, generator=g) * 0.5 + 0.2}
    (q, o), = crit.match(logits, boxes, [target])
    if sigmoid:
        p = logits[0].sigmoid()[:, target["labels"]]
        cls = 0.25 * (1 - p) ** 2 * -(p + 1e-8).log() - 0.75 * p ** 2 * -(1 - p + 1e-8).log()
    else:
        cls = -logits[0].softmax(-1)[:, target["labels"]]
    cost = (crit.class_cost * cls + crit.l1_cost * torch.cdist(boxes[0], target["boxes"], p=1)
            - crit.giou_cost * generalized_box_iou(cxcywh_to_xyxy(boxes[0]), cxcywh_to_xyxy(target["boxes"])))
    assert sum(cost[i, j].item() for i, j in zip(q, o)) == pytest.approx(_brute_force(cost), abs=1e-5)


def test_perfect_prediction_has_no_box_loss_and_tiny_class_loss():
    gt = torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.4]])
    target = {"labels": torch.tensor([1, 0]), "boxes": gt}
    boxes = torch.cat((gt.flip(0), torch.full((2, 4), 0.5)))[None]  # queries 0, 1 = objects 1, 0
    logits = torch.full((1, 4, 3), -20.0)
    logits[0, 0, 0] = logits[0, 1, 1] = 20.0
    logits[0, 2:, 2] = 20.0  # no-object
    crit = SetCriterion()
    (q, o), = crit.match(logits, boxes, [target])
    assert dict(zip(q.tolist(), o.tolist())) == {0: 1, 1: 0}
    parts = crit.layer_loss(logits, boxes, [target], [(q, o)])
    assert parts["l1"].item() == pytest.approx(0, abs=1e-6) and parts["giou"].item() == pytest.approx(0, abs=1e-6)
    assert parts["class"].item() < 1e-6


def test_box_masks_cover_fractions():
    # box x in [0.25, 0.75] on a 2-wide grid covers half of each cell; y in [0, 0.5] the top row
    m = box_masks(torch.tensor([[0.5, 0.25, 0.5, 0.5]]), (2, 2))
    torch.testing.assert_close(m[0], torch.tensor([[0.5, 0.5], [0.0, 0.0]]))


def test_aajts_term_counts_attention_outside_the_box():
    target = {"labels": torch.tensor([0]), "boxes": torch.tensor([[0.25, 0.25, 0.5, 0.5]])}  # top-left cell of 2x2
    inside = torch.zeros(1, 1, 2, 2)
    inside[0, 0, 0, 0] = 1
    outside = torch.zeros(1, 1, 2, 2)
    outside[0, 0, 1, 1] = 1
    match = [(torch.tensor([0]), torch.tensor([0]))]
    assert attention_outside_boxes([inside], [target], match).item() == pytest.approx(0.0)
    assert attention_outside_boxes([outside], [target], match).item() == pytest.approx(1.0)
    assert attention_outside_boxes([inside, outside], [target], match).item() == pytest.approx(0.5)


def test_coco_ap_of_perfect_and_shifted_predictions():
    targets = [{"labels": torch.tensor([0, 1]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.4]])},
               {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])}]
    gt = coco_ground_truth(targets, (100, 100), num_classes=2)

    def raw(shift):
        logits = torch.full((2, 3, 3), -10.0)
        boxes = torch.full((2, 3, 4), 0.1)
        for b, t in enumerate(targets):
            for k, (label, box) in enumerate(zip(t["labels"], t["boxes"])):
                logits[b, k, label] = 10.0
                boxes[b, k] = box + torch.tensor([shift, 0, 0, 0])
            logits[b, len(t["labels"]):, 2] = 10.0
        return {"logits": logits, "boxes": boxes}

    perfect = detection_ap(gt, coco_predictions(decode_softmax(raw(0.0), (100, 100))))
    assert perfect["AP"] == pytest.approx(1.0) and perfect["AP50"] == pytest.approx(1.0)
    shifted = detection_ap(gt, coco_predictions(decode_softmax(raw(0.04), (100, 100))))
    assert shifted["AP"] < 0.7 and shifted["AP50"] == pytest.approx(1.0)  # IoUs 0.67-0.82: above 0.5, below most of 0.5:0.95


def test_batch_indices_are_epoch_permutations():
    batches = [batch_indices(10, 3, s, seed=1) for s in range(3)]
    assert sorted(torch.cat(batches).tolist()) == sorted(set(torch.cat(batches).tolist()))  # no repeats in an epoch
    assert torch.equal(batch_indices(10, 3, 4, seed=1), batch_indices(10, 3, 4, seed=1))
    with pytest.raises(SalienceError, match="cannot fill one batch"):
        batch_indices(2, 3, 0, seed=0)


class _Regression(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.frozen = nn.Linear(3, 3).requires_grad_(False)
        self.layer = nn.Linear(3, 1)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.layer(self.drop(self.frozen(x)))


def _fit(run_dir, stop_at=None):
    x = torch.randn(40, 3, generator=torch.Generator().manual_seed(1))
    y = x.sum(1, keepdim=True)
    model = _Regression()

    def loss_fn(m, idx):
        if stop_at is not None and loss_fn.calls == stop_at:
            raise KeyboardInterrupt
        loss_fn.calls += 1
        return (m(x[idx]) - y[idx]).square().mean(), {}

    loss_fn.calls = 0
    schedule = Schedule(steps=12, batch_size=8, lr=1e-2, checkpoint_every=5, log_every=2)
    log = fit(model, loss_fn, 40, schedule, run_dir, recipe={"toy": 1}, progress=False)
    return model, log


def test_fit_resumes_to_the_same_weights(tmp_path):
    straight, log = _fit(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "b", stop_at=7)
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)["step"] == 7
    resumed, _ = _fit(tmp_path / "b")
    torch.testing.assert_close(resumed.layer.weight, straight.layer.weight, rtol=0, atol=0)
    assert log[-1]["step"] == 12 and log[-1]["loss"] < log[0]["loss"]
    saved = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)["model"]
    assert set(saved) == {"layer.weight", "layer.bias"}  # the frozen child is not stored
    lines = (tmp_path / "a" / "log.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["step"] == 12


def test_fit_refuses_a_run_directory_of_another_training(tmp_path):
    _fit(tmp_path)
    with pytest.raises(SalienceError, match="another training"):
        fit(_Regression(), lambda m, i: (m(torch.zeros(1, 3)).sum(), {}), 40, Schedule(steps=3, batch_size=8),
            tmp_path, recipe={"toy": 2}, progress=False)


def _tiny_scenes(n, seed):
    return SceneDataset(n, "detection", seed, SceneConfig(size=64, sources=("shapes",), backgrounds=("textures",),
                                                          objects=(1, 2), scale=(0.3, 0.5)))


def test_feature_cache_resumes_and_checks_identity(tmp_path):
    data = _tiny_scenes(6, seed=3)
    full = cached_features(data, tmp_path / "full", input_size=64, batch_size=4, progress=False)
    partial_dir = tmp_path / "partial"
    cached_features(_tiny_scenes(4, seed=3), partial_dir / "x", input_size=64, batch_size=4, progress=False)
    # simulate a run killed after 4 of 6 scenes: the same folder, the first 4 done
    resumed_dir = tmp_path / "resumed"
    first = cached_features(data, resumed_dir, input_size=64, batch_size=4, progress=False)
    meta = json.loads((resumed_dir / "meta.json").read_text())
    (resumed_dir / "meta.json").write_text(json.dumps({**meta, "complete": False}))
    (resumed_dir / "progress.json").write_text(json.dumps({"done": 4}))
    again = cached_features(data, resumed_dir, input_size=64, batch_size=4, progress=False)
    for level in range(3):
        torch.testing.assert_close(again.load(level), full.load(level), rtol=0, atol=0)
    assert len(again.targets) == 6 and torch.equal(again.targets[5]["boxes"], full.targets[5]["boxes"])
    assert len(first) == 6
    with pytest.raises(SalienceError, match="another scene set"):
        cached_features(_tiny_scenes(6, seed=4), resumed_dir, input_size=64, progress=False)


def test_tiny_detector_training_writes_a_loadable_checkpoint(tmp_path):
    from dataclasses import replace

    from salience.train.recipes import detector_recipe, train_detector

    recipe = detector_recipe("scene-detr", steps=3, n_train=16)
    recipe = replace(recipe, n_held_out=8, schedule=replace(recipe.schedule, batch_size=8, log_every=1))
    meta = train_detector("scene-detr", tmp_path, tmp_path / "out.pt", recipe=recipe, progress=False, validate_every=2)
    assert set(meta["held_out"]) >= {"AP", "AP50", "AP75"} and meta["steps"] == 3
    model = load_scene_detector(tmp_path / "out.pt")
    assert list(model.class_names) == list(SceneDataset(1, "detection").class_names)
    dets = model(torch.zeros(1, 3, 256, 256))
    assert dets.probs.shape == (1, 25, len(model.class_names))


def test_train_cli_unknown_recipe_is_one_line(tmp_path):
    result = CliRunner().invoke(app, ["train", "detector", "nope", "--work", str(tmp_path)])
    assert result.exit_code == 1 and "no detector recipe 'nope'" in result.output
