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
