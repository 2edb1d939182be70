"""Extremal perturbation: TorchRay's own function as the peer, a region toy as the known answer."""

from __future__ import annotations

import torch
from torch import nn

import salience as sl
from salience.methods.extremal import ExtremalPerturbation, blur_pyramid, extremal_masks
from salience.targets import ClassTarget

from .conftest import require
from .toys import smooth_photo, tiny_model


class RegionContrast(nn.Module):
    """logit_0 = mean over rows 0..7, cols 0..7 of |x − blurred x|: only that corner's detail counts."""

    def forward(self, x):
        detail = (x - nn.functional.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)).abs()
        s = detail[:, :, :8, :8].mean((1, 2, 3)) * 100
        return torch.stack([s, torch.zeros_like(s)], 1)


def _photos(model, seeds):
    return model.prepare(sl.load_images([smooth_photo(32, 32, seed=s) for s in seeds]))[0]


def test_masks_equal_torchray_extremal_perturbation():
    ep = require("torchray.attribution.extremal_perturbation")
    model = tiny_model()
    x = _photos(model, [0])
    cls = int(model(x).argmax())
    for area in (0.1, 0.3):
        ours = extremal_masks(model, x, ClassTarget(torch.tensor([cls]), torch.arange(1)), (area,), max_iter=40)[0, 0]
        assert all(p.requires_grad for p in model.module.parameters())  # restored (TorchRay leaves them frozen)
        theirs, _ = ep.extremal_perturbation(model.module, x, cls, areas=[area], max_iter=40)
        for p in model.module.parameters():
            p.requires_grad_(True)
        torch.testing.assert_close(ours, theirs[0, 0], atol=1e-4, rtol=1e-4)


def test_preserve_mask_finds_the_only_region_that_matters():
    torch.manual_seed(0)
    model = sl.wrap(RegionContrast(), input_size=32, mean=(0.5,) * 3, std=(0.5,) * 3)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1  # detail everywhere; the score reads the corner only
    target = ClassTarget(torch.tensor([0]), torch.arange(1))
    mask = extremal_masks(model, x, target, (0.1,), max_iter=150, step=4, sigma=8, jitter=False)[0, 0]
    corner, rest = mask[:8, :8].mean(), torch.cat([mask[8:].flatten(), mask[:8, 8:].flatten()]).mean()
    assert corner > 0.9 and rest < 0.2


def test_rows_and_areas_in_one_batch_equal_separate_runs():
    model = tiny_model()
    x = _photos(model, [0, 1])
    target = ClassTarget(torch.tensor([0, 2]), torch.arange(2))
    both = extremal_masks(model, x, target, (0.1, 0.4), max_iter=15)
    for r in range(2):
        for k, area in enumerate((0.1, 0.4)):
            one = extremal_masks(model, x[r:r + 1], ClassTarget(target.classes[r:r + 1], torch.arange(1)),
                                 (area,), max_iter=15)
            torch.testing.assert_close(both[r, k], one[0, 0], atol=1e-5, rtol=1e-5)
    maps = ExtremalPerturbation(areas=(0.1, 0.4), max_iter=15).attribute(model, x, target)
    torch.testing.assert_close(maps, both.sum(1))


def test_pyramid_ends_at_the_input_and_blurs_most_at_level_zero():
    x = torch.rand(2, 3, 128, 128)
    pyramid = blur_pyramid(x, 8)
    assert pyramid.shape == (2, 8, 3, 128, 128)
    torch.testing.assert_close(pyramid[:, -1], x)
    variation = [(pyramid[:, l, :, 48:80, 49:81] - pyramid[:, l, :, 48:80, 48:80]).abs().mean() for l in range(8)]
    assert all(a < b for a, b in zip(variation[2:], variation[3:]))  # neighbour differences: less blur, more detail
    assert max(variation[:2]) < variation[-1] / 100
