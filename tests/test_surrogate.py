"""LIME and Kernel SHAP on superpixels: known answers on additive models, agreement with Captum."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import salience as sl
from salience.methods.segments import input_photos, superpixels
from salience.methods.surrogate import KernelShap, Lime, lime_kernel, weighted_linear_fit
from salience.targets import ClassTarget

from .conftest import require
from .toys import smooth_photo, tiny_model

SIZE = 32


class Weighted(nn.Module):
    """logit_0 = Σ_p a(p)·(mean colour of p): linear in the pixels, so additive in the superpixels."""

    def __init__(self, weights: torch.Tensor):
        super().__init__()
        self.register_buffer("a", weights)

    def forward(self, x):
        s = (x.mean(1) * self.a).flatten(1).sum(1)
        return torch.stack([s, torch.zeros_like(s)], 1)


def _additive():
    torch.manual_seed(1)
    model = sl.wrap(Weighted(torch.rand(SIZE, SIZE)), input_size=SIZE, mean=(0.5,) * 3, std=(0.5,) * 3)
    photo = smooth_photo(SIZE, SIZE, seed=3)
    x = model.prepare(sl.load_images([photo]))[0]
    return model, x


def _segment_values(model, x, segments: torch.Tensor) -> torch.Tensor:
    """Each superpixel's exact contribution Σ_{p∈s} a(p)·mean colour(p) (the baseline is 0 in the input)."""
    contribution = (x[0].mean(0) * model.module.a).flatten()
    return torch.zeros(int(segments.max()) + 1).index_add_(0, segments.flatten(), contribution)


def test_kernel_shap_gives_the_exact_contributions_of_an_additive_model():
    require("skimage")
    model, x = _additive()
    segments = superpixels(input_photos(model, x)[0], "slic", 12)
    maps = KernelShap(n_samples=300, n_segments=12, score="logit").attribute(model, x, ClassTarget(torch.tensor([0]), torch.arange(1)))
    truth = _segment_values(model, x, segments)
    torch.testing.assert_close(maps[0], truth[segments], atol=1e-3, rtol=1e-3)


def test_lime_recovers_an_additive_model_up_to_its_ridge_penalty():
    require("skimage")
    model, x = _additive()
    segments = superpixels(input_photos(model, x)[0], "slic", 12)
    maps = Lime(n_samples=600, n_segments=12, alpha=1e-6, score="logit").attribute(model, x, ClassTarget(torch.tensor([0]), torch.arange(1)))
    truth = _segment_values(model, x, segments)
    torch.testing.assert_close(maps[0], truth[segments], atol=1e-3, rtol=1e-3)


def test_weighted_fit_equals_scikit_learn():
    linear_model = require("sklearn.linear_model")
    g = torch.Generator().manual_seed(0)
    z = (torch.rand(50, 7, generator=g) < 0.5).float()
    y = torch.randn(50, generator=g)
    w = torch.rand(50, generator=g) + 0.1
    ridge = linear_model.Ridge(alpha=1.0).fit(z.numpy(), y.numpy(), sample_weight=w.numpy())
    ols = linear_model.LinearRegression().fit(z.numpy(), y.numpy(), sample_weight=w.numpy())
    np.testing.assert_allclose(weighted_linear_fit(z, y, w, 1.0).numpy(), ridge.coef_, atol=1e-5)
    np.testing.assert_allclose(weighted_linear_fit(z, y, w, 0.0).numpy(), ols.coef_, atol=1e-5)


def _captum_case(default_model):
    photo = sl.load_images(["examples/coffee.jpg"])
    x = default_model.prepare(photo)[0]
    segments = superpixels(input_photos(default_model, x)[0], "slic", 40)
    cls = int(default_model(x).argmax())
    return x, segments, cls


def _per_segment(attribution: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
    flat = attribution.flatten()
    return torch.stack([flat[segments.flatten() == s][0] for s in range(int(segments.max()) + 1)])


def _forward(model):
    def fn(images):
        return model(images).softmax(1)
    return fn


@pytest.mark.parametrize("kind", ["lime", "kernel_shap"])
def test_agrees_with_captum_given_the_same_superpixels_samples_and_seed(default_model, kind):
    """Captum's Lime / KernelShap fed our superpixels and our on/off vectors: r ≥ 0.99 (here ~1)."""
    require("skimage")
    attr = require("captum.attr")
    captum_models = require("captum._utils.models.linear_model")
    x, segments, cls = _captum_case(default_model)
    n = 120
    ours_method = Lime(n_samples=n, n_segments=40) if kind == "lime" else KernelShap(n_samples=n, n_segments=40)
    ours = ours_method.attribute(default_model, x, ClassTarget(torch.tensor([cls]), torch.arange(1)))[0]
    z = ours_method.samples(int(segments.max()) + 1, torch.Generator().manual_seed(0)).long()
    samples = iter(z[:, None])
    feature_mask = segments[None, None].expand(1, 3, -1, -1)
    if kind == "lime":
        def perturb(_inputs, **_kwargs):
            return next(samples)

        def similarity(_original, _perturbed, sample, **_kwargs):
            return float(lime_kernel(sample.float(), 0.25))

        peer = attr.Lime(_forward(default_model), interpretable_model=captum_models.SkLearnRidge(alpha=1.0),
                         similarity_func=similarity, perturb_func=perturb)
    else:
        class GivenSamples(attr.KernelShap):
            def kernel_shap_perturb_generator(self, original_inp, **kwargs):
                yield from samples

        peer = GivenSamples(_forward(default_model))
    theirs = peer.attribute(x, target=cls, baselines=0.0, feature_mask=feature_mask, n_samples=n)[0, 0]
    a, b = _per_segment(ours, segments), _per_segment(theirs, segments)
    r = float(torch.corrcoef(torch.stack([a.double(), b.double()]))[0, 1])
    assert r >= 0.99
    torch.testing.assert_close(a, b.float(), atol=2e-3, rtol=2e-2)


def test_batched_rows_equal_single_rows_and_samples_follow_the_seed():
    require("skimage")
    model = tiny_model()
    photos = [smooth_photo(SIZE, SIZE, seed=s) for s in (0, 1)]
    x = model.prepare(sl.load_images(photos))[0]
    both = sl.explain(model, x, "kernel_shap", target="topk:2", n_samples=40, n_segments=8)
    assert both.maps.shape == (4, SIZE, SIZE)
    one = sl.explain(model, x[1:], "kernel_shap", target=int(both.classes[3]), n_samples=40, n_segments=8)
    torch.testing.assert_close(both.maps[3], one.maps[0])
    other = sl.explain(model, x[1:], "kernel_shap", target=int(both.classes[3]), n_samples=40, n_segments=8, seed=1)
    assert not torch.equal(other.maps[0], one.maps[0])


def test_kernel_shap_sampler_draws_shapley_kernel_sizes():
    z = KernelShap(n_samples=20000).samples(10, torch.Generator().manual_seed(0))
    assert z[0].sum() == 10 and z[1].sum() == 0
    sizes = z[2:].sum(1).long()
    k = torch.arange(1, 10, dtype=torch.float64)
    expected = (9 / (k * (10 - k))) / (9 / (k * (10 - k))).sum()
    observed = torch.bincount(sizes, minlength=10)[1:].double() / len(sizes)
    torch.testing.assert_close(observed, expected, atol=0.01, rtol=0)


def test_missing_scikit_image_is_a_one_line_error(monkeypatch):
    import salience.compat as compat

    real = compat.importlib.import_module

    def fake(name, *args):
        if name.startswith("skimage"):
            raise ModuleNotFoundError(f"No module named '{name}'", name="skimage")
        return real(name, *args)

    monkeypatch.setattr(compat.importlib, "import_module", fake)
    with pytest.raises(sl.SalienceError, match=r"pip install 'salience\[segments\]'"):
        superpixels(np.zeros((8, 8, 3)))
