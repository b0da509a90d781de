"""What the engine tells its listeners while it trains, samples and evaluates.

The engine never prints: it calls `events.<what happened>(...)`, and each
listener does what it is for. The console (workbench.console) draws Rich
progress and tables; `HookListener` passes the run lifecycle on to the
plugins' `on_run_start` / `on_log` / `on_run_end` hooks; a notebook or a test
can add its own. Every method of `Listener` does nothing, so a listener
writes only the ones it cares about.

A plugin's run hook that raises does not stop the run: loggers and
callbacks watch training, and a logger that lost its connection must not
cost the compute of the run it watches. The first error of each plugin's
hook is reported as a warning naming the plugin; the plugin's hook is still
called at the next event, and the other plugins' hooks always are.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from workbench.handle import Run
    from workbench.registry import Registry


class Listener:
    """Base of listeners: one method per event, each a no-op here."""

    def run_start(self, run: Run, header: dict[str, Any]) -> None:
        """Training is about to start: `header` has the experiment, run directory, parameters and device."""

    def resumed(self, run_dir: Path, step: int) -> None:
        """A run continues from its checkpoint at `step`."""

    def note(self, message: str) -> None:
        """Something the user should know that is not an error (a fallback, a choice made)."""

    def warning(self, message: str) -> None:
        """Something went wrong that does not stop the run (a plugin's logger raised)."""

    def phase(self, message: str) -> None:
        """A phase of work begins ("drawing 1000 samples with ddpm", "computing nll")."""

    def advance(self, done: int, total: int) -> None:
        """Progress within the current phase: `done` of `total` (model evaluations, timesteps x batches)."""

    def train_start(self, step: int, total: int) -> None:
        """The loop starts at `step` of `total`."""

    def step(self, step: int) -> None:
        """An optimizer step finished."""

    def log(self, run: Run, step: int, record: dict[str, Any], smoothed_loss: float) -> None:
        """A logging step: `record` is what was written to the metrics log."""

    def preview(self, step: int, samples: torch.Tensor, data: torch.Tensor) -> None:
        """Preview samples from the EMA model during training (the same noise each time)."""

    def train_end(self) -> None:
        """The loop ended (finished, interrupted or failed)."""

    def samples(self, samples: torch.Tensor, data: torch.Tensor, sampler: str) -> None:
        """The final samples from the EMA model."""

    def class_samples(self, samples: torch.Tensor, labels: torch.Tensor, names: list[str], data: torch.Tensor, sampler: str) -> None:
        """A conditional run's final samples, each asked for the class `labels` (names: the class names)."""

    def written(self, run_dir: Path, names: list[str]) -> None:
        """Files written to the run directory."""

    def run_end(self, run: Run, status: str, summary: dict[str, Any], losses: list[float]) -> None:
        """The run ended with `status` ("done", "interrupted" or "failed")."""


class Events(Listener):
    """Every event passed on to each listener in turn."""

    def __init__(self, listeners: list[Listener] | tuple[Listener, ...] = ()) -> None:
        self.listeners = list(listeners)

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("_") or name == "listeners" or not hasattr(Listener, name):
            return object.__getattribute__(self, name)
        listeners = object.__getattribute__(self, "listeners")

        def broadcast(*args: Any, **kwargs: Any) -> None:
            for listener in listeners:
                getattr(listener, name)(*args, **kwargs)

        return broadcast


class HookListener(Listener):
    """The run lifecycle passed on to the plugins' hooks (loggers, callbacks), one plugin at a time.

    A hook that raises is reported through `warn` (once per plugin and hook),
    and the run goes on.
    """

    def __init__(self, registry: Registry, warn: Callable[[str], None] | None = None) -> None:
        self.registry = registry
        self.warn = warn or (lambda message: print(f"warning: {message}", file=sys.stderr))
        self.failed: set[tuple[str, str]] = set()

    def run_start(self, run: Run, header: dict[str, Any]) -> None:
        self.call("on_run_start", run=run)

    def log(self, run: Run, step: int, record: dict[str, Any], smoothed_loss: float) -> None:
        self.call("on_log", run=run, step=step, metrics=record)

    def run_end(self, run: Run, status: str, summary: dict[str, Any], losses: list[float]) -> None:
        self.call("on_run_end", run=run, status=status, summary=summary)

    def call(self, hook: str, **kwargs: Any) -> None:
        """Each plugin's implementation in pluggy's order; a wrapper among them means the hook is called whole."""
        caller = getattr(self.registry.pm.hook, hook)
        impls = caller.get_hookimpls()
        if any(impl.hookwrapper or getattr(impl, "wrapper", False) for impl in impls):
            self._guarded(hook, None, lambda: caller(**kwargs))
            return
        for impl in reversed(impls):
            self._guarded(hook, impl.plugin_name, lambda: impl.function(*[kwargs[name] for name in impl.argnames]))

    def _guarded(self, hook: str, plugin: str | None, call: Callable[[], Any]) -> None:
        from workbench.registry import one_line

        try:
            call()
        except Exception as exc:
            found = self.registry.culprit(exc)
            name = plugin or (found[0] if found else "?")
            if (name, hook) in self.failed:
                return
            self.failed.add((name, hook))
            where = f" at {found[1]}" if found else ""
            self.warn(
                f"plugin '{name}' raised in {hook}{where}: {one_line(exc)}; the run goes on "
                f"(later errors of its {hook} are not shown)"
            )
