"""workbench.distances.precision_recall: improved precision and recall (Kynkäänniemi et al. 2019).

Checked against ground truth: sets whose answer is known exactly (identical, far apart,
small configurations worked out by hand below), a generator that covers half the modes of a
mixture, the symmetry of the definition, and a brute-force evaluation of Eq. 1 and 2.
"""

from __future__ import annotations

import math

import pytest
import torch

from workbench.distances import precision_recall


def mixture(modes, per_mode: int, generator: torch.Generator) -> torch.Tensor:
    """`per_mode` points of each listed mode of 8 unit Gaussians on a circle of radius 10.

    Neighbouring centres are 2 * 10 * sin(pi / 8) = 7.65 apart, 7.65 standard deviations: no
    ball of one mode (radii a fraction of a standard deviation) reaches another mode's points.
    """
    angles = torch.tensor(list(modes), dtype=torch.float64) * (2 * math.pi / 8)
    centres = 10 * torch.stack([angles.cos(), angles.sin()], dim=1)
    noise = torch.randn(len(centres) * per_mode, 2, generator=generator, dtype=torch.float64)
    return centres.repeat_interleave(per_mode, dim=0) + noise


def brute_force(real: torch.Tensor, fake: torch.Tensor, k: int) -> tuple[float, float]:
    """Eq. 1 and 2 written out with the full distance matrices (fine for a few hundred points)."""

    def radii(points):
        d = torch.cdist(points, points, compute_mode="donot_use_mm_for_euclid_dist")
        return d.sort(dim=1).values[:, k]  # column 0 is the point itself, at distance 0

    def inside(queries, centres):
        d = torch.cdist(queries, centres, compute_mode="donot_use_mm_for_euclid_dist")
        return (d <= radii(centres)[None, :]).any(dim=1).double().mean().item()

    real, fake = real.double(), fake.double()
    return inside(fake, real), inside(real, fake)


# --- sets whose answer is known exactly -----------------------------------------------


def test_identical_sets_score_one_and_one():
    x = torch.randn(500, 2, generator=torch.Generator().manual_seed(0))
    assert precision_recall(x, x) == (1.0, 1.0)
    assert precision_recall(x, x.clone(), k=1) == (1.0, 1.0)


def test_far_apart_sets_score_zero_and_zero():
    generator = torch.Generator().manual_seed(0)
    real = torch.randn(300, 2, generator=generator)
    fake = torch.randn(200, 2, generator=generator) + torch.tensor([100.0, 0.0])
    # Every ball has a radius of a few units at most; the sets are ~100 apart.
    assert precision_recall(real, fake) == (0.0, 0.0)


# Worked by hand, on a line (D = 1): real = {0, 1, 2, 10}, fake = {0.5, 0.9, 1.6, 20, 20.3}.
#
# k = 1. Real radii (nearest other real point): 0 -> 1, 1 -> 1, 2 -> 1, 10 -> 8.
#   Real balls [-1, 1], [0, 2], [1, 3], [2, 18].
#   Fake inside: 0.5 yes, 0.9 yes, 1.6 yes, 20 no (> 18), 20.3 no.     precision = 3/5
#   Fake radii: 0.5 -> 0.4 (0.9), 0.9 -> 0.4 (0.5), 1.6 -> 0.7 (0.9), 20 -> 0.3, 20.3 -> 0.3.
#   Fake balls [0.1, 0.9], [0.5, 1.3], [0.9, 2.3], [19.7, 20.3], [20, 20.6].
#   Real inside: 0 no (< 0.1), 1 yes, 2 yes, 10 no.                      recall = 2/4
#
# k = 2. Real radii (2nd nearest): 0 -> 2 (1, 2), 1 -> 1 (1, 1), 2 -> 2 (1, 2), 10 -> 9 (8, 9).
#   Real balls [-2, 2], [0, 2], [0, 4], [1, 19]: the isolated 10 gets a wide ball.
#   Fake inside: 0.5, 0.9, 1.6 yes; 20 and 20.3 no (> 19).             precision = 3/5
#   Fake radii: 0.5 -> 1.1 (0.4, 1.1), 0.9 -> 0.7 (0.4, 0.7), 1.6 -> 1.1 (0.7, 1.1),
#   20 -> 18.4 (0.3, 18.4), 20.3 -> 18.7 (0.3, 18.7): the far pair's balls reach back to 1.6.
#   Real inside: 0 yes ([-0.6, 1.6]), 1 yes, 2 yes, 10 yes ([1.6, 38.4]).  recall = 4/4
#
# No point lies within 0.1 of a ball's surface, so rounding cannot move any of these.
HAND_REAL = [0.0, 1.0, 2.0, 10.0]
HAND_FAKE = [0.5, 0.9, 1.6, 20.0, 20.3]


@pytest.mark.parametrize("k, expected", [(1, (3 / 5, 2 / 4)), (2, (3 / 5, 4 / 4))])
def test_a_configuration_worked_by_hand(k, expected):
    real = torch.tensor(HAND_REAL)[:, None]
    fake = torch.tensor(HAND_FAKE)[:, None]
    assert precision_recall(real, fake, k=k) == pytest.approx(expected, abs=1e-12)
    # The same points anywhere in a higher-dimensional space: only distances matter.
    rotation = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(0)))[0]
    direction = rotation[:, :1].T  # a unit vector in R^3
    offset = torch.tensor([5.0, -3.0, 2.0])
    assert precision_recall(real * direction + offset, fake * direction + offset, k=k) == pytest.approx(
        expected, abs=1e-12
    )


def test_a_square_worked_by_hand():
    # k = 3 (the default). Real: the corners of the unit square; each corner's neighbours are at
    # 1, 1 and sqrt(2), so every real ball has radius sqrt(2) = 1.414.
    real = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # (0.5, 0.5): 0.71 from every corner, inside. (2.2, 0.5): sqrt(1.2^2 + 0.5^2) = 1.3 from (1, 0)
    # and (1, 1), inside. (2.5, 0.5): 1.58 from the nearest corners, outside. (0.5, -1.5): 1.58 from
    # (0, 0) and (1, 0), outside. Precision 2/4.
    fake = torch.tensor([[0.5, 0.5], [2.2, 0.5], [2.5, 0.5], [0.5, -1.5]])
    # Fake radii (3rd nearest of the other three): (0.5, 0.5): 1.7, 2.0, 2.0 -> 2.0;
    # (2.2, 0.5): 0.3, 1.7, 2.62 -> 2.62; (2.5, 0.5): 0.3, 2.0, 2.83 -> 2.83;
    # (0.5, -1.5): 2.0, 2.62, 2.83 -> 2.83. The ball of (0.5, 0.5) alone (radius 2, distance 0.71)
    # holds every corner: recall 4/4.
    assert precision_recall(real, fake) == pytest.approx((2 / 4, 4 / 4), abs=1e-12)
    # With k = 1 the fake balls shrink to 1.7, 0.3, 0.3, 2.0: (0.5, 0.5)'s ball of 1.7 still holds
    # every corner (0.71 away), so recall stays 1; real balls shrink to 1, which still holds
    # (0.5, 0.5) (0.71) but no longer (2.2, 0.5) (1.3): precision 1/4.
    assert precision_recall(real, fake, k=1) == pytest.approx((1 / 4, 4 / 4), abs=1e-12)


# --- a generator that drops half the modes ------------------------------------------------


def test_half_the_modes_gives_full_precision_and_half_recall():
    """Real: 8 modes, 250 points each. Fake: 500 points in each of modes 0-3 only.

    Precision: every fake point lies in a real mode, so precision is the same-distribution value,
    just under 1 (points in a Gaussian's tail miss the balls): over 30 seeds 0.974 +- 0.005
    (min 0.958). Recall: the real points of modes 4-7 lie in no fake ball, so recall is exactly
    half the recall of modes 0-3 alone, which is the same-distribution value again: over 30
    seeds 0.488 +- 0.0034 (min 0.480, max 0.494). The bounds below sit 4 or more standard
    deviations from those means.
    """
    generator = torch.Generator().manual_seed(0)
    real = mixture(range(8), 250, generator)
    fake = mixture(range(4), 500, generator)
    precision, recall = precision_recall(real, fake)
    assert 0.95 <= precision <= 1.0
    assert 0.47 <= recall <= 0.5
    covered = real[: 4 * 250]  # modes 0-3: repeat_interleave keeps each mode's points together
    _, recall_covered = precision_recall(covered, fake)
    assert recall == pytest.approx(recall_covered / 2, abs=1e-12)


# --- properties ---------------------------------------------------------------------------


def test_precision_of_one_set_is_recall_of_the_other():
    generator = torch.Generator().manual_seed(1)
    a = torch.randn(400, 3, generator=generator)
    b = 1.5 * torch.randn(300, 3, generator=generator) + 0.5
    for k in (1, 3, 5):
        p_ab, r_ab = precision_recall(a, b, k=k)
        p_ba, r_ba = precision_recall(b, a, k=k)
        assert p_ab == r_ba and r_ab == p_ba
        assert 0 < p_ab < 1 and 0 < r_ab < 1  # a case where both are informative


@pytest.mark.parametrize("k", [1, 3, 7])
def test_matches_a_brute_force_evaluation_of_the_definition(k):
    generator = torch.Generator().manual_seed(k)
    real = torch.randn(300, 5, generator=generator)
    fake = 0.8 * torch.randn(250, 5, generator=generator) + 0.3
    assert precision_recall(real, fake, k=k) == brute_force(real, fake, k)


def test_batches_do_not_change_the_answer():
    generator = torch.Generator().manual_seed(2)
    real = torch.randn(257, 4, generator=generator)
    fake = torch.randn(130, 4, generator=generator) * 1.3
    whole = precision_recall(real, fake, batch_size=10_000)
    assert precision_recall(real, fake, batch_size=1) == whole
    assert precision_recall(real, fake, batch_size=7) == whole


def test_images_are_flattened_and_float32_is_accepted():
    generator = torch.Generator().manual_seed(3)
    real = torch.rand(100, 1, 4, 4, generator=generator)
    fake = torch.rand(80, 1, 4, 4, generator=generator)
    flat = real.reshape(100, -1).double(), fake.reshape(80, -1).double()
    assert precision_recall(real, fake) == precision_recall(*flat)


def test_far_from_the_origin_is_no_different():
    """Centring on the real set's mean keeps the Gram expansion exact enough far from 0."""
    generator = torch.Generator().manual_seed(4)
    real = torch.randn(200, 2, generator=generator, dtype=torch.float64)
    fake = torch.randn(200, 2, generator=generator, dtype=torch.float64)
    shift = torch.tensor([1e6, -1e6], dtype=torch.float64)
    assert precision_recall(real + shift, fake + shift) == precision_recall(real, fake)


@pytest.mark.parametrize(
    "real, fake, k, match",
    [
        (torch.zeros(10, 2), torch.zeros(10, 3), 3, "different dimensions"),
        (torch.zeros(3, 2), torch.zeros(10, 2), 3, "real set has 3 points"),
        (torch.zeros(10, 2), torch.zeros(2, 2), 3, "fake set has 2 points"),
        (torch.zeros(10, 2), torch.zeros(10, 2), 0, "k must be at least 1"),
    ],
)
def test_bad_arguments_are_clear_errors(real, fake, k, match):
    with pytest.raises(ValueError, match=match):
        precision_recall(real, fake, k=k)
