"""Classifier-free guidance: the Guided wrapper's arithmetic, and samples against exact conditional denoisers.

Ground truth: for data from a mixture of Gaussians whose components are the
classes, workbench.exact.GaussianMixtureDenoiser(x, t, y) is the exact
denoiser of component y (y < K) and of the mixture (y = K, "no label"):
what a conditional network trained with label dropout converges to.
"""

from __future__ import annotations

import math

import pytest
import torch

import workbench as wb
from workbench.diffusion import Diffusion
from workbench.distances import sliced_wasserstein
from workbench.exact import GaussianMixtureDenoiser, circle_means
from workbench.guidance import Guided, WithLabels, balanced_labels, drop_labels
from workbench.sampling import draw_samples

pytestmark = pytest.mark.usefixtures("one_thread")

N = 2000
MODE_STD = 0.05


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def linear_diffusion(prediction: str = "eps", variance: str = "fixed_small") -> Diffusion:
    return Diffusion(wb.build("scheduler", "linear", timesteps=1000).betas(), prediction, variance)


class Recorder:
    """A conditional net out = x * (1 + y) + t: records the batch of every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, torch.Tensor]] = []

    def __call__(self, x, t, y):
        self.calls.append((len(x), y.clone()))
        return x * (1 + y.to(x.dtype))[:, None] + t.to(x.dtype)[:, None]


# --- the wrapper ----------------------------------------------------------------------------


def test_guided_output_is_one_doubled_forward_of_out_u_plus_s_times_the_difference():
    net = Recorder()
    x = torch.randn(5, 2, generator=seeded(0), dtype=torch.float64)
    t = torch.full((5,), 7)
    y = torch.tensor([0, 1, 2, 1, 0])
    out = Guided(net, y, 3.0, null_label=3)(x, t)
    assert len(net.calls) == 1 and net.calls[0][0] == 10  # one forward of the doubled batch
    assert torch.equal(net.calls[0][1], torch.tensor([0, 1, 2, 1, 0, 3, 3, 3, 3, 3]))
    out_c, out_u = net(x, t, y), net(x, t, torch.full_like(y, 3))
    # The same float64 operations on the same values: equal to the last bit.
    assert torch.equal(out, out_u + 3.0 * (out_c - out_u))


@pytest.mark.parametrize("s, label", [(1.0, "conditional"), (0.0, "unconditional")])
def test_scales_one_and_zero_run_one_pass_and_are_bitwise_that_model(s, label):
    net = Recorder()
    x = torch.randn(4, 2, generator=seeded(1))
    t = torch.full((4,), 3)
    y = torch.tensor([2, 0, 1, 2])
    expected = y if label == "conditional" else torch.full_like(y, 3)
    assert torch.equal(Guided(net, y, s, null_label=3)(x, t), net(x, t, expected))
    assert [n for n, _ in net.calls] == [4, 4]  # one pass each, no doubled batch


def test_learned_variance_guides_only_the_mean_channels():
    def net(x, t, y):  # mean channels depend on y; variance channels too, differently
        y = y.to(x.dtype)[:, None]
        return torch.cat([x + y, 0.1 * y - 0.5 + 0 * x], dim=1)

    x = torch.randn(3, 2, generator=seeded(2), dtype=torch.float64)
    t = torch.zeros(3, dtype=torch.long)
    y = torch.tensor([0, 1, 1])
    out = Guided(net, y, 2.5, null_label=2, learned_variance=True)(x, t)
    c, u = net(x, t, y), net(x, t, torch.full_like(y, 2))
    assert torch.equal(out[:, :2], u[:, :2] + 2.5 * (c[:, :2] - u[:, :2]))
    assert torch.equal(out[:, 2:], c[:, 2:])  # the variance of the conditional pass


def test_a_single_step_index_is_not_doubled():
    net = Recorder()
    out = Guided(net, torch.tensor([0, 1]), 2.0, null_label=2)(torch.ones(2, 2), torch.tensor([5]))
    assert out.shape == (2, 2)


def test_drop_labels_and_balanced_labels():
    y = torch.tensor([0, 1, 2, 3])
    assert torch.equal(drop_labels(y, torch.tensor([True, False, True, False]), 9), torch.tensor([9, 1, 9, 3]))
    assert balanced_labels(7, 3).tolist() == [0, 1, 2, 0, 1, 2, 0]


@pytest.mark.parametrize("name, options", [("ddim", {"steps": 20}), ("dpm_solver", {"steps": 10}), ("ddpm", {"steps": 50})])
def test_every_sampler_at_scale_one_and_zero_gives_bitwise_the_conditional_and_unconditional_samples(name, options):
    diffusion = linear_diffusion()
    exact = GaussianMixtureDenoiser(diffusion, circle_means(), stds=MODE_STD)
    sampler = wb.build("sampler", name, **options)
    y = balanced_labels(64, 8)
    for s, labels in ((1.0, y), (0.0, torch.full_like(y, 8))):
        guided = draw_samples(sampler, exact, diffusion, (64, 2), seeded(3), labels=y, num_classes=8, guidance=s)
        plain = sampler.sample(WithLabels(exact, labels), diffusion, (64, 2), generator=seeded(3))
        assert torch.equal(guided, plain)


# --- samples against the exact conditional mixture ------------------------------------------


def distance(x: torch.Tensor, reference: torch.Tensor) -> float:
    return sliced_wasserstein(x, reference, projections=128, generator=seeded(0))


@pytest.mark.parametrize("k", [0, 3])
def test_scale_one_samples_follow_component_k_and_scale_zero_the_mixture(k):
    diffusion = linear_diffusion()
    exact = GaussianMixtureDenoiser(diffusion, circle_means(), stds=MODE_STD)
    sampler = wb.build("sampler", "dpm_solver", steps=20)
    labels = torch.full((N,), k)

    conditional = draw_samples(sampler, exact, diffusion, (N, 2), seeded(1), labels=labels, num_classes=8, guidance=1.0)
    component = exact.sample_data(10_000, seeded(999), component=k)
    # The floor: two fresh draws of N from component k, against the same reference.
    floor = sum(distance(exact.sample_data(N, seeded(s), component=k), component) for s in (100, 101)) / 2
    assert distance(conditional, component) < 1.5 * floor
    # Every sample lands on mode k (4 stds of it); with the mixture's 8 modes 0.7 * 0.77 apart.
    nearest = torch.cdist(conditional.double(), circle_means()).argmin(dim=1)
    assert bool((nearest == k).all())

    unconditional = draw_samples(sampler, exact, diffusion, (N, 2), seeded(2), labels=labels, num_classes=8, guidance=0.0)
    mixture = exact.sample_data(10_000, seeded(998))
    floor = sum(distance(exact.sample_data(N, seeded(s)), mixture) for s in (200, 201)) / 2
    assert distance(unconditional, mixture) < 1.5 * floor
    weights = torch.bincount(torch.cdist(unconditional.double(), circle_means()).argmin(dim=1), minlength=8) / N
    # Each mode holds 1/8 of the mass, within 4 binomial standard errors.
    assert float((weights - 1 / 8).abs().max()) < 4 * math.sqrt(1 / 8 * 7 / 8 / N)


def tilted_samples(n: int, means: torch.Tensor, std: float, k: int, s: float, seed: int) -> torch.Tensor:
    """n draws from p(x|k)^s p(x)^(1-s) (normalised) for the equal two-Gaussian mixture, by a 0.005 grid on [-2, 2]^2."""
    h = 0.005
    axis = torch.arange(-2, 2, h, dtype=torch.float64) + h / 2
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), dim=-1).reshape(-1, 2)
    log_n = torch.stack([-((grid - m) ** 2).sum(1) / (2 * std**2) for m in means])
    log_p = torch.logsumexp(log_n, 0) - math.log(len(means))
    weights = torch.softmax(s * log_n[k] + (1 - s) * log_p, 0)
    cells = torch.multinomial(weights.float(), n, replacement=True, generator=seeded(seed))
    return grid[cells] + (torch.rand(n, 2, generator=seeded(seed + 1), dtype=torch.float64) - 0.5) * h


def test_guided_samples_beyond_scale_one_are_not_the_tilted_density():
    """Guidance s > 1 does not sample p(x|k)^s p(x)^(1-s): the guided score is not that density's score
    along the chain (the tilt is applied to every noised marginal, and noising does not commute with it).

    Two overlapping Gaussians (means -0.3 and 0.3 on x, std 0.2), class 1, dpm_solver 50 steps, 4000
    samples. Measured: s = 1 matches component 1 (SW 0.0056 against a floor of 0.0060); s = 2 and 3
    overshoot the tilted target: mean x 0.43 and 0.51 against the target's 0.33 and 0.35, std 0.14
    and 0.13 against 0.18 and 0.17 (SW 0.075 and 0.12, 16 and 22 times the floor). ddpm (1000 steps)
    overshoots less but alike: mean x 0.38 and 0.42, SW 8 and 10 times the floor.
    """
    diffusion = linear_diffusion()
    means = torch.tensor([[-0.3, 0.0], [0.3, 0.0]], dtype=torch.float64)
    exact = GaussianMixtureDenoiser(diffusion, means, stds=0.2)
    sampler = wb.build("sampler", "dpm_solver", steps=50, clip_denoised=False)
    n = 4000
    for s in (1.0, 3.0):
        x = draw_samples(sampler, exact, diffusion, (n, 2), seeded(1), labels=torch.full((n,), 1), num_classes=2, guidance=s)
        target = tilted_samples(20_000, means, 0.2, 1, s, 50)
        floor = sum(distance(tilted_samples(n, means, 0.2, 1, s, seed), target) for seed in (7, 9)) / 2
        gap = distance(x.double(), target)
        if s == 1.0:
            assert gap < 1.5 * floor
        else:
            assert gap > 5 * floor
            # The guided mean overshoots the target's by far more than 5 standard errors of a mean of n.
            standard_error = float(target[:, 0].std()) / math.sqrt(n)
            assert float(x[:, 0].mean()) > float(target[:, 0].mean()) + 5 * standard_error
