"""XRAI: the region ranking equals the authors' code (PAIR `saliency`), segments, batching."""

from __future__ import annotations

import numpy as np
import torch

import salience as sl
from salience.methods.gradient import xrai_regions
from salience.methods.segments import dilate_labels, felzenszwalb_masks, input_photos

from .conftest import require
from .toys import smooth_photo, tiny_model


def test_region_ranking_equals_the_authors_xrai():
    xrai = require("saliency.core.xrai")
    photo = smooth_photo(48, 48, seed=2).astype(np.float64) / 255
    masks = felzenszwalb_masks(photo, scales=(20, 50, 150), min_size=20, dilation=2)
    g = torch.Generator().manual_seed(0)
    attribution = torch.randn(48, 48, generator=g) + torch.linspace(0, 2, 48)[None]
    ours = xrai_regions(attribution, masks, min_pixel_diff=10)
    theirs, _ = xrai.XRAI._xrai(attr=attribution.double().numpy(), segs=[m.numpy() for m in masks],
                                min_pixel_diff=10)
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-5, atol=1e-6)


def test_dilation_equals_scikit_image_with_a_disk():
    morphology = require("skimage.morphology")
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (6, 7), generator=g).repeat_interleave(4, 0).repeat_interleave(4, 1)
    ours = dilate_labels(labels, 4, 3)
    for k in range(4):
        theirs = morphology.dilation((labels == k).numpy(), morphology.disk(3))
        np.testing.assert_array_equal(ours[k].numpy(), theirs)


def test_covered_pixels_keep_the_attribution_mass_of_their_regions():
    """Disjoint regions tiling the image: each pixel gets its region's mean, the best region first."""
    attribution = torch.arange(16.0).view(4, 4)
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[0, :2], masks[1, 2:] = True, True
    out = xrai_regions(attribution, masks, min_pixel_diff=1)
    torch.testing.assert_close(out[:2], torch.full((2, 4), attribution[:2].mean().item()))
    torch.testing.assert_close(out[2:], torch.full((2, 4), attribution[2:].mean().item()))


def test_rows_equal_single_images():
    require("skimage")
    model = tiny_model()
    x = model.prepare(sl.load_images([smooth_photo(32, 32, seed=s) for s in (0, 1)]))[0]
    both = sl.explain(model, x, "xrai", steps=4)
    one = sl.explain(model, x[1:], "xrai", steps=4, target=int(both.classes[1]))
    torch.testing.assert_close(both.maps[1], one.maps[0])
    assert input_photos(model, x).shape == (2, 32, 32, 3)
