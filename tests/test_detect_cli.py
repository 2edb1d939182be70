"""``salience explain PHOTO --model <detector>``: detections drawn on the photo, PNG + JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from salience.cli.app import app
from salience.models.zoo import scene_detectors
from salience.models.checkpoint import save_head_checkpoint
from salience.models.zoo.scene_detr import SceneDETR
from salience.viz import draw_detections

SMALL = dict(num_classes=3, num_queries=4, d_model=64, heads=8, ffn=64, encoder_layers=1, decoder_layers=1, input_size=64)


@pytest.fixture()
def shipped_detr(tmp_path, monkeypatch):
    """A random-head scene-detr saved where `sl.load_model("scene-detr")` looks."""
    weights = tmp_path / "weights"
    weights.mkdir()
    save_head_checkpoint(SceneDETR(**SMALL, pretrained_backbone=False), ["cat", "dog", "car"], weights / "scene-detr.pt")
    monkeypatch.setattr(scene_detectors, "WEIGHTS_DIR", weights)
    photo = tmp_path / "scene.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 128, 3), dtype=np.uint8)).save(photo)
    return photo


def test_explain_with_a_detector_draws_boxes_mapped_to_the_photo(shipped_detr, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["explain", str(shipped_detr), "--model", "scene-detr", "--score-threshold", "0",
                                      "-o", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "scene_detections.json").read_text())
    assert meta["original_size"] == [64, 128] and len(meta["detections"]) == 4  # threshold 0 keeps every query
    for det in meta["detections"]:
        x0, y0, x1, y1 = det["box_input"]
        # The 128×64 photo was stretched to 64×64: x doubles back, y stays.
        assert det["box"] == pytest.approx([2 * x0, y0, 2 * x1, y1], abs=0.02)
        assert det["class"] in ("cat", "dog", "car")
    scores = [d["score"] for d in meta["detections"]]
    assert scores == sorted(scores, reverse=True)
    picture = Image.open(out / "scene_detections.png")
    assert picture.size == (128, 64)
    assert not np.array_equal(np.asarray(picture), np.asarray(Image.open(shipped_detr).convert("RGB")))


def test_explain_with_a_detector_says_when_nothing_is_kept(shipped_detr, tmp_path):
    result = CliRunner().invoke(app, ["explain", str(shipped_detr), "--model", "scene-detr", "--score-threshold",
                                      "1.01", "-o", str(tmp_path / "out"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "no detection scored at least 1.01" in result.output
    assert json.loads((tmp_path / "out" / "scene_detections.json").read_text())["detections"] == []


def test_draw_detections_outlines_the_box_in_the_class_colour():
    photo = Image.new("RGB", (100, 80), (0, 0, 0))
    picture = np.asarray(draw_detections(photo, torch.tensor([[20.0, 30.0, 70.0, 60.0]]), ["cat"], [0.9], width=2))
    assert picture[45, 20].any() and picture[45, 69].any()  # left and right edges drawn
    assert not picture[45, 45].any()  # inside stays untouched
    assert not picture[75, 5].any()  # outside too
