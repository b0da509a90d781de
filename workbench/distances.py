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


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """Squared Frechet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2).

        d^2 = |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2))

    (Dowson & Landau 1982; the FID of Heusel et al. 2017 is this between Gaussian
    fits of two feature sets.) sigma1 sigma2 is not symmetric, but it has the same
    eigenvalues as the symmetric positive semi-definite M = sigma1^(1/2) sigma2
    sigma1^(1/2) (AB and BA share eigenvalues, with A = sigma1^(1/2), B = A sigma2),
    so tr((sigma1 sigma2)^(1/2)) = sum_i sqrt(lambda_i(M)), and both square roots
    come from symmetric eigendecompositions in float64: no scipy.linalg.sqrtm, no
    complex parts to discard. Eigenvalues that rounding makes slightly negative
    (singular covariances, e.g. fewer samples than dimensions) are clamped to 0.
    """
    mu1, mu2 = mu1.to(torch.float64).flatten(), mu2.to(torch.float64).flatten()
    sigma1, sigma2 = _symmetric(sigma1), _symmetric(sigma2)
    d = len(mu1)
    if len(mu2) != d or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            f"frechet_distance: means of sizes {len(mu1)}, {len(mu2)} and covariances of shapes "
            f"{tuple(sigma1.shape)}, {tuple(sigma2.shape)} do not describe Gaussians of one dimension"
        )
    root1 = _psd_sqrt(sigma1)
    middle = _symmetric(root1 @ sigma2.to(root1.device) @ root1)
    trace_sqrt = torch.linalg.eigvalsh(middle).clamp(min=0).sqrt().sum()
    mean_term = ((mu1 - mu2.to(mu1.device)) ** 2).sum()
    value = mean_term + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt
    return max(float(value), 0.0)  # d^2 >= 0; rounding can leave -1e-12


def _symmetric(matrix: torch.Tensor) -> torch.Tensor:
    """(A + A^T) / 2 in float64: removes the asymmetry that rounding leaves in a covariance."""
    matrix = matrix.to(torch.float64)
    return (matrix + matrix.T) / 2


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """The symmetric square root of a symmetric positive semi-definite matrix, V diag(sqrt(w)) V^T."""
    eigenvalues, eigenvectors = torch.linalg.eigh(matrix)
    return (eigenvectors * eigenvalues.clamp(min=0).sqrt()) @ eigenvectors.T
