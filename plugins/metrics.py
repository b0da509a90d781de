"""Built-in evaluation metrics: negative log-likelihood and sample-quality distances.

Each metric's `compute(evaluation)` reads the model, data and samples from a
`workbench.Evaluation` and returns its value, or a `workbench.MetricResult`
with the value and the pictures and tables it leaves in the run directory.

- `nll`: bits/dim from the full variational bound, on held-out data.
- `swd`: sliced Wasserstein distance, in data space (suited to vectors).
- `precision`, `recall`: improved precision and recall (Kynkäänniemi et al.
  2019): the share of samples on the data's manifold, and of the data on the
  samples'; on vectors directly, on images in the `fd` classifier's features.
- `fd`: Frechet distance in the features of a small classifier trained on the
  dataset's own labels (suited to images); the network is described in
  plugins/nets/features.py. Its values compare runs within the workbench only,
  never with published FIDs. For a conditional run it is also computed per
  class (each class's samples against that class's held-out data).
- `accuracy`: for a conditional run, the share of samples that the `fd`
  classifier assigns to the class they were asked for; per class and overall.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from workbench import Metric, hookimpl
from workbench.components import MetricResult

if TYPE_CHECKING:
    from workbench.components import Evaluation


class NLL(Metric):
    """Negative log-likelihood in bits/dim from the full variational bound, on held-out data (given its class, if conditional)."""

    name = "nll"
    higher_is_better = False

    examples: int = Field(1000, ge=1, description="held-out examples to average over (each costs T model calls)")
    batch_size: int = Field(1000, ge=1, description="examples per model call")

    def compute(self, evaluation: Evaluation) -> MetricResult:
        """The mean bound over held-out examples, with its breakdown by step as nll_terms.json and .png."""
        import torch

        from workbench.likelihood import nll_terms
        from workbench.plots import draw_line_chart

        data = evaluation.data[: self.examples]
        generator = evaluation.generator("nll")
        # A conditional run's bound is of each example given its class, -log p(x0 | y).
        labels = evaluation.data_labels[: self.examples] if evaluation.data_labels is not None else None
        from workbench.sampling import across_batches

        batches = data.split(self.batch_size)
        parts = [
            nll_terms(
                evaluation.model, evaluation.diffusion, batch, levels=evaluation.levels, generator=generator,
                labels=None if labels is None else labels[k * self.batch_size : k * self.batch_size + len(batch)],
                progress=None if evaluation.progress is None else across_batches(evaluation.progress, k, len(batches)),
            )
            for k, batch in enumerate(batches)
        ]
        total = float(torch.cat([p.total for p in parts]).mean())
        terms = {
            "prior": float(torch.cat([p.prior for p in parts]).mean()),
            "per_step": torch.cat([p.terms for p in parts]).mean(dim=0).tolist(),
        }
        per_step = terms["per_step"]
        chart = draw_line_chart(
            [("L_t (t = 0: decoder)", list(range(len(per_step))), per_step)],
            f"NLL bound by step, bits/dim (prior term {terms['prior']:.2g}, total {sum(per_step) + terms['prior']:.3f})",
            xlabel="t", ylabel="bits/dim", log_y=True,
        )
        return MetricResult(total, {"nll_terms.json": terms, "nll_terms.png": chart})


class SlicedWasserstein(Metric):
    """Sliced 2-Wasserstein distance between samples and held-out data (for vector data)."""

    name = "swd"
    higher_is_better = False

    projections: int = Field(512, ge=1, description="random directions averaged over")

    def compute(self, evaluation: Evaluation) -> float:
        from workbench.distances import sliced_wasserstein
        from workbench.streams import generator

        directions = generator(evaluation.seed, "directions")  # on the CPU: the projections are drawn there
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
        from workbench.plugins.nets.features import FeatureConfig, feature_frechet_distance, feature_network

        if evaluation.dataset is None:
            raise ConfigError(
                "metric 'fd' needs the experiment's dataset to train its feature network, but the evaluation has none",
                hint="build the Evaluation with dataset=<the Dataset component> (workbench.evaluation.make_evaluation does)",
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
        cache = evaluation.cache_dir / "features" if evaluation.cache_dir is not None else None
        net = feature_network(evaluation.dataset, config, cache_dir=cache, progress=evaluation.announce)
        overall = feature_frechet_distance(net, evaluation.samples, evaluation.data)
        if evaluation.labels is None or evaluation.data_labels is None:
            return overall
        per_class = {}
        for k, name in enumerate(evaluation.class_names):
            mine, theirs = evaluation.samples[evaluation.labels == k], evaluation.data[evaluation.data_labels == k]
            if len(mine) >= 2 and len(theirs) >= 2:  # a covariance needs two of each
                per_class[name] = feature_frechet_distance(net, mine, theirs)
        return MetricResult(overall, {"fd_per_class.json": {"overall": overall, "per_class": per_class}})


class Accuracy(Metric):
    """Share of a conditional run's samples that the dataset's own classifier (fd's) assigns to the class asked for."""

    name = "accuracy"
    higher_is_better = True

    feature_dim: int = Field(64, ge=2, le=2048, description="the classifier's penultimate width (fd's, to share its cache)")
    train_steps: int = Field(300, ge=1, le=1_000_000, description="training steps of the classifier (fd's)")
    batch_size: int = Field(128, ge=2, le=65536, description="examples per training step of the classifier (fd's)")

    def compute(self, evaluation: Evaluation) -> MetricResult:
        """Overall accuracy; per class (by name) in accuracy.json, beside the classifier's own held-out accuracy."""
        import torch

        from workbench.errors import ConfigError
        from workbench.plugins.nets.features import FeatureConfig, feature_network

        if evaluation.labels is None or evaluation.class_names is None:
            raise ConfigError(
                "metric 'accuracy' scores the class of samples asked for a class, but this run is not conditional",
                hint="train with condition = { labels = true, dropout = 0.1 }",
            )
        config = FeatureConfig(feature_dim=self.feature_dim, train_steps=self.train_steps, batch_size=self.batch_size)
        cache = evaluation.cache_dir / "features" if evaluation.cache_dir is not None else None
        net = feature_network(evaluation.dataset, config, cache_dir=cache, progress=evaluation.announce)
        if not net.trained or net.head.out_features != len(evaluation.class_names):
            raise ConfigError(
                f"metric 'accuracy': dataset '{evaluation.dataset.name}' gives no classifier of its "
                f"{len(evaluation.class_names)} classes (it needs every class among its labels, held in memory)"
            )
        samples = evaluation.samples
        net = net.to(samples.device)
        # The classifier's outputs are the sorted distinct labels, which are the class indices 0..K-1.
        predicted = torch.cat([net(chunk.float()).argmax(dim=1) for chunk in samples.split(1024)])
        hit = (predicted == evaluation.labels.to(predicted.device)).double()
        per_class = {
            name: float(hit[evaluation.labels == k].mean())
            for k, name in enumerate(evaluation.class_names) if bool((evaluation.labels == k).any())
        }
        overall = float(hit.mean())
        table = {"overall": overall, "per_class": per_class, "classifier_accuracy": net.accuracy}
        return MetricResult(overall, {"accuracy.json": table})


class _Coverage(Metric):
    """Improved precision and recall share one computation (k-nearest-neighbour balls of both sets)."""

    higher_is_better = True

    k: int = Field(3, ge=1, description="the k of the k-nearest-neighbour balls (3 in the paper)")
    examples: int = Field(
        10_000, ge=2, description="at most this many samples and held-out examples, equally many of each (as in the paper)"
    )

    def both(self, evaluation: Evaluation) -> tuple[float, float]:
        from workbench.distances import precision_recall

        key = f"precision_recall:k={self.k},n={self.examples}"
        if key not in evaluation.memo:
            n = min(self.examples, len(evaluation.data), evaluation.num_samples)
            real, fake = evaluation.data[:n], evaluation.samples[:n]
            if real.ndim > 2:  # images: in the features of the dataset's classifier, as fd measures them
                from workbench.plugins.nets.features import extract_features, feature_network

                cache = evaluation.cache_dir / "features" if evaluation.cache_dir is not None else None
                net = feature_network(evaluation.dataset, cache_dir=cache, progress=evaluation.announce)
                real, fake = extract_features(net, real), extract_features(net, fake)
            evaluation.memo[key] = precision_recall(real.double().flatten(1), fake.double().flatten(1), k=self.k)
        return evaluation.memo[key]


class Precision(_Coverage):
    """Share of samples inside the data's k-NN manifold (Kynkäänniemi et al. 2019): quality."""

    name = "precision"

    def compute(self, evaluation: Evaluation) -> float:
        return self.both(evaluation)[0]


class Recall(_Coverage):
    """Share of held-out data inside the samples' k-NN manifold (Kynkäänniemi et al. 2019): coverage."""

    name = "recall"

    def compute(self, evaluation: Evaluation) -> float:
        return self.both(evaluation)[1]


@hookimpl
def register_metrics(register):
    for cls in (NLL, SlicedWasserstein, FrechetDistance, Accuracy, Precision, Recall):
        register(cls)
