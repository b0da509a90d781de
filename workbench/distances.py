"""Distances between sets of samples, used by metrics, tests and benchmarks."""

from __future__ import annotations

import torch


def sliced_wasserstein(
    a: torch.Tensor,
    b: torch.Tensor,
    projections: int = 256,
    generator: torch.Generator | None = None,
) -> float:
    """Sliced 2-Wasserstein distance between two sample sets [N, ...] and [M, ...].

    SW_2(a, b) = sqrt(E_theta W_2^2(theta . a, theta . b)) over random unit
    directions theta (Rabin et al. 2011). Each 1-D W_2 compares quantiles on a
    common grid, so the two sets may have different sizes.
    """
    a = a.reshape(len(a), -1).to(torch.float64)
    b = b.reshape(len(b), -1).to(torch.float64)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"sample sets have different dimensions: {a.shape[1]} and {b.shape[1]}")
    theta = torch.randn(a.shape[1], projections, generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    pa, pb = (a @ theta.to(a.device)).sort(dim=0).values, (b @ theta.to(b.device)).sort(dim=0).values
    if len(pa) != len(pb):
        n = min(len(pa), len(pb))
        q = (torch.arange(n, dtype=torch.float64, device=a.device) + 0.5) / n
        pa, pb = _quantiles(pa, q), _quantiles(pb, q)
    return float(((pa - pb) ** 2).mean().sqrt())


def _quantiles(sorted_values: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Linear-interpolated quantiles of each column of already-sorted values."""
    n = len(sorted_values)
    pos = q * n - 0.5
    lo = pos.floor().clamp(0, n - 1).long()
    hi = (lo + 1).clamp(max=n - 1)
    frac = (pos - lo).clamp(0, 1)[:, None]
    return sorted_values[lo] * (1 - frac) + sorted_values[hi] * frac
