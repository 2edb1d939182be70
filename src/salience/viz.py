"""Drawing: maps as colours over photos, boxes, captions, tiles side by side.

Maps are drawn on each photo at its own size and aspect ratio (through the photo's
`Geometry`), so whatever the preprocessing did (resize, crop, letterbox) the colours land on
the right pixels. Each map is scaled for display only (min-max, or by magnitude when it has
both signs). Parts of a photo the model never saw (outside a centre crop) are left
uncoloured. Pictures of an `Explanation` and its files: `salience.explanation`.
"""

from __future__ import annotations

import math
from typing import Sequence

import matplotlib
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .preprocessing import Geometry

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


def draw_maps(
    maps: torch.Tensor, image_index: Sequence[int], photos: Sequence[Image.Image] | None = None,
    geometries: Sequence[Geometry] | None = None, boxes: torch.Tensor | None = None, cmap: str = CMAP,
    alpha: float = ALPHA,
) -> list[Image.Image]:
    """One picture per map (N, H, W) at input resolution: the overlay on photo ``image_index[r]``
    through its geometry, or a plain heatmap without photos; with ``boxes`` (N, 4, input
    pixels) each picture gets its box outlined."""
    if photos is None or geometries is None:
        pictures = [heatmap(m, cmap) for m in maps]
    else:
        # Scale at input resolution, then map back: pixels the model never saw become NaN.
        scaled = [_display_scale(m.float()) for m in maps]
        pictures = [overlay(photos[int(i)], geometries[int(i)].map_to_original(m, fill=math.nan), cmap, alpha)
                    for m, i in zip(scaled, image_index)]
        if boxes is not None:
            boxes = [geometries[int(i)].boxes_to_original(b[None].float().cpu())[0] for b, i in zip(boxes, image_index)]
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


def tile(image: Image.Image, title: str, height: int = TILE_HEIGHT) -> Image.Image:
    """The image scaled to ``height`` with ``title`` captioned under it."""
    width = max(1, round(image.width * height / image.height))
    return caption(image.resize((width, height), Image.BILINEAR), title, font_size=max(12, min(18, width // 16)))


def hstack(images: Sequence[Image.Image], gap: int = 6) -> Image.Image:
    """The images side by side, top-aligned, on white."""
    height = max(im.height for im in images)
    out = Image.new("RGB", (sum(im.width for im in images) + gap * (len(images) - 1), height), "white")
    x = 0
    for im in images:
        out.paste(im, (x, 0))
        x += im.width + gap
    return out


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
