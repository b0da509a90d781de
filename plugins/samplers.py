"""Built-in samplers: `ddpm` (ancestral), `ddim` (eta, few steps), `dpm_solver` (DPM-Solver++, 10-20 steps).

A sampler walks the chain back from x_T ~ N(0, I) to x0 with a trained model;
the noise schedule itself is the scheduler's. Each class here holds only its
update rule; drawing x_T, calling the model with the original step indices,
reading its output (eps, x0 or v; learned variance), progress and the
trajectory are shared in `workbench.sampling.Walk`, and the call itself in
`workbench.chain.ChainSampler`, the public base that plugin authors use too.

Notation: step indices t are the process's own (0..T-1, t = 0 least noisy);
abar_t = cumprod(1 - beta); alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t)
(the DDIM / DPM-Solver papers' notation); lambda_t = log(alpha_t / sigma_t).
Per-step coefficients are computed in float64 before the loop and enter it as
Python floats.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from pydantic import Field

from workbench import hookimpl
from workbench.chain import SPACING_HELP, ChainSampler
from workbench.components import Spacing

if TYPE_CHECKING:
    import torch

    from workbench.diffusion import Diffusion
    from workbench.sampling import Walk


class DDPM(ChainSampler):
    """Ancestral sampling (Ho et al. 2020): one stochastic step of p(x_{t-1} | x_t) per model call."""

    name = "ddpm"

    steps: int | None = Field(
        None,
        ge=1,
        description="walk this many evenly spaced steps, T-1 down to 0 (respacing, Nichol & Dhariwal 2021); None: all T",
    )

    def timesteps(self, diffusion: Diffusion) -> list[int]:
        if self.steps is None:
            return list(range(diffusion.num_timesteps - 1, -1, -1))
        return self.grid(diffusion, self.steps, "linspace")

    def walk(self, walk: Walk, grid: list[int]) -> torch.Tensor:
        """x_{t-1} = mean + sigma_t z, z ~ N(0, I), with no noise at the last step (DDPM Algorithm 2).

        On a subset of the steps the chain is that of the respaced process
        (same abar at the kept steps, improved DDPM sec. 4), whose betas and
        variances (fixed_small, fixed_large or learned_range) apply; the model
        still gets the original t.
        """
        diffusion = walk.diffusion
        if len(grid) < diffusion.num_timesteps:
            diffusion, _ = diffusion.respace(grid)
        x = walk.start()
        last = len(grid) - 1
        for i, t in enumerate(grid):
            t_chain = walk.step_index(last - i)  # the step's index in the (respaced) chain
            p = diffusion.p_mean_variance(walk.evaluate(x, t), x, t_chain, clip_denoised=self.clip_denoised)
            x = p.mean if i == last else p.mean + p.variance.sqrt() * walk.noise()
            walk.visit(x)
        return x


class DDIM(ChainSampler):
    """DDIM (Song et al. 2021): deterministic at eta = 0, DDPM-like at eta = 1; 50 steps by default.

    The default grid is evenly spaced in logSNR, not the paper's evenly spaced t
    (spacing = "leading" gives that, as diffusers does): 50 steps evenly spaced in t
    end with one long jump to t = 0 that strands samples between the modes of a fine
    mixture, where logSNR steps end with small ones (benchmarks/samplers.py measures
    both; benchmarks/RESULTS.md has the figures).
    """

    name = "ddim"

    steps: int = Field(50, ge=1, description="number of model evaluations (steps of the shortened chain)")
    eta: float = Field(
        0.0, ge=0, le=1, description="noise scale: 0 deterministic (the probability-flow path), 1 the DDPM posterior's"
    )
    spacing: Spacing = Field("logsnr", description=SPACING_HELP)

    def timesteps(self, diffusion: Diffusion) -> list[int]:
        return self.grid(diffusion, self.steps, self.spacing)

    def walk(self, walk: Walk, grid: list[int]) -> torch.Tensor:
        """Song et al. 2021, eq. 12, from step t to the next grid step s (abar_s = 1 after the last):

            x_s = sqrt(abar_s) x0 + sqrt(1 - abar_s - sigma^2) eps + sigma z,
            sigma = eta sqrt((1 - abar_s) / (1 - abar_t)) sqrt(1 - abar_t / abar_s)   (eq. 16).
        """
        abar = walk.diffusion.alphas_cumprod[grid].tolist() + [1.0]
        x = walk.start()
        for i, t in enumerate(grid):
            a_t, a_s = abar[i], abar[i + 1]
            sigma = self.eta * math.sqrt((1 - a_s) / (1 - a_t) * (1 - a_t / a_s))
            x0, eps = walk.denoise(x, t, self.clip_denoised)
            x = math.sqrt(a_s) * x0 + math.sqrt(max(1 - a_s - sigma**2, 0.0)) * eps
            if sigma > 0:
                x = x + sigma * walk.noise()
            walk.visit(x)
        return x


class DPMSolver(ChainSampler):
    """DPM-Solver++ multistep (Lu et al. 2022): a 3rd-order ODE solver on the x0 prediction, 20 model calls.

    The defaults were chosen by measurement (benchmarks/samplers.py, with an exact
    denoiser; the figures are in benchmarks/RESULTS.md): steps evenly spaced in logSNR
    with the last call at t = 0, then x0 from that call. At 20 calls the third-order
    solver (3M, the order diffusers recommends for unconditional sampling) reaches the
    quality of 1000-step DDPM, where second order (2M) needs more calls. Steps evenly
    spaced in t (diffusers' default) make the last call far from t = 0, where the modes
    are still blurred. On grids of fewer than 15 steps the order is capped at 2:
    extrapolating a quadratic over such long log-SNR steps is unstable.
    """

    name = "dpm_solver"

    steps: int = Field(20, ge=1, description="number of model evaluations")
    order: int = Field(
        3, ge=1, le=3,
        description="3: DPM-Solver++(3M) (2M on grids under 15 steps); 2: 2M; 1: first order (DDIM's path, eta = 0)",
    )
    spacing: Spacing = Field("logsnr", description=SPACING_HELP)

    def timesteps(self, diffusion: Diffusion) -> list[int]:
        return self.grid(diffusion, self.steps, self.spacing)

    def walk(self, walk: Walk, grid: list[int]) -> torch.Tensor:
        """DPM-Solver++ multistep (Lu et al. 2022, Algorithm 2 and its 3rd-order form) on the steps of `grid`.

        The model is called at grid steps t_0 > ... > t_{M-1}, each call giving x0_i;
        then x goes to t_M, noise-free data (sigma = 0, lambda = +inf). Step i, from
        t_i to t_{i+1}, with h = lambda_{t_{i+1}} - lambda_{t_i}, uses as many past
        x0 as the order allows (1 at the first step, 2 at the second):

            x_{t_{i+1}} = (sigma_{t_{i+1}} / sigma_{t_i}) x_{t_i} + alpha_{t_{i+1}} (w_0 x0_i + w_1 x0_{i-1} + w_2 x0_{i-2})

        with the weights of `multistep_weights`. The last step is first order to
        sigma = 0, which is exactly x0_{M-1} ("lower_order_final" and "denoise to x0"
        in one: h is infinite there).

        The reference code interpolates log alpha piecewise-linearly in continuous
        time; at the integer steps this grid is made of, that interpolation is the
        discrete table itself, so alpha, sigma and lambda come straight from abar
        and the model always gets an integer t.
        """
        abar = walk.diffusion.alphas_cumprod[grid].tolist()
        alpha = [math.sqrt(a) for a in abar]
        sigma = [math.sqrt(1 - a) for a in abar]
        lam = [math.log(a) - math.log(s) for a, s in zip(alpha, sigma)]
        order = self.order if len(grid) >= 15 else min(self.order, 2)
        h = [lam[i + 1] - lam[i] for i in range(len(grid) - 1)]
        x = walk.start()
        history: list[torch.Tensor] = []  # x0_i, x0_{i-1}, x0_{i-2}
        for i, t in enumerate(grid):
            x0, _ = walk.denoise(x, t, self.clip_denoised, with_eps=False)
            history = [x0, *history[: order - 1]]
            if i == len(grid) - 1:
                x = x0
            else:
                weights = multistep_weights(h[i], h[i - len(history) + 1 : i][::-1])
                x = (sigma[i + 1] / sigma[i]) * x + alpha[i + 1] * sum(w * m for w, m in zip(weights, history))
            walk.visit(x)
        return x


def multistep_weights(h: float, previous: list[float]) -> list[float]:
    """Weights of x0_i, x0_{i-1}, ... in one DPM-Solver++ multistep update, for step size `h` in lambda
    and the previous steps' sizes (newest first): none for 1st order, one for 2nd, two for 3rd.

    With phi = e^{-h} - 1, r_k = h_{i-k} / h and the divided differences
    D1_0 = (x0_i - x0_{i-1}) / r_1, D1_1 = (x0_{i-1} - x0_{i-2}) / r_2, the update adds to the
    scaled x (Lu et al. 2022, Algorithm 2; diffusers' `multistep_dpm_solver_*_order_update`):

        1st order:  -phi x0_i
        2nd order:  -phi x0_i - phi/2 D1_0                                     (the "midpoint" form)
        3rd order:  -phi x0_i + (phi/h + 1) D1 - ((phi + h)/h^2 - 1/2) D2,
                    D1 = D1_0 + r_1/(r_1 + r_2) (D1_0 - D1_1),  D2 = (D1_0 - D1_1) / (r_1 + r_2)
    """
    phi = math.expm1(-h)  # exact for small h too
    if not previous:
        return [-phi]
    r1 = previous[0] / h
    if len(previous) == 1:
        return [-phi - 0.5 * phi / r1, 0.5 * phi / r1]
    r2 = previous[1] / h
    c1, c2 = phi / h + 1, -((phi + h) / h**2 - 0.5)
    # The update as a * D1_0 + b * D1_1, then D1_0 and D1_1 written out in the x0s.
    a = c1 * (1 + r1 / (r1 + r2)) + c2 / (r1 + r2)
    b = -c1 * r1 / (r1 + r2) - c2 / (r1 + r2)
    return [-phi + a / r1, -a / r1 + b / r2, -b / r2]


@hookimpl
def register_samplers(register):
    for cls in (DDPM, DDIM, DPMSolver):
        register(cls)
