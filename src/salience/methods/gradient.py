"""Gradient methods: vanilla gradient, input×gradient, SmoothGrad, Integrated Gradients.

All gradients are taken with respect to the input only (`torch.autograd.grad` under
`frozen_parameters`, so no parameter gradient is ever computed). Methods that need many
model evaluations per image (SmoothGrad, IG) stream them through the model in chunks of
``batch_size``: memory is bounded by one chunk, whatever the number of samples or steps.

Inputs, noise and baselines live in the model's input space (after preprocessing).

Channel reductions (how a (3, H, W) gradient becomes an (H, W) map), parameter ``reduce``:

- ``"abs_max"``: max over channels of |g| (Simonyan et al.; Captum ``Saliency(abs=True)``
  followed by a channel max). The default of `saliency` and `smoothgrad`.
- ``"abs_sum"``: sum over channels of |g|.
- ``"sum"``: signed sum over channels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..hooks import frozen_parameters
from ..models.model import Model
from ..targets import Target
from .base import Explainer, batches, register

REDUCTIONS = ("abs_max", "abs_sum", "sum")
RIEMANN = ("trapezoid", "left", "right", "middle")


def reduce_channels(attributions: torch.Tensor, reduce: str) -> torch.Tensor:
    """(N, C, H, W) -> (N, H, W) by ``reduce`` (see the module docstring)."""
    if reduce == "abs_max":
        return attributions.abs().amax(1)
    if reduce == "abs_sum":
        return attributions.abs().sum(1)
    if reduce == "sum":
        return attributions.sum(1)
    raise ValueError(f"reduce must be one of {REDUCTIONS}, got '{reduce}'")


def _check_reduce(reduce: str) -> None:
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got '{reduce}'")


def _input_gradient(model: Model, x: torch.Tensor, target: Target, rows: torch.Tensor) -> torch.Tensor:
    """d score / d x for one chunk whose sample i belongs to target row ``rows[i]``."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        score = target.score(model(x), rows)
        (grad,) = torch.autograd.grad(score.sum(), x)
    return grad


def input_gradients(model: Model, x: torch.Tensor, target: Target, batch_size: int = 32) -> torch.Tensor:
    """Gradients (N, C, H, W) of target row i's score with respect to input ``x[i]``."""
    rows = torch.arange(x.shape[0])
    grads = torch.empty_like(x)
    with frozen_parameters(model.module):
        for chunk in batches(x.shape[0], batch_size):
            grads[chunk] = _input_gradient(model, x[chunk], target, rows[chunk])
    return grads


def input_x_gradient_attributions(model: Model, x: torch.Tensor, target: Target, batch_size: int = 32) -> torch.Tensor:
    """Input×gradient attributions (N, C, H, W): ``x * d score / d x``."""
    return x * input_gradients(model, x, target, batch_size)


@register
class Saliency(Explainer):
    """Vanilla gradient (Simonyan et al. 2014): |d score / d input|, max over channels.

    Parameters
    ----------
    reduce : str
        Channel reduction: ``"abs_max"`` (default), ``"abs_sum"`` or ``"sum"`` (signed).
    batch_size : int
        Images per backward pass.
    """

    reads_clean_output = True

    name = "saliency"
    family = "gradient"

    def __init__(self, reduce: str = "abs_max", batch_size: int = 32):
        super().__init__(batch_size=batch_size)
        _check_reduce(reduce)
        self.reduce = reduce

    def attribute(self, model: Model, x: torch.Tensor, target: Target) -> torch.Tensor:
        return reduce_channels(input_gradients(model, x, target, self.batch_size), self.reduce)


@register
class InputXGradient(Explainer):
    """Input×gradient: sum over channels of x · d score / d x (sign kept)."""

    reads_clean_output = True

    name = "input_x_gradient"
    family = "gradient"

    def __init__(self, batch_size: int = 32):
        super().__init__(batch_size=batch_size)

    def attribute(self, model: Model, x: torch.Tensor, target: Target) -> torch.Tensor:
        return input_x_gradient_attributions(model, x, target, self.batch_size).sum(1)


def unit_noise(shape: tuple[int, ...], sample: int, seed: int, device: torch.device) -> torch.Tensor:
    """Standard normal noise of ``shape`` for SmoothGrad sample number ``sample``.

    Each sample has its own seeded generator on ``device``, so the noise depends only on
    (seed, sample, shape, device): not on the batch size, the chunking, or the other
    images in the batch (every image gets the same unit noise, scaled by its own range).
    """
    generator = torch.Generator(device=device).manual_seed(seed * 1_000_003 + sample)
    return torch.randn(shape, generator=generator, device=device)


def smoothgrad_gradients(
    model: Model,
    x: torch.Tensor,
    target: Target,
    n_samples: int = 25,
    sigma: float = 0.15,
    seed: int = 0,
    squared: bool = False,
    batch_size: int = 32,
) -> torch.Tensor:
    """Mean gradient (N, C, H, W) over noisy copies x + σ·range(x)·ε_s (mean of g² if squared).

    ``range(x)`` is max − min of each image. Samples are streamed sample-major
    (position p = s·N + i) in chunks of ``batch_size``.
    """
    n = x.shape[0]
    stdev = sigma * (x.flatten(1).amax(1) - x.flatten(1).amin(1))
    total = torch.zeros_like(x)
    with frozen_parameters(model.module):
        for chunk in batches(n * n_samples, batch_size):
            positions = torch.arange(chunk.start, chunk.stop, device=x.device)
            images, samples = positions % n, positions // n
            first = int(samples[0])
            noise = torch.stack([unit_noise(x.shape[1:], s, seed, x.device) for s in range(first, int(samples[-1]) + 1)])
            noisy = x[images] + stdev[images, None, None, None] * noise[samples - first]
            grad = _input_gradient(model, noisy, target, images.cpu())
            total.index_add_(0, images, grad.square() if squared else grad)
    return total / n_samples


@register
class SmoothGrad(Explainer):
    """SmoothGrad (Smilkov et al. 2017): gradients averaged over noisy copies of the input.

    The averaged gradient (or squared gradient, SmoothGrad-Squared) is reduced over
    channels like `Saliency`. Noise: ε ~ N(0, (σ·(max−min of the image))²), seeded.

    Parameters
    ----------
    n_samples : int
        Noisy copies per image.
    sigma : float
        Noise standard deviation as a fraction of each image's value range (max − min).
    seed : int
        Seed of the noise generator (on the model's device).
    squared : bool
        Average squared gradients (SmoothGrad-Squared) instead of gradients.
    reduce : str
        Channel reduction of the averaged gradient: ``"abs_max"``, ``"abs_sum"`` or ``"sum"``.
    batch_size : int
        Noisy samples per forward/backward pass. Each sample keeps its activations for the
        backward pass (about 85 MB for EfficientNet-Lite0 at 224², measured), so the default 4 keeps
        the extra memory near 0.3 GB; on CPU larger chunks are not faster. Raise it on a GPU.
    """

    name = "smoothgrad"
    family = "gradient"

    def __init__(
        self,
        n_samples: int = 25,
        sigma: float = 0.15,
        seed: int = 0,
        squared: bool = False,
        reduce: str = "abs_max",
        batch_size: int = 4,
    ):
        super().__init__(batch_size=batch_size)
        if n_samples < 1:
            raise ValueError("n_samples must be >= 1")
        _check_reduce(reduce)
        self.n_samples, self.sigma, self.seed, self.squared, self.reduce = n_samples, sigma, seed, squared, reduce

    def attribute(self, model: Model, x: torch.Tensor, target: Target) -> torch.Tensor:
        mean = smoothgrad_gradients(
            model, x, target, self.n_samples, self.sigma, self.seed, self.squared, self.batch_size
        )
        return reduce_channels(mean, self.reduce)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a (N, C, H, W) batch, reflect-padded, kernel ±3σ."""
    radius = max(1, min(math.ceil(3 * sigma), min(x.shape[-2:]) - 1))
    taps = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def make_baseline(x: torch.Tensor, baseline: "str | float | torch.Tensor", blur_sigma: float = 10.0) -> torch.Tensor:
    """The IG reference input, shaped like ``x``, in the model's input space.

    ``"zero"``: all zeros (the dataset mean colour under mean/std normalisation);
    ``"blur"``: ``x`` blurred with a Gaussian of ``blur_sigma`` pixels; ``"mean"``: each
    image's per-channel mean; a float: that constant; a tensor: broadcast to ``x``.
    """
    if isinstance(baseline, torch.Tensor):
        return baseline.to(x.device, x.dtype).expand_as(x)
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(x, float(baseline))
    if baseline == "zero":
        return torch.zeros_like(x)
    if baseline == "blur":
        return gaussian_blur(x, blur_sigma)
    if baseline == "mean":
        return x.mean((2, 3), keepdim=True).expand_as(x)
    raise ValueError(f"baseline must be 'zero', 'blur', 'mean', a float or a tensor; got {baseline!r}")


def riemann_weights(steps: int, method: str = "trapezoid") -> tuple[torch.Tensor, torch.Tensor]:
    """Path positions α_k in [0, 1] and their weights (summing to 1).

    ``left`` / ``right`` / ``middle`` are Captum's ``riemann_*`` rules. ``trapezoid`` is
    the true trapezoid rule on α = linspace(0, 1, steps): weights 1/(steps−1), halved at
    both ends. (Captum's ``riemann_trapezoid`` uses the same points with weights 1/steps,
    halved at the ends, which sum to 1 − 1/steps: its attributions are ours times
    (steps−1)/steps, and its completeness is off by that factor.)
    """
    if steps < 2:
        raise ValueError("steps must be >= 2")
    weights = torch.full((steps,), 1.0 / steps)
    if method == "trapezoid":
        alphas = torch.linspace(0, 1, steps)
        weights = torch.full((steps,), 1.0 / (steps - 1))
        weights[0] /= 2
        weights[-1] /= 2
    elif method == "left":
        alphas = torch.linspace(0, 1 - 1 / steps, steps)
    elif method == "right":
        alphas = torch.linspace(1 / steps, 1, steps)
    elif method == "middle":
        alphas = torch.linspace(1 / (2 * steps), 1 - 1 / (2 * steps), steps)
    else:
        raise ValueError(f"method must be one of {RIEMANN}, got '{method}'")
    return alphas, weights


def integrated_gradients_attributions(
    model: Model,
    x: torch.Tensor,
    target: Target,
    baseline: "str | float | torch.Tensor" = "zero",
    steps: int = 50,
    method: str = "trapezoid",
    batch_size: int = 32,
    blur_sigma: float = 10.0,
) -> torch.Tensor:
    """Integrated Gradients (Sundararajan et al. 2017) attributions (N, C, H, W).

    (x − x') · Σ_k w_k ∇f(x' + α_k (x − x')). Path points are streamed image-major
    (each target row repeated ``steps`` times) in chunks of ``batch_size``; their sum
    approximates f(x) − f(x') (completeness).
    """
    n = x.shape[0]
    reference = make_baseline(x, baseline, blur_sigma)
    delta = x - reference
    alphas, weights = (t.to(x.device, x.dtype) for t in riemann_weights(steps, method))
    total = torch.zeros_like(x)
    with frozen_parameters(model.module):
        for chunk in batches(n * steps, batch_size):
            positions = torch.arange(chunk.start, chunk.stop, device=x.device)
            images, k = positions // steps, positions % steps
            path = reference[images] + alphas[k, None, None, None] * delta[images]
            grad = _input_gradient(model, path, target, images.cpu())
            total.index_add_(0, images, grad * weights[k, None, None, None])
    return delta * total


@register
class IntegratedGradients(Explainer):
    """Integrated Gradients: path integral of gradients from a baseline, summed over channels.

    Parameters
    ----------
    steps : int
        Points on the straight path from the baseline to the input.
    baseline : str, float or tensor
        ``"zero"``, ``"blur"`` (Gaussian, ``blur_sigma`` pixels), ``"mean"`` (per-image
        channel mean), a constant, or a tensor broadcastable to the input (model input space).
    method : str
        Riemann rule: ``"trapezoid"`` (default), ``"left"``, ``"right"``, ``"middle"``.
    blur_sigma : float
        Gaussian sigma in pixels for the ``"blur"`` baseline.
    batch_size : int
        Path points per forward/backward pass: the memory bound (see `SmoothGrad`: the
        default 4 keeps extra memory near 0.3 GB at 224² on CPU; raise it on a GPU).

    The map is the signed sum over channels of the attributions; the per-channel tensor
    is `integrated_gradients_attributions`.
    """

    name = "integrated_gradients"
    family = "gradient"

    def __init__(
        self,
        steps: int = 50,
        baseline: "str | float | torch.Tensor" = "zero",
        method: str = "trapezoid",
        blur_sigma: float = 10.0,
        batch_size: int = 4,
    ):
        super().__init__(batch_size=batch_size)
        riemann_weights(steps, method)  # validate early
        self.steps, self.baseline, self.method, self.blur_sigma = steps, baseline, method, blur_sigma

    def attribute(self, model: Model, x: torch.Tensor, target: Target) -> torch.Tensor:
        attributions = integrated_gradients_attributions(
            model, x, target, self.baseline, self.steps, self.method, self.batch_size, self.blur_sigma
        )
        return attributions.sum(1)


def xrai_regions(attribution: torch.Tensor, masks: torch.Tensor, min_pixel_diff: int = 50) -> torch.Tensor:
    """XRAI's greedy region ranking (Kapishnikov et al. 2019, the authors' ``full`` algorithm).

    ``attribution`` (H, W) and candidate region ``masks`` (S, H, W) bool. Repeatedly add the
    region whose not-yet-covered pixels have the highest mean attribution (regions adding
    fewer than ``min_pixel_diff`` new pixels are dropped); the new pixels get that mean as
    their value. Pixels no region covers get their own mean attribution. Computed on
    "atoms" (pixels with the same region membership), so each step is one small product.
    """
    h, w = attribution.shape
    atoms, atom_of = torch.unique(masks.flatten(1).T, dim=0, return_inverse=True)  # (A, S), (H·W,)
    mass = torch.zeros(len(atoms), dtype=torch.float64, device=attribution.device)
    mass.index_add_(0, atom_of, attribution.flatten().double())
    count = torch.bincount(atom_of, minlength=len(atoms)).double()
    regions = atoms.T.double()  # (S, A)
    covered = torch.zeros(len(atoms), dtype=torch.bool, device=attribution.device)
    alive = torch.ones(len(regions), dtype=torch.bool, device=attribution.device)
    value = torch.full((len(atoms),), float("-inf"), dtype=torch.float64, device=attribution.device)
    while True:
        new = regions * (~covered).double()
        new_count = new @ count
        alive &= new_count >= min_pixel_diff
        if not alive.any():
            break
        gain = torch.where(alive, (new @ mass) / new_count.clamp_min(1), torch.full_like(new_count, float("-inf")))
        best = int(gain.argmax())
        value[(regions[best] > 0) & ~covered] = gain[best]
        covered |= regions[best] > 0
        alive[best] = False
    rest = torch.isinf(value)
    if rest.any():
        value[rest] = mass[rest].sum() / count[rest].sum()
    return value[atom_of].view(h, w).float()


@register
class XRAI(Explainer):
    """XRAI (Kapishnikov et al. 2019): Integrated Gradients aggregated over ranked image regions.

    As the authors' code (PAIR ``saliency``): IG from a black and a white baseline (each
    image's minimum and maximum input value), averaged, max over channels; regions:
    Felzenszwalb segments at scales 50, 100, 150, 250, 500, 1200 (σ 0.8, min size 150) of
    the photo scaled to [−1, 1], each dilated by a disk of 5 px (`segments.felzenszwalb_masks`,
    scikit-image, at the input size); then `xrai_regions`. The map's order is the regions'
    order; its values are the regions' mean attributions.

    Parameters
    ----------
    steps : int
        IG steps per baseline (the authors' default: 100).
    min_pixel_diff : int
        Regions adding fewer new pixels are dropped (authors: 50).
    batch_size : int
        IG path points per forward/backward pass.
    """

    name = "xrai"
    family = "gradient"

    def __init__(self, steps: int = 50, min_pixel_diff: int = 50, batch_size: int = 4):
        super().__init__(batch_size=batch_size)
        riemann_weights(steps)
        self.steps, self.min_pixel_diff = steps, min_pixel_diff

    def attribute(self, model: Model, x: torch.Tensor, target: Target) -> torch.Tensor:
        from .segments import felzenszwalb_masks, input_photos

        low = x.flatten(1).amin(1).view(-1, 1, 1, 1).expand_as(x)
        high = x.flatten(1).amax(1).view(-1, 1, 1, 1).expand_as(x)
        attribution = sum(integrated_gradients_attributions(model, x, target, base, self.steps,
                                                            batch_size=self.batch_size) for base in (low, high)) / 2
        attribution = attribution.amax(1)
        photos = input_photos(model, x)
        return torch.stack([xrai_regions(attribution[r], felzenszwalb_masks(photos[r], device=x.device),
                                         self.min_pixel_diff) for r in range(x.shape[0])])
