"""Attention methods (raw attention, rollout, Chefer): known answers on toys with forced
attention, and agreement with straightforward re-implementations on a tiny timm ViT."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import salience as sl
from salience.errors import SalienceError
from salience.models.anatomy import TokenAnatomy
from salience.targets import ClassTarget

from .vit_toys import forced_model, timm_model

METHODS = ["raw_attention", "rollout", "chefer"]


def target_for(classes):
    return ClassTarget(torch.tensor(classes), torch.arange(len(classes)))


def patch_box(patch, side=4):
    """Top-left pixel of a 16-px patch in a side × side grid."""
    r, c = divmod(patch, side)
    return r * 16, c * 16


def test_rollout_of_identity_attention_is_uniform_over_patches():
    model = forced_model("identity")
    x = torch.rand(2, 3, 64, 64)
    maps = sl.get_explainer("rollout").attribute(model, x, target_for([0, 0]))
    torch.testing.assert_close(maps, torch.zeros_like(maps), atol=1e-12, rtol=0)  # class token keeps to itself


def test_rollout_of_uniform_attention_has_the_closed_form():
    """A = J/N in all L layers: Â = (I + J/N)/2, so the class row of Â^L gives every patch
    (1 - 2^-L)/N."""
    model = forced_model("uniform", depth=3)
    x = torch.rand(2, 3, 64, 64)
    maps = sl.get_explainer("rollout").attribute(model, x, target_for([0, 0]))
    n = 17
    torch.testing.assert_close(maps, torch.full_like(maps, (1 - 2**-3) / n), atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("patch", [5, 10])
def test_attention_forced_onto_one_patch_peaks_there(method, patch):
    model = forced_model("patch", patch=patch)
    x = torch.rand(2, 3, 64, 64)
    maps = sl.get_explainer(method).attribute(model, x, target_for([0, 0]))
    top, left = patch_box(patch)
    peak = maps.flatten(1).argmax(1)
    assert ((peak // 64 - top).clamp(0, 15) == peak // 64 - top).all()
    assert ((peak % 64 - left).clamp(0, 15) == peak % 64 - left).all()
    far = torch.ones(64, 64, dtype=torch.bool)  # pixels more than 16 px from the patch
    far[max(top - 16, 0):top + 32, max(left - 16, 0):left + 32] = False
    assert (maps[:, far].abs().amax(1) < 1e-3 * maps.flatten(1).amax(1)).all()


def jacobgil_rollout(attentions, discard_ratio, head_fusion):
    """vit-explain's rollout (one image), with the row normalisation keepdim-correct and the
    weakest weights dropped per row (class-token column protected)."""
    result = torch.eye(attentions[0].size(-1))
    for attention in attentions:
        fused = getattr(attention, head_fusion)(dim=0)
        fused = fused if head_fusion == "mean" else fused.values
        fused = fused.clone()
        drop = int(fused.size(-1) * discard_ratio)
        for row in fused:
            order = [int(i) for i in row.argsort() if i != 0][:drop]
            row[order] = 0
        a = (fused + torch.eye(fused.size(-1))) / 2
        a = a / a.sum(dim=-1, keepdim=True)
        result = a @ result
    return result[0, 1:]


def eager_attentions(module, x):
    maps = []
    for block in module.blocks:
        block.attn.fused_attn = False
    handles = [b.attn.attn_drop.register_forward_hook(lambda m, i, o: maps.append(o)) for b in module.blocks]
    try:
        out = module(x)
    finally:
        for h in handles:
            h.remove()
        for block in module.blocks:
            block.attn.fused_attn = True
    return out, maps


def to_map(patch_values, side, size):
    return F.interpolate(patch_values.reshape(-1, 1, side, side), size=size, mode="bilinear", align_corners=False)[:, 0]


@pytest.mark.parametrize("head_fusion,discard_ratio", [("mean", 0.0), ("max", 0.5), ("min", 0.3)])
def test_rollout_matches_a_straightforward_reimplementation(head_fusion, discard_ratio):
    model = timm_model(size=48, depth=3)
    x = torch.randn(2, 3, 48, 48)
    ours = sl.get_explainer("rollout", head_fusion=head_fusion, discard_ratio=discard_ratio).attribute(
        model, x, target_for([0, 1]))
    with torch.no_grad():
        _, maps = eager_attentions(model.module, x)
    expected = torch.stack([jacobgil_rollout([a[i] for a in maps], discard_ratio, head_fusion) for i in range(2)])
    torch.testing.assert_close(ours, to_map(expected, 3, (48, 48)), atol=1e-6, rtol=1e-5)


def test_raw_attention_is_the_class_row_of_the_chosen_layer():
    model = timm_model(size=48, depth=3)
    x = torch.randn(2, 3, 48, 48)
    ours = sl.get_explainer("raw_attention", layer=1, head_fusion="max").attribute(model, x, target_for([0, 1]))
    with torch.no_grad():
        _, maps = eager_attentions(model.module, x)
    torch.testing.assert_close(ours, to_map(maps[1].amax(1)[:, 0, 1:], 3, (48, 48)), atol=1e-6, rtol=1e-5)


def test_chefer_matches_a_hand_written_reference():
    model = timm_model(size=48, depth=3)
    x = torch.randn(2, 3, 48, 48)
    classes = [3, 1]
    ours = sl.get_explainer("chefer").attribute(model, x, target_for(classes))
    out, maps = eager_attentions(model.module, x.clone().requires_grad_(True))
    grads = torch.autograd.grad(out[[0, 1], classes].sum(), maps)
    expected = []
    for i in range(2):
        r = torch.eye(10)
        for a, g in zip(maps, grads):
            cam = (g[i] * a[i]).clamp(min=0).mean(0)
            r = r + cam @ r
        expected.append(r[0, 1:])
    torch.testing.assert_close(ours, to_map(torch.stack(expected).detach(), 3, (48, 48)), atol=1e-6, rtol=1e-4)
    assert all(p.requires_grad and p.grad is None for p in model.module.parameters())


@pytest.mark.parametrize("method", METHODS)
def test_a_batch_equals_single_images(method):
    model = timm_model(size=32)
    x = torch.randn(2, 3, 32, 32)
    explainer = sl.get_explainer(method)
    both = explainer.attribute(model, x, target_for([0, 4]))
    one = torch.cat([explainer.attribute(model, x[:1], target_for([0])),
                     explainer.attribute(model, x[1:], target_for([4]))])
    torch.testing.assert_close(both, one, atol=1e-6, rtol=1e-5)


def test_register_tokens_stay_out_of_the_map():
    model = timm_model(size=32, reg_tokens=2)
    assert model.anatomy.prefix_tokens == 3
    x = torch.randn(2, 3, 32, 32)
    for method in METHODS:
        expl = sl.explain(model, x, method=method, target="top1")
        assert expl.maps.shape == (2, 32, 32) and torch.isfinite(expl.maps).all()


def test_explain_end_to_end_costs_no_extra_forward():
    model = timm_model(size=32)
    x = torch.randn(3, 3, 32, 32)
    calls = []
    handle = model.module.register_forward_hook(lambda *a: calls.append(1))
    expl = sl.explain(model, x, method="transformer_attribution", target="top1")
    handle.remove()
    assert expl.method == "chefer" and expl.maps.shape == (3, 32, 32) and len(calls) == 1
    with torch.inference_mode():
        logits = model(x)
    assert torch.equal(expl.classes, logits.argmax(1))
    torch.testing.assert_close(expl.scores, logits.amax(1), atol=1e-5, rtol=0)


def test_clear_errors_without_a_token_grid():
    x = torch.randn(1, 3, 32, 32)
    plain = sl.wrap(torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()),
                    input_size=32)
    with pytest.raises(SalienceError, match="gradcam"):
        sl.explain(plain, x, method="rollout")
    swin_like = timm_model(size=32)
    swin_like.anatomy = TokenAnatomy(patch_size=(4, 4), prefix_tokens=0, layout="nhwc", hierarchical=True)
    with pytest.raises(SalienceError, match="hierarchical"):
        sl.explain(swin_like, x, method="chefer")
    with pytest.raises(ValueError):
        sl.get_explainer("rollout", head_fusion="median")


class MhaViT(torch.nn.Module):
    """A small ViT on nn.MultiheadAttention, asking for its weights or not."""

    def __init__(self, need_weights: bool):
        super().__init__()
        self.need_weights = need_weights
        self.embed = torch.nn.Conv2d(3, 16, 16, 16)
        self.cls = torch.nn.Parameter(torch.randn(1, 1, 16))
        self.attns = torch.nn.ModuleList(torch.nn.MultiheadAttention(16, 2, batch_first=True) for _ in range(2))
        self.head = torch.nn.Linear(16, 3)

    def forward(self, x):
        h = torch.cat([self.cls.expand(x.shape[0], -1, -1), self.embed(x).flatten(2).transpose(1, 2)], 1)
        for attn in self.attns:
            h = h + torch.tanh(attn(h, h, h, need_weights=self.need_weights)[0])
        return self.head(h[:, 0])


def test_chefer_is_the_same_when_attention_does_not_go_through_sdpa():
    models = []
    for need_weights in (False, True):
        torch.manual_seed(0)
        model = sl.wrap(MhaViT(need_weights), input_size=32)
        model.anatomy = TokenAnatomy(patch_size=(16, 16), prefix_tokens=1, attentions=["attns.0", "attns.1"])
        models.append(model)
    x = torch.randn(2, 3, 32, 32)
    fused, explicit = (sl.get_explainer("chefer").attribute(m, x, target_for([2, 0])) for m in models)
    assert fused.abs().max() > 0
    torch.testing.assert_close(fused, explicit, atol=1e-6, rtol=1e-4)
