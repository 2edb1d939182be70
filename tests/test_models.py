"""The bundled EfficientNet-Lite models: real ImageNet predictions, equality with timm, anatomy."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import salience as sl
from salience.errors import SalienceError
from salience.models.zoo.efficientnet_lite import Conv2dSame, build, weights_path
from salience.models.imagenet import imagenet_class_names
from salience.models.weights import load_by_position
from tests.conftest import require

ESPRESSO = 967
PALACE = 698
CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
# What china.jpg (a Chinese temple) may plausibly be called: bell cote, boathouse, castle,
# church, monastery, palace, stupa.
BUILDINGS = {442, 449, 483, 497, 663, 698, 832}


def _shared_dir() -> Path | None:
    repo = Path(__file__).resolve().parents[1]
    for candidate in (repo / "../shared", Path("/work/shared")):
        if candidate.is_dir():
            return candidate.resolve()
    return None


@pytest.fixture(scope="module")
def photos():
    """coffee (espresso), china.jpg (a temple), chelsea (a cat): photos shipped by pip packages."""
    skdata = require("skimage.data")
    datasets = require("sklearn.datasets")
    return sl.load_images([skdata.coffee(), datasets.load_sample_image("china.jpg"), skdata.chelsea()])


@functools.lru_cache(maxsize=None)
def _bundled(name: str) -> sl.Model:
    """Each bundled model built once per test session (lite0 comes from ``default_model``)."""
    return sl.load_model(name)


def _probabilities(model, photos):
    x, _ = model.prepare(photos)
    with torch.inference_mode():
        return model(x).softmax(-1), x


def test_lite0_top1_on_real_photos(default_model, photos):
    probs, _ = _probabilities(default_model, photos)
    top1 = probs.argmax(-1).tolist()
    assert top1[0] == ESPRESSO and probs[0, ESPRESSO] > 0.8
    assert top1[1] in BUILDINGS
    assert PALACE in probs[1].topk(5).indices.tolist()
    assert top1[2] in CATS and probs[2, list(CATS)].sum() > 0.8
    assert default_model.class_names[top1[0]] == "espresso"


@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_lite1_lite2_predictions(name, photos):
    probs, x = _probabilities(_bundled(name), photos)
    top5 = probs.topk(5).indices.tolist()
    assert top5[0][0] == ESPRESSO
    assert PALACE in top5[1] and top5[1][0] in BUILDINGS
    assert top5[2][0] in CATS
    assert x.shape[-1] == {"efficientnet_lite1": 240, "efficientnet_lite2": 260}[name]


@pytest.mark.parametrize("n", [0, 1, 2])
def test_logits_equal_timm_with_same_weights(n, photos, default_model):
    timm = require("timm")
    name = f"efficientnet_lite{n}"
    ours = default_model if n == 0 else _bundled(name)
    reference = timm.create_model(f"tf_efficientnet_lite{n}", pretrained=False).eval()
    load_by_position(reference, torch.load(weights_path(name), map_location="cpu", weights_only=True))
    x, _ = ours.prepare(photos[:1])
    with torch.inference_mode():
        diff = (ours(x) - reference(x)).abs().max().item()
    assert diff < 1e-4
    cfg = reference.pretrained_cfg
    assert ours.preprocess.size == tuple(cfg["input_size"][1:])
    assert ours.preprocess.mean == tuple(cfg["mean"]) and ours.preprocess.std == tuple(cfg["std"])


def test_default_model_anatomy(default_model):
    assert default_model.name == "efficientnet_lite0"
    assert default_model.preprocess.size == (224, 224)
    assert default_model.preprocess.mean == (0.5, 0.5, 0.5) == default_model.preprocess.std
    assert default_model.cam_layer_name == "head_act"
    seen = []
    handle = default_model.cam_layer.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    try:
        with torch.inference_mode():
            default_model(torch.zeros(1, 3, 224, 224))
    finally:
        handle.remove()
    assert seen == [torch.Size([1, 1280, 7, 7])]
    # Every activation is its own module instance, and none is in-place.
    acts = [m for m in default_model.module.modules() if isinstance(m, nn.ReLU6)]
    assert len(acts) == len({id(m) for m in acts}) == 1 + 16 + 15 + 1
    assert not any(m.inplace for m in acts)


def test_cam_layer_override_by_name():
    model = sl.load_model("efficientnet_lite0", cam_layer="blocks.15")
    assert model.cam_layer is model.module.blocks[15]


def test_same_padding_matches_tensorflow():
    """SAME padding: output ceil(n / stride); an odd total pad puts the extra pixel right/bottom."""
    torch.manual_seed(0)
    for kernel, size, pads in [(3, 8, (0, 1)), (3, 9, (1, 1)), (5, 8, (1, 2)), (5, 7, (2, 2))]:
        conv = Conv2dSame(2, 4, kernel, stride=2, bias=False)
        x = torch.randn(1, 2, size, size)
        expected = F.conv2d(F.pad(x, [pads[0], pads[1], pads[0], pads[1]]), conv.weight, stride=2)
        out = conv(x)
        assert out.shape[-1] == -(-size // 2)
        torch.testing.assert_close(out, expected)


def test_load_by_position_reports_misfits():
    net = build("efficientnet_lite0", pretrained=False)
    weights = torch.load(weights_path("efficientnet_lite0"), map_location="cpu", weights_only=True)
    broken = dict(weights)
    broken["_blocks.3._depthwise_conv.weight"] = torch.zeros(144, 1, 3, 3)
    with pytest.raises(SalienceError, match=r"_blocks\.3\._depthwise_conv\.weight.*blocks\.3\.depthwise\.conv\.weight"):
        load_by_position(net, broken)
    shorter = dict(list(weights.items())[:-1])
    with pytest.raises(SalienceError, match=r"295 tensors for a module with 296.*classifier\.bias"):
        load_by_position(net, shorter)
    lite1 = build("efficientnet_lite1", pretrained=False)
    with pytest.raises(SalienceError, match="does not fit"):
        load_by_position(lite1, weights)


def test_imagenet_class_names():
    names = imagenet_class_names()
    assert len(names) == 1000
    assert names[ESPRESSO] == "espresso"
    assert names[281] == "tabby, tabby cat" and names[0] == "tench, Tinca tinca"
    shared = _shared_dir()
    manifest = shared / "data/realmini/manifest.json" if shared else None
    if manifest is None or not manifest.exists():
        pytest.skip("../shared/data/realmini not available")
    labelled = [im for im in json.loads(manifest.read_text())["images"] if im.get("imagenet_class") is not None]
    assert labelled
    for im in labelled:
        assert names[im["imagenet_class"]] == im["imagenet_label"]


def test_unknown_model_name_suggests_closest():
    with pytest.raises(sl.SalienceError, match="Did you mean 'efficientnet_lite0'"):
        sl.load_model("efficientnet_lit0")
