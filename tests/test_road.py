"""ROAD: the imputation against a sparse solve of the authors' system, orders, seeding, registry."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sparse
import scipy.sparse.linalg as sparse_linalg
import torch

import salience as sl
from salience.metrics.road import impute, neighbour_mean_terms, road_lerf, road_morf

from .toys import smooth_photo

NEIGHBOURS = [((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12), ((0, -1), 1 / 6),
              ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6)]


def reference_impute(image: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """Rong et al.'s NoisyLinearImputer system without noise, solved with scipy's sparse solver.

    Each missing pixel equals the weighted mean of its in-image neighbours (weights above,
    renormalised at the border): rows d_i x_i − Σ_{j missing} w_ij x_j = Σ_{j known} w_ij v_j.
    """
    c, h, w = image.shape
    index = np.flatnonzero(missing.ravel())
    variable = -np.ones(h * w, int)
    variable[index] = np.arange(len(index))
    ys, xs = index // w, index % w
    flat = image.reshape(c, -1)
    rows, cols, vals = [], [], []
    rhs = np.zeros((len(index), c))
    diagonal = np.zeros(len(index))
    for (dy, dx), weight in NEIGHBOURS:
        yy, xx = ys + dy, xs + dx
        inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        diagonal[inside] += weight
        j, i = yy[inside] * w + xx[inside], np.flatnonzero(inside)
        unknown = variable[j] >= 0
        rows += list(i[unknown]); cols += list(variable[j[unknown]]); vals += [-weight] * int(unknown.sum())
        rhs[i[~unknown]] += weight * flat[:, j[~unknown]].T
    a = sparse.csc_matrix((vals, (rows, cols)), shape=(len(index),) * 2) + sparse.diags(diagonal)
    out = flat.copy()
    out[:, index] = sparse_linalg.spsolve(a, rhs).reshape(len(index), c).T
    return out.reshape(c, h, w)


def _image(size=48, seed=0):
    return torch.from_numpy(smooth_photo(size, size, seed)).permute(2, 0, 1).float()[None] / 127.5 - 1


def _masks(size=48):
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    blob = (yy - 20) ** 2 + (xx - 26) ** 2 < 12**2
    g = torch.Generator().manual_seed(0)
    scattered = torch.rand(size, size, generator=g) < 0.5
    return {"blob": blob, "scattered": scattered, "most": ~((yy < 6) & (xx < 30))}


def test_stencil_weights_are_rongs_and_renormalise_at_the_border():
    ones = torch.ones(1, 1, 5, 5)
    weight = neighbour_mean_terms(ones)[0, 0]
    assert torch.allclose(weight[1:-1, 1:-1], torch.ones(3, 3))
    assert torch.isclose(weight[0, 0], torch.tensor(1 / 6 + 1 / 6 + 1 / 12))
    delta = torch.zeros(1, 1, 5, 5)
    delta[0, 0, 2, 2] = 1
    terms = neighbour_mean_terms(delta)[0, 0]
    assert torch.isclose(terms[2, 3], torch.tensor(1 / 6)) and torch.isclose(terms[3, 3], torch.tensor(1 / 12))


def test_imputation_approximates_the_exact_solve_and_converges_to_it():
    x = _image()
    for name, mask in _masks().items():
        exact = torch.from_numpy(reference_impute(x[0].double().numpy(), mask.numpy())).float()
        missing = mask[None, None]
        error = (impute(x, missing)[0] - exact)[:, mask]
        span = float(x.max() - x.min())
        assert error.abs().max() < 0.06 * span and error.pow(2).mean().sqrt() < 0.04 * span, name
        if name != "most":  # (Jacobi needs far more sweeps when 90 % of the image is one hole)
            converged = impute(x, missing, sweeps=3000)[0]
            torch.testing.assert_close(converged, exact, atol=2e-3, rtol=0)
        known = ~mask
        assert torch.equal(impute(x, missing)[0][:, known], x[0][:, known])


def test_morf_is_low_and_lerf_high_for_the_map_of_a_region_model():
    model, x, region = _region_scene()
    inside = torch.zeros(1, 28, 28)
    inside[0, region[0], region[1]] = 1.0
    morf, lerf = road_morf(model, x, inside, 0, score="logit"), road_lerf(model, x, inside, 0, score="logit")
    inverted_morf = road_morf(model, x, -inside, 0, score="logit")
    assert morf.values[0] < inverted_morf.values[0] and lerf.values[0] > morf.values[0]
    assert morf.curves.shape == (1, 9) and torch.allclose(morf.fractions, torch.linspace(0.1, 0.9, 9))


def _region_scene():
    region = (slice(4, 14), slice(6, 18))

    class RegionDetail(torch.nn.Module):
        """logit_0 = contrast of rows 4..13, cols 6..17 (what imputation removes there)."""

        def forward(self, x):
            patch = x[:, :, region[0], region[1]]
            s = (patch - patch.mean((2, 3), keepdim=True)).abs().mean((1, 2, 3)) * 10
            return torch.stack([s, torch.zeros_like(s)], 1)

    model = sl.wrap(RegionDetail(), input_size=28, mean=(0.5,) * 3, std=(0.5,) * 3)
    g = torch.Generator().manual_seed(0)
    return model, torch.rand(1, 3, 28, 28, generator=g) * 2 - 1, region


def test_noise_is_seeded_per_image_and_fraction():
    model, x, _ = _region_scene()
    maps = torch.rand(1, 28, 28, generator=torch.Generator().manual_seed(1))
    a = road_morf(model, x, maps, 0, score="logit", seed=3).curves
    b = road_morf(model, x.repeat(3, 1, 1, 1), maps.repeat(3, 1, 1), 0, score="logit", seed=3, batch_size=2).curves
    c = road_morf(model, x, maps, 0, score="logit", seed=4).curves
    torch.testing.assert_close(a[0], b[0])
    assert not torch.equal(a, c)
    quiet = road_morf(model, x, maps, 0, score="logit", noise=0.0).curves
    assert not torch.equal(a, quiet)


def test_road_through_evaluate_and_the_bench_registry():
    from salience.bench.metric_fns import get_metric

    model, x, _ = _region_scene()
    maps = torch.rand(1, 28, 28, generator=torch.Generator().manual_seed(1))
    out = sl.evaluate(model, x, maps, 0, metrics=["road_morf", "road_lerf"], score="logit")
    torch.testing.assert_close(out["road_morf"], road_morf(model, x, maps, 0, score="logit").values)
    assert get_metric("road_lerf").name == "road_lerf"
