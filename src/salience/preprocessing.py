"""From a photo of any size to the model's input, and back.

`Preprocess` turns PIL images into a normalised batch; each image keeps a `Geometry`
that records which part of the photo landed where in the input, so any map at input
resolution can be drawn back onto the original photo at its own size and aspect ratio.

Three resize modes:

- ``resize`` (default): stretch the whole photo to the input size. Every photo pixel is
  seen by the model, and a map covers the whole photo.
- ``center_crop``: resize the short side to ``size / crop_pct`` and cut the centre
  (the classic ImageNet evaluation). The map covers only the cropped part; the rest of the
  photo gets ``fill`` (0 by default) when mapped back.
- ``letterbox``: keep the aspect ratio, scale the long side to the input size and pad with
  the mean colour. The map is read only inside the photo's area.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

RESIZE_MODES = ("resize", "center_crop", "letterbox")


@dataclass(frozen=True)
class Geometry:
    """Where a photo went in the model input.

    ``source_box`` is the (x0, y0, x1, y1) region of the original photo, in its pixels,
    that the model sees; ``target_box`` is where that region lies in the input, in input
    pixels. Both boxes are continuous coordinates (pixel edges).
    """

    original_size: tuple[int, int]  # (height, width)
    input_size: tuple[int, int]  # (height, width)
    source_box: tuple[float, float, float, float]
    target_box: tuple[float, float, float, float]

    def map_to_original(self, saliency: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        """Resample an (h, w) map given over the model input onto the original photo.

        The map may have any resolution; it is taken to cover the whole input. Parts of
        the photo the model never saw get ``fill``.
        """
        if saliency.dim() != 2:
            raise ValueError(f"expected a 2-D map, got shape {tuple(saliency.shape)}")
        h_in, w_in = self.input_size
        m = saliency.float()
        if m.shape != (h_in, w_in):
            m = F.interpolate(m[None, None], size=(h_in, w_in), mode="bilinear", align_corners=False)[0, 0]
        tx0, ty0, tx1, ty1 = (round(v) for v in self.target_box)
        content = m[ty0:ty1, tx0:tx1]
        sx0, sy0, sx1, sy1 = (round(v) for v in self.source_box)
        h0, w0 = self.original_size
        region = F.interpolate(
            content[None, None], size=(max(sy1 - sy0, 1), max(sx1 - sx0, 1)), mode="bilinear", align_corners=False
        )[0, 0]
        if (sx0, sy0, sx1, sy1) == (0, 0, w0, h0):
            return region
        out = torch.full((h0, w0), float(fill), dtype=region.dtype, device=region.device)
        out[sy0:sy1, sx0:sx1] = region
        return out

    def boxes_to_original(self, boxes: torch.Tensor) -> torch.Tensor:
        """Map (N, 4) x0, y0, x1, y1 boxes from input pixels to original-photo pixels."""
        sx0, sy0, sx1, sy1 = self.source_box
        tx0, ty0, tx1, ty1 = self.target_box
        scale = torch.tensor([(sx1 - sx0) / (tx1 - tx0), (sy1 - sy0) / (ty1 - ty0)] * 2, device=boxes.device)
        shift_in = torch.tensor([tx0, ty0, tx0, ty0], device=boxes.device)
        shift_out = torch.tensor([sx0, sy0, sx0, sy0], device=boxes.device)
        return (boxes - shift_in) * scale + shift_out


@dataclass(frozen=True)
class Preprocess:
    """How a model wants its input: size, normalisation and resize mode."""

    size: tuple[int, int]  # (height, width)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    mode: str = "resize"
    crop_pct: float = 0.875
    resample: int = field(default=Image.BICUBIC)

    def __post_init__(self):
        if self.mode not in RESIZE_MODES:
            raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got '{self.mode}'")

    def geometry(self, width: int, height: int) -> Geometry:
        """The placement of a ``width`` x ``height`` photo in the input."""
        h_in, w_in = self.size
        full_in = (0.0, 0.0, float(w_in), float(h_in))
        full_src = (0.0, 0.0, float(width), float(height))
        if self.mode == "resize":
            return Geometry((height, width), self.size, full_src, full_in)
        if self.mode == "center_crop":
            # Resize so the crop of the input size is crop_pct of the scaled photo's short side.
            scale = max(h_in, w_in) / self.crop_pct / min(width, height)
            crop_w, crop_h = w_in / scale, h_in / scale
            x0, y0 = (width - crop_w) / 2, (height - crop_h) / 2
            return Geometry((height, width), self.size, (x0, y0, x0 + crop_w, y0 + crop_h), full_in)
        scale = min(w_in / width, h_in / height)
        new_w, new_h = width * scale, height * scale
        x0, y0 = (w_in - new_w) / 2, (h_in - new_h) / 2
        return Geometry((height, width), self.size, full_src, (x0, y0, x0 + new_w, y0 + new_h))

    def to_tensor(self, image: Image.Image) -> tuple[torch.Tensor, Geometry]:
        """One RGB PIL image -> (3, H, W) normalised tensor and its geometry."""
        geo = self.geometry(image.width, image.height)
        h_in, w_in = self.size
        sx0, sy0, sx1, sy1 = geo.source_box
        tx0, ty0, tx1, ty1 = (round(v) for v in geo.target_box)
        region = image.resize((tx1 - tx0, ty1 - ty0), self.resample, box=(sx0, sy0, sx1, sy1))
        arr = torch.from_numpy(np.asarray(region, dtype=np.float32) / 255.0).permute(2, 0, 1)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(3, 1, 1)
        if (tx0, ty0, tx1, ty1) != (0, 0, w_in, h_in):
            canvas = mean.expand(3, h_in, w_in).clone()  # pad with the mean colour: 0 after normalising
            canvas[:, ty0:ty1, tx0:tx1] = arr
            arr = canvas
        return (arr - mean) / std, geo

    def __call__(self, images: list[Image.Image]) -> tuple[torch.Tensor, list[Geometry]]:
        """A list of RGB PIL images -> (B, 3, H, W) batch and one geometry per image."""
        pairs = [self.to_tensor(im) for im in images]
        return torch.stack([p[0] for p in pairs]), [p[1] for p in pairs]

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Undo the normalisation: (B, 3, H, W) -> RGB in [0, 1]."""
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return x * std + mean
