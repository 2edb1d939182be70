"""Chefer generic relevance for DETR detections: the propagation rules' closed forms, the
attention recording (outputs unchanged, every map differentiable), batching, and agreement
with a straightforward reference on a Hugging Face DETR's ``output_attentions``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import salience as sl
from salience.targets import DetectionTarget
from salience.errors import SalienceError
from salience.methods.chefer_detr import generic_relevance, normalise_residual
from salience.models.zoo.scene_detectors import as_detector_model, build_scene_detector

from .conftest import require

SIZE = 64
SCENE = dict(architecture="scene-detr", num_classes=3, num_queries=5, d_model=32, heads=2, ffn=32, encoder_layers=2,
             decoder_layers=2, input_size=SIZE, dropout=0.0)


def scene_detector(**overrides):
    # The real backbone: a random one gives near-constant features that make the head numerically unstable.
    module = build_scene_detector({**SCENE, **overrides}, pretrained_backbone=True).eval()
    return as_detector_model(module, ["a", "b", "c"], score_threshold=0.0, top_k=2)


@pytest.fixture(scope="module")
def scene():
    torch.manual_seed(0)
    return scene_detector()


def upsample(relevance: torch.Tensor, grid) -> torch.Tensor:
    return F.interpolate(relevance.reshape(-1, 1, *grid), size=(SIZE, SIZE), mode="bilinear", align_corners=False)[:, 0]


# --- the rules -------------------------------------------------------------------------------------------------

def test_only_cross_attention_gives_its_sum():
    cross = [torch.rand(2, 3, 4), torch.rand(2, 3, 4)]
    zeros = [torch.zeros(2, 4, 4)], [torch.zeros(2, 3, 3)] * 2
    assert torch.allclose(generic_relevance(zeros[0], zeros[1], cross), cross[0] + cross[1])


def test_closed_form_with_encoder_and_decoder_self_relevance():
    # Encoder: token 0 draws on token 1. R^ii = I + E; R̄^ii = rownorm(E) + I; row 1 of E is empty and stays 0.
    e = torch.tensor([[[0.0, 1.0], [0.0, 0.0]]])
    c = torch.tensor([[[0.5, 0.0], [0.0, 0.25]]])
    r_ii_bar = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    expected = c[0] @ r_ii_bar  # R^qq = I
    assert torch.allclose(generic_relevance([e], [torch.zeros(1, 2, 2)], [c])[0], expected)
    assert torch.allclose(expected, torch.tensor([[0.5, 0.5], [0.0, 0.25]]))
    # Decoder self-attention: query 0 draws on query 1 with weight 2: R^qq = [[1, 2], [0, 1]], R̄^qq = [[1, 1], [0, 1]].
    s = torch.tensor([[[0.0, 2.0], [0.0, 0.0]]])
    out = generic_relevance([e], [s], [c])[0]
    assert torch.allclose(out, torch.tensor([[1.0, 0.0], [1.0, 1.0]]) @ c[0] @ r_ii_bar)
    assert torch.allclose(out, torch.tensor([[0.5, 0.5], [0.5, 0.75]]))
    # A second layer's self-attention moves relevance between queries before its cross-attention adds.
    s2 = torch.tensor([[[0.0, 0.0], [1.0, 0.0]]])
    two = generic_relevance([e], [s, s2], [c, torch.zeros(1, 2, 2)])[0]
    assert torch.allclose(two, out + s2[0] @ out)


def test_residual_normalisation():
    r = torch.tensor([[[3.0, 2.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 3.0]]])
    bar = normalise_residual(r)[0]
    assert torch.allclose(bar, torch.tensor([[2 / 4 + 1, 2 / 4, 0.0], [0.0, 1.0, 0.0], [1 / 4, 1 / 4, 2 / 4 + 1]]))


# --- recording -------------------------------------------------------------------------------------------------

def test_scene_detr_recording_keeps_outputs_and_every_map_has_a_gradient(scene):
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        plain = scene.module(x)
        with scene.capture_attention() as record:
            recorded = scene.module(x)
    torch.testing.assert_close(recorded["logits"], plain["logits"])
    torch.testing.assert_close(recorded["boxes"], plain["boxes"])
    assert [m.shape for m in record.encoder] == [(2, 2, 16, 16)] * 2 and record.grid == (4, 4)
    assert [m.shape for m in record.decoder_self] == [(2, 2, 5, 5)] * 2
    assert [m.shape for m in record.cross] == [(2, 2, 5, 4, 4)] * 2
    assert all(torch.allclose(m.sum(-1), torch.ones(())) for m in record.encoder + record.decoder_self)
    with torch.enable_grad(), scene.capture_attention(grad=True) as record:
        logits = scene(x).logits
    maps = record.encoder + record.decoder_self + record.cross
    grads = torch.autograd.grad(logits[0, 1, 2], maps)
    assert all(g is not None and g.shape == m.shape for g, m in zip(grads, maps))
    assert all(g[1].abs().max() == 0 for g in grads)  # image 1 does not influence image 0's score
    assert all(float(g[0].abs().max()) > 0 for g in grads)
    # Everything attached is gone: the modules run their own forwards again.
    assert all("forward" not in layer.attn.__dict__ for layer in scene.module.encoder)


def test_one_decoder_layer_with_silent_self_attention_gives_the_cross_attention_term():
    torch.manual_seed(1)
    model = scene_detector(encoder_layers=1, decoder_layers=1)
    d = SCENE["d_model"]
    with torch.no_grad():  # zero values: self-attention outputs do not depend on A, so ∇A = 0 and Ā = 0
        for mha in (model.module.encoder[0].attn, model.module.decoder[0].self_attn):
            mha.in_proj_weight[2 * d:] = 0
            mha.in_proj_bias[2 * d:] = 0
    x = torch.randn(1, 3, SIZE, SIZE)
    explanation = sl.get_explainer("chefer_detr")(model, x, "all")
    target = explanation_target(model, x)
    with torch.enable_grad(), model.capture_attention(grad=True) as record:
        logits = model(x).logits
    for row in range(len(target)):
        q, c = int(target.queries[row]), int(target.classes[row])
        (grad,) = torch.autograd.grad(logits[0, q, c], record.cross[0], retain_graph=True)
        by_hand = (grad * record.cross[0])[0, :, q].detach().clamp(min=0).mean(0)  # mean_heads((∇A ⊙ A)⁺), row q
        assert float(by_hand.max()) > 0
        torch.testing.assert_close(explanation.maps[row], upsample(by_hand, record.grid)[0])


def explanation_target(model, x) -> DetectionTarget:
    from salience.methods.base import resolve_for

    with torch.no_grad():
        return resolve_for(model, "all", model(x))


# --- the method on detectors -----------------------------------------------------------------------------------

def test_scene_detr_maps_are_finite_non_negative_one_per_detection_and_batch_independent(scene):
    x = torch.randn(2, 3, SIZE, SIZE)
    explainer = sl.get_explainer("chefer-generic")
    both = explainer(scene, x, "all")
    assert both.method == "chefer_detr" and both.maps.shape == (4, SIZE, SIZE)
    assert torch.equal(both.image_index, torch.tensor([0, 0, 1, 1]))
    assert torch.isfinite(both.maps).all() and (both.maps >= 0).all() and (both.maps.flatten(1).amax(1) > 0).all()
    singles = torch.cat([explainer(scene, x[i:i + 1], "all").maps for i in range(2)])
    torch.testing.assert_close(both.maps, singles, rtol=1e-4, atol=1e-7)
    one_per_pass = sl.get_explainer("chefer_detr", batch_size=1)(scene, x, "all").maps
    torch.testing.assert_close(both.maps, one_per_pass, rtol=1e-4, atol=1e-7)


def test_models_without_dense_attention_and_classifiers_are_refused(scene):
    deformable = build_scene_detector(dict(architecture="scene-deformable-detr", num_classes=3, num_queries=5,
                                           d_model=32, heads=2, ffn=32, encoder_layers=1, decoder_layers=1,
                                           input_size=SIZE), pretrained_backbone=False).eval()
    model = as_detector_model(deformable, ["a", "b", "c"], score_threshold=0.0, top_k=1)
    with pytest.raises(SalienceError, match="eive, drise, odam or gradcam"):
        sl.get_explainer("chefer_detr")(model, torch.randn(1, 3, SIZE, SIZE))


# --- Hugging Face DETR -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=["Detr", "ConditionalDetr"])
def hf_detr(request, tmp_path_factory):
    tr = require("transformers")
    torch.manual_seed(0)
    backbone = tr.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic",
                               out_features=["stage1", "stage2"])
    config = getattr(tr, f"{request.param}Config")(
        use_timm_backbone=False, use_pretrained_backbone=False, backbone_config=backbone, d_model=32, encoder_layers=2,
        decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        num_queries=5, num_labels=3)
    path = tmp_path_factory.mktemp(request.param)
    getattr(tr, f"{request.param}ForObjectDetection")(config).eval().save_pretrained(path)
    return sl.load_model("hf:" + str(path), input_size=SIZE, score_threshold=0.0, top_k=2)


def reference_relevance(module, x, query: int, cls: int) -> torch.Tensor:
    """Chefer's rules written out plainly for one detection, on the maps ``output_attentions`` returns
    (parameters not frozen, so every map is in the graph through them)."""
    with torch.enable_grad():
        out = module(x, output_attentions=True)
        maps = [*out.encoder_attentions, *out.decoder_attentions, *out.cross_attentions]
        grads = torch.autograd.grad(out.logits[0, query, cls], maps)
    layers = len(out.encoder_attentions)
    cams = [(g[0] * a[0].detach()).clamp(min=0).mean(0) for a, g in zip(maps, grads)]
    enc, dec_self, dec_cross = cams[:layers], cams[layers:layers + len(out.decoder_attentions)], cams[-len(out.cross_attentions):]

    def handle_residual(r):
        rest = r - torch.eye(len(r))
        rows = rest.sum(-1, keepdim=True)
        rest = torch.where(rows > 0, rest / rows.clamp_min(1e-30), torch.zeros_like(rest))
        return rest + torch.eye(len(r))

    r_ii = torch.eye(enc[0].shape[0])
    for cam in enc:
        r_ii = r_ii + cam @ r_ii
    r_qq, r_qi = torch.eye(dec_self[0].shape[0]), torch.zeros(dec_cross[0].shape)
    for cam_self, cam_cross in zip(dec_self, dec_cross):
        r_qq, r_qi = r_qq + cam_self @ r_qq, r_qi + cam_self @ r_qi
        r_qi = r_qi + handle_residual(r_qq).t() @ cam_cross @ handle_residual(r_ii)
    return r_qi[query]


def test_hf_detr_agrees_with_a_plain_reference_on_output_attentions(hf_detr):
    x = torch.randn(2, 3, SIZE, SIZE)
    explanation = sl.get_explainer("chefer_detr")(hf_detr, x, "all")
    target = explanation_target(hf_detr, x)
    assert explanation.maps.shape == (len(target), SIZE, SIZE) == (4, SIZE, SIZE)
    assert torch.isfinite(explanation.maps).all() and (explanation.maps >= 0).all()
    with torch.no_grad(), hf_detr.capture_attention() as record:
        hf_detr.module(x[:1])
    for row in range(len(target)):
        b, q, c = int(target.image_index[row]), int(target.queries[row]), int(target.classes[row])
        expected = upsample(reference_relevance(hf_detr.module, x[b:b + 1], q, c), record.grid)[0]
        assert float(expected.max()) > 0
        torch.testing.assert_close(explanation.maps[row], expected, rtol=1e-4, atol=1e-7)
    singles = torch.cat([sl.get_explainer("chefer_detr")(hf_detr, x[i:i + 1], "all").maps for i in range(2)])
    torch.testing.assert_close(explanation.maps, singles, rtol=1e-4, atol=1e-6)  # maps ~1e-3


def test_hf_detr_recording_keeps_outputs(hf_detr):
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        plain = hf_detr.module(x)
        with hf_detr.capture_attention() as record:
            recorded = hf_detr.module(x)
        returned = hf_detr.module(x, output_attentions=True)
    assert torch.equal(plain.logits, recorded.logits) and torch.equal(plain.pred_boxes, recorded.pred_boxes)
    for ours, theirs in zip(record.encoder + record.decoder_self + record.cross,
                            [*returned.encoder_attentions, *returned.decoder_attentions, *returned.cross_attentions]):
        assert torch.equal(ours, theirs)


def test_cost_is_one_forward_per_image_batch_and_one_backward_per_detection_rank(scene, monkeypatch):
    forwards, backwards = [], []
    handle = scene.module.register_forward_hook(lambda *_: forwards.append(1))
    grad = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: backwards.append(1) or grad(*a, **k))
    try:
        explanation = sl.get_explainer("chefer_detr")(scene, torch.randn(3, 3, SIZE, SIZE), "all")
    finally:
        handle.remove()
    assert len(explanation.maps) == 6  # 2 detections in each of 3 images
    assert len(forwards) == 2  # the inference pass that picks the detections, and one pass with the attention graph
    assert len(backwards) == 2  # the k-th detections of all images share a backward pass
