"""Small models, images and a patched model loader for fast CLI and picture tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import salience as sl
from salience.hooks import capture_layer
from salience.methods.base import Explainer, register


class TinyNet(nn.Module):
    """conv -> relu -> strided conv -> relu -> global mean -> linear, 3 classes."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.act2 = nn.ReLU()
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        return self.head(self.act2(self.conv2(self.act1(self.conv1(x)))).mean((2, 3)))


def tiny_model(resize: str = "resize") -> sl.Model:
    torch.manual_seed(0)
    return sl.wrap(TinyNet(), input_size=32, class_names=["apple", "boat", "cat"], resize=resize, name="tiny")


@register
class _AbsGradient(Explainer):
    """Test-only: absolute input gradient, max over colour channels."""

    name = "_cli_gradient"
    family = "gradient"
    batch_sizes: list[int] = []  # the x batch sizes seen, to check the CLI's batching

    def attribute(self, model, x, target):
        type(self).batch_sizes.append(x.shape[0])
        x = x.detach().clone().requires_grad_(True)
        score = target.score(model(x), torch.arange(x.shape[0])).sum()
        return torch.autograd.grad(score, x)[0].abs().amax(1)


@register
class _CamMean(Explainer):
    """Test-only: channel mean of the CAM layer's activations, upsampled."""

    name = "_cli_cam"
    family = "cam"

    def __init__(self, scale: float = 1.0, batch_size: int = 32):
        super().__init__(batch_size)
        self.scale = scale

    def attribute(self, model, x, target):
        with torch.inference_mode(), capture_layer(model.cam_layer) as cap:
            model(x)
        act = cap.output.mean(1, keepdim=True) * self.scale
        return nn.functional.interpolate(act, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]


@pytest.fixture
def tiny_loader(monkeypatch):
    """`sl.load_model("tiny")` gives the tiny model; other names go to the real loader."""
    real = sl.load_model

    def load(name="efficientnet_lite0", device=None, **kwargs):
        return tiny_model().to(device) if name == "tiny" else real(name, device, **kwargs)

    monkeypatch.setattr(sl, "load_model", load)
    return load


def smooth_photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth RGB uint8 photo (low-frequency blobs): bilinear resampling barely changes it."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, 4, 4, generator=g)
    up = nn.functional.interpolate(low, size=(height, width), mode="bicubic", align_corners=True)[0]
    return (up.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def write_photo(path: Path, height: int = 48, width: int = 64, **save_kwargs) -> Path:
    Image.fromarray(smooth_photo(height, width)).save(path, **save_kwargs)
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path
