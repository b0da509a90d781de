"""Schedules written out from the papers, independently of plugins/schedulers.py.

Tests of the diffusion math build their processes from these, so that a bug
in the shipped schedules cannot hide itself in a test's expectations.
"""

from __future__ import annotations

import math

import torch


def linear_betas(T: int) -> torch.Tensor:
    """DDPM's linear schedule, 1e-4 to 0.02 at T = 1000, both scaled by 1000/T (Nichol & Dhariwal 2021)."""
    scale = 1000 / T
    return torch.linspace(scale * 1e-4, scale * 0.02, T, dtype=torch.float64)


def cosine_betas(T: int) -> torch.Tensor:
    """Nichol & Dhariwal's cosine schedule (eq. 17), betas clipped at 0.999."""
    steps = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((steps + 0.008) / 1.008 * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=0.999)


def abar_of(betas: torch.Tensor) -> torch.Tensor:
    """abar[t] = prod_{s <= t} (1 - beta_s), as a plain loop in float64."""
    out, running = [], 1.0
    for beta in betas.tolist():
        running *= 1.0 - beta
        out.append(running)
    return torch.tensor(out, dtype=torch.float64)
