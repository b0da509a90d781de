"""The report on a trained model: samples, pictures and metrics, written into its run directory.

`wb run` reports when training ends (`report_run`); `wb eval` evaluates a
finished run again (`evaluate_run`). Both go through `evaluate_into`, which
runs the metrics and writes the artifacts they return.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch

from workbench import plots, runs, streams
from workbench.class_sheet import save_class_sheet
from workbench.components import Evaluation, Metric, Sampler
from workbench.display import save_samples
from workbench.errors import WorkbenchError
from workbench.evaluation import Results, evaluate, make_evaluation
from workbench.events import Events
from workbench.experiment import Experiment
from workbench.handle import Run
from workbench.pipeline import Pipeline
from workbench.sampling import draw_samples

PICTURES = ["samples.png", "trajectory.png", "forward.png", "loss.png"]
PREVIEWS = "previews.pt"


def evaluate_into(run_dir: Path, evaluation: Evaluation, metrics: Sequence[Metric]) -> Results:
    """The metrics' values; the pictures and tables they return are written into `run_dir`."""
    results = evaluate(metrics, evaluation)
    for name, content in results.artifacts.items():
        runs.write_artifact(run_dir / name, content)
    return results


def report_run(
    run_dir: Path,
    pipeline: Pipeline,
    ema: Callable,
    held_out: torch.Tensor,
    events: Events,
    *,
    metrics: bool = True,
    cache_dir: Path | None = None,
) -> dict[str, float]:
    """The end of `wb run`: `eval.samples` drawn once (the picture and what sample-quality metrics score),
    the pictures of the run, and the experiment's metrics."""
    exp = pipeline.exp
    evaluation = make_evaluation(pipeline, ema, held_out, cache_dir=cache_dir, announce=events.phase, progress=events.advance)
    samples = evaluation.samples
    shown = samples if samples.ndim == 2 else samples[: exp.train.preview]
    if evaluation.labels is not None:
        events.class_samples(samples, evaluation.labels, evaluation.class_names, held_out, exp.sampler.name)
    else:
        events.samples(shown, held_out, exp.sampler.name)
    if evaluation.labels is not None:  # a conditional run: one labelled row (or scatter) per class
        save_class_sheet(
            run_dir / "samples.png", samples, evaluation.labels, evaluation.class_names, held_out, evaluation.data_labels
        )
    else:
        save_samples(shown, run_dir / "samples.png", data=held_out, title=f"{exp.name} · {run_dir.name}: {describe(exp.sampler)}, EMA weights")
    save_pictures(run_dir, pipeline, ema, held_out)
    events.written(run_dir, PICTURES)
    return evaluate_into(run_dir, evaluation, exp.metrics).values if metrics else {}


def save_pictures(run_dir: Path, pipeline: Pipeline, ema: Callable, held_out: torch.Tensor) -> None:
    """The reverse trajectory, the forward process and the training curves, as PNGs."""
    exp, diffusion = pipeline.exp, pipeline.diffusion
    images = len(pipeline.shape) > 1
    n = 8 if images else 500
    generator = streams.generator(exp.seed, "trajectory", pipeline.device)
    _, trajectory = draw_samples(
        exp.sampler, ema, diffusion, (n, *pipeline.shape), generator, return_trajectory=True, num_classes=pipeline.num_classes
    )
    frames = plots.evenly_spaced_steps(len(trajectory), min(8, len(trajectory)))
    reverse = [(f"{i}/{len(trajectory) - 1}", trajectory[i].cpu()) for i in frames]
    plots.save_rows([(f"reverse process ({exp.sampler.name}), noise to data", plots.panels(reverse))], run_dir / "trajectory.png")
    x0 = held_out[: n if images else 2000].cpu()
    steps = plots.evenly_spaced_steps(diffusion.num_timesteps, 8)
    forward = plots.forward_process(diffusion, x0, steps, streams.generator(exp.seed, "forward"))
    plots.save_rows([(f"forward process ({exp.scheduler.name} schedule)", plots.panels(forward))], run_dir / "forward.png")
    plots.training_curves(runs.read_metrics(run_dir), run_dir / "loss.png")


def describe(sampler: Sampler) -> str:
    """'sampler dpm_solver (steps 20, order 3)': the sampler and the options that set its path."""
    values = sampler.model_dump()
    if values.get("guidance") == 1.0:  # the conditional model as it is: nothing to say
        values.pop("guidance")
    options = [f"{k} {values[k]}" for k in ("steps", "eta", "order", "guidance") if values.get(k) is not None]
    return f"sampler {sampler.name}" + (f" ({', '.join(options)})" if options else "")


def record_preview(run_dir: Path, step: int, samples: torch.Tensor, held_out: torch.Tensor) -> None:
    """Keep a preview and redraw progress.png from all kept: the model learning, one row per preview step.

    The previews live in previews.pt (step -> samples; a resumed run keeps the earlier ones, and draws
    again the ones after its checkpoint).
    """
    path = run_dir / PREVIEWS
    kept = runs.load_checkpoint(path) if path.exists() else {}
    kept[str(step)] = samples[:16].cpu() if samples.ndim > 2 else samples.cpu()
    runs.save_checkpoint(path, kept)
    previews = sorted((int(k), v) for k, v in kept.items())
    runs.write_artifact(run_dir / "progress.png", plots.progress_sheet(previews, held_out.cpu()))


def preview_samples(pipeline: Pipeline, ema: Callable) -> torch.Tensor:
    """Samples shown during training: from the same ("preview") noise each time, so they are comparable."""
    exp = pipeline.exp
    n = exp.train.preview if len(pipeline.shape) > 1 else 1000
    generator = streams.generator(exp.seed, "preview", pipeline.device)
    return draw_samples(
        exp.sampler, ema, pipeline.diffusion, (n, *pipeline.shape), generator, exp.eval.batch_size,
        num_classes=pipeline.num_classes,
    )


def evaluate_run(
    run: Run,
    metric_names: Sequence[str] = (),
    *,
    sampler: str | None = None,
    sampler_options: dict | None = None,
    num_samples: int | None = None,
    device: torch.device | str = "cpu",
    events: Events | None = None,
    cache_dir: Path | None = None,
) -> tuple[list[Metric], dict[str, float]]:
    """`wb eval`: the run's EMA model evaluated again; values added to its summary and evaluations.jsonl.

    An evaluation writes the run, so it takes the run's lock (runs.RunBusy while the run trains) and
    refuses a damaged summary before any work.
    """
    with runs.lock_run(run.dir, doing="evaluating"):
        if not runs.read_summary(run.dir):
            raise runs.DamagedRun(f"{run.dir} has no {runs.SUMMARY}", hint="its process ended before it wrote one")
        return _evaluate(run, metric_names, sampler, sampler_options, num_samples, device, events or Events(), cache_dir)


def _evaluate(
    run: Run,
    metric_names: Sequence[str],
    sampler: str | None,
    sampler_options: dict | None,
    num_samples: int | None,
    device: torch.device | str,
    events: Events,
    cache_dir: Path | None,
) -> tuple[list[Metric], dict[str, float]]:
    pipeline = run.pipeline(device)
    exp = pipeline.exp
    metrics = [exp.registry.build("metric", name) for name in metric_names] or list(exp.metrics)
    if not metrics:
        raise WorkbenchError("no metrics to compute: the experiment names none", hint="pass --metric NAME (`wb list metrics`)")
    _, held_out = pipeline.load_data()
    chosen = pipeline.sampler(sampler, sampler_options)
    evaluation = make_evaluation(
        pipeline, pipeline.model, held_out, sampler=chosen, num_samples=num_samples, cache_dir=cache_dir, announce=events.phase,
        progress=events.advance,
    )
    results = evaluate_into(run.dir, evaluation, metrics)
    values = {evaluation_key(metric, results, exp, chosen, evaluation.num_samples): results.values[metric.name] for metric in metrics}
    record = {
        "sampler": chosen.name, "sampler_options": chosen.model_dump(mode="json"), "samples": evaluation.num_samples,
        "metric_options": {m.name: m.model_dump(mode="json") for m in metrics},
    }
    runs.add_evaluation(run.dir, record, values)
    return metrics, values


def evaluation_key(metric: Metric, results: Results, exp: Experiment, sampler: Sampler, num_samples: int) -> str:
    """The summary's name for a value: the metric's name when it is measured as the experiment defines it,
    else with what differs ("fd (sampler ddim (steps 50); n 200)"), so another definition never overwrites it."""
    own = next((m for m in exp.metrics if m.name == metric.name), None)
    if own is None:
        try:
            own = type(metric)()  # a metric the experiment does not name: against its defaults
        except ValueError:  # required options: nothing to compare with
            own = metric
    differs = [f"{k} {v}" for k, v in metric.model_dump().items() if own.model_dump().get(k) != v]
    if metric.name in results.uses_samples:
        if sampler.name != exp.sampler.name or sampler.model_dump() != exp.sampler.model_dump():
            differs.append(describe(sampler))
        if num_samples != exp.eval.samples:
            differs.append(f"n {num_samples}")
    return metric.name + (f" ({'; '.join(differs)})" if differs else "")
