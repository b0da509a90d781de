"""The hooks a workbench plugin can implement.

A plugin is a module (or any object) with functions marked `@hookimpl`.
Built-in components in `plugins/` and third-party packages use the same
hooks; both are found through the `workbench` entry-point group.

    from workbench import hookimpl

    @hookimpl
    def register_schedulers(register):
        register(MySchedule)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import pluggy

if TYPE_CHECKING:
    import typer

PROJECT = "workbench"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[[type], type]


# --- components: one hook per kind -------------------------------------------


@hookspec
def register_datasets(register: Register) -> None:
    """Register dataset components: `register(cls)` for each class."""


@hookspec
def register_schedulers(register: Register) -> None:
    """Register noise-schedule components."""


@hookspec
def register_backbones(register: Register) -> None:
    """Register backbone (network) components."""


@hookspec
def register_losses(register: Register) -> None:
    """Register training-objective components."""


@hookspec
def register_samplers(register: Register) -> None:
    """Register sampler components."""


@hookspec
def register_metrics(register: Register) -> None:
    """Register evaluation-metric components."""


# --- the command line ---------------------------------------------------------


@hookspec
def register_commands(app: typer.Typer) -> None:
    """Add commands to the `wb` Typer app (`@app.command()`)."""


# --- run lifecycle: for loggers and callbacks -----------------------------------


@hookspec
def on_run_start(run: Any) -> None:
    """A run is about to train; `run` is a workbench.handle.Run (`run.dir`, `run.experiment`)."""


@hookspec
def on_log(run: Any, step: int, metrics: dict[str, float]) -> None:
    """A logging step: `metrics` is what was written to the metrics log."""


@hookspec
def on_run_end(run: Any, status: str, summary: dict[str, Any]) -> None:
    """A run ended with `status` ("done", "interrupted" or "failed")."""


COMPONENT_HOOKS = {
    "dataset": "register_datasets",
    "scheduler": "register_schedulers",
    "backbone": "register_backbones",
    "loss": "register_losses",
    "sampler": "register_samplers",
    "metric": "register_metrics",
}
