"""FullGrad: completeness of the full-gradient decomposition, the authors' aggregation, batching."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import salience as sl
from salience.methods.fullgrad import FullGrad, bias_layers, full_gradients, layer_bias, rescale
from salience.targets import ClassTarget


class BiasNet(nn.Module):
    """conv(bias) -> BN -> ReLU(inplace) -> conv -> BN -> ReLU -> mean -> linear: piecewise linear."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 5, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(5)
        self.head = nn.Linear(5, 3)
        with torch.no_grad():
            for bn in (self.bn1, self.bn2):
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2.0)
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-0.3, 0.3)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.head(x.mean((2, 3)))


def _model() -> sl.Model:
    torch.manual_seed(0)
    return sl.wrap(BiasNet(), input_size=16, mean=(0.5,) * 3, std=(0.5,) * 3)


def test_full_gradients_are_complete_on_a_piecewise_linear_net():
    """f(x) = Σ ∇ₓf ⊙ x + Σ_layers Σ ∇_b f ⊙ b, the linear head's bias included by hand."""
    model = _model()
    x = torch.randn(3, 3, 16, 16)
    target = ClassTarget(torch.tensor([0, 2, 1]), torch.arange(3))
    rows = torch.arange(3)
    input_grad, bias_grads = full_gradients(model, x, target, rows)
    assert len(bias_grads) == 3  # conv1's bias, bn1, bn2 (conv2 has none)
    total = (input_grad * x).flatten(1).sum(1) + sum(g.flatten(1).sum(1) for g in bias_grads)
    total = total + model.module.head.bias[target.classes]
    logits = model(x).gather(1, target.classes[:, None])[:, 0]
    torch.testing.assert_close(total, logits.detach(), atol=1e-4, rtol=1e-4)


def test_batch_norm_bias_is_the_eval_mode_shift():
    bn = _model().module.bn1
    x = torch.randn(2, 4, 5, 5)
    expected = bn(x) - bn.weight.view(1, -1, 1, 1) * x / torch.sqrt(bn.running_var + bn.eps).view(1, -1, 1, 1)
    torch.testing.assert_close(layer_bias(bn).view(1, -1, 1, 1).expand_as(x), expected.detach())


def test_map_is_the_authors_aggregation_and_hooks_are_gone():
    model = _model()
    x = torch.randn(2, 3, 16, 16)
    target = ClassTarget(torch.tensor([1, 0]), torch.arange(2))
    maps = FullGrad().attribute(model, x, target)
    input_grad, bias_grads = full_gradients(model, x, target, torch.arange(2))
    expected = rescale(input_grad * x).sum(1)
    for g in bias_grads:
        expected = expected + F.interpolate(rescale(g), size=(16, 16), mode="bilinear", align_corners=True).sum(1)
    torch.testing.assert_close(maps, expected, atol=1e-5, rtol=1e-5)
    assert all(not m._forward_hooks for m in bias_layers(model.module))
    assert all(p.requires_grad for p in model.module.parameters())


def test_rows_and_topk_match_single_images():
    model = _model()
    x = torch.randn(2, 3, 16, 16)
    batch = sl.explain(model, x, "fullgrad", target="topk:2")
    assert batch.maps.shape == (4, 16, 16)
    for r in range(4):
        one = sl.explain(model, x[batch.image_index[r]][None], "fullgrad", target=int(batch.classes[r]))
        torch.testing.assert_close(batch.maps[r], one.maps[0], atol=1e-5, rtol=1e-5)


def test_map_on_lite0_is_finite_and_peaks_on_the_object(default_model):
    images = sl.load_images(["examples/coffee.jpg"])
    expl = sl.explain(default_model, images, "fullgrad")
    m = expl.maps[0]
    assert torch.isfinite(m).all() and m.min() >= 0
    h, w = m.shape  # the cup fills the centre of the photo
    centre = m[h // 4: 3 * h // 4, w // 4: 3 * w // 4].mean()
    assert centre > m.mean()
