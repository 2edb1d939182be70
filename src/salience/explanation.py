"""`Explanation`: the maps a method produced, with everything needed to read them, and the
files and pictures it is written as.

Maps stay raw (float32, on the model's device, at input resolution). One row per target
row: ``image_index[r]`` says which image row r explains, so ``topk`` targets or one map per
detection fit the same structure. `Explanation.save` writes, per map, the overlay on the
original photo (drawn by `salience.viz`), the raw map and a JSON record; `save_grids` puts
several methods' explanations of the same photos side by side.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from . import viz
from .images import ImageBatch
from .preprocessing import Geometry


@dataclass
class Explanation:
    """Saliency maps with their targets, scores, method and cost.

    Attributes
    ----------
    maps : Tensor (N, H, W)
        Raw maps, float32, on the model's device.
    image_index : Tensor (N,)
        The image each map explains.
    labels : list of str
        A human label of each map's target (class name, prompt, detection).
    scores : Tensor (N,) or None
        The target's score on the unperturbed image (a logit for classes).
    probabilities : Tensor (N,) or None
        The target class's softmax probability, for classifiers.
    classes : Tensor (N,) or None
        The target class index of each map, where targets are classes.
    boxes : Tensor (N, 4) or None
        The explained detection's box (x0, y0, x1, y1) in input pixels, for detectors.
    queries : Tensor (N,) or None
        The explained detection's query index, for detectors (metrics re-score that query).
    method, params, seconds
        Which method made the maps, with which parameters, and how long it took.
    images, geometries
        The photos and where each went in the model input, to draw maps on the originals.
    """

    maps: torch.Tensor
    image_index: torch.Tensor
    labels: list[str]
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    scores: torch.Tensor | None = None
    probabilities: torch.Tensor | None = None
    classes: torch.Tensor | None = None
    boxes: torch.Tensor | None = None
    queries: torch.Tensor | None = None
    images: ImageBatch | None = None
    geometries: list[Geometry] | None = None
    model_name: str = ""

    def __len__(self) -> int:
        return self.maps.shape[0]

    def normalized(self) -> "Explanation":
        """Each map min-max scaled to [0, 1] (a constant map becomes all zeros)."""
        m = self.maps
        flat = m.reshape(m.shape[0], -1)
        lo = flat.min(1).values.view(-1, 1, 1)
        hi = flat.max(1).values.view(-1, 1, 1)
        span = hi - lo
        out = torch.where(span > 0, (m - lo) / span.clamp_min(1e-12), torch.zeros_like(m))
        return replace(self, maps=out)

    def upsampled(self, size: tuple[int, int]) -> "Explanation":
        """Maps bilinearly resized to ``size`` = (H, W)."""
        out = F.interpolate(self.maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
        return replace(self, maps=out)

    def original_maps(self, fill: float = 0.0) -> list[torch.Tensor]:
        """Each map on its original photo's pixel grid (sizes differ, hence a list)."""
        if self.geometries is None:
            raise ValueError("this explanation has no image geometry; explain images loaded with load_images")
        return [self.geometries[int(i)].map_to_original(m, fill) for m, i in zip(self.maps, self.image_index)]

    def to_numpy(self) -> np.ndarray:
        return self.maps.detach().float().cpu().numpy()

    def save(self, directory: str | os.PathLike, cmap: str = viz.CMAP, alpha: float = viz.ALPHA) -> list[str]:
        """Write, per map, ``<stem>.png`` (overlay with caption, metadata in its text chunks),
        ``<stem>.npy`` (raw map at input resolution) and ``<stem>.json`` (`record`); for
        detections also ``<image>_<method>_detections.png`` (an image's panels side by side).
        Stems are `file_stems`. Returns the paths written."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        raw = self.to_numpy()
        paths, panels = [], []
        for row, (stem, picture) in enumerate(zip(file_stems(self), map_pictures(self, cmap, alpha))):
            meta = record(self, row)
            info = PngInfo()
            for key in ("method", "target", "class_index", "score", "probability", "model"):
                info.add_text(key, str(meta[key]))
            png, npy, js = out / f"{stem}.png", out / f"{stem}.npy", out / f"{stem}.json"
            panel = viz.caption(picture, describe(self, row))
            panel.save(png, pnginfo=info)
            panels.append(panel)
            np.save(npy, raw[row])
            js.write_text(json.dumps(meta, indent=2))
            paths += [str(png), str(npy), str(js)]
        if self.boxes is not None:  # detections: all of an image's panels side by side too
            names = image_names(self)
            for i in sorted(set(self.image_index.tolist())):
                path = out / f"{names[i]}_{self.method}_detections.png"
                viz.hstack([p for p, j in zip(panels, self.image_index.tolist()) if j == i]).save(path)
                paths.append(str(path))
        return paths


def map_pictures(expl: Explanation, cmap: str = viz.CMAP, alpha: float = viz.ALPHA) -> list[Image.Image]:
    """One picture per map: the overlay on its original photo (with the detection's box for
    detectors), or a plain heatmap without photos."""
    photos = None if expl.images is None else expl.images.originals
    return viz.draw_maps(expl.maps, expl.image_index.tolist(), photos, expl.geometries, expl.boxes, cmap, alpha)


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


def grid(
    explanations: Mapping[str, Explanation] | Sequence[Explanation],
    cmap: str = viz.CMAP,
    alpha: float = viz.ALPHA,
    height: int = viz.TILE_HEIGHT,
) -> dict[str, Image.Image]:
    """One side-by-side picture per photo: the original, then each method's overlays.

    ``explanations`` are explanations of the same photos by different methods (a dict
    method -> Explanation, or a list). Returns image name -> picture.
    """
    expls = list(explanations.values()) if isinstance(explanations, Mapping) else list(explanations)
    first = expls[0]
    if first.images is None:
        raise ValueError("a grid needs explanations of photos (loaded with load_images)")
    originals = [viz.tile(photo, f"{name} (original {photo.width}x{photo.height})", height)
                 for photo, name in zip(first.images.originals, first.images.names)]
    # detections: one picture per (photo, detection k), k counted per photo in row order
    tiles: dict[tuple[int, int], list[Image.Image]] = {}
    for expl in expls:
        per_image = expl.boxes is not None
        seen: dict[int, int] = {}
        for row, (picture, i) in enumerate(zip(map_pictures(expl, cmap, alpha), expl.image_index.tolist())):
            k = seen.get(i, 0) if per_image else 0
            seen[i] = k + 1
            tiles.setdefault((i, k), [originals[i]]).append(viz.tile(picture, describe(expl, row), height))
    names = first.images.names
    return {(f"{names[i]}_detection{k}" if first.boxes is not None else names[i]): viz.hstack(row)
            for (i, k), row in tiles.items()}


def save_grids(explanations: Mapping[str, Explanation] | Sequence[Explanation], directory: str | os.PathLike,
               cmap: str = viz.CMAP, alpha: float = viz.ALPHA) -> list[str]:
    """Write ``<image>_grid.png`` per photo (see `grid`); return the paths."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, picture in grid(explanations, cmap, alpha).items():
        path = out / f"{name}_grid.png"
        picture.save(path)
        paths.append(str(path))
    return paths
