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


class RegionDetector(nn.Module):
    """A detector toy: query q finds class q only while its quadrant of the image is bright.

    ``features`` (a 1×1 conv: the pixel's mean colour, twice) is its spatial feature map (the
    CAM layer). Query 0 looks at the top-left quadrant, query 1 at the bottom-right one,
    query 2 at the whole image but never scores. A query's visibility v is the mean feature
    over its region mapped to [0, 1] (white 1, black 0); its class probability is
    sigmoid(12 (v − 0.5)) and the rest is no-object; its box is the region, its right edge
    moved by 4 px · v (so box outputs have gradients too).
    """

    regions = ((0, 16, 0, 16), (16, 32, 16, 32), (0, 32, 0, 32))  # y0, y1, x0, x1 in a 32×32 input

    def __init__(self):
        super().__init__()
        self.features = nn.Conv2d(3, 2, 1)
        with torch.no_grad():
            self.features.weight.fill_(1 / 3)
            self.features.bias.zero_()

    def forward(self, x):
        a = self.features(x)  # (B, 2, H, W): normalised mean colour in [-1, 1]
        vis = torch.stack([(a[:, :, y0:y1, x0:x1].mean((1, 2, 3)) + 1) / 2 for y0, y1, x0, x1 in self.regions], 1)
        p = torch.sigmoid(12 * (vis[:, :2] - 0.5))
        probs = torch.cat([torch.diag_embed(p), torch.zeros(x.shape[0], 1, 2)], 1)  # query q: class q
        base = torch.tensor([[x0, y0, x1 - 4, y1] for y0, y1, x0, x1 in self.regions], dtype=torch.float32)
        boxes = base + torch.stack([torch.zeros_like(vis)] * 2 + [4 * vis, torch.zeros_like(vis)], -1)
        return {"probs": probs, "boxes": boxes}


def region_detector() -> "sl.Model":
    from salience.models.detection import DetectorModel, Detections
    from salience.preprocessing import Preprocess

    def decode(raw, size):
        probs = raw["probs"]
        logits = torch.cat([probs, (1 - probs.sum(-1, keepdim=True)).clamp_min(1e-6)], -1).clamp_min(1e-6).log()
        return Detections(boxes=raw["boxes"], probs=probs, logits=logits)

    return DetectorModel(RegionDetector(), Preprocess(size=(32, 32), mean=(0.5,) * 3, std=(0.5,) * 3),
                         class_names=["square", "circle"], decode=decode, score_threshold=0.5, name="regions")
