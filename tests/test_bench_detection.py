"""The benchmark runner on detectors: one row per detection, equal to `sl.evaluate`, known
answers on the RegionDetector toy, no-detection images, inapplicable methods, resume and kill."""

from __future__ import annotations

import math
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

import salience as sl
from salience.bench import ResultStore, run_plan, summarize, validate
from salience.bench.cli import app
from salience.bench.datasets import Sample
from salience.bench.detection_inputs import instance_labels
from salience.bench.grid import grid_from_dict, load_grid
from salience.errors import SalienceError
from salience.images import ImageBatch

from .bench_runs import ENV, REPO, kill_bench_midway, table

PLUGIN = "tests.bench_detection_plugin"
INSTANCE = ["pointing_game", "energy_pointing_game", "miou", "wrong_instance"]
CURVES = ["insertion", "deletion", {"name": "deletion", "params": {"score": "drise"}}]
plugin = None


@pytest.fixture(autouse=True, scope="module")
def _plugin():
    global plugin
    import importlib

    plugin = importlib.import_module(PLUGIN)
    plugin.register_all()
    yield
    plugin.unregister_all()


def config(tmp_path: Path, name: str = "cfg", **extra) -> dict:
    return {"name": "det", "dataset": "quadrants:6", "models": ["bench_regions"], "methods": ["odam", "center"],
            "metrics": CURVES + INSTANCE, "batch_size": 4, "plugins": [PLUGIN],
            "store": str(tmp_path / f"{name}.sqlite"), **extra}


def run(data: dict, resume: bool = False):
    plan = validate(grid_from_dict(data))
    with ResultStore(data["store"]) as store:
        stats = run_plan(plan, store, resume=resume, progress=False)
        return stats, store.rows()


def by_key(rows) -> dict[tuple[str, str, str, str], object]:
    """(image, method, metric, metric params) -> row."""
    return {(r.image, r.method, r.metric, r.metric_params): r for r in rows}


# -- values ---------------------------------------------------------------------------
def test_stored_values_equal_sl_evaluate_on_the_same_detections(tmp_path):
    data = config(tmp_path)
    stats, rows = run(data)
    assert stats.units == 2 * 2 and stats.empty_images == 1 and not stats.errors
    model = sl.load_model("bench_regions")
    samples = plugin.quadrants("6")
    kept = [0, 1, 3, 4, 5]  # image 2 is black: no detection
    x, _ = model.prepare(ImageBatch([samples[i].image for i in kept], [samples[i].image_id for i in kept]))
    masks = [None if samples[i].masks is None else samples[i].masks[:, ::2, ::2] for i in kept]  # 64 -> 32 px
    boxes = [None if samples[i].boxes is None else samples[i].boxes / 2 for i in kept]
    labels = [instance_labels(samples[i], model.class_names) for i in kept]
    stored = by_key(rows)
    checked = 0
    for method in ("odam", "center"):
        expl = sl.explain(model, x, method)
        keys = [f"{samples[kept[int(b)]].image_id}/q{int(q)}c{int(c)}"
                for b, q, c in zip(expl.image_index, expl.queries, expl.classes)]
        assert len(keys) == 7
        for spec in CURVES + INSTANCE:
            name, params = (spec, {}) if isinstance(spec, str) else (spec["name"], spec["params"])
            direct = sl.evaluate(model, x, expl, metrics=[name], masks=masks, boxes=boxes, labels=labels,
                                 **params)[name]
            metric_params = "{}" if not params else '{"score":"drise"}'
            for key, value in zip(keys, direct.tolist()):
                row = stored[(key, method, name, metric_params)]
                if row.value is None:
                    assert math.isnan(value) or row.extra["skipped"] == "no masks or boxes" or \
                        row.extra["skipped"] == "no masks", (key, name, row.extra)
                else:
                    assert row.value == pytest.approx(value, rel=1e-5, abs=1e-6), (key, name)
                    checked += 1
    assert checked > 60


def test_instance_metrics_on_the_toy_give_the_known_answers(tmp_path):
    data = config(tmp_path, methods=["odam", "center", "test_other_quadrant"], metrics=INSTANCE)
    _, rows = run(data)
    v = {k: r.value for k, r in by_key(rows).items()}
    for q in ("quad00/q0c0", "quad00/q1c1", "quad04/q1c1"):  # two objects, each detection on its own
        assert [v[(q, "odam", m, "{}")] for m in INSTANCE] == [1.0, 1.0, 1.0, 0.0]
        assert [v[(q, "test_other_quadrant", m, "{}")] for m in INSTANCE] == [0.0, 0.0, 0.0, 1.0]
        # a centred Gaussian is 4-fold symmetric: a quarter of its energy on each quadrant
        assert v[(q, "center", "energy_pointing_game", "{}")] == pytest.approx(0.25, abs=1e-6)
        assert v[(q, "center", "wrong_instance", "{}")] == pytest.approx(0.25, abs=1e-6)
    rows = by_key(rows)
    lonely = rows[("quad01/q0c0", "odam", "wrong_instance", "{}")]  # the image's only object
    assert lonely.value is None and lonely.extra["skipped"] == "metric undefined (NaN)"
    unknown = rows[("quad04/q0c0", "odam", "energy_pointing_game", "{}")]  # its object is a 'triangle'
    assert unknown.value is None and unknown.extra["skipped"] == "no matching object" and unknown.extra["object"] == -1
    bare = rows[("quad05/q0c0", "odam", "pointing_game", "{}")]
    assert bare.value is None and bare.extra["skipped"] == "no masks or boxes" and "object" not in bare.extra
    detection = rows[("quad03/q1c1", "odam", "miou", "{}")].extra
    assert detection["class"] == "circle" and detection["query"] == 1 and detection["object"] == 0
    assert 0.99 < detection["score"] < 1.0


def test_images_without_detections_get_one_skipped_row_per_method_and_metric(tmp_path):
    _, rows = run(config(tmp_path, methods=["odam"], metrics=["insertion", "energy_pointing_game"]))
    empty = [r for r in rows if r.image == "quad02"]
    assert len(empty) == 2 and all(r.value is None and r.extra == {"skipped": "no detections"} for r in empty)
    summary = {s.metric: s for s in summarize(rows)}
    assert summary["insertion"].n == 7 and summary["insertion"].skipped == 1
    assert summary["energy_pointing_game"].n == 5 and summary["energy_pointing_game"].skipped == 3
    stats, rows = run(config(tmp_path, name="high", methods=["odam"], metrics=["insertion"], score_threshold=0.999))
    assert stats.empty_images == 6 and stats.units == 2 and len(rows) == 6
    assert {r.image for r in rows} == {f"quad{i:02d}" for i in range(6)}


def test_require_masks_keeps_the_images_with_instance_masks(tmp_path):
    stats, rows = run(config(tmp_path, methods=["odam"], metrics=["insertion"], require_masks=True, limit=3))
    assert {r.image.split("/")[0] for r in rows} == {"quad00", "quad01", "quad03"}  # quad02: no objects
    assert stats.empty_images == 0


def test_max_detections_keeps_the_best_of_each_image(tmp_path):
    _, rows = run(config(tmp_path, methods=["odam"], metrics=["insertion"], max_detections=1))
    images = [r.image.split("/")[0] for r in rows if r.value is not None]
    assert sorted(images) == ["quad00", "quad01", "quad03", "quad04", "quad05"]


def test_cost_is_per_batch_ratio_to_a_detector_forward_and_seconds_per_detection(tmp_path):
    _, rows = run(config(tmp_path, methods=["center"], metrics=["cost"], batch_size=6))
    cost = [r for r in rows if r.value is not None]
    assert len(cost) == 7 and len({r.value for r in cost}) == 1
    forward = cost[0].extra["forward_seconds"]
    assert cost[0].value * forward == pytest.approx(cost[0].method_seconds * 7, rel=1e-6)


# -- inapplicable methods -------------------------------------------------------------
def test_methods_that_do_not_apply_give_error_rows_and_the_run_goes_on(tmp_path):
    data = config(tmp_path, methods=["chefer_detr", "eive", "rollout", "odam"], metrics=["insertion", "miou"])
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(app, ["bench", "--config", str(path)])
    assert result.exit_code == 0, result.output
    rows = ResultStore(data["store"]).rows()
    for method, needle in (("chefer_detr", "no dense attention"), ("eive", "does not expose decoder cross-attention"),
                           ("rollout", "does not explain detection models")):
        failed = [r for r in rows if r.method == method and r.image != "quad02"]
        assert len(failed) == 7 * 2 and all(r.value is None and needle in r.extra["error"] for r in failed), method
        assert result.output.count(f"bench_regions · {method}: ") == 1, result.output  # one line per method
    assert sum(r.value is not None for r in rows if r.method == "odam") == 7 + 5  # insertion: all; miou: the matched
    assert "1 image×model with no kept detection" in result.output


# -- resume ---------------------------------------------------------------------------
def test_resume_skips_stored_units_and_redoes_a_partly_stored_batch(tmp_path):
    data = config(tmp_path, methods=["odam", {"name": "drise", "params": {"n_masks": 16}}])
    run(data)
    full = table(data["store"])
    again, _ = run(data, resume=True)
    assert again.units == 0 and again.resumed == 4 and again.rows == 0
    db = sqlite3.connect(data["store"])
    with db:  # lose some drise rows of the second batch (images 4, 5)
        db.execute("DELETE FROM results WHERE method = 'drise' AND image LIKE 'quad05%' AND metric = 'miou'")
    db.close()
    assert len(table(data["store"])) == len(full) - 1
    partial, _ = run(data, resume=True)
    assert partial.units == 1 and partial.resumed == 3
    resumed = table(data["store"])
    assert resumed.keys() == full.keys()
    for key, value in full.items():
        assert (value is None) == (resumed[key] is None) and (value is None or value == pytest.approx(resumed[key]))


def test_sigkill_mid_run_then_resume_equals_uninterrupted_run(tmp_path):
    slow = {"name": "test_slow_mean", "params": {"delay": 0.3}}  # slow last metric: the kill lands inside a unit
    reference = config(tmp_path, name="reference", dataset="quadrants:12", batch_size=2,
                       methods=["odam", "random"], metrics=["insertion", "miou", slow])
    run(reference)
    full = table(reference["store"])
    killed = {**reference, "store": str(tmp_path / "killed.sqlite")}
    path = tmp_path / "killed.yaml"
    path.write_text(yaml.safe_dump(killed))
    kill_bench_midway(path, killed["store"], len(full) // 2, timeout=120)
    partial = table(killed["store"])
    assert 0 < len(partial) < len(full)
    result = subprocess.run([sys.executable, "-m", "salience.bench", "bench", "--config", str(path), "--resume"],
                            cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-1000:]
    resumed = table(killed["store"])  # no duplicate keys
    assert resumed.keys() == full.keys()
    for key, value in full.items():
        assert (value is None) == (resumed[key] is None), key
        if value is not None:
            assert resumed[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    for key, value in partial.items():  # rows stored before the kill keep their values
        assert value is None or resumed[key] == pytest.approx(value, rel=1e-5, abs=1e-6)


# -- scene detectors ------------------------------------------------------------------
@pytest.fixture(scope="module")
def scene_detectors(tmp_path_factory):
    """Untrained small scene detectors over the scene classes, saved where the plugin loads them."""
    from salience.data.scenes import SceneDataset
    from salience.models.checkpoint import save_head_checkpoint
    from salience.models.zoo.scene_detectors import build_scene_detector

    folder = tmp_path_factory.mktemp("detectors")
    names = SceneDataset(1, "detection", 2).class_names
    for arch in ("scene-detr", "scene-deformable-detr"):
        torch.manual_seed(0)
        module = build_scene_detector(dict(architecture=arch, num_classes=len(names), num_queries=6, d_model=32,
                                           heads=2, ffn=32, encoder_layers=1, decoder_layers=2, input_size=64,
                                           dropout=0.0))
        save_head_checkpoint(module, names, folder / f"{arch}.pt")
    old = os.environ.get("BENCH_DETECTORS")
    os.environ["BENCH_DETECTORS"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("BENCH_DETECTORS")
    else:
        os.environ["BENCH_DETECTORS"] = old


def test_scene_detectors_on_generated_scenes(tmp_path, scene_detectors):
    metrics = [{"name": "insertion", "params": {"score": "drise"}}, "energy_pointing_game", "cost"]
    data = config(tmp_path, dataset="scenes:detection:2:2", models=["bench_scene_detr", "bench_scene_deformable_detr"],
                  methods=["eive", "chefer_detr", {"name": "drise", "params": {"n_masks": 8}}], metrics=metrics,
                  max_detections=2, preset="aha", batch_size=2)
    stats, rows = run(data)
    assert stats.units == 2 * 3 and stats.empty_images == 0
    assert len(rows) == 2 * 3 * len(metrics) * 4  # models × methods × metrics × (2 images × 2 detections)
    chefer = {r.model: r for r in rows if r.method == "chefer_detr" and r.metric == "cost"}
    assert chefer["bench_scene_detr"].value > 0
    assert chefer["bench_scene_deformable_detr"].value is None
    assert "no dense attention" in chefer["bench_scene_deformable_detr"].extra["error"]
    assert len(stats.errors) == 1
    # insertion with the D-RISE score, as sl.evaluate gives it for the same EIVE maps
    from salience.data.scenes import SceneDataset

    model = sl.load_model("bench_scene_detr")
    samples = SceneDataset(2, "detection", 2)
    x, _ = model.prepare(ImageBatch([samples[i].image for i in range(2)], ["a", "b"]))
    _, selections = model.detections(x)
    from salience.targets import resolve_detection_target
    from salience.models.detection import Selection

    top = [Selection(s.query[:2], s.label[:2], s.score[:2], s.box[:2]) for s in selections]
    expl = sl.explain(model, x, "eive", target=resolve_detection_target("all", top, model.class_names))
    direct = sl.evaluate(model, x, expl, metrics=["insertion"], preset="aha", score="drise")["insertion"]
    stored = by_key(r for r in rows if r.model == "bench_scene_detr")
    for b, q, c, value in zip(expl.image_index, expl.queries, expl.classes, direct.tolist()):
        row = stored[(f"{int(b):06d}/q{int(q)}c{int(c)}", "eive", "insertion", '{"preset":"aha","score":"drise"}')]
        assert row.value == pytest.approx(value, rel=1e-5, abs=1e-6)
        assert row.extra["class"] == model.class_names[int(c)]


# -- configuration --------------------------------------------------------------------
def test_instance_class_names_map_to_the_detector_vocabulary():
    names = ["person", "chair", "diningtable"]
    sample = Sample(image=None, image_id="a", instance_labels=["Person", "dining table", "sofa"])
    assert instance_labels(sample, names).tolist() == [0, 2, -1]
    ids = Sample(image=None, image_id="b", instance_classes=torch.tensor([1, 0]))
    assert instance_labels(ids, names).tolist() == [1, 0]
    assert instance_labels(Sample(image=None, image_id="c"), names) is None


@pytest.mark.parametrize("field, value, needle", [("max_detections", 0, "max_detections"),
                                                  ("score_threshold", 1.5, "score_threshold"),
                                                  ("score_threshold", "high", "score_threshold"),
                                                  ("require_masks", "yes", "require_masks")])
def test_bad_detection_keys_are_one_line_errors(tmp_path, field, value, needle):
    with pytest.raises(SalienceError, match=needle):
        grid_from_dict(config(tmp_path, **{field: value}))


@pytest.mark.parametrize("name", ["detector-scenes.yaml", "detector-realmini.yaml"])
def test_shipped_detector_benchmarks_validate(name):
    grid = load_grid(REPO / "benchmarks" / name)
    assert {"scene-detr", "scene-deformable-detr"} <= set(grid.models)
    if grid.dataset.startswith("realmini:") and not (REPO / grid.dataset.split(":", 1)[1]).exists():
        grid.dataset = "scenes:detection:1:2"  # realmini lives beside the main checkout only
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        plan = validate(grid)
    finally:
        os.chdir(cwd)
    assert len(plan.methods) == len(grid.methods)
