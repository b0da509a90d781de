"""workbench/likelihood.py against ground truth.

- normal_kl and the discretized Gaussian against numerical integration of the
  densities (Simpson's rule on fine grids, in float64), far into the tails;
  the bins of all levels summing to probability one.
- `nll` with the exact denoiser of known distributions:
  * K points on a coarse grid (17 levels): the bound lands on log2(K)/D bits/dim;
  * the same points on a 256-level grid: a real gap, exactly the decoder's
    -log2 P(bin) for its fixed variance, computed here with math.erf;
  * fixed_large versus fixed_small: their difference is bounded by a sum over
    the schedule alone;
  * Gaussian data (continuous, levels=None): every term's expectation is known in
    closed form (all distributions are Gaussian), so the whole bound is too.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import workbench as wb
from reference import cosine_betas
from workbench.diffusion import Diffusion
from workbench.errors import ConfigError
from workbench.exact import GaussianMixtureDenoiser
from workbench.likelihood import (
    discretized_gaussian_log_likelihood,
    gaussian_log_likelihood,
    nll,
    nll_terms,
    normal_kl,
)


pytestmark = pytest.mark.usefixtures("one_thread")




def simpson(y: np.ndarray, x: np.ndarray) -> float:
    """Composite Simpson's rule on an odd number of equally spaced points."""
    h = (x[-1] - x[0]) / (len(x) - 1)
    return h / 3 * (y[0] + y[-1] + 4 * y[1:-1:2].sum() + 2 * y[2:-1:2].sum())


def log_normal_mass(lo: float, hi: float, mean: float, std: float, n: int = 20001) -> float:
    """log of the N(mean, std^2) mass on [lo, hi] (either end may be infinite), by Simpson's rule.

    The integral is taken where the mass is: within 40 std of the mean, or, for an
    interval in a tail, over the 60 e-folds of the density next to its near end
    (the density falls at least by exp(-z u / std) over a distance u there).
    The log of the largest value is factored out, so a mass of exp(-10^6) is still exact.
    """
    z_lo, z_hi = (lo - mean) / std, (hi - mean) / std
    if z_lo > 0:  # all above the mean
        a, b = lo, min(hi, lo + 60 * std / max(z_lo, 1.0))
    elif z_hi < 0:  # all below the mean
        a, b = max(lo, hi - 60 * std / max(-z_hi, 1.0)), hi
    else:
        a, b = max(lo, mean - 40 * std), min(hi, mean + 40 * std)
    x = np.linspace(a, b, n)
    log_pdf = -0.5 * ((x - mean) / std) ** 2 - math.log(std * math.sqrt(2 * math.pi))
    peak = log_pdf.max()
    return peak + math.log(simpson(np.exp(log_pdf - peak), x))


# --- Gaussian pieces -------------------------------------------------------------


@pytest.mark.parametrize(
    "m1, s1, m2, s2",
    [(0.0, 1.0, 0.0, 1.0), (0.3, 0.5, -0.2, 1.5), (1.0, 2.0, 0.0, 0.7), (-0.01, 0.01, 0.02, 0.03)],
)
def test_normal_kl_matches_integral(m1, s1, m2, s2):
    x = np.linspace(m1 - 14 * s1, m1 + 14 * s1, 200001)
    log_q = -0.5 * ((x - m1) / s1) ** 2 - math.log(s1 * math.sqrt(2 * math.pi))
    log_p = -0.5 * ((x - m2) / s2) ** 2 - math.log(s2 * math.sqrt(2 * math.pi))
    expected = simpson(np.exp(log_q) * (log_q - log_p), x)
    lv = lambda s: torch.tensor(2 * math.log(s), dtype=torch.float64)  # noqa: E731
    got = normal_kl(torch.tensor(m1, dtype=torch.float64), lv(s1), torch.tensor(m2, dtype=torch.float64), lv(s2))
    assert float(got) == pytest.approx(expected, rel=1e-8, abs=1e-12)


def test_normal_kl_broadcasts_and_is_zero_only_for_equal_gaussians():
    mean = torch.linspace(-1, 1, 5, dtype=torch.float64)[:, None]
    logvar = torch.linspace(-3, 1, 4, dtype=torch.float64)
    kl = normal_kl(mean, logvar, torch.zeros(()), torch.zeros(()))
    assert kl.shape == (5, 4)
    assert (kl >= 0).all()
    assert float(normal_kl(mean, logvar, mean, logvar).abs().max()) == 0.0


def test_gaussian_log_likelihood_is_the_normal_density():
    x = torch.linspace(-3, 3, 13, dtype=torch.float64)
    mean, logvar = torch.tensor(0.4, dtype=torch.float64), torch.tensor(-1.3, dtype=torch.float64)
    std = math.exp(0.5 * float(logvar))
    expected = -0.5 * ((x - mean) / std) ** 2 - math.log(std * math.sqrt(2 * math.pi))
    torch.testing.assert_close(gaussian_log_likelihood(x, mean, logvar), expected, rtol=1e-12, atol=1e-12)


# --- the discretized decoder ---------------------------------------------------------


@pytest.mark.parametrize("levels, indices", [(17, list(range(17))), (256, [0, 1, 2, 127, 128, 200, 253, 254, 255])])
def test_discretized_gaussian_matches_integral(levels, indices):
    """Every bin, edge bins open, means inside and outside [-1, 1], narrow and wide, |z| up to ~2000."""
    width = 2 / (levels - 1)
    grid = [-1 + k * width for k in indices]
    means = [-1.3, -1.0, -0.43, 0.0, 0.51, 1.0, 1.2]
    stds = [1e-3, 0.02, 0.3, 2.0]
    x, m, s, expected = [], [], [], []
    for value in grid:
        lo = -math.inf if value < -1 + width / 2 else value - width / 2
        hi = math.inf if value > 1 - width / 2 else value + width / 2
        for mean in means:
            for std in stds:
                x.append(value), m.append(mean), s.append(std)
                expected.append(log_normal_mass(lo, hi, mean, std))
    as64 = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    got = discretized_gaussian_log_likelihood(as64(x), as64(m), 2 * as64(s).log(), width)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, as64(expected), rtol=1e-7, atol=1e-9)
    assert got.min() < -1e5  # the far tails really were exercised


@pytest.mark.parametrize("levels", [2, 17, 256])
def test_bins_of_all_levels_sum_to_one(levels):
    x = torch.linspace(-1, 1, levels, dtype=torch.float64)[:, None]
    mean = torch.tensor([-1.7, -1.0, -0.3, 0.0, 0.004, 0.9, 1.0, 3.0], dtype=torch.float64)
    for std in (1e-4, 0.01, 0.5, 5.0):
        logvar = torch.full_like(mean, 2 * math.log(std))
        log_p = discretized_gaussian_log_likelihood(x, mean, logvar, 2 / (levels - 1))  # [levels, M]
        torch.testing.assert_close(log_p.logsumexp(dim=0), torch.zeros_like(mean), rtol=0, atol=1e-12)


def test_discretized_gaussian_gradients_are_finite_and_correct():
    """The vlb loss backpropagates through the decoder: edge bins and far tails must give finite gradients."""
    width = 2 / 16
    x = torch.tensor([-1.0, -1.0, 1.0, 1.0, 0.25, 0.25, -0.5, 1.0, -1.0], dtype=torch.float64)
    mean = torch.tensor([-0.9, 3.0, 0.9, -3.0, 0.2, 5.0, -4.0, 1.02, -1.01], dtype=torch.float64, requires_grad=True)
    logvar = torch.tensor([-4.0, -6.0, -2.0, -6.0, -3.0, -8.0, -5.0, -9.0, -9.0], dtype=torch.float64, requires_grad=True)
    log_p = discretized_gaussian_log_likelihood(x, mean, logvar, width)
    log_p.sum().backward()
    assert torch.isfinite(mean.grad).all() and torch.isfinite(logvar.grad).all()
    # d log P / d mean = (phi(z_lo) - phi(z_hi)) / (std P), checked where it is representable
    std = (0.5 * logvar.detach()).exp()
    lo = torch.where(x < -1 + width / 2, -math.inf, x - width / 2)
    hi = torch.where(x > 1 - width / 2, math.inf, x + width / 2)
    phi = lambda z: torch.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)  # noqa: E731
    z_lo, z_hi = (lo - mean.detach()) / std, (hi - mean.detach()) / std
    expected = (phi(z_lo) - phi(z_hi)) / (std * log_p.detach().exp())
    moderate = log_p.detach() > -30
    assert moderate.sum() >= 5
    torch.testing.assert_close(mean.grad[moderate], expected[moderate], rtol=1e-6, atol=1e-9)


def test_discretized_gaussian_keeps_float32():
    x = torch.tensor([-1.0, 0.0, 1.0])
    out = discretized_gaussian_log_likelihood(x, torch.zeros(3), torch.full((3,), -2.0), 1.0)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


# --- nll with exact denoisers ----------------------------------------------------------

# Eight points on the 17-level grid (spacing 1/8) in D = 2: entropy log2(8) / 2 = 1.5 bits/dim.
POINTS = torch.tensor(
    [[-1, -1], [-1, 1], [1, -1], [1, 1], [0, 0], [0.5, -0.5], [-0.5, 0.5], [1, 0]], dtype=torch.float64
)


def exact_nll(means, levels, T, variance, n, seed, stds=0.0, prediction="eps", betas=None):
    diffusion = Diffusion(cosine_betas(T) if betas is None else betas, prediction, variance)
    model = GaussianMixtureDenoiser(diffusion, means, stds)
    g = torch.Generator().manual_seed(seed)
    x0 = model.sample_data(n, g).to(torch.float64)
    return diffusion, x0, nll_terms(model, diffusion, x0, levels=levels, generator=g)


def mean_and_error(values: torch.Tensor) -> tuple[float, float]:
    return float(values.mean()), float(values.std() / math.sqrt(len(values)))


def test_nll_of_points_on_a_coarse_grid_is_their_entropy():
    """17 levels, cosine T = 1000: the bound lands on log2(8)/2 = 1.5 bits/dim.

    It is an upper bound, so it may not go below the entropy (beyond 4 standard
    errors). Above, besides noise, it keeps the discrete-time gap of Gaussian
    reverse steps, which shrinks as O(1/T): ~0.05 bits/dim at T = 200 and
    ~0.008 at T = 1000 for these points; 0.02 leaves room for it and no more
    (a wrong sign or factor anywhere in the bound moves it by far more). The
    decoder term is ~0 here: bins of 1/8 are ~8 of the decoder's std wide.
    """
    entropy = math.log2(len(POINTS)) / 2
    _, _, terms = exact_nll(POINTS, levels=17, T=1000, variance="fixed_small", n=800, seed=0)
    mean, err = mean_and_error(terms.total)
    assert err < 0.01
    assert entropy - 4 * err <= mean <= entropy + 0.02 + 4 * err
    assert float(terms.terms[:, 0].mean()) < 1e-3


def test_nll_on_a_fine_grid_keeps_the_decoder_gap():
    """256 levels: the fixed decoder variance at t = 0 leaves a real gap above the entropy.

    The points are 1/2 apart, so at t = 0 the model's mean is exactly x0 and the
    decoder term is -log2 P(the bin | N(x0, sigma_0^2)): -log2 erf(h / (sigma_0 sqrt 2))
    for an interior bin of half-width h, -log2 Phi(h / sigma_0) for an open edge bin.
    """
    width = 2 / 255
    points = torch.tensor([[-1 + 64 * width, -1 + 191 * width], [-1, 1], [1, -1 + 128 * width], [-1 + 128 * width, -1]],
                          dtype=torch.float64)
    entropy = math.log2(len(points)) / 2
    diffusion, x0, terms = exact_nll(points, levels=256, T=500, variance="fixed_small", n=400, seed=1)
    sigma0 = math.exp(0.5 * float(diffusion.posterior_log_variance_clipped[0]))
    u = width / 2 / sigma0
    interior_bits, edge_bits = -math.log2(math.erf(u / math.sqrt(2))), -math.log2(0.5 * (1 + math.erf(u / math.sqrt(2))))
    edge = (x0.abs() == 1).to(torch.float64)
    expected_decoder = (edge * edge_bits + (1 - edge) * interior_bits).mean(dim=1)
    torch.testing.assert_close(terms.terms[:, 0], expected_decoder, rtol=1e-6, atol=1e-9)
    mean, err = mean_and_error(terms.total)
    assert mean - entropy > 0.5 + 4 * err
    # and the rest of the bound still sits on the entropy, as on the coarse grid
    kl_part, kl_err = mean_and_error(terms.total - terms.terms[:, 0])
    assert entropy - 4 * kl_err <= kl_part <= entropy + 0.03 + 4 * kl_err


def test_fixed_large_costs_at_most_its_schedule_excess():
    """Same draws, two variances: per step the KL changes by
    0.5 (log(beta/beta~) + beta~/beta - 1) + 0.5 (mu~ - mu)^2 (1/beta - 1/beta~), whose second part is <= 0;
    the decoder (t = 0) is the same. So fixed_large - fixed_small <= the schedule-only sum, per example."""
    T = 200
    d_small, _, small = exact_nll(POINTS, 17, T, "fixed_small", n=300, seed=2)
    _, _, large = exact_nll(POINTS, 17, T, "fixed_large", n=300, seed=2)
    abar = torch.cumprod(1 - d_small.betas, 0)
    beta, beta_tilde = d_small.betas[1:], d_small.betas[1:] * (1 - abar[:-1]) / (1 - abar[1:])
    excess = float((0.5 * ((beta / beta_tilde).log() + beta_tilde / beta - 1)).sum() / math.log(2))
    diff = large.total - small.total
    assert (diff <= excess + 1e-9).all()
    torch.testing.assert_close(large.terms[:, 0], small.terms[:, 0])
    # where x0 is certain (most steps) the mean error vanishes and nearly all of the excess is paid
    assert float(diff.mean()) > 0.8 * excess
    mean, err = mean_and_error(large.total)
    assert mean >= math.log2(len(POINTS)) / 2 - 4 * err


@pytest.mark.parametrize(
    "variance, betas",
    [
        ("fixed_small", cosine_betas(100)),
        ("fixed_large", cosine_betas(100)),
        ("fixed_small", cosine_betas(160)[:100]),  # stops at abar ~ 0.33: a large prior term
    ],
    ids=["small", "large", "truncated"],
)
def test_nll_of_gaussian_data_matches_the_closed_form_bound(variance, betas):
    """Continuous data N(0, s^2 I), levels=None: every distribution involved is Gaussian.

    With a_t = sqrt(abar_t), sigma_t^2 = 1 - abar_t, the exact model has
    Var[x0 | x_t] = V_t = s^2 sigma_t^2 / (a_t^2 s^2 + sigma_t^2), its mean error in
    x_{t-1} is c1_t (x0 - E[x0 | x_t]), so per dimension, in nats,
      E KL_t    = 0.5 (log(var_t / beta~_t) + beta~_t / var_t - 1 + c1_t^2 V_t / var_t)   t >= 1
      E decoder = 0.5 log(2 pi var_0) + 0.5 V_0 / var_0
      E prior   = 0.5 (sigma_T^2 + a_T^2 s^2 - 1 - log sigma_T^2)
    with var_t the model's variance. The estimate must match within Monte-Carlo error.
    """
    T, s, dims = len(betas), 0.5, 8
    diffusion, x0, terms = exact_nll(torch.zeros(1, dims, dtype=torch.float64), None, T, variance, n=1500, seed=3,
                                     stds=s, betas=betas)
    abar = torch.cumprod(1 - betas, 0)
    abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    beta_tilde = betas * (1 - abar_prev) / (1 - abar)
    c1 = betas * abar_prev.sqrt() / (1 - abar)
    V = s**2 * (1 - abar) / (abar * s**2 + 1 - abar)
    var = torch.where(torch.arange(T) == 0, beta_tilde[1], beta_tilde if variance == "fixed_small" else betas)
    kl = 0.5 * ((var / beta_tilde).log() + beta_tilde / var - 1 + c1**2 * V / var)
    decoder = 0.5 * math.log(2 * math.pi * var[0]) + 0.5 * V[0] / var[0]
    prior = 0.5 * ((1 - abar[-1]) + abar[-1] * s**2 - 1 - (1 - abar[-1]).log())
    expected = float(prior + kl[1:].sum() + decoder) / math.log(2)

    mean, err = mean_and_error(terms.total)
    assert abs(mean - expected) <= 4 * err
    # per step too: the decoder and the first KLs, where the terms are largest
    per_step = terms.terms.mean(dim=0)
    step_err = terms.terms.std(dim=0) / math.sqrt(len(x0))
    expected_steps = torch.cat([torch.tensor([decoder]), kl[1:]]) / math.log(2)
    assert ((per_step - expected_steps).abs() <= 4.5 * step_err + 1e-12).all()
    torch.testing.assert_close(terms.prior.mean(), torch.tensor(float(prior) / math.log(2), dtype=torch.float64),
                               rtol=0, atol=4 * float(terms.prior.std() / math.sqrt(len(x0))) + 1e-12)


# --- nll's bookkeeping -------------------------------------------------------------------


def test_nll_terms_add_up_and_repeat_with_the_seed():
    diffusion = Diffusion(cosine_betas(30), "eps", "fixed_small")
    model = GaussianMixtureDenoiser(diffusion, POINTS)
    x0 = model.sample_data(64, torch.Generator().manual_seed(0)).to(torch.float64)
    calls = []
    terms = nll_terms(model, diffusion, x0, levels=17, generator=torch.Generator().manual_seed(5),
                      progress=lambda done, total: calls.append((done, total)))
    assert terms.terms.shape == (64, 30) and terms.total.shape == terms.prior.shape == (64,)
    torch.testing.assert_close(terms.total, terms.prior + terms.terms.sum(dim=1))
    assert (terms.terms[:, 1:] >= 0).all()  # KLs
    assert calls == [(i, 30) for i in range(1, 31)]
    again = nll(model, diffusion, x0, levels=17, generator=torch.Generator().manual_seed(5))
    assert torch.equal(again, terms.total)
    assert wb.nll is nll


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_nll_reads_learned_range_outputs(prediction):
    """A learned_range model whose variance channels are -1 is fixed_small; +1 is beta_t (fixed_large for t >= 1)."""
    betas = cosine_betas(40)
    g = lambda: torch.Generator().manual_seed(9)  # noqa: E731
    fixed = {v: Diffusion(betas, prediction, v) for v in ("fixed_small", "fixed_large")}
    exact = GaussianMixtureDenoiser(fixed["fixed_small"], POINTS)
    x0 = exact.sample_data(50, g()).to(torch.float64)
    learned = Diffusion(betas, prediction, "learned_range")
    for value, variance in ((-1.0, "fixed_small"), (1.0, "fixed_large")):
        model = lambda x_t, t: torch.cat([exact(x_t, t), torch.full_like(x_t, value)], dim=1)  # noqa: B023, E731
        got = nll_terms(model, learned, x0, levels=17, generator=g())
        reference = nll_terms(exact, fixed[variance], x0, levels=17, generator=g())
        steps = slice(None) if variance == "fixed_small" else slice(1, None)
        torch.testing.assert_close(got.terms[:, steps], reference.terms[:, steps], rtol=1e-9, atol=1e-12)


def test_nll_refuses_bad_levels_and_off_grid_data():
    diffusion = Diffusion(cosine_betas(5))
    model = GaussianMixtureDenoiser(diffusion, POINTS)
    x0 = POINTS.clone()
    with pytest.raises(ConfigError, match="levels"):
        nll(model, diffusion, x0, levels=1)
    with pytest.raises(ConfigError, match="not on a grid of 256 levels"):
        nll(model, diffusion, x0, levels=256)  # 0 is not on an even grid
    with pytest.raises(ConfigError, match="not on a grid"):
        nll(model, diffusion, 2 * x0, levels=17)
    assert nll(model, diffusion, x0, levels=17).shape == (len(x0),)


def test_nll_given_the_class_is_the_conditional_entropy():
    """The exact conditional denoiser of the eight points (each point a class): given its class, an
    example is certain, so -log2 p(x0 | y) = 0 bits/dim; the bound lands there within the same
    discrete-time gap (0.02) and 4 standard errors, where without labels it is log2(8) / 2 = 1.5."""
    diffusion = Diffusion(cosine_betas(1000), "eps", "fixed_small")
    model = GaussianMixtureDenoiser(diffusion, POINTS, 0.0)
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(8).repeat(50)
    x0 = POINTS[labels]
    given = nll(model, diffusion, x0, levels=17, generator=g, labels=labels)
    mean, err = mean_and_error(given)
    assert -4 * err <= mean <= 0.02 + 4 * err
    # "No label" (index 8) is the mixture: back to the entropy of the eight points.
    unconditional, err = mean_and_error(nll(model, diffusion, x0, levels=17, generator=g, labels=torch.full_like(labels, 8)))
    assert abs(unconditional - 1.5) <= 0.02 + 4 * err
