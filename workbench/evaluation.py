"""Evaluation: what a metric is given, and running the experiment's metrics.

A metric's `compute(evaluation)` reads what it needs from an `Evaluation`:
the EMA model, the diffusion process, held-out data with its `levels`, and
samples from the experiment's sampler, drawn once and shared by every
metric that asks for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from workbench.components import Dataset, Metric, Sampler
from workbench.diffusion import Diffusion
from workbench.pipeline import Pipeline


@dataclass
class Evaluation:
    """Inputs to metrics; `samples` are drawn lazily, once."""

    model: Callable
    diffusion: Diffusion
    data: torch.Tensor
    levels: int | None
    sampler: Sampler
    num_samples: int
    batch_size: int = 1000
    seed: int = 0
    progress: Callable[[str], None] | None = None
    dataset: Dataset | None = None  # the experiment's dataset component (fd trains its feature network on it)
    artifacts: dict[str, Any] = field(default_factory=dict)  # what metrics leave for plots (e.g. nll_terms)
    _samples: torch.Tensor | None = field(default=None, repr=False)

    @property
    def device(self) -> torch.device:
        return self.data.device

    def generator(self, offset: int = 0) -> torch.Generator:
        """A fresh seeded generator, so each metric's randomness is independent of the others' order."""
        return torch.Generator(device=self.device).manual_seed(self.seed + offset)

    @property
    def samples(self) -> torch.Tensor:
        if self._samples is None:
            if self.progress:
                self.progress(f"drawing {self.num_samples} samples with {self.sampler.name}")
            shape = (self.num_samples, *self.data.shape[1:])
            self._samples = Pipeline.draw(self.sampler, self.model, self.diffusion, shape, self.generator(), self.batch_size)
        return self._samples


def evaluate(metrics: tuple[Metric, ...] | list[Metric], evaluation: Evaluation) -> dict[str, float]:
    """{metric name: value} for each metric, under no_grad."""
    results: dict[str, Any] = {}
    with torch.no_grad():
        for metric in metrics:
            if evaluation.progress:
                evaluation.progress(f"computing {metric.name}")
            results[metric.name] = float(metric.compute(evaluation))
    return results


def save_artifacts(evaluation: Evaluation, run_dir: Path) -> None:
    """Plots of what the metrics left behind: the NLL bound's breakdown by step (nll_terms.png/.json)."""
    from workbench import plots
    from workbench.runs import write_json

    terms = evaluation.artifacts.get("nll_terms")
    if terms:
        write_json(run_dir / "nll_terms.json", terms)
        per_step = terms["per_step"]
        plots.line_chart(
            [("L_t (t = 0: decoder)", list(range(len(per_step))), per_step)], run_dir / "nll_terms.png",
            f"NLL bound by step, bits/dim (prior term {terms['prior']:.2g}, total {sum(per_step) + terms['prior']:.3f})",
            xlabel="t", ylabel="bits/dim", log_y=True,
        )


def make_evaluation(pipeline: Pipeline, model: Callable, held_out: torch.Tensor, progress: Any = None,
                    num_samples: int | None = None, sampler: Sampler | None = None) -> Evaluation:
    """The Evaluation of a trained model of `pipeline`'s experiment (a Rich console for progress lines)."""
    exp = pipeline.exp
    return Evaluation(
        model=model, diffusion=pipeline.diffusion, data=held_out, levels=pipeline.levels,
        sampler=sampler or exp.sampler, num_samples=num_samples or exp.eval.samples,
        batch_size=exp.eval.batch_size, seed=exp.seed, dataset=exp.dataset,
        progress=(lambda msg: progress.print(f"[dim]{msg}…[/]")) if progress is not None else None,
    )
