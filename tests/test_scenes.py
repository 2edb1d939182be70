"""Scene generator: determinism, exact visible masks, tight boxes, COCO round trip, CLI, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from salience.data import load_dataset
from salience.data.scenes import DEFAULT_CLASSES, SceneConfig, SceneDataset
from salience.data.scenes.compose import Canvas, tight_boxes
from salience.data.scenes.shapes import SHAPES, shape_mask
from salience.errors import SalienceError, UnknownNameError

SMALL = SceneConfig(size=64, sources=("shapes",), backgrounds=("textures",), min_pixels=16)


def test_same_seed_and_index_give_identical_scenes_in_any_order():
    a = SceneDataset(6, "detection", seed=3, config=SMALL)
    b = SceneDataset(6, "detection", seed=3, config=SMALL)
    forward = [a[i] for i in range(6)]
    backward = [b[i] for i in reversed(range(6))][::-1]
    for x, y in zip(forward, backward):
        np.testing.assert_array_equal(np.asarray(x.image), np.asarray(y.image))
        np.testing.assert_array_equal(x.masks, y.masks)
        np.testing.assert_array_equal(x.instance_classes, y.instance_classes)
    assert not np.array_equal(np.asarray(forward[0].image), np.asarray(forward[1].image))
    other = SceneDataset(1, "detection", seed=4, config=SMALL)[0]
    assert not np.array_equal(np.asarray(other.image), np.asarray(forward[0].image))


def test_visible_mask_of_the_lower_object_is_its_shape_minus_the_upper_one():
    canvas = Canvas(np.zeros((20, 20, 3), np.uint8))
    low, high = np.ones((10, 10), bool), np.ones((6, 6), bool)
    red, blue = np.full((10, 10, 3), [255, 0, 0], np.uint8), np.full((6, 6, 3), [0, 0, 255], np.uint8)
    assert canvas.fits(high, 6, 6, False, 0.25, 1)
    canvas.paste(red, low, 2, 2, beneath=False)
    assert canvas.fits(high, 6, 6, False, 0.25, 1)  # low keeps 100 - 36 = 64 >= 25
    canvas.paste(blue, high, 6, 6, beneath=False)
    masks = canvas.masks()
    expected_low = np.zeros((20, 20), bool)
    expected_low[2:12, 2:12] = True
    expected_low[6:12, 6:12] = False
    np.testing.assert_array_equal(masks[0], expected_low)
    assert masks[1].sum() == 36 and masks[1][6:12, 6:12].all()
    assert (canvas.image[masks[0]] == [255, 0, 0]).all() and (canvas.image[masks[1]] == [0, 0, 255]).all()
    assert (canvas.image[~masks.any(0)] == 0).all()
    np.testing.assert_array_equal(tight_boxes(masks), [[2, 2, 12, 12], [6, 6, 12, 12]])
    # a third object hiding more than 75 % of the first is refused
    assert not canvas.fits(np.ones((9, 9), bool), 2, 2, False, 0.25, 1)
    # beneath: only the uncovered pixels become visible
    assert canvas.fits(np.ones((4, 4), bool), 10, 10, True, 0.25, 1)
    canvas.paste(red[:4, :4], np.ones((4, 4), bool), 10, 10, beneath=True)
    assert canvas.masks()[2].sum() == 16 - 4


def test_scene_masks_are_disjoint_visible_and_boxes_tight():
    ds = SceneDataset(8, "detection", seed=0, config=SceneConfig(size=64, min_pixels=16))
    for i in range(len(ds)):
        s = ds[i]
        assert 1 <= len(s.masks) <= 6 and s.masks.shape[1:] == (64, 64)
        assert s.masks.sum(0).max() <= 1  # each pixel shows one object at most
        np.testing.assert_array_equal(s.boxes, tight_boxes(s.masks))
        for m, (x0, y0, x1, y1) in zip(s.masks, s.boxes.astype(int)):
            assert m.sum() >= 16 and m[y0:y1, x0:x1].sum() == m.sum()
            assert m[y0].any() and m[y1 - 1].any() and m[:, x0].any() and m[:, x1 - 1].any()
        assert s.instance_labels == [ds.class_names[c] for c in s.instance_classes]


def test_occluded_objects_keep_their_minimum_visible_fraction():
    cfg = SceneConfig(size=64, sources=("shapes",), backgrounds=("textures",), objects=(6, 6), scale=(0.4, 0.6),
                      min_visible=0.5, min_pixels=16)
    ds = SceneDataset(10, "detection", seed=1, config=cfg)
    fractions = np.concatenate([ds.scene(i).visible for i in range(10)])
    assert (fractions >= 0.5).all() and (fractions < 1).any()
    for i in range(3):
        scene = ds.scene(i)
        np.testing.assert_array_equal(scene.masks.sum((1, 2)) > 0, True)


def test_classification_main_object_dominates_and_is_the_label():
    cfg = SceneConfig(size=64, min_pixels=16, distractors=(2, 2))
    ds = SceneDataset(6, "classification", seed=0, config=cfg)
    n_distractors = 0
    for i in range(6):
        s, scene = ds[i], ds.scene(i)
        assert s.label == scene.classes[scene.main] and s.label_name == ds.class_names[s.label]
        assert len(s.masks) == 1 and np.array_equal(s.masks[0], scene.masks[scene.main])
        areas = scene.masks.sum((1, 2))
        others = np.delete(np.arange(len(areas)), scene.main)
        assert (areas[others] <= 0.25 * areas[scene.main]).all()
        assert (scene.classes[others] != s.label).all()
        n_distractors += len(others)
    assert n_distractors > 0


def test_default_vocabulary_and_scenes_kind():
    ds = load_dataset("scenes:detection:3:7")
    assert ds.class_names == DEFAULT_CLASSES and len(ds) == 3 and ds.seed == 7
    assert DEFAULT_CLASSES[:6] == SHAPES and "person" in DEFAULT_CLASSES and "hanes_socks" in DEFAULT_CLASSES
    assert np.asarray(ds[0].image).shape == (256, 256, 3)
    with pytest.raises(UnknownNameError, match="Did you mean 'detection'"):
        load_dataset("scenes:detectoin")


def test_shapes_are_tight_and_distinct():
    rng = np.random.default_rng(0)
    areas = {}
    for name in SHAPES:
        m = shape_mask(name, 41, rng)
        assert m[0].any() and m[-1].any() and m[:, 0].any() and m[:, -1].any()
        areas[name] = m.mean()
    assert areas["circle"] > areas["ring"] and areas["circle"] > areas["star"]


def test_requested_class_that_no_source_has_is_an_error():
    with pytest.raises(SalienceError, match="no scene source has objects of class 'dog'"):
        SceneDataset(1, "detection", config=SceneConfig(sources=("shapes",), classes=("circle", "dog")))
    with pytest.raises(SalienceError, match="objects must draw at least one"):
        SceneConfig(objects=(0, 2))


def _same_samples(a, b):
    np.testing.assert_array_equal(np.asarray(a.image), np.asarray(b.image))
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.instance_classes, b.instance_classes)
    assert a.instance_labels == b.instance_labels and a.label == b.label and a.label_name == b.label_name


@pytest.mark.parametrize("task", ["detection", "classification"])
def test_coco_round_trip(tmp_path, task):
    from salience.data.scenes import write_coco

    ds = SceneDataset(5, task, seed=2, config=SceneConfig(size=48, min_pixels=16))
    folder = write_coco(ds, tmp_path / "out", progress=False)
    assert not (tmp_path / "out.partial").exists()
    back = load_dataset(f"coco:{folder / 'instances.json'}")
    assert len(back) == 5 and back.class_names == ds.class_names
    assert (folder / "classes.txt").read_text().split() == list(ds.class_names)
    for i in range(5):
        _same_samples(ds[i], back[i])
    with pytest.raises(SalienceError, match="already exists"):
        write_coco(ds, folder, progress=False)


def test_interrupted_write_leaves_no_output_and_resumes(tmp_path):
    from salience.data.scenes import write_coco

    ds = SceneDataset(4, "detection", seed=0, config=SMALL)

    class Broken:
        class_names, config, seed, task = ds.class_names, ds.config, ds.seed, ds.task

        def __len__(self):
            return 4

        def __getitem__(self, i):
            if i == 2:
                raise KeyboardInterrupt
            return ds[i]

    with pytest.raises(KeyboardInterrupt):
        write_coco(Broken(), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() and len(list((tmp_path / "out.partial/images").iterdir())) == 2
    write_coco(ds, tmp_path / "out", progress=False)
    back = load_dataset(f"coco:{tmp_path / 'out/instances.json'}")
    for i in range(4):
        _same_samples(ds[i], back[i])


def test_cli_make_and_preview(tmp_path):
    from typer.testing import CliRunner

    from salience.cli.app import app

    runner = CliRunner()
    result = runner.invoke(app, ["scenes", "make", "--n", "3", "--seed", "1", "--size", "40", "--sources", "shapes",
                                 "--backgrounds", "textures", "--objects", "2-3", "--out", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    back = load_dataset(f"coco:{tmp_path / 'd/instances.json'}")
    assert len(back) == 3 and back.class_names == SHAPES
    expected = SceneDataset(3, "detection", 1, SceneConfig(size=40, sources=("shapes",), backgrounds=("textures",),
                                                           objects=(2, 3)))
    _same_samples(expected[2], back[2])
    result = runner.invoke(app, ["scenes", "preview", "--n", "2", "--size", "40", "--out", str(tmp_path / "p.png")])
    assert result.exit_code == 0 and (tmp_path / "p.png").exists()
    result = runner.invoke(app, ["scenes", "make", "--n", "2", "--sources", "nope", "--out", str(tmp_path / "e")])
    assert result.exit_code == 1 and "nope" in result.output and not (tmp_path / "e").exists()


def _coco_file(tmp_path, **changes):
    from PIL import Image

    Image.new("RGB", (10, 8)).save(tmp_path / "a.png")
    data = {"images": [{"id": 1, "file_name": "a.png", "height": 8, "width": 10}],
            "categories": [{"id": 1, "name": "cat"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 3, 3],
                             "segmentation": [[1, 1, 4, 1, 4, 4, 1, 4]]}]}
    for path, value in changes.items():
        key, _, field = path.partition("__")
        if field:
            data[key][0][field] = value
            if value is None:
                del data[key][0][field]
        else:
            data[key] = value
    (tmp_path / "ann.json").write_text(__import__("json").dumps(data))
    return f"coco:{tmp_path / 'ann.json'}"


@pytest.mark.parametrize("changes, message", [
    ({"images": None}, "missing or not a list: 'images'"),
    ({"annotations__bbox": None}, r"annotations\[0\] has no 'bbox'"),
    ({"annotations__bbox": [1, 2, 3]}, r"annotations\[0\].bbox must be"),
    ({"annotations__category_id": 9}, r"annotations\[0\].category_id 9 is not in 'categories'"),
    ({"annotations__image_id": 5}, r"annotations\[0\].image_id 5 is not in 'images'"),
    ({"annotations__segmentation": {"size": [4, 4], "counts": "abc"}}, r"RLE needs 'counts' and size"),
    ({"annotations__segmentation": [[1, 2]]}, "polygons must be"),
    ({"images__width": "10"}, r"images\[0\].width has the wrong type"),
    ({"annotations": []}, "no image has a"),
])
def test_broken_coco_files_are_named_errors(tmp_path, changes, message):
    with pytest.raises(SalienceError, match=message):
        load_dataset(_coco_file(tmp_path, **changes))


def test_coco_image_size_must_match_its_record(tmp_path):
    ds = load_dataset(_coco_file(tmp_path, images__height=9))
    with pytest.raises(SalienceError, match="a.png is 10x8 but its record says width 10, height 9"):
        ds[0]
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SalienceError, match="not valid JSON"):
        load_dataset(f"coco:{tmp_path / 'bad.json'}")
