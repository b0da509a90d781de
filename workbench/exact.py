"""Exact denoisers of known distributions: ground truth for samplers and likelihoods.

For data from a mixture of isotropic Gaussians, p(x0) = sum_k w_k N(mu_k, s_k^2 I),
the noised marginal is again a mixture: p(x_t) = sum_k w_k N(a mu_k, (a^2 s_k^2 + sigma^2) I)
with a = sqrt(abar_t) and sigma^2 = 1 - abar_t. Its score is known in closed form,
so the optimal noise predictor is eps*(x_t, t) = -sigma * grad log p(x_t), and
E[x0 | x_t] is the responsibility-weighted mean of each component's posterior.
With s_k = 0 the data are K points: a discrete distribution of entropy log K
(when the weights are uniform).

A model trained to optimality with L_simple converges to exactly this
function, so a sampler or `nll` driven by it must reproduce the data.
"""

from __future__ import annotations

import math

import torch

from workbench.diffusion import Diffusion


class GaussianMixtureDenoiser:
    """`model(x_t, t)` returning the optimal eps, x0 or v prediction for a Gaussian mixture.

    means: [K, *shape]; stds: scalar or [K] (0 gives point masses); weights: [K] (uniform if None).

    It is also the exact class-conditional denoiser with the components as classes:
    `model(x_t, t, y)` with y [B] in 0..K is component y's own denoiser for y < K and
    the whole mixture's for y = K ("no label"), what a conditional network trained
    with label dropout converges to.
    """

    def __init__(
        self,
        diffusion: Diffusion,
        means: torch.Tensor,
        stds: float | torch.Tensor = 0.0,
        weights: torch.Tensor | None = None,
    ) -> None:
        if diffusion.learns_variance:
            raise ValueError("the exact denoiser predicts a mean only; use a fixed variance")
        self.diffusion = diffusion
        self.shape = tuple(means.shape[1:])
        self.means = means.reshape(len(means), -1).to(torch.float64)
        k = len(self.means)
        self.vars = torch.as_tensor(stds, dtype=torch.float64).expand(k) ** 2
        w = torch.full((k,), 1.0 / k, dtype=torch.float64) if weights is None else weights.to(torch.float64)
        self.log_weights = (w / w.sum()).log()
        self.evaluations = 0

    @property
    def num_classes(self) -> int:
        """K, the number of components (the classes of the conditional denoiser)."""
        return len(self.means)

    def sample_data(
        self, n: int, generator: torch.Generator | None = None, component: int | None = None
    ) -> torch.Tensor:
        """n fresh draws from the mixture (or from one component), [n, *shape] float32."""
        if component is None:
            k = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=generator)
        else:
            k = torch.full((n,), component, dtype=torch.long)
        noise = torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64)
        x = self.means[k] + self.vars[k].sqrt()[:, None] * noise
        return x.reshape(n, *self.shape).float()

    def posterior_mean(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """E[x0 | x_t] in float64, [B, D]; with labels y [B], E[x0 | x_t, k = y] where y < K (y = K: the mixture)."""
        x = x_t.reshape(len(x_t), -1).to(torch.float64)
        abar = self.diffusion.alphas_cumprod.to(x.device)[t][:, None]          # [B, 1]
        a, sigma2 = abar.sqrt(), 1.0 - abar
        means, vars_ = self.means.to(x.device), self.vars.to(x.device)
        total_var = a**2 * vars_[None, :] + sigma2                                # [B, K]
        dist2 = ((x[:, None, :] - a[:, :, None] * means[None]) ** 2).sum(-1)       # [B, K]
        d = x.shape[1]
        log_resp = self.log_weights.to(x.device) - 0.5 * dist2 / total_var - 0.5 * d * total_var.log()
        if y is not None:  # condition on the component: every other one's responsibility is 0
            y = y.to(x.device)
            k = torch.arange(len(means), device=x.device)
            other = (k[None, :] != y[:, None]) & (y[:, None] < len(means))
            log_resp = log_resp.masked_fill(other, -math.inf)
        resp = torch.softmax(log_resp, dim=1)                                     # [B, K]
        gain = (a * vars_[None, :] / total_var)[:, :, None]                       # [B, K, 1]
        component_x0 = means[None] + gain * (x[:, None, :] - a[:, :, None] * means[None])
        return (resp[:, :, None] * component_x0).sum(1)

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        self.evaluations += 1
        x0 = self.posterior_mean(x_t, t, y).reshape(x_t.shape)
        x = x_t.to(torch.float64)
        d = self.diffusion
        if d.prediction == "x0":
            out = x0
        else:
            eps = d.predict_eps_from_x0(x, t, x0)
            out = eps if d.prediction == "eps" else d.v_target(x0, eps, t)
        return out.to(x_t.dtype)


def circle_means(k: int = 8, radius: float = 0.7) -> torch.Tensor:
    """k points evenly spaced on a circle [k, 2] (float64): the modes of the 8-Gaussian test problem."""
    angle = torch.arange(k, dtype=torch.float64) * 2 * math.pi / k
    return radius * torch.stack([angle.cos(), angle.sin()], dim=1)


def entropy_bits(weights: torch.Tensor | None, k: int) -> float:
    """Entropy in bits of a discrete distribution over k points (uniform if weights is None)."""
    if weights is None:
        return math.log2(k)
    p = weights.to(torch.float64) / weights.sum()
    return float(-(p * p.log2()).sum())
