"""The Gaussian process math of workbench/diffusion.py against ground truth.

Ground truth here is written independently of the code under test: abar
from its definition, the posterior q(x_{t-1} | x_t, x0) from Bayes' rule
(in closed form and by integrating on a grid), moments of q(x_t | x0) from
many draws, and the conversions eps <-> x0 <-> v from their definitions.
"""

from __future__ import annotations

import math

import pytest
import torch

from reference import abar_of, linear_betas
from workbench.diffusion import Diffusion

T = 50






def column(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[B] -> [B, 1, ...] to broadcast against `like`."""
    return values.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def draw(generator: torch.Generator, shape=(64, 3, 4), dtype=torch.float64):
    """Random x0, eps and t (every step covered) for a batch of `shape`."""
    x0 = torch.randn(shape, generator=generator, dtype=dtype)
    eps = torch.randn(shape, generator=generator, dtype=dtype)
    t = torch.arange(shape[0]) % T
    return x0, eps, t


# --- the tables ----------------------------------------------------------------


def test_tables_follow_the_definitions():
    betas = linear_betas(T)
    d = Diffusion(betas)
    abar = abar_of(betas)
    for table in (d.betas, d.alphas_cumprod, d.posterior_variance, d.posterior_log_variance_clipped):
        assert table.dtype == torch.float64
    torch.testing.assert_close(d.alphas_cumprod, abar, rtol=1e-13, atol=0)
    torch.testing.assert_close(d.alphas_cumprod_prev[1:], abar[:-1], rtol=1e-13, atol=0)
    assert d.alphas_cumprod_prev[0] == 1.0
    t = torch.arange(T)
    torch.testing.assert_close(d.snr(t), abar / (1 - abar), rtol=1e-12, atol=0)
    assert d.snr(t).dtype == torch.float64
    assert (d.snr(t)[1:] < d.snr(t)[:-1]).all()


# --- conversions between eps, x0 and v ------------------------------------------


@pytest.mark.parametrize("shape", [(64, 2), (64, 3, 4)])
def test_conversions_are_exact_inverses_consistent_with_q_sample(generator, shape):
    d = Diffusion(linear_betas(T))
    x0, eps, t = draw(generator, shape)
    x_t = d.q_sample(x0, t, eps)
    abar = column(abar_of(d.betas)[t], x0)
    torch.testing.assert_close(x_t, abar.sqrt() * x0 + (1 - abar).sqrt() * eps, rtol=1e-12, atol=1e-12)

    torch.testing.assert_close(d.predict_x0_from_eps(x_t, t, eps), x0, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(d.predict_eps_from_x0(x_t, t, x0), eps, rtol=1e-10, atol=1e-10)

    v = d.v_target(x0, eps, t)
    torch.testing.assert_close(v, abar.sqrt() * eps - (1 - abar).sqrt() * x0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(d.predict_x0_from_v(x_t, t, v), x0, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(d.predict_eps_from_v(x_t, t, v), eps, rtol=1e-10, atol=1e-10)

    # Round trips through the other parameterizations.
    x0_back = d.predict_x0_from_eps(x_t, t, d.predict_eps_from_x0(x_t, t, x0))
    torch.testing.assert_close(x0_back, x0, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_training_target_is_read_back_as_x0_and_eps(generator, prediction):
    d = Diffusion(linear_betas(T), prediction=prediction)
    x0, eps, t = draw(generator)
    x_t = d.q_sample(x0, t, eps)
    target = d.training_target(x0, eps, t)
    expected = {"eps": eps, "x0": x0, "v": d.v_target(x0, eps, t)}[prediction]
    torch.testing.assert_close(target, expected, rtol=0, atol=0)
    pred_x0, pred_eps = d.predict_x0_eps(target, x_t, t)
    torch.testing.assert_close(pred_x0, x0, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(pred_eps, eps, rtol=1e-10, atol=1e-10)


# --- the forward process q(x_t | x0) ---------------------------------------------


def test_q_sample_moments_match_q_mean_variance(generator):
    d = Diffusion(linear_betas(T))
    n = 20000
    x0 = torch.tensor([[1.5, -0.7]], dtype=torch.float64).expand(n, 2)
    for step in (0, 10, T - 1):
        t = torch.full((n,), step)
        x_t = d.q_sample(x0, t, torch.randn(n, 2, generator=generator, dtype=torch.float64))
        abar = abar_of(d.betas)[step].item()
        mean, variance = math.sqrt(abar) * x0[0], torch.full((2,), 1 - abar, dtype=torch.float64)
        # Standard errors of the sample mean and variance of a Gaussian; 5 of them is a loose band.
        torch.testing.assert_close(x_t.mean(0), mean, rtol=0, atol=5 * math.sqrt((1 - abar) / n))
        torch.testing.assert_close(x_t.var(0), variance, rtol=5 * math.sqrt(2 / n), atol=0)
        q_mean, q_var = d.q_mean_variance(x0[:1], t[:1])
        torch.testing.assert_close(q_mean[0], mean, rtol=1e-12, atol=0)
        torch.testing.assert_close(q_var[0], variance, rtol=1e-12, atol=0)


def test_q_mean_variance_keeps_precision_in_float32():
    """1 - abar at t = 0 is 1e-4: it must come from the float64 table, not a float32 subtraction."""
    d = Diffusion(linear_betas(1000))
    t = torch.tensor([0, 1, 500, 999])
    _, var32 = d.q_mean_variance(torch.zeros(4, 2), t)
    assert var32.dtype == torch.float32
    expected = (1 - abar_of(d.betas)[t]).to(torch.float32)
    torch.testing.assert_close(var32[:, 0], expected, rtol=1e-6, atol=0)


# --- the posterior q(x_{t-1} | x_t, x0) -------------------------------------------


def bayes_posterior(betas: torch.Tensor, t: int, x0: float, x_t: float) -> tuple[float, float]:
    """q(x_{t-1} | x_t, x0) ∝ q(x_{t-1} | x0) q(x_t | x_{t-1}): a product of Gaussians in x_{t-1}.

    Prior N(sqrt(abar_{t-1}) x0, 1 - abar_{t-1}); likelihood N(x_t; sqrt(alpha_t) x_{t-1}, beta_t),
    which as a function of x_{t-1} has precision alpha_t / beta_t around x_t / sqrt(alpha_t).
    """
    abar_prev = abar_of(betas)[t - 1].item()
    beta = betas[t].item()
    alpha = 1 - beta
    precision = 1 / (1 - abar_prev) + alpha / beta
    mean = (math.sqrt(abar_prev) * x0 / (1 - abar_prev) + math.sqrt(alpha) * x_t / beta) / precision
    return mean, 1 / precision


def test_posterior_is_bayes_rule(generator):
    betas = linear_betas(T)
    d = Diffusion(betas)
    t = torch.arange(1, T)
    x0 = torch.randn(T - 1, 1, generator=generator, dtype=torch.float64)
    x_t = d.q_sample(x0, t, torch.randn(T - 1, 1, generator=generator, dtype=torch.float64))
    mean, variance, log_variance = d.q_posterior(x0, x_t, t)
    for i, step in enumerate(t.tolist()):
        bayes_mean, bayes_var = bayes_posterior(betas, step, x0[i].item(), x_t[i].item())
        assert mean[i].item() == pytest.approx(bayes_mean, rel=1e-10, abs=1e-12)
        assert variance[i].item() == pytest.approx(bayes_var, rel=1e-10)
        assert log_variance[i].item() == pytest.approx(math.log(bayes_var), rel=1e-10)


@pytest.mark.parametrize("step", [1, 25, T - 1])
def test_posterior_by_integration_on_a_grid(step):
    """The same posterior from the unnormalized density on a fine 1-D grid, no algebra."""
    betas = linear_betas(T)
    d = Diffusion(betas)
    abar = abar_of(betas)
    x0, x_t = 0.8, -0.3
    beta, abar_prev = betas[step].item(), abar[step - 1].item()
    # The posterior lies between the two factors' peaks; cover both with 12 of the wider sd to spare.
    peaks = (math.sqrt(abar_prev) * x0, x_t / math.sqrt(1 - beta))
    spare = 12 * max(math.sqrt(1 - abar_prev), math.sqrt(beta / (1 - beta)))
    grid = torch.linspace(min(peaks) - spare, max(peaks) + spare, 400001, dtype=torch.float64)
    log_density = (
        -((grid - math.sqrt(abar_prev) * x0) ** 2) / (2 * (1 - abar_prev))
        - (x_t - math.sqrt(1 - beta) * grid) ** 2 / (2 * beta)
    )
    weights = (log_density - log_density.max()).exp()
    weights = weights / weights.sum()
    grid_mean = (weights * grid).sum().item()
    grid_var = (weights * (grid - grid_mean) ** 2).sum().item()

    mean, variance, _ = d.q_posterior(
        torch.tensor([[x0]], dtype=torch.float64), torch.tensor([[x_t]], dtype=torch.float64), torch.tensor([step])
    )
    assert mean.item() == pytest.approx(grid_mean, rel=1e-9, abs=1e-12)
    assert variance.item() == pytest.approx(grid_var, rel=1e-9)


def test_posterior_at_t0_is_x0_and_its_log_variance_is_clipped():
    betas = linear_betas(T)
    d = Diffusion(betas)
    x0 = torch.tensor([[0.3, -0.9]], dtype=torch.float64)
    x_t = torch.tensor([[0.5, 0.1]], dtype=torch.float64)
    mean, variance, log_variance = d.q_posterior(x0, x_t, torch.tensor([0]))
    torch.testing.assert_close(mean, x0, rtol=1e-12, atol=1e-14)  # x_{-1} is the data itself
    assert (variance == 0).all()
    # log 0 is clipped to the log variance at t = 1 (improved DDPM): beta_1 beta_0 / (1 - abar_1).
    var1 = betas[1].item() * betas[0].item() / (1 - (1 - betas[0].item()) * (1 - betas[1].item()))
    torch.testing.assert_close(log_variance, torch.full_like(x0, math.log(var1)), rtol=1e-12, atol=0)
    assert d.posterior_log_variance_clipped[0] == d.posterior_log_variance_clipped[1]
    torch.testing.assert_close(d.posterior_log_variance_clipped[1:], d.posterior_variance[1:].log())


# --- the model's reverse step ------------------------------------------------------


def learned_output(prediction: torch.Tensor, v: float) -> torch.Tensor:
    """A learned_range model output: the prediction and the variance values on the channel axis."""
    return torch.cat([prediction, torch.full_like(prediction, v)], dim=1)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large", "learned_range"])
def test_exact_prediction_gives_the_posterior_mean(generator, prediction, variance):
    d = Diffusion(linear_betas(T), prediction=prediction, variance=variance)
    x0, eps, t = draw(generator)
    x_t = d.q_sample(x0, t, eps)
    output = d.training_target(x0, eps, t)
    if d.learns_variance:
        output = learned_output(output, 0.0)
    p = d.p_mean_variance(output, x_t, t)
    post_mean, _, _ = d.q_posterior(x0, x_t, t)
    torch.testing.assert_close(p.mean, post_mean, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(p.pred_x0, x0, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(p.pred_eps, eps, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(p.variance, p.log_variance.exp(), rtol=1e-12, atol=0)
    assert p.mean.shape == p.variance.shape == p.log_variance.shape == x_t.shape


def test_fixed_small_and_fixed_large_variances():
    betas = linear_betas(T)
    t = torch.arange(T)
    x_t = torch.zeros(T, 2, dtype=torch.float64)
    small = Diffusion(betas, variance="fixed_small").p_mean_variance(x_t, x_t, t)
    large = Diffusion(betas, variance="fixed_large").p_mean_variance(x_t, x_t, t)
    abar = abar_of(betas)
    posterior = betas[1:] * (1 - abar[:-1]) / (1 - abar[1:])  # t >= 1
    var1 = posterior[0]
    # fixed_small: the posterior variance (sigma^2 = beta~_t), its t = 0 value clipped to t = 1.
    torch.testing.assert_close(small.variance[1:, 0], posterior, rtol=1e-12, atol=0)
    torch.testing.assert_close(small.variance[0, 0], var1, rtol=1e-12, atol=0)
    # fixed_large: sigma^2 = beta_t, with t = 0 set to beta~_1 as improved-diffusion does.
    torch.testing.assert_close(large.variance[1:, 0], betas[1:], rtol=1e-12, atol=0)
    torch.testing.assert_close(large.variance[0, 0], var1, rtol=1e-12, atol=0)
    torch.testing.assert_close(large.log_variance, large.variance.log(), rtol=1e-12, atol=0)
    assert (large.variance[1:] > small.variance[1:]).all()  # beta_t > beta~_t


def test_learned_range_interpolates_log_variance(generator):
    betas = linear_betas(T)
    d = Diffusion(betas, variance="learned_range")
    x0, eps, t = draw(generator, (T, 2))
    x_t = d.q_sample(x0, t, eps)
    clipped = column(d.posterior_log_variance_clipped[t], x_t).expand_as(x_t)
    log_beta = column(betas[t].log(), x_t).expand_as(x_t)
    low = d.p_mean_variance(learned_output(eps, -1.0), x_t, t)
    high = d.p_mean_variance(learned_output(eps, 1.0), x_t, t)
    mid = d.p_mean_variance(learned_output(eps, 0.0), x_t, t)
    torch.testing.assert_close(low.log_variance, clipped, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(high.log_variance, log_beta, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(mid.log_variance, (clipped + log_beta) / 2, rtol=1e-12, atol=1e-12)
    # The variance channels do not move the mean.
    torch.testing.assert_close(low.mean, high.mean, rtol=0, atol=0)
    # Per-element values: each element gets its own interpolation.
    v = torch.rand(x_t.shape, generator=generator, dtype=torch.float64) * 2 - 1
    mixed = d.p_mean_variance(torch.cat([eps, v], dim=1), x_t, t)
    frac = (v + 1) / 2
    torch.testing.assert_close(mixed.log_variance, frac * log_beta + (1 - frac) * clipped, rtol=1e-12, atol=1e-12)


def test_learned_range_without_variance_channels_is_an_error():
    d = Diffusion(linear_betas(T), variance="learned_range")
    x = torch.zeros(2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="learned_range"):
        d.model_log_variance(None, x, torch.tensor([0, 1]))


def test_clip_denoised_clips_x0_and_keeps_eps_consistent(generator):
    d = Diffusion(linear_betas(T), prediction="eps")
    x0 = 3 * torch.randn(T, 4, generator=generator, dtype=torch.float64)  # well outside [-1, 1]
    eps = torch.randn(T, 4, generator=generator, dtype=torch.float64)
    t = torch.arange(T)
    x_t = d.q_sample(x0, t, eps)
    p = d.p_mean_variance(eps, x_t, t, clip_denoised=True)
    torch.testing.assert_close(p.pred_x0, x0.clamp(-1, 1), rtol=1e-10, atol=1e-10)
    assert p.pred_x0.abs().max() <= 1
    # x_t is still explained by the clipped x0 and the new eps.
    torch.testing.assert_close(d.q_sample(p.pred_x0, t, p.pred_eps), x_t, rtol=1e-10, atol=1e-10)
    post_mean, _, _ = d.q_posterior(x0.clamp(-1, 1), x_t, t)
    torch.testing.assert_close(p.mean, post_mean, rtol=1e-10, atol=1e-10)
    unclipped = d.p_mean_variance(eps, x_t, t)
    assert not torch.allclose(unclipped.pred_x0, p.pred_x0)


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large", "learned_range"])
def test_results_come_back_in_the_input_dtype(generator, variance):
    d = Diffusion(linear_betas(T), prediction="v", variance=variance)
    x0, eps, t = draw(generator, dtype=torch.float32)
    x_t = d.q_sample(x0, t, eps)
    output = d.training_target(x0, eps, t)
    if d.learns_variance:
        output = learned_output(output, 0.3)
    p = d.p_mean_variance(output, x_t, t, clip_denoised=True)
    for name in ("mean", "variance", "log_variance", "pred_x0", "pred_eps"):
        assert getattr(p, name).dtype == torch.float32, name
    for result in (x_t, output, *d.q_posterior(x0, x_t, t), *d.q_mean_variance(x0, t)):
        assert result.dtype == torch.float32
    # The tables stay float64, wherever they are cached.
    assert d.betas.dtype == d.alphas_cumprod.dtype == torch.float64
    for tables in d.device_tables.values():
        assert all(table.dtype == torch.float64 for table in tables.values())
    # And float32 agrees with the float64 computation to float32 precision.
    p64 = d.p_mean_variance(output.double(), x_t.double(), t, clip_denoised=True)
    for name in ("mean", "variance", "log_variance", "pred_x0", "pred_eps"):
        torch.testing.assert_close(getattr(p, name).double(), getattr(p64, name), rtol=1e-4, atol=1e-5)


def test_tables_are_cached_per_device_and_float64_is_exact(generator):
    d = Diffusion(linear_betas(T))
    x0, eps, t = draw(generator, (T, 2))
    x_t = d.q_sample(x0, t, eps)
    cpu = torch.device("cpu")
    cached = d.device_tables[cpu]["sqrt_alphas_cumprod"]
    assert cached.dtype == torch.float64 and cached.device == cpu
    d.q_sample(x0.float(), t, eps.float())
    assert d.device_tables[cpu]["sqrt_alphas_cumprod"] is cached  # reused, not rebuilt per call or dtype
    assert list(d.device_tables) == [cpu]
    # float64 in: no detour through float32 (that would be ~1e-8 off).
    abar = column(abar_of(d.betas)[t], x0)
    torch.testing.assert_close(x_t, abar.sqrt() * x0 + (1 - abar).sqrt() * eps, rtol=1e-14, atol=1e-15)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tables_follow_the_tensors_to_the_gpu(generator):
    d = Diffusion(linear_betas(T))
    x0, eps, t = draw(generator, (T, 2))
    x_t = d.q_sample(x0.cuda(), t.cuda(), eps.cuda())
    assert x_t.device.type == "cuda" and x_t.dtype == torch.float64
    torch.testing.assert_close(x_t.cpu(), d.q_sample(x0, t, eps), rtol=1e-12, atol=1e-12)
    assert {device.type for device in d.device_tables} >= {"cuda"}


# --- output layout ---------------------------------------------------------------


def test_split_output():
    fixed = Diffusion(linear_betas(T), variance="fixed_small")
    learned = Diffusion(linear_betas(T), variance="learned_range")
    assert not fixed.learns_variance and learned.learns_variance
    images = torch.arange(2 * 6 * 4 * 4, dtype=torch.float64).reshape(2, 6, 4, 4)
    prediction, values = learned.split_output(images)
    assert torch.equal(prediction, images[:, :3]) and torch.equal(values, images[:, 3:])
    vectors = torch.arange(5 * 4, dtype=torch.float64).reshape(5, 4)
    prediction, values = learned.split_output(vectors)
    assert torch.equal(prediction, vectors[:, :2]) and torch.equal(values, vectors[:, 2:])
    prediction, values = fixed.split_output(images)
    assert prediction is images and values is None


# --- respacing ---------------------------------------------------------------------


def test_respace_keeps_abar_at_the_kept_steps():
    betas = linear_betas(T)
    d = Diffusion(betas, prediction="v", variance="learned_range")
    kept = [49, 0, 10, 3, 24, 10]  # unsorted, with a duplicate
    r, timestep_map = d.respace(kept)
    assert timestep_map.tolist() == [0, 3, 10, 24, 49]
    assert timestep_map.dtype == torch.long
    assert r.num_timesteps == 5 and r.prediction == "v" and r.variance == "learned_range"
    # respace's 1 - beta' = abar_k / abar_prev = x returns through 1 - (1 - x): u / x relative (u = 2^-53),
    # plus ~3u of rounding per kept step; each table carries <= T u of its own products.
    expected = abar_of(betas)[timestep_map]
    x = expected / torch.cat([torch.ones(1, dtype=torch.float64), expected[:-1]])
    bound = (torch.cumsum(1 / x + 3, 0) + 2 * T) * 2.0**-53 * expected
    assert ((r.alphas_cumprod - expected).abs() <= bound).all(), (r.alphas_cumprod - expected).abs() / bound
    # Hence the same x_t at a kept step, under its new index.
    x0 = torch.ones(5, 2, dtype=torch.float64)
    noise = torch.full((5, 2), 0.5, dtype=torch.float64)
    torch.testing.assert_close(
        r.q_sample(x0, torch.arange(5), noise), d.q_sample(x0, timestep_map, noise), rtol=1e-12, atol=1e-12
    )


def test_respace_to_every_step_is_the_original_process():
    betas = linear_betas(T)
    r, timestep_map = Diffusion(betas).respace(range(T))
    assert timestep_map.tolist() == list(range(T))
    torch.testing.assert_close(r.betas, betas, rtol=1e-10, atol=0)
    torch.testing.assert_close(r.posterior_variance, Diffusion(betas).posterior_variance, rtol=1e-9, atol=0)


@pytest.mark.parametrize("steps", [[], [-1, 5], [5, T]])
def test_respace_rejects_steps_outside_the_process(steps):
    with pytest.raises(ValueError, match="respace"):
        Diffusion(linear_betas(T)).respace(steps)


# --- invalid construction -----------------------------------------------------------


@pytest.mark.parametrize(
    ("betas", "options"),
    [
        (linear_betas(T), {"prediction": "epsilon"}),
        (linear_betas(T), {"variance": "learned"}),
        (torch.tensor([0.0, 0.1]), {}),
        (torch.tensor([0.1, -0.1]), {}),
        (torch.tensor([0.1, 1.5]), {}),
        (torch.tensor([0.1, float("nan")]), {}),
        (torch.zeros(0), {}),
        (torch.full((2, 3), 0.1), {}),
    ],
)
def test_invalid_construction_is_a_value_error(betas, options):
    with pytest.raises(ValueError):
        Diffusion(betas, **options)
