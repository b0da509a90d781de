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
data. It imports nothing of the engine above it (only errors, toml_io and
the experiment-name rule of experiment_file, which import nothing else);
the handle that opens a run's model and samples from it is workbench.handle.

What a run survives, all of it decided here:

- One writer: a process that writes a run (training, `wb eval`) holds an
  flock on `lock` in the run directory for as long as it runs; the OS
  releases it when the process ends, however it ends. A second writer is
  refused with the holder's pid and host. Readers never take it.
- A run whose summary says "running" but whose lock nobody holds was killed
  (SIGKILL, power loss): it is shown as interrupted, and resumes.
- Every file is written to a temporary file and renamed, or (the logs)
  appended and cut back on failure: a full disk never leaves a half-written
  file, and the last good checkpoint stays. A failed write is a WriteFailed
  (one line, the file and the reason); temporary files a killed writer left
  behind are removed by the next writer.
- Reading is tolerant: a log line cut off mid-write is dropped with a
  warning; a damaged summary or experiment is a DamagedRun naming the file
  and what is wrong, so `wb runs` lists that run as damaged and the others
  as usual.
- No path built from an experiment name or a RUN argument leaves the runs
  directory; a run directory that is a symbolic link is read, never written.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from workbench.errors import ConfigError, WorkbenchError, did_you_mean
from workbench.experiment_file import check_name
from workbench.toml_io import read_toml

CHECKPOINT = "checkpoint.pt"
EXPERIMENT = "experiment.toml"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
EVALUATIONS = "evaluations.jsonl"
LOCK = "lock"
RUN_FILES = (EXPERIMENT, SUMMARY, CHECKPOINT, METRICS)  # a folder holding any of them is a run (perhaps a damaged one)
STATUSES = ("running", "done", "interrupted", "failed")
KILLED = "killed: its process ended without saying how (SIGKILL, out of memory, power loss)"


class RunBusy(WorkbenchError):
    """Another process is writing the run."""


class DamagedRun(WorkbenchError):
    """A run whose files cannot be read as a run's: garbage, the wrong shape, or missing."""


class WriteFailed(WorkbenchError):
    """A file of the run could not be written (a full disk, a read-only folder); nothing half-written is left."""


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


# --- run ids and directories ------------------------------------------------------


def experiment_dir(runs_dir: Path, experiment: str) -> Path:
    """runs/<experiment>, for a valid experiment name only: no name leads out of the runs directory."""
    check_name(experiment, f"runs directory {runs_dir}")
    return runs_dir / experiment


def new_run_dir(runs_dir: Path, experiment: str) -> Path:
    """A fresh directory runs/<experiment>/<timestamp>[-n]; never an existing one."""
    parent = experiment_dir(runs_dir, experiment)
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise runs_dir_error(parent, exc) from None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        path = parent / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
        except OSError as exc:
            raise runs_dir_error(parent, exc) from None
    raise WorkbenchError(f"could not create a new run directory under {parent}")


def check_runs_dir(runs_dir: Path, experiment: str | None = None) -> None:
    """The runs directory (and runs/<experiment>, if it exists) is a folder this process can write in.

    Checked before any model is built; creates the runs directory if needed, nothing below it.
    """
    folders = [runs_dir] + ([experiment_dir(runs_dir, experiment)] if experiment else [])
    for folder in folders:
        if folder.exists() and not folder.is_dir():
            raise runs_dir_error(folder, NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR)))
        if folder is not runs_dir and not folder.exists():
            continue
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=folder, prefix=".wb-write-test-")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise runs_dir_error(folder, exc) from None


def runs_dir_error(folder: Path, exc: OSError) -> WorkbenchError:
    if isinstance(exc, NotADirectoryError) or (folder.exists() and not folder.is_dir()):
        what = f"{folder} is not a folder" if folder.exists() else f"{folder} cannot be made: a part of its path is a file"
    else:
        what = f"cannot write in {folder}: {exc.strerror or exc}"
    return ConfigError(
        f"the runs directory: {what}",
        hint="set WB_RUNS_DIR (or runs_dir in the settings file) to a folder you can write in",
    )


def is_run_dir(path: Path) -> bool:
    """A folder holding any file of a run (its experiment.toml, or, if that is lost, its summary, checkpoint or log)."""
    try:
        return path.is_dir() and any((path / name).exists() for name in RUN_FILES)
    except OSError:
        return False


def run_dirs(runs_dir: Path, experiment: str | None = None) -> list[Path]:
    """Run directories, damaged ones too, oldest first by run id: the order they were created in."""
    parents = [experiment_dir(runs_dir, experiment)] if experiment else _subfolders(runs_dir)
    found = [d for parent in parents for d in _subfolders(parent) if is_run_dir(d)]
    return sorted(found, key=lambda p: (p.parent.name, run_id_order(p.name)))


def _subfolders(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if not p.name.startswith(".") and p.is_dir()]
    except OSError:  # missing, not a folder, or unreadable: nothing listed from it
        return []


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


# --- one writer ------------------------------------------------------------------------


class RunLock:
    """The run's writer lock (flock on run_dir/lock), held until `release()` or the end of the process."""

    def __init__(self, run_dir: Path, fd: int) -> None:
        self.run_dir, self.fd = run_dir, fd

    def release(self) -> None:
        if self.fd >= 0:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def lock_run(run_dir: Path, doing: str = "training") -> RunLock:
    """Become the run's one writer, or a RunBusy naming the process that is.

    `doing` ("training", "evaluating") is recorded beside the pid and host
    for whoever is refused. Temporary files that a killed writer left behind
    are removed. A run directory that is a symbolic link is not written
    through. Waits up to a second for the lock, so that a reader's brief
    look (lock_holder) never refuses a writer.
    """
    if run_dir.is_symlink():
        raise WorkbenchError(
            f"{run_dir} is a symbolic link; a run is only written in its own directory",
            hint=f"give the directory itself: {run_dir.resolve()}",
        )
    try:
        fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise WriteFailed(f"cannot lock run {run_dir}: {exc.strerror or exc}") from None
    deadline = time.monotonic() + 1.0
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() < deadline:
                time.sleep(0.02)
                continue
            holder = _holder(fd)
            os.close(fd)
            raise busy(run_dir, holder) from None
    me = {"pid": os.getpid(), "host": socket.gethostname(), "doing": doing, "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
    except OSError:
        pass  # the lock holds without the note of who holds it
    for stale in run_dir.glob(".*.tmp"):
        try:
            stale.unlink()
        except OSError:
            pass
    return RunLock(run_dir, fd)


def lock_holder(run_dir: Path) -> dict[str, Any] | None:
    """Who holds the run's writer lock ({pid, host, doing, since}), or None if nobody does. Takes nothing."""
    try:
        fd = os.open(run_dir / LOCK, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder(fd)
        except OSError:
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _holder(fd: int) -> dict[str, Any]:
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


def busy(run_dir: Path, holder: dict[str, Any]) -> RunBusy:
    """The refusal a second writer gets."""
    pid = holder.get("pid", "PID")
    return RunBusy(
        f"run {run_dir} is being written by another process: {describe_holder(holder)}",
        hint=f"one process writes a run at a time: wait for it to end, or stop it with `kill {pid}` "
        "(SIGTERM: it writes a checkpoint and exits)",
    )


def describe_holder(holder: dict[str, Any]) -> str:
    if not holder.get("pid"):
        return "a process that has not yet said who it is"
    doing = f"{holder.get('doing', 'writing')} since {holder['since']}, " if holder.get("since") else ""
    return f"{doing}pid {holder['pid']} on host {holder.get('host', '?')}"


# --- atomic files -------------------------------------------------------------------


def atomic_write_bytes(path: Path, write: Callable[[Any], Any]) -> None:
    """Write via a temporary file in the same directory, fsync, then rename over `path`.

    If anything fails (a full disk, Ctrl-C), the temporary file is removed and
    `path` is as it was; an OSError becomes a WriteFailed naming the file.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise write_failed(path, exc) from None
        raise


def write_failed(path: Path, exc: BaseException) -> WriteFailed:
    """A WriteFailed for `path`: the OS's reason, or torch's, on one line."""
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc)
    else:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        try:
            free = os.statvfs(path.parent)
            if free.f_bavail * free.f_frsize < 1 << 20:  # torch's writer says "unexpected pos ..." for a full disk
                reason = os.strerror(errno.ENOSPC)
        except OSError:
            pass
    return WriteFailed(f"could not write {path}: {reason}")


def write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, lambda f: f.write(json.dumps(data, indent=2, default=str).encode()))


def read_json(path: Path) -> Any:
    """A JSON file's content, {} if there is none; a DamagedRun if it is not JSON."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise DamagedRun(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise DamagedRun(f"{path} is not JSON ({exc})") from None


def write_artifact(path: Path, content: Any) -> None:
    """A metric's artifact: JSON data for a .json file, else anything with `.save(file, format=...)` (a PIL image)."""
    if path.suffix == ".json":
        write_json(path, content)
    else:
        atomic_write_bytes(path, lambda f: content.save(f, format=path.suffix.lstrip(".").upper() or "PNG"))


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save `state` atomically: a crash or a full disk mid-write leaves the previous checkpoint intact."""
    try:
        atomic_write_bytes(path, lambda f: torch.save(state, f))
    except RuntimeError as exc:  # torch's writer reports a failed write as a RuntimeError
        raise write_failed(path, exc) from None


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load tensors and plain containers only (weights_only=True): no code runs."""
    if not path.exists():
        holder = lock_holder(path.parent)
        hint = (
            f"the run is training ({describe_holder(holder)}) and has not written its first checkpoint yet; "
            "one comes every train.checkpoint_every steps"
            if holder
            else "the run stopped before its first checkpoint"
        )
        raise WorkbenchError(f"no checkpoint at {path}", hint=hint)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WorkbenchError(f"cannot load checkpoint {path}: {exc}") from None
    if not isinstance(state, dict):
        raise CheckpointMismatch(f"checkpoint {path} holds a {type(state).__name__}, not a workbench checkpoint")
    return state


# What a checkpoint must hold to continue training (written by workbench.trainer.Trainer.state_dict).
TRAINING_KEYS = ("step", "model", "ema", "optimizer", "generator", "torch_rng", "cuda_rng", "wall_time", "losses")


class CheckpointMismatch(WorkbenchError):
    """A checkpoint that does not fit the run's experiment (another experiment's, or incomplete)."""

    every_rank = True  # every rank of a resumed run reads the same checkpoint


def check_checkpoint(
    state: dict[str, Any], weights: dict[str, torch.Tensor], path: Path, experiment: str, parts: tuple[str, ...]
) -> None:
    """`state` holds `parts` ("model", "ema", ... or TRAINING_KEYS), and its weights have the names and
    shapes of `weights` (the experiment's network's state_dict); else a CheckpointMismatch saying what differs."""
    problems = [f"it has no '{key}'" for key in parts if key not in state]
    if "step" in parts and "step" in state and not isinstance(state["step"], int):
        problems.append(f"its step is {state['step']!r}")
    if "timesteps" not in state and "loss_state" not in state and "optimizer" in parts:
        problems.append("it has no 'timesteps' (the timestep sampler's state)")
    for part in ("model", "ema"):
        if part in parts and part in state:
            problem = weights_mismatch(state[part], weights)
            if problem:
                problems.append(f"its '{part}' weights {problem}")
    if problems:
        raise CheckpointMismatch(
            f"checkpoint {path} does not match experiment '{experiment}': " + "; ".join(problems),
            hint="it was written for another experiment (or by another version); "
            "a run's checkpoint belongs with the experiment.toml beside it",
        )


def weights_mismatch(found: Any, expected: dict[str, torch.Tensor]) -> str | None:
    """What differs between a checkpoint's weights and a network's state_dict, or None."""
    if not isinstance(found, dict):
        return f"are a {type(found).__name__}, not a table of tensors"
    missing = [k for k in expected if k not in found]
    extra = [k for k in found if k not in expected]
    shapes = [
        f"{k} is {list(getattr(found[k], 'shape', []))} here but {list(v.shape)} in the network"
        for k, v in expected.items()
        if k in found and (not isinstance(found[k], torch.Tensor) or found[k].shape != v.shape)
    ]
    problems = []
    for what, names in (("lack", missing), ("have unknown", extra)):
        if names:
            problems.append(f"{what} {_some(names)}")
    if shapes:
        problems.append("differ in shape: " + _some(shapes))
    return ", ".join(problems) or None


def _some(items: list[str], n: int = 3) -> str:
    shown = ", ".join(items[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "")


# --- the metrics log ------------------------------------------------------------------


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line; if the write fails (a full disk, Ctrl-C) the file is cut back to where it was."""
    data = (json.dumps(record) + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise write_failed(path, exc) from None
    try:
        size = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except BaseException as exc:
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass
            if isinstance(exc, OSError):
                raise write_failed(path, exc) from None
            raise
    finally:
        os.close(fd)


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    append_jsonl(run_dir / METRICS, record)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines log; a line that is not a JSON object (one cut off by a crash mid-write)
    is dropped with a warning."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise DamagedRun(f"cannot read {path}: {exc.strerror or exc}") from None
    records, dropped = [], []
    lines = text.split("\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            dropped.append(number)
    if dropped:
        last = dropped == [len(lines)]  # no newline after it: cut off mid-write
        what = "its last line, cut off mid-write" if last else f"line{'s' * (len(dropped) > 1)} {', '.join(map(str, dropped))}, not JSON"
        warn(f"{path}: dropped {what}")
    return records


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    return read_jsonl(run_dir / METRICS)


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop log lines after `step` (a resumed run re-logs them)."""
    kept = [r for r in read_metrics(run_dir) if r.get("step", 0) <= step]
    atomic_write_bytes(run_dir / METRICS, lambda f: f.write("".join(json.dumps(r) + "\n" for r in kept).encode()))


# --- the summary ---------------------------------------------------------------------------------


def write_summary(run_dir: Path, summary: dict[str, Any], metrics: dict[str, float] | None = None) -> dict[str, Any]:
    """Write summary.json: `summary`, its metrics merged over those already there (an eval adds, never drops).

    A damaged summary.json is replaced (its metrics are lost with it)."""
    try:
        previous = read_summary(run_dir).get("metrics", {})
    except DamagedRun:
        previous = {}
    summary = {**summary, "metrics": {**previous, **summary.get("metrics", {}), **(metrics or {})}}
    write_json(run_dir / SUMMARY, summary)
    return summary


def read_summary(run_dir: Path) -> dict[str, Any]:
    """summary.json as a dict ({} if there is none yet); a DamagedRun saying what is wrong with it."""
    summary = read_json(run_dir / SUMMARY)
    problem = summary_problem(summary)
    if problem:
        raise DamagedRun(f"{run_dir / SUMMARY} {problem}")
    return summary


def summary_problem(summary: Any) -> str | None:
    """What makes `summary` not a run's summary, or None."""
    if not isinstance(summary, dict):
        return f"holds a JSON {type(summary).__name__}, not an object"
    if not summary:
        return None
    if summary.get("status") not in STATUSES:
        return f"has status {summary.get('status')!r}, not one of {', '.join(STATUSES)}"
    for key in ("step", "steps"):
        if key in summary and not (isinstance(summary[key], int) and not isinstance(summary[key], bool)):
            return f"has {key} {summary[key]!r}, not a whole number"
    if not isinstance(summary.get("wall_time", 0.0), (int, float)):
        return f"has wall_time {summary['wall_time']!r}, not a number"
    metrics = summary.get("metrics", {})
    if not isinstance(metrics, dict):
        return f"has metrics {metrics!r}, not a table"
    for name, value in metrics.items():
        if not (isinstance(value, (int, float)) and not isinstance(value, bool)):
            return f"has metric '{name}' = {value!r}, not a number"
    return None


def run_status(run_dir: Path, summary: dict[str, Any]) -> tuple[str, str | None]:
    """The run's status and why, as it truly is: "running" only while its writer holds the lock."""
    status = summary.get("status")
    if status == "running" and lock_holder(run_dir) is None:
        return "interrupted", KILLED
    if status is None:  # no summary yet: starting, or its writer died before writing one
        if lock_holder(run_dir) is not None:
            return "running", "starting"
        raise DamagedRun(f"{run_dir} has no {SUMMARY}", hint="its process ended before it wrote one; start the run again")
    return status, summary.get("error")


def add_evaluation(run_dir: Path, record: dict[str, Any], metrics: dict[str, float]) -> dict[str, Any]:
    """An evaluation of a finished run: one line of evaluations.jsonl, and its values merged into the summary."""
    summary = read_summary(run_dir)
    append_jsonl(run_dir / EVALUATIONS, {**record, **metrics})
    return write_summary(run_dir, summary, metrics)


# --- listing and comparing runs ---------------------------------------------------------------

KEY_OPTIONS = ("dataset.name", "scheduler.name", "backbone.name", "diffusion.prediction", "loss.name", "sampler.name")


def stored_experiment(run_dir: Path) -> dict[str, Any]:
    """The run's resolved experiment as plain data (read as TOML: no plugins needed); a DamagedRun if it is not one."""
    return _stored(run_dir)[1]


def stored_name(run_dir: Path) -> str:
    """The name of the experiment the run stored."""
    return _stored(run_dir)[0]


def _stored(run_dir: Path) -> tuple[str, dict[str, Any]]:
    path = run_dir / EXPERIMENT
    if not path.exists():
        raise DamagedRun(f"{run_dir} has no {EXPERIMENT}", hint="a run without its experiment cannot be resumed or sampled")
    try:
        data = read_toml(path)
    except WorkbenchError as exc:
        raise DamagedRun(getattr(exc, "brief", exc.message)) from None
    tables = [(name, value) for name, value in data.items() if isinstance(value, dict)]
    if len(data) != 1 or len(tables) != 1:
        raise DamagedRun(f"{path} holds {len(data)} entries; a run's experiment file holds one experiment table")
    return tables[0]


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
    """One row of `wb runs`: status (and why, if not plain), progress, key options and final metrics.

    A damaged run is a row with status "damaged" and the reason; it never stops the listing of the others.
    """
    row: dict[str, Any] = {
        "experiment": run_dir.parent.name,
        "id": run_dir.name,
        "dir": str(run_dir),
        "status": "damaged",
        "reason": None,
        "step": 0,
        "steps": None,
        "wall_time": 0.0,
        "options": "",
        "metrics": {},
    }
    try:
        options = flatten(stored_experiment(run_dir))
        summary = read_summary(run_dir)
        status, reason = run_status(run_dir, summary)
    except WorkbenchError as exc:
        row["reason"] = exc.message.replace(f"{run_dir}{os.sep}", "").replace(f"{run_dir} ", "")  # the row names the run
        return row
    row.update(
        status=status,
        reason=reason,
        step=summary.get("step", 0),
        steps=options.get("train.steps"),
        wall_time=summary.get("wall_time", 0.0),
        options=" ".join(str(options.get(k)) for k in KEY_OPTIONS),
        metrics=summary.get("metrics", {}),
    )
    return row


def compare(a: Path, b: Path) -> dict[str, dict[str, tuple[Any, Any]]]:
    """The options that differ between two run directories, and both runs' metrics."""
    oa, ob = flatten(stored_experiment(a)), flatten(stored_experiment(b))
    options = {k: (oa.get(k), ob.get(k)) for k in sorted(oa.keys() | ob.keys()) if oa.get(k) != ob.get(k)}
    ma, mb = read_summary(a).get("metrics", {}), read_summary(b).get("metrics", {})
    metrics = {k: (ma.get(k), mb.get(k)) for k in sorted(ma.keys() | mb.keys())}
    return {"options": options, "metrics": metrics}


def find_run_dir(ref: str, runs_dir: Path) -> Path:
    """RUN as the CLI takes it: a run directory, a run id (or EXPERIMENT/ID), or an experiment name (its latest run).

    A path the user gives is taken as it is; one looked up under the runs
    directory (EXPERIMENT/ID) never leads out of it.
    """
    candidates = [Path(ref)]
    if _stays_inside(ref):
        candidates.append(runs_dir / ref)
    for path in candidates:  # a directory, or EXPERIMENT/ID under the runs directory
        if is_run_dir(path):
            return path
    by_id = [d for d in run_dirs(runs_dir) if d.name == ref]
    if len(by_id) == 1:
        return by_id[0]
    if len(by_id) > 1:
        raise WorkbenchError(f"run id '{ref}' is ambiguous: {', '.join(str(d) for d in by_id)}", hint="write it as EXPERIMENT/ID")
    if _valid_name(ref) and run_dirs(runs_dir, ref):
        return latest_run_dir(runs_dir, ref)
    experiments = sorted({d.parent.name for d in run_dirs(runs_dir)})
    raise WorkbenchError(
        f"no run '{ref}' under {runs_dir}{did_you_mean(ref, experiments)}",
        hint="RUN is a run directory, a run id (or EXPERIMENT/ID), or an experiment name (its latest run); `wb runs` lists them",
    )


def _stays_inside(ref: str) -> bool:
    """EXPERIMENT/ID or ID: relative, without '..', at most two parts."""
    path = Path(ref)
    return not path.is_absolute() and ".." not in path.parts and 0 < len(path.parts) <= 2


def _valid_name(name: str) -> bool:
    try:
        check_name(name, "")
        return True
    except ConfigError:
        return False


def check_run_dir(path: Path) -> Path:
    """`path` if it is a run directory, else a WorkbenchError."""
    if not is_run_dir(path):
        raise WorkbenchError(f"{path} is not a run directory (no {EXPERIMENT})")
    return path
