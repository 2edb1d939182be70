"""`sl.wrap` on plain modules and the ``timm:`` / ``hf:`` loaders, offline on tiny models."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch import nn

import salience as sl
from salience.errors import LayerNotFoundError, SalienceError, UnknownNameError
from tests.conftest import require


class TupleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        features = self.body(x)
        return features, self.head(features)


class DictNet(TupleNet):
    def forward(self, x):
        features = self.body(x)
        return {"features": features, "scores": self.head(features)}


def tiny_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 3),
    )


# -- sl.wrap -------------------------------------------------------------------------------
def test_wrap_tensor_tuple_and_dict_outputs():
    x = torch.randn(2, 3, 16, 16)
    cnn = tiny_cnn()
    model = sl.wrap(cnn, input_size=16)
    torch.testing.assert_close(model(x), cnn(x))
    tuple_net = TupleNet()
    # A tuple gives its first tensor unless told; a dict its named entry.
    torch.testing.assert_close(sl.wrap(tuple_net, input_size=16)(x), tuple_net(x)[0])
    dict_net = DictNet()
    dict_net.load_state_dict(tuple_net.state_dict())
    wrapped = sl.wrap(dict_net, input_size=16, output_key="scores")
    torch.testing.assert_close(wrapped(x), tuple_net(x)[1])
    assert not dict_net.training


def test_wrap_finds_last_spatial_activation_and_accepts_override():
    model = sl.wrap(tiny_cnn(), input_size=16, class_names=["a", "b", "c"])
    assert model.cam_layer_name == "3"  # the ReLU after the second conv, 8x8
    assert model.cam_layer is model.module[3]
    assert model.num_classes == 3
    overridden = sl.wrap(tiny_cnn(), input_size=16, cam_layer="2")
    assert overridden.cam_layer_name == "2"


def test_shared_activation_is_not_chosen():
    """A ReLU called twice per forward would capture two maps: the finder skips it."""

    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
            self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
            self.act = nn.ReLU()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            x = self.act(self.conv2(self.act(self.conv1(x))))
            return self.fc(x.mean((2, 3)))

    assert sl.wrap(Shared(), input_size=8).cam_layer_name == "conv2"


def test_wrong_layer_name_names_close_ones():
    with pytest.raises(LayerNotFoundError, match=r"layer 'head_ac' not found.*head_act"):
        sl.load_model("efficientnet_lite0", cam_layer="head_ac")
    model = sl.wrap(tiny_cnn(), input_size=16)
    with pytest.raises(LayerNotFoundError, match="not found"):
        model.layer("nonexistent.layer")


def test_model_without_spatial_layer_raises_clearly():
    model = sl.wrap(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2)), input_size=8)
    with pytest.raises(LayerNotFoundError, match="cam_layer="):
        model.cam_layer_name


# -- timm ---------------------------------------------------------------------------------
def test_timm_checkpoint_offline(tmp_path):
    timm = require("timm")
    original = timm.create_model("resnet10t", pretrained=False, num_classes=5).eval()
    path = tmp_path / "resnet10t.pth"
    torch.save(original.state_dict(), path)
    model = sl.load_model("timm:resnet10t", pretrained=True, checkpoint_path=str(path), num_classes=5)
    assert model.name == "timm:resnet10t"
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), original(x), rtol=0, atol=0)
    config = timm.data.resolve_model_data_config(original)
    assert model.preprocess.size == tuple(config["input_size"][1:]) == (176, 176)
    assert model.preprocess.mean == tuple(config["mean"])
    assert model.preprocess.resample == Image.BICUBIC
    assert model.class_names is None  # 5 classes: no ImageNet names
    assert model.cam_layer_name == "layer4"


def test_timm_pretrained_cfg_file_overlay(tmp_path):
    """The real pretrained path (timm's load_pretrained), pointed at a local file."""
    timm = require("timm")
    original = timm.create_model("resnet10t", pretrained=False).eval()
    path = tmp_path / "weights.pth"
    torch.save(original.state_dict(), path)
    model = sl.load_model("timm:resnet10t", pretrained_cfg_overlay={"file": str(path)})
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), original(x), rtol=0, atol=0)
    assert len(model.class_names) == 1000 and model.class_names[967] == "espresso"


def test_timm_errors(tmp_path):
    require("timm")
    with pytest.raises(UnknownNameError, match="Did you mean 'resnet10t'"):
        sl.load_model("timm:resnet10tt", pretrained=False)
    with pytest.raises(SalienceError, match="cannot load the weights"):
        sl.load_model("timm:resnet10t", checkpoint_path=str(tmp_path / "missing.pth"))


# -- Hugging Face -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def transformers():
    return require("transformers")


def test_hf_vit_offline(tmp_path, transformers):
    config = transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        image_size=32, patch_size=8, num_labels=3,
        id2label={0: "cat", 1: "dog", 2: "bird"}, label2id={"cat": 0, "dog": 1, "bird": 2},
    )
    original = transformers.ViTForImageClassification(config).eval()
    original.save_pretrained(tmp_path)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    model = sl.load_model(f"hf:{tmp_path}")
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), original(x).logits, rtol=0, atol=1e-6)
    assert model.class_names == ["cat", "dog", "bird"]
    assert model.preprocess.size == (32, 32)
    assert model.preprocess.mean == (0.5, 0.5, 0.5)  # ViT processor's mean, not ImageNet's
    assert model.module.config._attn_implementation == "sdpa"  # attention is captured from SDPA
    assert model.anatomy.prefix_tokens == 1 and model.anatomy.grid((32, 32)) == (4, 4)


def test_hf_resnet_offline_cam_layer(tmp_path, transformers):
    config = transformers.ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", num_labels=2,
        id2label={0: "no", 1: "yes"}, label2id={"no": 0, "yes": 1},
    )
    original = transformers.ResNetForImageClassification(config).eval()
    original.save_pretrained(tmp_path)  # no image processor saved: size/mean from defaults
    model = sl.load_model(f"hf:{tmp_path}")
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), original(x).logits, rtol=0, atol=1e-6)
    assert model.class_names == ["no", "yes"]
    assert model.preprocess.size == (224, 224)
    assert model.preprocess.mean == (0.485, 0.456, 0.406)
    layer = model.cam_layer_name
    assert layer.startswith("resnet.encoder.stages.1")
    captured = []
    handle = model.cam_layer.register_forward_hook(lambda m, i, o: captured.append(o))
    try:
        with torch.inference_mode():
            model(x)
            last_map = original(x, output_hidden_states=True).hidden_states[-1]
    finally:
        handle.remove()
    assert len(captured) == 1 and last_map.shape == (2, 16, 8, 8)  # the last map before pooling
    torch.testing.assert_close(captured[0], last_map)


def test_hf_missing_model_is_a_clear_error(tmp_path, transformers):
    with pytest.raises(SalienceError, match="cannot load Hugging Face model"):
        sl.load_model(f"hf:{tmp_path / 'nothing-here'}")
    text_config = transformers.BertConfig(
        vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8
    )
    transformers.BertModel(text_config).save_pretrained(tmp_path / "bert")
    with pytest.raises(SalienceError, match="cannot load Hugging Face model"):
        sl.load_model(f"hf:{tmp_path / 'bert'}")
