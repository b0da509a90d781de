"""Two-dimensional toy distributions, drawn inside the box [-1, 1]^2.

Each function draws `n` i.i.d. points [n, 2] (float32) from a named shape,
plus a class label per point where the shape has parts (which moon, which
circle, which Gaussian), with every random draw taken from `generator`.

How the data are kept inside [-1, 1]: every shape is drawn at a fixed scale
at which its noise-free form spans [-EXTENT, EXTENT] = [-0.8, 0.8] (the
checkerboard, which has no noise, fills the whole box). Gaussian noise of
std `noise`, in these same units, is then added, and a point that the noise
pushes outside the box is drawn again (rejection sampling). The data are
therefore exactly the noisy shape's distribution conditioned on the box: no
point lies outside, and there is no pile-up on the edges, which clamping
would create and a sampler that clips to [-1, 1] would then learn as real.
At the default noise levels about 1 point in 100 000 is drawn again. The
scale does not depend on `n`, so more points come from the same
distribution.

The shapes follow the usual toy sets of the diffusion and flow literature
(scikit-learn's make_swiss_roll, make_moons and make_circles; FFJORD's
eight Gaussians and checkerboard, Grathwohl et al. 2019).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from workbench.errors import ConfigError

EXTENT = 0.8
"""Half-width of every shape's noise-free form."""

Points = tuple[torch.Tensor, torch.Tensor | None]
"""(points [n, 2] float32, labels [n] int64 or None)."""

MAX_ROUNDS = 10_000


def swissroll(n: int, noise: float, generator: torch.Generator) -> Points:
    """The swiss roll in the x-z plane: (t cos t, t sin t), t uniform in [1.5 pi, 4.5 pi]."""
    t_max = 4.5 * math.pi  # t sin t peaks at t = 4.5 pi, where it equals t

    def draw(m: int) -> Points:
        t = 1.5 * math.pi * (1 + 2 * torch.rand(m, generator=generator))
        roll = torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=1) * (EXTENT / t_max)
        return _add_noise(roll, noise, generator), None

    return inside_box(draw, n, "swissroll")


def moons(n: int, noise: float, generator: torch.Generator) -> Points:
    """Two interleaving half circles; label 0 for the upper moon, 1 for the lower."""

    def draw(m: int) -> Points:
        label = torch.randint(0, 2, (m,), generator=generator)
        angle = math.pi * torch.rand(m, generator=generator)
        upper = torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
        lower = torch.stack([1 - torch.cos(angle), 0.5 - torch.sin(angle)], dim=1)
        moon = torch.where(label[:, None] == 0, upper, lower)
        # The pair spans [-1, 2] x [-0.5, 1]: centre it, then scale x to [-EXTENT, EXTENT].
        moon = (moon - torch.tensor([0.5, 0.25])) * (EXTENT / 1.5)
        return _add_noise(moon, noise, generator), label

    return inside_box(draw, n, "moons")


def eight_gaussians(n: int, noise: float, generator: torch.Generator) -> Points:
    """Eight equally weighted Gaussians (std `noise`) on a circle of radius EXTENT; label k at angle 2 pi k / 8."""

    def draw(m: int) -> Points:
        label = torch.randint(0, 8, (m,), generator=generator)
        angle = label * (2 * math.pi / 8)
        centres = EXTENT * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
        return _add_noise(centres, noise, generator), label

    return inside_box(draw, n, "eight_gaussians")


def circles(n: int, noise: float, factor: float, generator: torch.Generator) -> Points:
    """Two concentric circles, radii EXTENT and factor * EXTENT; label 0 outer, 1 inner."""

    def draw(m: int) -> Points:
        label = torch.randint(0, 2, (m,), generator=generator)
        angle = 2 * math.pi * torch.rand(m, generator=generator)
        radius = torch.where(label == 0, EXTENT, factor * EXTENT)
        ring = radius[:, None] * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
        return _add_noise(ring, noise, generator), label

    return inside_box(draw, n, "circles")


def checkerboard(n: int, cells: int, generator: torch.Generator) -> Points:
    """Uniform on the dark squares of a cells x cells board covering [-1, 1]^2 ((i, j) is dark when i + j is even)."""
    i, j = torch.meshgrid(torch.arange(cells), torch.arange(cells), indexing="ij")
    dark = torch.stack([i.flatten(), j.flatten()], dim=1)[(i + j).flatten() % 2 == 0]
    square = dark[torch.randint(0, len(dark), (n,), generator=generator)]
    within = torch.rand(n, 2, generator=generator)  # in [0, 1): never reaches the far edge
    return (-1 + (square + within) * (2 / cells)).float(), None


# --- helpers ------------------------------------------------------------------


def _add_noise(points: torch.Tensor, noise: float, generator: torch.Generator) -> torch.Tensor:
    return points + noise * torch.randn(points.shape, generator=generator)


def inside_box(draw: Callable[[int], Points], n: int, name: str) -> Points:
    """n points from `draw`, each point outside [-1, 1]^2 replaced by a fresh draw until none is.

    Every slot keeps drawing until it accepts a point, independently of the
    others, so the n points are i.i.d. from the distribution conditioned on the box.
    """
    points, labels = draw(n)
    for _ in range(MAX_ROUNDS):
        outside = (points.abs() > 1).any(dim=1).nonzero().squeeze(1)
        if len(outside) == 0:
            return points.float(), labels
        new_points, new_labels = draw(len(outside))
        points[outside] = new_points
        if labels is not None:
            labels[outside] = new_labels
    raise ConfigError(
        f"dataset '{name}': after {MAX_ROUNDS} rounds some points still fall outside [-1, 1]",
        hint="lower the `noise` option",
    )
