"""The `salience` command: outputs, batching, grids, and one-line errors on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from salience.cli.app import app, parse_params, parse_value

from .toys import _AbsGradient, tiny_loader, truncate, write_photo  # noqa: F401 (fixture)

runner = CliRunner()
GRAD, CAM = "_cli_gradient", "_cli_cam"


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def lines(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.strip()]


def assert_one_line_error(result, code: int, *needles: str):
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    errs = [line for line in lines(result) if line.startswith("error:")]
    assert len(errs) == 1 and len(lines(result)) == 1, result.output
    for needle in needles:
        assert needle in errs[0], errs[0]


def test_explain_one_file_writes_overlay_map_and_record(tiny_loader, tmp_path):
    photo = write_photo(tmp_path / "cup.jpg", height=40, width=90)
    result = run("explain", photo, "--model", "tiny", "--method", GRAD, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert lines(result) == [f"Explained 1 image with {GRAD}: 3 files written to {tmp_path / 'out'}/"]
    stem = tmp_path / "out" / f"cup_{GRAD}"
    overlay = Image.open(f"{stem}.png")
    assert overlay.width == 90 and overlay.height > 40  # original size, plus the caption strip
    record = json.loads(Path(f"{stem}.json").read_text())
    assert record["original_size"] == [40, 90] and record["input_size"] == [32, 32]
    assert record["method"] == GRAD and record["model"] == "tiny" and record["resize_mode"] == "resize"
    assert record["target"] in ("apple", "boat", "cat") and 0 < record["probability"] < 1
    assert overlay.text["target"] == record["target"] and float(overlay.text["score"]) == pytest.approx(record["score"])
    assert np.load(f"{stem}.npy").shape == (32, 32)


def test_folder_with_bad_files_skips_them_and_processes_the_rest(tiny_loader, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.png", "b.jpg"):
        write_photo(folder / name)
    (folder / "notes.jpg").write_text("not an image")
    truncate(write_photo(folder / "cut.png"))
    missing = tmp_path / "missing.jpg"
    result = run("explain", folder, missing, "--model", "tiny", "--method", GRAD, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    skipped = [line for line in lines(result) if line.startswith("skipped:")]
    assert len(skipped) == 3
    assert any("notes.jpg" in s and "not an image" in s for s in skipped)
    assert any("cut.png" in s and "truncated" in s for s in skipped)
    assert any("missing.jpg" in s and "no such file" in s for s in skipped)
    assert lines(result)[-1].startswith("Explained 2 images") and "(3 skipped)" in lines(result)[-1]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == [f"a_{GRAD}.png", f"b_{GRAD}.png"]
    assert "Traceback" not in result.output


def test_nothing_readable_exits_nonzero(tiny_loader, tmp_path):
    (tmp_path / "x.jpg").write_text("text")
    (tmp_path / "y.png").write_bytes(b"\x89PNG\r\n")
    result = run("explain", tmp_path, "--model", "tiny", "--method", GRAD, "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert "none of the 2 files could be read" in lines(result)[-1] and "Traceback" not in result.output


@pytest.mark.parametrize("kind", ["missing", "text", "truncated_jpeg", "truncated_png"])
def test_single_bad_file_is_one_line_error(tiny_loader, tmp_path, kind):
    path = {
        "missing": lambda: tmp_path / "nope.jpg",
        "text": lambda: (tmp_path / "t.jpg").write_text("hello") and tmp_path / "t.jpg",
        "truncated_jpeg": lambda: truncate(write_photo(tmp_path / "c.jpg", 200, 300, quality=95), 0.4),
        "truncated_png": lambda: truncate(write_photo(tmp_path / "c.png", 200, 300), 0.6),
    }[kind]()
    result = run("explain", path, "--model", "tiny", "--method", GRAD, "--out", tmp_path / "out")
    needle = {"missing": "no such file", "text": "not an image"}.get(kind, "truncated")
    assert_one_line_error(result, 1, path.name, needle)


def test_unknown_method_and_model_suggest_closest(tiny_loader, tmp_path):
    photo = write_photo(tmp_path / "p.png")
    assert_one_line_error(run("explain", photo, "--model", "tiny", "--method", "_cli_gradiant"), 1,
                          "unknown method '_cli_gradiant'", f"Did you mean '{GRAD}'")
    assert_one_line_error(run("explain", photo, "--model", "efficientnet_lit0", "--method", GRAD), 1,
                          "unknown model", "Did you mean 'efficientnet_lite0'")


def test_target_out_of_range_and_unknown_class_name(tiny_loader, tmp_path):
    photo = write_photo(tmp_path / "p.png")
    out = tmp_path / "out"
    assert_one_line_error(run("explain", photo, "--model", "tiny", "--method", GRAD, "-t", "7", "-o", out), 1,
                          "out of range", "3 classes")
    assert_one_line_error(run("explain", photo, "--model", "tiny", "--method", GRAD, "-t", "bot", "-o", out), 1,
                          "unknown class name 'bot'", "Did you mean 'boat'")
    assert not out.exists() or not list(out.iterdir())


def test_cam_layer_not_found(tiny_loader, tmp_path):
    photo = write_photo(tmp_path / "p.png")
    result = run("explain", photo, "--model", "tiny", "--method", CAM, "--cam-layer", "conv3", "-o", tmp_path / "o")
    assert_one_line_error(result, 1, "layer 'conv3' not found", "conv1")


def test_bad_params_and_device_are_usage_errors(tiny_loader, tmp_path):
    photo = write_photo(tmp_path / "p.png")
    base = ("explain", photo, "--model", "tiny", "--method", CAM, "-o", tmp_path / "o")
    assert_one_line_error(run(*base, "--param", "scal=2"), 2, "parameter 'scal'", "scale")
    assert_one_line_error(run(*base, "--param", "scale"), 2, "KEY=VALUE")
    assert_one_line_error(run(*base, "--param", "batch_size=0"), 2, "batch_size must be >= 1")
    assert_one_line_error(run(*base, "--device", "tpu"), 2, "--device")
    assert_one_line_error(run(*base, "--resize", "squash"), 2, "letterbox")


def test_params_go_to_the_methods_that_take_them(tiny_loader, tmp_path):
    photo = write_photo(tmp_path / "p.png")
    for scale in (1, 3):
        result = run("explain", photo, "--model", "tiny", "--method", f"{GRAD},{CAM}", "-p", f"scale={scale}",
                     "-o", tmp_path / f"o{scale}")
        assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "o3" / f"p_{CAM}.json").read_text())
    assert record["params"] == {"scale": 3, "batch_size": 32}
    ratio = np.load(tmp_path / "o3" / f"p_{CAM}.npy") / np.load(tmp_path / "o1" / f"p_{CAM}.npy")
    assert np.allclose(ratio, 3)


def test_param_values_are_typed():
    assert parse_params(["a=3", "b=0.5", "c=true", "d=False", "e=blur", "f=none", "g=1e-3"]) == {
        "a": 3, "b": 0.5, "c": True, "d": False, "e": "blur", "f": None, "g": 1e-3}
    assert isinstance(parse_value("3"), int) and isinstance(parse_value("3.0"), float)


def test_several_methods_make_a_grid_and_batches_are_respected(tiny_loader, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(5):
        write_photo(folder / f"im{i}.png", height=30 + 10 * i, width=60)
    _AbsGradient.batch_sizes.clear()
    result = run("explain", folder, "--model", "tiny", "--method", f"{GRAD},{CAM}", "-b", "2", "-o", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert _AbsGradient.batch_sizes == [2, 2, 1]
    assert lines(result)[-1] == f"Explained 5 images with {GRAD}, {CAM}: 35 files written to {tmp_path / 'o'}/"
    grid = Image.open(tmp_path / "o" / "im4_grid.png")
    single = Image.open(tmp_path / "o" / f"im4_{GRAD}.png")
    assert grid.width > 3 * single.width * grid.height / single.height * 0.9  # original + 2 overlays side by side


def test_topk_writes_one_file_set_per_class(tiny_loader, tmp_path):
    photo = write_photo(tmp_path / "p.png")
    result = run("explain", photo, "--model", "tiny", "--method", GRAD, "-t", "topk:2", "-o", tmp_path / "o")
    assert result.exit_code == 0, result.output
    records = [json.loads((tmp_path / "o" / f"p_{GRAD}_{k}.json").read_text()) for k in (0, 1)]
    assert records[0]["score"] >= records[1]["score"] and records[0]["target"] != records[1]["target"]


def test_letterbox_mode_is_recorded(tiny_loader, tmp_path):
    photo = write_photo(tmp_path / "wide.png", height=20, width=80)
    result = run("explain", photo, "--model", "tiny", "--method", GRAD, "--resize", "letterbox", "-o", tmp_path / "o")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "o" / f"wide_{GRAD}.json").read_text())
    assert record["resize_mode"] == "letterbox" and record["target_box"] == [0.0, 12.0, 32.0, 20.0]


def test_methods_and_models_commands():
    methods = run("methods")
    assert methods.exit_code == 0
    row = next(line for line in methods.output.splitlines() if GRAD in line)
    assert "gradient" in row and "Test-only: absolute input gradient" in row
    models = run("models")
    assert models.exit_code == 0 and "efficientnet_lite0" in models.output and "timm:NAME" in models.output
    assert "checkpoint:PATH" in models.output


def test_python_dash_m_entry_point():
    src = str(Path(__file__).parents[1] / "src")
    proc = subprocess.run([sys.executable, "-m", "salience", "explain", "nothing.jpg", "--method", "no_such"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": src}, timeout=120)
    assert proc.returncode == 1 and "unknown method 'no_such'" in proc.stderr and "Traceback" not in proc.stderr


def test_default_model_explains_the_example_photo(tmp_path):
    """The README's command: the bundled model sees the espresso, Grad-CAM is hot on the cup."""
    import salience as sl

    pytest.importorskip("salience.models.zoo.efficientnet_lite")
    if "gradcam" not in sl.available_methods():
        pytest.skip("gradcam not registered yet")
    example = Path(__file__).parents[1] / "examples" / "coffee.jpg"
    result = run("explain", example, "--method", "gradcam", "--out", tmp_path, "--device", "cpu")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "coffee_gradcam.json").read_text())
    assert record["target"] == "espresso" and record["original_size"] == [400, 600]
    saliency = torch.from_numpy(np.load(tmp_path / "coffee_gradcam.npy"))
    cup = saliency[40:150, 60:170].mean()  # the cup fills the centre-top of the 224x224 input
    assert cup > 2 * saliency[180:, :].mean()
    assert Image.open(tmp_path / "coffee_gradcam.png").size[0] == 600
