"""Pictures of detector explanations: one panel per detection with its box, combined, and grids."""

from __future__ import annotations

import numpy as np
from PIL import Image

import salience as sl
from salience import explanation

from .toys import region_detector


def white_photo():
    return np.full((64, 64, 3), 255, dtype=np.uint8)  # twice the input size: boxes scale by 2


def test_panels_draw_each_detections_box_and_a_combined_picture(tmp_path):
    expl = sl.explain(region_detector(), [white_photo()], "odam")
    pictures = explanation.map_pictures(expl)
    # query 0's box (0, 0, 16, 16) in input px is (0, 0, 32, 32) on the photo: white outline at x = 32
    assert pictures[0].getpixel((32, 10)) == (255, 255, 255) and pictures[1].getpixel((32, 10)) != (255, 255, 255)
    paths = expl.save(tmp_path)
    names = sorted(p.name for p in tmp_path.glob("*.png"))
    assert names == ["image0_odam_0.png", "image0_odam_1.png", "image0_odam_detections.png"]
    combined = Image.open(tmp_path / "image0_odam_detections.png")
    single = Image.open(tmp_path / "image0_odam_0.png")
    assert combined.width > 2 * single.width - 1 and str(tmp_path / "image0_odam_detections.png") in paths


def test_a_grid_per_detection_across_methods(tmp_path):
    model = region_detector()
    results = {m: sl.explain(model, [white_photo()], m, **p) for m, p in (("odam", {}), ("drise", {"n_masks": 8}))}
    pictures = explanation.grid(results)
    assert sorted(pictures) == ["image0_detection0", "image0_detection1"]
    paths = explanation.save_grids(results, tmp_path)
    assert len(paths) == 2


def test_cli_writes_detection_panels_and_grids(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from salience.cli.app import app

    Image.fromarray(white_photo()).save(tmp_path / "scene.png")
    monkeypatch.setattr(sl, "load_model", lambda name=None, device=None, **kwargs: region_detector())
    result = CliRunner().invoke(app, ["explain", str(tmp_path / "scene.png"), "--model", "regions", "--method",
                                      "odam,gradcam", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    written = {p.name for p in (tmp_path / "out").glob("*.png")}
    assert {"scene_odam_detections.png", "scene_detection0_grid.png", "scene_detection1_grid.png"} <= written


def test_cli_says_when_an_image_has_no_detection_to_explain(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from salience.cli.app import app

    Image.fromarray(white_photo()).save(tmp_path / "scene.png")
    monkeypatch.setattr(sl, "load_model", lambda name=None, device=None, **kwargs: region_detector())
    result = CliRunner().invoke(app, ["explain", str(tmp_path / "scene.png"), "--model", "regions", "--method",
                                      "odam", "--score-threshold", "1.5", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "no detections above the score threshold" in result.output
    assert not list((tmp_path / "out").glob("*.png")) if (tmp_path / "out").exists() else True
