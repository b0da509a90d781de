"""The diffusion workbench: declare a DDPM-family experiment, train it, look at it, measure it.

    import workbench as wb
    sched = wb.build("scheduler", "cosine", timesteps=1000)
    diffusion = wb.Diffusion(sched.betas(), prediction="eps", variance="fixed_small")

Importing this package does not import torch (the CLI must start fast); the
names that need torch are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from workbench.chain import ChainSampler
from workbench.components import (
    Backbone, Component, Dataset, Evaluation, Loss, LossTerms, Metric, MetricResult, Sampler, Scheduler,
)
from workbench.errors import ConfigError, WorkbenchError
from workbench.hookspecs import hookimpl

__version__ = "0.1.0"

# name -> module that defines it; imported when first asked for.
_LAZY = {
    "build": "workbench.registry",
    "default_registry": "workbench.registry",
    "Registry": "workbench.registry",
    "load_experiment": "workbench.experiment",
    "Experiment": "workbench.experiment",
    "Diffusion": "workbench.diffusion",
    "nll": "workbench.likelihood",
    "train": "workbench.training",
    "open_run": "workbench.handle",
    "Run": "workbench.handle",
    "Walk": "workbench.sampling",
    "draw_samples": "workbench.sampling",
    "timestep_grid": "workbench.sampling",
}

__all__ = [
    "Backbone", "ChainSampler", "Component", "ConfigError", "Dataset", "Evaluation", "Loss", "LossTerms", "Metric",
    "MetricResult", "Sampler", "Scheduler", "WorkbenchError", "hookimpl", *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")
