"""Euler steps of the probability-flow ODE (Karras et al. 2022's "Euler" sampler), as a workbench plugin.

In the variables x~ = x_t / alpha_t and s_t = sigma_t / alpha_t (alpha_t = sqrt(abar_t),
sigma_t = sqrt(1 - abar_t)) the probability-flow ODE is dx~/ds = eps(x_t, t) (Karras et al. 2022,
eq. 4 with s(t) = 1/alpha_t). One Euler step from s_t to the next grid point s_n:

    x~_n = x~_t + (s_n - s_t) eps

and the last step goes to s = 0, where x~ is the model's x0. This is DDIM with eta = 0 written in
other variables (Song et al. 2021, sec. 4.3), which this package's tests check, together with
workbench.testing's contract of every sampler.
"""

from __future__ import annotations

import math

from pydantic import Field

import workbench as wb
from workbench.components import Spacing


class Euler(wb.ChainSampler):
    """Euler steps of the probability-flow ODE in sigma/alpha (deterministic; DDIM eta = 0 in other variables)."""

    name = "euler"

    steps: int = Field(50, ge=1, description="number of model evaluations")
    spacing: Spacing = Field("logsnr", description="which steps the chain visits (see `wb list sampler ddim`)")

    def timesteps(self, diffusion):
        return self.grid(diffusion, self.steps, self.spacing)

    def walk(self, walk, grid):
        abar = walk.diffusion.alphas_cumprod[grid].tolist()
        s = [math.sqrt((1 - a) / a) for a in abar] + [0.0]
        x = walk.start()
        for i, t in enumerate(grid):
            _, eps = walk.denoise(x, t, self.clip_denoised)
            scaled = x / math.sqrt(abar[i]) + (s[i + 1] - s[i]) * eps        # x~ at the next grid point
            x = scaled * (1 / math.sqrt(1 + s[i + 1] ** 2))                  # back to x_t: alpha = 1/sqrt(1 + s^2)
            walk.visit(x)
        return x


@wb.hookimpl
def register_samplers(register):
    register(Euler)
