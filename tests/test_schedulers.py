"""The built-in noise schedules against their closed forms and against diffusers.

Expected values are computed here, independently of plugins/schedulers.py,
from the formulas in the papers (Ho et al. 2020; Nichol & Dhariwal 2021,
eq. 17 and improved-diffusion's `get_named_beta_schedule`; GeoDiff's sigmoid)
with Python's math module.
"""

from __future__ import annotations

import math

import pytest
import torch

from workbench.errors import ConfigError

NAMES = ("linear", "cosine", "sigmoid", "scaled_linear", "quadratic")
# Schedules whose ends are scaled by 1000/T by default: at T = 20 the last beta is exactly 1.
SCALED = ("linear", "sigmoid", "quadratic")
# The schedules meant to take data all the way to noise at T = 1000.
DDPM_STYLE = ("linear", "cosine", "sigmoid", "quadratic")


def valid_timesteps(name: str) -> list[int]:
    """Several T for each schedule, down to the smallest its default options allow."""
    smallest = [21] if name in SCALED else [1, 10]  # 1000/21 * 0.02 = 0.952 < 1
    return smallest + [100, 1000, 4000]


def linspace(start: float, end: float, n: int) -> list[float]:
    return [start + (end - start) * i / (n - 1) for i in range(n)] if n > 1 else [start]


def cosine_f(u: float, s: float = 0.008) -> float:
    """f(t/T) of Nichol & Dhariwal 2021, eq. 17."""
    return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> list[float]:
    return [min(1 - cosine_f((t + 1) / T, s) / cosine_f(t / T, s), max_beta) for t in range(T)]


def as_tensor(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# The cosine schedule's betas come from torch.cos, the references' from math.cos, and the two may
# differ by an ulp (SLEEF's vectorised cos against libm's) for the same float64 argument. An ulp in
# each f = cos^2 (2 ulps) moves beta = 1 - f(t+1)/f(t) by at most ~12u absolutely (u = 2^-53),
# however small beta is: relatively that is 1.4e-10 for the first beta at T = 4000, so a
# relative 1e-12 alone is no bound there. Hence this absolute tolerance beside it.
COS_ATOL = 16 * 2.0**-53


# --- shape, range and monotonicity of every schedule ----------------------------


@pytest.mark.parametrize("name", NAMES)
def test_every_schedule_is_float64_betas_in_open_unit_interval(registry, name):
    for T in valid_timesteps(name):
        betas = registry.build("scheduler", name, timesteps=T).betas()
        assert betas.dtype == torch.float64, (name, T)
        assert betas.shape == (T,), (name, T)
        assert torch.isfinite(betas).all(), (name, T)
        assert (betas > 0).all() and (betas < 1).all(), (name, T, betas.min(), betas.max())
        abar = torch.cumprod(1 - betas, 0)
        assert (abar[1:] < abar[:-1]).all(), (name, T)  # strictly more noise at every step


@pytest.mark.parametrize("name", DDPM_STYLE)
def test_ddpm_style_schedules_end_near_pure_noise_at_T_1000(registry, name):
    betas = registry.build("scheduler", name, timesteps=1000).betas()
    abar = torch.cumprod(1 - betas, 0)
    assert abar[0] > 0.999  # t = 0 barely touches the data
    assert abar[-1] < 1e-3, abar[-1]


def test_scaled_linear_keeps_a_little_signal_at_the_end(registry):
    """Stable Diffusion's schedule stops at abar_T ~ 0.0047 (it never reaches pure noise)."""
    betas = registry.build("scheduler", "scaled_linear", timesteps=1000).betas()
    abar_T = torch.prod(1 - betas).item()
    a, b = math.sqrt(0.00085), math.sqrt(0.012)
    expected = math.prod(1 - (a + (b - a) * i / 999) ** 2 for i in range(1000))
    assert abar_T == pytest.approx(expected, rel=1e-10)
    assert 1e-3 < abar_T < 1e-2


# --- closed forms ----------------------------------------------------------------


def test_linear_is_ddpm_schedule_at_T_1000(registry):
    betas = registry.build("scheduler", "linear", timesteps=1000).betas()
    assert betas[0].item() == pytest.approx(1e-4, rel=1e-12)
    assert betas[-1].item() == pytest.approx(0.02, rel=1e-12)
    assert betas[1].item() == pytest.approx(1e-4 + (0.02 - 1e-4) / 999, rel=1e-12)
    torch.testing.assert_close(betas, as_tensor(linspace(1e-4, 0.02, 1000)), rtol=1e-12, atol=0)


@pytest.mark.parametrize("T", [50, 250, 4000])
def test_linear_scales_both_ends_by_1000_over_T(registry, T):
    """improved-diffusion: scale = 1000 / T; linspace(scale * 1e-4, scale * 0.02, T)."""
    betas = registry.build("scheduler", "linear", timesteps=T).betas()
    scale = 1000 / T
    expected = as_tensor(linspace(scale * 1e-4, scale * 0.02, T))
    torch.testing.assert_close(betas, expected, rtol=1e-12, atol=0)
    # The unscaled variant keeps the ends as given.
    plain = registry.build("scheduler", "linear", timesteps=T, scale_with_timesteps=False).betas()
    torch.testing.assert_close(plain, as_tensor(linspace(1e-4, 0.02, T)), rtol=1e-12, atol=0)


def test_cosine_by_hand(registry):
    """Two values worked from eq. 17 by hand, then the whole table."""
    betas = registry.build("scheduler", "cosine", timesteps=1000).betas()
    f0 = math.cos(0.008 / 1.008 * math.pi / 2) ** 2
    f1 = math.cos((0.001 + 0.008) / 1.008 * math.pi / 2) ** 2
    assert betas[0].item() == pytest.approx(1 - f1 / f0, rel=1e-12, abs=COS_ATOL)
    f500 = math.cos((0.5 + 0.008) / 1.008 * math.pi / 2) ** 2
    f501 = math.cos((0.501 + 0.008) / 1.008 * math.pi / 2) ** 2
    assert betas[500].item() == pytest.approx(1 - f501 / f500, rel=1e-12, abs=COS_ATOL)
    assert betas[-1].item() == 0.999  # f(T) = cos(pi/2)^2 ~ 0: the clip
    for T in (10, 1000, 4000):
        betas = registry.build("scheduler", "cosine", timesteps=T).betas()
        torch.testing.assert_close(betas, as_tensor(cosine_betas(T)), rtol=1e-12, atol=COS_ATOL)


def test_cosine_abar_is_f_ratio_until_the_clip(registry):
    """abar[t] = f(t + 1) / f(0): step index t ends at time (t + 1) / T."""
    T = 1000
    abar = torch.cumprod(1 - registry.build("scheduler", "cosine", timesteps=T).betas(), 0)
    expected = as_tensor([cosine_f((t + 1) / T) / cosine_f(0) for t in range(T - 1)])
    torch.testing.assert_close(abar[:-1], expected, rtol=1e-10, atol=1e-15)


def test_cosine_options(registry):
    T = 100
    betas = registry.build("scheduler", "cosine", timesteps=T, s=0.02, max_beta=0.5).betas()
    torch.testing.assert_close(betas, as_tensor(cosine_betas(T, s=0.02, max_beta=0.5)), rtol=1e-12, atol=COS_ATOL)
    assert betas.max().item() == 0.5


@pytest.mark.parametrize("T", [1000, 100])
def test_quadratic_is_squared_linspace_of_square_roots(registry, T):
    """DDPM's "quad" schedule: linspace(sqrt(start), sqrt(end), T) ** 2, ends scaled by 1000/T."""
    betas = registry.build("scheduler", "quadratic", timesteps=T).betas()
    scale = 1000 / T
    roots = linspace(math.sqrt(scale * 1e-4), math.sqrt(scale * 0.02), T)
    torch.testing.assert_close(betas, as_tensor([r * r for r in roots]), rtol=1e-12, atol=0)
    assert betas[0].item() == pytest.approx(scale * 1e-4, rel=1e-12)
    assert betas[-1].item() == pytest.approx(scale * 0.02, rel=1e-12)
    # sqrt(beta) is linear, so beta lies below the straight line between its ends (convexity).
    linear = registry.build("scheduler", "linear", timesteps=T).betas()
    assert (betas[1:-1] < linear[1:-1]).all()


def test_sigmoid_closed_form(registry):
    """GeoDiff: sigmoid(linspace(-6, 6, T)) * (end - start) + start."""
    T = 100
    betas = registry.build("scheduler", "sigmoid", timesteps=T, scale_with_timesteps=False).betas()
    start, end = 1e-4, 0.02
    expected = [1 / (1 + math.exp(-u)) * (end - start) + start for u in linspace(-6.0, 6.0, T)]
    torch.testing.assert_close(betas, as_tensor(expected), rtol=1e-12, atol=0)


# --- agreement with diffusers ------------------------------------------------------


@pytest.fixture(scope="module")
def DDPMScheduler():
    diffusers = pytest.importorskip("diffusers")
    return diffusers.DDPMScheduler


def diffusers_betas(DDPMScheduler, T: int, schedule: str, **kwargs) -> torch.Tensor:
    return DDPMScheduler(num_train_timesteps=T, beta_schedule=schedule, **kwargs).betas


def assert_matches_float32(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    """diffusers builds its betas in float32: agree to float32 precision.

    With u = 2^-24: ours are float64 rounded once to float32 (u, relative). Theirs come from a
    float32 linspace, which rounds its step, the step's multiple and the sum (<= 4u of the
    value where, as in every increasing schedule here, start and multiple are no larger than
    it), squared for scaled_linear (<= 9u), through a sigmoid (slope <= 1/4, its own few
    ulps) for sigmoid, or from float64 rounded once for squaredcos_cap_v2: <= ~10u in all.
    rtol = 2e-6 = 33u holds the ~11u between them on any CPU; a wrong formula is off by far
    more. atol = 1e-9 takes over only below beta = 5e-4 (the first steps of most schedules),
    where 1e-9 is still far below what a wrong formula would move.
    """
    assert theirs.dtype == torch.float32
    torch.testing.assert_close(ours.to(torch.float32), theirs, rtol=2e-6, atol=1e-9)


@pytest.mark.parametrize("T", [1000, 100])
def test_linear_matches_diffusers(registry, DDPMScheduler, T):
    ours = registry.build("scheduler", "linear", timesteps=T).betas()
    scale = 1000 / T
    theirs = diffusers_betas(DDPMScheduler, T, "linear", beta_start=scale * 1e-4, beta_end=scale * 0.02)
    assert_matches_float32(ours, theirs)
    if T == 1000:  # diffusers' defaults are DDPM's; our scaling is the identity at T = 1000
        assert_matches_float32(ours, diffusers_betas(DDPMScheduler, T, "linear"))


@pytest.mark.parametrize("T", [1000, 50])
def test_scaled_linear_matches_diffusers(registry, DDPMScheduler, T):
    ours = registry.build("scheduler", "scaled_linear", timesteps=T).betas()
    theirs = diffusers_betas(DDPMScheduler, T, "scaled_linear", beta_start=0.00085, beta_end=0.012)
    assert_matches_float32(ours, theirs)


@pytest.mark.parametrize("T", [1000, 10, 4000])
def test_cosine_matches_diffusers_squaredcos_cap_v2(registry, DDPMScheduler, T):
    ours = registry.build("scheduler", "cosine", timesteps=T).betas()
    assert_matches_float32(ours, diffusers_betas(DDPMScheduler, T, "squaredcos_cap_v2"))


@pytest.mark.parametrize("T", [1000, 100])
def test_sigmoid_matches_diffusers(registry, DDPMScheduler, T):
    ours = registry.build("scheduler", "sigmoid", timesteps=T, scale_with_timesteps=False).betas()
    theirs = diffusers_betas(DDPMScheduler, T, "sigmoid", beta_start=1e-4, beta_end=0.02)
    assert_matches_float32(ours, theirs)
    if T == 1000:
        default = registry.build("scheduler", "sigmoid", timesteps=T).betas()
        assert_matches_float32(default, theirs)


# --- validation and self-description ------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("T", [0, -5])
def test_non_positive_timesteps_is_a_config_error(registry, name, T):
    with pytest.raises(ConfigError) as info:
        registry.build("scheduler", name, timesteps=T)
    message = str(info.value)
    assert f"scheduler '{name}'" in message
    assert "timesteps" in message


@pytest.mark.parametrize("name", SCALED)
@pytest.mark.parametrize("T", [20, 10])
def test_scaled_betas_reaching_one_is_a_config_error(registry, name, T):
    """At T = 20 the last beta is 1000/20 * 0.02 = 1 exactly: abar would hit 0."""
    with pytest.raises(ConfigError) as info:
        registry.build("scheduler", name, timesteps=T)
    message = str(info.value)
    assert f"scheduler '{name}'" in message
    assert f"timesteps={T}" in message and ">= 1" in message
    assert "scale_with_timesteps" in message  # what to do about it
    # The fix the message suggests works.
    betas = registry.build("scheduler", name, timesteps=T, scale_with_timesteps=False).betas()
    assert (betas < 1).all()


def test_scaled_linear_with_scaling_turned_on_is_checked_too(registry):
    with pytest.raises(ConfigError, match="scheduler 'scaled_linear'.*>= 1"):
        registry.build("scheduler", "scaled_linear", timesteps=10, scale_with_timesteps=True)


@pytest.mark.parametrize(
    ("name", "options", "option"),
    [
        ("linear", {"beta_start": 1.5}, "beta_start"),
        ("sigmoid", {"beta_end": 0.0}, "beta_end"),
        ("cosine", {"max_beta": 1.0}, "max_beta"),
        ("cosine", {"s": -0.1}, "s"),
        ("quadratic", {"beta_ends": 0.02}, "beta_ends"),
    ],
)
def test_bad_options_are_config_errors_naming_the_option(registry, name, options, option):
    with pytest.raises(ConfigError) as info:
        registry.build("scheduler", name, **options)
    assert f"scheduler '{name}'" in str(info.value)
    assert f"'{option}'" in str(info.value)


@pytest.mark.parametrize("name", NAMES)
def test_options_describe_every_field(registry, name):
    entry = registry.get("scheduler", name)
    assert entry.cls.summary()
    options = {o.name: o for o in entry.cls.options()}
    assert set(options) == set(entry.cls.model_fields)
    assert "timesteps" in options and options["timesteps"].default == 1000
    for option in options.values():
        assert option.type, (name, option)
        assert option.description.strip(), (name, option)
        assert not option.required, (name, option)
        assert option.default is not None, (name, option)
        assert option.default == entry.cls.model_fields[option.name].default
    assert options["timesteps"].type == "int >= 1"
