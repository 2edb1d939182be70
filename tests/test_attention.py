"""`capture_attention`: fused attention recorded without changing outputs, on timm, Hugging
Face and open_clip ViTs, checked against the attention each library computes eagerly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import salience as sl
from salience.attention import capture_attention
from salience.models.anatomy import TokenAnatomy

from .conftest import require
from .vit_toys import tiny_timm_vit

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def check_maps(maps, count, tokens):
    assert len(maps) == count
    for a in maps:
        assert a.shape[0] == X.shape[0] and a.shape[-2:] == (tokens, tokens)
        torch.testing.assert_close(a.sum(-1), torch.ones_like(a[..., 0]), atol=1e-5, rtol=0)


def close(maps, reference):
    assert len(maps) == len(reference)
    for a, r in zip(maps, reference):
        torch.testing.assert_close(a, r, atol=1e-5, rtol=0)


@pytest.mark.parametrize("q_heads,kv_heads", [(4, 4), (4, 2)])
@pytest.mark.parametrize("mask", ["none", "bool", "float", "causal"])
def test_probabilities_follow_sdpa_conventions(mask, q_heads, kv_heads):
    """With grad=True the output is A @ V from the recorded A: it must equal real SDPA."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, q_heads, 5, 8, generator=g)
    k, v = torch.randn(2, kv_heads, 6, 8, generator=g), torch.randn(2, kv_heads, 6, 8, generator=g)
    kwargs = {"scale": 0.3, "enable_gqa": q_heads != kv_heads}
    if mask == "bool":
        kwargs["attn_mask"] = torch.rand(5, 6, generator=g) > 0.3
        kwargs["attn_mask"][:, 0] = True
    elif mask == "float":
        kwargs["attn_mask"] = torch.randn(2, 1, 5, 6, generator=g)
    elif mask == "causal":
        kwargs["is_causal"] = True
    expected = F.scaled_dot_product_attention(q, k, v, **kwargs)
    for grad in (False, True):
        with capture_attention(nn.Identity(), grad=grad) as rec:
            out = F.scaled_dot_product_attention(q, k, v, **kwargs)
        if grad:
            torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
        else:
            assert torch.equal(out, expected)
        assert rec.maps[0].shape == (2, q_heads, 5, 6)
        if mask == "causal":
            assert rec.maps[0].triu(1).abs().max() == 0


def test_chosen_layers_only_are_recorded():
    from .vit_toys import timm_model

    model = timm_model(depth=3)
    with torch.inference_mode():
        with capture_attention(model) as every:
            plain = model(X)
        with capture_attention(model, layers=[-1, 0]) as chosen:
            captured = model(X)
    assert torch.equal(plain, captured)
    assert len(chosen.maps) == 2  # forward order: layer 0, then the last
    assert torch.equal(chosen.maps[0], every.maps[0]) and torch.equal(chosen.maps[1], every.maps[2])
    with pytest.raises(IndexError, match="out of range for 3"):
        with capture_attention(model, layers=[3]):
            pass
    with pytest.raises(ValueError, match="anatomy"):
        with capture_attention(model.module, layers=[0]):
            pass


def test_inexact_outputs_reuse_the_maps_and_agree_within_rounding():
    model = tiny_timm_vit(depth=3)
    with torch.inference_mode():
        with capture_attention(model) as exact:
            plain = model(X)
        with capture_attention(model, exact_outputs=False) as reused:
            out = model(X)
    torch.testing.assert_close(out, plain, atol=1e-5, rtol=1e-5)
    for a, b in zip(reused.maps, exact.maps):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="exact_outputs"):
        with capture_attention(model, keep_outputs=True, exact_outputs=False):
            pass


def test_timm_vit_fused_matches_eager():
    model = tiny_timm_vit()
    with torch.inference_mode():
        plain = model(X)
        with capture_attention(model) as rec:
            captured = model(X)
    assert torch.equal(plain, captured)
    check_maps(rec.maps, 2, 5)
    eager = []
    for block in model.blocks:
        block.attn.fused_attn = False
        block.attn.attn_drop.register_forward_hook(lambda m, i, o: eager.append(o))
    with torch.inference_mode():
        model(X)
    close(rec.maps, eager)


def test_grad_capture_puts_maps_in_the_graph():
    model = tiny_timm_vit()
    with torch.inference_mode():
        plain = model(X)
    for p in model.parameters():
        p.requires_grad_(False)
    with capture_attention(model, grad=True) as rec:
        out = model(X)
    torch.testing.assert_close(out, plain, atol=1e-5, rtol=0)
    grads = torch.autograd.grad(out[:, 1].sum(), rec.maps)
    assert all(g.shape == a.shape and g.abs().sum() > 0 for g, a in zip(grads, rec.maps))
    # the gradient through the later attention layer is included: compare with the eager model
    eager = []
    for block in model.blocks:
        block.attn.fused_attn = False
        block.attn.attn_drop.register_forward_hook(lambda m, i, o: eager.append(o))
    x = X.clone().requires_grad_(True)  # builds the whole graph
    out = model(x)
    reference = torch.autograd.grad(out[:, 1].sum(), eager)
    for g, r in zip(grads, reference):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-4)


def _hf_roundtrip(module, tmp_path, cls):
    module.save_pretrained(tmp_path)
    return cls.from_pretrained(tmp_path).eval()


def test_hf_vit_sdpa_matches_eager_attentions(tmp_path):
    tr = require("transformers")
    torch.manual_seed(0)
    cfg = tr.ViTConfig(image_size=32, patch_size=16, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                       intermediate_size=64, num_labels=5)
    model = _hf_roundtrip(tr.ViTForImageClassification(cfg), tmp_path, tr.ViTForImageClassification)
    assert model.config._attn_implementation == "sdpa"
    with torch.inference_mode():
        plain = model(pixel_values=X).logits
        with capture_attention(model) as rec:
            captured = model(pixel_values=X).logits
    assert torch.equal(plain, captured)
    check_maps(rec.maps, 3, 5)
    model.set_attn_implementation("eager")
    with torch.inference_mode():
        close(rec.maps, model(pixel_values=X, output_attentions=True).attentions)


def test_hf_clip_vision_sdpa_matches_eager_attentions(tmp_path):
    tr = require("transformers")
    torch.manual_seed(0)
    cfg = tr.CLIPVisionConfig(image_size=32, patch_size=16, hidden_size=32, num_hidden_layers=2,
                              num_attention_heads=2, intermediate_size=64)
    model = _hf_roundtrip(tr.CLIPVisionModel(cfg), tmp_path, tr.CLIPVisionModel)
    with torch.inference_mode():
        plain = model(pixel_values=X).pooler_output
        with capture_attention(model) as rec:
            captured = model(pixel_values=X).pooler_output
    assert torch.equal(plain, captured)
    check_maps(rec.maps, 2, 5)
    model.set_attn_implementation("eager")
    with torch.inference_mode():
        close(rec.maps, model(pixel_values=X, output_attentions=True).attentions)


def tiny_open_clip():
    open_clip = require("open_clip")
    torch.manual_seed(0)
    return open_clip.CLIP(
        embed_dim=8,
        vision_cfg={"image_size": 32, "patch_size": 16, "width": 32, "layers": 2, "head_width": 16, "mlp_ratio": 2.0},
        text_cfg={"context_length": 6, "vocab_size": 40, "width": 32, "heads": 2, "layers": 3},
    ).eval()


def mha_weights(attention_modules):
    """Per-head weights from each nn.MultiheadAttention, recomputed with need_weights=True."""
    weights = []

    def hook(module, args, kwargs, _output):
        call = {**kwargs, "need_weights": True, "average_attn_weights": False}
        weights.append(module.forward(*args, **call)[1])

    handles = [m.register_forward_hook(hook, with_kwargs=True) for m in attention_modules]
    return weights, handles


def test_open_clip_multihead_attention_is_captured():
    """nn.MultiheadAttention with need_weights=False: its native fast path is skipped while
    capturing, so outputs agree within float rounding (not bit for bit)."""
    clip = tiny_open_clip()
    visual = clip.visual
    with torch.inference_mode():
        plain = visual(X)
        with capture_attention(visual) as rec:
            captured = visual(X)
    torch.testing.assert_close(captured, plain, atol=1e-5, rtol=0)
    check_maps(rec.maps, 2, 5)
    weights, handles = mha_weights([b.attn for b in visual.transformer.resblocks])
    with torch.inference_mode():
        visual(X)
    for h in handles:
        h.remove()
    close(rec.maps, weights)
    with capture_attention(visual, grad=True) as rec:
        out = visual(X.clone().requires_grad_(True))
    torch.testing.assert_close(out, plain, atol=1e-5, rtol=0)
    assert all(g.abs().sum() > 0 for g in torch.autograd.grad(out.sum(), rec.maps))


def test_anatomy_restricts_capture_to_the_image_tower():
    clip = tiny_open_clip()
    model = sl.wrap(clip.visual, input_size=32)
    model.anatomy = TokenAnatomy(patch_size=(16, 16), prefix_tokens=1,
                                 attentions=[f"transformer.resblocks.{i}.attn" for i in range(2)])
    text = torch.randint(0, 40, (2, 6))
    with torch.inference_mode(), capture_attention(model) as rec:
        clip.encode_text(text)
        clip.encode_image(X)
        clip.encode_text(text)
    check_maps(rec.maps, 2, 5)
    with torch.inference_mode(), capture_attention(clip) as everything:
        clip.encode_text(text)
        clip.encode_image(X)
    assert len(everything.maps) == 5  # three text layers (causal) and two image layers
    assert everything.maps[0].triu(1).abs().max() == 0


def test_nothing_stays_patched_after_an_error():
    clip = tiny_open_clip()
    attn = clip.visual.transformer.resblocks[0].attn
    model = sl.wrap(clip.visual, input_size=32)
    model.anatomy = TokenAnatomy(patch_size=(16, 16), prefix_tokens=1, attentions=["transformer.resblocks.0.attn"])
    tokens = torch.randn(2, 5, 32)
    for grad in (False, True):
        with pytest.raises(RuntimeError), capture_attention(model, grad=grad):
            attn(tokens, tokens, tokens, need_weights=False, attn_mask=torch.zeros(3, 3))  # wrong mask shape
        assert F.multi_head_attention_forward.__globals__["scaled_dot_product_attention"] is F.scaled_dot_product_attention
        assert torch._C._len_torch_function_stack() == 0
        assert not attn._forward_hooks and not attn._forward_pre_hooks
    with pytest.raises(ValueError, match="boom"), capture_attention(model):
        raise ValueError("boom")
    assert torch._C._len_torch_function_stack() == 0 and not attn._forward_hooks


@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_asking_for_weights_is_recorded_per_head(batch_first):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
    tokens = torch.randn(2, 5, 16) if batch_first else torch.randn(5, 2, 16)
    with torch.inference_mode():
        out, averaged = mha(tokens, tokens, tokens)
        with capture_attention(mha) as rec:
            out_c, averaged_c = mha(tokens, tokens, tokens)
        _, per_head = mha(tokens, tokens, tokens, average_attn_weights=False)
    # batch_first modules take the native fast path when not captured: equal within rounding
    torch.testing.assert_close(out_c, out, atol=1e-6, rtol=0)
    torch.testing.assert_close(averaged_c, averaged, atol=1e-6, rtol=0)
    assert len(rec.maps) == 1
    torch.testing.assert_close(rec.maps[0], per_head, atol=1e-6, rtol=0)
    for options in ({"grad": True}, {"keep_outputs": True}):  # weights come from the routed SDPA call
        with capture_attention(mha, **options) as rec:
            out_g, averaged_g = mha(tokens, tokens, tokens)
        torch.testing.assert_close(out_g.detach(), out, atol=1e-5, rtol=0)
        torch.testing.assert_close(averaged_g.detach(), averaged, atol=1e-6, rtol=0)
        assert len(rec.maps) == 1 and len(rec.outputs) == int("keep_outputs" in options)
