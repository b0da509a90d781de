"""Likelihoods: Gaussian KLs, the data decoder, and the full variational bound in bits/dim.

The variational bound of DDPM (Ho et al. 2020, eq. 5; Nichol & Dhariwal 2021, eq. 4-6),
with this workbench's step indices t = 0..T-1:

    -log p(x0) <= L_prior + sum_{t=1}^{T-1} L_t + L_0
    L_prior = KL(q(x_{T-1} | x0) || N(0, I))
    L_t     = KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t))      t >= 1, x_t ~ q(x_t | x0)
    L_0     = -log p(x0 | x_0)                                   the decoder

Every L_t is a closed-form KL between Gaussians. The decoder is a Gaussian
integrated over the data's bin for discrete data (DDPM eq. 13), or a Gaussian
density for continuous data. All values here are in bits per dimension:
nats / (D ln 2), with D the number of dimensions of one example.

`nll` estimates the whole bound for each example with one fresh x_t per term
(improved-diffusion's `calc_bpd_loop`); the `vlb` and `hybrid` losses draw one
t per example and use `bound_term`, the same per-step term.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from workbench.diffusion import Diffusion
from workbench.errors import ConfigError

LN2 = math.log(2.0)


# --- Gaussian pieces ------------------------------------------------------------


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) elementwise, in nats.

    0.5 * (logvar2 - logvar1 + exp(logvar1 - logvar2) + (mean1 - mean2)^2 exp(-logvar2) - 1).
    The arguments broadcast against each other.
    """
    return 0.5 * (
        logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2) - 1.0
    )


def gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, exp(logvar)) elementwise, in nats: a density, for continuous data."""
    return -0.5 * (math.log(2 * math.pi) + logvar + (x - mean) ** 2 * torch.exp(-logvar))


def _log1mexp(d: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(d)) for d <= 0, accurate for every d (Maechler 2012, "Accurately computing log(1 - exp(-|a|))").

    Each branch gets only inputs it can handle, so neither produces inf or nan in
    the backward pass of the branch that `where` discards.
    """
    near_zero = d > -LN2
    log_of_expm1 = torch.log(-torch.expm1(d.clamp(min=-LN2)))
    log1p_of_exp = torch.log1p(-torch.exp(d.clamp(max=-LN2)))
    return torch.where(near_zero, log_of_expm1, log1p_of_exp)


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, mean: torch.Tensor, log_variance: torch.Tensor, bin_width: float
) -> torch.Tensor:
    """log P(X in bin(x)) for X ~ N(mean, exp(log_variance)), elementwise, in nats (DDPM eq. 13).

    x lies on a grid in [-1, 1] with spacing `bin_width` (2 / (levels - 1)); the bin of x
    is [x - bin_width/2, x + bin_width/2], except that the bins of -1 and +1 are open to
    -inf and +inf, so the bins of all levels partition the real line and their
    probabilities sum to one.

    The probability is a difference of normal CDFs computed in log space
    (log_ndtr, float64): log(Phi(b) - Phi(a)) = log Phi(b) + log(1 - exp(log Phi(a) - log Phi(b))).
    A bin above the mean is mirrored below it first (Phi(b) - Phi(a) = Phi(-a) - Phi(-b)),
    so both ends lie where Phi is small and its log keeps every digit: the result
    stays exact far into either tail (tested to log P ~ -10^6), where a plain
    difference of CDFs rounds to 0 and improved-diffusion's approximate CDF is
    clamped at 1e-12. The gradient is finite everywhere, edge bins included.
    """
    x64, mean64 = x.to(torch.float64), mean.to(torch.float64)
    inv_std = torch.exp(-0.5 * log_variance.to(torch.float64))
    half = bin_width / 2
    z_lo = (x64 - half - mean64) * inv_std
    z_hi = (x64 + half - mean64) * inv_std
    lower_edge = x64 < -1 + half
    upper_edge = x64 > 1 - half

    flip = (z_lo > 0) & ~lower_edge  # the open lower edge bin always reaches below the mean
    a = torch.where(flip, -z_hi, z_lo)
    b = torch.where(flip, -z_lo, z_hi)
    a_open = lower_edge | (upper_edge & flip)  # a is -inf: Phi(a) = 0
    b_open = upper_edge & ~flip  # b is +inf: Phi(b) = 1
    zero = torch.zeros((), dtype=torch.float64, device=x.device)
    log_cdf_a = torch.where(a_open, -math.inf, torch.special.log_ndtr(torch.where(a_open, zero, a)))
    log_cdf_b = torch.where(b_open, zero, torch.special.log_ndtr(torch.where(b_open, zero, b)))
    log_prob = log_cdf_b + _log1mexp(log_cdf_a - log_cdf_b)
    return log_prob.to(torch.promote_types(x.dtype, mean.dtype))


def decoder_log_likelihood(
    x0: torch.Tensor, mean: torch.Tensor, log_variance: torch.Tensor, levels: int | None
) -> torch.Tensor:
    """log p(x0 | x_0) elementwise, in nats: discretized on `levels` values, or a density when levels is None."""
    if levels is None:
        return gaussian_log_likelihood(x0, mean, log_variance)
    return discretized_gaussian_log_likelihood(x0, mean, log_variance, bin_width=2.0 / (levels - 1))


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over every dimension but the batch: [B, ...] -> [B]."""
    return x.reshape(len(x), -1).mean(dim=1)


# --- terms of the variational bound, in bits/dim ---------------------------------


def prior_bpd(diffusion: Diffusion, x0: torch.Tensor) -> torch.Tensor:
    """L_prior = KL(q(x_{T-1} | x0) || N(0, I)) in bits/dim, [B]: how far the last step is from pure noise."""
    t = torch.full((len(x0),), diffusion.num_timesteps - 1, dtype=torch.long, device=x0.device)
    mean, variance = diffusion.q_mean_variance(x0, t)
    zero = torch.zeros((), dtype=x0.dtype, device=x0.device)
    return mean_flat(normal_kl(mean, variance.log(), zero, zero)) / LN2


def bound_term(
    diffusion: Diffusion,
    output: torch.Tensor,
    x0: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
    levels: int | None,
) -> torch.Tensor:
    """L_t of the bound in bits/dim, [B], for a model `output` at x_t (improved-diffusion's `_vb_terms_bpd`).

    For t >= 1 the KL from the true posterior q(x_{t-1} | x_t, x0) to the model's
    p(x_{t-1} | x_t); for t = 0 the decoder's -log p(x0 | x_0). Gradients flow into
    the model's mean and, with learned_range, its variance.
    """
    p = diffusion.p_mean_variance(output, x_t, t)
    true_mean, _, true_log_variance = diffusion.q_posterior(x0, x_t, t)
    kl = mean_flat(normal_kl(true_mean, true_log_variance, p.mean, p.log_variance))
    decoder_nll = -mean_flat(decoder_log_likelihood(x0, p.mean, p.log_variance, levels))
    return torch.where(t == 0, decoder_nll, kl) / LN2


def check_levels(x0: torch.Tensor, levels: int | None, where: str = "nll") -> None:
    """ConfigError unless levels is None or an int >= 2 and x0 lies on its grid in [-1, 1]."""
    if levels is None:
        return
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
        raise ConfigError(f"{where}: levels must be an integer >= 2 (or None for continuous data), not {levels!r}")
    index = (x0.to(torch.float64) + 1) * (levels - 1) / 2
    off_grid = (index - index.round()).abs().max() if x0.numel() else 0.0
    if x0.numel() and (index.min() < -0.01 or index.max() > levels - 1 + 0.01 or off_grid > 0.01):
        raise ConfigError(
            f"{where}: the data are not on a grid of {levels} levels in [-1, 1] "
            f"(values from {float(x0.min()):.4g} to {float(x0.max()):.4g})",
            hint="scale discrete data to [-1, 1] with x = 2 k / (levels - 1) - 1, or pass levels=None for continuous data",
        )


# --- the full bound ----------------------------------------------------------------


@dataclass
class NLLTerms:
    """The variational bound of each example, in bits/dim, and its parts.

    total [B] = prior [B] + terms.sum(1); terms [B, T] holds L_t at index t,
    with terms[:, 0] the decoder term and terms[:, t >= 1] the KLs.
    """

    total: torch.Tensor
    prior: torch.Tensor
    terms: torch.Tensor


@torch.no_grad()
def nll_terms(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    diffusion: Diffusion,
    x0: torch.Tensor,
    levels: int | None = None,
    generator: torch.Generator | None = None,
    progress: Callable[[int, int], None] | None = None,
    labels: torch.Tensor | None = None,
) -> NLLTerms:
    """Every term of the variational bound for each example of x0, in bits/dim.

    One model call per step, T in all; each term draws its own x_t ~ q(x_t | x0),
    so `total` is an unbiased one-sample Monte-Carlo estimate of the bound per
    example (improved-diffusion's calc_bpd_loop). The network runs in x0's dtype;
    the terms are computed in float64. `levels` is the number of discrete values
    per dimension (the decoder integrates over bins of 2 / (levels - 1)); None
    means continuous data and a Gaussian density decoder. `progress(done, T)`
    is called after each step. With `labels` [B] the model is a conditional
    `model(x_t, t, y)` and the bound is of each example given its class,
    -log p(x0 | y).
    """
    check_levels(x0, levels)
    if labels is not None:
        from workbench.guidance import WithLabels

        model = WithLabels(model, labels.to(x0.device))
    batch, steps = len(x0), diffusion.num_timesteps
    x0_64 = x0.to(torch.float64)
    terms = torch.zeros(batch, steps, dtype=torch.float64, device=x0.device)
    for done, step in enumerate(reversed(range(steps)), start=1):
        t = torch.full((batch,), step, dtype=torch.long, device=x0.device)
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        x_t = diffusion.q_sample(x0, t, noise)
        output = model(x_t, t)
        terms[:, step] = bound_term(diffusion, output.to(torch.float64), x0_64, x_t.to(torch.float64), t, levels)
        if progress is not None:
            progress(done, steps)
    prior = prior_bpd(diffusion, x0_64)
    return NLLTerms(total=prior + terms.sum(dim=1), prior=prior, terms=terms)


def nll(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    diffusion: Diffusion,
    x0: torch.Tensor,
    levels: int | None = None,
    generator: torch.Generator | None = None,
    progress: Callable[[int, int], None] | None = None,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Negative log-likelihood bound of each example in bits/dim, [B] float64 (see `nll_terms`);
    with `labels`, of each example given its class (a conditional model)."""
    return nll_terms(model, diffusion, x0, levels=levels, generator=generator, progress=progress, labels=labels).total
