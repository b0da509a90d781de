"""The built-in samplers against ground truth.

Ground truth here is:
- the exact denoiser of a known 2-D Gaussian mixture (workbench.exact): a
  correct sampler driven by it reproduces the data, which fresh draws from the
  mixture measure (sliced Wasserstein distance, mode weights, mode widths);
- diffusers' DDPMScheduler, DDIMScheduler and DPMSolverMultistepScheduler run
  step by step on the same model, grid and noise draws (skipped without diffusers);
- identities between the samplers: DDIM with eta = 0 and first-order
  DPM-Solver++ are the same update (Lu et al. 2022), and eps, x0 and v
  predictions of the same exact model define the same chain.
"""

from __future__ import annotations

import math
import subprocess
import sys
import typing

import pytest
import torch

import workbench as wb
from workbench.diffusion import Diffusion
from workbench.distances import sliced_wasserstein
from workbench.errors import ConfigError
from workbench.exact import GaussianMixtureDenoiser, circle_means
from workbench.sampling import SPACINGS, timestep_grid

MODE_STD = 0.05
N = 2000


pytestmark = pytest.mark.usefixtures("one_thread")


def linear_diffusion(T: int = 1000, prediction: str = "eps", variance: str = "fixed_small") -> Diffusion:
    return Diffusion(wb.build("scheduler", "linear", timesteps=T).betas(), prediction, variance)


def mixture(diffusion: Diffusion) -> GaussianMixtureDenoiser:
    """8 narrow Gaussians on a circle of radius 0.7: fine detail a coarse sampler blurs or smears."""
    return GaussianMixtureDenoiser(diffusion, circle_means(), stds=MODE_STD)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class Float64(torch.nn.Module):
    """Wraps a model in a module with one float64 parameter: the samplers then run in float64."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model
        self.anchor = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, x, t):
        return self.model(x, t)


class LearnedRange:
    """A learned_range model: the exact prediction plus variance channels v(x_t, t) in [-1, 1]."""

    def __init__(self, exact, v) -> None:
        self.exact, self.v = exact, v

    def __call__(self, x, t):
        return torch.cat([self.exact(x, t), self.v(x, t).expand_as(x)], dim=1)


# --- registration ------------------------------------------------------------------------------


def test_plugin_module_does_not_import_torch():
    code = "import sys, workbench.plugins.samplers; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_samplers_are_registered_with_their_defaults(registry):
    assert {"ddpm", "ddim", "dpm_solver"} <= set(registry.names("sampler"))
    assert registry.build("sampler", "ddpm").steps is None
    ddim = registry.build("sampler", "ddim")
    assert (ddim.steps, ddim.eta, ddim.spacing, ddim.clip_denoised) == (50, 0.0, "logsnr", True)
    dpm = registry.build("sampler", "dpm_solver")
    assert (dpm.steps, dpm.order, dpm.spacing) == (20, 3, "logsnr")
    for bad in ({"eta": 1.5}, {"steps": 0}, {"spacing": "quadratic"}, {"stepz": 5}):
        with pytest.raises(ConfigError):
            registry.build("sampler", "ddim", **bad)
    from workbench.components import Spacing

    assert typing.get_args(Spacing) == SPACINGS == tuple(typing.get_args(type(dpm).model_fields["spacing"].annotation))


# --- the samples are the data ---------------------------------------------------------------


def mode_stats(x: torch.Tensor) -> tuple[torch.Tensor, float, float]:
    """Fraction of samples nearest each mode, RMS distance to it per coordinate, fraction beyond 4 stds."""
    means = circle_means()
    dist = torch.cdist(x.double(), means)
    nearest = dist.argmin(dim=1)
    weights = torch.bincount(nearest, minlength=len(means)).double() / len(x)
    spread = float(((x.double() - means[nearest]) ** 2).mean().sqrt())
    stray = float((dist.min(dim=1).values > 4 * MODE_STD).double().mean())
    return weights, spread, stray


@pytest.mark.parametrize(
    "name, options",
    [("ddpm", {}), ("ddim", {"steps": 50}), ("dpm_solver", {"steps": 20})],
    ids=["ddpm-1000", "ddim-50", "dpm_solver-20"],
)
def test_samples_match_fresh_data(name, options):
    diffusion = linear_diffusion()
    model = mixture(diffusion)
    reference = model.sample_data(10_000, seeded(999))

    def distance(x):
        return sliced_wasserstein(x, reference, projections=128, generator=seeded(0))

    sampler = wb.build("sampler", name, **options)
    samples = [sampler.sample(model, diffusion, (N, 2), generator=seeded(seed)) for seed in (0, 1)]
    ours = sum(distance(x) for x in samples) / 2
    baseline = sum(distance(model.sample_data(N, seeded(seed))) for seed in (100, 101)) / 2
    # A wrong update smears or collapses the modes: 3-5x the baseline (see benchmarks/samplers.py).
    assert ours < 1.5 * baseline, f"{name}: SW {ours:.4f} against {baseline:.4f} for fresh data"

    weights, spread, stray = mode_stats(torch.cat(samples))
    # Each mode holds 1/8 of the mass (4 binomial standard errors at 2N samples).
    assert (weights - 1 / 8).abs().max() < 4 * math.sqrt(1 / 8 * 7 / 8 / (2 * N))
    # The chain ends at x0 = E[x0 | x_0], which narrows each mode by sqrt(a^2 s^2 / (a^2 s^2 + 1 - a^2)).
    a2 = float(diffusion.alphas_cumprod[0])
    exact_spread = MODE_STD * math.sqrt(a2 * MODE_STD**2 / (a2 * MODE_STD**2 + 1 - a2))
    assert spread == pytest.approx(exact_spread, rel=0.1)
    assert stray < 0.01


def test_a_coarse_sampler_fails_the_same_check():
    """The check above can fail: 10 DDIM steps evenly spaced in t smear the narrow modes."""
    diffusion = linear_diffusion()
    model = mixture(diffusion)
    x = wb.build("sampler", "ddim", steps=10, spacing="linspace").sample(model, diffusion, (N, 2), generator=seeded(0))
    _, spread, stray = mode_stats(x)
    assert spread > 1.3 * MODE_STD or stray > 0.05


# --- identities -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, options",
    [("ddpm", {"steps": 100}), ("ddim", {"steps": 20}), ("ddim", {"steps": 20, "eta": 1.0}), ("dpm_solver", {})],
)
def test_eps_x0_and_v_predictions_give_the_same_samples(name, options):
    """The exact model's three parameterizations describe one chain; in float64 they must agree."""
    sampler = wb.build("sampler", name, **options)
    results = []
    for prediction in ("eps", "x0", "v"):
        diffusion = linear_diffusion(prediction=prediction)
        model = Float64(mixture(diffusion))
        results.append(sampler.sample(model, diffusion, (256, 2), generator=seeded(3)))
    assert results[0].dtype == torch.float64
    torch.testing.assert_close(results[1], results[0], rtol=0, atol=1e-9)
    torch.testing.assert_close(results[2], results[0], rtol=0, atol=1e-9)


@pytest.mark.parametrize("spacing", ["linspace", "logsnr", "trailing"])
def test_first_order_dpm_solver_is_ddim(spacing):
    """DPM-Solver++(1) with data prediction is DDIM with eta = 0 (Lu et al. 2022, "DPM-Solver++", sec. 4)."""
    diffusion = linear_diffusion()
    model = Float64(mixture(diffusion))
    ddim = wb.build("sampler", "ddim", steps=12, eta=0.0, spacing=spacing)
    dpm = wb.build("sampler", "dpm_solver", steps=12, order=1, spacing=spacing)
    x_ddim, path_ddim = ddim.sample(model, diffusion, (256, 2), generator=seeded(1), return_trajectory=True)
    x_dpm, path_dpm = dpm.sample(model, diffusion, (256, 2), generator=seeded(1), return_trajectory=True)
    for a, b in zip(path_ddim, path_dpm):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_third_order_dpm_solver_falls_back_to_second_order_on_short_grids():
    """Below 15 steps 3M extrapolates over steps too long to be stable; it walks 2M's path there."""
    diffusion = linear_diffusion()
    model = mixture(diffusion)

    def run(steps, order):
        return wb.build("sampler", "dpm_solver", steps=steps, order=order).sample(model, diffusion, (64, 2), generator=seeded(3))

    torch.testing.assert_close(run(10, 3), run(10, 2), rtol=0, atol=0)
    assert not torch.allclose(run(20, 3), run(20, 2))


def test_learned_variance_channels():
    """learned_range v = -1 is the posterior variance, v = +1 is beta; DDIM and DPM-Solver ignore v."""
    exact = mixture(linear_diffusion(T=100))
    betas = exact.diffusion.betas

    def run(name, variance, v=None, **options):
        model = exact if v is None else LearnedRange(exact, lambda x, t: torch.full_like(x[:, :1], v))
        sampler = wb.build("sampler", name, **options)
        return sampler.sample(model, Diffusion(betas, "eps", variance), (256, 2), generator=seeded(5))

    torch.testing.assert_close(run("ddpm", "learned_range", -1.0), run("ddpm", "fixed_small"))
    torch.testing.assert_close(run("ddpm", "learned_range", 1.0), run("ddpm", "fixed_large"))
    torch.testing.assert_close(run("ddpm", "learned_range", 1.0, steps=10), run("ddpm", "fixed_large", steps=10))
    assert not torch.allclose(run("ddpm", "fixed_small"), run("ddpm", "fixed_large"))
    for name in ("ddim", "dpm_solver"):
        torch.testing.assert_close(run(name, "learned_range", 0.3, steps=10), run(name, "fixed_small", steps=10))


# --- plumbing -----------------------------------------------------------------------------------

CASES = [
    ("ddpm", {}, 100),
    ("ddpm", {"steps": 37}, 37),
    ("ddim", {"steps": 13, "eta": 0.5}, 13),
    ("dpm_solver", {"steps": 7}, 7),
]


@pytest.mark.parametrize("name, options, evaluations", CASES)
def test_evaluations_progress_and_trajectory(name, options, evaluations):
    diffusion = linear_diffusion(T=100)
    model = mixture(diffusion)
    seen_t, calls = [], []

    def recording(x, t):
        assert t.dtype == torch.long and t.shape == (len(x),) and (t == t[0]).all()
        seen_t.append(int(t[0]))
        return model(x, t)

    sampler = wb.build("sampler", name, **options)
    x, trajectory = sampler.sample(
        recording, diffusion, (64, 2), generator=seeded(7), progress=lambda *a: calls.append(a), return_trajectory=True
    )
    assert model.evaluations == evaluations
    assert calls == [(i, evaluations) for i in range(1, evaluations + 1)]
    # Original step indices, distinct, noisiest first, ending at the least noisy step.
    assert seen_t == sorted(set(seen_t), reverse=True) and len(seen_t) == evaluations
    assert 0 <= seen_t[-1] and seen_t[0] <= 99
    assert len(trajectory) == evaluations + 1
    torch.testing.assert_close(trajectory[0], torch.randn(64, 2, generator=seeded(7)), rtol=0, atol=0)
    assert trajectory[-1] is x
    assert x.shape == (64, 2) and x.dtype == torch.float32


@pytest.mark.parametrize("name, options, evaluations", CASES)
def test_seeded_sampling_is_repeatable(name, options, evaluations):
    diffusion = linear_diffusion(T=100)
    model = mixture(diffusion)
    sampler = wb.build("sampler", name, **options)
    first = sampler.sample(model, diffusion, (64, 2), generator=seeded(11))
    again = sampler.sample(model, diffusion, (64, 2), generator=seeded(11))
    other = sampler.sample(model, diffusion, (64, 2), generator=seeded(12))
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


def test_full_ddpm_chain_visits_every_step_and_respaced_one_an_even_subset():
    diffusion = linear_diffusion(T=100)
    assert wb.build("sampler", "ddpm").timesteps(diffusion) == list(range(99, -1, -1))
    grid = wb.build("sampler", "ddpm", steps=12).timesteps(diffusion)
    assert grid[0] == 99 and grid[-1] == 0 and len(grid) == 12
    gaps = [a - b for a, b in zip(grid, grid[1:])]
    assert max(gaps) - min(gaps) <= 1


@pytest.mark.parametrize("name", ["ddpm", "ddim", "dpm_solver"])
def test_clipping_the_predicted_x0(name):
    """Every sampler's last step returns the predicted x0, clipped to [-1, 1] unless told not to."""
    diffusion = linear_diffusion(T=100, prediction="x0")

    def too_far(x, t):
        return torch.full_like(x, 3.0)

    options = {} if name == "ddpm" else {"steps": 10}
    clipped = wb.build("sampler", name, **options).sample(too_far, diffusion, (16, 2), generator=seeded(0))
    free = wb.build("sampler", name, clip_denoised=False, **options).sample(too_far, diffusion, (16, 2), generator=seeded(0))
    torch.testing.assert_close(clipped, torch.ones(16, 2))
    torch.testing.assert_close(free, torch.full((16, 2), 3.0))


def test_model_mode_is_left_alone_and_no_gradients_are_kept():
    diffusion = linear_diffusion(T=100)

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(2, 2)

        def forward(self, x, t):
            return self.linear(x)

    net = Net()
    for training in (True, False):
        net.train(training)
        x = wb.build("sampler", "dpm_solver", steps=5).sample(net, diffusion, (8, 2))
        assert net.training == training and not x.requires_grad


def test_device_defaults():
    diffusion = linear_diffusion(T=100)
    model = Float64(lambda x, t: torch.zeros_like(x))
    x = wb.build("sampler", "ddim", steps=3).sample(model, diffusion, (4, 2))
    assert x.device.type == "cpu" and x.dtype == torch.float64
    x = wb.build("sampler", "ddim", steps=3).sample(model, diffusion, (4, 2), device="cpu", generator=seeded(0))
    assert x.device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_the_generators_device():
    diffusion = linear_diffusion(T=100)
    model = mixture(diffusion)
    g = torch.Generator(device="cuda").manual_seed(0)
    x = wb.build("sampler", "dpm_solver", steps=5).sample(model, diffusion, (16, 2), generator=g)
    assert x.device.type == "cuda"


@pytest.mark.parametrize("name", ["ddpm", "ddim", "dpm_solver"])
def test_more_steps_than_the_process_has_is_a_config_error(name):
    with pytest.raises(ConfigError, match=rf"sampler '{name}': steps = 101 .* 100 timesteps"):
        wb.build("sampler", name, steps=101).sample(lambda x, t: x, linear_diffusion(T=100), (4, 2))


@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing", "logsnr"])
@pytest.mark.parametrize("steps", [1, 7, 20, 100, 1000])
def test_timestep_grids_are_distinct_descending_steps(spacing, steps):
    diffusion = linear_diffusion()
    grid = timestep_grid(diffusion, steps, spacing)
    assert len(grid) == steps and grid == sorted(set(grid), reverse=True)
    assert 0 <= grid[-1] and grid[0] <= 999
    if spacing in ("linspace", "trailing") or (spacing == "logsnr" and steps == 1):
        assert grid[0] == 999
    if spacing in ("linspace", "logsnr", "leading") and steps > 1:
        assert grid[-1] == 0


def test_logsnr_grid_skips_the_cosine_schedules_pure_noise_tail():
    """The cosine schedule's last steps reach lambda = -10; the grid starts near lambda = -5.1 instead."""
    diffusion = Diffusion(wb.build("scheduler", "cosine", timesteps=1000).betas())
    grid = timestep_grid(diffusion, 20, "logsnr")
    abar = diffusion.alphas_cumprod
    assert 2e-5 < float(abar[grid[0]]) < 8e-5 and grid[-1] == 0


# --- against diffusers ------------------------------------------------------------------------


def diffusers_chain(scheduler, model, x, timesteps, step_kwargs=lambda i: {}):
    """Run a diffusers scheduler's `step` over `timesteps` from x, calling `model(x, t [B])`."""
    for i, t in enumerate(timesteps):
        output = model(x, torch.full((len(x),), int(t)))
        x = scheduler.step(output, t, x, **step_kwargs(i)).prev_sample
    return x


DIFFUSERS_PREDICTION = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}

# Our chain against diffusers', both on float32 samples. diffusers keeps its tables in float32, its
# abar a float32 cumprod of T = 1000 factors: relative error up to T u = 6e-5 (u = 2^-24), carried
# into every coefficient, on samples of |x| <= ~1 (clipped). A sequential product and elementwise
# arithmetic round the same on every x86-64 CPU; only the mixture's exp and 8-term sums may come out
# an ulp apart between kernels, well inside. 1e-4 + 1e-4 |x| therefore holds T u |x| anywhere (the
# AVX-512, AVX2 and plain kernels all measure 1.5e-5); a wrong coefficient or step is off by far more.
DIFFUSERS_CLOSE = {"rtol": 1e-4, "atol": 1e-4}


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large", "learned_range"])
@pytest.mark.parametrize("steps", [None, 40])
def test_ddpm_matches_diffusers(variance, steps):
    diffusers = pytest.importorskip("diffusers")
    T = 200 if steps is None else 1000
    diffusion = linear_diffusion(T=T, variance=variance)
    exact = mixture(linear_diffusion(T=T))
    model = exact if variance != "learned_range" else LearnedRange(exact, lambda x, t: torch.tanh(x[:, :1] * 3))
    sampler = wb.build("sampler", "ddpm", steps=steps)
    ours = sampler.sample(model, diffusion, (128, 2), generator=seeded(2))

    scheduler = diffusers.DDPMScheduler(
        num_train_timesteps=T, trained_betas=diffusion.betas.numpy(), variance_type=variance, clip_sample=True
    )
    scheduler.set_timesteps(timesteps=sampler.timesteps(diffusion))
    g = seeded(2)
    x_T = torch.randn(128, 2, generator=g)
    theirs = diffusers_chain(scheduler, model, x_T, scheduler.timesteps, lambda i: {"generator": g})
    torch.testing.assert_close(ours, theirs, **DIFFUSERS_CLOSE)


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_matches_diffusers(prediction, eta):
    """Our 'leading' spacing is diffusers' DDIM grid (steps_offset = 0, final abar = 1)."""
    diffusers = pytest.importorskip("diffusers")
    diffusion = linear_diffusion(prediction=prediction)
    model = mixture(diffusion)
    ours = wb.build("sampler", "ddim", steps=25, eta=eta, spacing="leading").sample(
        model, diffusion, (128, 2), generator=seeded(4)
    )

    scheduler = diffusers.DDIMScheduler(
        num_train_timesteps=1000, trained_betas=diffusion.betas.numpy(), clip_sample=True,
        set_alpha_to_one=True, steps_offset=0, timestep_spacing="leading",
        prediction_type=DIFFUSERS_PREDICTION[prediction],
    )
    scheduler.set_timesteps(25)
    g = seeded(4)
    x_T = torch.randn(128, 2, generator=g)
    last = len(scheduler.timesteps) - 1

    def noise(i):  # our chain draws no noise where sigma = 0 (the last step)
        draw = torch.randn(128, 2, generator=g) if eta > 0 and i < last else torch.zeros(128, 2)
        return {"eta": eta, "use_clipped_model_output": True, "variance_noise": draw}

    theirs = diffusers_chain(scheduler, model, x_T, scheduler.timesteps, noise)
    torch.testing.assert_close(ours, theirs, **DIFFUSERS_CLOSE)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("clip", [True, False])
@pytest.mark.parametrize("order", [2, 3])
def test_dpm_solver_matches_diffusers(prediction, clip, order):
    """DPMSolverMultistepScheduler, dpmsolver++ of order 2 ('midpoint' = Algorithm 2) or 3, final sigma 0, our grid.

    diffusers has no plain clipping for it; dynamic thresholding with a maximum of 1 is exactly that
    (its thresholding needs a channel axis and a spatial one, hence points of shape [2, 1]).
    """
    diffusers = pytest.importorskip("diffusers")
    diffusion = linear_diffusion(prediction=prediction)
    model = mixture(diffusion)
    sampler = wb.build("sampler", "dpm_solver", steps=20, order=order, clip_denoised=clip)
    ours = sampler.sample(model, diffusion, (128, 2, 1), generator=seeded(6))

    scheduler = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=1000, trained_betas=diffusion.betas.numpy(), algorithm_type="dpmsolver++",
        solver_order=order, solver_type="midpoint", lower_order_final=True, final_sigmas_type="zero",
        prediction_type=DIFFUSERS_PREDICTION[prediction], thresholding=clip, sample_max_value=1.0,
    )
    scheduler.set_timesteps(timesteps=sampler.timesteps(diffusion))
    x_T = torch.randn(128, 2, 1, generator=seeded(6))
    theirs = diffusers_chain(scheduler, model, x_T, scheduler.timesteps)
    torch.testing.assert_close(ours, theirs, **DIFFUSERS_CLOSE)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_logsnr_grid_matches_diffusers_lu_lambdas():
    """diffusers' `use_lu_lambdas` (Lu et al.'s uniform-logSNR steps) picks the same steps, to rounding."""
    diffusers = pytest.importorskip("diffusers")
    diffusion = linear_diffusion()
    scheduler = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=1000, trained_betas=diffusion.betas.numpy(), use_lu_lambdas=True
    )
    scheduler.set_timesteps(20)
    theirs = scheduler.timesteps.tolist()
    ours = timestep_grid(diffusion, 20, "logsnr")
    assert len(theirs) == len(ours) and ours[0] == theirs[0] and ours[-1] == theirs[-1]
    assert max(abs(a - b) for a, b in zip(ours, theirs)) <= 1


# --- the public base, as a plugin author uses it ------------------------------------------------


class ProbabilityFlowEuler(wb.ChainSampler):
    """Euler steps of the probability-flow ODE in (x / alpha, sigma / alpha): a third party's sampler."""

    name = "pf_euler"
    steps: int = 12

    def timesteps(self, diffusion):
        return self.grid(diffusion, self.steps, "logsnr")

    def walk(self, walk, grid):
        abar = walk.diffusion.alphas_cumprod[grid].tolist() + [1.0]
        x = walk.start()
        for i, t in enumerate(grid):
            _, eps = walk.denoise(x, t, self.clip_denoised)
            # y = x / alpha moves along dy = eps d(sigma / alpha): exact for one step of DDIM (Song et al. 2021, eq. 14)
            ratio_t, ratio_s = math.sqrt((1 - abar[i]) / abar[i]), math.sqrt((1 - abar[i + 1]) / abar[i + 1])
            x = (x / math.sqrt(abar[i]) + (ratio_s - ratio_t) * eps) * math.sqrt(abar[i + 1])
            walk.visit(x)
        return x


def test_a_plugin_sampler_on_the_public_base_walks_ddim_s_path():
    """Euler on the probability-flow ODE in DDIM's coordinates is DDIM at eta = 0, step for step; the base
    gives it x_T, the noise stream, the model's output as eps, progress and the trajectory."""
    diffusion = linear_diffusion()
    model = Float64(mixture(diffusion))
    calls = []
    mine = ProbabilityFlowEuler(clip_denoised=False)
    x, path = mine.sample(model, diffusion, (256, 2), generator=seeded(4), return_trajectory=True,
                          progress=lambda done, total: calls.append((done, total)))
    ddim = wb.build("sampler", "ddim", steps=12, eta=0.0, clip_denoised=False)
    x_ddim, path_ddim = ddim.sample(model, diffusion, (256, 2), generator=seeded(4), return_trajectory=True)
    assert len(path) == len(path_ddim) == 13 and calls[-1] == (12, 12)
    for a, b in zip(path, path_ddim):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    with pytest.raises(ConfigError, match="more than the diffusion's"):
        ProbabilityFlowEuler(steps=2000).sample(model, diffusion, (4, 2), generator=seeded(0))
