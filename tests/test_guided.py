"""Guided Backprop: known answers, Captum on nn.ReLU, ReLU6 / functional relu references,
clean-up after calls and errors, and models without rectifiers."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import salience as sl
from salience.methods.gradient import input_gradients
from salience.methods.guided import GuidedMode, guided_gradients
from salience.targets import ClassTarget

from .conftest import require


def clearly_differ(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool((a - b).norm() > 0.1 * b.norm())


def target_of(classes) -> ClassTarget:
    return ClassTarget(torch.tensor(classes), torch.arange(len(classes)))


# -- a reference written independently of the implementation -------------------------------
class RefGuidedClamp(torch.autograd.Function):
    """Reference: y = clamp(x, 0, cap); dx = relu(dy) where 0 < x < cap, else 0."""

    @staticmethod
    def forward(ctx, x, cap):
        ctx.save_for_backward(x)
        ctx.cap = cap
        return x.clamp(0, cap)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        return torch.where((x > 0) & (x < ctx.cap), dy.clamp(min=0), torch.zeros_like(dy)), None


class RefReLU6(nn.Module):
    def forward(self, x):
        return RefGuidedClamp.apply(x, 6.0)


def replace_relu6(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with every nn.ReLU6 replaced by the reference guided ReLU6."""
    module = copy.deepcopy(module)
    for name, child in list(module.named_modules()):
        for attr, sub in list(child.named_children()):
            if isinstance(sub, nn.ReLU6):
                setattr(child, attr, RefReLU6())
    return module


def relu6_cnn() -> nn.Module:
    torch.manual_seed(2)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU6(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU6(inplace=True),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 4),
    )
    with torch.no_grad():
        net[0].weight.mul_(8)  # many first-layer inputs above 6: the cap matters
    return net


class FunctionalNet(nn.Module):
    """Rectifiers only as functional calls, in all the spellings guided backprop must catch."""

    def __init__(self, acts=None):
        super().__init__()
        torch.manual_seed(3)
        self.convs = nn.ModuleList(nn.Conv2d(3 if i == 0 else 6, 6, 3, padding=1) for i in range(7))
        self.head = nn.Linear(6, 3)
        self.acts = acts or [
            F.relu, torch.relu, lambda x: x.relu(), F.relu6, lambda x: F.hardtanh(x, 0.0, 6.0),
            lambda x: x.clamp(min=0), lambda x: F.relu(x, inplace=True),
        ]

    def forward(self, x):
        x = x * 4
        for conv, act in zip(self.convs, self.acts):
            x = act(conv(x))
        return self.head(x.mean((2, 3)))


def reference_functional_net() -> FunctionalNet:
    """The same network with every rectifier replaced by the reference guided clamp."""
    inf = float("inf")
    caps = [inf, inf, inf, 6.0, 6.0, inf, inf]
    return FunctionalNet(acts=[(lambda c: (lambda x: RefGuidedClamp.apply(x, c)))(c) for c in caps])


# -- known answer -------------------------------------------------------------------------
def test_known_answer_on_tiny_relu_net():
    """Hidden units: h0 > 0 with positive outgoing weight (passes), h1 > 0 with negative
    outgoing weight (blocked: negative incoming gradient), h2 < 0 (blocked: negative input)."""
    w1 = torch.tensor([[1.0, 2, 0, 0, 0, 1], [0, 1, 1, 0, 0, 0], [-1, 0, 0, -1, 0, 0]])
    lin1 = nn.Linear(6, 3, bias=False)
    lin2 = nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        lin1.weight.copy_(w1)
        lin2.weight.copy_(torch.tensor([[1.0, -2.0, 3.0]]))
    model = sl.wrap(nn.Sequential(nn.Flatten(), lin1, nn.ReLU(), lin2), input_size=(1, 2))
    x = torch.ones(1, 3, 1, 2)  # pre-activations: 4, 2, -2
    guided = guided_gradients(model, x, target_of([0]))
    torch.testing.assert_close(guided.flatten(), w1[0])
    plain = input_gradients(model, x, target_of([0]))
    torch.testing.assert_close(plain.flatten(), w1[0] - 2 * w1[1])
    maps = sl.explain(model, x, method="guided_backprop", target=0).maps
    torch.testing.assert_close(maps, w1[0].view(3, 1, 2).abs().amax(0, keepdim=True))


# -- Captum on nn.ReLU modules --------------------------------------------------------------
def test_matches_captum_on_relu_modules():
    captum = require("captum.attr")
    torch.manual_seed(4)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 4),
    )
    model = sl.wrap(net, input_size=12)
    x = torch.randn(2, 3, 12, 12)
    ours = guided_gradients(model, x, target_of([1, 3]))
    theirs = captum.GuidedBackprop(net).attribute(x, target=[1, 3])
    torch.testing.assert_close(ours, theirs.detach())
    assert clearly_differ(ours, input_gradients(model, x, target_of([1, 3])))


# -- ReLU6 modules and functional rectifiers: hand-built references --------------------------
def test_relu6_model_matches_reference_and_differs_from_gradient():
    net = relu6_cnn()
    model = sl.wrap(net, input_size=12)
    ref_model = sl.wrap(replace_relu6(net), input_size=12)
    x = torch.randn(2, 3, 12, 12)
    target = target_of([0, 2])
    ours = guided_gradients(model, x, target)
    xr = x.clone().requires_grad_(True)
    ref_grad = torch.autograd.grad(target.score(ref_model(xr), torch.arange(2)).sum(), xr)[0]
    torch.testing.assert_close(ours, ref_grad)
    plain = input_gradients(model, x, target)
    assert clearly_differ(ours, plain)
    with torch.no_grad():
        assert (net[0](x) > 6).any()  # the cap is exercised


def test_relu6_model_differs_from_captum_which_ignores_relu6():
    captum = require("captum.attr")
    net = relu6_cnn()
    model = sl.wrap(net, input_size=12)
    x = torch.randn(1, 3, 12, 12)
    theirs = captum.GuidedBackprop(net).attribute(x, target=0).detach()
    torch.testing.assert_close(theirs, input_gradients(model, x, target_of([0])))  # Captum: plain gradient
    assert clearly_differ(guided_gradients(model, x, target_of([0])), theirs)


def test_functional_rectifiers_match_reference():
    model = sl.wrap(FunctionalNet(), input_size=10)
    ref_model = sl.wrap(reference_functional_net(), input_size=10)
    x = torch.randn(2, 3, 10, 10)
    target = target_of([0, 1])
    ours = guided_gradients(model, x, target)
    xr = x.clone().requires_grad_(True)
    ref_grad = torch.autograd.grad(target.score(ref_model(xr), torch.arange(2)).sum(), xr)[0]
    torch.testing.assert_close(ours, ref_grad)
    assert clearly_differ(ours, input_gradients(model, x, target))
    with GuidedMode() as mode:
        model(x.clone().requires_grad_(True))
    assert mode.guided == 7  # every spelling was rerouted


# -- nothing left behind ------------------------------------------------------------------
def _no_leftovers(net: nn.Module) -> None:
    assert torch._C._len_torch_function_stack() == 0
    for m in net.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
    assert all(p.requires_grad for p in net.parameters())


class Exploding(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.explode = False

    def forward(self, x):
        x = F.relu(self.conv(x))
        if self.explode:
            raise RuntimeError("boom")
        return x.mean((2, 3))


def test_nothing_remains_after_call_or_exception():
    net = Exploding()
    model = sl.wrap(net, input_size=8)
    x = torch.randn(1, 3, 8, 8)
    plain_before = input_gradients(model, x, target_of([1]))
    sl.explain(model, x, method="guided_backprop", target=1)
    _no_leftovers(net)
    net.explode = True
    with pytest.raises(RuntimeError, match="boom"):
        guided_gradients(model, x, target_of([1]))
    _no_leftovers(net)
    net.explode = False
    torch.testing.assert_close(input_gradients(model, x, target_of([1])), plain_before)
    xr = x.clone().requires_grad_(True)
    y = F.relu(xr - 0.5)
    (y * -1).sum().backward()  # plain relu backward passes negative gradients again
    assert (xr.grad < 0).any()


# -- models without rectifiers ---------------------------------------------------------------
def test_model_without_relu_warns_and_equals_gradient():
    torch.manual_seed(5)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 36, 3))
    model = sl.wrap(net, input_size=8)
    x = torch.randn(2, 3, 8, 8)
    with pytest.warns(UserWarning, match="plain gradient"):
        ours = guided_gradients(model, x, target_of([0, 2]))
    torch.testing.assert_close(ours, input_gradients(model, x, target_of([0, 2])))


def test_gelu_and_silu_follow_the_documented_rule():
    """smooth="guided": backward f'(x)·relu(g); smooth="plain": the ordinary gradient (+ warning)."""
    torch.manual_seed(6)
    net = nn.Sequential(nn.Conv2d(3, 6, 3), nn.GELU(), nn.Conv2d(6, 6, 3), nn.SiLU(), nn.Flatten(), nn.Linear(6 * 16, 3))
    model = sl.wrap(net, input_size=8)
    x = torch.randn(1, 3, 8, 8)
    target = target_of([1])

    class RefGuidedSmooth(torch.autograd.Function):
        @staticmethod
        def forward(ctx, z, fn):
            ctx.save_for_backward(z)
            ctx.fn = fn
            return fn(z)

        @staticmethod
        def backward(ctx, dy):
            (z,) = ctx.saved_tensors
            with torch.enable_grad():
                z = z.detach().requires_grad_(True)
                (d,) = torch.autograd.grad(ctx.fn(z).sum(), z)
            return d * dy.clamp(min=0), None

    xr = x.clone().requires_grad_(True)
    h = RefGuidedSmooth.apply(net[0](xr), F.gelu)
    h = RefGuidedSmooth.apply(net[2](h), F.silu)
    ref = torch.autograd.grad(net[5](net[4](h))[0, 1], xr)[0]
    ours = guided_gradients(model, x, target)
    torch.testing.assert_close(ours, ref)
    plain = input_gradients(model, x, target)
    assert clearly_differ(ours, plain)
    with pytest.warns(UserWarning, match="plain gradient"):
        left_plain = guided_gradients(model, x, target, smooth="plain")
    torch.testing.assert_close(left_plain, plain)


# -- batching and the default model --------------------------------------------------------
def test_batch_equals_single_images_and_topk():
    model = sl.wrap(relu6_cnn(), input_size=12)
    x = torch.randn(3, 3, 12, 12)
    batch = sl.explain(model, x, method="guided_backprop", target="top1").maps
    singles = torch.cat([sl.explain(model, x[i : i + 1], method="guided_backprop", target="top1").maps for i in range(3)])
    torch.testing.assert_close(batch, singles)
    top2 = sl.explain(model, x, method="guided_backprop", target="topk:2", batch_size=2)
    assert top2.maps.shape == (6, 12, 12) and top2.image_index.tolist() == [0, 0, 1, 1, 2, 2]
    second = int(top2.classes[3])
    torch.testing.assert_close(top2.maps[3], sl.explain(model, x[1:2], method="guided_backprop", target=second).maps[0])


def test_default_model_guided_differs_from_saliency(request):
    try:
        model = request.getfixturevalue("default_model")
    except Exception:  # noqa: BLE001 - the default model's code may not be merged yet
        timm = require("timm")
        model = sl.wrap(timm.create_model("tf_efficientnet_lite0"), mean=(0.5,) * 3, std=(0.5,) * 3)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ReLU6 found: no warning
        guided = sl.explain(model, x, method="guided_backprop", target="top1").maps
    plain = sl.explain(model, x, method="saliency", target="top1").maps
    r = float(torch.corrcoef(torch.stack([guided.flatten(), plain.flatten()]))[0, 1])
    assert r < 0.95, r
    _no_leftovers(model.module)
