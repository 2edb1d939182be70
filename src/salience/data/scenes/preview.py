"""`preview`: a grid of scenes with their masks, boxes and class names drawn on them."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from ..sample import Dataset

PALETTE = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
                    [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212]], np.float32)


def annotate(image: Image.Image, masks: np.ndarray, boxes: np.ndarray, names: list[str]) -> Image.Image:
    """``image`` with each instance's mask tinted, its box outlined and its name written."""
    rgb = np.asarray(image.convert("RGB")).astype(np.float32)
    for k, mask in enumerate(masks):
        rgb[mask] = 0.5 * rgb[mask] + 0.5 * PALETTE[k % len(PALETTE)]
    out = Image.fromarray(rgb.astype(np.uint8))
    draw = ImageDraw.Draw(out)
    for k, (box, name) in enumerate(zip(boxes, names)):
        colour = tuple(int(c) for c in PALETTE[k % len(PALETTE)])
        x0, y0, x1, y1 = (float(v) for v in box)
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=colour, width=2)
        draw.text((x0 + 2, y0 + 1), name, fill=(255, 255, 255), stroke_width=1, stroke_fill=(0, 0, 0))
    return out


def preview(dataset: Dataset, n: int = 12, columns: int = 4, gap: int = 4) -> Image.Image:
    """The first ``n`` samples of ``dataset`` annotated (see `annotate`) in a grid."""
    tiles = []
    for i in range(min(n, len(dataset))):
        s = dataset[i]
        names = s.instance_labels
        if s.label_name is not None:
            names = [f"{name} (label)" for name in names]
        tiles.append(annotate(s.image, s.masks, s.boxes, names))
    w, h = max(t.size[0] for t in tiles), max(t.size[1] for t in tiles)
    rows = -(-len(tiles) // columns)
    grid = Image.new("RGB", (columns * (w + gap) - gap, rows * (h + gap) - gap), (255, 255, 255))
    for i, tile in enumerate(tiles):
        grid.paste(tile, ((i % columns) * (w + gap), (i // columns) * (h + gap)))
    return grid
