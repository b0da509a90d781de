"""The training engine: `wb run` and `wb.train(exp)`.

One loop, in the order a reader expects: draw a batch, compute the loss,
step AdamW (warm-up, gradient clipping, accumulation), update the EMA of
the weights, log, checkpoint, preview. Then sample from the EMA model,
evaluate, and write the summary.

Reproducibility: the randomness of training (t, noise, and the batch indices
of an in-memory set) comes from one seeded torch.Generator, dropout from the
global RNG, and a streamed set's order from the seed and the step
(workbench.batches); the states are in every checkpoint, so `--resume`
continues bit for bit (on CPU). Ctrl-C only sets a flag; the loop stops at
the next step boundary and writes a checkpoint, so an interrupted run is
never half-updated.
"""

from __future__ import annotations

import copy
import math
import signal
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator

import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from torch.nn.parallel import DistributedDataParallel

from workbench import batches, distributed, plots, runs
from workbench.display import save_samples, sparkline, terminal_samples
from workbench.errors import WorkbenchError
from workbench.evaluation import evaluate, make_evaluation, save_artifacts
from workbench.experiment import Experiment
from workbench.pipeline import Pipeline, resolve_device


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
    evaluate_at_end: bool = True,
) -> runs.Run:
    """Train `exp` in a new run directory (or continue `resume_dir`); returns the finished Run.

    Raises Interrupted after Ctrl-C (a checkpoint is written) and NonFiniteLoss
    when the loss stops being finite (the last good checkpoint is kept).
    """
    from workbench.settings import load_settings

    settings = load_settings()
    context, device_ = distributed.init(resolve_device(device or settings.device))
    console = console if console is not None and context.is_main else Console(quiet=True)
    try:
        # Data and model first: a user mistake there must not leave an empty run directory behind.
        trainer = Trainer(exp, device_, console, context)
        if resume_dir is not None:
            trainer.resume(Path(resume_dir))
        else:
            new_dir = runs.new_run_dir(Path(runs_dir or settings.runs_dir), exp.name) if context.is_main else None
            trainer.start(distributed.broadcast(new_dir, context))
        return trainer.fit(evaluate_at_end=evaluate_at_end)
    finally:
        distributed.finish(context)


class Trainer:
    """Holds the model, its EMA, the optimizer and the data of one run."""

    def __init__(self, exp: Experiment, device: torch.device, console: Console, context: distributed.Context = distributed.SINGLE) -> None:
        spec = exp.train
        distributed.check_batch(spec.batch_size, spec.accumulate, context, exp.name)
        self.exp, self.device, self.console, self.context = exp, device, console, context
        self.main = context.is_main
        torch.manual_seed(exp.seed)  # the network's initialisation
        self.pipeline = Pipeline(exp, device)
        self.model, self.diffusion, self.loss = self.pipeline.model, self.pipeline.diffusion, self.pipeline.loss
        if context.world_size > 1:  # e.g. an importance-sampling history must see the global batch
            self.loss.distribute(lambda x: distributed.all_gather(x, context))
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.parameters = sum(p.numel() for p in self.model.parameters())
        self.optimizer = adamw(self.model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
        self.generator = torch.Generator(device=device).manual_seed(exp.seed)
        # DDP averages the gradients over ranks; compile goes outside it (PyTorch's recommended order).
        self.ddp = DistributedDataParallel(self.model) if context.world_size > 1 else None
        network = self.ddp or self.model
        self.forward = torch.compile(network) if spec.compile else network
        self.autocast = spec.precision == "bf16" and fast_bf16(device)
        if spec.precision == "bf16" and not self.autocast:
            console.print(f"[yellow]note:[/] this {device.type} has no fast bf16 (CUDA, or a CPU with AVX512-BF16 / AMX); "
                          "training in fp32")
        self.train_data, self.eval_data = self.pipeline.load_data()
        if not isinstance(self.train_data, torch.Tensor):
            batches.check_epoch(len(self.train_data), spec.batch_size // spec.accumulate)
        self.step = 0
        self.wall_time = 0.0
        self.losses: list[float] = []
        self.stop_requested = False
        self.run_dir = Path()

    def start(self, run_dir: Path) -> None:
        """A new run: store the resolved experiment in its (fresh) directory."""
        self.run_dir = run_dir
        if self.main:
            (run_dir / runs.EXPERIMENT).write_text(self.exp.to_toml())

    def resume(self, run_dir: Path) -> None:
        """Continue `run_dir` from its checkpoint: weights, optimizer, step and every RNG state."""
        self.run_dir = run_dir
        self._restore(runs.load_checkpoint(run_dir / runs.CHECKPOINT))

    # --- data -----------------------------------------------------------------------

    def _batches(self, size: int) -> Iterator[torch.Tensor]:
        """Endless shards, this rank's, of global micro-batches of `size` examples (see workbench.batches)."""
        if isinstance(self.train_data, torch.Tensor):
            return batches.in_memory(self.train_data, size, self.generator, self.context)
        start = self.step * self.exp.train.accumulate  # the global batches already trained on
        return batches.streamed(self.train_data, size, self.exp.seed, start, self.context, self.device)

    # --- one optimizer step ------------------------------------------------------------

    def learning_rate(self, step: int) -> float:
        """Linear warm-up to the peak rate over `train.warmup` steps, then constant."""
        warmup = self.exp.train.warmup
        return self.exp.train.lr * min(1.0, (step + 1) / warmup) if warmup else self.exp.train.lr

    def train_step(self, source: Iterator[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step over `accumulate` micro-batches.

        Returns the mean loss (a device scalar) and the loss summed and counted
        per quarter of the timesteps [2, 4], without a host sync.
        """
        spec = self.exp.train
        T = self.diffusion.num_timesteps
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(self.step)
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        by_quarter = torch.zeros(2, 4, device=self.device)
        for micro in range(spec.accumulate):
            # This rank's shard of the global micro-batch, then t and noise for the whole
            # global micro-batch and this rank's shard of each: the numbers are the same
            # whatever the number of processes.
            x0 = next(source)
            size = len(x0) * self.context.world_size
            t, _ = self.loss.sample_timesteps(size, T, self.device, self.generator)
            noise = torch.randn((size, *x0.shape[1:]), generator=self.generator, dtype=x0.dtype, device=self.device)
            t, noise = (distributed.shard(v, self.context) for v in (t, noise))
            last = micro == spec.accumulate - 1
            with self.ddp.no_sync() if self.ddp is not None and not last else nullcontext():
                with torch.autocast(self.device.type, dtype=torch.bfloat16) if self.autocast else nullcontext():
                    losses = self.loss(self.forward, self.diffusion, x0, generator=self.generator, t=t, noise=noise)
                loss = losses.mean()
                (loss / spec.accumulate).backward()
            total += loss.detach().float() / spec.accumulate
            quarter = t * 4 // T
            by_quarter[0].index_add_(0, quarter, losses.detach().float())
            by_quarter[1].index_add_(0, quarter, torch.ones_like(quarter, dtype=torch.float))
        if spec.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), spec.grad_clip)
        self.optimizer.step()
        self._update_ema()
        self.step += 1
        return total, by_quarter

    @torch.no_grad()
    def _update_ema(self) -> None:
        """ema <- d * ema + (1 - d) * weights, with d warmed up as min(ema, (1 + n) / (10 + n))
        so that short runs are not dominated by the random initialisation."""
        decay = min(self.exp.train.ema, (1 + self.step) / (10 + self.step))
        ema_params = list(self.ema.parameters())
        torch._foreach_lerp_(ema_params, list(self.model.parameters()), 1.0 - decay)
        for ema_buffer, buffer in zip(self.ema.buffers(), self.model.buffers()):
            ema_buffer.copy_(buffer)

    # --- the loop -------------------------------------------------------------------------

    def fit(self, evaluate_at_end: bool = True) -> runs.Run:
        from workbench.registry import default_registry

        hooks = default_registry().pm.hook if self.main else _Silent()
        run = runs.Run(self.run_dir)
        spec = self.exp.train
        self._write_summary("running")
        try:
            with self._deferred_interrupt():
                hooks.on_run_start(run=run)
                self.console.print(
                    f"[bold]{self.exp.name}[/]: {self.exp.description}\n"
                    f"run {self.run_dir}  ·  {self.parameters:,} parameters  ·  device {self.device}",
                    soft_wrap=True,
                )
                with self._progress() as progress:
                    task = progress.add_task("training", total=spec.steps, completed=self.step, loss=float("nan"))
                    self._loop(progress, task, hooks, run)
            if self.step < spec.steps:  # Ctrl-C here or on another rank
                raise KeyboardInterrupt
            self._checkpoint()
            status = "done"
            summary = self._finish(evaluate_at_end) if self.main else {}
        except KeyboardInterrupt:
            self._checkpoint()
            self._write_summary("interrupted")
            hooks.on_run_end(run=run, status="interrupted", summary=self.summary("interrupted"))
            raise Interrupted(
                f"interrupted at step {self.step}; checkpoint written to {self.run_dir / runs.CHECKPOINT}",
                hint=f"resume with `wb run {self.exp.name} --resume`",
            ) from None
        except NonFiniteLoss:
            self._write_summary("failed")
            hooks.on_run_end(run=run, status="failed", summary=self.summary("failed"))
            raise
        hooks.on_run_end(run=run, status=status, summary=summary)
        return run

    def run_steps(self, n: int) -> None:
        """Train `n` more steps (at most to `train.steps`) with the loop of `wb run`, logging and
        checkpoints included, but no run hooks and no output: what benchmarks time."""
        with self._progress() as progress:
            task = progress.add_task("training", total=self.exp.train.steps, completed=self.step, loss=float("nan"))
            self._loop(progress, task, _Silent(), runs.Run(self.run_dir), until=self.step + n)

    def _loop(self, progress: Progress, task: Any, hooks: Any, run: runs.Run, until: int | None = None) -> None:
        spec = self.exp.train
        until = spec.steps if until is None else min(until, spec.steps)
        source = self._batches(spec.batch_size // spec.accumulate)
        window: list[torch.Tensor] = []
        window_quarters = torch.zeros(2, 4, device=self.device)
        window_start, window_steps = time.perf_counter(), 0
        last_good = self.step
        while self.step < until and not distributed.any_rank(self.stop_requested, self.context, self.device):
            loss, by_quarter = self.train_step(source)
            window.append(loss)
            window_quarters += by_quarter
            window_steps += 1
            progress.update(task, completed=self.step)
            if self.step % spec.log_every == 0 or self.step == spec.steps:
                world = self.context.world_size
                losses = (distributed.all_sum(torch.stack(window), self.context) / world).tolist()
                distributed.all_sum(window_quarters, self.context)
                bad = [i for i, value in enumerate(losses) if not math.isfinite(value)]
                if bad:
                    failed_at = self.step - len(losses) + bad[0] + 1
                    raise NonFiniteLoss(
                        f"the loss became {losses[bad[0]]} at step {failed_at}; training stopped",
                        hint=f"the last good checkpoint (step {last_good}) is kept in {self.run_dir}; "
                        "try a lower train.lr or train.grad_clip",
                    )
                now = time.perf_counter()
                record = {
                    "step": self.step,
                    "loss": sum(losses) / len(losses),
                    "lr": self.learning_rate(self.step - 1),
                    "steps_per_s": window_steps / max(now - window_start, 1e-9),
                }
                sums, counts = window_quarters.tolist()
                for q in range(4):  # the loss by timestep quarter shows where the model struggles
                    record[f"loss_q{q}"] = sums[q] / counts[q] if counts[q] else None
                window_quarters.zero_()
                self.wall_time += now - window_start
                window, window_start, window_steps = [], now, 0
                self.losses.append(record["loss"])
                if self.main:
                    runs.append_metrics(self.run_dir, record)
                    hooks.on_log(run=run, step=self.step, metrics=record)
                progress.update(task, loss=self._smoothed_loss())
                if not self.console.is_terminal:  # no live bar in a log file: one line per logging step
                    self.console.print(
                        f"step {self.step}/{spec.steps}  loss {record['loss']:.4f}  {record['steps_per_s']:.1f} steps/s"
                    )
                if self.step % spec.checkpoint_every == 0:
                    self._checkpoint()
                    last_good = self.step
                if self.main and spec.sample_every and self.step % spec.sample_every == 0 and self.step < spec.steps:
                    self._preview(progress.console, f"samples at step {self.step}")
        self.wall_time += time.perf_counter() - window_start if window_steps else 0.0

    def _smoothed_loss(self) -> float:
        """The logged loss, exponentially smoothed (what the progress bar and summary show)."""
        return plots.smooth(self.losses, alpha=0.3)[-1]

    @contextmanager
    def _deferred_interrupt(self):
        """Ctrl-C sets a flag that the loop checks between steps; a second Ctrl-C interrupts at once.

        Not so in a worker that torch's launcher started: it gets Ctrl-C twice,
        from the terminal and passed on by the launcher, which itself kills
        workers that have not stopped 30 s later.
        """
        def request_stop(signum, frame):
            if self.stop_requested and not distributed.under_launcher():
                raise KeyboardInterrupt
            self.stop_requested = True

        try:
            previous = signal.signal(signal.SIGINT, request_stop)
        except ValueError:  # not the main thread: leave Ctrl-C as it is
            yield
            return
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _progress(self) -> Progress:
        return Progress(
            TextColumn("[bold blue]{task.description}"),
            BarColumn(),
            TextColumn("step {task.completed}/{task.total}"),
            TextColumn("loss {task.fields[loss]:.4f}"),
            _RateColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )

    # --- checkpoints -------------------------------------------------------------------------

    def _checkpoint(self) -> None:
        if not self.main:
            return
        runs.save_checkpoint(self.run_dir / runs.CHECKPOINT, {
            "step": self.step,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "loss_state": self.loss.state_dict(),
            "wall_time": self.wall_time,
            "losses": self.losses,
        })

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.loss.load_state_dict(state["loss_state"])
        self.step, self.wall_time, self.losses = state["step"], state["wall_time"], list(state["losses"])
        runs.truncate_metrics(self.run_dir, self.step)
        self.console.print(f"resuming {self.run_dir} from step {self.step}")

    # --- the end of a run ----------------------------------------------------------------------

    def _preview(self, console: Console, title: str) -> None:
        """Samples from the EMA model in the terminal, during training (a fixed seed, so they are comparable)."""
        n = self.exp.train.preview if len(self.pipeline.shape) > 1 else 1000
        generator = torch.Generator(device=self.device).manual_seed(self.exp.seed + 12345)
        samples = Pipeline.draw(self.exp.sampler, self.ema, self.diffusion, (n, *self.pipeline.shape), generator, self.exp.eval.batch_size)
        console.print(f"[bold]{title}[/]")
        console.print(terminal_samples(samples, self.eval_data))

    def _finish(self, evaluate_at_end: bool) -> dict[str, Any]:
        """Draw `eval.samples` once: they are the picture and what the sample-quality metrics score."""
        evaluation = make_evaluation(self.pipeline, self.ema, self.eval_data, progress=self.console)
        samples = evaluation.samples
        shown = samples if samples.ndim == 2 else samples[: self.exp.train.preview]
        self.console.print(f"[bold]samples from the EMA model ({self.exp.sampler.name})[/]")
        self.console.print(terminal_samples(shown, self.eval_data))
        save_samples(shown, self.run_dir / "samples.png", data=self.eval_data)
        self._save_plots()
        self.console.print(f"pictures written to {self.run_dir}: samples.png, trajectory.png, forward.png, loss.png", soft_wrap=True)
        metrics = evaluate(self.exp.metrics, evaluation) if evaluate_at_end else {}
        save_artifacts(evaluation, self.run_dir)
        summary = self._write_summary("done", metrics)
        self._print_summary(summary)
        return summary

    def _save_plots(self) -> None:
        """The reverse trajectory, the forward process and the training curves, as PNGs."""
        images = len(self.pipeline.shape) > 1
        n = 8 if images else 500
        generator = torch.Generator(device=self.device).manual_seed(self.exp.seed + 777)
        _, trajectory = Pipeline.draw(
            self.exp.sampler, self.ema, self.diffusion, (n, *self.pipeline.shape), generator, return_trajectory=True
        )
        frames = plots.evenly_spaced_steps(len(trajectory), min(8, len(trajectory)))
        reverse = [(f"{i}/{len(trajectory) - 1}", trajectory[i].cpu()) for i in frames]
        plots.save_rows([(f"reverse process ({self.exp.sampler.name}), noise to data", plots.panels(reverse))], self.run_dir / "trajectory.png")
        x0 = self.eval_data[: n if images else 2000].cpu()
        steps = plots.evenly_spaced_steps(self.diffusion.num_timesteps, 8)
        forward = plots.forward_process(self.diffusion, x0, steps, torch.Generator().manual_seed(self.exp.seed))
        plots.save_rows([(f"forward process ({self.exp.scheduler.name} schedule)", plots.panels(forward))], self.run_dir / "forward.png")
        plots.training_curves(runs.read_metrics(self.run_dir), self.run_dir / "loss.png")

    def summary(self, status: str, metrics: dict[str, float] | None = None) -> dict[str, Any]:
        previous = runs.read_json(self.run_dir / runs.SUMMARY)
        return {
            "experiment": self.exp.name,
            "run_id": self.run_dir.name,
            "status": status,
            "step": self.step,
            "steps": self.exp.train.steps,
            "wall_time": round(self.wall_time, 3),
            "device": str(self.device),
            "parameters": self.parameters,
            "final_loss": self._smoothed_loss() if self.losses else None,
            "metrics": {**previous.get("metrics", {}), **(metrics or {})},
        }

    def _write_summary(self, status: str, metrics: dict[str, float] | None = None) -> dict[str, Any]:
        summary = self.summary(status, metrics)
        if self.main:
            runs.write_json(self.run_dir / runs.SUMMARY, summary)
        return summary

    def _print_summary(self, summary: dict[str, Any]) -> None:
        table = Table(title=f"{self.exp.name} · {self.run_dir.name}", title_justify="left", show_header=False)
        table.add_column(style="bold")
        table.add_column()
        table.add_row("steps", f"{summary['step']:,}")
        table.add_row("wall time", f"{summary['wall_time']:.1f} s")
        table.add_row("loss", sparkline(self.losses) + f"  {summary['final_loss']:.4f}" if self.losses else "-")
        for name, value in summary["metrics"].items():
            table.add_row(name, f"{value:.4f}")
        self.console.print(table)
        self.console.print(f"run directory: {self.run_dir}", soft_wrap=True)


def adamw(params: Any, lr: float, weight_decay: float = 0.0) -> torch.optim.AdamW:
    """AdamW (Loshchilov & Hutter 2019) with torch's fused kernel where this torch has one for the device.

    The fused kernel updates every parameter in one pass instead of a dozen
    elementwise passes over the foreach lists; the update it computes is the same.
    CUDA has it since torch 2.0, the CPU since torch 2.4.
    """
    params = list(params)
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError):  # no fused kernel for this device or torch
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast speeds training up on `device`: a CUDA GPU with bf16, or a CPU with
    AVX512-BF16 or AMX (elsewhere bf16 is emulated and slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return False


class _Silent:
    """The run hooks on ranks other than 0, which log nothing."""

    def __getattr__(self, name: str) -> Any:
        return lambda **kwargs: None


class _RateColumn(ProgressColumn):
    """Steps per second, once Rich has measured it."""

    def render(self, task: Any) -> Text:
        return Text(f"{task.speed:.1f} steps/s" if task.speed else "", style="progress.data.speed")
