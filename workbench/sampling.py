"""What every sampler shares: where it runs, which steps it visits, one `Walk` per run, and batches.

The samplers themselves (plugins/samplers.py, on the public base
workbench.chain.ChainSampler) only hold the update rules; this module holds
the plumbing around them, written once:

- `sampling_device` / `sampling_dtype`: where x_T is drawn and the chain runs;
- `timestep_grid`: which of the T steps a shortened chain visits;
- `Walk`: draws x_T ~ N(0, I) and the noise with the caller's generator, calls
  the model with the ORIGINAL step indices, reads its output through the
  `Diffusion` (eps, x0 or v; learned variance channels), counts model
  evaluations for `progress(done, total)` and keeps the trajectory;
- `draw_samples`: any sampler, in batches of a bounded size.

The samplers' own coefficients are computed once, before the loop, from the
float64 tables on the host, and enter the loop as Python floats; the
Diffusion's conversions read their tables at a one-element step index. Nothing
in the loop waits on the device (no .item(), no copies to the host).
"""

from __future__ import annotations

from typing import Callable

import torch

from workbench.components import SPACINGS, Progress, Sampler
from workbench.diffusion import Diffusion
from workbench.errors import ConfigError

LAMBDA_MIN = -5.1
"""Where a logSNR grid starts: lambda = -5.1 is abar = 3.7e-5, where x_t is N(0, I) to within 0.6%
of its scale. The cosine schedule's last steps jump to lambda = -10 (its betas are clipped at 0.999);
a grid reaching down there would spend several model calls on pure noise (diffusers'
DPMSolverMultistepScheduler has the same clip, `lambda_min_clipped`, "critical for the cosine schedule").
For the linear schedule, lambda_{T-1} = -5.06 and the grid starts at T-1."""


def sampling_device(model: Callable, generator: torch.Generator | None, device: torch.device | str | None) -> torch.device:
    """The device asked for; else the generator's; else the model's first parameter's; else the CPU."""
    if device is not None:
        return torch.device(device)
    if generator is not None:
        return generator.device
    first = _first_parameter(model)
    return first.device if first is not None else torch.device("cpu")


def sampling_dtype(model: Callable) -> torch.dtype:
    """The floating dtype of the model's first parameter (a float64 model samples in float64); else the default."""
    first = _first_parameter(model)
    if first is not None and first.is_floating_point():
        return first.dtype
    return torch.get_default_dtype()


def _first_parameter(model: Callable) -> torch.Tensor | None:
    if isinstance(model, torch.nn.Module):
        return next(model.parameters(), None)
    return None


def half_log_snr(diffusion: Diffusion) -> torch.Tensor:
    """lambda_t = log(alpha_t / sigma_t) = 0.5 log(abar_t / (1 - abar_t)), float64 [T], decreasing in t (Lu et al. 2022)."""
    abar = diffusion.alphas_cumprod
    return 0.5 * (abar.log() - (-abar).log1p())


def timestep_grid(diffusion: Diffusion, steps: int, spacing: str) -> list[int]:
    """`steps` distinct original step indices, noisiest first, for a chain that skips steps.

    - "linspace": evenly spaced from T-1 to 0, both ends included: the chain starts
      where x_T ~ N(0, I) is drawn and its last model call is at the least noisy step,
      like the full DDPM chain.
    - "leading": 0, k, 2k, ... with k = T // steps (the DDIM paper's "uniform" and
      diffusers' "leading"); starts below T-1.
    - "trailing": T-1, T-1-k, ... (Lin et al. 2024, "Common diffusion noise schedules
      and sample steps are flawed"); its last call is at k-1, not at 0.
    - "logsnr": the integer steps closest to evenly spaced half-logSNR lambda between
      max(lambda_{T-1}, LAMBDA_MIN) and lambda_0 (the DPM-Solver papers' "logSNR" step
      schedule); its last call is at t = 0.

    Rounding can make two steps coincide where the schedule is dense (logsnr near
    t = 0); such steps are pushed apart to neighbouring integers, so a chain always
    makes exactly `steps` model calls.
    """
    T = diffusion.num_timesteps
    if not 1 <= steps <= T:
        raise ValueError(f"steps must be in 1..{T}, not {steps}")
    if spacing == "linspace":
        grid = torch.linspace(T - 1, 0, steps, dtype=torch.float64).round()
    elif spacing == "leading":
        grid = torch.arange(steps - 1, -1, -1, dtype=torch.float64) * (T // steps)
    elif spacing == "trailing":
        grid = (T - torch.arange(steps, dtype=torch.float64) * (T / steps)).round() - 1
    elif spacing == "logsnr":
        lam = half_log_snr(diffusion)
        targets = torch.linspace(max(float(lam[-1]), LAMBDA_MIN), float(lam[0]), steps, dtype=torch.float64)
        grid = (lam[None, :] - targets[:, None]).abs().argmin(dim=1).double()
    else:
        raise ValueError(f"spacing must be one of {SPACINGS}, not {spacing!r}")
    return _distinct(sorted(int(t) for t in grid), T)[::-1]


def _distinct(ascending: list[int], T: int) -> list[int]:
    """The sorted input made strictly increasing within 0..T-1: repeats are pushed up, then down from T-1."""
    out = list(ascending)
    for i in range(1, len(out)):
        out[i] = max(out[i], out[i - 1] + 1)
    out[-1] = min(out[-1], T - 1)
    for i in range(len(out) - 2, -1, -1):
        out[i] = min(out[i], out[i + 1] - 1)
    return out


def check_steps(sampler: str, steps: int, diffusion: Diffusion) -> None:
    """ConfigError when a sampler is asked for more steps than the process has."""
    if steps > diffusion.num_timesteps:
        raise ConfigError(
            f"sampler '{sampler}': steps = {steps} is more than the diffusion's {diffusion.num_timesteps} timesteps",
            hint=f"use steps <= {diffusion.num_timesteps}, or a scheduler with more timesteps",
        )


class Walk:
    """One run of a sampler from x_T to x0: model calls, random draws, progress and trajectory."""

    def __init__(
        self,
        model: Callable,
        diffusion: Diffusion,
        shape: tuple[int, ...],
        evaluations: int,
        generator: torch.Generator | None = None,
        progress: Progress | None = None,
        return_trajectory: bool = False,
        device: torch.device | str | None = None,
    ) -> None:
        self.model = model
        self.diffusion = diffusion
        self.shape = tuple(shape)
        self.generator = generator
        self.progress = progress
        self.device = sampling_device(model, generator, device)
        self.dtype = sampling_dtype(model)
        self.total = evaluations
        self.done = 0
        self.trajectory: list[torch.Tensor] | None = [] if return_trajectory else None

    def start(self) -> torch.Tensor:
        """x_T ~ N(0, I), the first point of the trajectory."""
        x = self.noise()
        self.visit(x)
        return x

    def noise(self) -> torch.Tensor:
        """A fresh N(0, I) draw of the sample's shape, from the caller's generator."""
        return torch.randn(self.shape, generator=self.generator, device=self.device, dtype=self.dtype)

    def visit(self, x: torch.Tensor) -> None:
        """Record a point of the chain (when the trajectory was asked for)."""
        if self.trajectory is not None:
            self.trajectory.append(x)

    def step_index(self, t: int) -> torch.Tensor:
        """Step t as a LongTensor [1] for the Diffusion's tables, which broadcast it over the batch.

        One index rather than B: each table read then gathers one value, and
        the per-step overhead stays independent of the batch size.
        """
        return torch.full((1,), t, dtype=torch.long, device=self.device)

    def evaluate(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """The model's raw output at ORIGINAL step t (given to it as a LongTensor [B]); reports progress."""
        output = self.model(x, torch.full(self.shape[:1], t, dtype=torch.long, device=self.device))
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)
        return output

    def denoise(
        self, x: torch.Tensor, t: int, clip_denoised: bool, with_eps: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(x0, eps) predicted at step t, however the model is parameterized.

        Variance channels of a learned_range model are dropped (deterministic
        samplers do not use them). With `clip_denoised`, x0 is clipped to
        [-1, 1] and eps recomputed from it, so that the pair still explains x_t
        (improved-diffusion's DDIM does the same); a sampler that needs only x0
        passes `with_eps=False` and skips that.
        """
        prediction, _ = self.diffusion.split_output(self.evaluate(x, t))
        index = self.step_index(t)
        x0, eps = self.diffusion.predict_x0_eps(prediction, x, index)
        if clip_denoised:
            x0 = x0.clamp(-1, 1)
            eps = self.diffusion.predict_eps_from_x0(x, index, x0) if with_eps else None
        return x0, eps

    def result(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """x0, or (x0, trajectory) when the trajectory was asked for."""
        if self.trajectory is None:
            return x
        return x, self.trajectory


def draw_samples(
    sampler: Sampler,
    model: Callable,
    diffusion: Diffusion,
    shape: tuple[int, ...],
    generator: torch.Generator,
    batch_size: int | None = None,
    progress: Progress | None = None,
    return_trajectory: bool = False,
    labels: torch.Tensor | None = None,
    num_classes: int | None = None,
    guidance: float | None = None,
) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
    """Samples of `shape` in batches of at most `batch_size` (the trajectory of the first batch only).

    Every batch draws from the one `generator` in turn, so the samples depend on
    the batch size (as they would with any sampler called batch by batch).

    For a conditional `model(x_t, t, y)` with `num_classes` K: `labels` [n] are the
    classes asked for, sampled at classifier-free guidance `guidance` (default: the
    sampler's own) through workbench.guidance.Guided; labels None with K given
    asks for every class equally often (0, 1, ..., K-1, 0, ...).
    """
    from workbench.guidance import Guided, balanced_labels

    n = shape[0]
    batch_size = batch_size or n
    if num_classes is not None and labels is None:
        labels = balanced_labels(n, num_classes)
    if labels is not None and (len(labels) != n or num_classes is None):
        raise ValueError(f"{len(labels)} labels for {n} samples (and num_classes = {num_classes})")
    if guidance is None:
        guidance = sampler.guidance
    outputs, trajectory = [], None
    batches = range(0, n, batch_size)
    for index, start in enumerate(batches):
        size = min(batch_size, n - start)
        chain = model
        if labels is not None:
            chain = Guided(model, labels[start : start + size], guidance, num_classes, diffusion.learns_variance)
        result = sampler.sample(
            chain, diffusion, (size, *shape[1:]), generator=generator,
            progress=None if progress is None else across_batches(progress, index, len(batches)),
            return_trajectory=return_trajectory and start == 0,
        )
        if isinstance(result, tuple):
            result, trajectory = result
        outputs.append(result)
    samples = torch.cat(outputs)
    return (samples, trajectory) if return_trajectory else samples


def across_batches(progress: Progress, index: int, batches: int) -> Progress:
    """The progress of batch `index` of `batches` equal ones, reported as progress of the whole."""
    return lambda done, total: progress(index * total + done, batches * total)
