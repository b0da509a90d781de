"""The terminal side of a run: a Rich listener of the engine's events.

Progress bar while training (or one plain line per logging step when the
output is not a terminal), preview grids, the final samples, and the summary
table. Nothing here changes what the engine computes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from workbench.display import sparkline, terminal_samples
from workbench.events import Listener

if TYPE_CHECKING:
    import torch

    from workbench.handle import Run


class ConsoleListener(Listener):
    """Draws a run on a Rich console."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress: Progress | None = None
        self.task: Any = None
        self.phase_bar: Progress | None = None
        self.phase_task: Any = None
        self.phase_message = ""
        self.total = 0

    def run_start(self, run: Run, header: dict[str, Any]) -> None:
        self.console.print(
            f"[bold]{header['experiment']}[/]: {header['description']}\n"
            f"run {run.dir}  ·  {header['parameters']:,} parameters  ·  device {header['device']}",
            soft_wrap=True,
        )

    def resumed(self, run_dir: Path, step: int) -> None:
        self.console.print(f"resuming {run_dir} from step {step}", soft_wrap=True)

    def note(self, message: str) -> None:
        self.console.print(f"[yellow]note:[/] {message}", soft_wrap=True)

    def warning(self, message: str) -> None:
        self.console.print(Text("warning: ", style="bold yellow") + Text(message), soft_wrap=True)

    def phase(self, message: str) -> None:
        self._end_phase()
        self.phase_message = message
        self.console.print(f"[dim]{message}…[/]")

    def advance(self, done: int, total: int) -> None:
        """A transient bar for the current phase (a terminal only; a log file has the phase's line)."""
        if not self.console.is_terminal:
            return
        if self.phase_bar is None:
            self.phase_bar = Progress(
                TextColumn("  [dim]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TimeRemainingColumn(), console=self.console, transient=True,
            )
            self.phase_bar.start()
            self.phase_task = self.phase_bar.add_task(self.phase_message, total=total)
        self.phase_bar.update(self.phase_task, completed=done, total=total)
        if done >= total:
            self._end_phase()

    def _end_phase(self) -> None:
        if self.phase_bar is not None:
            self.phase_bar.stop()
            self.phase_bar = None

    def train_start(self, step: int, total: int) -> None:
        self.total = total
        self.progress = Progress(
            TextColumn("[bold blue]{task.description}"),
            BarColumn(),
            TextColumn("step {task.completed}/{task.total}"),
            _LossColumn(),
            _RateColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task("training", total=total, completed=step, loss=float("nan"))

    def step(self, step: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=step)

    def log(self, run: Run, step: int, record: dict[str, Any], smoothed_loss: float) -> None:
        if self.progress is not None:
            self.progress.update(self.task, loss=smoothed_loss)
        if not self.console.is_terminal:  # no live bar in a log file: one line per logging step
            self.console.print(f"step {step}/{self.total}  loss {record['loss']:.4f}  {record['steps_per_s']:.1f} steps/s")

    def preview(self, step: int, samples: torch.Tensor, data: torch.Tensor) -> None:
        self.console.print(f"[bold]samples at step {step}[/]")
        self.console.print(terminal_samples(samples, data))

    def train_end(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def samples(self, samples: torch.Tensor, data: torch.Tensor, sampler: str) -> None:
        self._end_phase()
        self.console.print(f"[bold]samples from the EMA model ({sampler})[/]")
        self.console.print(terminal_samples(samples, data))

    def class_samples(self, samples: torch.Tensor, labels: torch.Tensor, names: list[str], data: torch.Tensor, sampler: str) -> None:
        from workbench.class_sheet import terminal_class_rows

        self.console.print(f"[bold]samples from the EMA model ({sampler}), one row per class[/]")
        self.console.print(terminal_class_rows(samples, labels, names, data))

    def written(self, run_dir: Path, names: list[str]) -> None:
        self._end_phase()
        self.console.print(f"pictures written to {run_dir}: {', '.join(names)}", soft_wrap=True)

    def run_end(self, run: Run, status: str, summary: dict[str, Any], losses: list[float]) -> None:
        self._end_phase()
        if status != "done":
            return
        table = Table(title=f"{summary['experiment']} · {run.dir.name}", title_justify="left", show_header=False)
        table.add_column(style="bold")
        table.add_column()
        table.add_row("steps", f"{summary['step']:,}")
        table.add_row("wall time", f"{summary['wall_time']:.1f} s")
        table.add_row("loss", sparkline(losses) + f"  {summary['final_loss']:.4f}" if losses else "-")
        for name, value in summary["metrics"].items():
            table.add_row(name, f"{value:.4f}")
        self.console.print(table)
        self.console.print(f"run directory: {run.dir}", soft_wrap=True)


class _LossColumn(ProgressColumn):
    """The smoothed loss, once the first logging step has one (nothing before: not 'loss nan')."""

    def render(self, task: Any) -> Text:
        loss = task.fields.get("loss", float("nan"))
        return Text(f"loss {loss:.4f}" if loss == loss else "")


class _RateColumn(ProgressColumn):
    """Steps per second, once Rich has measured it."""

    def render(self, task: Any) -> Text:
        return Text(f"{task.speed:.1f} steps/s" if task.speed else "", style="progress.data.speed")
