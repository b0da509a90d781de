"""A handle on a run directory: its experiment, its trained model, and samples from it.

    run = wb.open_run("runs/exp1/20260101-120000")
    run.status, run.summary["metrics"]
    x = run.sample(64, sampler="dpm_solver", steps=20)

The run directory itself (files, checkpoints, logs) is workbench.runs, a
leaf; this handle sits above the pipeline, because opening a run's model
means building the network its experiment names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from workbench import runs
from workbench.errors import ConfigError
from workbench.experiment import Experiment, load_experiment
from workbench.guidance import check_guidance, class_index
from workbench.pipeline import Pipeline
from workbench.registry import Registry
from workbench.sampling import draw_samples


@dataclass
class Run:
    """A run directory: its experiment, its EMA model, its metrics; `run.sample(...)` draws samples."""

    dir: Path
    registry: Registry | None = None

    @property
    def experiment(self) -> Experiment:
        """The resolved experiment the run stored, validated against the installed plugins."""
        return load_experiment(runs.stored_name(self.dir), file=self.dir / runs.EXPERIMENT, registry=self.registry)

    @property
    def summary(self) -> dict[str, Any]:
        """summary.json ({} before the run wrote one); a runs.DamagedRun if it is damaged."""
        return runs.read_summary(self.dir)

    @property
    def status(self) -> str:
        """running, done, interrupted or failed, as it truly is (a killed run's summary still says running)."""
        return runs.run_status(self.dir, self.summary)[0]

    @property
    def metrics(self) -> list[dict[str, Any]]:
        return runs.read_metrics(self.dir)

    def checkpoint(self) -> dict[str, Any]:
        return runs.load_checkpoint(self.dir / runs.CHECKPOINT)

    def pipeline(self, device: str | torch.device = "cpu", ema: bool = True) -> Pipeline:
        """The experiment's Pipeline with the checkpoint's EMA (or raw) weights loaded, model in eval mode."""
        pipeline = Pipeline(self.experiment, device=torch.device(device))
        part = "ema" if ema else "model"
        state = self.checkpoint()
        runs.check_checkpoint(state, pipeline.model.state_dict(), self.dir / runs.CHECKPOINT, pipeline.exp.name, (part,))
        pipeline.model.load_state_dict(state[part])
        pipeline.model.eval()
        return pipeline

    def sample(
        self,
        n: int,
        sampler: str | None = None,
        seed: int = 0,
        device: str | torch.device = "cpu",
        return_trajectory: bool = False,
        labels: torch.Tensor | list[int | str] | int | str | None = None,
        guidance: float | None = None,
        **options: Any,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """n samples from the EMA model with the experiment's sampler, or another with its options.

        A conditional run samples the classes `labels` (a LongTensor [n] of indices, a list of
        indices or names, or one index or name for all n; default: every class equally often)
        at classifier-free guidance `guidance` (default: the sampler's own).
        """
        pipeline = self.pipeline(device)
        exp = pipeline.exp
        what = f"run {self.dir.parent.name}/{self.dir.name}"
        y = sample_labels(exp, labels, n, what)
        check_guidance(guidance, exp.conditional, exp.condition.dropout, what)
        generator = torch.Generator(device=device).manual_seed(seed)
        return draw_samples(
            pipeline.sampler(sampler, options), pipeline.model, pipeline.diffusion, (n, *pipeline.shape), generator,
            batch_size=exp.eval.batch_size, return_trajectory=return_trajectory,
            labels=y, num_classes=pipeline.num_classes, guidance=guidance,
        )

    def sample_classes(
        self,
        n: int,
        classes: int | str = "all",
        scales: list[float | None] = (None,),
        sampler: str | None = None,
        seed: int = 0,
        device: str | torch.device = "cpu",
        **options: Any,
    ) -> tuple[list[tuple[float, torch.Tensor]], torch.Tensor]:
        """(s, samples) for each guidance scale, from the same noise (the same seed), and their labels.

        `classes` is "all" (n of each class, class by class) or one class (index or name, n of it).
        """
        exp = self.experiment
        what = f"run {self.dir.parent.name}/{self.dir.name}"
        names = exp.dataset.class_names if exp.conditional else None
        for s in scales:
            check_guidance(s, exp.conditional, exp.condition.dropout, what)
        if classes == "all":
            if not names:
                class_index(0, names, what)  # the error: an unconditional run has no classes
            labels = torch.arange(len(names)).repeat_interleave(n)
        else:
            labels = torch.full((n,), class_index(classes, names, what))
        drawn = [
            (exp.sampler.guidance if s is None else s,
             self.sample(len(labels), sampler=sampler, seed=seed, device=device, labels=labels, guidance=s, **options))
            for s in scales
        ]
        return drawn, labels


def sample_labels(
    exp: Experiment, labels: torch.Tensor | list[int | str] | int | str | None, n: int, what: str
) -> torch.Tensor | None:
    """The class indices [n] asked for (None: every class equally often, or an unconditional run); ConfigError when bad."""
    if labels is None:
        return None
    names = exp.dataset.class_names if exp.conditional else None
    if isinstance(labels, torch.Tensor):
        labels = labels.reshape(-1).tolist()
    if isinstance(labels, (int, str)):
        labels = [labels] * n
    if len(labels) != n:
        raise ConfigError(f"{len(labels)} labels for {n} samples", hint="give one label per sample, or one for all")
    return torch.tensor([class_index(v, names, what) for v in labels], dtype=torch.long)


def open_run(path: str | Path, registry: Registry | None = None) -> Run:
    """A Run for a run directory (e.g. runs/exp1/20260101-120000)."""
    return Run(runs.check_run_dir(Path(path)), registry)


def find_run(ref: str, runs_dir: Path, registry: Registry | None = None) -> Run:
    """RUN as the CLI takes it: a run directory, a run id (or EXPERIMENT/ID), or an experiment name (its latest run)."""
    return Run(runs.find_run_dir(ref, runs_dir), registry)
