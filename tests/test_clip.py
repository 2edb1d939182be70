"""CLIP as a zero-shot classifier: tiny open_clip and Hugging Face CLIP models saved to disk and
loaded through ``open_clip:ARCH/PATH`` and ``hf:PATH``; logits against the libraries' own;
prompts as targets in the API and the CLI."""

from __future__ import annotations

import json
import string

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import salience as sl
from salience.cli.app import app
from salience.errors import TargetError
from salience.models.adapters.clip import ClipModel

from .conftest import require

TINY_ARCH = "salience-tiny-clip"
PROMPTS = ["a photo of a dog", "a photo of a cat"]


@pytest.fixture(scope="module")
def open_clip_tiny(tmp_path_factory):
    """A tiny open_clip ViT (width 64, 2 layers, patch 16, 64 px) saved as a local checkpoint."""
    open_clip = require("open_clip")
    folder = tmp_path_factory.mktemp("open_clip")
    config = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    }
    (folder / f"{TINY_ARCH}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)
    original = open_clip.create_model(TINY_ARCH).eval()
    checkpoint = folder / "tiny.pt"
    torch.save(original.state_dict(), checkpoint)
    return original, checkpoint, open_clip


@pytest.fixture
def clip_model(open_clip_tiny):
    _, checkpoint, _ = open_clip_tiny
    return sl.load_model(f"open_clip:{TINY_ARCH}/{checkpoint}")


def test_open_clip_loader_logits_equal_open_clip(open_clip_tiny, clip_model):
    """Known answer: logit_scale · cosine of open_clip's own image and text embeddings."""
    original, _, open_clip = open_clip_tiny
    model = clip_model.set_prompts(PROMPTS)
    assert isinstance(model, ClipModel) and model.task == "zero_shot" and model.class_names == PROMPTS
    assert model.preprocess.size == (64, 64)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        image = original.encode_image(x, normalize=True)
        text = original.encode_text(open_clip.get_tokenizer(TINY_ARCH)(PROMPTS), normalize=True)
        expected = original.logit_scale.exp() * image @ text.T
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
        by_hand = original.logit_scale.exp() * F.cosine_similarity(
            original.encode_image(x)[:, None], original.encode_text(open_clip.get_tokenizer(TINY_ARCH)(PROMPTS))[None],
            dim=-1)
        torch.testing.assert_close(model(x), by_hand, rtol=1e-5, atol=1e-5)


def test_open_clip_anatomy(clip_model):
    anatomy = clip_model.anatomy
    assert anatomy.patch_size == (16, 16) and anatomy.prefix_tokens == 1
    assert anatomy.blocks == [f"image_encoder.transformer.resblocks.{i}" for i in range(2)]
    assert anatomy.attentions == [f"image_encoder.transformer.resblocks.{i}.attn" for i in range(2)]
    assert clip_model.cam_layer_name == "image_encoder.transformer.resblocks.1.ln_1"
    tokens = []
    handle = clip_model.cam_layer.register_forward_hook(lambda m, i, o: tokens.append(o))
    try:
        with torch.inference_mode():
            clip_model.set_prompts(PROMPTS)(torch.randn(2, 3, 64, 64))
    finally:
        handle.remove()
    assert tokens[0].shape == (2, 1 + anatomy.grid((64, 64))[0] * anatomy.grid((64, 64))[1], 64)


def test_prompt_text_target_becomes_the_prompt(clip_model):
    x = torch.randn(2, 3, 64, 64)
    expl = sl.explain(clip_model, x, "gradcam", target="a photo of a dog")
    assert clip_model.prompts == ["a photo of a dog"]
    assert expl.labels == ["a photo of a dog"] * 2 and expl.maps.shape == (2, 64, 64)
    assert torch.isfinite(expl.maps).all() and (expl.maps.flatten(1).std(1) > 0).all()
    with torch.inference_mode():
        torch.testing.assert_close(expl.scores, clip_model(x)[:, 0])  # the image–text similarity


def test_several_prompts_and_class_targets(clip_model):
    x = torch.randn(2, 3, 64, 64)
    expl = sl.explain(clip_model, x, "gradcam", target="a dog | a cat|a bird")
    assert clip_model.prompts == ["a dog", "a cat", "a bird"]
    with torch.inference_mode():
        logits = clip_model(x)
    assert expl.classes.tolist() == logits.argmax(1).tolist()
    known = sl.explain(clip_model, x, "gradcam", target="a cat")  # a known prompt: prompts unchanged
    assert clip_model.prompts == ["a dog", "a cat", "a bird"] and known.classes.tolist() == [1, 1]
    per_image = sl.explain(clip_model, x, "gradcam", target=["a cat", "a bird"])
    assert per_image.classes.tolist() == [1, 2]
    index = sl.explain(clip_model, x, "scorecam", target=2)
    assert index.labels == ["a bird"] * 2 and torch.isfinite(index.maps).all()


def test_no_prompts_is_a_clear_error(clip_model):
    clip_model.class_names = []
    with pytest.raises(TargetError, match="set_prompts"):
        sl.explain(clip_model, torch.randn(1, 3, 64, 64), "gradcam", target="top1")


def test_cli_explain_with_a_prompt(open_clip_tiny, tmp_path):
    from typer.testing import CliRunner

    _, checkpoint, _ = open_clip_tiny
    photo = tmp_path / "photo.png"
    Image.fromarray((torch.rand(80, 96, 3) * 255).byte().numpy()).save(photo)
    result = CliRunner().invoke(app, ["explain", str(photo), "--model", f"open_clip:{TINY_ARCH}/{checkpoint}",
                                      "--target", "a photo of a dog", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    record = json.loads(next((tmp_path / "out").glob("*.json")).read_text())
    assert "a photo of a dog" in json.dumps(record)


# -- Hugging Face CLIP -----------------------------------------------------------------------
@pytest.fixture
def hf_clip(tmp_path):
    """A tiny CLIPModel and a CLIPTokenizer built from a letters-only vocabulary, saved offline."""
    transformers = require("transformers")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in string.ascii_lowercase:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    tokenizer = transformers.CLIPTokenizer(vocab=vocab, merges=[])
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                vocab_size=len(vocab), max_position_embeddings=32, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=32, patch_size=8)
    config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    original = transformers.CLIPModel(config).eval()
    original.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    return original, tokenizer, tmp_path


def test_hf_clip_logits_anatomy_and_gradcam(hf_clip):
    original, tokenizer, path = hf_clip
    model = sl.load_model(f"hf:{path}", prompts=PROMPTS)
    assert isinstance(model, ClipModel) and model.preprocess.size == (32, 32)
    anatomy = model.anatomy
    assert anatomy.patch_size == (8, 8) and anatomy.prefix_tokens == 1
    assert anatomy.blocks == [f"image_encoder.vision_model.encoder.layers.{i}" for i in range(2)]
    assert model.cam_layer_name == "image_encoder.vision_model.encoder.layers.1.layer_norm1"
    x = torch.randn(2, 3, 32, 32)
    tokens = tokenizer(PROMPTS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        expected = original(pixel_values=x, **tokens).logits_per_image
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
    expl = sl.explain(model, x, "gradcam", target="top1")
    assert expl.maps.shape == (2, 32, 32) and (expl.maps.flatten(1).std(1) > 0).all()


def test_hf_clip_other_input_size(hf_clip):
    original, tokenizer, path = hf_clip
    model = sl.load_model(f"hf:{path}", prompts=PROMPTS, interpolate_pos_encoding=True)
    x = torch.randn(2, 3, 48, 40)
    tokens = tokenizer(PROMPTS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        expected = original(pixel_values=x, interpolate_pos_encoding=True, **tokens).logits_per_image
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
    assert model.anatomy.grid((48, 40)) == (6, 5)
    assert sl.explain(model, x, "layercam", target="a photo of a cat").maps.shape == (2, 48, 40)
