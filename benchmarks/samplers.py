"""Samplers: sample quality against model evaluations, and the sampler's own cost per step.

1. Quality, with the exact denoiser of a known distribution (8 Gaussians of std
   0.05 on a circle of radius 0.7; workbench.exact), so that every difference
   is the sampler's: the sliced Wasserstein distance of N samples to a large
   fresh reference set, next to the same distance for N fresh data points;
   and two sharper views of the fine detail: the RMS width of the modes
   against the exact one (the chain ends at E[x0 | x_0], a shade narrower
   than the data) and the share of samples stranded between modes (> 4 stds
   from every mode; fresh data: exp(-8) = 0.03%).
   Goal: dpm_solver at 20 evaluations as good as ddpm at 1000.

2. Overhead: the time of a sampler's loop with a model that costs nothing
   (it returns a precomputed tensor), per model evaluation, as a fraction of
   one forward pass of a small U-Net (the `digits` experiment's, on 1x8x8)
   and of the 2-D MLP (`exp1`'s). Goal: under 2% of the U-Net's time.

    python benchmarks/samplers.py [--samples 10000] [--seeds 2] [--schedule linear] [--threads N]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time

import torch

import workbench as wb
from workbench.distances import sliced_wasserstein
from workbench.exact import GaussianMixtureDenoiser

MODE_STD = 0.05

QUALITY_RUNS = [
    ("ddpm", {}),
    ("ddpm", {"steps": 250}),
    ("ddpm", {"steps": 100}),
    ("ddim", {"steps": 10}),
    ("ddim", {"steps": 20}),
    ("ddim", {"steps": 50}),
    ("ddim", {"steps": 100}),
    ("ddim", {"steps": 20, "spacing": "linspace"}),
    ("ddim", {"steps": 50, "spacing": "linspace"}),
    ("dpm_solver", {"steps": 10}),
    ("dpm_solver", {"steps": 15}),
    ("dpm_solver", {"steps": 20}),
    ("dpm_solver", {"steps": 25}),
    ("dpm_solver", {"steps": 20, "spacing": "linspace"}),
]

OVERHEAD_RUNS = [("ddpm", {}), ("ddim", {}), ("dpm_solver", {})]


def circle_means(k: int = 8, radius: float = 0.7) -> torch.Tensor:
    angle = torch.arange(k, dtype=torch.float64) * 2 * math.pi / k
    return radius * torch.stack([angle.cos(), angle.sin()], dim=1)


def mode_width_and_strays(x: torch.Tensor, means: torch.Tensor) -> tuple[float, float]:
    """RMS distance per coordinate to the nearest mode, and the share of samples beyond 4 stds of every mode."""
    dist = torch.cdist(x.double(), means)
    nearest = dist.argmin(dim=1)
    width = float(((x.double() - means[nearest]) ** 2).mean().sqrt())
    strays = float((dist.min(dim=1).values > 4 * MODE_STD).double().mean())
    return width, strays


def describe(name: str, options: dict) -> str:
    return name + "".join(f" {k}={v}" for k, v in options.items() if k != "steps")


def quality(samples: int, seeds: int, schedule: str) -> None:
    diffusion = wb.Diffusion(wb.build("scheduler", schedule, timesteps=1000).betas())
    means = circle_means()
    model = GaussianMixtureDenoiser(diffusion, means, stds=MODE_STD)
    reference = model.sample_data(2 * samples, torch.Generator().manual_seed(999))
    a2 = float(diffusion.alphas_cumprod[0])
    exact_width = MODE_STD * math.sqrt(a2 * MODE_STD**2 / (a2 * MODE_STD**2 + 1 - a2))

    def distance(x: torch.Tensor) -> float:
        return sliced_wasserstein(x, reference, projections=256, generator=torch.Generator().manual_seed(0))

    print(f"\n1. Quality: {samples} samples x {seeds} seeds, {schedule} schedule, T = 1000, exact denoiser "
          f"(eps prediction), against {len(reference)} fresh data points")
    print(f"{'sampler':<28} {'evals':>6} {'SW':>8} {'width/exact':>12} {'stranded':>9} {'time s':>8}")

    def row(label: str, evals: int | str, draws: list[torch.Tensor], seconds: float) -> None:
        sw = sum(distance(x) for x in draws) / len(draws)
        stats = [mode_width_and_strays(x, means) for x in draws]
        width = sum(s[0] for s in stats) / len(stats)
        strays = sum(s[1] for s in stats) / len(stats)
        print(f"{label:<28} {evals:>6} {sw:>8.4f} {width / exact_width:>12.3f} {100 * strays:>8.2f}% {seconds:>8.1f}",
              flush=True)

    fresh = [model.sample_data(samples, torch.Generator().manual_seed(100 + s)) for s in range(seeds)]
    row("fresh data (baseline)", "-", fresh, 0.0)
    for name, options in QUALITY_RUNS:
        sampler = wb.build("sampler", name, **options)
        start = time.perf_counter()
        draws = [
            sampler.sample(model, diffusion, (samples, 2), generator=torch.Generator().manual_seed(s))
            for s in range(seeds)
        ]
        seconds = (time.perf_counter() - start) / seeds
        row(describe(name, options), len(sampler.timesteps(diffusion)), draws, seconds)


def best_time(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def overhead(repeat: int) -> None:
    diffusion = wb.Diffusion(wb.build("scheduler", "cosine", timesteps=1000).betas())
    unet = wb.build(
        "backbone", "unet", channels=32, channel_mult=[1, 2], num_res_blocks=2, attention_resolutions=[4], groups=8
    )
    networks = [
        ("U-Net (digits exp.)", unet.build((1, 8, 8), 1), (128, 1, 8, 8)),
        ("MLP (exp1)", wb.build("backbone", "mlp").build((2,), 2), (1000, 2)),
    ]
    print(f"\n2. Overhead: sampler time per model evaluation with a model that costs nothing, "
          f"against one forward pass (best of {repeat})")
    print(f"{'network':<20} {'batch':>6} {'forward ms':>11} {'sampler':<11} {'evals':>6} {'us/eval':>9} {'% of fwd':>9}")
    for label, net, shape in networks:
        net.eval()
        x = torch.randn(shape)
        t = torch.full(shape[:1], 500)
        with torch.no_grad():
            output = net(x, t)
            forward = best_time(lambda: net(x, t), repeat)

        def free(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return output

        for name, options in OVERHEAD_RUNS:
            sampler = wb.build("sampler", name, **options)
            evals = len(sampler.timesteps(diffusion))
            loop = best_time(lambda: sampler.sample(free, diffusion, shape, generator=torch.Generator().manual_seed(0)),
                             repeat)
            per_eval = loop / evals
            print(f"{label:<20} {shape[0]:>6} {1e3 * forward:>11.2f} {name:<11} {evals:>6} {1e6 * per_eval:>9.1f} "
                  f"{100 * per_eval / forward:>8.2f}%", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10_000, help="samples per sampler and seed")
    parser.add_argument("--seeds", type=int, default=2, help="independent runs averaged per row")
    parser.add_argument("--schedule", default="linear", help="noise schedule for the quality table")
    parser.add_argument("--repeat", type=int, default=5, help="timing repetitions (the best is kept)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-overhead", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), Python {platform.python_version()}")
    if not args.skip_quality:
        quality(args.samples, args.seeds, args.schedule)
    if not args.skip_overhead:
        overhead(args.repeat)


if __name__ == "__main__":
    main()
