"""Image segments for region-based methods (LIME, Kernel SHAP, XRAI), from scikit-image.

Segmentations run on the photo as the model sees it (the input, de-normalised to RGB in
[0, 1]) on the CPU; everything after them runs in torch on the model's device.
scikit-image is the optional extra ``salience[segments]``.
"""

from __future__ import annotations

import numpy as np
import torch

from ..compat import import_optional
from ..errors import SalienceError
from ..models.model import Model

SEGMENTATIONS = ("slic", "quickshift", "felzenszwalb")


def input_photos(model: Model, x: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) model input -> (N, H, W, 3) float64 RGB in [0, 1] (NumPy, for scikit-image)."""
    pixels = model.preprocess.denormalize(x.detach().float()).clamp(0, 1)
    return pixels.permute(0, 2, 3, 1).cpu().double().numpy()


def superpixels(photo: np.ndarray, method: str = "slic", n_segments: int = 50) -> torch.Tensor:
    """(H, W) long labels 0..M-1 of one (H, W, 3) photo in [0, 1].

    ``slic``: ``skimage.segmentation.slic(n_segments, compactness=10)`` (rerun without its
    connectivity step when that step leaves a single segment, as it does on pure noise); ``quickshift``:
    lime_image's ``quickshift(kernel_size=4, max_dist=200, ratio=0.2)``; ``felzenszwalb``:
    ``felzenszwalb(scale=100, sigma=0.5, min_size=50)``. Labels are renumbered to 0..M-1.
    """
    segmentation = import_optional("skimage.segmentation")
    if method == "slic":
        labels = segmentation.slic(photo, n_segments=n_segments, compactness=10, start_label=0)
        if labels.max() == labels.min():
            labels = segmentation.slic(photo, n_segments=n_segments, compactness=10, start_label=0,
                                       enforce_connectivity=False)
    elif method == "quickshift":
        labels = segmentation.quickshift(photo, kernel_size=4, max_dist=200, ratio=0.2)
    elif method == "felzenszwalb":
        labels = segmentation.felzenszwalb(photo, scale=100, sigma=0.5, min_size=50)
    else:
        raise SalienceError(f"segmentation must be one of {SEGMENTATIONS}, got '{method}'")
    return torch.from_numpy(np.unique(labels, return_inverse=True)[1].reshape(labels.shape)).long()


def felzenszwalb_masks(photo: np.ndarray, scales=(50, 100, 150, 250, 500, 1200), sigma: float = 0.8,
                       min_size: int = 150, dilation: int = 5, device=None) -> torch.Tensor:
    """XRAI's segments: Felzenszwalb at several ``scales``, each segment dilated by a disk.

    As Kapishnikov et al.'s code: the photo is min-max scaled to [-1, 1] and segmented at
    each scale (``sigma``, ``min_size``); every segment becomes a mask and is dilated by a
    disk of radius ``dilation`` pixels. Returns (S, H, W) bool masks on ``device``.
    """
    segmentation = import_optional("skimage.segmentation")
    span = max(photo.max() - photo.min(), 1e-12)
    scaled = (photo - photo.min()) / span * 2 - 1
    masks = []
    for scale in scales:
        labels = torch.from_numpy(segmentation.felzenszwalb(scaled, scale=scale, sigma=sigma, min_size=min_size))
        labels = labels.long().to(device)
        masks.append(dilate_labels(labels, int(labels.max()) + 1, dilation))
    return torch.cat(masks)


def dilate_labels(labels: torch.Tensor, n: int, radius: int) -> torch.Tensor:
    """(n, H, W) bool: each label's pixels dilated by a disk of ``radius`` (skimage's ``disk``)."""
    h, w = labels.shape
    out = torch.zeros(n, h * w, dtype=torch.bool, device=labels.device)
    padded = torch.nn.functional.pad(labels[None, None].float() + 1, (radius,) * 4)[0, 0].long() - 1  # -1 outside
    pixel = torch.arange(h * w, device=labels.device)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy * dy + dx * dx > radius * radius:
                continue
            near = padded[radius + dy:radius + dy + h, radius + dx:radius + dx + w].reshape(-1)
            inside = near >= 0
            out[near[inside], pixel[inside]] = True
    return out.view(n, h, w)
