"""The core pieces: registry, Explainer call flow, Explanation, layer discovery."""

import pytest
import torch
from torch import nn

import salience as sl
from salience.errors import LayerNotFoundError, UnknownNameError
from salience.methods.base import Explainer, register


class Tiny(nn.Module):
    """conv -> relu -> conv -> relu -> GAP -> linear: the last spatial layer is act2."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.act2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        return self.head(self.pool(self.act2(self.conv2(self.act1(self.conv1(x))))).flatten(1))


@register
class _Constant(Explainer):
    """Test-only method: map = the target's score everywhere."""

    name = "_test_constant"

    def __init__(self, scale: float = 1.0, batch_size: int = 32):
        super().__init__(batch_size)
        self.scale = scale

    def attribute(self, model, x, target):
        with torch.no_grad():
            s = target.score(model(x), torch.arange(x.shape[0]))
        return (s * self.scale).view(-1, 1, 1).expand(-1, *x.shape[-2:]).clone()


def test_last_spatial_layer_is_found_and_overridable():
    model = sl.wrap(Tiny(), input_size=16)
    assert model.cam_layer_name == "act2"
    other = sl.wrap(Tiny(), input_size=16, cam_layer="conv1")
    assert other.cam_layer is other.module.conv1
    with pytest.raises(LayerNotFoundError, match="conv3"):
        sl.wrap(Tiny(), input_size=16, cam_layer="conv3")


def test_shared_activation_module_is_not_chosen():
    class Shared(Tiny):
        def forward(self, x):  # act1 used twice
            return self.head(self.pool(self.act1(self.conv2(self.act1(self.conv1(x))))).flatten(1))

    assert sl.wrap(Shared(), input_size=16).cam_layer_name == "conv2"


def test_outputs_tuple_dict_are_normalised_to_logits():
    class AsDict(Tiny):
        def forward(self, x):
            return {"aux": torch.zeros(1), "logits": super().forward(x)}

    class AsTuple(Tiny):
        def forward(self, x):
            return (super().forward(x), torch.zeros(1))

    x = torch.randn(2, 3, 16, 16)
    ref = Tiny()
    for cls in (AsDict, AsTuple):
        m = cls()
        m.load_state_dict(ref.state_dict())
        assert torch.allclose(sl.wrap(m, input_size=16)(x), ref(x))


def test_explainer_call_flow_rows_scores_probabilities():
    model = sl.wrap(Tiny(), input_size=16, class_names=["a", "b", "c"])
    x = torch.randn(2, 3, 16, 16)
    expl = sl.explain(model, x, method="_test_constant", target="topk:2", scale=2.0)
    logits = model(x).detach()
    top = logits.topk(2, dim=1)
    assert expl.image_index.tolist() == [0, 0, 1, 1]
    assert torch.allclose(expl.scores, top.values.reshape(-1))
    assert torch.allclose(expl.probabilities, logits.softmax(1).gather(1, top.indices).reshape(-1))
    assert torch.allclose(expl.maps[:, 0, 0], 2 * top.values.reshape(-1))
    assert expl.params == {"scale": 2.0, "batch_size": 32}
    assert expl.labels == [["a", "b", "c"][c] for c in top.indices.reshape(-1).tolist()]
    assert expl.seconds > 0


def test_unknown_method_suggests_closest():
    with pytest.raises(UnknownNameError, match="Did you mean '_test_constant'"):
        sl.get_explainer("_test_constnat")


def test_normalized_and_upsampled():
    maps = torch.tensor([[[1.0, 3.0], [2.0, 5.0]], [[4.0, 4.0], [4.0, 4.0]]])
    e = sl.Explanation(maps=maps, image_index=torch.arange(2), labels=["x", "y"], method="m")
    n = e.normalized().maps
    assert torch.allclose(n[0], torch.tensor([[0.0, 0.5], [0.25, 1.0]]))
    assert torch.equal(n[1], torch.zeros(2, 2))  # constant map -> zeros, not NaN
    assert e.upsampled((6, 4)).maps.shape == (2, 6, 4)
    assert torch.equal(e.maps, maps)  # raw maps untouched


@pytest.mark.parametrize("method", ["gradcam", "saliency", "input_x_gradient", "guided_backprop", "layercam"])
@pytest.mark.parametrize("spec", ["top1", 2, [0, 2, 1], "b", lambda out: out[:, 1]])
def test_clean_pass_resolution_equals_the_separate_forward(method, spec):
    """Methods that read their own clean pass give the same explanation with one forward fewer."""
    model = sl.wrap(Tiny(), input_size=16, class_names=["a", "b", "c"])
    x = torch.randn(3, 3, 16, 16)
    model.cam_layer_name  # layer discovery runs a forward once; not counted below
    calls = []
    handle = model.module.register_forward_hook(lambda *_: calls.append(1))
    try:
        fast = sl.get_explainer(method, batch_size=2)  # rows arrive in two chunks
        assert fast.reads_clean_output
        got = fast(model, x, spec)
        n_fast = len(calls)
        slow = sl.get_explainer(method, batch_size=2)
        slow.reads_clean_output = False
        want = slow(model, x, spec)
    finally:
        handle.remove()
    assert len(calls) - n_fast == n_fast + 1  # the separate path spends exactly one forward more
    assert torch.allclose(got.maps, want.maps, atol=1e-6)
    assert torch.allclose(got.scores, want.scores, atol=1e-6)
    assert got.labels == want.labels and torch.equal(got.image_index, want.image_index)
    if want.classes is not None:
        assert torch.equal(got.classes, want.classes)
        assert torch.allclose(got.probabilities, want.probabilities, atol=1e-6)


def test_clean_pass_keeps_target_errors_and_leaves_topk_to_the_separate_forward():
    from salience.errors import TargetError

    model = sl.wrap(Tiny(), input_size=16, class_names=["a", "b", "c"])
    x = torch.randn(2, 3, 16, 16)
    with pytest.raises(TargetError, match="out of range"):
        sl.explain(model, x, "gradcam", target=5)
    assert not model.module._forward_hooks  # nothing left attached after the error
    expl = sl.explain(model, x, "gradcam", target="topk:2")
    assert expl.image_index.tolist() == [0, 0, 1, 1]
