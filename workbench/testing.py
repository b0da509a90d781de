"""Checks of a component's contract and mathematics, for `wb check` and for a plugin's own tests.

The idea of scikit-learn's `check_estimator`, plus the math: each kind has a
list of checks, each a plain function returning `CheckResult`s (the check's
name, the figure measured, the limit it is held to, and whether it passed).
Ground truth is exact: the closed-form denoiser of a Gaussian mixture
(workbench.exact) stands in for a perfectly trained model, and `wb.nll` is
the bound a bound-type loss must average to.

    from workbench.testing import check_component, parametrize_with_checks

    results = check_component("sampler", MySampler)          # list[CheckResult]

    @parametrize_with_checks("sampler", MySampler)           # one pytest test per check
    def test_my_sampler(check):
        check()                                              # AssertionError naming figure and limit

Where each limit comes from is written beside it: Monte-Carlo standard
errors, or the sampling noise of a finite set of samples (the "floor": the
distance between two independent draws of the data), never a tuned number.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable

from workbench.components import KINDS, Component, normalize_kind
from workbench.errors import ConfigError, WorkbenchError
from workbench.toml_io import parse_options


@dataclass
class CheckResult:
    """One check's outcome: `verdict` is "pass", "fail" or "warn" (a warning does not fail)."""

    check: str
    figure: str
    limit: str
    passed: bool
    warning: bool = False

    @property
    def verdict(self) -> str:
        return "fail" if not self.passed else ("warn" if self.warning else "pass")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict}


@dataclass
class Check:
    """A named check of one component, callable in a test: runs it and raises AssertionError on failure."""

    kind: str
    name: str
    run: Callable[[Component], list[CheckResult]]
    component: Component

    def results(self) -> list[CheckResult]:
        try:
            return self.run(self.component)
        except Exception as exc:  # a component that raises fails the check that called it
            return [CheckResult(self.name, f"raised {type(exc).__name__}: {exc}", "no exception", False)]

    def __call__(self) -> list[CheckResult]:
        import warnings

        results = self.results()
        for r in results:
            if r.warning:
                warnings.warn(f"{self.kind} check {r.check}: {r.figure} ({r.limit})", UserWarning, stacklevel=2)
        failed = [r for r in results if not r.passed]
        if failed:
            raise AssertionError(
                "; ".join(f"{r.check}: {r.figure} (limit: {r.limit})" for r in failed)
            )
        return results

    def __repr__(self) -> str:
        return f"{self.kind}:{self.name}"


class CheckError(WorkbenchError):
    """A component could not be checked at all (its plugin failed to import, its options are wrong)."""


# --- shared ground truth ----------------------------------------------------------------------


def _torch():
    import torch

    return torch


def _seeded(seed: int):
    return _torch().Generator().manual_seed(seed)


def _diffusion(T: int, prediction: str = "eps", variance: str = "fixed_small", schedule: str = "linear"):
    """The process of the checks: the built-in schedules' formulas written out (no plugin needed)."""
    torch = _torch()
    from workbench.diffusion import Diffusion

    if schedule == "linear":
        scale = 1000 / T
        betas = torch.linspace(1e-4 * scale, 0.02 * scale, T, dtype=torch.float64)
    else:  # cosine (Nichol & Dhariwal 2021)
        s = 0.008
        f = torch.cos(((torch.arange(T + 1, dtype=torch.float64) / T + s) / (1 + s)) * math.pi / 2) ** 2
        betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    return Diffusion(betas, prediction, variance)


class _LearnedRange:
    """The exact mean prediction plus variance channels fixed at v in [-1, 1] (learned_range's interpolation)."""

    def __init__(self, exact: Callable, v: float) -> None:
        self.exact, self.v = exact, v

    def __call__(self, x, t):
        out = self.exact(x, t)
        return _torch().cat([out, _torch().full_like(out, self.v)], dim=1)


def _exact_model(means, stds, weights, prediction: str, variance: str, T: int):
    """The exact denoiser of the mixture for that parameterization; learned_range gets v = 0 (the midpoint)."""
    from workbench.exact import GaussianMixtureDenoiser

    diffusion = _diffusion(T, prediction, variance)
    mean_process = _diffusion(T, prediction, "fixed_small") if variance == "learned_range" else diffusion
    exact = GaussianMixtureDenoiser(mean_process, means, stds=stds, weights=weights)
    model = _LearnedRange(exact, 0.0) if variance == "learned_range" else exact
    return model, diffusion, exact


# --- schedulers -------------------------------------------------------------------------------

TERMINAL_SIGNAL = 0.05
"""Warn when x_T keeps more than 5% of the data's signal (sqrt(abar_T) > 0.05, SNR_T > 0.0025): the
sampler starts from pure noise, so that signal is lost (Lin et al. 2024 show the effect at Stable
Diffusion's 0.068; the linear schedule at T = 1000 keeps 0.006)."""


def _with_timesteps(scheduler: Component, T: int) -> Component:
    return scheduler.model_copy(update={"timesteps": T})


def scheduler_betas(scheduler: Component) -> list[CheckResult]:
    """float64 betas of length T, each in the open interval (0, 1), at the scheduler's T and at T = 37."""
    torch = _torch()
    results = []
    for T in dict.fromkeys([scheduler.timesteps, 37]):
        betas = _with_timesteps(scheduler, T).betas()
        ok_type = isinstance(betas, torch.Tensor) and betas.dtype == torch.float64 and betas.shape == (T,)
        figure = (
            f"{getattr(betas, 'dtype', type(betas).__name__)} {tuple(getattr(betas, 'shape', ()))}"
        )
        results.append(CheckResult(f"betas are float64 [T] (T = {T})", figure, f"torch.float64 ({T},)", ok_type))
        if ok_type:
            lo, hi = float(betas.min()), float(betas.max())
            inside = bool(torch.isfinite(betas).all()) and lo > 0 and hi < 1
            results.append(CheckResult(f"betas in (0, 1) (T = {T})", f"min {lo:.3g}, max {hi:.3g}", "0 < beta < 1", inside))
    return results


def scheduler_monotone(scheduler: Component) -> list[CheckResult]:
    """alpha-bar = cumprod(1 - beta) strictly decreasing: each step adds noise."""
    torch = _torch()
    betas = scheduler.betas().to(torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    steps = abar[1:] - abar[:-1]
    worst = int(steps.argmax()) if len(steps) else 0
    passed = bool((steps < 0).all()) and bool((abar > 0).all())
    figure = f"largest step {float(steps.max()):+.3g} at t = {worst + 1}" if len(steps) else "T = 1"
    return [CheckResult("alpha-bar strictly decreasing", figure, "every step < 0", passed)]


def scheduler_deterministic(scheduler: Component) -> list[CheckResult]:
    """Two calls, and a second instance with the same options, give bitwise the same betas."""
    torch = _torch()
    a, b = scheduler.betas(), scheduler.betas()
    c = type(scheduler)(**scheduler.model_dump()).betas()
    same = torch.equal(a, b) and torch.equal(a, c)
    return [CheckResult("deterministic", "bitwise equal" if same else "differ between calls", "bitwise equal", same)]


def scheduler_terminal_snr(scheduler: Component) -> list[CheckResult]:
    """Reports SNR at t = T-1; a warning (not a failure) when x_T keeps much of the data's signal."""
    torch = _torch()
    abar_T = float(torch.cumprod(1 - scheduler.betas().to(torch.float64), 0)[-1])
    snr = abar_T / (1 - abar_T) if abar_T < 1 else math.inf
    signal = math.sqrt(max(abar_T, 0.0))
    far = signal > TERMINAL_SIGNAL
    return [
        CheckResult(
            "terminal SNR near 0",
            f"SNR_T = {snr:.3g} (signal left sqrt(abar_T) = {signal:.3g})",
            f"warn above signal {TERMINAL_SIGNAL} (SNR {TERMINAL_SIGNAL**2 / (1 - TERMINAL_SIGNAL**2):.2g})",
            True,
            warning=far,
        )
    ]


def scheduler_picture(scheduler: Component, path: Any, steps: int = 8) -> Any:
    """`wb noise`-style picture of the schedule: 2000 points of 8 modes on a circle noised at `steps` evenly spaced t."""
    from pathlib import Path

    from workbench import plots
    from workbench.diffusion import Diffusion
    from workbench.exact import circle_means

    diffusion = Diffusion(scheduler.betas())
    _, _, exact = _exact_model(circle_means(), 0.05, None, "eps", "fixed_small", 100)
    x0 = exact.sample_data(2000, _seeded(0))
    shown = plots.evenly_spaced_steps(diffusion.num_timesteps, steps)
    pictures = plots.forward_process(diffusion, x0, shown, _seeded(1))
    label = f"scheduler '{scheduler.name}', T = {diffusion.num_timesteps}"
    return plots.save_rows([(label, plots.panels(pictures))], Path(path))


# --- samplers ---------------------------------------------------------------------------------

SAMPLER_T = 1000
SAMPLES = 1000
REFERENCE = 10_000
FLOOR_MULTIPLE = 1.5
"""Samples within 1.5 x the floor: the mean sliced Wasserstein distance of N fresh draws to the reference
set. Distances add roughly in quadrature, SW^2 ~ floor^2 + bias^2, so 1.5 x the floor allows a bias of
sqrt(1.5^2 - 1) = 1.1 floors: what N samples can resolve. The sampler's figure is the mean over two
seeded runs and the floor the mean over four fresh draws, so the noise of one draw (about 20% of the
floor with 128 projections) does not decide the verdict."""


def _mixtures():
    """(label, means, stds, prediction, variance): several mixtures, every prediction, fixed and learned variance."""
    torch = _torch()
    from workbench.exact import circle_means

    square = torch.tensor([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]], dtype=torch.float64)
    three = torch.tensor([[-0.6, -0.4], [0.5, -0.5], [0.0, 0.6]], dtype=torch.float64)
    return [
        ("8 narrow modes, eps, fixed_small", circle_means(), 0.05, "eps", "fixed_small"),
        ("4 modes, x0, fixed_large", square, 0.1, "x0", "fixed_large"),
        ("3 modes weighted 0.5/0.3/0.2, v, learned_range", three, 0.1, "v", "learned_range"),
    ]


def _chain_target(exact, diffusion, n: int, seed: int):
    """n draws of what an exact chain ends at: E[x0 | x_0] for x_0 ~ q(x_0), the data noised to step 0.

    Every sampler's last step returns the model's x0 prediction at t = 0, which narrows each mode a little
    (by sqrt(a^2 s^2 / (a^2 s^2 + 1 - a^2))); that, not the data itself, is the exact chain's output.
    """
    torch = _torch()
    x0 = exact.sample_data(n, _seeded(seed)).to(torch.float64)
    t = torch.zeros(n, dtype=torch.long)
    noise = torch.randn(x0.shape, generator=_seeded(seed + 1), dtype=torch.float64)
    return exact.posterior_mean(diffusion.q_sample(x0, t, noise), t).reshape(x0.shape)


def sampler_matches_data(sampler: Component) -> list[CheckResult]:
    """At its default steps, with exact denoisers, the samples lie within FLOOR_MULTIPLE x the data-vs-data floor."""
    torch = _torch()
    from workbench.distances import sliced_wasserstein

    results = []
    for label, means, stds, prediction, variance in _mixtures():
        weights = torch.tensor([0.5, 0.3, 0.2]) if len(means) == 3 else None
        model, diffusion, exact = _exact_model(means, stds, weights, prediction, variance, SAMPLER_T)
        reference = _chain_target(exact, exact.diffusion, REFERENCE, 999)

        def distance(x):
            return sliced_wasserstein(x, reference, projections=128, generator=_seeded(0))

        ours = sum(distance(sampler.sample(model, diffusion, (SAMPLES, 2), generator=_seeded(s))) for s in (0, 1)) / 2
        floor = sum(distance(_chain_target(exact, exact.diffusion, SAMPLES, s)) for s in (100, 200, 300, 400)) / 4
        results.append(
            CheckResult(
                f"samples match the data ({label})",
                f"SW {ours:.4f} = {ours / floor:.2f} x floor {floor:.4f}",
                f"{FLOOR_MULTIPLE} x floor",
                ours <= FLOOR_MULTIPLE * floor,
            )
        )
    return results


def _small_run(sampler: Component, **kwargs):
    from workbench.exact import circle_means

    model, diffusion, _ = _exact_model(circle_means(), 0.05, None, "eps", "fixed_small", SAMPLER_T)
    return sampler.sample(model, diffusion, kwargs.pop("shape", (64, 2)), **kwargs)


def sampler_seeded(sampler: Component) -> list[CheckResult]:
    """Two runs from generators with one seed are bitwise equal; another seed differs."""
    torch = _torch()
    a, b = _small_run(sampler, generator=_seeded(5)), _small_run(sampler, generator=_seeded(5))
    c = _small_run(sampler, generator=_seeded(6))
    same, other = torch.equal(a, b), not torch.equal(a, c)
    figure = ("bitwise equal" if same else f"max difference {float((a - b).abs().max()):.3g}") + (
        "; another seed differs" if other else "; another seed gives the same samples"
    )
    return [CheckResult("seeded runs repeat bitwise", figure, "equal for one seed, different for two", same and other)]


def sampler_progress(sampler: Component) -> list[CheckResult]:
    """progress(done, total) is called, done counts up to total, total does not change."""
    calls: list[tuple[int, int]] = []
    _small_run(sampler, generator=_seeded(0), progress=lambda done, total: calls.append((done, total)))
    if not calls:
        return [CheckResult("progress callback", "never called", "called with (done, total)", False)]
    totals = {total for _, total in calls}
    dones = [done for done, _ in calls]
    ok = len(totals) == 1 and dones == sorted(dones) and dones[-1] == calls[-1][1] and dones[0] >= 1
    return [
        CheckResult(
            "progress callback",
            f"{len(calls)} calls, done {dones[0]}..{dones[-1]} of {sorted(totals)}",
            "done rising to one fixed total",
            ok,
        )
    ]


def sampler_shape_device(sampler: Component) -> list[CheckResult]:
    """Samples have the shape asked for (vectors and images) on the device asked for."""
    torch = _torch()
    from workbench.exact import GaussianMixtureDenoiser

    results = []
    x = _small_run(sampler, generator=_seeded(0), shape=(5, 2), device="cpu")
    results.append(CheckResult("shape and device (vectors)", f"{tuple(x.shape)} on {x.device}", "(5, 2) on cpu",
                               tuple(x.shape) == (5, 2) and x.device.type == "cpu"))
    diffusion = _diffusion(SAMPLER_T)
    means = torch.stack([torch.full((1, 2, 3), -0.5, dtype=torch.float64), torch.full((1, 2, 3), 0.5, dtype=torch.float64)])
    model = GaussianMixtureDenoiser(diffusion, means, stds=0.1)
    x = sampler.sample(model, diffusion, (3, 1, 2, 3), generator=_seeded(0))
    results.append(CheckResult("shape and device (images)", f"{tuple(x.shape)} on {x.device}", "(3, 1, 2, 3) on cpu",
                               tuple(x.shape) == (3, 1, 2, 3) and x.device.type == "cpu" and bool(torch.isfinite(x).all())))
    if torch.cuda.is_available():
        x = _small_run(sampler, generator=torch.Generator("cuda").manual_seed(0), shape=(4, 2))
        results.append(CheckResult("device follows the generator", str(x.device), "cuda", x.device.type == "cuda"))
    return results


def sampler_guidance(sampler: Component) -> list[CheckResult]:
    """Through the guidance wrapper (workbench.guidance.Guided) and the exact class-conditional denoiser of 3 modes:
    at s = 1 the samples of each class match that class's mode, at s = 0 they match the whole mixture, within
    FLOOR_MULTIPLE x the floor (distances averaged over the classes at s = 1, over two seeded runs)."""
    torch = _torch()
    from workbench.distances import sliced_wasserstein
    from workbench.guidance import Guided, balanced_labels

    three = torch.tensor([[-0.6, -0.4], [0.5, -0.5], [0.0, 0.6]], dtype=torch.float64)
    _, diffusion, exact = _exact_model(three, 0.1, None, "eps", "fixed_small", SAMPLER_T)
    labels = balanced_labels(SAMPLES, 3)

    def target(component, n: int, seed: int):
        """What an exact chain ends at, E[x0 | x_0 (, class)], for draws of one component (None: the mixture)."""
        x0 = exact.sample_data(n, _seeded(seed), component=component).to(torch.float64)
        t = torch.zeros(n, dtype=torch.long)
        x_t = diffusion.q_sample(x0, t, torch.randn(x0.shape, generator=_seeded(seed + 7), dtype=torch.float64))
        return exact.posterior_mean(x_t, t, None if component is None else torch.full((n,), component))

    results = []
    for scale, groups in ((1.0, [0, 1, 2]), (0.0, [None])):
        references = {k: target(k, REFERENCE, 999) for k in groups}

        def distance(x, k):
            return sliced_wasserstein(x, references[k], projections=128, generator=_seeded(0))

        def score(draw) -> float:
            if groups == [None]:
                return distance(draw(None), None)
            return sum(distance(draw(k), k) for k in groups) / len(groups)

        guided = Guided(exact, labels, scale, null_label=3)
        runs = [sampler.sample(guided, diffusion, (SAMPLES, 2), generator=_seeded(s)) for s in (0, 1)]
        ours = sum(score(lambda k, x=x: x if k is None else x[labels == k]) for x in runs) / 2
        floor = sum(
            score(lambda k, s=s: target(k, SAMPLES if k is None else int((labels == k).sum()), s)) for s in (100, 200, 300, 400)
        ) / 4
        what = "each class its own mode" if scale else "the mixture"
        results.append(CheckResult(
            f"guidance s = {scale:g}: {what}",
            f"SW {ours:.4f} = {ours / floor:.2f} x floor {floor:.4f}",
            f"{FLOOR_MULTIPLE} x floor",
            ours <= FLOOR_MULTIPLE * floor,
        ))
    return results


def sampler_nfe_table(sampler: Component, steps: list[int] = (5, 10, 20, 50, 100)) -> list[dict[str, Any]]:
    """Distance to the exact chain's output against model evaluations, for a sampler with a `steps` option.

    Rows {steps, evaluations, sw, floor_multiple} on the 8-narrow-mode mixture (eps, fixed_small), one seeded
    run of SAMPLES each; evaluations are counted by the model, not read off the option.
    """
    from workbench.distances import sliced_wasserstein
    from workbench.exact import circle_means

    if "steps" not in type(sampler).model_fields:
        raise CheckError(f"sampler '{sampler.name}' has no `steps` option: no table of distance against evaluations")
    model, diffusion, exact = _exact_model(circle_means(), 0.05, None, "eps", "fixed_small", SAMPLER_T)
    reference = _chain_target(exact, diffusion, REFERENCE, 999)

    def distance(x):
        return sliced_wasserstein(x, reference, projections=128, generator=_seeded(0))

    floor = sum(distance(_chain_target(exact, diffusion, SAMPLES, s)) for s in (100, 200, 300, 400)) / 4
    rows = []
    for n in steps:
        exact.evaluations = 0
        x = sampler.model_copy(update={"steps": n}).sample(exact, diffusion, (SAMPLES, 2), generator=_seeded(0))
        sw = distance(x)
        rows.append({"steps": n, "evaluations": exact.evaluations, "sw": sw, "floor_multiple": sw / floor})
    return rows


# --- backbones --------------------------------------------------------------------------------

DATA_SHAPES = [(2,), (5,), (1, 8, 8), (3, 8, 8), (1, 16, 16)]
"""Shapes a backbone is tried on; the ones whose build raises ConfigError are the ones it does not claim."""


def _claimed(backbone: Component) -> list[tuple[int, ...]]:
    claimed = []
    for shape in DATA_SHAPES:
        try:
            with _torch().device("meta"):
                backbone.build(shape, shape[0])
        except ConfigError:
            continue
        claimed.append(shape)
    return claimed


def _build(backbone: Component, shape, out_channels: int, seed: int = 0, **kwargs):
    torch = _torch()
    torch.manual_seed(seed)
    return backbone.build(shape, out_channels, **kwargs)


def _inputs(shape, batch: int = 2, seed: int = 1):
    torch = _torch()
    g = _seeded(seed)
    return torch.randn(batch, *shape, generator=g), torch.tensor([0, 500][:batch] + [1] * max(0, batch - 2))


def backbone_shapes(backbone: Component) -> list[CheckResult]:
    """For each data shape it claims, output [B, out_channels, ...] for out_channels = C and 2C (learned variance)."""
    torch = _torch()
    claimed = _claimed(backbone)
    if not claimed:
        return [CheckResult("claims a data shape", "none of " + ", ".join(map(str, DATA_SHAPES)), "at least one", False)]
    results = []
    for shape in claimed:
        for k in (1, 2):
            out_channels = k * shape[0]
            net = _build(backbone, shape, out_channels)
            x, t = _inputs(shape)
            with torch.no_grad():
                out = net(x, t)
            want = (2, out_channels, *shape[1:])
            results.append(CheckResult(f"output shape {shape}, out_channels {out_channels}", str(tuple(out.shape)),
                                       str(want), tuple(out.shape) == want and bool(torch.isfinite(out).all())))
    return results


def _perturbed(net, seed: int = 3):
    """The network with every parameter moved by seeded noise: a zero-initialised output layer no longer hides t."""
    torch = _torch()
    g = _seeded(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return net


def _accepts_labels(backbone: Component, shape) -> bool:
    try:
        with _torch().device("meta"):
            backbone.build(shape, shape[0], num_classes=3)
    except TypeError:
        return False
    return True


def backbone_depends_on_t(backbone: Component) -> list[CheckResult]:
    """The output at t = 0 and t = 500 differs for the same x (and for y = 0 and 1 where it takes labels)."""
    torch = _torch()
    claimed = _claimed(backbone)
    if not claimed:
        return []
    shape = claimed[0]
    x = torch.randn(1, *shape, generator=_seeded(1)).expand(2, *shape)
    t = torch.tensor([0, 500])
    net = _perturbed(_build(backbone, shape, shape[0]))
    with torch.no_grad():
        out = net(x, t)
    gap = float((out[0] - out[1]).abs().max())
    results = [CheckResult("output depends on t", f"max |out(t=0) - out(t=500)| = {gap:.3g}", "> 0", gap > 0)]
    if _accepts_labels(backbone, shape):
        net = _perturbed(_build(backbone, shape, shape[0], num_classes=3))
        with torch.no_grad():
            out = net(x, torch.tensor([7, 7]), torch.tensor([0, 1]))
        gap = float((out[0] - out[1]).abs().max())
        results.append(CheckResult("output depends on y", f"max |out(y=0) - out(y=1)| = {gap:.3g}", "> 0", gap > 0))
    return results


def backbone_seeded_init(backbone: Component) -> list[CheckResult]:
    """Two builds after torch.manual_seed(0) have bitwise the same parameters."""
    torch = _torch()
    results = []
    for shape in _claimed(backbone)[:1]:
        a, b = _build(backbone, shape, shape[0]).state_dict(), _build(backbone, shape, shape[0]).state_dict()
        same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        results.append(CheckResult("seeded initialisation repeats", "bitwise equal" if same else "differs", "bitwise equal", same))
    return results


def backbone_gradients(backbone: Component) -> list[CheckResult]:
    """After one backward pass of a loss on the output, every parameter has a finite gradient."""
    torch = _torch()
    results = []
    for shape in _claimed(backbone)[:1]:
        conditional = _accepts_labels(backbone, shape)
        net = _build(backbone, shape, shape[0], **({"num_classes": 3} if conditional else {}))
        x, t = _inputs(shape)
        out = net(x, t, torch.tensor([0, 3])) if conditional else net(x, t)
        out.square().mean().backward()
        names = [n for n, p in net.named_parameters() if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
        total = sum(1 for _ in net.parameters())
        results.append(CheckResult("every parameter gets a gradient",
                                   f"{total - len(names)} of {total}" + (f" (missing: {', '.join(names[:3])})" if names else ""),
                                   f"all {total}", not names))
    return results


def backbone_state_round_trip(backbone: Component) -> list[CheckResult]:
    """state_dict() loaded into a differently seeded build gives bitwise the same output."""
    torch = _torch()
    results = []
    for shape in _claimed(backbone)[:1]:
        a = _perturbed(_build(backbone, shape, shape[0], seed=0))
        b = _build(backbone, shape, shape[0], seed=1)
        b.load_state_dict(a.state_dict())
        a.eval(), b.eval()
        x, t = _inputs(shape)
        with torch.no_grad():
            same = torch.equal(a(x, t), b(x, t))
        results.append(CheckResult("state_dict round-trips", "same output" if same else "outputs differ", "bitwise equal", same))
    return results


# --- losses -----------------------------------------------------------------------------------

LOSS_T = 50
BOUND_POINTS = 2000
Z_LIMIT = 4.0
"""Two unbiased estimates of one number agree within 4 combined standard errors: a correct loss fails
with probability 6e-5 (two-sided normal tail)."""


def _tiny_net(dim: int, out: int, seed: int = 0):
    """A small MLP model(x_t, t) on x_t and a sinusoidal embedding of t, in float64."""
    torch = _torch()
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("freqs", torch.exp(-math.log(1000.0) * torch.arange(4, dtype=torch.float64) / 4))
            self.net = nn.Sequential(nn.Linear(dim + 8, 32), nn.SiLU(), nn.Linear(32, out)).double()

        def forward(self, x, t):
            angles = t.to(x.dtype)[:, None] * self.freqs
            return self.net(torch.cat([x, angles.sin(), angles.cos()], dim=1))

    torch.manual_seed(seed)
    return Tiny()


def _parameterizations(loss: Component) -> list[tuple[str, str]]:
    accepted = []
    for prediction in ("eps", "x0", "v"):
        for variance in ("fixed_small", "fixed_large", "learned_range"):
            try:
                loss.check(prediction, variance)
            except ConfigError:
                continue
            accepted.append((prediction, variance))
    return accepted


def _grid_points():
    """Eight 2-D points on the 17-level grid of [-1, 1]: discrete data of known entropy (3 bits)."""
    torch = _torch()
    return torch.tensor(
        [[-1, -1], [-1, 1], [1, -1], [1, 1], [0, 0], [0.5, -0.5], [-0.5, 0.5], [1, 0]], dtype=torch.float64
    )


def loss_finite_differentiable(loss: Component) -> list[CheckResult]:
    """For every (prediction, variance) the loss accepts: a finite loss [B] whose gradient reaches the model, finitely."""
    torch = _torch()
    accepted = _parameterizations(loss)
    if not accepted:
        return [CheckResult("accepts a parameterization", "check() refuses all", "at least one", False)]
    results = []
    x0 = _grid_points()[torch.randint(0, 8, (64,), generator=_seeded(0))]
    for prediction, variance in accepted:
        diffusion = _diffusion(LOSS_T, prediction, variance, "cosine")
        net = _tiny_net(2, loss.out_channels(2, variance))
        value = loss.for_data(17)(net, diffusion, x0, generator=_seeded(1))
        ok = tuple(value.shape) == (64,) and bool(torch.isfinite(value).all())
        value.mean().backward()
        grads = [p.grad for p in net.parameters()]
        reached = all(g is not None and bool(torch.isfinite(g).all()) for g in grads) and any(
            bool(g.abs().sum() > 0) for g in grads if g is not None
        )
        results.append(CheckResult(f"finite and differentiable ({prediction}, {variance})",
                                   f"loss {tuple(value.shape)} mean {float(value.detach().mean()):.4g}, gradient "
                                   + ("finite" if reached else "missing or not finite"),
                                   "finite [B], finite non-zero gradient", ok and reached))
    return results


def loss_out_channels(loss: Component) -> list[CheckResult]:
    """out_channels is C for a fixed variance and 2C for learned_range, for C = 1 and 3."""
    results = []
    for _, variance in dict.fromkeys((v, v) for _, v in _parameterizations(loss)):
        got = [loss.out_channels(c, variance) for c in (1, 3)]
        want = [2, 6] if variance == "learned_range" else [1, 3]
        results.append(CheckResult(f"out_channels ({variance})", f"C = 1, 3 -> {got}", str(want), got == want))
    return results


def loss_unit_weights(loss: Component) -> list[CheckResult]:
    """terms(..., weights = 1) is terms(..., weights = None): unit importance weights change nothing."""
    torch = _torch()
    prediction, variance = _parameterizations(loss)[0]
    diffusion = _diffusion(LOSS_T, prediction, variance, "cosine")
    net = _tiny_net(2, loss.out_channels(2, variance))
    x0 = _grid_points()
    t = torch.tensor([0, 1, 5, 10, 20, 30, 40, 49])
    noise = torch.randn(x0.shape, generator=_seeded(2), dtype=torch.float64)
    sized = loss.for_data(17)
    with torch.no_grad():
        a = sized.terms(net, diffusion, x0, t, noise).loss
        b = sized.terms(net, diffusion, x0, t, noise, torch.ones(len(x0), dtype=torch.float64)).loss
    gap = float((a - b).abs().max())
    return [CheckResult("unit weights change nothing", f"max difference {gap:.3g}", "<= 1e-12 (float64 round-off)", gap <= 1e-12)]


def loss_importance_weights(loss: Component) -> list[CheckResult]:
    """Importance weights keep the mean: sum_t p_t terms(t, w_t = 1/(T p_t)) = mean_t terms(t) for every example.

    The weights multiply the part of the loss that depends on t (Nichol & Dhariwal 2021, sec. 3.3), so with
    the same noise at each t this is an identity, exact up to float64 round-off: no Monte-Carlo error.
    """
    torch = _torch()
    prediction, variance = _parameterizations(loss)[0]
    diffusion = _diffusion(LOSS_T, prediction, variance, "cosine")
    net = _tiny_net(2, loss.out_channels(2, variance))
    x0 = _grid_points()
    n, T = len(x0), LOSS_T
    draws = x0.repeat_interleave(T, 0)
    t = torch.arange(T).repeat(n)
    noise = torch.randn(draws.shape, generator=_seeded(2), dtype=torch.float64)
    p = torch.arange(1, T + 1, dtype=torch.float64) ** 2
    p = p / p.sum()  # far from uniform: p_{T-1} / p_0 = T^2
    sized = loss.for_data(17)
    with torch.no_grad():
        uniform = sized.terms(net, diffusion, draws, t, noise).loss.view(n, T).mean(1)
        weighted = sized.terms(net, diffusion, draws, t, noise, 1 / (T * p[t])).loss.view(n, T)
        weighted = (weighted * p).sum(1)
    gap = float(((weighted - uniform).abs() / uniform.abs().clamp(min=1e-300)).max())
    return [CheckResult("importance weights keep the mean", f"largest relative difference {gap:.3g}",
                        "<= 1e-9 (float64 round-off over T terms)", gap <= 1e-9)]


def loss_bound_matches_nll(loss: Component) -> list[CheckResult]:
    """Where terms() returns the bound L_t: prior + T x L_t, averaged over t, is `wb.nll`'s total.

    Exact denoiser of 8 points on the 17-level grid, T = 50, 2000 points; for each point every t once
    (stratified, so the large decoder term at t = 0 adds no sampling noise), compared point by point with
    nll's bound (paired): the limit is Z_LIMIT standard errors of the mean difference.
    """
    torch = _torch()
    from workbench.components import LossTerms
    from workbench.exact import GaussianMixtureDenoiser
    from workbench.likelihood import nll, prior_bpd

    fixed = [(p, v) for p, v in _parameterizations(loss) if v != "learned_range"]
    prediction, variance = fixed[0] if fixed else (_parameterizations(loss)[0][0], "learned_range")
    diffusion = _diffusion(LOSS_T, prediction, variance, "cosine")
    mean_process = _diffusion(LOSS_T, prediction, "fixed_small", "cosine")
    exact = GaussianMixtureDenoiser(mean_process, _grid_points())
    # learned_range with v = -1 is the (clipped) posterior variance: nll's fixed_small
    model = _LearnedRange(exact, -1.0) if variance == "learned_range" else exact
    nll_process = mean_process if variance == "learned_range" else diffusion
    g = _seeded(0)
    n, T = BOUND_POINTS, LOSS_T
    x0 = exact.sample_data(n, g).to(torch.float64)
    reference = nll(exact, nll_process, x0, levels=17, generator=g)
    draws = x0.repeat_interleave(T, 0)
    t = torch.arange(T).repeat(n)
    noise = torch.randn(draws.shape, generator=g, dtype=torch.float64)
    with torch.no_grad():
        terms = loss.for_data(17).terms(model, diffusion, draws, t, noise)
    if not isinstance(terms, LossTerms) or terms.bound is None:
        return [CheckResult("bound averages to wb.nll", "no bound (not a bound-type loss)", "n/a", True)]
    ours = (prior_bpd(diffusion, draws) + T * terms.bound).view(n, T).mean(1)
    d = ours - reference
    se = _se(d)
    gap = float(d.mean())
    return [CheckResult(
        "bound averages to wb.nll",
        f"{float(ours.mean()):.4f} vs {float(reference.mean()):.4f} bits/dim ({gap / se:+.1f} standard errors)",
        f"{Z_LIMIT:g} standard errors ({Z_LIMIT * se:.2g})",
        abs(gap) <= Z_LIMIT * se,
    )]


def loss_min_snr(loss: Component) -> list[CheckResult]:
    """A loss with a `min_snr_gamma` option weights every prediction's error to min(SNR, gamma) |x0 error|^2.

    Hang et al. 2023's definition, whatever the model predicts: with eps, x0 or v outputs drawn at random,
    the loss per example equals min(SNR_t, gamma) times the mean squared error of the x0 the output implies,
    an identity to float64 round-off (a v-prediction weight of min(SNR, gamma) / SNR instead of
    min(SNR, gamma) / (SNR + 1) is off by (SNR + 1) / SNR). Losses without the option: not applicable.
    """
    torch = _torch()
    if "min_snr_gamma" not in type(loss).model_fields:
        return [CheckResult("min-SNR weighting", "no min_snr_gamma option", "n/a", True)]
    gamma = loss.min_snr_gamma if loss.min_snr_gamma is not None else 5.0
    weighted = loss.model_copy(update={"min_snr_gamma": gamma})
    results = []
    g = _seeded(4)
    t = torch.tensor([0, 2, 5, 10, 20, 30, 40, 49])
    for prediction in ("eps", "x0", "v"):
        # fixed variances only: with a learned one a loss may add a bound term (hybrid) to the weighted mse
        variance = next((v for p, v in _parameterizations(loss) if p == prediction and v != "learned_range"), None)
        if variance is None:
            continue
        diffusion = _diffusion(LOSS_T, prediction, variance, "cosine")
        x0 = torch.rand(len(t), 3, generator=g, dtype=torch.float64) * 2 - 1
        noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
        mean_out = torch.randn(x0.shape, generator=g, dtype=torch.float64)
        out = mean_out
        with torch.no_grad():
            value = weighted.for_data(None).terms(lambda x, s: out, diffusion, x0, t, noise).loss
            if not isinstance(value, torch.Tensor):
                raise TypeError("terms().loss is not a tensor")
            x_t = diffusion.q_sample(x0, t, noise)
            x0_hat, _ = diffusion.predict_x0_eps(mean_out, x_t, t)
            snr = diffusion.snr(t).to(torch.float64)
            expected = snr.clamp(max=gamma) * ((x0_hat - x0) ** 2).mean(1)
        gap = float(((value - expected).abs() / expected.abs()).max())
        results.append(CheckResult(
            f"min-SNR weighting ({prediction})",
            f"largest relative difference from min(SNR, {gamma:g}) |x0 error|^2: {gap:.3g}",
            "<= 1e-9 (float64 round-off)", gap <= 1e-9,
        ))
    if not results:
        results.append(CheckResult("min-SNR weighting", "accepts no fixed variance", "n/a", True))
    return results


def _se(values) -> float:
    return float(values.std() / math.sqrt(len(values)))


# --- datasets ---------------------------------------------------------------------------------

DATASET_ITEMS = 256
"""A dataset streamed from disk (a torch Dataset) is checked on its first 256 examples."""


def _dataset_tensor(dataset: Component):
    """(the data as a tensor [N, *shape] or its first DATASET_ITEMS examples, how many there are)."""
    torch = _torch()
    data = dataset.load()
    if isinstance(data, torch.Tensor):
        return data, len(data)
    n = len(data)
    items = [data[i] for i in range(min(n, DATASET_ITEMS))]
    items = [item[0] if isinstance(item, (tuple, list)) else item for item in items]
    return torch.stack(items), n


def dataset_shape_range_levels(dataset: Component) -> list[CheckResult]:
    """Examples have the declared shape; values lie in [-1, 1]; with `levels` L they sit on the L-level grid."""
    torch = _torch()
    x, n = _dataset_tensor(dataset)
    shape = tuple(dataset.shape)
    results = [CheckResult("shape as declared", f"{n} x {tuple(x.shape[1:])}", f"N x {shape}",
                           tuple(x.shape[1:]) == shape and x.is_floating_point() and n > 0)]
    lo, hi = float(x.min()), float(x.max())
    results.append(CheckResult("values in [-1, 1]", f"min {lo:.4g}, max {hi:.4g}", "-1 <= x <= 1",
                               bool(torch.isfinite(x).all()) and lo >= -1 and hi <= 1))
    levels = dataset.levels
    if levels is None:
        results.append(CheckResult("levels consistent with the values", "levels = None (continuous)", "n/a", True))
    else:
        # x = 2k/(L-1) - 1 in float32: k = (x + 1)(L-1)/2 is an integer to within float32 round-off, 2^-23 (L-1)
        k = (x.to(torch.float64) + 1) * (levels - 1) / 2
        off = float((k - k.round()).abs().max())
        limit = 2.0**-23 * (levels - 1) * 4
        results.append(CheckResult("levels consistent with the values",
                                   f"largest distance to the {levels}-level grid {off:.3g} steps",
                                   f"<= {limit:.2g} (float32 round-off)", off <= limit))
    return results


def dataset_labels(dataset: Component) -> list[CheckResult]:
    """Where the set has classes: one label per example, each in 0..K-1, K = len(class_names)."""
    torch = _torch()
    names = dataset.class_names
    if names is None:
        return [CheckResult("labels in range", "no classes", "n/a", True)]
    labels = dataset.class_labels()
    _, n = _dataset_tensor(dataset)
    if labels is None:
        return [CheckResult("labels in range", "class_names but no class_labels()", "labels [N]", False)]
    lo, hi = int(labels.min()), int(labels.max())
    ok = labels.dtype == torch.long and len(labels) == n and lo >= 0 and hi < len(names)
    return [CheckResult("labels in range", f"{len(labels)} labels in {lo}..{hi}", f"{n} labels in 0..{len(names) - 1}", ok)]


def dataset_seeded(dataset: Component) -> list[CheckResult]:
    """Loading twice gives bitwise the same data; where the set has a `seed` option, another seed gives other data."""
    torch = _torch()
    a, _ = _dataset_tensor(dataset)
    b, _ = _dataset_tensor(type(dataset)(**dataset.model_dump()))
    results = [CheckResult("loads repeat bitwise", "bitwise equal" if torch.equal(a, b) else "differ", "bitwise equal",
                           torch.equal(a, b))]
    if "seed" in type(dataset).model_fields:
        c, _ = _dataset_tensor(dataset.model_copy(update={"seed": dataset.seed + 1}))
        differs = c.shape != a.shape or not torch.equal(a, c)
        results.append(CheckResult("another seed gives other data", "differs" if differs else "the same data",
                                   "differs", differs))
    return results


# --- metrics ----------------------------------------------------------------------------------

METRIC_POINTS = 1000


def _metric_evaluation(samples, shift: float = 0.0):
    """An Evaluation of 2-D mixture data (a fixed held-out set) with `samples` given, and as the model the exact
    denoiser of that mixture moved by `shift` (0: the data's own)."""
    torch = _torch()
    from workbench.components import Evaluation
    from workbench.exact import circle_means

    model, diffusion, _ = _exact_model(circle_means() + shift, 0.05, None, "eps", "fixed_small", 100)
    _, _, exact = _exact_model(circle_means(), 0.05, None, "eps", "fixed_small", 100)
    data = exact.sample_data(METRIC_POINTS, _seeded(11))
    return Evaluation(model=model, diffusion=diffusion, data=data, levels=None, sampler=None,
                      num_samples=len(samples), samples_given=samples.to(torch.float32), seed=0)


def _metric_value(metric: Component, samples, shift: float = 0.0) -> float:
    from workbench.components import MetricResult

    value = metric.compute(_metric_evaluation(samples, shift))
    return float(value.value if isinstance(value, MetricResult) else value)


METRIC_SHIFT = 0.3
"""The perturbation: samples and model moved by 0.3, half the distance between neighbouring modes (0.54)."""


def metric_orders_sets(metric: Component) -> list[CheckResult]:
    """On 2-D mixture data: fresh draws (and the exact model) score strictly better than the same moved by
    METRIC_SHIFT; seeded repeatability: one evaluation twice gives the same value."""
    from workbench.exact import circle_means

    _, _, exact = _exact_model(circle_means(), 0.05, None, "eps", "fixed_small", 100)
    fresh = exact.sample_data(METRIC_POINTS, _seeded(12))
    try:
        good, again = _metric_value(metric, fresh), _metric_value(metric, fresh)
    except (ConfigError, ValueError, NotImplementedError) as exc:
        return [CheckResult("scores 2-D data", f"does not apply: {exc}", "n/a", True, warning=True)]
    bad = _metric_value(metric, fresh + METRIC_SHIFT, METRIC_SHIFT)
    better = good > bad if metric.higher_is_better else good < bad
    return [
        CheckResult("data scores better than perturbed data",
                    f"{good:.4g} vs {bad:.4g} ({'higher' if metric.higher_is_better else 'lower'} is better)",
                    "strictly better", better),
        CheckResult("seeded repeatability", f"{good:.6g} and {again:.6g}", "equal", good == again),
    ]


# --- the catalogue ----------------------------------------------------------------------------

CHECKS: dict[str, list[tuple[str, Callable[[Component], list[CheckResult]]]]] = {
    "scheduler": [
        ("betas", scheduler_betas),
        ("monotone", scheduler_monotone),
        ("deterministic", scheduler_deterministic),
        ("terminal_snr", scheduler_terminal_snr),
    ],
    "sampler": [
        ("matches_data", sampler_matches_data),
        ("seeded", sampler_seeded),
        ("progress", sampler_progress),
        ("shape_device", sampler_shape_device),
        ("guidance", sampler_guidance),
    ],
    "backbone": [
        ("shapes", backbone_shapes),
        ("depends_on_t", backbone_depends_on_t),
        ("seeded_init", backbone_seeded_init),
        ("gradients", backbone_gradients),
        ("state_round_trip", backbone_state_round_trip),
    ],
    "loss": [
        ("finite_differentiable", loss_finite_differentiable),
        ("out_channels", loss_out_channels),
        ("unit_weights", loss_unit_weights),
        ("importance_weights", loss_importance_weights),
        ("bound_matches_nll", loss_bound_matches_nll),
        ("min_snr", loss_min_snr),
    ],
    "dataset": [
        ("shape_range_levels", dataset_shape_range_levels),
        ("labels", dataset_labels),
        ("seeded", dataset_seeded),
    ],
    "metric": [
        ("orders_sets", metric_orders_sets),
    ],
}


def _instance(kind: str, component: type[Component] | Component, options: dict[str, Any]) -> Component:
    if isinstance(component, Component):
        if options:  # validated, as the class would be
            return _instance(kind, type(component), {**component.model_dump(exclude_unset=True), **options})
        return component
    base = KINDS[kind]
    if not (isinstance(component, type) and issubclass(component, base)):
        raise CheckError(f"{component!r} is not a subclass of workbench.{base.__name__}")
    try:
        return component(**options)
    except Exception as exc:
        raise CheckError(f"{kind} '{component.name}' does not accept these options: {exc}") from None


def checks_for(kind: str, component: type[Component] | Component, **options: Any) -> list[Check]:
    """The checks of `kind` bound to the component (a class, built with `options`, or an instance)."""
    kind = normalize_kind(kind)
    instance = _instance(kind, component, options)
    return [Check(kind, name, fn, instance) for name, fn in CHECKS[kind]]


def check_component(kind: str, component: type[Component] | Component, **options: Any) -> list[CheckResult]:
    """Every check of `kind` on the component; a check that raises is a failed result naming the exception."""
    return [result for check in checks_for(kind, component, **options) for result in check.results()]


def check_scheduler(component, **options):
    return check_component("scheduler", component, **options)


def check_sampler(component, **options):
    return check_component("sampler", component, **options)


def check_backbone(component, **options):
    return check_component("backbone", component, **options)


def check_loss(component, **options):
    return check_component("loss", component, **options)


def parametrize_with_checks(kind: str, component: type[Component] | Component, **options: Any):
    """A pytest mark: the decorated test gets each check as `check` (call it; it raises on failure), ids by name."""
    import pytest

    checks = checks_for(kind, component, **options)
    return pytest.mark.parametrize("check", checks, ids=[c.name for c in checks])


def check_registered(registry: Any, kind: str, name: str, options: dict[str, Any] | None = None) -> list[CheckResult]:
    """`wb check KIND NAME`: the named component of the registry (built-in or plugin), checked.

    A plugin that failed to import is reported with its import error (CheckError), as is an unknown name.
    """
    kind = registry.kind(kind)
    try:
        entry = registry.get(kind, name)
    except ConfigError as exc:
        plugin = name.rpartition(":")[0] or None
        broken = [p for p in registry.plugins if p.error is not None and (plugin is None or plugin in (p.name, p.distribution))]
        if broken:
            reasons = "; ".join(f"plugin '{p.name}' failed to import: {p.error}" for p in broken)
            raise CheckError(f"{exc.message}; {reasons}", hint="fix the import error, then run `wb check` again") from None
        raise
    from workbench.registry import validate_component

    instance = validate_component(entry, dict(options or {}))
    return check_component(kind, instance)


def check_named(registry: Any, kind: str, name: str, assignments: list[str] = ()) -> list[CheckResult]:
    """`wb check KIND NAME --set option=value ...`: the options parsed as TOML values, then `check_registered`."""
    return check_registered(registry, kind, name, parse_options(assignments, "--set", "steps=20"))


def nfe_table_named(registry: Any, name: str, assignments: list[str] = (), steps: list[int] = (5, 10, 20, 50, 100)):
    """`wb check sampler NAME --nfe 5,10,20`: the named sampler's table of distance against model evaluations."""
    from workbench.registry import validate_component

    sampler = validate_component(registry.get("sampler", name), parse_options(assignments, "--set", "steps=20"))
    return sampler_nfe_table(sampler, list(steps))


def picture_named(registry: Any, name: str, assignments: list[str], path: Any) -> Any:
    """`wb check scheduler NAME --picture PATH`: the named scheduler's forward process, as a PNG."""
    from workbench.registry import validate_component

    scheduler = validate_component(registry.get("scheduler", name), parse_options(assignments, "--set", "timesteps=100"))
    return scheduler_picture(scheduler, path)
