"""The scene ViT: timm-like anatomy, attention capture, forced-attention closed forms,
every method batched, checkpoints, the shipped weights, and a resumable tiny training."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

import salience as sl
from salience.attention import capture_attention
from salience.data.scenes import SceneDataset
from salience.errors import SalienceError
from salience.methods.attention_maps import patch_map
from salience.models.zoo import scene_vit
from salience.models.checkpoint import save_head_checkpoint
from salience.models.zoo.scene_vit import SceneViT, as_model, load_scene_vit
from salience.targets import ClassTarget

NAMES = ["a", "b", "c"]


def small(size: int = 64, depth: int = 2, pretrained: bool = False, **kwargs) -> sl.Model:
    torch.manual_seed(0)
    module = SceneViT(3, dim=32, depth=depth, heads=2, input_size=size, pretrained_backbone=pretrained, **kwargs)
    return as_model(module, NAMES, name="small-vit")


def target_for(classes):
    return ClassTarget(torch.tensor(classes), torch.arange(len(classes)))


def test_anatomy_is_read_like_a_timm_vit():
    model = small()
    a = model.anatomy
    assert a.patch_size == (16, 16) and a.prefix_tokens == 1 and a.layout == "tokens"
    assert a.blocks == ["blocks.0", "blocks.1"] and a.attentions == ["blocks.0.attn", "blocks.1.attn"]
    assert model.cam_layer_name == "blocks.1.norm1"
    assert model.preprocess.size == (64, 64) and model.preprocess.mean == (0.5, 0.5, 0.5)
    assert len(model.module.backbone.blocks) == 11  # nothing after the last stride-16 block


def test_forward_is_the_head_on_the_backbone_and_capture_changes_nothing():
    model = small()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        plain = model(x)
        assert torch.equal(plain, model.module.head_forward(model.module.backbone(x)))
        with capture_attention(model) as record:
            captured = model(x)
    assert torch.equal(plain, captured)
    assert [m.shape for m in record.maps] == [(2, 2, 17, 17)] * 2


def test_recorded_attention_is_the_softmax_of_the_blocks_queries_and_keys():
    model = small()
    block = model.module.blocks[0]
    x = torch.randn(2, 3, 64, 64)
    inputs = []
    handle = block.norm1.register_forward_hook(lambda m, i, o: inputs.append(o))
    with torch.no_grad(), capture_attention(model) as record:
        model(x)
    handle.remove()
    q, k, _ = block.attn.qkv(inputs[0]).detach().reshape(2, 17, 3, 2, 16).permute(2, 0, 3, 1, 4)
    torch.testing.assert_close(record.maps[0], (q @ k.transpose(-1, -2) / 4).softmax(-1), atol=1e-6, rtol=1e-5)


def test_position_embeddings_interpolate_for_other_sizes():
    module = small().module
    assert module.position_embedding((4, 4)) is module.pos_embed
    with torch.no_grad():
        module.pos_embed[:, 1:] = 0.7  # a constant embedding stays constant under bicubic interpolation
    pos = module.position_embedding((6, 5))
    assert pos.shape == (1, 31, 32)
    torch.testing.assert_close(pos[:, 1:], torch.full((1, 30, 32), 0.7))
    with torch.no_grad():
        assert module(torch.randn(1, 3, 96, 80)).shape == (1, 3)


def forced_onto(patch: int, depth: int = 2) -> sl.Model:
    """A SceneViT whose every attention row sits on patch ``patch`` (of 4×4) in every block.

    Tokens carry no image content (zero patch embedding): token j is pos_j (+ class token).
    Only patch ``patch`` has a non-zero first coordinate after LayerNorm, keys read that
    coordinate and all queries are one large constant, so A ≈ one-hot(patch) in each row.
    Values carry the same coordinate into the direction e1 - e2 (mean zero, so LayerNorm
    keeps every other token's first coordinate at exactly zero), and class 0 reads e1 of
    the final norm: the score grows with the attention on the patch.
    """
    model = small(depth=depth)
    m = model.module
    with torch.no_grad():
        for p in m.parameters():
            if p.requires_grad:
                p.zero_()
        for norm in [m.norm] + [n for b in m.blocks for n in (b.norm1, b.norm2)]:
            norm.weight.fill_(1.0)
        m.cls_token[0, 0, 3] = 1.0
        m.pos_embed[0, 1 + patch, 0] = 10.0
        for block in m.blocks:
            w, b = block.attn.qkv.weight, block.attn.qkv.bias
            for h in range(2):
                b[16 * h] = 10.0  # queries: constant
                w[32 + 16 * h, 0] = 10.0  # keys: the first coordinate
                w[64 + 16 * h, 0] = 1.0  # values: the first coordinate
            block.attn.proj.weight[1, 0], block.attn.proj.weight[2, 0] = 1.0, -1.0
        m.head.weight[0, 1] = 1.0
    return model


def one_hot_map(patch: int, value: float) -> torch.Tensor:
    row = torch.zeros(1, 17)
    row[0, 1 + patch] = value
    return patch_map(row, 1, (4, 4), (64, 64))


@pytest.mark.parametrize("patch", [5, 10])
def test_forced_attention_closed_forms(patch):
    model = forced_onto(patch)
    x = torch.rand(2, 3, 64, 64)
    target = target_for([0, 0])
    raw = sl.get_explainer("raw_attention").attribute(model, x, target)
    torch.testing.assert_close(raw, one_hot_map(patch, 1.0).expand(2, -1, -1), atol=1e-6, rtol=0)
    # Â = (A + I)/2 in both layers: class row of Â₁Â₀ = e_cls/4 + 3/4 e_patch
    rollout = sl.get_explainer("rollout").attribute(model, x, target)
    torch.testing.assert_close(rollout, one_hot_map(patch, 0.75).expand(2, -1, -1), atol=1e-6, rtol=0)
    chefer = sl.get_explainer("chefer").attribute(model, x, target)
    peak = chefer.flatten(1).amax(1, keepdim=True)
    assert (peak > 0).all()
    expected = one_hot_map(patch, 1.0).flatten(1)
    torch.testing.assert_close(chefer.flatten(1) / peak, (expected / expected.max()).expand(2, -1), atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", ["raw_attention", "rollout", "chefer", "gradcam", "gradcam_pp", "layercam",
                                    "saliency", "integrated_gradients"])
def test_every_method_runs_batched_and_equals_single_images(method):
    model = small()
    x = torch.randn(2, 3, 64, 64)
    params = {"steps": 4} if method == "integrated_gradients" else {}
    explainer = sl.get_explainer(method, **params)
    both = explainer.attribute(model, x, target_for([0, 2]))
    one = torch.cat([explainer.attribute(model, x[:1], target_for([0])),
                     explainer.attribute(model, x[1:], target_for([2]))])
    assert both.shape == (2, 64, 64) and torch.isfinite(both).all() and both.abs().sum() > 0
    torch.testing.assert_close(both, one, atol=1e-5, rtol=1e-4)


def test_checkpoint_round_trip_gives_identical_logits(tmp_path):
    model = small(pretrained=True)
    path = tmp_path / "vit.pt"
    save_head_checkpoint(model.module, NAMES, path, meta={"note": 1})
    saved = torch.load(path, weights_only=True)
    assert not any(k.startswith("backbone.") for k in saved["state_dict"]) and saved["meta"] == {"note": 1}
    loaded = sl.load_model("scene-vit", name_or_path=path)
    by_prefix = sl.load_model(f"checkpoint:{path}")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x)) and torch.equal(by_prefix(x), model(x))
    assert loaded.class_names == NAMES and loaded.name == "vit" and loaded.anatomy == model.anatomy
    with pytest.raises(SalienceError, match="2 class names for a model with 3 classes"):
        save_head_checkpoint(model.module, NAMES[:2], path)


def test_missing_or_foreign_weights_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(scene_vit, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(SalienceError, match=r"no weights for 'scene-vit': .*scene-vit.pt is missing"):
        sl.load_model("scene-vit")
    torch.save({"config": {"architecture": "scene-detr"}, "class_names": [], "state_dict": {}}, tmp_path / "d.pt")
    with pytest.raises(SalienceError, match="not a scene-vit config"):
        load_scene_vit(tmp_path / "d.pt")


def test_shipped_weights_classify_unseen_scenes():
    if not (scene_vit.WEIGHTS_DIR / "scene-vit.pt").is_file():
        pytest.skip("scene-vit weights not trained yet")
    model = sl.load_model("scene-vit")
    scenes = SceneDataset(32, "classification", seed=7)  # neither the training (0) nor the held-out (1) seed
    assert model.class_names == list(scenes.class_names) and model.preprocess.size == (224, 224)
    x, _ = model.prepare(sl.load_images([s.image for s in scenes]))
    with torch.inference_mode():
        predicted = model(x).argmax(1)
    assert (predicted == torch.tensor([s.label for s in scenes])).float().mean() >= 0.8


def test_tiny_training_resumes_to_the_same_weights(tmp_path, monkeypatch):
    from salience.train.classifier import classifier_recipe, train_classifier

    recipe = classifier_recipe("scene-vit", steps=6, n_train=12)
    recipe = replace(recipe, n_held_out=8, model={**recipe.model, "dim": 32, "depth": 1, "heads": 2},
                     schedule=replace(recipe.schedule, batch_size=4, checkpoint_every=2, log_every=1))
    run = dict(recipe=recipe, progress=False, validate_every=2)
    straight = train_classifier("scene-vit", tmp_path, tmp_path / "a.pt", **run)
    shutil.rmtree(tmp_path / "runs")

    head_forward, calls = SceneViT.head_forward, []

    def interrupted(self, features):
        if self.training:
            calls.append(1)
            if len(calls) == 4:
                raise KeyboardInterrupt
        return head_forward(self, features)

    monkeypatch.setattr(SceneViT, "head_forward", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_classifier("scene-vit", tmp_path, tmp_path / "b.pt", **run)
    assert torch.load(tmp_path / "runs" / "scene-vit" / "checkpoint.pt", weights_only=False)["step"] == 3
    monkeypatch.undo()
    resumed = train_classifier("scene-vit", tmp_path, tmp_path / "b.pt", **run)
    a, b = (torch.load(tmp_path / f"{n}.pt", weights_only=True) for n in "ab")
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=0, atol=0)
    assert resumed["held_out"] == straight["held_out"] and resumed["steps"] == 6 and straight["held_out"]["n"] == 8
    assert 0 <= straight["held_out"]["top1"] <= 1
    assert a["class_names"] == list(SceneDataset(1, "classification").class_names)
