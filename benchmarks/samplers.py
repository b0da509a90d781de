"""Samplers, ours against diffusers': quality per model evaluation, and the cost of each evaluation.

Every quality figure comes from the exact denoiser of a known distribution (8
Gaussians of std 0.05 on a circle of radius 0.7; workbench.exact), so that every
difference between two rows is the sampler's, not a trained network's. Our
`ddpm`, `ddim` and `dpm_solver` and diffusers' DDPMScheduler, DDIMScheduler and
DPMSolverMultistepScheduler (driven through their own `set_timesteps` / `step`
loop) call the same model function on the same schedule's betas, from the same
x_T: run s of every sampler draws x_T (and DDPM its step noise) from a generator
seeded s, so that our ddpm and DDPMScheduler walk the same chain to 1e-4.

Sample quality is a sliced Wasserstein distance (SW) to a fresh reference set of
2N points, between *mode-balanced* sets: each set is cut to the same number of
points at every mode (the nearest one). Raw, the SW of N points measures mainly
the multinomial noise of the 8 mode weights, which says nothing about a sampler
here (the mixture, x_T and every update are symmetric under rotations by 45°,
but for the [-1, 1] clip, which hardly ever binds, so every sampler's expected
weights are 1/8). Between fresh data sets of 4000 points, raw SW is 0.025 +- 0.008,
balanced 0.0039 +- 0.0003; raw, a 30-step ddpm that strands 6% of its samples
between the modes scored as well as the 1000-step chain (0.027 both).

1. Quality: SW (balanced, and raw for comparison) for N samples, next to the
   same for N fresh data points; and two sharper views of the fine detail: the
   RMS width of the modes against the exact one (the chain ends at E[x0 | x_0],
   a shade narrower than the data) and the share of samples stranded between
   modes (> 4 stds from every mode; fresh data: exp(-8) = 0.03%). diffusers'
   rows use each scheduler's own default step grid; "(our grid)" walks ours,
   a check that the difference is the grid.
2. Evaluations to reach DDPM-1000 quality: the target is our ddpm's SW at all
   1000 steps (mean over runs) plus one standard error of such a mean (the SW's
   run-to-run spread, measured on fresh data sets of N points, over sqrt(runs));
   `--tolerance 0.05` uses 5% instead. Each sampler sweeps its step count up
   and stops at the first that reaches the target.
   Goal: dpm_solver reaches it in 20 evaluations.
3. Time per model evaluation, ours against diffusers, pair by pair on the same
   chain: one full sampling run of each, with a model that costs nothing (it
   returns a precomputed tensor: the sampler's own loop) and with the exact
   denoiser, timed in alternation (common.interleaved).
   Goal: dpm_solver at least as fast per evaluation as DPMSolverMultistepScheduler.
4. Overhead: our samplers' loop per model evaluation, as a fraction of one
   forward pass of a small U-Net (the `digits` experiment's, on 1x8x8) and of the
   2-D MLP (`exp1`'s). Goal: under 2% of the U-Net's time.

One thread unless --threads says otherwise: the tensors are a few thousand 2-D
points, which a second thread only slows down (on a shared 2-core machine, the
exact denoiser by up to 20x). Without diffusers (`pip install -e '.[bench]'`)
its rows are skipped and ours still run.

    python benchmarks/samplers.py [--samples 4000] [--seeds 2] [--schedule linear] [--smoke] [--threads N]
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from common import interleaved, median, median_ratio, optional_diffusers, parser, setup, table

import workbench as wb
from workbench.distances import sliced_wasserstein
from workbench.exact import GaussianMixtureDenoiser, circle_means

T = 1000
MODE_STD = 0.05
PROJECTIONS = 64  # SW directions; in 2-D, 64 give the same figures as 256 (to 1%) at a fifth of the time
FRESH_SETS = 8  # fresh data sets that measure the SW's run-to-run spread
SWEEP = [5, 10, 15, 20, 25, 30, 50, 100, 250, 500, 1000]
SMOKE_SWEEP = [5, 20, 1000]

OURS = ["ddpm", "ddim", "dpm_solver"]
THEIRS = ["DDPMScheduler", "DDIMScheduler", "DPMSolverMultistepScheduler"]
# (sampler, steps, options): the rows of the quality table.
QUALITY_ROWS = [
    ("ddpm", 1000, {}), ("ddpm", 250, {}), ("ddpm", 100, {}),
    ("DDPMScheduler", 1000, {}), ("DDPMScheduler", 250, {}), ("DDPMScheduler", 100, {}),
    ("ddim", 10, {}), ("ddim", 20, {}), ("ddim", 50, {}), ("ddim", 100, {}),
    ("ddim", 20, {"spacing": "linspace"}), ("ddim", 50, {"spacing": "linspace"}), ("ddim", 20, {"spacing": "leading"}),
    ("DDIMScheduler", 10, {}), ("DDIMScheduler", 20, {}), ("DDIMScheduler", 50, {}), ("DDIMScheduler", 100, {}),
    ("dpm_solver", 10, {}), ("dpm_solver", 15, {}), ("dpm_solver", 20, {}), ("dpm_solver", 25, {}),
    ("dpm_solver", 20, {"spacing": "linspace"}),
    ("DPMSolverMultistepScheduler", 10, {}), ("DPMSolverMultistepScheduler", 15, {}),
    ("DPMSolverMultistepScheduler", 20, {}), ("DPMSolverMultistepScheduler", 25, {}),
    ("DPMSolverMultistepScheduler", 20, {"grid": "ours"}),
]
SMOKE_QUALITY_ROWS = [
    ("ddpm", 1000, {}), ("DDPMScheduler", 1000, {}), ("ddim", 20, {}), ("DDIMScheduler", 20, {}),
    ("dpm_solver", 20, {}), ("DPMSolverMultistepScheduler", 20, {}),
    ("DPMSolverMultistepScheduler", 20, {"grid": "ours"}),
]
# Ours, diffusers' equivalent, and the steps of one full run of each (our defaults), for the timing table.
PAIRS = [
    ("ddpm", "DDPMScheduler", 1000), ("ddim", "DDIMScheduler", 50), ("dpm_solver", "DPMSolverMultistepScheduler", 20)
]

# sample(model, shape, generator) -> x0: one configured sampler, ours or diffusers'.
SampleFn = Callable[[Callable, tuple[int, ...], torch.Generator], torch.Tensor]


# --- the samplers, ours and diffusers', behind one call -----------------------------------------


def ours(diffusion: wb.Diffusion, name: str, steps: int, **options) -> SampleFn:
    """Our sampler `name` with `steps` model calls (ddpm at steps = T: the full chain)."""
    sampler = wb.build("sampler", name, steps=None if name == "ddpm" and steps == T else steps, **options)
    return lambda model, shape, g: sampler.sample(model, diffusion, shape, generator=g)


def diffusers_loop(scheduler, timesteps: dict, step_kwargs: Callable[[torch.Generator], dict]) -> SampleFn:
    """diffusers' own loop: set_timesteps, then one `step` per model call; x_T is the generator's first draw.

    As its pipelines do: the model gets t as a LongTensor [B], `step` the
    scheduler's own timestep, and `return_dict=False` skips the output object.
    """

    def sample(model: Callable, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
        scheduler.set_timesteps(**timesteps)
        kwargs = step_kwargs(g)
        x = torch.randn(shape, generator=g)
        for t in scheduler.timesteps:
            output = model(x, torch.full(shape[:1], int(t), dtype=torch.long))
            x = scheduler.step(output, t, x, return_dict=False, **kwargs)[0]
        return x

    return sample


def theirs(diffusers, diffusion: wb.Diffusion, name: str, steps: int, grid: str = "theirs") -> SampleFn:
    """diffusers' scheduler `name` on our betas, with eps prediction and the fixed_small variance.

    grid = "theirs": the scheduler's own default step grid (DDPM and DDIM 'leading',
    0, k, 2k, ...; DPM-Solver 'linspace' over [0, T], its last call at t = T/steps).
    grid = "ours": exactly our sampler's chain, as tests/test_samplers.py checks to
    1e-4: our grid given as `timesteps=`, and for DDIM, whose `set_timesteps` takes
    no grid, the 'leading' one with eps recomputed from the clipped x0 (as ours does).
    DPM-Solver runs diffusers' default order 2 on its own grid, our default 3 on ours.
    DDPM and DDIM clip x0 to [-1, 1], as ours do; DPM-Solver has no plain clipping
    (only dynamic thresholding, a per-sample quantile), so it runs unclipped.
    """
    betas = diffusion.betas.numpy()
    if name == "DDPMScheduler":
        scheduler = diffusers.DDPMScheduler(
            num_train_timesteps=T, trained_betas=betas, variance_type="fixed_small", clip_sample=True
        )
        # At all T steps both grids are the same; asked as a number, diffusers skips a per-step grid lookup.
        chain = {"timesteps": ours_grid(diffusion, "ddpm", steps)} if grid == "ours" and steps < T else {}
        return diffusers_loop(scheduler, chain or {"num_inference_steps": steps}, lambda g: {"generator": g})
    if name == "DDIMScheduler":
        scheduler = diffusers.DDIMScheduler(
            num_train_timesteps=T, trained_betas=betas, clip_sample=True, set_alpha_to_one=True, steps_offset=0,
            timestep_spacing="leading", prediction_type="epsilon",
        )
        step = {"eta": 0.0, "use_clipped_model_output": grid == "ours"}
        return diffusers_loop(scheduler, {"num_inference_steps": steps}, lambda g: step)
    if name == "DPMSolverMultistepScheduler":
        # Their default order is 2; on our grid, our default order (3M), so that the chain is ours.
        order = wb.build("sampler", "dpm_solver").order if grid == "ours" else 2
        scheduler = diffusers.DPMSolverMultistepScheduler(
            num_train_timesteps=T, trained_betas=betas, algorithm_type="dpmsolver++", solver_order=order,
            solver_type="midpoint", lower_order_final=True, final_sigmas_type="zero", prediction_type="epsilon",
            timestep_spacing="linspace",
        )
        chain = {"timesteps": ours_grid(diffusion, "dpm_solver", steps)} if grid == "ours" else {}
        return diffusers_loop(scheduler, chain or {"num_inference_steps": steps}, lambda g: {})
    raise ValueError(f"not a diffusers scheduler here: {name}")


def ours_grid(diffusion: wb.Diffusion, name: str, steps: int) -> list[int]:
    return wb.build("sampler", name, steps=steps).timesteps(diffusion)


# --- the problem, and how a sampler's output is scored ------------------------------------------


@dataclass
class Result:
    evals: int  # model calls per run, as counted by the model
    sw: float  # SW between mode-balanced sets
    sw_raw: float  # SW between the sets as drawn
    width: float  # RMS mode width over the exact one
    strays: float  # share stranded between modes
    seconds: float  # wall time of one sampling run


class Bench:
    """The 8-Gaussian problem and its exact denoiser; each sampler's result on it, measured once and kept."""

    def __init__(self, diffusers, samples: int, seeds: int, schedule: str) -> None:
        self.diffusers = diffusers
        self.samples, self.seeds, self.schedule = samples, seeds, schedule
        self.diffusion = wb.Diffusion(wb.build("scheduler", schedule, timesteps=T).betas())
        self.means = circle_means()
        self.model = GaussianMixtureDenoiser(self.diffusion, self.means, stds=MODE_STD)
        self.reference = self.model.sample_data(2 * samples, torch.Generator().manual_seed(999))
        self.balanced_reference = self.balanced(self.reference)
        a2 = float(self.diffusion.alphas_cumprod[0])
        self.exact_width = MODE_STD * math.sqrt(a2 * MODE_STD**2 / (a2 * MODE_STD**2 + 1 - a2))
        self.results: dict[tuple, Result] = {}

    def build(self, name: str, steps: int, **options) -> SampleFn:
        """Any sampler by name: ours in lower case, diffusers' by its class name."""
        if name in OURS:
            return ours(self.diffusion, name, steps, **options)
        return theirs(self.diffusers, self.diffusion, name, steps, **options)

    def balanced(self, x: torch.Tensor) -> torch.Tensor:
        """x cut to the same number of points at every mode (the nearest): the first ones, in x's random order."""
        nearest = torch.cdist(x.double(), self.means).argmin(dim=1)
        keep = int(torch.bincount(nearest, minlength=len(self.means)).min())
        return torch.cat([x[nearest == k][:keep] for k in range(len(self.means))])

    def distance(self, x: torch.Tensor, raw: bool = False) -> float:
        """SW to the reference, mode-balanced (or raw); a set with no point at some mode is infinitely far."""
        a, b = (x, self.reference) if raw else (self.balanced(x), self.balanced_reference)
        if len(a) == 0:
            return math.inf
        return sliced_wasserstein(a, b, projections=PROJECTIONS, generator=torch.Generator().manual_seed(0))

    def mode_width_and_strays(self, x: torch.Tensor) -> tuple[float, float]:
        """RMS distance per coordinate to the nearest mode, and the share of samples beyond 4 stds of every mode."""
        dist = torch.cdist(x.double(), self.means)
        nearest = dist.argmin(dim=1)
        width = float(((x.double() - self.means[nearest]) ** 2).mean().sqrt())
        strays = float((dist.min(dim=1).values > 4 * MODE_STD).double().mean())
        return width, strays

    def score(self, draws: list[torch.Tensor], evals: int, seconds: float) -> Result:
        """Means over the runs; all NaN when a run's samples are not all finite."""
        if not all(bool(x.isfinite().all()) for x in draws):
            return Result(evals, math.nan, math.nan, math.nan, math.nan, seconds)
        stats = [self.mode_width_and_strays(x) for x in draws]
        return Result(
            evals,
            statistics.mean(self.distance(x) for x in draws),
            statistics.mean(self.distance(x, raw=True) for x in draws),
            statistics.mean(s[0] for s in stats) / self.exact_width,
            statistics.mean(s[1] for s in stats),
            seconds,
        )

    def fresh(self, sets: int) -> list[torch.Tensor]:
        return [self.model.sample_data(self.samples, torch.Generator().manual_seed(100 + s)) for s in range(sets)]

    def measure(self, name: str, steps: int, **options) -> Result:
        """`seeds` runs of one sampler (run s from a generator seeded s), scored: means over the runs."""
        key = (name, steps, tuple(sorted(options.items())))
        if key not in self.results:
            sample = self.build(name, steps, **options)
            before, start = self.model.evaluations, time.perf_counter()
            draws = [sample(self.model, (self.samples, 2), torch.Generator().manual_seed(s)) for s in range(self.seeds)]
            seconds = (time.perf_counter() - start) / self.seeds
            self.results[key] = self.score(draws, (self.model.evaluations - before) // self.seeds, seconds)
        return self.results[key]


def label(name: str, options: dict) -> str:
    if name in THEIRS:
        return "diffusers " + name + (" (our grid)" if options.get("grid") == "ours" else "")
    return name + "".join(f" {k}={v}" for k, v in options.items())


def percent(share: float) -> str:
    return f"{100 * share:.2f}%"


# --- 1. quality ----------------------------------------------------------------------------------


def quality(bench: Bench, rows: list[tuple[str, int, dict]]) -> str:
    fresh = bench.score(bench.fresh(bench.seeds), 0, 0.0)
    out = [["fresh data (baseline)", "-", fresh.sw, fresh.sw_raw, fresh.width, percent(fresh.strays), "-"]]
    for name, steps, options in rows:
        if name in THEIRS and bench.diffusers is None:
            continue
        r = bench.measure(name, steps, **options)
        out.append([label(name, options), r.evals, r.sw, r.sw_raw, r.width, percent(r.strays), r.seconds])
    note = (
        f"{bench.samples} samples x {bench.seeds} runs per row (means over runs), {bench.schedule} schedule, T = {T}, "
        f"exact denoiser (eps prediction). SW: sliced Wasserstein distance ({PROJECTIONS} directions) to "
        f"{len(bench.reference)} fresh data points, both sets mode-balanced (raw: as drawn, dominated by the noise of "
        "the mode weights); width: RMS width of the modes over the exact one; stranded: share > 4 stds from every "
        "mode; time: one sampling run. diffusers' rows use each scheduler's default grid; '(our grid)' walks ours."
    )
    headers = ["sampler", "evals", "SW", "SW raw", "width/exact", "stranded", "time s"]
    return table("Sample quality against model evaluations", headers, out, note)


# --- 2. evaluations to reach DDPM-1000 quality --------------------------------------------------


@dataclass
class Target:
    sw: float
    reference: float  # our ddpm's SW at T steps
    how: str


def target(bench: Bench, tolerance: float | None, fresh_sets: int) -> Target:
    """Our ddpm at all T steps, plus one standard error of a mean over `seeds` runs (or a relative tolerance)."""
    reference = bench.measure("ddpm", T).sw
    if tolerance is not None:
        return Target(reference * (1 + tolerance), reference, f"{100 * tolerance:g}%")
    spread = statistics.stdev(bench.distance(x) for x in bench.fresh(fresh_sets))
    se = spread / math.sqrt(bench.seeds)
    return Target(
        reference + se, reference,
        f"one standard error, {se:.5f} ({100 * se / reference:.0f}%): the SW's run-to-run spread, {spread:.5f} "
        f"(sd over {fresh_sets} fresh data sets of {bench.samples} points), over sqrt({bench.seeds}) runs",
    )


def reach(bench: Bench, goal: Target, sweep: list[int]) -> tuple[str, dict[str, Result | None]]:
    """Each sampler at increasing step counts until its SW reaches the target."""
    rows, reached = [], {}
    for name in OURS + (THEIRS if bench.diffusers is not None else []):
        tried, found = [], None
        for steps in sweep:
            r = bench.measure(name, steps)
            tried.append(f"{steps} (NaN samples)" if math.isnan(r.sw) else str(steps))
            if r.sw <= goal.sw:
                found = r
                break
        reached[name] = found
        if found is None:
            rows.append([label(name, {}), "not reached", "-", "-", "-", "-", ", ".join(tried)])
        else:
            rows.append([label(name, {}), found.evals, found.sw, found.width, percent(found.strays), found.seconds,
                         ", ".join(tried)])
    note = (
        f"Target: SW {goal.sw:.5f}, our ddpm's at all {T} steps ({goal.reference:.5f}, mean over {bench.seeds} runs "
        f"of {bench.samples} samples) plus {goal.how}. Each sampler tries the step counts in order and stops at "
        "the first whose mean SW is at or below the target; wall s: one sampling run at that step count. Ours on "
        "their default grids (ddpm: evenly spaced steps; ddim, dpm_solver: logSNR), diffusers' on theirs."
    )
    headers = ["sampler", "evals", "SW", "width/exact", "stranded", "wall s", "step counts tried"]
    return table("Model evaluations to reach DDPM-1000 quality", headers, rows, note), reached


# --- 3. time per model evaluation, ours against diffusers ---------------------------------------


def per_evaluation(
    bench: Bench, batch: int, rounds: int, warmup: int, pairs: list[tuple[str, str, int]]
) -> tuple[str, dict[tuple[str, str], float]]:
    """Each pair on the same chain, timed in alternation: µs per model call, and the median ratio diffusers/ours."""
    shape = (batch, 2)
    output = torch.randn(shape, generator=torch.Generator().manual_seed(1))

    def free(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return output

    rows, ratios = [], {}
    for mine, other, steps in pairs:
        # The same chain on both sides: ddim on the 'leading' grid; dpm_solver unclipped, as diffusers' is.
        options = {"spacing": "leading"} if mine == "ddim" else {"clip_denoised": False} if mine == "dpm_solver" else {}
        pair = {"ours": bench.build(mine, steps, **options), "diffusers": bench.build(other, steps, grid="ours")}
        for sample in pair.values():
            before = bench.model.evaluations
            sample(bench.model, shape, torch.Generator().manual_seed(0))
            assert bench.model.evaluations - before == steps, (mine, other, bench.model.evaluations - before)
        for model_name, model in [("free", free), ("exact denoiser", bench.model)]:
            # Short chains are repeated, so that a timed call makes about 1000 (free) or 100 (exact) model calls.
            repeat = max(1, round((1000 if model is free else 100) / steps))
            times = interleaved(
                {side: (lambda s=sample, m=model: s(m, shape, torch.Generator().manual_seed(0)))
                 for side, sample in pair.items()},
                rounds=rounds, repeat=repeat, warmup=warmup,
            )
            ratio = median_ratio(times["diffusers"], times["ours"])
            ratios[(mine, model_name)] = ratio
            rows.append([f"{mine} / {other}", steps, model_name, 1e6 * median(times["ours"]) / steps,
                         1e6 * median(times["diffusers"]) / steps, ratio])
    note = (
        f"One full sampling run of each, batch {batch} x dimension 2 (float32), {bench.schedule} schedule, T = {T}, "
        f"{torch.get_num_threads()} thread(s); medians over {rounds} rounds of alternated runs (common.interleaved). "
        "Each pair walks the same chain (ddim on the 'leading' grid, dpm_solver unclipped, diffusers given our "
        "grids). free: a model that returns a precomputed tensor, so only the sampler's own loop is timed. "
        "diffusers/ours: median over rounds of the ratio of the two runs' times (> 1: ours is faster)."
    )
    headers = ["ours / diffusers", "evals", "model", "ours µs/eval", "diffusers µs/eval", "diffusers/ours"]
    return table("Time per model evaluation, ours against diffusers", headers, rows, note), ratios


# --- 4. our samplers' overhead against a network's forward pass -----------------------------------


def overhead(rounds: int, smoke: bool) -> tuple[str, float]:
    """Our three samplers with a free model, per evaluation, as a share of a U-Net's and an MLP's forward pass."""
    diffusion = wb.Diffusion(wb.build("scheduler", "cosine", timesteps=T).betas())
    unet = wb.build(
        "backbone", "unet", channels=32, channel_mult=[1, 2], num_res_blocks=2, attention_resolutions=[4], groups=8
    )
    networks = [
        ("U-Net (digits exp.)", unet.build((1, 8, 8), 1), (8 if smoke else 128, 1, 8, 8)),
        ("MLP (exp1)", wb.build("backbone", "mlp").build((2,), 2), (1000, 2)),
    ]
    warmup = 0 if smoke else 1
    rows, worst_unet = [], 0.0
    for name, net, shape in networks:
        net.eval()
        x = torch.randn(shape)
        t = torch.full(shape[:1], 500)
        with torch.no_grad():
            output = net(x, t)
            forward = median(interleaved({"forward": lambda: net(x, t)}, rounds=rounds, repeat=3)["forward"])

        def free(x_t: torch.Tensor, t: torch.Tensor, output: torch.Tensor = output) -> torch.Tensor:
            return output

        samplers = {s: wb.build("sampler", s) for s in OURS}
        times = interleaved(
            {s: (lambda smp=smp: smp.sample(free, diffusion, shape, generator=torch.Generator().manual_seed(0)))
             for s, smp in samplers.items()},
            rounds=rounds, warmup=warmup,
        )
        for s, sampler in samplers.items():
            evals = len(sampler.timesteps(diffusion))
            per_eval = median(times[s]) / evals
            if name.startswith("U-Net"):
                worst_unet = max(worst_unet, per_eval / forward)
            rows.append([name, shape[0], 1e3 * forward, s, evals, 1e6 * per_eval, percent(per_eval / forward)])
    note = ("Our samplers' loop with a model that costs nothing, per model evaluation, against one forward pass of "
            f"each network (no gradients; cosine schedule, default steps; medians over {rounds} rounds).")
    headers = ["network", "batch", "forward ms", "sampler", "evals", "µs/eval", "% of forward"]
    return table("Sampler overhead against a network's forward pass", headers, rows, note), worst_unet


# --- the goals, from the measurements ------------------------------------------------------------


def goals(bench: Bench, goal: Target, reached: dict[str, Result | None], ratios: dict, worst_unet: float | None) -> str:
    at20 = bench.measure("dpm_solver", 20)
    first = reached.get("dpm_solver")
    first_text = f"first reached at {first.evals} evaluations" if first else "not reached in the sweep"
    lines = [f"- dpm_solver reaches DDPM-1000 quality in 20 evaluations: {'met' if at20.sw <= goal.sw else 'NOT met'} "
             f"(SW {at20.sw:.5f} at {at20.evals} evaluations, target {goal.sw:.5f}; {first_text})"]
    speed = "- dpm_solver at least as fast per evaluation as DPMSolverMultistepScheduler: "
    if bench.diffusers is None:
        lines.append(speed + "not measured (no diffusers)")
    elif ratios:
        free, exact = ratios[("dpm_solver", "free")], ratios[("dpm_solver", "exact denoiser")]
        lines.append(speed + f"{'met' if free >= 1 else 'NOT met'} (diffusers / ours = {free:.2f} for the "
                     f"sampler's own loop, {exact:.2f} with the exact denoiser)")
    if worst_unet is not None:
        verdict = "met" if worst_unet < 0.02 else "NOT met"
        lines.append(f"- sampler overhead under 2% of the U-Net's forward pass: {verdict} "
                     f"(worst of ddpm, ddim, dpm_solver: {percent(worst_unet)})")
    return "### Goals\n\n" + "\n".join(lines) + "\n"


def main() -> None:
    p = parser(__doc__)
    p.set_defaults(threads=1)
    p.add_argument("--samples", type=int, default=None, help="samples per sampler and run (default 4000; smoke 200)")
    p.add_argument("--seeds", type=int, default=None, help="runs averaged per row (default 2; smoke 1)")
    p.add_argument("--schedule", default="linear", help="noise schedule (default linear)")
    p.add_argument("--tolerance", type=float, default=None,
                   help="target = ddpm-1000's SW x (1 + this); default: plus one standard error")
    p.add_argument("--batch", type=int, default=None,
                   help="batch of the per-evaluation timings (default 1000; smoke 64)")
    p.add_argument("--rounds", type=int, default=None, help="timing rounds (default 7; smoke 1)")
    p.add_argument("--no-diffusers", action="store_true", help="skip diffusers' rows, as without it installed")
    p.add_argument("--skip-timing", action="store_true", help="skip the two timing tables")
    args = p.parse_args()
    setup(args)
    samples = args.samples or (200 if args.smoke else 4000)
    seeds = args.seeds or (1 if args.smoke else 2)
    batch = args.batch or (64 if args.smoke else 1000)
    rounds = args.rounds or (1 if args.smoke else 7)

    diffusers = None
    if args.no_diffusers:
        print("--no-diffusers: diffusers' rows are skipped\n", flush=True)
    else:
        diffusers = optional_diffusers("its rows are skipped")

    bench = Bench(diffusers, samples, seeds, args.schedule)
    print(quality(bench, SMOKE_QUALITY_ROWS if args.smoke else QUALITY_ROWS), flush=True)
    goal = target(bench, args.tolerance, 2 if args.smoke else FRESH_SETS)
    text, reached = reach(bench, goal, SMOKE_SWEEP if args.smoke else SWEEP)
    print(text, flush=True)
    ratios, worst_unet = {}, None
    if not args.skip_timing:
        if diffusers is not None:
            # The smoke run times a 100-step ddpm, a tenth of the full chain.
            pairs = [(a, b, 100 if args.smoke and a == "ddpm" else n) for a, b, n in PAIRS]
            text, ratios = per_evaluation(bench, batch, rounds, 0 if args.smoke else 1, pairs)
            print(text, flush=True)
        text, worst_unet = overhead(rounds, args.smoke)
        print(text, flush=True)
    print(goals(bench, goal, reached, ratios, worst_unet), flush=True)


if __name__ == "__main__":
    main()
