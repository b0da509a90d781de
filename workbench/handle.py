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
from workbench.experiment import Experiment, load_experiment
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
        name = self.summary.get("experiment") or self.dir.parent.name
        return load_experiment(name, file=self.dir / runs.EXPERIMENT, registry=self.registry)

    @property
    def summary(self) -> dict[str, Any]:
        return runs.read_json(self.dir / runs.SUMMARY)

    @property
    def status(self) -> str:
        return self.summary.get("status", "unknown")

    @property
    def metrics(self) -> list[dict[str, Any]]:
        return runs.read_metrics(self.dir)

    def checkpoint(self) -> dict[str, Any]:
        return runs.load_checkpoint(self.dir / runs.CHECKPOINT)

    def pipeline(self, device: str | torch.device = "cpu", ema: bool = True) -> Pipeline:
        """The experiment's Pipeline with the checkpoint's EMA (or raw) weights loaded, model in eval mode."""
        pipeline = Pipeline(self.experiment, device=torch.device(device))
        pipeline.model.load_state_dict(self.checkpoint()["ema" if ema else "model"])
        pipeline.model.eval()
        return pipeline

    def sample(
        self,
        n: int,
        sampler: str | None = None,
        seed: int = 0,
        device: str | torch.device = "cpu",
        return_trajectory: bool = False,
        **options: Any,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """n samples from the EMA model with the experiment's sampler, or another with its options."""
        pipeline = self.pipeline(device)
        generator = torch.Generator(device=device).manual_seed(seed)
        return draw_samples(
            pipeline.sampler(sampler, options), pipeline.model, pipeline.diffusion, (n, *pipeline.shape), generator,
            batch_size=pipeline.exp.eval.batch_size, return_trajectory=return_trajectory,
        )


def open_run(path: str | Path, registry: Registry | None = None) -> Run:
    """A Run for a run directory (e.g. runs/exp1/20260101-120000)."""
    return Run(runs.check_run_dir(Path(path)), registry)


def find_run(ref: str, runs_dir: Path, registry: Registry | None = None) -> Run:
    """RUN as the CLI takes it: a run directory, a run id (or EXPERIMENT/ID), or an experiment name (its latest run)."""
    return Run(runs.find_run_dir(ref, runs_dir), registry)
