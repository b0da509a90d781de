"""Built-in evaluation metrics: negative log-likelihood and sample-quality distances.

Each metric's `compute(evaluation)` reads the model, data and samples from a
`workbench.evaluation.Evaluation` and returns one float.

- `nll`: bits/dim from the full variational bound, on held-out data.
- `swd`: sliced Wasserstein distance, in data space (suited to vectors).
- `fd`: Frechet distance in the features of a small classifier trained on the
  dataset's own labels (suited to images); the network is described in
  workbench/features.py. Its values compare runs within the workbench only,
  never with published FIDs.
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

        from workbench.likelihood import nll_terms

        data = evaluation.data[: self.examples]
        generator = evaluation.generator(offset=1)
        parts = [
            nll_terms(evaluation.model, evaluation.diffusion, batch, levels=evaluation.levels, generator=generator)
            for batch in data.split(self.batch_size)
        ]
        # The per-step breakdown, averaged over examples, for the run's nll_terms.png.
        evaluation.artifacts["nll_terms"] = {
            "prior": float(torch.cat([p.prior for p in parts]).mean()),
            "per_step": torch.cat([p.terms for p in parts]).mean(dim=0).tolist(),
        }
        return float(torch.cat([p.total for p in parts]).mean())


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


class FrechetDistance(Metric):
    """Frechet distance between samples and held-out data in the features of a classifier of the dataset.

    Like FID (Heusel et al. 2017), but the feature network is a small CNN (MLP
    for vectors) trained once on the dataset's labels with a fixed seed and
    cached; unlabelled sets use a fixed random network. Values are comparable
    only between runs on one dataset with equal options and equal sample counts.
    """

    name = "fd"
    higher_is_better = False

    feature_dim: int = Field(
        64, ge=2, le=2048, description="features: the width of the classifier's penultimate layer"
    )
    train_steps: int = Field(
        300, ge=1, le=1_000_000, description="training steps of the feature classifier (CPU, fixed seed)"
    )
    batch_size: int = Field(
        128, ge=2, le=65536, description="examples per training step of the feature classifier"
    )

    def compute(self, evaluation: Evaluation) -> float:
        from workbench.errors import ConfigError
        from workbench.features import FeatureConfig, feature_frechet_distance, feature_network

        if evaluation.dataset is None:
            raise ConfigError(
                "metric 'fd' needs the experiment's dataset to train its feature network, but the evaluation has none",
                hint="build the Evaluation with dataset=<the Dataset component> (make_evaluation does)",
            )
        if evaluation.num_samples < 2:
            raise ConfigError(
                f"metric 'fd' fits a covariance to the samples, so it needs at least 2, not {evaluation.num_samples}",
                hint="set eval.samples to a few hundred or more",
            )
        if len(evaluation.data) < 2:
            raise ConfigError(
                f"metric 'fd' fits a covariance to the held-out data, but there are {len(evaluation.data)} examples",
                hint="raise eval.holdout so that at least 2 (better hundreds of) examples are held out",
            )
        config = FeatureConfig(feature_dim=self.feature_dim, train_steps=self.train_steps, batch_size=self.batch_size)
        net = feature_network(evaluation.dataset, config, progress=evaluation.progress)
        return feature_frechet_distance(net, evaluation.samples, evaluation.data)


@hookimpl
def register_metrics(register):
    register(NLL)
    register(SlicedWasserstein)
    register(FrechetDistance)
