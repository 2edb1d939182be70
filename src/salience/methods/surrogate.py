"""Surrogate-model methods on superpixels: LIME and Kernel SHAP.

Both switch superpixels on and off, score the model on each such image and fit a weighted
linear model of the score on the on/off vector; a superpixel's coefficient is its map
value. They differ in how the on/off vectors are drawn, how they are weighted and the fit:

- LIME (Ribeiro et al. 2016, ``lime_image``'s defaults): each superpixel on with
  probability 1/2; weight ``sqrt(exp(−d²/w²))`` with d the cosine distance between the
  vector and all-ones, w = ``kernel_width`` (0.25); ridge regression (``alpha`` 1) with an
  intercept.
- Kernel SHAP (Lundberg & Lee 2017, Captum's sampler): first all-on, then all-off, then k
  superpixels on with p(k) ∝ (M − 1) / (k (M − k)), a uniform subset of that size; weight 1,
  and 10⁶ for the two end vectors (which pins the fit to f(all) and f(none)); least squares
  with an intercept (minimum-norm solution).

Superpixels: `segments.superpixels` of the input photo (SLIC with ``n_segments`` by
default). Switched-off superpixels take the ``baseline`` colour (default the normalisation
mean, 0 in the model input, Captum's default baseline). Vectors are drawn from a generator
seeded with ``seed`` per row, so a row's samples depend on its image only. The masked images
are scored in batches through `salience.models.fast.inference_forward`.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from ..models.fast import inference_forward
from ..models.model import Model
from ..targets import Target
from .base import Explainer, batches, register
from .perturbation import SCORES, _check_choice, pixel_fill, target_scores
from .segments import SEGMENTATIONS, input_photos, superpixels


def weighted_linear_fit(z: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, alpha: float = 0.0) -> torch.Tensor:
    """Coefficients (M,) of ``y ≈ z β + b`` minimising Σ wᵢ (yᵢ − zᵢβ − b)² + α‖β‖².

    Centred by the weighted means (the intercept is not penalised), as scikit-learn's
    ``Ridge`` / ``LinearRegression`` with ``sample_weight``; α = 0 gives the minimum-norm
    least-squares solution. Solved in float64.
    """
    z, y, w = z.double(), y.double(), weights.double()
    w_sum = w.sum()
    zc = z - (w[:, None] * z).sum(0) / w_sum
    yc = y - (w * y).sum() / w_sum
    root = w.sqrt()
    a, b = root[:, None] * zc, root * yc
    if alpha > 0:
        eye = torch.eye(z.shape[1], dtype=z.dtype, device=z.device)
        return torch.linalg.solve(a.T @ a + alpha * eye, a.T @ b)
    driver = "gelsd" if a.device.type == "cpu" else None
    return torch.linalg.lstsq(a, b[:, None], driver=driver).solution[:, 0]


class SuperpixelSurrogate(Explainer):
    """Base class: superpixels on/off, a weighted linear fit; subclasses draw and weight.

    Parameters
    ----------
    n_samples : int
        On/off vectors (model evaluations) per target row.
    n_segments : int
        Superpixels asked of SLIC (the segmentation decides the exact number).
    segmentation : {"slic", "quickshift", "felzenszwalb"}
        See `salience.methods.segments.superpixels`.
    baseline : float, three floats or "mean"
        Colour of switched-off superpixels in pixel space ([0, 1]); "mean" = normalisation mean.
    seed : int
        Seed of the on/off vectors (per row).
    score : {"probability", "logit"}
        What a class target scores.
    trace, channels_last :
        The fast forward (`salience.models.fast.inference_forward`).
    batch_size : int or None
        Masked images per forward pass; None: 4 on CPU, 64 on GPU.
    """

    family = "perturbation"

    def __init__(self, n_samples: int = 1000, n_segments: int = 50, segmentation: str = "slic",
                 baseline: float | str | Sequence[float] = "mean", seed: int = 0, score: str = "probability",
                 trace: bool = True, channels_last: bool | None = None, batch_size: int | None = None):
        super().__init__(batch_size=batch_size)
        if n_samples < 2:
            raise ValueError("n_samples must be >= 2")
        _check_choice("score", score, SCORES)
        _check_choice("segmentation", segmentation, SEGMENTATIONS)
        self.n_samples, self.n_segments, self.segmentation = n_samples, n_segments, segmentation
        self.baseline, self.seed, self.score = baseline, seed, score
        self.trace, self.channels_last = trace, channels_last

    def samples(self, n_features: int, generator: torch.Generator) -> torch.Tensor:
        """(n_samples, M) on/off vectors (float 0/1)."""
        raise NotImplementedError

    def weights(self, z: torch.Tensor) -> torch.Tensor:
        """(n_samples,) regression weights of the vectors ``z``."""
        raise NotImplementedError

    alpha: float = 0.0

    def attribute(self, model: Model, x: torch.Tensor, target: Target) -> torch.Tensor:
        photos = input_photos(model, x)
        fill = pixel_fill(model, self.baseline, x.device)
        batch = self.batch_for(x.device, cpu=4, gpu=64)
        maps = torch.empty(x.shape[0], *x.shape[-2:], device=x.device)
        with torch.inference_mode():
            forward = inference_forward(model, x[:1].expand(batch, -1, -1, -1), self.trace, self.channels_last)
            for r in range(x.shape[0]):
                labels = superpixels(photos[r], self.segmentation, self.n_segments).to(x.device)
                z = self.samples(int(labels.max()) + 1, torch.Generator().manual_seed(self.seed)).to(x.device)
                scores = self.masked_scores(model, x[r], labels, z, fill, target, r, forward, batch)
                coef = weighted_linear_fit(z, scores, self.weights(z), self.alpha)
                maps[r] = coef.float()[labels]
        return maps

    def masked_scores(self, model: Model, image: torch.Tensor, labels: torch.Tensor, z: torch.Tensor,
                      fill: torch.Tensor, target: Target, row: int, forward, batch: int) -> torch.Tensor:
        """Scores (n,) of ``image`` with the superpixels that ``z`` switches off painted ``fill``."""
        scores = torch.empty(len(z), device=image.device)
        rows = torch.full((batch,), row, device=image.device)
        for chunk in batches(len(z), batch):
            keep = z[chunk].bool()[:, labels][:, None]  # (b, 1, H, W)
            images = torch.where(keep, image[None], fill)
            scores[chunk] = target_scores(model, images, target, rows[: len(images)], self.score, forward)
        return scores


@register
class Lime(SuperpixelSurrogate):
    """LIME on superpixels: Bernoulli(1/2) vectors, exponential kernel, ridge fit (see the module doc).

    Parameters
    ----------
    kernel_width : float
        Width w of the kernel on the cosine distance to all-ones (lime_image: 0.25).
    alpha : float
        Ridge penalty (lime_image: 1).
    Others: see `SuperpixelSurrogate`.
    """

    name = "lime"

    def __init__(self, n_samples: int = 1000, n_segments: int = 50, segmentation: str = "slic",
                 kernel_width: float = 0.25, alpha: float = 1.0, baseline: float | str | Sequence[float] = "mean",
                 seed: int = 0, score: str = "probability", trace: bool = True, channels_last: bool | None = None,
                 batch_size: int | None = None):
        super().__init__(n_samples, n_segments, segmentation, baseline, seed, score, trace, channels_last, batch_size)
        self.kernel_width, self.alpha = kernel_width, alpha

    def samples(self, n_features, generator):
        return (torch.rand(self.n_samples, n_features, generator=generator) < 0.5).float()

    def weights(self, z):
        return lime_kernel(z, self.kernel_width)


def lime_kernel(z: torch.Tensor, kernel_width: float) -> torch.Tensor:
    """lime_image's weights: sqrt(exp(−d²/w²)), d = cosine distance of each vector to all-ones."""
    norm = z.norm(dim=1) * math.sqrt(z.shape[1])
    cosine = torch.where(norm > 0, z.sum(1) / norm.clamp_min(1e-12), torch.zeros_like(norm))
    distance = 1 - cosine
    return torch.sqrt(torch.exp(-(distance**2) / kernel_width**2))


@register
class KernelShap(SuperpixelSurrogate):
    """Kernel SHAP on superpixels: Shapley-kernel sampling, least squares (see the module doc)."""

    name = "kernel_shap"
    end_weight = 1e6

    def samples(self, n_features, generator):
        m = n_features
        z = torch.zeros(self.n_samples, m)
        z[0] = 1
        if m < 2:
            return z
        k = torch.arange(1, m, dtype=torch.float64)
        p_k = (m - 1) / (k * (m - k))
        sizes = torch.multinomial(p_k / p_k.sum(), self.n_samples, replacement=True, generator=generator) + 1
        ranks = torch.rand(self.n_samples, m, generator=generator).argsort(1).argsort(1)
        z[2:] = (ranks[2:] < sizes[2:, None]).float()
        return z

    def weights(self, z):
        w = torch.ones(len(z), device=z.device, dtype=torch.float64)
        ends = (z.sum(1) == 0) | (z.sum(1) == z.shape[1])
        return torch.where(ends, torch.full_like(w, self.end_weight), w)
