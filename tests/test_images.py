"""Reading awkward photos, and mapping maps from the model input back onto the photo."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from salience.cli.app import app
from salience.errors import ImageLoadError
from salience.images import MAX_SIDE, load_image, load_images
from salience.preprocessing import Preprocess

from .toys import smooth_photo, tiny_loader, truncate, write_photo  # noqa: F401 (fixture)


# -- awkward files ---------------------------------------------------------------------
def awkward_files(folder):
    """Grayscale, RGBA (half transparent), palette, 16-bit and a huge panorama."""
    rgb = smooth_photo(40, 60)
    Image.fromarray(rgb).convert("L").save(folder / "gray.png")
    rgba = np.dstack([rgb, np.full((40, 60), 255, np.uint8)])
    rgba[:, :30, 3] = 0  # left half fully transparent
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=16).save(folder / "palette.png")
    ramp = np.tile(np.linspace(1000, 60000, 60), (40, 1)).astype(np.uint16)
    Image.fromarray(ramp).save(folder / "deep16.png")
    Image.fromarray(np.zeros((200, 9000, 3), np.uint8)).save(folder / "huge.jpg", quality=50)
    return folder


def test_awkward_modes_load_as_rgb(tmp_path):
    folder = awkward_files(tmp_path)
    assert Image.open(folder / "deep16.png").mode.startswith("I")  # really a 16-bit file
    batch = load_images(folder)
    assert batch.names == ["deep16", "gray", "huge", "palette", "rgba"]
    assert all(im.mode == "RGB" for im in batch.originals)
    deep, gray, huge, palette, rgba = (np.asarray(im) for im in batch.originals)
    assert deep[:, 0].max() == 0 and deep[:, -1].min() == 255  # 16-bit range rescaled to 0..255
    assert (gray[..., 0] == gray[..., 2]).all()
    assert huge.shape == (91, MAX_SIDE, 3)  # 9000 x 200 shrunk to a long side of MAX_SIDE
    assert (rgba[:, :30] == 255).all() and (rgba[:, 30:] == smooth_photo(40, 60)[:, 30:]).all()  # alpha on white
    with Image.open(folder / "palette.png") as pal:
        colours = np.asarray(pal.getpalette(), np.uint8).reshape(-1, 3)
        assert (palette == colours[np.asarray(pal)]).all()  # each index replaced by its colour


def test_awkward_files_run_through_the_cli(tiny_loader, tmp_path):
    (tmp_path / "in").mkdir()
    folder = awkward_files(tmp_path / "in")
    result = CliRunner().invoke(app, ["explain", str(folder), "--model", "tiny", "--method", "_cli_gradient",
                                      "-o", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1].startswith("Explained 5 images")
    huge = json.loads((tmp_path / "o" / "huge__cli_gradient.json").read_text())
    assert huge["original_size"] == [91, MAX_SIDE]
    assert Image.open(tmp_path / "o" / "huge__cli_gradient.png").width == MAX_SIDE


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing.png", "no such file"),
        (lambda p: (p / "t.jpg").write_text("plain text") and p / "t.jpg", "not an image"),
        (lambda p: truncate(write_photo(p / "c.jpg", 200, 300, quality=95), 0.4), "corrupt or truncated"),
        (lambda p: truncate(write_photo(p / "c.png", 200, 300), 0.6), "corrupt or truncated"),
        (lambda p: p, "is a folder"),
    ],
)
def test_bad_files_raise_image_load_error(tmp_path, make, message):
    with pytest.raises(ImageLoadError, match=message):
        load_image(make(tmp_path))


# -- from the input back to the photo --------------------------------------------------
def ramp(h: int, w: int, gx: float = 1.0, gy: float = 0.5) -> torch.Tensor:
    """A linear function of pixel-centre coordinates, normalised to [0, 1] per axis."""
    ys = (torch.arange(h) + 0.5) / h
    xs = (torch.arange(w) + 0.5) / w
    return gx * xs[None, :] + gy * ys[:, None]


def test_resize_maps_a_ramp_back_exactly():
    geo = Preprocess(size=(32, 48), mode="resize").geometry(width=120, height=80)
    back = geo.map_to_original(ramp(32, 48))
    assert back.shape == (80, 120)
    # Bilinear resampling is exact for a linear function away from the clamped border.
    assert torch.allclose(back[4:-4, 4:-4], ramp(80, 120)[4:-4, 4:-4], atol=1e-5)


def test_letterbox_excludes_the_padding():
    pre = Preprocess(size=(64, 64), mode="letterbox", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    geo = pre.geometry(width=100, height=50)
    assert geo.target_box == (0.0, 16.0, 64.0, 48.0)
    saliency = torch.full((64, 64), 1000.0)  # padding rows: a value that must never come back
    saliency[16:48] = ramp(32, 64)
    back = geo.map_to_original(saliency)
    assert back.shape == (50, 100) and back.max() < 2
    assert torch.allclose(back[3:-3, 3:-3], ramp(50, 100)[3:-3, 3:-3], atol=1e-5)
    x, _ = pre.to_tensor(Image.fromarray(smooth_photo(50, 100)))
    assert (x[:, :16] == 0).all() and (x[:, 48:] == 0).all()  # padded with the mean colour


def test_center_crop_fills_what_the_model_never_saw():
    geo = Preprocess(size=(32, 32), mode="center_crop", crop_pct=0.875).geometry(width=200, height=100)
    assert geo.source_box == pytest.approx((56.25, 6.25, 143.75, 93.75))
    back = geo.map_to_original(torch.ones(32, 32), fill=-1.0)
    seen = back == 1
    rows, cols = seen.any(1).nonzero()[:, 0], seen.any(0).nonzero()[:, 0]
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (6, 94, 56, 144)
    assert (back[~seen] == -1).all() and seen.sum() == 88 * 88


@pytest.mark.parametrize("mode", ["resize", "center_crop", "letterbox"])
def test_preprocessed_photo_maps_back_onto_itself(mode):
    """The input's own pixels, mapped back, land on the photo pixels they came from.

    Integer mean/std on purpose: they used to make the letterbox canvas an int tensor.
    """
    photo = smooth_photo(90, 160, seed=3)
    pre = Preprocess(size=(64, 64), mode=mode, mean=(0, 0, 0), std=(1, 1, 1))
    x, geo = pre.to_tensor(Image.fromarray(photo))
    back = geo.map_to_original(x[0], fill=float("nan"))
    seen = ~back.isnan()
    red = torch.from_numpy(photo[..., 0] / 255.0).float()
    x0, y0, x1, y1 = (round(v) for v in geo.source_box)
    assert seen.sum() == (x1 - x0) * (y1 - y0) and seen[y0:y1, x0:x1].all()
    assert (back[seen] - red[seen]).abs().mean() < 0.01


@pytest.mark.parametrize("mode", ["resize", "center_crop", "letterbox"])
def test_boxes_to_original_agrees_with_map_to_original(mode):
    geo = Preprocess(size=(64, 64), mode=mode).geometry(width=160, height=90)
    box = torch.tensor([[20.0, 24.0, 44.0, 40.0]])  # inside the photo's area in every mode
    saliency = torch.zeros(64, 64)
    saliency[24:40, 20:44] = 1
    back = geo.map_to_original(saliency) > 0.5
    rows, cols = back.any(1).nonzero()[:, 0], back.any(0).nonzero()[:, 0]
    support = torch.tensor([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], dtype=torch.float32)
    assert torch.allclose(geo.boxes_to_original(box)[0], support, atol=1.5)
    whole = torch.tensor([geo.target_box])  # the photo's area in the input is the whole visible photo
    assert torch.allclose(geo.boxes_to_original(whole)[0], torch.tensor(geo.source_box))
