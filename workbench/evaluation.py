"""Evaluation: the inputs a metric is given, and running metrics on a trained model.

A metric's `compute(evaluation)` reads what it needs from an `Evaluation`
(workbench.components): the EMA model, the diffusion process, held-out data
with its `levels`, and samples from a sampler, drawn once and shared by every
metric that asks for them. It returns a value, or a `MetricResult` with the
value and its own artifacts (pictures, tables), which the report writes into
the run directory. Writing is not this module's job: it returns results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from workbench import streams
from workbench.components import Evaluation, Metric, MetricResult, Sampler
from workbench.pipeline import Pipeline
from workbench.guidance import balanced_labels
from workbench.sampling import draw_samples


@dataclass
class Results:
    """Each metric's value, and the artifacts the metrics left (file name -> content)."""

    values: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)
    uses_samples: set[str] = field(default_factory=set)  # the metrics that scored samples (their value depends on the sampler)


def make_evaluation(
    pipeline: Pipeline,
    model: Callable,
    held_out: torch.Tensor,
    *,
    sampler: Sampler | None = None,
    num_samples: int | None = None,
    cache_dir: Path | None = None,
    announce: Callable[[str], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Evaluation:
    """The Evaluation of a trained `model` of `pipeline`'s experiment, on `held_out` data.

    Samples come from the experiment's sampler (or `sampler`), `eval.samples`
    of them (or `num_samples`), drawn from the run's "samples" random stream
    on the first request.
    """
    exp = pipeline.exp
    sampler = sampler or exp.sampler
    n = num_samples or exp.eval.samples
    # A conditional run's samples ask for every class equally often, at the sampler's guidance.
    labels = balanced_labels(n, pipeline.num_classes, held_out.device) if pipeline.num_classes else None

    def draw() -> torch.Tensor:
        if announce is not None:
            announce(f"drawing {n} samples with {sampler.name}")
        generator = streams.generator(exp.seed, "samples", held_out.device)
        return draw_samples(
            sampler, model, pipeline.diffusion, (n, *held_out.shape[1:]), generator, exp.eval.batch_size,
            progress=progress, labels=labels, num_classes=pipeline.num_classes,
        )

    return Evaluation(
        model=model, diffusion=pipeline.diffusion, data=held_out, levels=pipeline.levels, sampler=sampler,
        num_samples=n, draw=draw, seed=exp.seed, dataset=exp.dataset, cache_dir=cache_dir, announce=announce,
        progress=progress, labels=labels, data_labels=pipeline.held_out_labels,
        class_names=exp.dataset.class_names if exp.conditional else None,
    )


def evaluate(metrics: Sequence[Metric], evaluation: Evaluation) -> Results:
    """Each metric computed under no_grad, in order; values as floats, artifacts collected."""
    results = Results()
    with torch.no_grad():
        for metric in metrics:
            if evaluation.announce is not None:
                evaluation.announce(f"computing {metric.name}")
            reads = evaluation.samples_read
            result = metric.compute(evaluation)
            if evaluation.samples_read > reads:
                results.uses_samples.add(metric.name)
            if isinstance(result, MetricResult):
                results.artifacts.update(result.artifacts)
                result = result.value
            results.values[metric.name] = float(result)
    return results
