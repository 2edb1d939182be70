"""``hf:PATH`` DETR-family detectors: decoding agrees with transformers' post-processing and
the recorded cross-attention agrees with what the models return."""

from __future__ import annotations

import pytest
import torch

import salience as sl
from salience.models.detection import DeformableAttention, DetectorModel, GridAttention

from .conftest import require

DECODER = dict(d_model=32, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
               encoder_ffn_dim=32, decoder_ffn_dim=32, num_queries=5, num_labels=3)


def _resnet(tr, cls="ResNetConfig", stages=2):
    return getattr(tr, cls)(embedding_size=8, hidden_sizes=[8, 16, 16][:stages], depths=[1] * stages,
                            layer_type="basic", out_features=[f"stage{i + 1}" for i in range(stages)])


def _config(tr, kind):
    if kind == "RTDetr":
        return tr.RTDetrConfig(
            backbone_config=_resnet(tr, "RTDetrResNetConfig", 3), use_pretrained_backbone=False, use_timm_backbone=False,
            encoder_hidden_dim=32, encoder_in_channels=[8, 16, 16], feat_strides=[8, 16, 32], decoder_in_channels=[32] * 3,
            num_feature_levels=3, decoder_n_points=2, num_denoising=0, hidden_expansion=0.5, **DECODER)
    extra = dict(num_feature_levels=2, encoder_n_points=2, decoder_n_points=2) if kind == "DeformableDetr" else {}
    return getattr(tr, f"{kind}Config")(use_timm_backbone=False, use_pretrained_backbone=False,
                                        backbone_config=_resnet(tr), **DECODER, **extra)


@pytest.fixture(scope="module", params=["Detr", "ConditionalDetr", "DeformableDetr", "RTDetr"])
def saved(request, tmp_path_factory):
    tr = require("transformers")
    torch.manual_seed(0)
    kind = request.param
    module = getattr(tr, f"{kind}ForObjectDetection")(_config(tr, kind)).eval()
    path = tmp_path_factory.mktemp(kind)
    module.save_pretrained(path)
    return kind, str(path), getattr(tr, f"{kind}ImageProcessor")()


def test_loads_as_a_detector_and_keeps_what_the_image_processor_keeps(saved):
    kind, path, processor = saved
    model = sl.load_model("hf:" + path, input_size=64)
    assert isinstance(model, DetectorModel) and model.task == "detection" and len(model.class_names) == 3
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        raw = model.module(x)
        dets = model(x)
    assert dets.multi_label == (kind != "Detr")
    # A threshold between the candidates' scores, so some are kept and some are not.
    # (Midway between two scores: transformers keeps score > threshold, `select` score ≥ threshold.)
    ranked = (dets.probs if dets.multi_label else dets.scores).flatten().sort().values
    threshold = float(ranked[len(ranked) // 2 - 1 : len(ranked) // 2 + 1].mean())
    kept = dets.select(threshold, model.top_k)
    expected = processor.post_process_object_detection(raw, threshold=threshold, target_sizes=[(64, 64)] * 2)
    assert 0 < sum(len(k) for k in kept) < dets.probs[..., 0].numel() * (3 if dets.multi_label else 1)
    for ours, theirs in zip(kept, expected):
        order = theirs["scores"].argsort(descending=True)
        torch.testing.assert_close(ours.score, theirs["scores"][order])
        assert torch.equal(ours.label, theirs["labels"][order])
        torch.testing.assert_close(ours.box, theirs["boxes"][order])


def test_cross_attention_capture_matches_the_models_outputs(saved):
    kind, path, _ = saved
    model = sl.load_model("hf:" + path, input_size=64)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        plain = model.module(x)
        with model.capture_cross_attention() as record:
            captured = model.module(x)
        returned = model.module(x, output_attentions=True).cross_attentions
    assert torch.equal(plain.logits, captured.logits) and torch.equal(plain.pred_boxes, captured.pred_boxes)
    assert len(record.layers) == 2
    for layer, weights in zip(record.layers, returned):
        if kind in ("Detr", "ConditionalDetr"):
            assert isinstance(layer, GridAttention) and layer.weights.shape == (2, 2, 5, 8, 8)
            torch.testing.assert_close(layer.weights.flatten(-2), weights)
            torch.testing.assert_close(layer.weights.sum((-1, -2)), torch.ones(2, 2, 5))
        else:
            assert isinstance(layer, DeformableAttention) and layer.locations.shape[:3] == (2, 5, 2)
            torch.testing.assert_close(layer.weights, weights)
            torch.testing.assert_close(layer.weights.sum((-1, -2)), torch.ones(2, 5, 2))


def test_deformable_locations_are_the_reference_points_when_offsets_are_zero(tmp_path):
    tr = require("transformers")
    module = tr.DeformableDetrForObjectDetection(_config(tr, "DeformableDetr")).eval()
    for layer in module.model.decoder.layers:
        torch.nn.init.zeros_(layer.encoder_attn.sampling_offsets.weight)
        torch.nn.init.zeros_(layer.encoder_attn.sampling_offsets.bias)
    module.save_pretrained(tmp_path)
    model = sl.load_model(f"hf:{tmp_path}", input_size=64)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad(), model.capture_cross_attention() as record:
        out = model.module(x)
    first = record.layers[0]
    reference = out.init_reference_points  # (1, Q, 2): no padding, so every level shares it
    torch.testing.assert_close(first.locations, reference[:, :, None, None, None, :].expand_as(first.locations))
    assert first.level_shapes == [(16, 16), (8, 8)]


def test_classifiers_still_load_as_classifiers(tmp_path):
    tr = require("transformers")
    config = tr.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=32, num_labels=4)
    tr.ViTForImageClassification(config).save_pretrained(tmp_path)
    model = sl.load_model(f"hf:{tmp_path}")
    assert model.task == "classification" and not isinstance(model, DetectorModel)
