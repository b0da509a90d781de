"""Built-in noise schedules: betas for T steps.

A schedule only says how much noise each step adds; how a chain is walked
back is a sampler's job. Each `betas()` returns float64, since the
cumulative products over 1000+ steps lose precision in float32.

Conventions (DESIGN.md): t runs 0..T-1 and abar = cumprod(1 - betas).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from pydantic import Field, model_validator

from workbench import Scheduler, hookimpl

if TYPE_CHECKING:
    import torch


def _linspace(start: float, end: float, steps: int) -> torch.Tensor:
    import torch

    return torch.linspace(start, end, steps, dtype=torch.float64)


class _Ranged(Scheduler):
    """Shared options of schedules that run from beta_start to beta_end."""

    beta_start: float = Field(1e-4, gt=0, lt=1, description="beta at the first step")
    beta_end: float = Field(0.02, gt=0, lt=1, description="beta at the last step")
    scale_with_timesteps: bool = Field(
        True, description="multiply both ends by 1000/T, so any T walks the same noise levels"
    )

    @model_validator(mode="after")
    def _betas_below_one(self) -> _Ranged:
        start, end = self.beta_range()
        if max(start, end) >= 1:
            raise ValueError(
                f"with timesteps={self.timesteps} the scaled betas reach {max(start, end):.3g} >= 1; "
                "use more timesteps or scale_with_timesteps = false"
            )
        return self

    def beta_range(self) -> tuple[float, float]:
        scale = 1000 / self.timesteps if self.scale_with_timesteps else 1.0
        return scale * self.beta_start, scale * self.beta_end


class Linear(_Ranged):
    """Betas rising linearly, 1e-4 to 0.02 at T = 1000 (Ho et al. 2020)."""

    name = "linear"

    def betas(self) -> torch.Tensor:
        return _linspace(*self.beta_range(), self.timesteps)


class Quadratic(_Ranged):
    """Betas from 1e-4 to 0.02 at T = 1000 with sqrt(beta) rising linearly (a slower start than linear)."""

    name = "quadratic"

    def betas(self) -> torch.Tensor:
        start, end = self.beta_range()
        return _linspace(math.sqrt(start), math.sqrt(end), self.timesteps) ** 2


class ScaledLinear(_Ranged):
    """Betas from 0.00085 to 0.012 with sqrt(beta) rising linearly (Stable Diffusion's schedule)."""

    name = "scaled_linear"

    beta_start: float = Field(0.00085, gt=0, lt=1, description="beta at the first step")
    beta_end: float = Field(0.012, gt=0, lt=1, description="beta at the last step")
    scale_with_timesteps: bool = Field(False, description="multiply both ends by 1000/T")

    def betas(self) -> torch.Tensor:
        start, end = self.beta_range()
        return _linspace(math.sqrt(start), math.sqrt(end), self.timesteps) ** 2


class Sigmoid(_Ranged):
    """Betas following a sigmoid over [-6, 6] between beta_start and beta_end (GeoDiff, Xu et al. 2022)."""

    name = "sigmoid"

    def betas(self) -> torch.Tensor:
        start, end = self.beta_range()
        return _linspace(-6.0, 6.0, self.timesteps).sigmoid() * (end - start) + start


class Cosine(Scheduler):
    """abar(t) = cos^2(((t/T + s)/(1 + s)) pi/2): flat near both ends, near-linear between (Nichol & Dhariwal 2021, eq. 17)."""

    name = "cosine"

    s: float = Field(0.008, ge=0, description="offset that keeps beta small near t = 0")
    max_beta: float = Field(0.999, gt=0, le=0.999, description="clip on each beta, avoiding a singularity at t = T")

    def betas(self) -> torch.Tensor:
        import torch

        T = self.timesteps
        steps = torch.arange(T + 1, dtype=torch.float64) / T
        f = torch.cos((steps + self.s) / (1 + self.s) * math.pi / 2) ** 2
        return (1 - f[1:] / f[:-1]).clamp(max=self.max_beta)


@hookimpl
def register_schedulers(register):
    for cls in (Linear, Cosine, Sigmoid, ScaledLinear, Quadratic):
        register(cls)
