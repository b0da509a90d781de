"""Runs that survive real machines and real mistakes (issue 14): preemption, two writers, full disks,
damaged files, hostile names, plugins that raise. Each test goes through the `wb` command line where
the user meets the case: a real process for signals and locks, the Typer app in this process elsewhere.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import workbench as wb
from workbench import registry as registry_module
from workbench import runs
from workbench.cli import make_app
from workbench.diffusion import check_betas
from workbench.errors import ConfigError, WorkbenchError
from workbench.plugins.losses import MSE
from workbench.registry import Registry

from test_training import interrupt_at

TINY = """\
[tiny]
description = "a tiny swiss roll run"
seed = 1
dataset   = { name = "swissroll", n = 600 }
scheduler = { name = "linear", timesteps = 50, scale_with_timesteps = false, beta_end = 0.2 }
backbone  = { name = "mlp", width = 32, depth = 2 }
train     = { steps = 20, batch_size = 64, lr = 1e-3, log_every = 5, checkpoint_every = 5, ema = 0.9 }
eval      = { samples = 100, metrics = [] }

[wide]
extends = "tiny"
backbone = { name = "mlp", width = 48, depth = 2 }

[long]
extends = "tiny"
train = { steps = 1000000 }

[long_unsaved]
extends = "tiny"
train = { steps = 1000000, checkpoint_every = 1000000 }
"""


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WB_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("WB_EXPERIMENTS", raising=False)
    (tmp_path / "experiments.toml").write_text(TINY)
    return tmp_path


def wb_cli(*args: str):
    """`wb ARGS` through the Typer app in this process; stdout and stderr together in .output.

    An exception that escaped the command (a traceback for the user) is raised here.
    """
    result = CliRunner().invoke(make_app(), list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def with_plugins(monkeypatch, *plugins: tuple[str, types.ModuleType]) -> Registry:
    registry = Registry.load(modules=list(plugins))
    monkeypatch.setattr(registry_module, "_default", registry)
    return registry


def only_run(workdir: Path, experiment: str = "tiny") -> Path:
    (run_dir,) = runs.run_dirs(workdir / "runs", experiment)
    return run_dir


def status(run_dir: Path) -> str:
    summary = json.loads((run_dir / runs.SUMMARY).read_text())
    assert summary["status"] in runs.STATUSES
    return summary["status"]


def checkpoint_step(run_dir: Path) -> int:
    return torch.load(run_dir / runs.CHECKPOINT, weights_only=True)["step"]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listed(experiment: str | None = None) -> dict[str, dict]:
    result = wb_cli("runs", *([experiment] if experiment else []), "--json")
    assert result.exit_code == 0, result.output
    return {row["id"]: row for row in json.loads(result.stdout)}


# --- real processes ------------------------------------------------------------------------------


class Process:
    """`python -m workbench ARGS` with its output read line by line as it comes, for bounded waits."""

    def __init__(self, workdir: Path, *args: str, new_session: bool = False) -> None:
        env = {**os.environ, "WB_RUNS_DIR": str(workdir / "runs"), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "workbench", *args], cwd=workdir, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=new_session,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.out: list[str] = []
        self.err: list[str] = []
        self.readers = [
            threading.Thread(target=self._read, args=(stream, kept), daemon=True)
            for stream, kept in ((self.popen.stdout, self.out), (self.popen.stderr, self.err))
        ]
        for reader in self.readers:
            reader.start()

    def _read(self, stream, kept: list[str]) -> None:
        for line in stream:
            kept.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, predicate, timeout: float = 120) -> str:
        """The first output line (stdout or stderr) for which predicate(line) holds, within `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no such line within {timeout} s; stderr:\n{''.join(self.err)[-3000:]}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is not None and predicate(line):
                return line
            if line is None and self.popen.poll() is not None and self.lines.empty():
                self.popen.wait()
                raise AssertionError(f"the process ended ({self.popen.returncode}); stderr:\n{''.join(self.err)[-3000:]}")

    def finish(self, timeout: float = 120) -> int:
        """The exit code, once the process and its output have ended."""
        code = self.popen.wait(timeout=timeout)
        for reader in self.readers:
            reader.join(timeout=30)
        return code

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=30)


def wait_until(condition, timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.05)


def started(line: str) -> bool:
    return line.startswith("step ")


# --- 1. resume: which run, --resume RUN, a finished run ------------------------------------------


def test_resume_says_which_run_it_continues_takes_a_run_and_leaves_a_finished_run_alone(workdir, monkeypatch):
    with_plugins(monkeypatch, ("interrupter", interrupt_at(5)))
    assert wb_cli("run", "tiny").exit_code == 130
    assert wb_cli("run", "tiny").exit_code == 130
    monkeypatch.setattr(registry_module, "_default", None)
    older, newer = runs.run_dirs(workdir / "runs", "tiny")

    result = wb_cli("run", "tiny", "--resume", f"tiny/{older.name}")  # --resume RUN: an older run, by EXPERIMENT/ID
    assert result.exit_code == 0, result.output
    assert f"resuming {older} from step 5" in result.output
    assert checkpoint_step(older) == 20 and status(older) == "done"
    assert checkpoint_step(newer) == 5 and status(newer) == "interrupted"

    result = wb_cli("run", "tiny", "--resume")  # the newest run id
    assert result.exit_code == 0, result.output
    assert f"resuming {newer} from step 5" in result.output and f"resuming {older} " not in result.output
    assert checkpoint_step(newer) == 20

    # a finished run: said so, nothing written
    before = {p.name: (p.stat().st_mtime_ns, digest(p)) for p in newer.iterdir() if p.is_file()}
    result = wb_cli("run", "tiny", "--resume", "--set", "eval.metrics=[]")
    assert result.exit_code == 0, result.output
    assert f"run {newer} is done: step 20 of 20; nothing to resume" in result.output
    assert "--set train.steps=40" in result.output and "parameters" not in result.output
    assert {p.name: (p.stat().st_mtime_ns, digest(p)) for p in newer.iterdir() if p.is_file()} == before

    # extending it with more steps
    result = wb_cli("run", "tiny", "--resume", newer.name, "--set", "train.steps=30")
    assert result.exit_code == 0, result.output
    assert checkpoint_step(newer) == 30 and status(newer) == "done"
    assert [r["step"] for r in runs.read_metrics(newer)] == [5, 10, 15, 20, 25, 30]
    assert "steps = 30" in (newer / runs.EXPERIMENT).read_text()  # the stored experiment is the one trained
    assert listed()[newer.name]["steps"] == 30
    assert "nothing to resume" in wb_cli("run", "tiny", "--resume").output

    # a run of another experiment is not continued under this one's name
    result = wb_cli("run", "wide", "--resume", str(older))
    assert result.exit_code == 1 and "is a run of 'tiny', not of 'wide'" in result.output


# --- 2 and 4. one writer; SIGTERM; readers are not blocked; the poor items of a live run -----------


def test_one_writer_per_run_and_sigterm_checkpoints_like_ctrl_c(workdir):
    first = Process(workdir, "run", "long_unsaved")
    try:
        first.wait_for(started)
        run_dir = only_run(workdir, "long_unsaved")
        holder = runs.lock_holder(run_dir)
        assert holder["pid"] == first.popen.pid and holder["host"]
        assert json.loads((run_dir / runs.LOCK).read_text())["pid"] == first.popen.pid

        # a second writer is refused, naming the holder, before any model is built
        for args in (["run", "long_unsaved", "--resume"], ["eval", "long_unsaved"]):
            result = wb_cli(*args)
            assert result.exit_code == 1, result.output
            assert "is being written by another process" in result.output
            assert f"pid {first.popen.pid} on host {holder['host']}" in result.output
            assert "parameters" not in result.output and "Traceback" not in result.output
        with pytest.raises(runs.RunBusy):
            runs.lock_run(run_dir)

        # readers are not blocked; a live run with no checkpoint yet says so
        row = listed()[run_dir.name]
        assert row["status"] == "running" and row["reason"] is None
        result = wb_cli("sample", "long_unsaved", "-n", "8")
        assert result.exit_code == 1
        assert "has not written its first checkpoint yet" in result.output and "stopped" not in result.output

        # SIGTERM (a scheduler's preemption) stops at a step boundary with a checkpoint
        first.popen.send_signal(signal.SIGTERM)
        assert first.finish() == 143, first.stderr[-3000:]
    finally:
        first.kill()
    err = first.stderr
    assert "Traceback" not in err and f"checkpoint written to {run_dir / runs.CHECKPOINT}" in err
    assert "by SIGTERM" in err and "wb run long_unsaved --resume" in err
    stopped_at = checkpoint_step(run_dir)
    assert stopped_at > 0 and f"interrupted at step {stopped_at} by SIGTERM" in err
    assert status(run_dir) == "interrupted" and runs.lock_holder(run_dir) is None
    assert runs.read_metrics(run_dir)[-1]["step"] <= stopped_at

    # a resumed live run: sampling from its checkpoint works while it trains
    second = Process(workdir, "run", "long_unsaved", "--resume")
    try:
        second.wait_for(lambda line: f"resuming {run_dir} from step {stopped_at}" in line)
        second.wait_for(started)
        assert listed()[run_dir.name]["status"] == "running"
        result = wb_cli("sample", "long_unsaved", "-n", "8", "--out", str(workdir / "live.png"))
        assert result.exit_code == 0, result.output
        second.popen.send_signal(signal.SIGINT)
        assert second.finish() == 130, second.stderr[-3000:]
    finally:
        second.kill()
    assert checkpoint_step(run_dir) > stopped_at and status(run_dir) == "interrupted"


def test_sigkill_leaves_a_run_listed_as_killed_that_resumes_and_loses_its_stale_temporary_file(workdir):
    process = Process(workdir, "run", "long")
    try:
        process.wait_for(started)
        run_dir = only_run(workdir, "long")
        wait_until(lambda: (run_dir / runs.CHECKPOINT).exists(), what="the first checkpoint")
        process.popen.send_signal(signal.SIGKILL)
        assert process.finish() == -signal.SIGKILL
    finally:
        process.kill()
    assert json.loads((run_dir / runs.SUMMARY).read_text())["status"] == "running"  # nobody could say otherwise
    row = listed()[run_dir.name]
    assert row["status"] == "interrupted" and "killed" in row["reason"]
    assert "killed" in wb_cli("runs").output
    stale = run_dir / f".{runs.CHECKPOINT}.tmp"
    stale.write_bytes(b"half a checkpoint")  # as a kill in mid-write leaves it
    step = checkpoint_step(run_dir)
    result = wb_cli("run", "long", "--resume", "--set", f"train.steps={step + 5}")
    assert result.exit_code == 0, result.output
    assert not stale.exists() and checkpoint_step(run_dir) == step + 5 and status(run_dir) == "done"


# --- --nproc: the launcher passes SIGTERM on, every worker stops at one step, rank 0 holds the lock ---


def test_sigterm_to_the_launcher_stops_every_worker_with_a_checkpoint(workdir):
    process = Process(workdir, "run", "long", "--nproc", "2", new_session=True)
    try:
        process.wait_for(started, timeout=180)
        run_dir = only_run(workdir, "long")
        holder = runs.lock_holder(run_dir)
        assert holder and holder["pid"] != process.popen.pid  # rank 0, a worker, holds it; not the launcher
        os.kill(process.popen.pid, signal.SIGTERM)  # only the launcher, as Kubernetes signals PID 1
        assert process.finish(timeout=120) == 143, process.stderr[-3000:]
    finally:
        if process.popen.poll() is None:
            os.killpg(process.popen.pid, signal.SIGKILL)
        process.kill()
    err = process.stderr
    assert err.count("interrupted at step") == 1 and "by SIGTERM" in err and "Traceback" not in err
    assert checkpoint_step(run_dir) > 0 and status(run_dir) == "interrupted"
    assert runs.lock_holder(run_dir) is None


# --- 5. a second signal mid-step never writes that step --------------------------------------------


class SignalledLoss(MSE):
    """L_simple; once armed, the next call presses Ctrl-C twice in the middle of its step
    (os.kill runs this process's handler before it returns)."""

    name = "signalled"

    def terms(self, model, diffusion, x0, t, noise, weights=None):
        if ARMED.pop("at", None) is not None:
            os.kill(os.getpid(), signal.SIGINT)  # the first: stop at the next boundary
            os.kill(os.getpid(), signal.SIGINT)  # the second: stop now
        return super().terms(model, diffusion, x0, t, noise, weights)


ARMED: dict[str, int] = {}


def signalled_plugin() -> types.ModuleType:
    module = types.ModuleType("signalled")

    @wb.hookimpl
    def register_losses(register):
        register(SignalledLoss)

    @wb.hookimpl
    def on_log(run, step, metrics):
        if step == 10 and signalled_plugin.arm:  # the next step (11) is interrupted twice
            ARMED["at"] = step

    module.register_losses, module.on_log = register_losses, on_log
    return module


signalled_plugin.arm = True


def test_a_second_ctrl_c_mid_step_stops_without_writing_and_the_run_resumes_bit_for_bit(workdir, monkeypatch):
    with_plugins(monkeypatch, ("signalled", signalled_plugin()))
    ARMED.clear()
    monkeypatch.setattr(signalled_plugin, "arm", False)
    straight = wb_cli("run", "tiny", "--set", "loss.name=signalled")
    assert straight.exit_code == 0, straight.output
    reference = torch.load(only_run(workdir) / runs.CHECKPOINT, weights_only=True)

    monkeypatch.setattr(signalled_plugin, "arm", True)
    result = wb_cli("run", "tiny", "--set", "loss.name=signalled")
    assert result.exit_code == 130, result.output
    assert "stopped at once by Ctrl-C during step 11: nothing of it was written" in result.output
    assert "the last good checkpoint (step 10) is kept" in result.output and "Traceback" not in result.output
    run_dir = runs.latest_run_dir(workdir / "runs", "tiny")
    assert checkpoint_step(run_dir) == 10 and status(run_dir) == "interrupted"
    assert [r["step"] for r in runs.read_metrics(run_dir)] == [5, 10]

    monkeypatch.setattr(signalled_plugin, "arm", False)
    result = wb_cli("run", "tiny", "--resume")
    assert result.exit_code == 0, result.output
    resumed = torch.load(run_dir / runs.CHECKPOINT, weights_only=True)
    assert resumed["step"] == reference["step"] == 20
    for part in ("model", "ema"):
        for key, value in reference[part].items():
            assert torch.equal(value, resumed[part][key]), f"{part}.{key} differs"


def test_ctrl_c_twice_on_the_real_cli_never_saves_a_torn_step(workdir):
    process = Process(workdir, "run", "long")
    try:
        process.wait_for(started)
        run_dir = only_run(workdir, "long")
        wait_until(lambda: (run_dir / runs.CHECKPOINT).exists(), what="the first checkpoint")
        process.popen.send_signal(signal.SIGINT)
        process.popen.send_signal(signal.SIGINT)
        assert process.finish() == 130, process.stderr[-3000:]
    finally:
        process.kill()
    err, step = process.stderr, checkpoint_step(run_dir)
    assert "Traceback" not in err and status(run_dir) == "interrupted"
    if "stopped at once" in err:  # the second arrived mid-step: the last periodic checkpoint stays
        assert step % 5 == 0 and f"the last good checkpoint (step {step}) is kept" in err
    else:  # it arrived while the checkpoint of the step boundary was written: it waited
        assert f"interrupted at step {step}" in err


# --- 6. a full disk -----------------------------------------------------------------------------------


def test_a_failed_checkpoint_write_keeps_the_last_good_one_and_says_so_in_one_line(workdir, monkeypatch):
    real_save = torch.save
    calls = []

    def full_disk_save(state, f, *args, **kwargs):
        calls.append(state["step"])
        if state["step"] == 10:
            f.write(b"x" * 1000)  # part of it reached the disk
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(state, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk_save)
    result = wb_cli("run", "tiny")
    assert result.exit_code == 1
    run_dir = only_run(workdir)
    assert f"error: could not write {run_dir / runs.CHECKPOINT}: No space left on device" in result.output
    assert "the last good checkpoint (step 5) is kept" in result.output and "Traceback" not in result.output
    assert not list(run_dir.glob(".*.tmp")) and checkpoint_step(run_dir) == 5
    summary = json.loads((run_dir / runs.SUMMARY).read_text())
    assert summary["status"] == "failed" and "No space left on device" in summary["error"]
    assert listed()[run_dir.name]["status"] == "failed"


def test_a_failed_metrics_line_is_cut_back_and_a_failed_status_write_is_said(workdir, monkeypatch):
    real_write = os.write
    state = {"appends": 0}

    def full_disk_write(fd, data):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if target.endswith(runs.METRICS):
            state["appends"] += 1
            if state["appends"] == 2:  # the second log line: half of it, then the disk is full
                real_write(fd, bytes(data)[: len(data) // 2])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    real_json = runs.write_json

    def failing_status(path, data):
        if isinstance(data, dict) and data.get("status") == "failed":
            raise runs.write_failed(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
        return real_json(path, data)

    monkeypatch.setattr(runs.os, "write", full_disk_write)
    monkeypatch.setattr(runs, "write_json", failing_status)
    result = wb_cli("run", "tiny")
    assert result.exit_code == 1
    run_dir = only_run(workdir)
    assert f"could not write {run_dir / runs.METRICS}: No space left on device" in result.output
    assert "the status could not be written either" in result.output and "Traceback" not in result.output
    assert (run_dir / runs.METRICS).read_text().endswith("}\n")  # no half line
    assert [r["step"] for r in runs.read_metrics(run_dir)] == [5]
    assert json.loads((run_dir / runs.SUMMARY).read_text())["status"] == "running"  # what the disk still says...
    row = listed()[run_dir.name]
    assert row["status"] == "interrupted" and "killed" in row["reason"]  # ...and what is true: nobody runs it


@pytest.fixture
def small_disk(tmp_path):
    """A 320 KiB tmpfs: room for the first checkpoint of `tiny`, not for a second beside it."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=320k", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_tmpfs_ends_the_run_as_failed_keeping_its_last_checkpoint(workdir, small_disk):
    env = {**os.environ, "WB_RUNS_DIR": str(small_disk / "runs"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "workbench", "run", "tiny"], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=180)
    (run_dir,) = runs.run_dirs(small_disk / "runs", "tiny")
    assert done.returncode == 1, done.stderr[-3000:]
    assert "No space left on device" in done.stderr and "Traceback" not in done.stderr
    assert "the last good checkpoint (step 5) is kept" in done.stderr
    assert not list(run_dir.glob(".*.tmp")) and checkpoint_step(run_dir) == 5
    assert status(run_dir) == "failed"


# --- 7. plugins that raise ------------------------------------------------------------------------------


def test_a_loggers_exception_is_one_warning_naming_the_plugin_and_the_run_goes_on(workdir, monkeypatch):
    bad = types.ModuleType("badlogger")
    bad.on_log = wb.hookimpl(lambda run, step, metrics: 1 / 0)
    bad.on_log.__name__ = "on_log"
    bad.on_run_end = wb.hookimpl(lambda run, status, summary: {}["missing"])
    bad.on_run_end.__name__ = "on_run_end"
    heard = []
    good = types.ModuleType("goodlogger")
    good.on_log = wb.hookimpl(lambda run, step, metrics: heard.append(step))
    good.on_log.__name__ = "on_log"
    with_plugins(monkeypatch, ("goodlogger", good), ("badlogger", bad))
    result = wb_cli("run", "tiny")
    assert result.exit_code == 0, result.output
    assert result.output.count("warning: plugin 'badlogger' raised in on_log") == 1
    assert "ZeroDivisionError: division by zero; the run goes on" in result.output
    assert "warning: plugin 'badlogger' raised in on_run_end" in result.output and "KeyError" in result.output
    assert "Traceback" not in result.output
    assert heard == [5, 10, 15, 20] and status(only_run(workdir)) == "done"


class BoomLoss(MSE):
    """L_simple until armed; then it raises (a plugin's bug, three steps later)."""

    name = "boom"

    def terms(self, model, diffusion, x0, t, noise, weights=None):
        if "countdown" in ARMED:
            ARMED["countdown"] -= 1
            if ARMED["countdown"] == 0:
                raise ValueError("boom")
        return super().terms(model, diffusion, x0, t, noise, weights)


def test_a_plugins_exception_in_training_fails_the_run_naming_the_plugin_and_keeps_the_checkpoint(workdir, monkeypatch):
    module = types.ModuleType("boomloss")

    @wb.hookimpl
    def register_losses(register):
        register(BoomLoss)

    @wb.hookimpl
    def on_log(run, step, metrics):
        if step == 5:
            ARMED["countdown"] = 3  # raises in step 8

    module.register_losses, module.on_log = register_losses, on_log
    with_plugins(monkeypatch, ("boomloss", module))
    ARMED.clear()
    result = wb_cli("run", "tiny", "--set", "loss.name=boom")
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.output
    assert lines[0].startswith("error: training failed at step 7: plugin 'boomloss' raised ValueError: boom (")
    assert "test_run_survival.py" in lines[0]
    run_dir = only_run(workdir)
    assert "the last good checkpoint (step 5) is kept" in result.output and checkpoint_step(run_dir) == 5
    summary = json.loads((run_dir / runs.SUMMARY).read_text())
    assert summary["status"] == "failed" and "plugin 'boomloss' raised ValueError: boom" in summary["error"]
    assert "raise ValueError(\"boom\")" in summary["traceback"]


def test_a_nan_loss_from_the_first_step_does_not_claim_a_checkpoint(workdir, monkeypatch):
    class NanLoss(MSE):
        name = "nan_from_start"

        def terms(self, model, diffusion, x0, t, noise, weights=None):
            return wb.LossTerms(super().terms(model, diffusion, x0, t, noise, weights).loss * float("inf"))

    module = types.ModuleType("nanloss")
    module.register_losses = wb.hookimpl(lambda register: register(NanLoss))
    module.register_losses.__name__ = "register_losses"
    with_plugins(monkeypatch, ("nanloss", module))
    result = wb_cli("run", "tiny", "--set", "loss.name=nan_from_start")
    assert result.exit_code == 1 and "at step 1" in result.output
    assert "no checkpoint was written yet" in result.output and "is kept" not in result.output
    assert status(only_run(workdir)) == "failed"


# --- 8. a torn metrics line ---------------------------------------------------------------------------------


def test_a_torn_last_metrics_line_is_dropped_with_a_warning_and_the_run_resumes(workdir, monkeypatch):
    with_plugins(monkeypatch, ("interrupter", interrupt_at(10)))
    assert wb_cli("run", "tiny").exit_code == 130
    monkeypatch.setattr(registry_module, "_default", None)
    run_dir = only_run(workdir)
    with open(run_dir / runs.METRICS, "a") as f:
        f.write('{"step": 15, "loss": 0.3')  # a crash in mid-write
    result = wb_cli("run", "tiny", "--resume")
    assert result.exit_code == 0, result.output
    assert "dropped its last line, cut off mid-write" in result.output and "Traceback" not in result.output
    assert [r["step"] for r in runs.read_metrics(run_dir)] == [5, 10, 15, 20]
    assert status(run_dir) == "done"


# --- 9. damaged runs ----------------------------------------------------------------------------------------


def test_a_damaged_run_is_listed_as_damaged_and_the_others_as_usual(workdir):
    assert wb_cli("run", "tiny", "--set", "train.steps=5").exit_code == 0
    good = only_run(workdir)
    damage = {
        "garbage": lambda d: (d / runs.SUMMARY).write_text("{not json"),
        "list": lambda d: (d / runs.SUMMARY).write_text("[]"),
        "string_metric": lambda d: (d / runs.SUMMARY).write_text(
            json.dumps({**json.loads((good / runs.SUMMARY).read_text()), "metrics": {"swd": "low"}})),
        "bad_status": lambda d: (d / runs.SUMMARY).write_text(json.dumps({"status": 3})),
        "bad_toml": lambda d: (d / runs.EXPERIMENT).write_text("[tiny\nseed = "),
        "unreadable_toml": lambda d: ((d / runs.EXPERIMENT).unlink(), (d / runs.EXPERIMENT).mkdir()),
        "no_summary": lambda d: (d / runs.SUMMARY).unlink(),
        "no_experiment": lambda d: (d / runs.EXPERIMENT).unlink(),
    }
    for name, spoil in damage.items():
        copy = workdir / "runs" / "tiny" / f"20000101-000000-{list(damage).index(name) + 1}"
        shutil.copytree(good, copy)
        spoil(copy)
    rows = listed()
    assert rows[good.name]["status"] == "done" and rows[good.name]["reason"] is None
    reasons = {r["id"]: r["reason"] for r in rows.values() if r["status"] == "damaged"}
    assert len(reasons) == len(damage)
    expected = ["is not JSON", "holds a JSON list", "metric 'swd' = 'low', not a number", "has status 3",
                "TOML syntax error", "cannot read", "has no summary.json", "has no experiment.toml"]
    for (run_id, reason), words in zip(sorted(reasons.items()), expected):
        assert words in reason, (run_id, reason)
    table = wb_cli("runs")
    assert table.exit_code == 0 and len(re.findall(r"│ damaged +│", table.output)) == len(damage)
    assert len(re.findall(r"│ done +│", table.output)) == 1

    for run_id in reasons:
        for command in (["sample", f"tiny/{run_id}", "-n", "4"], ["eval", f"tiny/{run_id}"]):
            if command[0] == "sample" and run_id.endswith(("-1", "-2", "-3", "-4", "-7")):
                continue  # the summary is damaged: sampling needs only the experiment and the checkpoint
            result = wb_cli(*command)  # no exception escapes: a message, not a traceback
            assert result.exit_code != 0 and "error:" in result.output, (command, result.output)
    assert wb_cli("sample", "tiny/20000101-000000-2", "-n", "4", "--out", str(workdir / "s.png")).exit_code == 0


# --- 10. a checkpoint that does not match its experiment ---------------------------------------------------------


def test_a_checkpoint_of_another_experiment_is_a_clear_error_on_resume_sample_and_eval(workdir, monkeypatch):
    with_plugins(monkeypatch, ("interrupter", interrupt_at(5)))
    assert wb_cli("run", "tiny").exit_code == 130
    assert wb_cli("run", "wide").exit_code == 130
    monkeypatch.setattr(registry_module, "_default", None)
    tiny, wide = only_run(workdir, "tiny"), only_run(workdir, "wide")
    shutil.copy(wide / runs.CHECKPOINT, tiny / runs.CHECKPOINT)
    for args in (["run", "tiny", "--resume"], ["sample", "tiny", "-n", "4"], ["eval", "tiny"]):
        result = wb_cli(*args)
        assert result.exit_code == 1, (args, result.output)
        assert f"checkpoint {tiny / runs.CHECKPOINT} does not match experiment 'tiny'" in result.output
        assert "differ in shape: net" in result.output or "differ in shape" in result.output
        assert "Traceback" not in result.output and "RuntimeError" not in result.output

    state = torch.load(wide / runs.CHECKPOINT, weights_only=True)
    del state["optimizer"], state["ema"]
    torch.save(state, wide / runs.CHECKPOINT)
    result = wb_cli("run", "wide", "--resume")
    assert result.exit_code == 1 and "it has no 'ema'; it has no 'optimizer'" in result.output
    result = wb_cli("sample", "wide", "-n", "4")
    assert result.exit_code == 1 and "it has no 'ema'" in result.output and "KeyError" not in result.output


# --- 3, 12, 13: paths ---------------------------------------------------------------------------------------------


def test_no_run_argument_leads_out_of_the_runs_directory(workdir, monkeypatch):
    assert wb_cli("run", "tiny", "--set", "train.steps=5").exit_code == 0
    outside = workdir / "outside" / "tiny" / "20200101-000000"
    shutil.copytree(only_run(workdir), outside)
    elsewhere = workdir / "elsewhere" / "deeper"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)  # so that the reference is not also a path from here
    for args in (["sample", "../outside/tiny/20200101-000000", "-n", "4"], ["eval", "../outside/tiny/20200101-000000"]):
        result = wb_cli(*args)
        assert result.exit_code == 1 and "no run '../outside/tiny/20200101-000000'" in result.output
    result = wb_cli("runs", "../outside/tiny")
    assert result.exit_code == 2 and "is not allowed" in result.output
    result = wb_cli("run", "../outside/tiny", "--resume")
    assert result.exit_code == 2 and "is not allowed" in result.output
    with pytest.raises(ConfigError, match="is not allowed"):
        runs.new_run_dir(workdir / "runs", "../../escape")
    assert not (workdir.parent / "escape").exists()
    # a run directory the user names by its own path is theirs to name
    result = wb_cli("sample", str(outside), "-n", "4", "--out", str(workdir / "outside.png"))
    assert result.exit_code == 0, result.output


def test_a_runs_directory_that_is_a_file_or_read_only_is_an_error_before_any_model_is_built(workdir, monkeypatch):
    from workbench import training

    monkeypatch.setattr(training, "prepare", lambda *a, **k: pytest.fail("a model was built"))
    (workdir / "afile").write_text("")
    monkeypatch.setenv("WB_RUNS_DIR", str(workdir / "afile"))
    result = wb_cli("run", "tiny")
    assert result.exit_code == 2 and f"the runs directory: {workdir / 'afile'} is not a folder" in result.output
    monkeypatch.setenv("WB_RUNS_DIR", str(workdir / "afile" / "runs"))
    result = wb_cli("run", "tiny")
    assert result.exit_code == 2 and "a part of its path is a file" in result.output

    readonly = workdir / "ro"
    readonly.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(readonly)], capture_output=True)
    if done.returncode != 0:  # no mount here: a folder this user cannot write (not so for root)
        readonly.chmod(0o500)
        if os.access(readonly, os.W_OK):
            pytest.skip("cannot make a read-only folder here")
    try:
        monkeypatch.setenv("WB_RUNS_DIR", str(readonly))
        result = wb_cli("run", "tiny")
        assert result.exit_code == 2 and f"the runs directory: cannot write in {readonly}: " in result.output
        assert "Read-only file system" in result.output or "Permission denied" in result.output
    finally:
        subprocess.run(["umount", "-l", str(readonly)], capture_output=True)


def test_sample_out_is_checked_before_sampling(workdir, monkeypatch):
    assert wb_cli("run", "tiny", "--set", "train.steps=5").exit_code == 0
    from workbench.handle import Run

    monkeypatch.setattr(Run, "sample", lambda *a, **k: pytest.fail("sampled before checking --out"))
    result = wb_cli("sample", "tiny", "--out", str(workdir / "missing" / "x.png"))
    assert result.exit_code == 1 and f"the folder {workdir / 'missing'} does not exist" in result.output
    for out in ("x", "x.jpg"):
        result = wb_cli("sample", "tiny", "--out", str(workdir / out))
        assert result.exit_code == 1 and "must end in .png" in result.output


# --- poor items --------------------------------------------------------------------------------------------------


def test_a_truncated_png_in_a_lazy_folder_fails_the_run_with_one_message(workdir, png_folder):
    whole = (png_folder / "007.png").read_bytes()
    (png_folder / "007.png").write_bytes(whole[: len(whole) // 2])
    (workdir / "experiments.toml").write_text(TINY + """
[lazy]
extends = "tiny"
dataset = { name = "folder", path = "images", size = 8, in_memory_limit = 0 }
backbone = { name = "unet", channels = 8, channel_mult = [1, 2], groups = 4, num_heads = 2 }
train = { batch_size = 12, log_every = 2, checkpoint_every = 2 }
eval = { samples = 4 }
""")
    result = wb_cli("run", "lazy")
    assert result.exit_code == 2
    assert "cannot read image 'images/007.png': image file is truncated" in result.output
    assert "Traceback" not in result.output and "DataLoader" not in result.output
    run_dir = only_run(workdir, "lazy")
    summary = json.loads((run_dir / runs.SUMMARY).read_text())
    assert summary["status"] == "failed" and "007.png" in summary["error"]


def test_eval_does_not_write_through_a_symlinked_run_directory(workdir):
    assert wb_cli("run", "tiny", "--set", "train.steps=5").exit_code == 0
    link = workdir / "runs" / "tiny" / "20990101-000000"
    link.symlink_to(only_run(workdir, "tiny"))
    before = digest(link / runs.SUMMARY)
    result = wb_cli("eval", f"tiny/{link.name}", "--metric", "swd")
    assert result.exit_code == 1 and "is a symbolic link" in result.output
    assert digest(link / runs.SUMMARY) == before and not (link / runs.EVALUATIONS).exists()


def test_scheduler_betas_are_checked_where_they_enter_the_engine():
    good = check_betas(torch.linspace(1e-4, 0.02, 50), "linear", "schedulers", 50)
    assert good.dtype == torch.float64 and good.shape == (50,)
    bad = {
        "returned nan at t = 3": torch.tensor([0.1, 0.1, 0.1, float("nan"), 0.1]),
        "returned 25 betas for timesteps = 5": torch.full((25,), 0.1),
        "returned shape [5, 2]": torch.full((5, 2), 0.1),
        "returned 1.0 at t = 4; betas must lie in (0, 1)": torch.tensor([0.1, 0.1, 0.1, 0.1, 1.0]),
        "returned 0.0 at t = 0": torch.tensor([0.0, 0.1, 0.1, 0.1, 0.1]),
        "not a tensor of numbers": ["a", "b", "c", "d", "e"],
    }
    for words, betas in bad.items():
        with pytest.raises(WorkbenchError, match=r"scheduler 'mine' \(from plugin myplugin\): betas\(\) ") as excinfo:
            check_betas(betas, "mine", "myplugin", 5)
        assert words in excinfo.value.message
