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


def precision_recall(
    real: torch.Tensor,
    fake: torch.Tensor,
    k: int = 3,
    batch_size: int = 1024,
) -> tuple[float, float]:
    """Improved precision and recall of generated samples `fake` [M, ...] against real ones `real` [N, ...].

    Kynkäänniemi, Karras, Laine, Lehtinen & Aila 2019, "Improved Precision and Recall Metric
    for Assessing Generative Models", Section 2. Each set estimates its manifold as the union
    of balls around its points, each ball reaching that point's k-th nearest neighbour within
    the same set (the point itself not counted):

        f(phi, Phi) = 1  if ||phi - phi'|| <= ||phi' - NN_k(phi')|| for at least one phi' in Phi,
                      0  otherwise                                                   (Eq. 1)

        precision = 1/M sum_{phi_g in fake} f(phi_g, real)
        recall    = 1/N sum_{phi_r in real} f(phi_r, fake)                           (Eq. 2)

    Precision is the fraction of generated samples that land on the real manifold (quality);
    recall the fraction of real points that the generated manifold covers (diversity). The
    definition is symmetric: precision_recall(a, b) == precision_recall(b, a)[::-1]. The paper
    uses k = 3 and equal numbers of real and generated samples; the values depend on k and on
    both set sizes, so compare figures only at the same k and sizes. Returns (precision, recall).

    Numerics: distances are squared Euclidean distances in float64, from the Gram expansion
    |a|^2 + |b|^2 - 2 a.b after both sets are centred on the real set's mean (which keeps the
    cancellation small), computed for `batch_size` rows at a time, so that only
    [batch_size, max(N, M)] distances are ever held (10 000 against 10 000 points never holds the
    full matrix). Their rounding error, about 1e-16 x D of the squared norms, only matters for
    a point lying exactly on a ball's surface (or a ball of radius 0, around a point with k exact
    duplicates in its own set), which may then count either way.
    """
    real = real.reshape(len(real), -1).to(torch.float64)
    fake = fake.reshape(len(fake), -1).to(torch.float64)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"sample sets have different dimensions: {real.shape[1]} and {fake.shape[1]}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    for name, points in (("real", real), ("fake", fake)):
        if len(points) <= k:
            raise ValueError(
                f"precision_recall: the {name} set has {len(points)} points; the k-th nearest neighbour "
                f"(k = {k}) of each point among the others needs at least {k + 1}"
            )
    fake = fake.to(real.device)
    centre = real.mean(dim=0)
    real, fake = real - centre, fake - centre
    real_radii = _knn_radii_squared(real, k, batch_size)
    fake_radii = _knn_radii_squared(fake, k, batch_size)
    precision = _fraction_inside(fake, real, real_radii, batch_size)
    recall = _fraction_inside(real, fake, fake_radii, batch_size)
    return precision, recall


def _squared_distances(a: torch.Tensor, b: torch.Tensor, b_norms: torch.Tensor) -> torch.Tensor:
    """[len(a), len(b)] squared Euclidean distances, clamped at 0 (rounding can leave -1e-16)."""
    a_norms = (a * a).sum(dim=1)
    return torch.addmm(b_norms[None, :], a, b.T, alpha=-2).add_(a_norms[:, None]).clamp_(min=0)


def _knn_radii_squared(points: torch.Tensor, k: int, batch_size: int) -> torch.Tensor:
    """The squared distance from each point to its k-th nearest neighbour among the others."""
    norms = (points * points).sum(dim=1)
    radii = torch.empty(len(points), dtype=points.dtype, device=points.device)
    for start in range(0, len(points), batch_size):
        rows = points[start : start + batch_size]
        d2 = _squared_distances(rows, points, norms)
        index = torch.arange(len(rows), device=points.device)
        d2[index, start + index] = float("inf")  # a point is not its own neighbour
        radii[start : start + len(rows)] = d2.kthvalue(k, dim=1).values
    return radii


def _fraction_inside(queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, batch_size: int) -> float:
    """The fraction of `queries` within at least one ball (centres, squared radii): Eq. 1 averaged."""
    norms = (centres * centres).sum(dim=1)
    inside = 0
    for start in range(0, len(queries), batch_size):
        d2 = _squared_distances(queries[start : start + batch_size], centres, norms)
        inside += int((d2 <= radii[None, :]).any(dim=1).sum())
    return inside / len(queries)
