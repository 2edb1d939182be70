"""Infidelity and max-sensitivity against Captum given the same perturbations; SaCo's known answers."""

from __future__ import annotations

import pytest
import torch

import salience as sl
from salience.metrics.faithfulness import saco, saco_coefficient
from salience.metrics.robustness import (infidelity, infidelity_perturbations, max_sensitivity,
                                         sensitivity_perturbations)
from salience.targets import ClassTarget

from .conftest import require
from .toys import smooth_photo, tiny_model


def _case():
    model = tiny_model()
    x = model.prepare(sl.load_images([smooth_photo(32, 32, seed=s) for s in (0, 1)]))[0]
    classes = model(x).argmax(1).detach()
    maps = sl.explain(model, x, "saliency", target=ClassTarget(classes, torch.arange(2))).maps
    return model, x, classes, maps


@pytest.mark.parametrize("normalize", [True, False])
def test_infidelity_equals_captum_given_the_same_perturbations(normalize):
    metrics = require("captum.metrics")
    model, x, classes, maps = _case()
    pert = infidelity_perturbations(x, 6, 0.1, seed=0)
    ours = infidelity(model, x, maps, ClassTarget(classes, torch.arange(2)), perturbations=pert,
                      normalize=normalize, score="logit")
    flat = pert.flatten(0, 1)

    def perturb(inputs):
        return flat, inputs - flat

    theirs = metrics.infidelity(lambda t: model(t), perturb, x, maps[:, None].expand_as(x), target=classes,
                                n_perturb_samples=6, normalize=normalize)
    torch.testing.assert_close(ours, theirs.float(), rtol=1e-2, atol=1e-6)


def test_max_sensitivity_equals_captum_given_the_same_perturbations():
    metrics = require("captum.metrics")
    model, x, classes, maps = _case()
    pert = sensitivity_perturbations(x, 5, 0.02, seed=0)
    ours = max_sensitivity(model, x, maps, ClassTarget(classes, torch.arange(2)), method="saliency",
                           perturbations=pert)
    flat = pert.flatten(0, 1)

    def perturb(inputs, perturb_radius=0.02):
        inputs = inputs[0] if isinstance(inputs, tuple) else inputs
        return inputs + flat

    explainer = sl.methods.get_explainer("saliency")

    def explain(inputs, target):
        inputs = inputs[0] if isinstance(inputs, tuple) else inputs  # Captum passes a tuple of inputs
        return (explainer(model, inputs, ClassTarget(target, torch.arange(len(target)))).maps,)

    theirs = metrics.sensitivity_max(explain, x, perturb_func=perturb, n_perturb_samples=5, target=classes)
    torch.testing.assert_close(ours, theirs.float(), rtol=1e-2, atol=1e-6)
    model_free = max_sensitivity(model, x, torch.zeros(2, 32, 32) + 1, ClassTarget(classes, torch.arange(2)),
                                 method="center", perturbations=pert)
    assert torch.all(model_free > 0)  # `center` is not the constant map it is compared with


def test_infidelity_is_zero_for_the_exact_attribution_of_a_linear_model():
    """f linear, Φ = ∇f (per channel identical): Σ I·Φ = f(x) − f(x − I) exactly."""
    class Linear(torch.nn.Module):
        def forward(self, x):
            s = x.sum((1, 2, 3)) * 0.5 + x[:, :, :4].sum((1, 2, 3))
            return torch.stack([s, -s], 1)

    model = sl.wrap(Linear(), input_size=8, mean=(0,) * 3, std=(1,) * 3)
    x = torch.randn(2, 3, 8, 8)
    gradient = torch.full((2, 8, 8), 0.5)
    gradient[:, :4] += 1.0
    target = ClassTarget(torch.tensor([0, 0]), torch.arange(2))
    exact = infidelity(model, x, gradient, target, score="logit", normalize=False)
    assert torch.all(exact < 1e-8)
    assert torch.all(infidelity(model, x, torch.rand(2, 8, 8), target, score="logit", normalize=False) > 1e-3)


def test_saco_coefficient_by_hand():
    salience = torch.tensor([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0], [1.0, 1.0, 1.0]])
    drops = torch.tensor([[0.5, 0.2, 0.1], [0.1, 0.2, 0.5], [0.3, 0.2, 0.1]])
    torch.testing.assert_close(saco_coefficient(salience, drops), torch.tensor([1.0, -1.0, 0.0]))
    mixed = saco_coefficient(torch.tensor([[3.0, 2.0, 1.0]]), torch.tensor([[0.2, 0.5, 0.1]]))
    torch.testing.assert_close(mixed, torch.tensor([(-1 + 2 + 1) / 4]))  # pairs (1,2) −1, (1,3) +2, (2,3) +1


def test_saco_rewards_the_map_that_follows_the_score():
    from .test_road import _region_scene

    model, x, region = _region_scene()
    inside = torch.zeros(1, 28, 28)
    inside[0, region[0], region[1]] = 1.0
    ramp = inside + torch.linspace(0, 0.5, 28)[None, None]  # ranked inside the region first
    good = saco(model, x, ramp, 0, score="logit")
    bad = saco(model, x, -ramp, 0, score="logit")
    assert good[0] > 0.5 and bad[0] < 0  # ties of zero drop outside the region count as agreeing
    via_evaluate = sl.evaluate(model, x, ramp, 0, metrics=["saco"], score="logit")["saco"]
    torch.testing.assert_close(via_evaluate, good)
