"""The plugin's own suite: workbench.testing's sampler contract (one test per check), plus its own identity."""

from __future__ import annotations

import torch

import workbench as wb
from workbench.exact import GaussianMixtureDenoiser, circle_means
from workbench.testing import parametrize_with_checks
from workbench_euler import Euler


@parametrize_with_checks("sampler", Euler)
def test_euler_meets_the_sampler_contract(check):
    check()  # fails with the figure and the limit of the check that did not hold


def test_euler_is_ddim_with_eta_zero():
    """Euler in sigma/alpha and DDIM (eta = 0) are one update (Song et al. 2021, sec. 4.3)."""
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    diffusion = wb.Diffusion(betas, "eps", "fixed_small")
    model = GaussianMixtureDenoiser(diffusion, circle_means(), stds=0.05)
    x_euler = Euler(steps=12).sample(model, diffusion, (256, 2), generator=torch.Generator().manual_seed(0))
    ddim = wb.build("sampler", "ddim", steps=12, eta=0.0)
    x_ddim = ddim.sample(model, diffusion, (256, 2), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(x_euler, x_ddim, rtol=1e-5, atol=1e-5)
