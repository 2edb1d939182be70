"""Overlays land on the right photo pixels; saving writes what it says; grids line up."""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import torch
from PIL import Image

import salience as sl
from salience import explanation, viz

from .toys import smooth_photo, tiny_model


def explanation_with_hot_square(mode: str, height: int = 60, width: int = 120) -> sl.Explanation:
    """A tiny-model explanation whose map is 1 on input rows/cols 8..16, 0 elsewhere."""
    model = tiny_model(resize=mode)
    expl = sl.explain(model, sl.load_images([smooth_photo(height, width)]), "_cli_gradient")
    maps = torch.zeros_like(expl.maps)
    maps[:, 8:16, 8:16] = 1.0
    expl.maps = maps
    return expl


def test_overlay_is_the_alpha_blend_of_photo_and_colormap():
    photo = Image.fromarray(smooth_photo(20, 30))
    saliency = torch.zeros(20, 30)
    saliency[5, 7] = 4.0  # the hottest pixel: colormap(1.0); the rest colormap(0.0)
    out = np.asarray(viz.overlay(photo, saliency, cmap="jet", alpha=0.5)).astype(float)
    jet = matplotlib.colormaps["jet"]
    base = np.asarray(photo).astype(float)
    hot = np.array(jet(1.0)[:3]) * 255
    cold = np.array(jet(0.0)[:3]) * 255
    assert np.abs(out[5, 7] - (0.5 * base[5, 7] + 0.5 * hot)).max() <= 1
    assert np.abs(out[0, 0] - (0.5 * base[0, 0] + 0.5 * cold)).max() <= 1


def test_overlay_hot_spot_lands_on_the_original_pixels_in_every_mode():
    for mode in ("resize", "center_crop", "letterbox"):
        expl = explanation_with_hot_square(mode)
        geo = expl.geometries[0]
        expl.images.originals[0] = Image.new("RGB", (120, 60))  # black: only the map can be lit
        (picture,) = explanation.map_pictures(expl, cmap="gray", alpha=1.0)
        assert picture.size == (120, 60)  # the photo's own size and aspect ratio
        lit = np.asarray(picture)[..., 0] > 127
        expected = geo.boxes_to_original(torch.tensor([[8.0, 8.0, 16.0, 16.0]]))[0]
        ys, xs = lit.nonzero()
        assert abs(xs.min() - expected[0]) <= 2 and abs(xs.max() + 1 - expected[2]) <= 2, mode
        assert abs(ys.min() - expected[1]) <= 2 and abs(ys.max() + 1 - expected[3]) <= 2, mode


def test_center_crop_leaves_unseen_pixels_untouched():
    expl = explanation_with_hot_square("center_crop")
    (picture,) = explanation.map_pictures(expl, alpha=0.6)
    x0, y0, x1, y1 = (round(v) for v in expl.geometries[0].source_box)
    before, after = np.asarray(expl.images.originals[0]), np.asarray(picture)
    assert x0 > 0 and (after[:, :x0] == before[:, :x0]).all() and (after[:, x1:] == before[:, x1:]).all()
    assert (after[y0:y1, x0:x1] != before[y0:y1, x0:x1]).any()


def test_save_writes_overlay_raw_map_and_record(tmp_path):
    expl = explanation_with_hot_square("letterbox")
    paths = expl.save(tmp_path)
    stem = tmp_path / "image0__cli_gradient"
    assert paths == [f"{stem}.png", f"{stem}.npy", f"{stem}.json"]
    assert np.array_equal(np.load(f"{stem}.npy"), expl.maps[0].numpy())  # raw, not normalised
    record = json.loads(open(f"{stem}.json").read())
    assert record["resize_mode"] == "letterbox" and record["original_size"] == [60, 120]
    assert record["class_index"] == int(expl.classes[0]) and record["target"] == expl.labels[0]
    png = Image.open(f"{stem}.png")
    assert png.width == 120 and png.text["method"] == "_cli_gradient"
    assert float(png.text["probability"]) == float(expl.probabilities[0])


def test_save_without_photos_writes_plain_heatmaps(tmp_path):
    model = tiny_model()
    expl = sl.explain(model, torch.randn(2, 3, 32, 32), "_cli_gradient", target=[0, 2])
    paths = expl.save(tmp_path)
    assert len(paths) == 6
    heat = Image.open(tmp_path / "image1__cli_gradient.png")
    assert heat.width == 32 and heat.height > 32  # input resolution plus caption
    record = json.loads((tmp_path / "image1__cli_gradient.json").read_text())
    assert record["original_size"] is None and record["class_index"] == 2 and record["target"] == "cat"


def test_grid_has_the_original_then_one_tile_per_method():
    model = tiny_model()
    images = sl.load_images([smooth_photo(40, 80), smooth_photo(80, 40, seed=1)])
    expls = {m: sl.explain(model, images, m) for m in ("_cli_gradient", "_cli_cam")}
    pictures = explanation.grid(expls, height=100)
    assert list(pictures) == ["image0", "image1"]
    wide, tall = pictures["image0"], pictures["image1"]
    # tiles are 100 px high and keep the aspect ratio: 3 x 200 wide, or 3 x 50, plus 2 gaps of 6
    assert wide.width == 3 * 200 + 12 and tall.width == 3 * 50 + 12
    left = np.asarray(wide)[:100, :200]
    assert np.abs(left.astype(int) - np.asarray(images.originals[0].resize((200, 100), Image.BILINEAR))).max() <= 1
