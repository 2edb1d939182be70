"""Vision transformers without a reshape_transform: anatomy discovery (timm, Hugging Face),
CAMs on token features against pytorch-grad-cam, every method on a tiny ViT, IG completeness."""

from __future__ import annotations

import pytest
import torch

import salience as sl
from salience.methods import available_methods
from salience.methods.cam import GradCam
from salience.methods.gradient import IntegratedGradients
from salience.models.anatomy import TokenAnatomy

from .conftest import require
from .test_cam import minmax, pearson

VIT = dict(img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=2, num_classes=5)
SWIN = dict(img_size=64, patch_size=4, embed_dim=16, depths=(1, 1), num_heads=(1, 2), window_size=4, num_classes=5)


def load_timm_tiny(tmp_path, name, **config):
    """A tiny timm model saved to disk and loaded back through ``timm:NAME`` (checkpoint path)."""
    timm = require("timm")
    original = timm.create_model(name, pretrained=False, **config).eval()
    path = tmp_path / f"{name}.pth"
    torch.save(original.state_dict(), path)
    return sl.load_model(f"timm:{name}", checkpoint_path=str(path), **config), original


@pytest.fixture
def tiny_vit(tmp_path):
    return load_timm_tiny(tmp_path, "vit_tiny_patch16_224", **VIT)


# -- anatomy: timm -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, extra, prefix",
    [("vit_tiny_patch16_224", {}, 1), ("vit_tiny_patch16_224", {"reg_tokens": 4}, 5),
     ("deit_tiny_distilled_patch16_224", {}, 2)],
    ids=["vit", "vit_registers", "deit_distilled"],
)
def test_timm_vit_anatomy(tmp_path, name, extra, prefix):
    model, original = load_timm_tiny(tmp_path, name, **VIT, **extra)
    anatomy = model.anatomy
    assert anatomy.patch_size == (16, 16) and anatomy.prefix_tokens == prefix
    assert anatomy.blocks == ["blocks.0", "blocks.1"] and anatomy.attentions == ["blocks.0.attn", "blocks.1.attn"]
    assert model.cam_layer_name == "blocks.1.norm1" and anatomy.layout == "tokens" and not anatomy.hierarchical
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), original(x), rtol=0, atol=0)
        tokens = original.forward_features(x)
    assert tokens.shape[1] == prefix + 16 == anatomy.prefix_tokens + anatomy.grid((64, 64))[0] ** 2


def test_timm_dynamic_size_grid(tmp_path):
    """``dynamic_img_size=True``: a 48×80 input gives a 3×5 grid of the right features."""
    model, original = load_timm_tiny(tmp_path, "vit_tiny_patch16_224", **VIT, dynamic_img_size=True)
    x = torch.randn(2, 3, 48, 80)
    grid = model.anatomy.grid((48, 80))
    assert grid == (3, 5)
    with torch.inference_mode():
        tokens = original.forward_features(x)
    maps = model.anatomy.maps(tokens, (48, 80))
    assert maps.shape == (2, 32, 3, 5)
    torch.testing.assert_close(maps[:, :, 1, 4], tokens[:, 1 + 1 * 5 + 4])  # row 1, column 4


def test_timm_swin_anatomy(tmp_path):
    model, original = load_timm_tiny(tmp_path, "swin_tiny_patch4_window7_224", **SWIN)
    anatomy = model.anatomy
    assert anatomy.patch_size == (4, 4) and anatomy.prefix_tokens == 0
    assert anatomy.layout == "nhwc" and anatomy.hierarchical
    assert anatomy.blocks == ["layers.0.blocks.0", "layers.1.blocks.0"]
    assert anatomy.attentions == ["layers.0.blocks.0.attn", "layers.1.blocks.0.attn"]
    assert model.cam_layer_name == "layers.1.blocks.0.norm1"


def test_cnn_has_no_anatomy(tmp_path):
    model, _ = load_timm_tiny(tmp_path, "resnet10t", num_classes=3)
    assert model.anatomy is None and model.cam_layer_name == "layer4"


# -- CAMs against pytorch-grad-cam with its documented reshape transforms ------------------
def vit_reshape(tensor, height=4, width=4):
    """pytorch-grad-cam's ``reshape_transform`` for ViT (tutorial ``vision_transformers``)."""
    result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
    return result.transpose(2, 3).transpose(1, 2)


def swin_reshape(tensor, height=8, width=8):
    """pytorch-grad-cam's ``reshape_transform`` for Swin (timm's blocks now give NHWC already)."""
    result = tensor.reshape(tensor.size(0), height, width, tensor.size(-1))
    return result.transpose(2, 3).transpose(1, 2)


def peer_gradcam(pgc, model, layer, reshape, x, classes):
    with pgc.GradCAM(model=model.module, target_layers=[layer], reshape_transform=reshape) as cam:
        maps = cam(input_tensor=x, targets=[(lambda out, c=c: out[c]) for c in classes])
    model.module.zero_grad(set_to_none=True)
    return torch.from_numpy(maps)


def test_gradcam_on_vit_matches_pytorch_grad_cam(tiny_vit):
    pgc = require("pytorch_grad_cam")
    model, _ = tiny_vit
    x = torch.randn(2, 3, 64, 64)
    ours = GradCam()(model, x, [1, 3]).maps
    theirs = peer_gradcam(pgc, model, model.cam_layer, vit_reshape, x, [1, 3])
    for i in range(2):
        assert pearson(minmax(ours)[i], theirs[i]) > 0.999


def test_gradcam_on_swin_matches_pytorch_grad_cam(tmp_path):
    pgc = require("pytorch_grad_cam")
    model, _ = load_timm_tiny(tmp_path, "swin_tiny_patch4_window7_224", **SWIN)
    x = torch.randn(2, 3, 64, 64)
    ours = GradCam()(model, x, [0, 4]).maps
    theirs = peer_gradcam(pgc, model, model.cam_layer, swin_reshape, x, [0, 4])  # last stage: 8×8
    for i in range(2):
        assert pearson(minmax(ours)[i], theirs[i]) > 0.999


def test_layer_override_on_vit(tiny_vit):
    model, _ = tiny_vit
    x = torch.randn(2, 3, 64, 64)
    maps = sl.explain(model, x, "gradcam", target=[0, 1], layer="blocks.0.norm2").maps
    assert maps.shape == (2, 64, 64) and torch.isfinite(maps).all()


# -- every method on a tiny ViT --------------------------------------------------------------
FAST = {"smoothgrad": {"n_samples": 4}, "integrated_gradients": {"steps": 8}, "rise": {"n_masks": 64},
        "occlusion": {"window": 16, "stride": 16}}


@pytest.mark.parametrize("method", sorted(m for m in available_methods("classification") if not m.startswith("_")))
def test_every_method_runs_on_a_tiny_vit(tiny_vit, method):
    if method in ("random", "center"):
        pytest.skip("reference maps ignore the model")
    model, _ = tiny_vit
    x = torch.randn(2, 3, 64, 64)
    expl = sl.explain(model, x, method, target="top1", **FAST.get(method, {}))
    maps = expl.maps
    assert maps.shape == (2, 64, 64) and torch.isfinite(maps).all()
    assert (maps.flatten(1).std(1) > 0).all()


def test_integrated_gradients_completeness_on_vit(tiny_vit):
    """Σ attributions ≈ f(x) − f(baseline) for each of B=2 rows."""
    model, _ = tiny_vit
    x = torch.randn(2, 3, 64, 64)
    classes = [2, 4]
    from salience.methods.gradient import integrated_gradients_attributions
    from salience.targets import ClassTarget

    target = ClassTarget(torch.tensor(classes), torch.arange(2))
    attributions = integrated_gradients_attributions(model, x, target, torch.zeros_like(x), steps=64)
    with torch.no_grad():
        gap = model(x)[[0, 1], classes] - model(torch.zeros_like(x))[[0, 1], classes]
    torch.testing.assert_close(attributions.sum((1, 2, 3)), gap, rtol=0.03, atol=0.01)
    assert IntegratedGradients(steps=8)(model, x, classes).maps.shape == (2, 64, 64)


# -- Hugging Face ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def transformers():
    return require("transformers")


HF = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
          image_size=32, patch_size=8, num_labels=3)


@pytest.mark.parametrize("kind, prefix", [("ViT", 1), ("DeiT", 2), ("DeiTWithTeacher", 2)])
def test_hf_vit_deit_anatomy_sdpa_and_outputs(tmp_path, transformers, kind, prefix):
    family = kind.replace("WithTeacher", "")
    config = getattr(transformers, f"{family}Config")(**HF)
    cls = getattr(transformers, f"{family}ForImageClassification{'WithTeacher' if 'Teacher' in kind else ''}")
    original = cls(config).eval()
    original.save_pretrained(tmp_path)
    model = sl.load_model(f"hf:{tmp_path}")
    assert model.module.config._attn_implementation == "sdpa"
    anatomy = model.anatomy
    assert anatomy.patch_size == (8, 8) and anatomy.prefix_tokens == prefix
    root = family.lower()
    assert anatomy.blocks == [f"{root}.layers.0", f"{root}.layers.1"]
    assert anatomy.attentions == [f"{root}.layers.0.attention", f"{root}.layers.1.attention"]
    assert model.cam_layer_name == f"{root}.layers.1.layernorm_before"
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), original(x).logits, rtol=0, atol=0)
        hidden = original(x, output_hidden_states=True).hidden_states[-1]
    assert hidden.shape[1] == prefix + 16
    assert sl.explain(model, x, "gradcam").maps.shape == (2, 32, 32)


def test_hf_interpolate_pos_encoding_and_eager_choice(tmp_path, transformers):
    original = transformers.ViTForImageClassification(transformers.ViTConfig(**HF)).eval()
    original.save_pretrained(tmp_path)
    model = sl.load_model(f"hf:{tmp_path}", interpolate_pos_encoding=True, attn_implementation="eager")
    assert model.module.config._attn_implementation == "eager"
    x = torch.randn(2, 3, 48, 64)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), original(x, interpolate_pos_encoding=True).logits, rtol=0, atol=1e-6)  # eager vs sdpa
    assert model.anatomy.grid((48, 64)) == (6, 8)
    maps = GradCam()(model, x, [0, 2]).maps
    assert maps.shape == (2, 48, 64) and (maps.flatten(1).std(1) > 0).all()


def test_anatomy_maps_rejects_wrong_grid():
    anatomy = TokenAnatomy(patch_size=(16, 16), prefix_tokens=1)
    with pytest.raises(ValueError, match="do not match the grid"):
        anatomy.maps(torch.zeros(1, 1 + 15, 8), (64, 64))
