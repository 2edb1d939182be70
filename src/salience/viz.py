"""Pictures of explanations: overlays on the original photos, side-by-side grids, saving.

Maps are drawn on each photo at its own size and aspect ratio (`Explanation.original_maps`),
so whatever the preprocessing did (resize, crop, letterbox) the colours land on the right
pixels. Each map is scaled for display only (min-max, or by magnitude when it has both signs); the raw maps are saved unchanged.
Parts of a photo the model never saw (outside a centre crop) are left uncoloured.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from .explanation import Explanation

CMAP = "jet"
ALPHA = 0.5
TILE_HEIGHT = 320


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _display_scale(saliency: torch.Tensor) -> torch.Tensor:
    """Scale one map to [0, 1] over its finite values for display (NaN stays NaN).

    A map with both signs (input×gradient, IG) is shown by magnitude, |map| / max |map|, as
    Captum's ``absolute_value`` view does; any other map is min-max scaled.
    """
    finite = saliency[torch.isfinite(saliency)]
    if finite.numel() == 0:
        return torch.zeros_like(saliency)
    lo, hi = finite.min(), finite.max()
    if lo < 0 < hi:
        saliency, lo, hi = saliency.abs(), lo.new_zeros(()), finite.abs().max()
    return (saliency - lo) / (hi - lo) if hi > lo else saliency * 0  # constant: zeros, NaN kept


def colorize(saliency: torch.Tensor, cmap: str = CMAP) -> np.ndarray:
    """An (H, W) map -> (H, W, 4) uint8 RGBA through a matplotlib colormap (NaN -> alpha 0)."""
    m = _display_scale(saliency.detach().float()).cpu().numpy()
    rgba = matplotlib.colormaps[cmap](np.nan_to_num(m, nan=0.0), bytes=True)
    rgba[..., 3] = np.where(np.isnan(m), 0, 255)
    return rgba


def overlay(photo: Image.Image, saliency: torch.Tensor, cmap: str = CMAP, alpha: float = ALPHA) -> Image.Image:
    """Blend a map (at the photo's size) over the photo; NaN pixels show the photo alone."""
    rgba = colorize(saliency, cmap)
    if rgba.shape[:2] != (photo.height, photo.width):
        raise ValueError(f"map of size {rgba.shape[:2]} does not match the photo's {(photo.height, photo.width)}")
    base = np.asarray(photo.convert("RGB"), dtype=np.float32)
    weight = (rgba[..., 3:4].astype(np.float32) / 255.0) * alpha
    blended = base * (1 - weight) + rgba[..., :3].astype(np.float32) * weight
    return Image.fromarray(blended.round().astype(np.uint8))


def heatmap(saliency: torch.Tensor, cmap: str = CMAP) -> Image.Image:
    """A map alone as a coloured RGB image (for explanations of tensors, with no photo)."""
    return Image.fromarray(colorize(saliency, cmap)[..., :3])


def caption(image: Image.Image, text: str, font_size: int | None = None) -> Image.Image:
    """The image with a white strip of text under it."""
    size = font_size or max(12, min(28, image.width // 28))
    font = _font(size)
    lines = _wrap(text, font, image.width - 8)
    line_h = size + 4
    strip = len(lines) * line_h + 6
    out = Image.new("RGB", (image.width, image.height + strip), "white")
    out.paste(image.convert("RGB"), (0, 0))
    draw = ImageDraw.Draw(out)
    for i, line in enumerate(lines):
        draw.text((4, image.height + 3 + i * line_h), line, fill="black", font=font)
    return out


def _wrap(text: str, font: ImageFont.ImageFont, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split(" "):
        trial = f"{line} {word}".strip()
        if line and font.getlength(trial) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return lines + [line]


def describe(expl: Explanation, row: int) -> str:
    """'gradcam | espresso (967) | p=0.953 | score=12.41' for map ``row``."""
    parts = [expl.method, expl.labels[row]]
    if expl.classes is not None:
        parts[1] += f" ({int(expl.classes[row])})"
    if expl.probabilities is not None:
        parts.append(f"p={float(expl.probabilities[row]):.3f}")
    if expl.scores is not None:
        parts.append(f"score={float(expl.scores[row]):.4g}")
    return " | ".join(parts)


def map_pictures(expl: Explanation, cmap: str = CMAP, alpha: float = ALPHA) -> list[Image.Image]:
    """One picture per map: the overlay on its original photo, or a plain heatmap without photos."""
    if expl.images is None or expl.geometries is None:
        pictures = [heatmap(m, cmap) for m in expl.maps]
        boxes = expl.boxes
    else:
        # Scale at input resolution, then map back: pixels the model never saw become NaN.
        scaled = [_display_scale(m.float()) for m in expl.maps]
        pictures = [
            overlay(expl.images.originals[int(i)], expl.geometries[int(i)].map_to_original(m, fill=math.nan), cmap,
                    alpha)
            for m, i in zip(scaled, expl.image_index)
        ]
        boxes = None if expl.boxes is None else [
            expl.geometries[int(i)].boxes_to_original(b[None].float().cpu())[0] for b, i in zip(expl.boxes, expl.image_index)]
    if boxes is not None:  # a detector's explanation: each map with its detection's box
        pictures = [draw_box(p, b) for p, b in zip(pictures, boxes)]
    return pictures


def draw_box(picture: Image.Image, box: torch.Tensor, colour: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """The picture with a box (x0, y0, x1, y1 in its pixels) outlined, on a dark border to stand out."""
    out = picture.copy()
    draw = ImageDraw.Draw(out)
    x0, y0, x1, y1 = (float(v) for v in box)
    width = max(1, round(min(out.size) / 150))
    draw.rectangle([x0 - width, y0 - width, x1 + width, y1 + width], outline=(0, 0, 0), width=width)
    draw.rectangle([x0, y0, x1, y1], outline=colour, width=width)
    return out


def image_names(expl: Explanation) -> list[str]:
    """The name of each image the explanation covers (``image0``... without photos)."""
    if expl.images is not None:
        return list(expl.images.names)
    return [f"image{i}" for i in range(int(expl.image_index.max()) + 1 if len(expl) else 0)]


def file_stems(expl: Explanation) -> list[str]:
    """``<image>_<method>`` per map, with ``_<k>`` (0, 1, ... per image) when an image has several maps."""
    names = image_names(expl)
    index = expl.image_index.tolist()
    counts = {i: index.count(i) for i in set(index)}
    seen: dict[int, int] = {}
    stems = []
    for i in index:
        k = seen.get(i, 0)
        seen[i] = k + 1
        stems.append(f"{names[i]}_{expl.method}" + (f"_{k}" if counts[i] > 1 else ""))
    return stems


def record(expl: Explanation, row: int) -> dict:
    """The JSON-ready metadata of map ``row``."""
    i = int(expl.image_index[row])
    geo = expl.geometries[i] if expl.geometries is not None else None
    return {
        "method": expl.method,
        "params": {k: _jsonable(v) for k, v in expl.params.items()},
        "target": expl.labels[row],
        "class_index": None if expl.classes is None else int(expl.classes[row]),
        "score": None if expl.scores is None else float(expl.scores[row]),
        "probability": None if expl.probabilities is None else float(expl.probabilities[row]),
        "seconds": expl.seconds,
        "model": expl.model_name,
        "image": image_names(expl)[i],
        "input_size": list(expl.maps.shape[-2:]),
        "original_size": None if geo is None else list(geo.original_size),
        "resize_mode": None if geo is None else _mode_of(geo),
        "source_box": None if geo is None else list(geo.source_box),
        "target_box": None if geo is None else list(geo.target_box),
    }


def _mode_of(geo) -> str:
    """What the preprocessing did to this photo, read from its geometry (a letterbox that
    needed no padding reads as ``resize``, which it then equals)."""
    h_in, w_in = geo.input_size
    h0, w0 = geo.original_size
    if tuple(geo.target_box) != (0.0, 0.0, float(w_in), float(h_in)):
        return "letterbox"
    if tuple(geo.source_box) != (0.0, 0.0, float(w0), float(h0)):
        return "center_crop"
    return "resize"


def _jsonable(value):
    if isinstance(value, torch.Tensor):
        return value.tolist() if value.numel() <= 16 else f"tensor{tuple(value.shape)}"
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return repr(value)


def save_explanation(
    expl: Explanation, directory: str | os.PathLike, cmap: str = CMAP, alpha: float = ALPHA
) -> list[str]:
    """Write, per map, ``<stem>.png`` (overlay with caption), ``<stem>.npy`` (raw map at input
    resolution) and ``<stem>.json`` (metadata); return the paths written."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    pictures = map_pictures(expl, cmap, alpha)
    raw = expl.to_numpy()
    paths, panels = [], []
    for row, (stem, picture) in enumerate(zip(file_stems(expl), pictures)):
        meta = record(expl, row)
        info = PngInfo()
        for key in ("method", "target", "class_index", "score", "probability", "model"):
            info.add_text(key, str(meta[key]))
        png, npy, js = out / f"{stem}.png", out / f"{stem}.npy", out / f"{stem}.json"
        panel = caption(picture, describe(expl, row))
        panel.save(png, pnginfo=info)
        panels.append(panel)
        np.save(npy, raw[row])
        js.write_text(json.dumps(meta, indent=2))
        paths += [str(png), str(npy), str(js)]
    if expl.boxes is not None:  # detections: all of an image's panels side by side too
        names = image_names(expl)
        for i in sorted(set(expl.image_index.tolist())):
            path = out / f"{names[i]}_{expl.method}_detections.png"
            _hstack([p for p, j in zip(panels, expl.image_index.tolist()) if j == i]).save(path)
            paths.append(str(path))
    return paths


def _tile(image: Image.Image, title: str, height: int) -> Image.Image:
    width = max(1, round(image.width * height / image.height))
    return caption(image.resize((width, height), Image.BILINEAR), title, font_size=max(12, min(18, width // 16)))


def grid(
    explanations: Mapping[str, Explanation] | Sequence[Explanation],
    cmap: str = CMAP,
    alpha: float = ALPHA,
    height: int = TILE_HEIGHT,
) -> dict[str, Image.Image]:
    """One side-by-side picture per photo: the original, then each method's overlays.

    ``explanations`` are explanations of the same photos by different methods (a dict
    method -> Explanation, or a list). Returns image name -> picture.
    """
    expls = list(explanations.values()) if isinstance(explanations, Mapping) else list(explanations)
    first = expls[0]
    if first.images is None:
        raise ValueError("a grid needs explanations of photos (loaded with load_images)")
    originals = [_tile(photo, f"{name} (original {photo.width}x{photo.height})", height)
                 for photo, name in zip(first.images.originals, first.images.names)]
    # detections: one picture per (photo, detection k), k counted per photo in row order
    tiles: dict[tuple[int, int], list[Image.Image]] = {}
    for expl in expls:
        per_image = expl.boxes is not None
        seen: dict[int, int] = {}
        for row, (picture, i) in enumerate(zip(map_pictures(expl, cmap, alpha), expl.image_index.tolist())):
            k = seen.get(i, 0) if per_image else 0
            seen[i] = k + 1
            tiles.setdefault((i, k), [originals[i]]).append(_tile(picture, describe(expl, row), height))
    names = first.images.names
    return {(f"{names[i]}_detection{k}" if first.boxes is not None else names[i]): _hstack(row)
            for (i, k), row in tiles.items()}


def _hstack(images: list[Image.Image], gap: int = 6) -> Image.Image:
    height = max(im.height for im in images)
    out = Image.new("RGB", (sum(im.width for im in images) + gap * (len(images) - 1), height), "white")
    x = 0
    for im in images:
        out.paste(im, (x, 0))
        x += im.width + gap
    return out


def save_grids(explanations: Mapping[str, Explanation] | Sequence[Explanation], directory: str | os.PathLike,
               cmap: str = CMAP, alpha: float = ALPHA) -> list[str]:
    """Write ``<image>_grid.png`` per photo (see `grid`); return the paths."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, picture in grid(explanations, cmap, alpha).items():
        path = out / f"{name}_grid.png"
        picture.save(path)
        paths.append(str(path))
    return paths


def draw_detections(
    photo: Image.Image, boxes: torch.Tensor, names: Sequence[str], scores: Sequence[float] | None = None,
    width: int | None = None,
) -> Image.Image:
    """The photo with one labelled box per detection: ``boxes`` (N, 4) x0, y0, x1, y1 in the
    photo's pixels, a colour per class name, the caption ``name score`` above each box (the
    name alone without ``scores``, e.g. for ground truth)."""
    picture = photo.convert("RGB")
    draw = ImageDraw.Draw(picture)
    width = width or max(2, round(min(picture.size) / 200))
    font = _font(max(12, round(min(picture.size) / 30)))
    palette = matplotlib.colormaps["tab10"]
    colours = {name: i for i, name in enumerate(dict.fromkeys(names))}
    for i, (box, name) in enumerate(zip(boxes.tolist(), names)):
        colour = tuple(int(255 * c) for c in palette(colours[name] % 10)[:3])
        draw.rectangle(box, outline=colour, width=width)
        text = name if scores is None else f"{name} {scores[i]:.2f}"
        x0, y0, x1, y1 = draw.textbbox((box[0], box[1]), text, font=font)
        top = max(0, box[1] - (y1 - y0) - 2 * width)
        draw.rectangle((box[0], top, box[0] + (x1 - x0) + 2 * width, top + (y1 - y0) + 2 * width), fill=colour)
        draw.text((box[0] + width, top + width - (y0 - box[1])), text, fill=(255, 255, 255), font=font)
    return picture
