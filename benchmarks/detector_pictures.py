"""Pictures of the scene detectors at work: held-out scenes and real photos.

For each detector, a grid of held-out generated scenes (seed 1, the held-out set of the
training recipes): ground-truth boxes on the left, kept detections on the
right. Then the real photos of a realmini folder whose objects belong to the scene
vocabulary (person, chair, bottle, ...), with their detections. Run from the repository root:

    PYTHONPATH=src python benchmarks/detector_pictures.py [--realmini ../shared/data/realmini]

Writes docs/results/detectors/held_out_<model>.png and real_photos.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image

import salience as sl
from salience import viz
from salience.data import load_dataset
from salience.data.scenes import SceneDataset
from salience.cli.detections import detect
from salience.images import ImageBatch

MODELS = ("scene-detr", "scene-deformable-detr")


def tile(images: list[Image.Image], columns: int, gap: int = 6) -> Image.Image:
    """Images in rows of ``columns``, each row as tall as its tallest image, white gaps."""
    rows = [images[i:i + columns] for i in range(0, len(images), columns)]
    heights = [max(im.height for im in row) for row in rows]
    width = max(sum(im.width for im in row) + gap * (len(row) - 1) for row in rows)
    canvas = Image.new("RGB", (width, sum(heights) + gap * (len(rows) - 1)), "white")
    y = 0
    for row, height in zip(rows, heights):
        x = 0
        for im in row:
            canvas.paste(im, (x, y))
            x += im.width + gap
        y += height + gap
    return canvas


def detections_picture(model, photo: Image.Image, name: str) -> Image.Image:
    found = detect(model, ImageBatch([photo], [name]))[0]
    boxes = torch.tensor([d["box"] for d in found], dtype=torch.float32).reshape(-1, 4)
    return viz.draw_detections(photo, boxes, [d["class"] for d in found], [d["score"] for d in found])


def held_out(model, n: int) -> Image.Image:
    data = SceneDataset(n, "detection", seed=1)
    pairs = []
    for i in range(n):
        s = data[i]
        truth = viz.draw_detections(s.image, torch.as_tensor(s.boxes).float(), s.instance_labels)
        pairs.append(tile([viz.caption(truth, "ground truth"),
                           viz.caption(detections_picture(model, s.image, s.image_id), model.name)], 2, gap=2))
    return tile(pairs, 2, gap=10)


def real_photos(models, folder: str, vocabulary: set[str], height: int = 300) -> Image.Image | None:
    rows = []
    for sample in load_dataset(f"realmini:{folder}"):
        if not vocabulary & set(sample.instance_labels):
            continue
        scale = height / sample.image.height
        photo = sample.image.resize((round(sample.image.width * scale), height))
        truth = viz.draw_detections(photo, torch.as_tensor(sample.boxes).float() * scale, sample.instance_labels)
        pictures = [viz.caption(truth, f"{sample.image_id}: ground truth")]
        pictures += [viz.caption(detections_picture(m, photo, sample.image_id), m.name) for m in models]
        rows.append(tile(pictures, len(pictures), gap=4))
    return tile(rows, 1, gap=10) if rows else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8, help="held-out scenes per detector")
    parser.add_argument("--realmini", default="../shared/data/realmini")
    parser.add_argument("--out", default="docs/results/detectors")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    models = [sl.load_model(name) for name in MODELS]
    for model in models:
        path = out / f"held_out_{model.name}.png"
        held_out(model, args.n).save(path)
        print("wrote", path)
    if Path(args.realmini).is_dir():
        picture = real_photos(models, args.realmini, set(models[0].class_names))
        if picture is not None:
            picture.save(out / "real_photos.png")
            print("wrote", out / "real_photos.png")
    else:
        print(f"no realmini folder at {args.realmini}: real photos skipped")


if __name__ == "__main__":
    main()
