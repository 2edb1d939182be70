"""CAM methods: closed forms on a toy, agreement with pytorch-grad-cam, batching, hook hygiene."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import salience as sl
from salience.errors import LayerNotFoundError
from salience.methods.cam import GradCam, GradCamPlusPlus, LayerCam, ScoreCam
from salience.targets import Target

from .conftest import require

SIZE = 16


class Toy(nn.Module):
    """conv (stride 2) -> ReLU -> global average pool -> linear: Grad-CAM has a closed form."""

    def __init__(self, channels: int = 6, classes: int = 5):
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3, stride=2, padding=1)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, classes)

    def forward(self, x):
        return self.fc(self.pool(self.act(self.conv(x))).flatten(1))


@pytest.fixture
def toy():
    module = Toy()
    with torch.no_grad():
        module.conv.bias[-1] = -1e3  # one channel is 0 everywhere (Score-CAM skips it)
    return sl.wrap(module, input_size=SIZE, cam_layer="act")


def activations(model, x):
    with torch.no_grad():
        return model.module.act(model.module.conv(x))


def upsample(cam):
    return F.interpolate(cam[:, None], size=(SIZE, SIZE), mode="bilinear", align_corners=False)[:, 0]


def pearson(a, b):
    return torch.corrcoef(torch.stack([a.flatten().double(), b.flatten().double()]))[0, 1].item()


def minmax(maps):
    maps = maps - maps.amin((1, 2), keepdim=True)
    return maps / (maps.amax((1, 2), keepdim=True) + 1e-7)


# -- closed forms on the toy ---------------------------------------------------------------
def test_gradcam_closed_form(toy):
    x = torch.randn(3, 3, SIZE, SIZE)
    classes = [0, 3, 4]
    A = activations(toy, x)
    w = toy.module.fc.weight[classes].detach() / (A.shape[2] * A.shape[3])  # ∂y_c/∂A_kij
    expected = upsample((w[:, :, None, None] * A).sum(1).relu())
    maps = GradCam()(toy, x, classes).maps
    torch.testing.assert_close(maps, expected, rtol=1e-5, atol=1e-6)
    assert maps.abs().sum() > 0


def test_layercam_closed_form(toy):
    x = torch.randn(2, 3, SIZE, SIZE)
    A = activations(toy, x)
    g = toy.module.fc.weight[[1, 2]].detach() / (A.shape[2] * A.shape[3])
    expected = upsample((g.relu()[:, :, None, None] * A).sum(1).relu())
    torch.testing.assert_close(LayerCam()(toy, x, [1, 2]).maps, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("exp_score", [False, True])
def test_gradcam_pp_closed_form(toy, exp_score):
    x = torch.randn(2, 3, SIZE, SIZE)
    A = activations(toy, x)
    hw = A.shape[2] * A.shape[3]
    g = toy.module.fc.weight[[2, 4]].detach() / hw  # constant over positions
    total = A.sum((2, 3))
    # α = g² / (2g² + ΣA·g³) = 1 / (2 + ΣA·g); w_k = Σ_ij α·relu(g) = hw·relu(g) / (2 + ΣA·g)
    w = hw * g.relu() / (2 + total * g)
    if exp_score:
        with torch.no_grad():
            w = w * toy(x).gather(1, torch.tensor([[2], [4]])).exp()
    expected = upsample((w[:, :, None, None] * A).sum(1).relu())
    maps = GradCamPlusPlus(exp_score=exp_score)(toy, x, [2, 4]).maps
    torch.testing.assert_close(maps, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("baseline", ["none", "subtract"])
def test_scorecam_by_hand(toy, baseline):
    x = torch.randn(2, 3, SIZE, SIZE)
    classes = [1, 3]
    A = activations(toy, x)
    expected = []
    with torch.no_grad():
        base = toy(torch.zeros(1, 3, SIZE, SIZE)).softmax(1)[0]
        for n, c in enumerate(classes):
            weights = []
            for a in A[n]:
                up = F.interpolate(a[None, None], size=(SIZE, SIZE), mode="bilinear", align_corners=True)[0, 0]
                mask = (up - up.min()) / (up.max() - up.min() + 1e-8)
                p = toy(x[n : n + 1] * mask).softmax(1)[0, c]
                weights.append(p - base[c] if baseline == "subtract" else p)
            expected.append((torch.stack(weights)[:, None, None] * A[n]).sum(0).relu())
    maps = ScoreCam(baseline=baseline, batch_size=4)(toy, x, classes).maps
    torch.testing.assert_close(maps, upsample(torch.stack(expected)), rtol=1e-4, atol=1e-6)


# -- pytorch-grad-cam ------------------------------------------------------------------------
def peer_maps(pgc_class, model, layer, x, classes, batch_size=None):
    """pytorch-grad-cam's maps: relu'd, min-max normalised, resized to the input (cv2)."""
    with pgc_class(model=model.module, target_layers=[layer]) as cam:
        if batch_size:
            cam.batch_size = batch_size
        maps = cam(input_tensor=x, targets=[(lambda out, c=c: out[c]) for c in classes])
    model.module.zero_grad(set_to_none=True)
    return torch.from_numpy(maps)


def test_scorecam_matches_pytorch_grad_cam_on_toy(toy):
    pgc = require("pytorch_grad_cam")
    x = torch.randn(2, 3, SIZE, SIZE)
    theirs = peer_maps(pgc.ScoreCAM, toy, toy.module.act, x, [0, 2], batch_size=4)
    ours = ScoreCam(weighting="channel_softmax")(toy, x, [0, 2]).maps
    torch.testing.assert_close(minmax(ours), theirs, rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def photos(default_model):
    skimage_data = require("skimage.data")
    x, _ = default_model.prepare(sl.load_images([skimage_data.coffee(), skimage_data.chelsea()]))
    with torch.no_grad():
        classes = default_model(x).argmax(1).tolist()
    return x, classes


@pytest.mark.parametrize(
    "ours, peer, min_r",
    [(GradCam(), "GradCAM", 0.9999), (GradCamPlusPlus(), "GradCAMPlusPlus", 0.99),
     (GradCamPlusPlus(eps=1e-6), "GradCAMPlusPlus", 0.9999), (LayerCam(), "LayerCAM", 0.9999)],
    ids=["gradcam", "gradcam_pp", "gradcam_pp_eps", "layercam"],
)
def test_gradient_cams_match_pytorch_grad_cam(default_model, photos, ours, peer, min_r):
    """Both libraries' maps at 224, ours min-max normalised like theirs; coffee and chelsea."""
    pgc = require("pytorch_grad_cam")
    x, classes = photos
    theirs = peer_maps(getattr(pgc, peer), default_model, default_model.cam_layer, x, classes)
    maps = ours(default_model, x, classes).maps
    for i in range(len(x)):
        assert pearson(minmax(maps)[i], theirs[i]) >= min_r


def early_layer(model, channels=40):
    """The last module, called once, whose output has ``channels`` channels (a cheap Score-CAM layer)."""
    shapes, calls = {}, {}
    named = {m: n for n, m in model.module.named_modules() if n}

    def hook(module, _inputs, output):
        calls[module] = calls.get(module, 0) + 1
        if isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[1] == channels:
            shapes[named[module]] = output.shape

    handles = [m.register_forward_hook(hook) for m in named]
    with torch.no_grad():
        model(torch.zeros(1, 3, *model.preprocess.size))
    for h in handles:
        h.remove()
    return [n for n in shapes if calls[model.layer(n)] == 1][-1]


def test_scorecam_matches_pytorch_grad_cam(default_model, photos):
    """40 channels at 28×28 keep the test cheap: 40 masked passes per library."""
    pgc = require("pytorch_grad_cam")
    x, classes = photos
    layer = early_layer(default_model)
    theirs = peer_maps(pgc.ScoreCAM, default_model, default_model.layer(layer), x[:1], classes[:1], batch_size=20)
    ours = ScoreCam(layer=layer, weighting="channel_softmax", batch_size=20)(default_model, x[:1], classes[:1]).maps
    assert pearson(minmax(ours)[0], theirs[0]) >= 0.9999


# -- batching, registry and model hygiene ----------------------------------------------------
ALL = [GradCam(), GradCamPlusPlus(), LayerCam(), ScoreCam(batch_size=5)]


@pytest.mark.parametrize("explainer", ALL, ids=lambda e: e.name)
def test_batch_equals_single_images(toy, explainer):
    x = torch.randn(3, 3, SIZE, SIZE)
    classes = [4, 0, 2]
    batched = explainer(toy, x, classes).maps
    single = torch.cat([explainer(toy, x[i : i + 1], classes[i]).maps for i in range(3)])
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-6)


def test_batch_chunks_equal_one_chunk(toy):
    x = torch.randn(5, 3, SIZE, SIZE)
    one = GradCam(batch_size=8)(toy, x, 1).maps
    torch.testing.assert_close(GradCam(batch_size=2)(toy, x, 1).maps, one)


def test_topk_rows_repeat_images(toy):
    x = torch.randn(2, 3, SIZE, SIZE)
    expl = GradCam()(toy, x, "topk:2")
    assert expl.maps.shape == (4, SIZE, SIZE)
    for row, (image, cls) in enumerate(zip(expl.image_index.tolist(), expl.classes.tolist())):
        torch.testing.assert_close(expl.maps[row], GradCam()(toy, x[image : image + 1], cls).maps[0])


def hooks_on(module):
    return sum(len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


@pytest.mark.parametrize("explainer", ALL, ids=lambda e: e.name)
def test_model_left_as_it_was(toy, explainer):
    toy.module.fc.bias.requires_grad_(False)  # a user's frozen parameter stays frozen
    before = {n: (p.clone(), p.requires_grad, p.stride()) for n, p in toy.module.named_parameters()}
    explainer(toy, torch.randn(2, 3, SIZE, SIZE), "top1")
    assert hooks_on(toy.module) == 0
    for n, p in toy.module.named_parameters():
        value, requires_grad, stride = before[n]
        assert torch.equal(p, value) and p.requires_grad == requires_grad and p.stride() == stride
        assert p.grad is None


@pytest.mark.parametrize("explainer", ALL, ids=lambda e: e.name)
def test_hooks_removed_after_an_exception(toy, explainer):
    class Failing(Target):
        image_index = torch.tensor([0])

        def score(self, output, rows):
            raise RuntimeError("boom")

    target = Failing()
    with pytest.raises(RuntimeError, match="boom"):
        explainer.attribute(toy, torch.randn(1, 3, SIZE, SIZE), target)
    assert hooks_on(toy.module) == 0
    assert all(p.requires_grad for p in toy.module.parameters())
    assert all(p.is_contiguous() for p in toy.module.parameters())


@pytest.mark.parametrize("explainer", ALL, ids=lambda e: e.name)
def test_unknown_layer(toy, explainer):
    explainer.layer = "no.such"
    with pytest.raises(LayerNotFoundError, match="no.such"):
        explainer(toy, torch.randn(1, 3, SIZE, SIZE), 0)


def test_named_layer_and_registry(toy):
    x = torch.randn(1, 3, SIZE, SIZE)
    by_name = sl.explain(toy, x, "gradcam", 2, layer="conv").maps
    A = toy.module.conv(x).detach()[0]
    w = toy.module.fc.weight[2].detach()  # ∂y/∂conv = w·1[conv > 0]/hw, mean over positions
    grad = (w[:, None, None] * (A > 0)).mean((1, 2)) / (A.shape[1] * A.shape[2])
    torch.testing.assert_close(by_name, upsample((grad[:, None, None] * A).sum(0, keepdim=True).relu()))
    assert by_name.abs().sum() > 0
    for name in ["gradcam++", "Grad-CAM++", "gradcam_pp", "gradcampp"]:
        assert isinstance(sl.get_explainer(name), GradCamPlusPlus)
    assert {"gradcam", "gradcam_pp", "layercam", "scorecam"} <= set(sl.available_methods())
    assert sl.get_explainer("scorecam", baseline="subtract").params["baseline"] == "subtract"
    with pytest.raises(ValueError):
        ScoreCam(baseline="blur")
