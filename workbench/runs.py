"""Run directories and checkpoints.

    runs/<experiment>/<run id>/
        experiment.toml     the resolved experiment, exactly as `wb show` prints it
        metrics.jsonl       one JSON object per logging step
        checkpoint.pt       model, EMA, optimizer, step, RNG states (written atomically)
        summary.json        status, step, wall time, final metrics
        *.png               sample grids and plots

A run directory is never overwritten: a new run gets a new id. Checkpoints
load with `torch.load(weights_only=True)`, so a run directory from elsewhere
cannot execute code.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from workbench.errors import WorkbenchError

CHECKPOINT = "checkpoint.pt"
EXPERIMENT = "experiment.toml"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"


# --- run ids and directories ------------------------------------------------------


def new_run_dir(runs_dir: Path, experiment: str) -> Path:
    """A fresh directory runs/<experiment>/<timestamp>[-n]; never an existing one."""
    parent = runs_dir / experiment
    parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        path = parent / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise WorkbenchError(f"could not create a new run directory under {parent}")


def run_dirs(runs_dir: Path, experiment: str | None = None) -> list[Path]:
    """Run directories (holding an experiment.toml), oldest first."""
    pattern = f"{experiment}/*/{EXPERIMENT}" if experiment else f"*/*/{EXPERIMENT}"
    return sorted((p.parent for p in runs_dir.glob(pattern)), key=lambda p: (p.stat().st_mtime, p.name))


def latest_run_dir(runs_dir: Path, experiment: str) -> Path:
    dirs = run_dirs(runs_dir, experiment)
    if not dirs:
        raise WorkbenchError(
            f"no runs of '{experiment}' under {runs_dir}",
            hint=f"start one with `wb run {experiment}`",
        )
    return dirs[-1]


# --- atomic files -------------------------------------------------------------------


def atomic_write_bytes(path: Path, write) -> None:
    """Write via a temporary file in the same directory, fsync, then rename over `path`."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_bytes(path, lambda f: f.write(json.dumps(data, indent=2, default=str).encode()))


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save `state` atomically: a crash mid-write leaves the previous checkpoint intact."""
    atomic_write_bytes(path, lambda f: torch.save(state, f))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load tensors and plain containers only (weights_only=True): no code runs."""
    if not path.exists():
        raise WorkbenchError(f"no checkpoint at {path}", hint="the run stopped before its first checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WorkbenchError(f"cannot load checkpoint {path}: {exc}") from None


# --- the metrics log ------------------------------------------------------------------


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    with open(run_dir / METRICS, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / METRICS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop log lines after `step` (a resumed run re-logs them)."""
    kept = [r for r in read_metrics(run_dir) if r.get("step", 0) <= step]
    atomic_write_bytes(run_dir / METRICS, lambda f: f.write("".join(json.dumps(r) + "\n" for r in kept).encode()))


# --- opening a finished (or interrupted) run ---------------------------------------------


@dataclass
class Run:
    """A run directory: its experiment, its EMA model, its metrics; `run.sample(...)` draws samples."""

    dir: Path

    @property
    def experiment(self):
        from workbench.experiment import load_experiment

        name = self.summary.get("experiment") or self.dir.parent.name
        return load_experiment(name, file=self.dir / EXPERIMENT)

    @property
    def summary(self) -> dict[str, Any]:
        return read_json(self.dir / SUMMARY)

    @property
    def status(self) -> str:
        return self.summary.get("status", "unknown")

    @property
    def metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.dir)

    def checkpoint(self) -> dict[str, Any]:
        return load_checkpoint(self.dir / CHECKPOINT)

    def load(self, device: str | torch.device = "cpu", ema: bool = True):
        """(model, diffusion, experiment): the EMA weights by default, in eval mode."""
        from workbench.pipeline import Pipeline

        exp = self.experiment
        pipeline = Pipeline(exp, device=torch.device(device))
        state = self.checkpoint()
        pipeline.model.load_state_dict(state["ema" if ema else "model"])
        pipeline.model.eval()
        return pipeline.model, pipeline.diffusion, exp

    def sample(
        self,
        n: int,
        sampler: str | None = None,
        seed: int = 0,
        device: str | torch.device = "cpu",
        return_trajectory: bool = False,
        **options: Any,
    ):
        """n samples from the EMA model with the experiment's sampler, or another with its options."""
        from workbench.pipeline import Pipeline, build_sampler

        model, diffusion, exp = self.load(device)
        chosen = build_sampler(exp, sampler, options)
        generator = torch.Generator(device=device).manual_seed(seed)
        return Pipeline.draw(chosen, model, diffusion, (n, *exp.dataset.shape), generator, return_trajectory=return_trajectory)


def open_run(path: str | Path) -> Run:
    """A Run for a run directory (e.g. runs/exp1/20260101-120000)."""
    path = Path(path)
    if not (path / EXPERIMENT).exists():
        raise WorkbenchError(f"{path} is not a run directory (no {EXPERIMENT})")
    return Run(path)
