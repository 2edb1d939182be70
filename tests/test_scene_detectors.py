"""The project's own detectors: forward API, cross-attention capture, decoding, checkpoints."""

from __future__ import annotations

import pytest
import torch

import salience as sl
from salience.errors import SalienceError
from salience.models.zoo import scene_detectors
from salience.models.detection import DeformableAttention, DetectorModel, GridAttention
from salience.models.zoo.detr_parts import capture_cross_attention
from salience.models.checkpoint import save_head_checkpoint
from salience.models.zoo.scene_deformable_detr import MultiScaleDeformableAttention, SceneDeformableDETR
from salience.models.zoo.scene_detectors import (
    as_detector_model,
    build_scene_detector,
    cxcywh_to_pixels,
    load_scene_detector,
)
from salience.models.zoo.scene_detr import SceneDETR

SMALL = dict(num_classes=3, num_queries=5, d_model=64, heads=8, ffn=64, encoder_layers=1, decoder_layers=2, input_size=64)


@pytest.fixture(scope="module")
def detr():
    return SceneDETR(**SMALL, pretrained_backbone=False).eval()


@pytest.fixture(scope="module")
def deformable():
    return SceneDeformableDETR(**SMALL, points=2, pretrained_backbone=False).eval()


@pytest.fixture(params=["detr", "deformable"])
def module(request):
    return request.getfixturevalue(request.param)


def test_forward_is_head_of_backbone_and_has_the_documented_outputs(module):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = module(x)
        again = module.head(module.backbone(x))
    extra = 1 if isinstance(module, SceneDETR) else 0
    assert out["logits"].shape == (2, 5, 3 + extra)
    assert out["boxes"].shape == (2, 5, 4)
    assert len(out["aux"]) == 1 and out["aux"][0]["boxes"].shape == (2, 5, 4)
    assert ((out["boxes"] > 0) & (out["boxes"] < 1)).all()
    assert torch.equal(out["boxes"], again["boxes"]) and torch.equal(out["logits"], again["logits"])


def test_batch_of_two_equals_two_batches_of_one(module):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        both = module(x)
        singles = [module(x[i : i + 1]) for i in range(2)]
    for key in ("logits", "boxes"):
        torch.testing.assert_close(both[key], torch.cat([s[key] for s in singles]), atol=1e-5, rtol=1e-5)


def test_capture_leaves_outputs_bit_identical_and_records_each_decoder_layer(module):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        plain = module(x)
        with capture_cross_attention(module) as record:
            captured = module(x)
    assert torch.equal(plain["logits"], captured["logits"]) and torch.equal(plain["boxes"], captured["boxes"])
    assert len(record.layers) == 2
    for layer in record.layers:
        if isinstance(module, SceneDETR):
            assert isinstance(layer, GridAttention) and layer.weights.shape == (2, 8, 5, 4, 4)  # C16 of 64 px
            torch.testing.assert_close(layer.weights.sum((-1, -2)), torch.ones(2, 8, 5))
        else:
            assert isinstance(layer, DeformableAttention)
            assert layer.locations.shape == (2, 5, 8, 3, 2, 2) and layer.weights.shape == (2, 5, 8, 3, 2)
            assert layer.level_shapes == [(8, 8), (4, 4), (2, 2)]
            torch.testing.assert_close(layer.weights.sum((-1, -2)), torch.ones(2, 5, 8))
    # Recording is switched off again after the block.
    assert all(getattr(m, "record", None) is None for m in module.modules())


def test_capture_is_undone_when_the_forward_fails(detr):
    with pytest.raises(RuntimeError):
        with capture_cross_attention(detr):
            detr(torch.randn(1, 5, 64, 64))
    assert all(getattr(m, "record", None) is None for m in detr.modules())


def test_grid_attention_with_zero_query_key_projections_is_uniform():
    module = SceneDETR(**SMALL, pretrained_backbone=False).eval()
    for layer in module.decoder:
        for proj in (layer.cross_attn.q_content, layer.cross_attn.q_spatial):
            torch.nn.init.zeros_(proj.weight), torch.nn.init.zeros_(proj.bias)
    with torch.no_grad(), capture_cross_attention(module) as record:
        module(torch.randn(1, 3, 64, 64))
    for layer in record.layers:
        torch.testing.assert_close(layer.weights, torch.full((1, 8, 5, 4, 4), 1 / 16))


def test_deformable_point_at_a_cell_centre_reads_that_token():
    """Zero offsets and one-hot weights: the output is the value of the token under the reference."""
    torch.manual_seed(0)
    attn = MultiScaleDeformableAttention(d_model=16, heads=2, levels=2, points=3)
    torch.nn.init.zeros_(attn.sampling_offsets.weight), torch.nn.init.zeros_(attn.sampling_offsets.bias)
    torch.nn.init.zeros_(attn.attention_weights.weight)
    with torch.no_grad():
        bias = torch.full((2, 2, 3), -1e4)
        bias[:, 1, 2] = 0.0  # every head: level 1, point 2
        attn.attention_weights.bias.copy_(bias.flatten())
    shapes = [(4, 4), (2, 3)]
    value = torch.randn(1, 16 + 6, 16)
    # Centre of row 1, column 2 of the 2×3 level: x = 2.5 / 3, y = 1.5 / 2.
    reference = torch.tensor([[[2.5 / 3, 1.5 / 2]]])
    attn.record = []
    with torch.no_grad():
        out = attn(torch.randn(1, 1, 16), reference, value, shapes)
    token = value[0, 16 + 1 * 3 + 2]
    torch.testing.assert_close(out[0, 0], attn.output_proj(attn.value_proj(token)), atol=1e-5, rtol=1e-5)
    recorded = attn.record[0]
    torch.testing.assert_close(recorded.locations, reference.view(1, 1, 1, 1, 1, 2).expand(1, 1, 2, 2, 3, 2))
    expected = torch.zeros(1, 1, 2, 2, 3)
    expected[..., 1, 2] = 1.0
    torch.testing.assert_close(recorded.weights, expected)


def test_deformable_box_reference_scales_offsets_by_half_the_box():
    attn = MultiScaleDeformableAttention(d_model=16, heads=1, levels=1, points=2)
    torch.nn.init.zeros_(attn.sampling_offsets.weight)
    with torch.no_grad():
        attn.sampling_offsets.bias.copy_(torch.tensor([2.0, 0.0, 0.0, -2.0]))  # point 0: +2 x, point 1: -2 y
    box = torch.tensor([[[0.5, 0.5, 0.2, 0.4]]])
    locations, _ = attn.sampling(torch.zeros(1, 1, 16), box, [(4, 4)])
    # offset / points · size / 2: +2/2 · 0.1 in x, -2/2 · 0.2 in y.
    torch.testing.assert_close(locations[0, 0, 0, 0], torch.tensor([[0.6, 0.5], [0.5, 0.3]]))


def test_decoded_detections_follow_the_softmax_and_sigmoid_formulas(detr, deformable):
    x = torch.randn(1, 3, 64, 64)
    for module, dropped in ((detr, True), (deformable, False)):
        model = as_detector_model(module, ["a", "b", "c"], score_threshold=0.0)
        with torch.no_grad():
            raw = module(x)
            dets = model(x)
        expected = raw["logits"].softmax(-1)[..., :-1] if dropped else raw["logits"].sigmoid()
        torch.testing.assert_close(dets.probs, expected)
        assert isinstance(model, DetectorModel) and model.has_cross_attention
        with model.capture_cross_attention() as record:
            model(x)
        assert len(record.layers) == 2
    boxes = cxcywh_to_pixels(torch.tensor([[0.5, 0.25, 0.5, 0.5]]), (64, 128))
    torch.testing.assert_close(boxes, torch.tensor([[32.0, 0.0, 96.0, 32.0]]))


def test_checkpoint_round_trip_through_the_loader(tmp_path, detr):
    path = tmp_path / "mine.pt"
    save_head_checkpoint(detr, ["cat", "dog", "car"], path, meta={"epochs": 0})
    saved = torch.load(path, weights_only=True)
    assert saved["config"]["architecture"] == "scene-detr"
    assert not any(k.startswith("backbone.") for k in saved["state_dict"])
    model = load_scene_detector(path, score_threshold=0.0, top_k=3)
    assert model.class_names == ["cat", "dog", "car"] and model.preprocess.size == (64, 64)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.module.head(model.module.backbone(x))["logits"], model(x).logits)
        # The head is the saved one; the backbone is the pretrained one, not the random test backbone.
        for key, value in saved["state_dict"].items():
            assert torch.equal(model.module.state_dict()[key], value)
    _, kept = model.detections(x)
    assert len(kept[0]) == 3


def test_checkpoint_prefix_loads_by_the_recorded_architecture(tmp_path, deformable):
    path = tmp_path / "trained.pt"
    save_head_checkpoint(deformable, ["a", "b", "c"], path)
    model = sl.load_model(f"checkpoint:{path}", score_threshold=0.1)
    assert isinstance(model.module, SceneDeformableDETR) and model.score_threshold == 0.1 and model.name == "trained"
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.module.head(model.module.backbone(x))["logits"], model(x).logits)
    with pytest.raises(SalienceError, match="no checkpoint file"):
        sl.load_model(f"checkpoint:{tmp_path / 'absent.pt'}")
    torch.save({"config": {"architecture": "yolo"}, "class_names": [], "state_dict": {}}, tmp_path / "yolo.pt")
    with pytest.raises(SalienceError, match="unknown architecture 'yolo'; known: scene-detr"):
        sl.load_model(f"checkpoint:{tmp_path / 'yolo.pt'}")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(SalienceError, match="not a salience checkpoint"):
        sl.load_model(f"checkpoint:{tmp_path / 'list.pt'}")


def test_shipped_names_load_from_the_weights_folder_or_fail_clearly(tmp_path, monkeypatch, deformable):
    monkeypatch.setattr(scene_detectors, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(SalienceError, match="no weights"):
        sl.load_model("scene-deformable-detr")
    save_head_checkpoint(deformable, ["a", "b", "c"], tmp_path / "scene-deformable-detr.pt")
    model = sl.load_model("scene-deformable-detr", score_threshold=0.2)
    assert model.task == "detection" and model.score_threshold == 0.2 and model.name == "scene-deformable-detr"
    with pytest.raises(SalienceError, match="class names"):
        save_head_checkpoint(deformable, ["a"], tmp_path / "x.pt")
    with pytest.raises(SalienceError, match="architecture"):
        build_scene_detector({"architecture": "yolo"})


def test_unused_features_do_not_matter_for_single_scale(detr):
    feats = detr.backbone(torch.randn(1, 3, 64, 64))
    with torch.no_grad():
        a = detr.head(feats)
        b = detr.head([torch.zeros_like(feats[0]), feats[1], torch.zeros_like(feats[2])])
    assert torch.equal(a["logits"], b["logits"])
