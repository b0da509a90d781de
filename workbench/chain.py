"""The public base of chain samplers: a walk back from x_T over a grid of timesteps.

A plugin author who writes a new sampler subclasses `ChainSampler` and
writes two methods: `timesteps(diffusion)`, the original step indices the
chain calls the model at (noisiest first; `grid()` builds the usual ones),
and `walk(walk, grid)`, the update rule. Everything else (drawing x_T and the
noise from the caller's generator, calling the model with the original t,
reading eps / x0 / v and learned variance, progress, the trajectory, no
gradients) is `workbench.sampling.Walk`'s, written once for every sampler:

    class Euler(wb.ChainSampler):
        \"\"\"First-order Euler steps of the probability-flow ODE.\"\"\"

        name = "euler"
        steps: int = Field(20, ge=1)

        def timesteps(self, diffusion):
            return self.grid(diffusion, self.steps, "logsnr")

        def walk(self, walk, grid):
            x = walk.start()
            for i, t in enumerate(grid):
                x0, eps = walk.denoise(x, t, self.clip_denoised)
                ...
            return x

This module stays importable without torch (`wb list` loads the samplers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from pydantic import Field

from workbench.components import Progress, Sampler, Spacing

if TYPE_CHECKING:
    import torch

    from workbench.diffusion import Diffusion
    from workbench.sampling import Walk

SPACING_HELP = (
    "which steps a short chain visits: 'logsnr' (evenly spaced in log SNR, ending at t = 0 with small steps), "
    "'linspace' (evenly spaced from T-1 to 0), 'leading' (0, k, 2k, ...: the DDIM paper's), 'trailing' (T-1, T-1-k, ...)"
)


class ChainSampler(Sampler):
    """A sampler that walks the chain from x_T to x0 over a grid of the process's timesteps."""

    clip_denoised: bool = Field(
        True,
        description="clip each predicted x0 to [-1, 1], the data range every dataset declares",
    )

    def sample(
        self,
        model: Callable,
        diffusion: Diffusion,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        progress: Progress | None = None,
        return_trajectory: bool = False,
        device: torch.device | str | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """x0 of `shape` from x_T ~ N(0, I) drawn with `generator`; with `return_trajectory`, also every x_t visited.

        `model(x_t, t)` gets the original step indices t (LongTensor [B]). The
        chain runs on `device`, else the generator's device, else the model's;
        under torch.no_grad(), leaving the model's train/eval mode as it is.
        `progress(done, total)` is called after each model evaluation.
        """
        import torch

        from workbench.sampling import Walk

        grid = self.timesteps(diffusion)
        walk = Walk(model, diffusion, shape, len(grid), generator, progress, return_trajectory, device)
        with torch.no_grad():
            x = self.walk(walk, grid)
        return walk.result(x)

    def timesteps(self, diffusion: Diffusion) -> list[int]:
        """Original step indices of the model calls, noisiest first."""
        raise NotImplementedError

    def walk(self, walk: Walk, grid: list[int]) -> torch.Tensor:
        """The update rule: from walk.start() to x0, one model call per entry of `grid`."""
        raise NotImplementedError

    def grid(self, diffusion: Diffusion, steps: int, spacing: Spacing) -> list[int]:
        """`steps` distinct step indices on the named grid (workbench.sampling.timestep_grid), checked against T."""
        from workbench.sampling import check_steps, timestep_grid

        check_steps(self.name, steps, diffusion)
        return timestep_grid(diffusion, steps, spacing)
