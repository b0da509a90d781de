"""Built-in evaluation metrics: negative log-likelihood and sample-quality distances.

Each metric's `compute(evaluation)` reads the model, data and samples from a
`workbench.evaluation.Evaluation` and returns one float.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from workbench import Metric, hookimpl

if TYPE_CHECKING:
    from workbench.evaluation import Evaluation


class NLL(Metric):
    """Negative log-likelihood in bits/dim from the full variational bound, on held-out data."""

    name = "nll"
    higher_is_better = False

    examples: int = Field(1000, ge=1, description="held-out examples to average over (each costs T model calls)")
    batch_size: int = Field(1000, ge=1, description="examples per model call")

    def compute(self, evaluation: Evaluation) -> float:
        import torch

        from workbench.likelihood import nll

        data = evaluation.data[: self.examples]
        generator = evaluation.generator(offset=1)
        values = [
            nll(evaluation.model, evaluation.diffusion, batch, levels=evaluation.levels, generator=generator)
            for batch in data.split(self.batch_size)
        ]
        return float(torch.cat(values).mean())


class SlicedWasserstein(Metric):
    """Sliced 2-Wasserstein distance between samples and held-out data (for vector data)."""

    name = "swd"
    higher_is_better = False

    projections: int = Field(512, ge=1, description="random directions averaged over")

    def compute(self, evaluation: Evaluation) -> float:
        import torch

        from workbench.distances import sliced_wasserstein

        directions = torch.Generator().manual_seed(evaluation.seed + 2)  # CPU: the projections are drawn there
        return sliced_wasserstein(evaluation.samples, evaluation.data, self.projections, generator=directions)


@hookimpl
def register_metrics(register):
    register(NLL)
    register(SlicedWasserstein)
