"""Training a run: `wb run` and `wb.train(exp)`.

`train` sets a run up (processes, pipeline, trainer, data, run directory);
`fit` trains it and reports; `train_loop` is the loop itself, in the order a
reader expects: one optimizer step, then every `log_every` steps a log
record, and on their own schedules a checkpoint and a preview. The numbers
are the trainer's (workbench.trainer); what a person sees is the listeners'
(workbench.console, and the plugins' run hooks).

Ctrl-C and SIGTERM (a job scheduler's preemption) only set a flag; the loop
stops at the next step boundary and writes a checkpoint, so an interrupted run
is never half-updated and `--resume` continues bit for bit (on CPU). The exit
code is 128 + the signal's number: 130 for Ctrl-C, 143 for SIGTERM. A second
signal while a step runs stops at once and writes nothing (the last checkpoint
stays); one while a checkpoint or the status is written waits for it.

However a run ends, summary.json says how: done, interrupted, or failed with
the error (a plugin's exception, a full disk), the last good checkpoint kept
and a one-line message naming the plugin whose code raised. One process
writes a run: it holds the run's lock (workbench.runs) while it trains.
"""

from __future__ import annotations

import math
import re
import signal
import time
import traceback
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
from workbench.registry import one_line
from workbench.report import preview_samples, record_preview, report_run
from workbench.settings import Settings, load_settings
from workbench.trainer import Trainer


class NonFiniteLoss(WorkbenchError):
    """The loss became NaN or infinite."""

    every_rank = True  # the ranks check the same all-reduced losses


class Interrupted(WorkbenchError):
    """Ctrl-C or SIGTERM: the run stopped (with a checkpoint at a step boundary, or, after a second signal
    mid-step, keeping the last one) and can be resumed. Its exit code is 128 + the signal: 130 or 143."""

    exit_code = 130
    label = "interrupted"  # the user chose it: not an error
    every_rank = True  # the ranks stop together (distributed.any_rank)

    def __init__(self, message: str, hint: str | None = None, signum: int = signal.SIGINT) -> None:
        super().__init__(message, hint)
        self.exit_code = 128 + int(signum)


class RunFailed(WorkbenchError):
    """Training met an unexpected exception (a plugin's bug, say): status "failed" with the error, the last
    good checkpoint kept, the traceback in summary.json."""


class StopNow(KeyboardInterrupt):
    """A second signal while a step runs, or one while the report runs: stop at once, writing nothing of it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal_name(signum))
        self.signum = signum


class RankStopped(WorkbenchError):
    """Rank 0 met an error in work only it does (the run directory, its lock); every other rank stops too."""

    every_rank = True


def signal_name(signum: int) -> str:
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


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
    Raises Interrupted after Ctrl-C or SIGTERM (a checkpoint is written),
    NonFiniteLoss when the loss stops being finite and RunFailed on any other
    exception (the last good checkpoint is kept); runs.RunBusy when another
    process writes the run.
    """
    settings = settings or load_settings()
    context, device_ = distributed.init(resolve_device(device or settings.device))
    held: list[runs.RunLock] = []
    try:
        shown = [ConsoleListener(console)] if console is not None else []
        hooks = HookListener(exp.registry)
        events = Events([*shown, hooks, *listeners] if context.is_main else [])
        if shown:
            hooks.warn = events.warning
        # Before any model is built: the run directory is writable, and this process its one writer.
        if resume_dir is not None:
            run_dir = Path(resume_dir)
            on_main(context, lambda: held.append(runs.lock_run(run_dir)))
        else:
            root = Path(runs_dir or settings.runs_dir)
            on_main(context, lambda: runs.check_runs_dir(root, exp.name))
        # Data before the run directory: a user mistake there must not leave an empty run behind.
        started = machine.run_choices(run_dir) if resume_dir is not None else None
        trainer, train_data, held_out = prepare(exp, device_, context, note=events.note, settings=settings, choices=started)
        if resume_dir is not None:
            resume(trainer, run_dir, context)
            events.resumed(run_dir, trainer.steps_done)
        else:
            run_dir = on_main(context, lambda: new_run(root, exp, held, trainer.choices))
        run = Run(run_dir, exp.registry)
        return fit(trainer, train_data, held_out, run, events, evaluate_at_end=evaluate_at_end, cache_dir=settings.cache_dir)
    finally:
        for lock in held:
            lock.release()
        distributed.finish(context)


def on_main(context: distributed.Context, work: Callable[[], Any]) -> Any:
    """`work()` on rank 0 alone, its result on every rank; its WorkbenchError is raised on every rank
    (and reported by rank 0 alone), so that no rank waits for one that has stopped."""
    if context.world_size == 1:
        return work()
    result, error = None, None
    if context.is_main:
        try:
            result = work()
        except WorkbenchError as exc:
            error = exc
    result, failure = distributed.broadcast((result, None if error is None else (error.message, error.exit_code)), context)
    if error is not None:
        raise error
    if failure is not None:
        stopped = RankStopped(failure[0])
        stopped.exit_code = failure[1]
        raise stopped
    return result


def new_run(root: Path, exp: Experiment, held: list[runs.RunLock], choices: machine.Choices | None = None) -> Path:
    """A new run directory, locked, with the resolved experiment (and the engine choices it trains with) in it."""
    run_dir = runs.new_run_dir(root, exp.name)
    held.append(runs.lock_run(run_dir))
    runs.atomic_write_bytes(run_dir / runs.EXPERIMENT, lambda f: f.write(exp.to_toml().encode()))
    if choices is not None:
        machine.save_run_choices(run_dir, choices)
    return run_dir


def resume(trainer: Trainer, run_dir: Path, context: distributed.Context) -> None:
    """Load the run's checkpoint into `trainer` (a CheckpointMismatch if it is not this experiment's), drop
    the log lines after it, and store the experiment as resumed (`--set train.steps=N` extends a run)."""
    exp, path = trainer.exp, run_dir / runs.CHECKPOINT
    state = runs.load_checkpoint(path)
    runs.check_checkpoint(state, trainer.model.state_dict(), path, exp.name, runs.TRAINING_KEYS)
    try:
        trainer.load_state_dict(state)
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:
        raise runs.CheckpointMismatch(
            f"checkpoint {path} does not match experiment '{exp.name}': {one_line(exc)}",
            hint="it was written for another experiment (or by another version)",
        ) from None
    if trainer.steps_done > exp.train.steps:
        raise WorkbenchError(
            f"the checkpoint of {run_dir} is at step {trainer.steps_done}, past train.steps = {exp.train.steps}",
            hint=f"resume with --set train.steps={trainer.steps_done} or more",
        )

    def store() -> None:
        runs.truncate_metrics(run_dir, trainer.steps_done)  # the steps after the checkpoint are trained again
        text = exp.to_toml()
        if (run_dir / runs.EXPERIMENT).read_text() != text:
            runs.atomic_write_bytes(run_dir / runs.EXPERIMENT, lambda f: f.write(text.encode()))

    on_main(context, store)


def prepare(
    exp: Experiment,
    device: torch.device,
    context: distributed.Context = distributed.SINGLE,
    note: Callable[[str], None] = lambda message: None,
    settings: Settings | None = None,
    choices: machine.Choices | None = None,
) -> tuple[Trainer, Any, torch.Tensor]:
    """The trainer of `exp` (its network initialised from the seed), the training data and the held-out data.

    The data come first: a mistake there (a missing folder) must not wait for anything slow. Then
    threads, layout and AdamW kernel are chosen for this machine (workbench.machine): by the user
    where set, else measured by rank 0 (or read from the cache) and told to every rank.
    """
    torch.manual_seed(exp.seed)  # the network's initialisation
    pipeline = Pipeline(exp, device)
    train_data, held_out = pipeline.load_data()
    if not isinstance(train_data, torch.Tensor):
        batches.check_epoch(len(train_data), exp.train.batch_size // exp.train.accumulate)
    layout, fused, threads = (None if exp.train.layout == "auto" else exp.train.layout), True, exp.train.threads
    if choices is not None:  # a resumed run: what it started with
        note(machine.report_line(choices, {}, len(exp.dataset.shape) == 3, "as this run started"))
    elif settings is not None:  # without settings (benchmarks, tests of the step): what the experiment says, unmeasured
        found = machine.choose(exp, device, context.world_size, settings.cache_dir, settings.threads) if context.is_main else None
        choices, line = distributed.broadcast(found, context)
        note(line)
    if choices is not None:
        layout, fused, threads = choices.layout, choices.fused, choices.threads
    if device.type == "cpu" and threads != "auto":
        torch.set_num_threads(threads)
    pipeline.lay_out(layout)
    trainer = Trainer(pipeline, context, note=note, fused=fused)
    trainer.choices = choices
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
    """Train to `train.steps`, then report (samples, pictures, metrics).

    summary.json's status says how it ended: done; interrupted (Ctrl-C or
    SIGTERM); failed, with the error. Any way but done raises, and keeps the
    last good checkpoint.
    """
    spec, main = trainer.exp.train, trainer.context.is_main
    saved = Saved(trainer.steps_done if (run.dir / runs.CHECKPOINT).exists() else None)
    with deferred_interrupt() as interrupt:

        def end(status: str, error: str | None = None, trace: str | None = None) -> str:
            return end_run(trainer, run, events, interrupt, status, error, trace)

        try:
            interrupt.phase = "save"
            write_status(trainer, run.dir, "running")
            interrupt.phase = "train"
            events.run_start(run, header(trainer))
            events.train_start(trainer.steps_done, spec.steps)
            try:
                train_loop(trainer, trainer.batches(train_data), held_out, run, events, spec.steps, interrupt, saved)
            finally:
                events.train_end()
            interrupt.phase = "save"
            save_checkpoint(trainer, run.dir, saved)
            stopped = distributed.any_rank(interrupt.requested, trainer.context, trainer.device)
            if not stopped and trainer.steps_done >= spec.steps:
                interrupt.phase = "report"
                metrics = report_run(run.dir, trainer.pipeline, trainer.ema, held_out, events, metrics=evaluate_at_end, cache_dir=cache_dir) if main else {}
                interrupt.phase = "save"
                summary = write_status(trainer, run.dir, "done", metrics)
        except KeyboardInterrupt as stop:  # a second signal mid-step, or one during the report
            raise stopped_at_once(getattr(stop, "signum", signal.SIGINT), trainer, run, saved, interrupt, end) from None
        except NonFiniteLoss as exc:
            exc.hint = (exc.hint or "") + end("failed", error=exc.message)
            raise
        except WorkbenchError as exc:  # a full disk (runs.WriteFailed), or a plugin's own message
            from_worker(exc)
            unsaved = end("failed", error=exc.message)
            exc.hint = "; ".join(filter(None, [exc.hint, kept(saved, run) + unsaved]))
            raise
        except Exception as exc:  # a bug, most often a plugin's: status failed, the traceback kept in summary.json
            raise run_failed(exc, trainer, run, saved, end) from None
        if stopped or trainer.steps_done < spec.steps:  # a signal here or on another rank
            unsaved = end("interrupted")
            raise Interrupted(
                f"interrupted at step {trainer.steps_done}{by(interrupt.signum)}; checkpoint written to {run.dir / runs.CHECKPOINT}",
                hint=resume_hint(trainer, run) + unsaved,
                signum=interrupt.signum,
            )
    events.run_end(run, "done", summary, trainer.losses)
    return run


def end_run(
    trainer: Trainer, run: Run, events: Events, interrupt: Interrupt, status: str,
    error: str | None = None, trace: str | None = None,
) -> str:
    """Write the run's final status and tell the listeners; '' or why the status could not be written."""
    interrupt.phase = "save"
    unsaved = ""
    try:
        summary = write_status(trainer, run.dir, status, error=error, trace=trace)
    except runs.WriteFailed as exc:
        summary = status_summary(trainer, run.dir, status, error=error, trace=trace)
        unsaved = f"; the status could not be written either ({exc.message})"
    events.run_end(run, status, summary, trainer.losses)
    return unsaved


def stopped_at_once(
    signum: int, trainer: Trainer, run: Run, saved: Saved, interrupt: Interrupt, end: Callable[..., str]
) -> Interrupted:
    """A second signal during a step (nothing of the step is written) or one during the report."""
    if interrupt.phase == "report":
        error = f"stopped by {signal_name(signum)} while reporting"
        message = f"{error}; the checkpoint of step {trainer.steps_done} is written"
        hint = resume_hint(trainer, run) + " (it writes the report)"
    else:
        error = f"stopped at once by {signal_name(signum)} during step {trainer.steps_done + 1}"
        message = f"{error}: nothing of it was written; {kept(saved, run)}"
        hint = resume_hint(trainer, run)
    unsaved = end("interrupted", error=error)
    return Interrupted(message, hint=hint + unsaved, signum=signum)


def run_failed(exc: Exception, trainer: Trainer, run: Run, saved: Saved, end: Callable[..., str]) -> RunFailed:
    """An unexpected exception: one line naming the plugin whose code raised, the traceback in summary.json."""
    found = trainer.exp.registry.culprit(exc)
    who = f"plugin '{found[0]}' raised " if found else ""
    where = f" ({found[1]})" if found else ""
    message = f"training failed at step {trainer.steps_done}: {who}{one_line(exc)}{where}"
    unsaved = end("failed", error=message, trace="".join(traceback.format_exception(exc)))
    return RunFailed(message, hint=f"{kept(saved, run)}; the traceback is in {run.dir / runs.SUMMARY}{unsaved}")


def from_worker(exc: WorkbenchError) -> None:
    """A WorkbenchError raised in a DataLoader worker arrives with the worker's traceback as its message:
    its own message and hint again, in place."""
    lines = exc.message.rstrip().splitlines()
    if "Original Traceback" not in exc.message:
        return
    for i in range(len(lines) - 1, -1, -1):
        match = re.match(r"([A-Za-z_][\w.]*): (.*)", lines[i])
        if match:
            exc.message, exc.hint = match.group(2), "\n".join(lines[i + 1 :]).strip() or exc.hint
            exc.args = (exc.message,)
            return


@dataclass
class Saved:
    """The step of the run's newest checkpoint (None: none yet)."""

    step: int | None = None


def kept(saved: Saved, run: Run) -> str:
    if saved.step is None:
        return "no checkpoint was written yet"
    return f"the last good checkpoint (step {saved.step}) is kept in {run.dir}"


def by(signum: int) -> str:
    return "" if signum == signal.SIGINT else f" by {signal_name(signum)}"


def resume_hint(trainer: Trainer, run: Run) -> str:
    name = trainer.exp.name
    latest = run.dir.parent.name == name and runs.run_dirs(run.dir.parent.parent, name)[-1:] == [run.dir]
    return f"resume with `wb run {name} --resume{'' if latest else f' {run.dir}'}`"


def train_loop(
    trainer: Trainer,
    source: Iterator[torch.Tensor],
    held_out: torch.Tensor,
    run: Run,
    events: Events,
    until: int,
    interrupt: Interrupt,
    saved: Saved | None = None,
) -> None:
    """Optimizer steps until step `until` (at most `train.steps`) or an interrupt on any rank."""
    spec, context = trainer.exp.train, trainer.context
    until = min(until, spec.steps)
    window = LogWindow(trainer)
    saved = saved or Saved(trainer.steps_done)
    while trainer.steps_done < until and not distributed.any_rank(interrupt.requested, context, trainer.device):
        loss, by_quarter = trainer.step(source)
        window.add(loss, by_quarter)
        step = trainer.steps_done
        events.step(step)
        if step % spec.log_every == 0 or step == spec.steps:
            record = window.record(saved.step, run.dir)
            if context.is_main:
                runs.append_metrics(run.dir, record)
            events.log(run, step, record, smoothed_loss(trainer.losses))
            if step % spec.checkpoint_every == 0:
                save_checkpoint(trainer, run.dir, saved)
        if context.is_main and spec.sample_every and (step % spec.sample_every == 0 or step == spec.steps):
            samples = preview_samples(trainer.pipeline, trainer.ema)
            record_preview(run.dir, step, samples, held_out)  # progress.png: the model learning
            if step < spec.steps:
                events.preview(step, samples, held_out)
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

    def record(self, last_good: int | None, run_dir: Path) -> dict[str, Any]:
        """The log record of the window (losses averaged over ranks); NonFiniteLoss if any loss is not finite."""
        trainer, context = self.trainer, self.trainer.context
        losses = (distributed.all_sum(torch.stack(self.losses), context) / context.world_size).tolist()
        distributed.all_sum(self.quarters, context)
        bad = [i for i, value in enumerate(losses) if not math.isfinite(value)]
        if bad:
            failed_at = trainer.steps_done - len(losses) + bad[0] + 1
            kept = "no checkpoint was written yet" if last_good is None else f"the last good checkpoint (step {last_good}) is kept in {run_dir}"
            raise NonFiniteLoss(
                f"the loss became {losses[bad[0]]} at step {failed_at}; training stopped",
                hint=f"{kept}; try a lower train.lr or train.grad_clip",
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


def save_checkpoint(trainer: Trainer, run_dir: Path, saved: Saved | None = None) -> None:
    """The trainer's whole state, written atomically by rank 0."""
    if trainer.context.is_main:
        runs.save_checkpoint(run_dir / runs.CHECKPOINT, trainer.state_dict())
    if saved is not None:
        saved.step = trainer.steps_done


def header(trainer: Trainer) -> dict[str, Any]:
    exp = trainer.exp
    return {"experiment": exp.name, "description": exp.description, "parameters": trainer.parameters, "device": str(trainer.device)}


def smoothed_loss(losses: list[float]) -> float:
    """The logged loss, exponentially smoothed (what the progress bar and summary show)."""
    return plots.smooth(losses, alpha=0.3)[-1] if losses else float("nan")


def status_summary(
    trainer: Trainer,
    run_dir: Path,
    status: str,
    metrics: dict[str, float] | None = None,
    error: str | None = None,
    trace: str | None = None,
) -> dict[str, Any]:
    """What summary.json says: the run's status, progress and metrics, and the error it failed with."""
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
    if error is not None:
        summary["error"] = error
    if trace is not None:
        summary["traceback"] = trace
    return summary


def write_status(
    trainer: Trainer, run_dir: Path, status: str, metrics: dict[str, float] | None = None,
    error: str | None = None, trace: str | None = None,
) -> dict[str, Any]:
    """summary.json with the run's status, progress and metrics (rank 0 writes it; every rank gets it back)."""
    summary = status_summary(trainer, run_dir, status, metrics, error, trace)
    return runs.write_summary(run_dir, summary) if trainer.context.is_main else summary


@dataclass
class Interrupt:
    """Set by Ctrl-C or SIGTERM; the loop checks it between steps.

    `phase` says what a signal does now. "train": the first asks the loop to
    stop at the next step boundary, a second stops at once (StopNow), and
    nothing of the unfinished step is written. "save": a checkpoint or the
    status is being written, and the signal waits for it (it is remembered).
    "report": the final checkpoint is written, so a signal stops at once.
    """

    requested: bool = False
    signum: int = signal.SIGINT
    phase: str = "train"

    def receive(self, signum: int) -> None:
        if self.phase == "report":
            raise StopNow(signum)
        if not self.requested:
            self.requested, self.signum = True, signum
        elif self.phase == "train" and not distributed.under_launcher():
            raise StopNow(signum)


@contextmanager
def deferred_interrupt() -> Iterator[Interrupt]:
    """Ctrl-C and SIGTERM call `Interrupt.receive` (a flag the loop checks between steps) while inside.

    A signal that was ignored when the process started (SIGINT of a
    background job) stays ignored. Under torch's launcher a worker gets each
    signal twice (from the terminal or the scheduler, and passed on by the
    launcher, which kills workers that have not stopped 30 s later), so there
    a second signal never stops a step.
    """
    interrupt = Interrupt()
    previous: dict[int, Any] = {}
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(signum) is not signal.SIG_IGN:
                previous[signum] = signal.signal(signum, lambda number, frame: interrupt.receive(number))
    except ValueError:  # not the main thread: leave the signals as they are
        yield interrupt
        return
    try:
        yield interrupt
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
