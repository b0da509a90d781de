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

This module is the end of the data flow and a leaf: paths, atomic writes,
checkpoints, the metrics log and the summary, read and written as plain
data. It imports nothing of the engine above it; the handle that opens a
run's model and samples from it is workbench.handle.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any, Callable

import torch

from workbench.errors import WorkbenchError, did_you_mean
from workbench.toml_io import read_toml

CHECKPOINT = "checkpoint.pt"
EXPERIMENT = "experiment.toml"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
EVALUATIONS = "evaluations.jsonl"


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
    """Run directories (holding an experiment.toml), oldest first by run id: the order they were created in."""
    pattern = f"{experiment}/*/{EXPERIMENT}" if experiment else f"*/*/{EXPERIMENT}"
    return sorted((p.parent for p in runs_dir.glob(pattern)), key=lambda p: (p.parent.name, run_id_order(p.name)))


def run_id_order(run_id: str) -> tuple[str, int]:
    """Sort key of a run id: its timestamp, then the number that tells apart runs started in the same second."""
    match = re.fullmatch(r"(.*?)(?:-(\d{1,3}))?", run_id)
    stamp, n = match.group(1), match.group(2)
    if n is not None and re.fullmatch(r"\d{8}-\d{6}", stamp):
        return stamp, int(n)
    return run_id, 0


def latest_run_dir(runs_dir: Path, experiment: str) -> Path:
    dirs = run_dirs(runs_dir, experiment)
    if not dirs:
        raise WorkbenchError(
            f"no runs of '{experiment}' under {runs_dir}",
            hint=f"start one with `wb run {experiment}`",
        )
    return dirs[-1]


# --- atomic files -------------------------------------------------------------------


def atomic_write_bytes(path: Path, write: Callable[[Any], Any]) -> None:
    """Write via a temporary file in the same directory, fsync, then rename over `path`."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, lambda f: f.write(json.dumps(data, indent=2, default=str).encode()))


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def write_artifact(path: Path, content: Any) -> None:
    """A metric's artifact: JSON data for a .json file, else anything with `.save(file, format=...)` (a PIL image)."""
    if path.suffix == ".json":
        write_json(path, content)
    else:
        atomic_write_bytes(path, lambda f: content.save(f, format=path.suffix.lstrip(".").upper() or "PNG"))


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


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    append_jsonl(run_dir / METRICS, record)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / METRICS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop log lines after `step` (a resumed run re-logs them)."""
    kept = [r for r in read_metrics(run_dir) if r.get("step", 0) <= step]
    atomic_write_bytes(run_dir / METRICS, lambda f: f.write("".join(json.dumps(r) + "\n" for r in kept).encode()))


# --- the summary ---------------------------------------------------------------------------------


def write_summary(run_dir: Path, summary: dict[str, Any], metrics: dict[str, float] | None = None) -> dict[str, Any]:
    """Write summary.json: `summary`, its metrics merged over those already there (an eval adds, never drops)."""
    previous = read_json(run_dir / SUMMARY).get("metrics", {})
    summary = {**summary, "metrics": {**previous, **summary.get("metrics", {}), **(metrics or {})}}
    write_json(run_dir / SUMMARY, summary)
    return summary


def add_evaluation(run_dir: Path, record: dict[str, Any], metrics: dict[str, float]) -> dict[str, Any]:
    """An evaluation of a finished run: one line of evaluations.jsonl, and its values merged into the summary."""
    append_jsonl(run_dir / EVALUATIONS, {**record, **metrics})
    return write_summary(run_dir, read_json(run_dir / SUMMARY), metrics)


# --- listing and comparing runs ---------------------------------------------------------------

KEY_OPTIONS = ("dataset.name", "scheduler.name", "backbone.name", "diffusion.prediction", "loss.name", "sampler.name")


def stored_experiment(run_dir: Path) -> dict[str, Any]:
    """The run's resolved experiment as plain data (read as TOML: no plugins needed)."""
    data = read_toml(run_dir / EXPERIMENT)
    return next(iter(data.values())) if data else {}


def flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train': {'lr': 1}} -> {'train.lr': 1}."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def describe(run_dir: Path) -> dict[str, Any]:
    """One row of `wb runs`: status, progress, key options and final metrics."""
    summary = read_json(run_dir / SUMMARY)
    options = flatten(stored_experiment(run_dir))
    return {
        "experiment": run_dir.parent.name,
        "id": run_dir.name,
        "dir": str(run_dir),
        "status": summary.get("status", "unknown"),
        "step": summary.get("step", 0),
        "steps": options.get("train.steps"),
        "wall_time": summary.get("wall_time", 0.0),
        "options": " ".join(str(options.get(k)) for k in KEY_OPTIONS),
        "metrics": summary.get("metrics", {}),
    }


def compare(a: Path, b: Path) -> dict[str, dict[str, tuple[Any, Any]]]:
    """The options that differ between two run directories, and both runs' metrics."""
    oa, ob = flatten(stored_experiment(a)), flatten(stored_experiment(b))
    options = {k: (oa.get(k), ob.get(k)) for k in sorted(oa.keys() | ob.keys()) if oa.get(k) != ob.get(k)}
    ma, mb = read_json(a / SUMMARY).get("metrics", {}), read_json(b / SUMMARY).get("metrics", {})
    metrics = {k: (ma.get(k), mb.get(k)) for k in sorted(ma.keys() | mb.keys())}
    return {"options": options, "metrics": metrics}


def find_run_dir(ref: str, runs_dir: Path) -> Path:
    """RUN as the CLI takes it: a run directory, a run id (or EXPERIMENT/ID), or an experiment name (its latest run)."""
    for path in (Path(ref), runs_dir / ref):  # a directory, or EXPERIMENT/ID under the runs directory
        if (path / EXPERIMENT).exists():
            return path
    by_id = [d for d in run_dirs(runs_dir) if d.name == ref]
    if len(by_id) == 1:
        return by_id[0]
    if len(by_id) > 1:
        raise WorkbenchError(f"run id '{ref}' is ambiguous: {', '.join(str(d) for d in by_id)}", hint="write it as EXPERIMENT/ID")
    if run_dirs(runs_dir, ref):
        return latest_run_dir(runs_dir, ref)
    experiments = sorted({d.parent.name for d in run_dirs(runs_dir)})
    raise WorkbenchError(
        f"no run '{ref}' under {runs_dir}{did_you_mean(ref, experiments)}",
        hint="RUN is a run directory, a run id (or EXPERIMENT/ID), or an experiment name (its latest run); `wb runs` lists them",
    )


def check_run_dir(path: Path) -> Path:
    """`path` if it is a run directory, else a WorkbenchError."""
    if not (path / EXPERIMENT).exists():
        raise WorkbenchError(f"{path} is not a run directory (no {EXPERIMENT})")
    return path
