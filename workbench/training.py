"""Training a run: `wb run` and `wb.train(exp)`.

`train` sets a run up (processes, pipeline, trainer, data, run directory);
`fit` trains it and reports; `train_loop` is the loop itself, in the order a
reader expects: one optimizer step, then every `log_every` steps a log
record, and on their own schedules a checkpoint and a preview. The numbers
are the trainer's (workbench.trainer); what a person sees is the listeners'
(workbench.console, and the plugins' run hooks).

Ctrl-C only sets a flag; the loop stops at the next step boundary and writes
a checkpoint, so an interrupted run is never half-updated and `--resume`
continues bit for bit (on CPU).
"""

from __future__ import annotations

import math
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from rich.console import Console

from workbench import batches, distributed, machine, plots, runs
from workbench.console import ConsoleListener
from workbench.errors import WorkbenchError
from workbench.events import Events, HookListener, Listener
from workbench.experiment import Experiment
from workbench.handle import Run
from workbench.pipeline import Pipeline, resolve_device
from workbench.report import preview_samples, report_run
from workbench.settings import Settings, load_settings
from workbench.trainer import Trainer


class NonFiniteLoss(WorkbenchError):
    """The loss became NaN or infinite."""

    every_rank = True  # the ranks check the same all-reduced losses


class Interrupted(WorkbenchError):
    """Ctrl-C: a checkpoint was written; the run can be resumed."""

    exit_code = 130
    every_rank = True  # the ranks stop together (distributed.any_rank)


def train(
    exp: Experiment,
    *,
    device: str | None = None,
    runs_dir: str | Path | None = None,
    resume_dir: str | Path | None = None,
    console: Console | None = None,
    listeners: Sequence[Listener] = (),
    evaluate_at_end: bool = True,
    settings: Settings | None = None,
) -> Run:
    """Train `exp` in a new run directory (or continue `resume_dir`); returns the finished Run.

    `console` shows progress (none: silent); `listeners` hear every event.
    Raises Interrupted after Ctrl-C (a checkpoint is written) and NonFiniteLoss
    when the loss stops being finite (the last good checkpoint is kept).
    """
    settings = settings or load_settings()
    context, device_ = distributed.init(resolve_device(device or settings.device))
    try:
        shown = [ConsoleListener(console)] if console is not None else []
        events = Events([*shown, HookListener(exp.registry), *listeners] if context.is_main else [])
        # Data before the run directory: a user mistake there must not leave an empty run behind.
        trainer, train_data, held_out = prepare(exp, device_, context, note=events.note, settings=settings)
        if resume_dir is not None:
            run_dir = Path(resume_dir)
            trainer.load_state_dict(runs.load_checkpoint(run_dir / runs.CHECKPOINT))
            if context.is_main:
                runs.truncate_metrics(run_dir, trainer.steps_done)  # the steps after the checkpoint are trained again
            events.resumed(run_dir, trainer.steps_done)
        else:
            new_dir = runs.new_run_dir(Path(runs_dir or settings.runs_dir), exp.name) if context.is_main else None
            run_dir = distributed.broadcast(new_dir, context)
            if context.is_main:
                (run_dir / runs.EXPERIMENT).write_text(exp.to_toml())
        run = Run(run_dir, exp.registry)
        return fit(trainer, train_data, held_out, run, events, evaluate_at_end=evaluate_at_end, cache_dir=settings.cache_dir)
    finally:
        distributed.finish(context)


def prepare(
    exp: Experiment,
    device: torch.device,
    context: distributed.Context = distributed.SINGLE,
    note: Callable[[str], None] = lambda message: None,
    settings: Settings | None = None,
) -> tuple[Trainer, Any, torch.Tensor]:
    """The trainer of `exp` (its network initialised from the seed), the training data and the held-out data.

    Threads, layout and AdamW kernel are chosen for this machine first (workbench.machine): by the
    user where set, else measured by rank 0 (or read from the cache) and told to every rank.
    """
    layout, fused, threads = (None if exp.train.layout == "auto" else exp.train.layout), True, exp.train.threads
    if settings is not None:  # without settings (benchmarks, tests of the step): what the experiment says, unmeasured
        found = machine.choose(exp, device, context.world_size, settings.cache_dir, settings.threads) if context.is_main else None
        choices, line = distributed.broadcast(found, context)
        layout, fused, threads = choices.layout, choices.fused, choices.threads
        note(line)
    if device.type == "cpu" and threads != "auto":
        torch.set_num_threads(threads)
    torch.manual_seed(exp.seed)  # the network's initialisation
    trainer = Trainer(Pipeline(exp, device, layout), context, note=note, fused=fused)
    train_data, held_out = trainer.pipeline.load_data()
    if not isinstance(train_data, torch.Tensor):
        batches.check_epoch(len(train_data), exp.train.batch_size // exp.train.accumulate)
    return trainer, train_data, held_out


def fit(
    trainer: Trainer,
    train_data: Any,
    held_out: torch.Tensor,
    run: Run,
    events: Events,
    *,
    evaluate_at_end: bool = True,
    cache_dir: Path | None = None,
) -> Run:
    """Train to `train.steps`, then report (samples, pictures, metrics); the status in summary.json says how it ended."""
    spec, main = trainer.exp.train, trainer.context.is_main
    write_status(trainer, run.dir, "running")
    try:
        with deferred_interrupt() as interrupt:
            events.run_start(run, header(trainer))
            events.train_start(trainer.steps_done, spec.steps)
            try:
                train_loop(trainer, trainer.batches(train_data), held_out, run, events, spec.steps, interrupt)
            finally:
                events.train_end()
        if trainer.steps_done < spec.steps:  # Ctrl-C here or on another rank
            raise KeyboardInterrupt
        save_checkpoint(trainer, run.dir)
        metrics = report_run(run.dir, trainer.pipeline, trainer.ema, held_out, events, metrics=evaluate_at_end, cache_dir=cache_dir) if main else {}
        summary = write_status(trainer, run.dir, "done", metrics)
    except KeyboardInterrupt:
        save_checkpoint(trainer, run.dir)
        events.run_end(run, "interrupted", write_status(trainer, run.dir, "interrupted"), trainer.losses)
        raise Interrupted(
            f"interrupted at step {trainer.steps_done}; checkpoint written to {run.dir / runs.CHECKPOINT}",
            hint=f"resume with `wb run {trainer.exp.name} --resume`",
        ) from None
    except NonFiniteLoss:
        events.run_end(run, "failed", write_status(trainer, run.dir, "failed"), trainer.losses)
        raise
    events.run_end(run, "done", summary, trainer.losses)
    return run


def train_loop(
    trainer: Trainer,
    source: Iterator[torch.Tensor],
    held_out: torch.Tensor,
    run: Run,
    events: Events,
    until: int,
    interrupt: Interrupt,
) -> None:
    """Optimizer steps until step `until` (at most `train.steps`) or an interrupt on any rank."""
    spec, context = trainer.exp.train, trainer.context
    until = min(until, spec.steps)
    window = LogWindow(trainer)
    last_good = trainer.steps_done  # the step of the newest checkpoint
    while trainer.steps_done < until and not distributed.any_rank(interrupt.requested, context, trainer.device):
        loss, by_quarter = trainer.step(source)
        window.add(loss, by_quarter)
        step = trainer.steps_done
        events.step(step)
        if step % spec.log_every == 0 or step == spec.steps:
            record = window.record(last_good, run.dir)
            if context.is_main:
                runs.append_metrics(run.dir, record)
            events.log(run, step, record, smoothed_loss(trainer.losses))
            if step % spec.checkpoint_every == 0:
                save_checkpoint(trainer, run.dir)
                last_good = step
            if context.is_main and spec.sample_every and step % spec.sample_every == 0 and step < spec.steps:
                events.preview(step, preview_samples(trainer.pipeline, trainer.ema), held_out)
    window.close()


class LogWindow:
    """The steps since the last log record: their losses (device scalars, no host sync) and time."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.losses: list[torch.Tensor] = []
        self.quarters = torch.zeros(2, 4, device=trainer.device)
        self.start = time.perf_counter()

    def add(self, loss: torch.Tensor, by_quarter: torch.Tensor) -> None:
        self.losses.append(loss)
        self.quarters += by_quarter

    def record(self, last_good: int, run_dir: Path) -> dict[str, Any]:
        """The log record of the window (losses averaged over ranks); NonFiniteLoss if any loss is not finite."""
        trainer, context = self.trainer, self.trainer.context
        losses = (distributed.all_sum(torch.stack(self.losses), context) / context.world_size).tolist()
        distributed.all_sum(self.quarters, context)
        bad = [i for i, value in enumerate(losses) if not math.isfinite(value)]
        if bad:
            failed_at = trainer.steps_done - len(losses) + bad[0] + 1
            raise NonFiniteLoss(
                f"the loss became {losses[bad[0]]} at step {failed_at}; training stopped",
                hint=f"the last good checkpoint (step {last_good}) is kept in {run_dir}; "
                "try a lower train.lr or train.grad_clip",
            )
        now = time.perf_counter()
        record = {
            "step": trainer.steps_done,
            "loss": sum(losses) / len(losses),
            "lr": trainer.learning_rate(trainer.steps_done - 1),
            "steps_per_s": len(losses) / max(now - self.start, 1e-9),
        }
        sums, counts = self.quarters.tolist()
        for q in range(4):  # the loss by timestep quarter shows where the model struggles
            record[f"loss_q{q}"] = sums[q] / counts[q] if counts[q] else None
        trainer.wall_time += now - self.start
        trainer.losses.append(record["loss"])
        self.losses, self.start = [], now
        self.quarters.zero_()
        return record

    def close(self) -> None:
        """Count the time of steps not yet logged."""
        if self.losses:
            self.trainer.wall_time += time.perf_counter() - self.start


def save_checkpoint(trainer: Trainer, run_dir: Path) -> None:
    """The trainer's whole state, written atomically by rank 0."""
    if trainer.context.is_main:
        runs.save_checkpoint(run_dir / runs.CHECKPOINT, trainer.state_dict())


def header(trainer: Trainer) -> dict[str, Any]:
    exp = trainer.exp
    return {"experiment": exp.name, "description": exp.description, "parameters": trainer.parameters, "device": str(trainer.device)}


def smoothed_loss(losses: list[float]) -> float:
    """The logged loss, exponentially smoothed (what the progress bar and summary show)."""
    return plots.smooth(losses, alpha=0.3)[-1] if losses else float("nan")


def write_status(trainer: Trainer, run_dir: Path, status: str, metrics: dict[str, float] | None = None) -> dict[str, Any]:
    """summary.json with the run's status, progress and metrics (rank 0 writes it; every rank gets it back)."""
    summary = {
        "experiment": trainer.exp.name,
        "run_id": run_dir.name,
        "status": status,
        "step": trainer.steps_done,
        "steps": trainer.exp.train.steps,
        "wall_time": round(trainer.wall_time, 3),
        "device": str(trainer.device),
        "parameters": trainer.parameters,
        "final_loss": smoothed_loss(trainer.losses) if trainer.losses else None,
        "metrics": dict(metrics or {}),
    }
    return runs.write_summary(run_dir, summary) if trainer.context.is_main else summary


@dataclass
class Interrupt:
    """Set by Ctrl-C; the loop checks it between steps."""

    requested: bool = False


@contextmanager
def deferred_interrupt() -> Iterator[Interrupt]:
    """Ctrl-C sets a flag that the loop checks between steps; a second Ctrl-C interrupts at once.

    Not so in a worker that torch's launcher started: it gets Ctrl-C twice,
    from the terminal and passed on by the launcher, which itself kills
    workers that have not stopped 30 s later.
    """
    interrupt = Interrupt()

    def request_stop(signum: int, frame: Any) -> None:
        if interrupt.requested and not distributed.under_launcher():
            raise KeyboardInterrupt
        interrupt.requested = True

    try:
        previous = signal.signal(signal.SIGINT, request_stop)
    except ValueError:  # not the main thread: leave Ctrl-C as it is
        yield interrupt
        return
    try:
        yield interrupt
    finally:
        signal.signal(signal.SIGINT, previous)
