"""RISE, its masks, and Occlusion: closed forms, toy models with a known answer, Captum."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import salience as sl
from salience.methods.masks import draw_grids, rise_masks, upsample_grids
from salience.methods.perturbation import RISE, Occlusion

from .conftest import require

SIZE = 28


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten().double(), b.flatten().double()]))[0, 1])


class RegionMean(nn.Module):
    """logit_0 = mean of channel 0 over rows/cols ``region``; logit_1 = 0."""

    def __init__(self, region: tuple[slice, slice]):
        super().__init__()
        self.region = region

    def forward(self, x):
        score = x[:, 0, self.region[0], self.region[1]].mean((1, 2))
        return torch.stack([score, torch.zeros_like(score)], 1)


class Constant(nn.Module):
    def forward(self, x):
        return torch.full((x.shape[0], 2), 3.0) + 0 * x.sum((1, 2, 3))[:, None]


def _plain(module: nn.Module, size: int = SIZE) -> sl.Model:
    """Identity normalisation: pixel space = input space, so black = 0."""
    return sl.wrap(module, input_size=size, mean=(0, 0, 0), std=(1, 1, 1))


# -- masks ----------------------------------------------------------------------------------


def test_masks_shape_range_count_and_keep_fraction():
    batches = list(rise_masks(1000, (30, 20), grid_size=5, p1=0.3, seed=1, batch_size=64))
    assert [len(b) for b in batches] == [64] * 15 + [40]
    masks = torch.cat(batches)
    assert masks.shape == (1000, 1, 30, 20) and masks.dtype == torch.float32
    assert masks.min() >= 0 and masks.max() <= 1
    assert abs(float(masks.mean()) - 0.3) < 0.02  # E[M(p)] = p1 at every pixel
    assert not torch.equal(masks[0], masks[1])


def test_masks_do_not_depend_on_batch_size_and_follow_the_seed():
    a = torch.cat(list(rise_masks(100, (24, 24), seed=3, batch_size=7)))
    b = torch.cat(list(rise_masks(100, (24, 24), seed=3, batch_size=100)))
    c = torch.cat(list(rise_masks(100, (24, 24), seed=4, batch_size=100)))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("s, size", [(7, (224, 224)), (16, (50, 37)), (3, (10, 13))])
def test_masks_equal_the_reference_code(s, size):
    """Petsiuk et al.: skimage resize (order 1, reflect, no anti-aliasing) then crop at the shift."""
    skimage_resize = require("skimage.transform").resize
    cell = tuple(math.ceil(n / s) for n in size)
    grids, shifts = draw_grids(12, s, 0.5, cell, seed=0)
    ours = upsample_grids(grids, shifts, size)[:, 0].numpy()
    up = tuple((s + 1) * c for c in cell)
    for i, (dy, dx) in enumerate(shifts.tolist()):
        reference = skimage_resize(grids[i].numpy(), up, order=1, mode="reflect", anti_aliasing=False)
        np.testing.assert_allclose(ours[i], reference[dy : dy + size[0], dx : dx + size[1]], atol=1e-6)
    assert (shifts >= 0).all() and (shifts < torch.tensor(cell)).all()


# -- RISE ---------------------------------------------------------------------------------


def test_rise_finds_the_region_the_model_reads():
    """RISE maps sit on an offset (E[score]); the region R lifts well above it."""
    region = (slice(4, 12), slice(14, 24))
    model = _plain(RegionMean(region))
    x = torch.rand(1, 3, SIZE, SIZE) * 0.5 + 0.5
    explainer = RISE(n_masks=1000, grid_size=7, seed=0, score="logit", batch_size=250)
    saliency = explainer(model, x, 0).maps[0]
    inside = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    inside[region] = True
    far = torch.ones(SIZE, SIZE, dtype=torch.bool)
    far[:17, 9:] = False  # more than two grid cells from R
    assert saliency[inside].mean() > 1.1 * saliency[~inside].mean()
    assert saliency[inside].mean() - saliency[far].mean() > 4 * saliency[far].std()
    assert inside.flatten()[saliency.argmax()]
    assert torch.equal(saliency, explainer(model, x, 0).maps[0])
    other = RISE(n_masks=1000, grid_size=7, seed=1, score="logit", batch_size=250)(model, x, 0).maps[0]
    assert not torch.allclose(saliency, other)


def test_rise_map_is_the_score_weighted_mask_average():
    """For score = mean_R(x·M) the map is exactly (1/(N·p1)) Σ_i mean_R(x·M_i)·M_i."""
    region = (slice(2, 9), slice(3, 7))
    model = _plain(RegionMean(region))
    x = torch.rand(2, 3, SIZE, SIZE)
    n, p1 = 300, 0.4
    saliency = RISE(n_masks=n, p1=p1, seed=5, score="logit", batch_size=64)(model, x, [0, 0]).maps
    masks = torch.cat(list(rise_masks(n, (SIZE, SIZE), 7, p1, seed=5)))[:, 0]
    scores = (x[:, None, 0] * masks[None])[:, :, region[0], region[1]].mean((2, 3))  # (2, N)
    expected = torch.einsum("in,nhw->ihw", scores, masks) / (n * p1)
    torch.testing.assert_close(saliency, expected, rtol=1e-4, atol=1e-6)


def test_rise_expectations_match_closed_forms():
    """E[M(p)] = p1, and M(p), M(q) are independent when p, q are more than two grid cells
    apart: so a constant score c gives E[map] = c everywhere, and for score = mean_R(M)
    (x = 1) a pixel far from R gets E[map] = p1."""
    n, p1 = 4000, 0.5
    ones = torch.ones(1, 3, SIZE, SIZE)
    constant = RISE(n_masks=n, p1=p1, seed=2, score="logit", batch_size=1000)(_plain(Constant()), ones, 0).maps[0]
    assert abs(float(constant.mean()) - 3.0) < 0.03
    torch.testing.assert_close(constant, torch.full_like(constant, 3.0), atol=0.25, rtol=0)
    region = (slice(0, 4), slice(0, 4))
    saliency = RISE(n_masks=n, p1=p1, seed=2, score="logit", batch_size=1000)(_plain(RegionMean(region)), ones, 0).maps[0]
    far = saliency[16:, 16:]  # > 2 stretched cells (4.6 px) from R on both axes
    assert abs(float(far.mean()) - p1) < 0.02
    near = saliency[region]  # E[M(p)²] / p1 > p1 inside R: positively correlated with the score
    assert float(near.mean()) > p1 + 0.05


def test_rise_probability_score_uses_the_softmax():
    class Linear(nn.Module):
        def forward(self, x):
            m = x.mean((1, 2, 3))
            return torch.stack([m, -m, torch.zeros_like(m)], 1)

    model = _plain(Linear())
    x = torch.rand(1, 3, SIZE, SIZE)
    prob = RISE(n_masks=64, seed=0, score="probability")(model, x, 0).maps[0]
    masks = torch.cat(list(rise_masks(64, (SIZE, SIZE), seed=0)))
    expected_scores = model(x * masks).softmax(1)[:, 0]
    expected = torch.einsum("n,nhw->hw", expected_scores, masks[:, 0]) / (64 * 0.5)
    torch.testing.assert_close(prob, expected, rtol=1e-4, atol=1e-6)


def test_rise_masks_pixels_towards_black_in_pixel_space():
    """With mean/std normalisation the masked image is (denorm(x)·M − mean)/std."""
    model = sl.wrap(RegionMean((slice(0, SIZE), slice(0, SIZE))), input_size=SIZE, mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4))
    x = torch.randn(1, 3, SIZE, SIZE)
    saliency = RISE(n_masks=50, seed=0, score="logit")(model, x, 0).maps[0]
    masks = torch.cat(list(rise_masks(50, (SIZE, SIZE), seed=0)))
    pre = model.preprocess
    masked = (pre.denormalize(x) * masks - torch.tensor(pre.mean).view(1, 3, 1, 1)) / torch.tensor(pre.std).view(1, 3, 1, 1)
    expected = torch.einsum("n,nhw->hw", masked[:, 0].mean((1, 2)), masks[:, 0]) / 25
    torch.testing.assert_close(saliency, expected, rtol=1e-4, atol=1e-5)


def test_rise_rejects_bad_parameters():
    with pytest.raises(ValueError):
        RISE(score="margin")
    with pytest.raises(ValueError):
        RISE(autocast="fp16")
    assert sl.get_explainer("rise", n_masks=10).params["n_masks"] == 10


@pytest.fixture(scope="module")
def lite0():
    """The default model once it exists; until then the same network with random weights."""
    try:
        return sl.load_model("efficientnet_lite0")
    except Exception:  # noqa: BLE001 - default model not on this branch yet
        timm = require("timm")
        module = timm.create_model("tf_efficientnet_lite0", pretrained=False)
        return sl.wrap(module, mean=(0.5,) * 3, std=(0.5,) * 3)


def test_rise_bf16_agrees_with_float32(lite0):
    # 112 px and 16 masks: bf16 convolutions are emulated (slow) on CPUs without bf16 units.
    x = torch.nn.functional.interpolate(torch.rand(1, 3, 224, 224) * 2 - 1, size=112, mode="bilinear")
    common = dict(n_masks=16, seed=0, batch_size=16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the top-1 check must pass: no float32 fallback here
        fast = RISE(autocast="bf16", **common)(lite0, x, "top1").maps[0]
    exact = RISE(**common)(lite0, x, "top1").maps[0]
    assert _pearson(fast, exact) >= 0.95
    assert not torch.equal(fast, exact)  # bf16 really ran


def test_rise_bf16_falls_back_when_the_prediction_changes():
    class Fragile(nn.Module):
        """Logits 1 and 1 + 2⁻¹⁰: equal in bfloat16 (8-bit mantissa), so the top-1 flips."""

        def __init__(self):
            super().__init__()
            self.head = nn.Linear(1, 2, bias=False)
            with torch.no_grad():
                self.head.weight.copy_(torch.tensor([[1.0], [1.0 + 2**-10]]))

        def forward(self, x):
            return self.head(1 + 0 * x.mean((1, 2, 3))[:, None])

    model = _plain(Fragile())
    x = torch.rand(1, 3, SIZE, SIZE)
    with pytest.warns(UserWarning, match="float32"):
        fast = RISE(n_masks=16, autocast="bf16")(model, x, 1).maps
    torch.testing.assert_close(fast, RISE(n_masks=16)(model, x, 1).maps, rtol=0, atol=0)


# -- Occlusion ------------------------------------------------------------------------------


class LinearScore(nn.Module):
    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, x):
        s = (x * self.weight).sum((1, 2, 3))
        return torch.stack([s, -s], 1)


@pytest.mark.parametrize("window, stride", [(4, 2), (5, 3), ((6, 3), (4, 3))])
def test_occlusion_closed_form_for_a_linear_model(window, stride):
    """Zero baseline: drop of a window = Σ_window w·x; pixel value = mean over covering windows."""
    size = 13
    weight = torch.randn(1, 3, size, size)
    model = _plain(LinearScore(weight), size)
    x = torch.randn(1, 3, size, size)
    saliency = Occlusion(window=window, stride=stride, baseline=0.0, batch_size=5)(model, x, 0).maps[0]
    (wh, ww), (sh, sw) = [(v, v) if isinstance(v, int) else v for v in (window, stride)]
    contribution = (weight * x)[0].sum(0)
    total = torch.zeros(size, size)
    count = torch.zeros(size, size)
    for y0 in range(0, math.ceil((size - wh) / sh) * sh + 1, sh):
        for x0 in range(0, math.ceil((size - ww) / sw) * sw + 1, sw):
            cells = (slice(y0, y0 + wh), slice(x0, x0 + ww))
            total[cells] += contribution[cells].sum()
            count[cells] += 1
    assert (count > 0).all()
    torch.testing.assert_close(saliency, total / count, rtol=1e-5, atol=1e-5)


def test_occlusion_matches_captum():
    captum = require("captum.attr")
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 5),
    ).eval()
    model = sl.wrap(net, input_size=30, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    x = torch.randn(2, 3, 30, 30)
    ours = Occlusion(window=7, stride=4, baseline=0.0, batch_size=16)(model, x, [1, 3]).maps
    fill = (torch.zeros(3) - torch.tensor(model.preprocess.mean)) / torch.tensor(model.preprocess.std)
    theirs = captum.Occlusion(net).attribute(
        x, sliding_window_shapes=(3, 7, 7), strides=(3, 4, 4), baselines=fill.view(1, 3, 1, 1).expand_as(x),
        target=torch.tensor([1, 3]), perturbations_per_eval=16,
    )
    torch.testing.assert_close(theirs[:, 0], theirs[:, 2])  # windows span all channels
    torch.testing.assert_close(ours, theirs[:, 0], rtol=1e-4, atol=1e-5)


def test_occlusion_mean_baseline_and_probability_score():
    weight = torch.randn(1, 3, SIZE, SIZE) * 0.01
    model = sl.wrap(LinearScore(weight), input_size=SIZE, mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4))
    x = torch.randn(1, 3, SIZE, SIZE)
    by_mean = Occlusion(window=SIZE, stride=1, baseline="mean")(model, x, 0).maps[0]
    # One window covering everything: the mean colour is 0 after normalisation, so the drop is s(x) − 0.
    torch.testing.assert_close(by_mean, torch.full_like(by_mean, float((weight * x).sum())))
    prob = Occlusion(window=SIZE, stride=1, baseline="mean", score="probability")(model, x, 0).maps[0]
    expected = torch.softmax(model(x), 1)[0, 0] - 0.5  # occluded: logits (0, 0)
    torch.testing.assert_close(prob, torch.full_like(prob, float(expected.detach())))
    with pytest.raises(ValueError):
        Occlusion(window=4, stride=5)(model, x, 0)
