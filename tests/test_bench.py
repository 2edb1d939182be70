"""The benchmark runner: store, resume, SIGKILL + resume, torchrun sharding, summary, bad input."""

from __future__ import annotations

import math
import multiprocessing
import sqlite3
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from salience.bench import ResultRow, ResultStore, available_metrics, run_plan, summarize, validate, write_report
from salience.bench.cli import app
from salience.bench.grid import grid_from_dict
from salience.bench.metric_fns import MetricFn, MetricOutput
from salience.bench.report import to_csv, to_markdown
from salience.errors import SalienceError
from salience.images import ImageBatch

from .bench_runs import ENV, REPO, kill_bench_midway, table

METRICS = ["test_deletion", "test_energy", "test_mean"]
bench_plugin = None  # the test-only plugin module, registered only while this file's tests run


@pytest.fixture(autouse=True, scope="module")
def _plugin():
    global bench_plugin
    import importlib

    bench_plugin = importlib.import_module("tests.bench_plugin")
    bench_plugin.register_all()
    yield
    bench_plugin.unregister_all()


def config(tmp_path: Path, n_images: int = 6, delay: float = 0.0, name: str = "cfg", **extra) -> dict:
    return {
        "name": "test", "dataset": f"synthetic:{n_images}", "models": ["bench_tiny"],
        "methods": [{"name": "test_channel_mean", "params": {"delay": delay}}],
        "metrics": list(METRICS), "batch_size": 2, "plugins": ["tests.bench_plugin"],
        "store": str(tmp_path / f"{name}.sqlite"), **extra,
    }


def write_config(tmp_path: Path, data: dict, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def run(data: dict, resume: bool = False, metric_table=None):
    plan = validate(grid_from_dict(data), metric_table)
    with ResultStore(data["store"]) as store:
        stats = run_plan(plan, store, resume=resume, progress=False)
        return stats, store.rows()


def same_values(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] is None) == (b[k] is None), k
        if a[k] is not None:
            assert math.isclose(a[k], b[k], rel_tol=1e-5, abs_tol=1e-6), (k, a[k], b[k])


# -- store and resume -------------------------------------------------------------------
def test_rows_are_committed_as_each_metric_finishes(tmp_path):
    data = config(tmp_path, n_images=4)
    seen = []

    def counting(model, x, maps, target, masks=None, boxes=None):
        db = sqlite3.connect(data["store"])  # another connection sees only committed rows
        seen.append(db.execute("SELECT COUNT(*) FROM results").fetchone()[0])
        db.close()
        return MetricOutput(maps.flatten(1).max(1).values)

    metrics = {"test_mean": MetricFn("test_mean", bench_plugin._mean), "counting": MetricFn("counting", counting)}
    data["metrics"] = ["test_mean", "counting"]
    stats, rows = run(data, metric_table=metrics)
    # batches of 2 images: before each 'counting' call, the batch's test_mean rows and all
    # earlier batches' rows are already committed.
    assert seen == [2, 6]
    assert len(rows) == stats.rows == 8
    assert {r.image for r in rows if r.metric == "counting"} == {f"syn{i:03d}" for i in range(4)}


def test_resume_after_complete_run_computes_nothing(tmp_path):
    data = config(tmp_path, n_images=5)
    stats, rows = run(data)
    assert stats.units == 3 and len(rows) == 5 * len(METRICS)
    before = table(data["store"])
    created = sqlite3.connect(data["store"]).execute("SELECT SUM(created) FROM results").fetchone()[0]
    again, rows2 = run(data, resume=True)
    assert again.units == 0 and again.rows == 0 and again.resumed == 3
    assert table(data["store"]) == before
    assert sqlite3.connect(data["store"]).execute("SELECT SUM(created) FROM results").fetchone()[0] == created
    # without --resume the work is redone, but the key keeps rows unique
    redo, _ = run(data)
    assert redo.units == 3 and table(data["store"]) == before


def test_images_without_masks_are_skipped_and_counted(tmp_path):
    _, rows = run(config(tmp_path, n_images=5))
    energy = [r for r in rows if r.metric == "test_energy"]
    assert sorted(r.image for r in energy if r.value is None) == ["syn001", "syn003"]  # 001 has a box only
    assert all(r.extra == {"skipped": "no masks"} for r in energy if r.value is None)
    row = next(s for s in summarize(rows) if s.metric == "test_energy")
    assert (row.n, row.skipped, row.failed) == (3, 2, 0)


def test_region_metrics_fall_back_to_boxes_and_cost_is_a_ratio(tmp_path):
    data = config(tmp_path, n_images=4)
    data["metrics"] = ["test_region_energy", "cost"]
    data["methods"] = [{"name": "test_channel_mean", "params": {"delay": 0.05}}]
    _, rows = run(data)
    region = {r.image: r for r in rows if r.metric == "test_region_energy"}
    assert region["syn003"].value is None and region["syn003"].extra == {"skipped": "no masks or boxes"}
    # syn001 has only a box: the bottom-right quarter of the photo, i.e. input pixels [16:, 16:]
    model = bench_plugin.load_tiny()
    x, _ = model.prepare(ImageBatch([bench_plugin.synthetic("2")[1].image], ["s"]))
    m = x.abs().mean(1)[0]
    assert region["syn001"].value == pytest.approx(float(m[16:, 16:].sum() / m.sum()), rel=1e-5)
    cost = [r for r in rows if r.metric == "cost"]
    assert len(cost) == 4
    # one ratio per batch of 2 (timings on a shared machine are too noisy for a bound)
    assert all(r.value > 0 for r in cost) and len({r.value for r in cost}) <= 2
    assert cost[0].value == cost[1].value
    fn = available_metrics()["cost"]
    out = fn(None, torch.zeros(3, 3, 4, 4), None, None, method="m", method_seconds=1.5, forward_seconds=0.01)
    assert out.values.tolist() == pytest.approx([150.0] * 3)
    assert all(r.method_seconds >= 0.05 for r in cost)


def test_masks_follow_the_preprocessing_geometry():
    from salience.bench.ground_truth import boxes_to_input, mask_to_input
    from salience.preprocessing import Preprocess

    full = torch.ones(1, 40, 80, dtype=torch.bool)  # a wide photo, all object
    letterbox = Preprocess(size=(32, 32), mode="letterbox").geometry(80, 40)
    m = mask_to_input(full, letterbox)
    assert m[8:24].all() and not m[:8].any() and not m[24:].any()
    crop = Preprocess(size=(32, 32), mode="center_crop", crop_pct=1.0).geometry(80, 40)
    left = torch.zeros(1, 40, 80, dtype=torch.bool)
    left[:, :, :40] = True  # the left half of the photo: the crop sees x in [20, 60)
    m = mask_to_input(left, crop)
    assert m[:, :16].all() and not m[:, 16:].any()
    box = boxes_to_input(torch.tensor([[20.0, 0.0, 40.0, 40.0]]), crop)
    assert box.tolist() == [[0.0, 0.0, 16.0, 32.0]]
    with pytest.raises(SalienceError, match="does not match its image"):
        mask_to_input(torch.ones(1, 10, 10, dtype=torch.bool), crop)


def test_energy_value_matches_the_mask_in_input_space(tmp_path):
    # the 40x48 photo is resized to 32x32: the mask (top-left 20x24) becomes the top-left 16x16
    _, rows = run(config(tmp_path, n_images=1))
    model = bench_plugin.load_tiny()
    sample = bench_plugin.synthetic("1")[0]
    x, _ = model.prepare(ImageBatch([sample.image], ["s"]))
    cls = int(model(x).argmax(1))
    m = x.abs().mean(1)[0] * (1 + cls)
    expected = float(m[:16, :16].sum() / m.sum())
    got = next(r.value for r in rows if r.metric == "test_energy")
    assert got == pytest.approx(expected, rel=1e-5)


def test_sigkill_mid_run_then_resume_equals_uninterrupted_run(tmp_path):
    # maps with batch-dependent noise (like `random`), and a slow last metric, so the kill
    # lands inside a batch: 4 of its 6 rows (3 metrics x 2 images) are stored
    n = 8
    metrics = ["test_deletion", "test_energy", {"name": "test_mean", "params": {"delay": 1.0}}]
    reference = config(tmp_path, n_images=n, name="reference")
    reference["methods"][0]["params"]["noise"] = 0.5
    reference["metrics"] = ["test_deletion", "test_energy", "test_mean"]
    run(reference)
    full = table(reference["store"])
    assert len(full) == n * 3

    killed = config(tmp_path, n_images=n, delay=0.2, name="killed")
    killed["methods"][0]["params"]["noise"] = 0.5
    killed["metrics"] = metrics
    path = write_config(tmp_path, killed)
    kill_bench_midway(path, killed["store"], 10, timeout=60)
    partial = table(killed["store"])
    assert 10 <= len(partial) < len(full) and len(partial) % 6 == 4, len(partial)  # killed inside batch 2

    result = CliRunner().invoke(app, ["bench", "--config", str(path), "--resume"])
    assert result.exit_code == 0, result.output
    assert "3 units computed, 1 already stored" in result.output  # batch 2, partly stored, is redone whole
    resumed = table(killed["store"])
    # delays are parameters, hence part of the keys: compare without method and metric params
    strip = lambda t: {(k[0], k[1], k[2], k[4]): v for k, v in t.items()}  # noqa: E731
    same_values(strip(resumed), strip(full))
    assert len(resumed) == len(full)
    for key, value in strip(partial).items():  # rows stored before the kill keep their values
        assert strip(resumed)[key] == value


# -- torchrun ---------------------------------------------------------------------------
def test_torchrun_two_cpu_processes_write_the_rows_of_one_process(tmp_path):
    if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
        pytest.skip("torch.distributed with the gloo backend is not available in this torch build")
    n = 7
    single = config(tmp_path, n_images=n, name="single")
    run(single)
    sharded = config(tmp_path, n_images=n, name="sharded", device="cpu")
    path = write_config(tmp_path, sharded)
    log = tmp_path / "calls.log"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "salience.bench", "bench", "--config", str(path)]
    proc = subprocess.run(cmd, cwd=REPO, env={**ENV, "BENCH_TEST_LOG": str(log)}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    same_values(table(sharded["store"]), table(single["store"]))
    pids = [line.split()[0] for line in log.read_text().splitlines()]
    assert len(pids) == n and len(set(pids)) == 2  # each image explained once, by two processes
    assert sorted(pids.count(p) for p in set(pids)) == [3, 4]  # rank 0: images 0,2,4,6; rank 1: 1,3,5
    assert proc.stdout.count("| model | method |") == 1  # only rank 0 prints the summary
    assert "4 units computed" in proc.stdout  # counted over both ranks: 2 + 2 batches of 2


# -- summary and plots ------------------------------------------------------------------
def test_summary_mean_std_match_hand_computation_and_plots_are_written(tmp_path):
    data = config(tmp_path, n_images=6)
    data["methods"].append({"name": "test_channel_mean", "params": {"delay": 0.001}})  # a second setting
    _, rows = run(data)
    summary = summarize(rows)
    assert len(summary) == 2 * len(METRICS)
    for s in summary:
        values = [r.value for r in rows if r.metric == s.metric and r.value is not None
                  and s.method == f"{r.method} {r.params}"]
        assert s.n == len(values)
        assert s.mean == pytest.approx(statistics.fmean(values), rel=1e-12)
        assert s.std == pytest.approx(statistics.stdev(values), rel=1e-9)
    md, csv = to_markdown(summary), to_csv(summary)
    first = summary[0]
    assert f"{first.mean:.4f} ± {first.std:.4f}" in md
    assert f"{first.mean:.4f},{first.std:.4f},{first.n}" in csv
    paths = write_report(rows, tmp_path / "out")
    assert [p.name for p in paths["curves"]] == ["curve_bench_tiny_test_deletion.png"]
    assert len(paths["bars"]) == len(METRICS)
    for p in paths["curves"] + paths["bars"]:
        with Image.open(p) as im:
            im.verify()
            assert im.format == "PNG" and im.size[0] > 100
    assert (tmp_path / "out" / "summary.csv").read_text() == csv


def test_evaluate_command_end_to_end(tmp_path):
    out = tmp_path / "out"
    args = ["evaluate", "--model", "bench_tiny", "--dataset", "synthetic:3", "--methods", "test_channel_mean",
            "--metrics", "test_deletion,test_mean", "--store", str(tmp_path / "e.sqlite"), "--out", str(out),
            "--batch-size", "2", "--param", "test_channel_mean.delay=0.0", "--plugin", "tests.bench_plugin"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "| bench_tiny | test_channel_mean | test_deletion |" in result.output
    assert len(table(tmp_path / "e.sqlite")) == 6
    assert (out / "summary.md").exists() and (out / "curve_bench_tiny_test_deletion.png").exists()


def test_main_cli_has_evaluate_and_bench(tmp_path):
    from salience.cli.app import app as main_app

    data = config(tmp_path, n_images=2)
    result = CliRunner().invoke(main_app, ["bench", "--config", str(write_config(tmp_path, data))])
    assert result.exit_code == 0, result.output
    assert len(table(data["store"])) == 2 * len(METRICS)
    result = CliRunner().invoke(main_app, ["evaluate", "--dataset", "synthetic:2", "--methods", "nope",
                                           "--metrics", "test_mean", "--model", "bench_tiny"])
    _one_line_error(result, "unknown method 'nope'")


# -- bad input --------------------------------------------------------------------------
def _one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_corrupt_store_file_is_a_one_line_error(tmp_path):
    data = config(tmp_path)
    Path(data["store"]).write_bytes(b"this is not a database" * 100)
    path = write_config(tmp_path, data)
    proc = subprocess.run([sys.executable, "-m", "salience.bench", "bench", "--config", str(path)],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "unreadable" in lines[0] and str(data["store"]) in lines[0], proc.stderr
    assert Path(data["store"]).read_bytes() == b"this is not a database" * 100  # left untouched


def _open_store_after(barrier, path, index) -> None:
    barrier.wait()  # both processes open the fresh file at the same moment, as torchrun ranks do
    with ResultStore(path) as store:
        store.add([ResultRow(f"img{index}", "m", "x", "{}", "y", "{}", float(index))])


def test_ranks_opening_a_fresh_store_at_once_all_succeed(tmp_path):
    # Before the setup retries, about one round in three failed with "database is locked".
    ctx = multiprocessing.get_context("fork")
    for round_ in range(20):
        path = tmp_path / f"fresh{round_}.sqlite"
        barrier = ctx.Barrier(2)
        procs = [ctx.Process(target=_open_store_after, args=(barrier, path, i)) for i in range(2)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(60)
        assert [proc.exitcode for proc in procs] == [0, 0], f"round {round_}"
        with ResultStore(path) as store:
            assert sorted(row.value for row in store.rows()) == [0.0, 1.0]


def test_store_from_another_program_is_refused(tmp_path):
    path = tmp_path / "other.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE results (a, b)")
    db.commit()
    db.close()
    with pytest.raises(SalienceError, match="not a salience result store"):
        ResultStore(path)


@pytest.mark.parametrize("field, value, needles", [
    ("methods", ["test_channel_men"], ("unknown method 'test_channel_men'", "Did you mean 'test_channel_mean'")),
    ("metrics", ["test_delection"], ("unknown metric 'test_delection'", "Did you mean 'test_deletion'")),
    ("dataset", "synthetik:3", ("unknown dataset", "'synthetik'")),
    ("dataset", "synthetic", ("write it as KIND:PATH",)),
    ("models", ["bench_tine"], ("unknown model 'bench_tine'", "Did you mean 'bench_tiny'")),
    ("methods", [{"name": "test_channel_mean", "params": {"dely": 1}}], ("no parameter 'dely'", "'delay'")),
    ("batch_sise", 2, ("unknown key", "'batch_size'")),
])
def test_bad_config_is_a_one_line_error_and_runs_nothing(tmp_path, field, value, needles):
    data = config(tmp_path)
    data[field] = value
    result = CliRunner().invoke(app, ["bench", "--config", str(write_config(tmp_path, data))])
    _one_line_error(result, *needles)
    assert not Path(data["store"]).exists()  # validated before the store is even created


def test_missing_or_invalid_config_file(tmp_path):
    _one_line_error(CliRunner().invoke(app, ["bench", "--config", str(tmp_path / "nope.yaml")]), "no such file")
    bad = tmp_path / "bad.yaml"
    bad.write_text("methods: [a, b\n")
    _one_line_error(CliRunner().invoke(app, ["bench", "--config", str(bad)]), "not valid YAML")


# -- the real metric suite through the runner ------------------------------------------
def test_suite_metrics_through_the_runner_equal_direct_calls(tmp_path):
    suite = pytest.importorskip("salience.metrics", reason="salience.metrics not merged yet")
    data = config(tmp_path, n_images=4)
    data.update(metrics=["insertion", "deletion", "miou", "energy_pointing_game"], preset="rise", batch_size=4)
    _, rows = run(data)
    model = bench_plugin.load_tiny()
    samples = bench_plugin.synthetic("4")
    x, _ = model.prepare(ImageBatch([s.image for s in samples], [s.image_id for s in samples]))
    from salience.targets import ClassTarget

    classes = model(x).argmax(1)
    target = ClassTarget(classes, torch.arange(4), model.class_names)
    maps = x.abs().mean(1) * (1 + classes.float().view(-1, 1, 1))
    got = {(r.metric, r.image): r for r in rows}
    direct = suite.insertion(model, x, maps, target, preset="rise")
    for i, s in enumerate(samples):
        assert got["insertion", s.image_id].value == pytest.approx(float(direct.values[i]), abs=1e-5)
        assert got["insertion", s.image_id].extra["curve"] == pytest.approx(direct.curves[i].tolist(), abs=1e-5)
    masks = torch.zeros(2, 32, 32, dtype=torch.bool)
    masks[:, :16, :16] = True  # images 0 and 2: the top-left block on the 32x32 input
    epg = suite.energy_pointing_game(model, x[[0, 2]], maps[[0, 2]], masks=masks)
    assert got["energy_pointing_game", "syn000"].value == pytest.approx(float(epg[0]), abs=1e-6)
    assert got["energy_pointing_game", "syn001"].value is not None  # a box-only image counts for pointing games
    assert got["miou", "syn001"].value is None  # but not for mIoU


def test_id_is_derived_from_insertion_and_deletion_rows():
    from salience.bench.report import summarize, with_derived_id
    from salience.bench.store import ResultRow

    def row(image, metric, value):
        return ResultRow(image, "m", "gradcam", "{}", metric, '{"preset": "rise"}', value)

    rows = [row("a", "insertion", 0.7), row("a", "deletion", 0.1), row("b", "insertion", 0.5),
            row("b", "deletion", 0.3), row("c", "insertion", 0.4)]  # c has no deletion: no id
    derived = [r for r in with_derived_id(rows) if r.metric == "id"]
    assert sorted((r.image, round(r.value, 9)) for r in derived) == [("a", 0.6), ("b", 0.2)]
    (id_row,) = [s for s in summarize(with_derived_id(rows)) if s.metric == "id"]
    assert id_row.n == 2 and abs(id_row.mean - 0.4) < 1e-12


# -- subsets, order, several datasets, confidence -----------------------------------------
def test_method_subset_runs_on_evenly_spaced_images_and_resumes(tmp_path):
    data = config(tmp_path, n_images=8)
    data["methods"].append({"name": "test_channel_mean", "params": {"delay": 0.001}, "subset": 3})
    _, rows = run(data)
    def images(delay):
        return sorted({r.image for r in rows if r.params.startswith(f'{{"delay":{delay},')})

    assert len(images(0.0)) == 8
    assert images(0.001) == ["syn000", "syn002", "syn005"]  # positions ⌊k·8/3⌋
    stats, again = run(data, resume=True)
    assert stats.units == 0 and len(again) == len(rows)


def test_shuffle_visits_a_seeded_order_and_limit_samples_it(tmp_path):
    first = {r.image for r in run(config(tmp_path, n_images=12, name="a", limit=4, shuffle=1))[1]}
    again = {r.image for r in run(config(tmp_path, n_images=12, name="b", limit=4, shuffle=1))[1]}
    other = {r.image for r in run(config(tmp_path, n_images=12, name="c", limit=4, shuffle=2))[1]}
    plain = {r.image for r in run(config(tmp_path, n_images=12, name="d", limit=4))[1]}
    assert first == again and first != other and len(first) == 4
    assert plain == {f"syn{i:03d}" for i in range(4)}


def test_a_list_of_datasets_is_read_one_after_the_other(tmp_path):
    from salience.bench.datasets import open_dataset

    both = open_dataset(["synthetic:3", "synthetic:2"])
    assert len(both) == 5 and both[4].image_id == "syn001" and both[2].image_id == "syn002"
    with pytest.raises(SalienceError):
        grid_from_dict({**config(tmp_path), "methods": [{"name": "test_channel_mean", "subset": 0}]})


def test_confidence_report_intervals_and_paired_test(tmp_path):
    from scipy.stats import wilcoxon

    from salience.bench.report import bootstrap_mean_ci, confidence_report, paired_test

    values = [0.1 * i for i in range(20)]
    low, high = bootstrap_mean_ci(values)
    assert low < statistics.fmean(values) < high and high - low < 0.6
    a = {f"i{k}": v + 0.05 * (k % 3) for k, v in enumerate(values)}
    b = {f"i{k}": v for k, v in enumerate(values)}
    b["extra"] = 5.0  # not paired
    t = paired_test("m", "insertion", "x", "y", a, b)
    diffs = [a[k] - b[k] for k in a]
    assert t.n == 20 and t.mean_difference == pytest.approx(statistics.fmean(diffs))
    assert t.p_value == pytest.approx(wilcoxon(diffs).pvalue)
    rows = [ResultRow(k, "m", name, "{}", "deletion", "{}", v) for name, d in (("x", a), ("y", b)) for k, v in d.items()]
    report = confidence_report(rows)
    assert "| m | deletion | x | y | 20 | +0.0475 |" in report  # lower mean deletion leads (y has an unpaired 5.0)
