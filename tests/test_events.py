"""The engine's events: every listener hears a run in order, and a plugin's metric can leave a picture."""

from __future__ import annotations

import types

import torch
from PIL import Image

import workbench as wb
from workbench.events import Events, Listener
from workbench.experiment import load_experiment
from workbench.registry import Registry
from workbench.training import train

TINY = """\
[tiny]
seed = 1
dataset   = { name = "swissroll", n = 400 }
scheduler = { name = "linear", timesteps = 50 }
backbone  = { name = "mlp", width = 16, depth = 1 }
train     = { steps = 6, batch_size = 32, log_every = 3, checkpoint_every = 3 }
eval      = { samples = 50, metrics = ["swd", "scatter"] }
"""


class Recorder(Listener):
    def __init__(self) -> None:
        self.heard: list[tuple] = []

    def run_start(self, run, header):
        self.heard.append(("run_start", header["experiment"]))

    def log(self, run, step, record, smoothed_loss):
        self.heard.append(("log", step, record["step"]))

    def phase(self, message):
        self.heard.append(("phase", message.split()[0]))

    def run_end(self, run, status, summary, losses):
        self.heard.append(("run_end", status, sorted(summary["metrics"]), len(losses)))


class Scatter(wb.Metric):
    """The fraction of samples inside [-1, 1]^2, with a picture of them (a third party's metric)."""

    name = "scatter"
    higher_is_better = True

    def compute(self, evaluation):
        samples = evaluation.samples
        picture = Image.new("RGB", (32, 32), "white")
        table = {"n": len(samples)}
        value = float((samples.abs() <= 1).all(dim=1).double().mean())
        return wb.MetricResult(value, {"scatter.png": picture, "scatter.json": table})


def test_events_reach_every_listener_in_order():
    a, b = Recorder(), Recorder()
    events = Events([a, b])
    events.phase("drawing 10 samples")
    events.train_end()  # a listener that does not write an event ignores it
    assert a.heard == b.heard == [("phase", "drawing")]
    Events().log(None, 1, {}, 0.0)  # no listeners: nothing happens


def test_a_run_is_heard_from_start_to_end_and_a_plugin_metric_leaves_its_artifacts(tmp_path, monkeypatch):
    monkeypatch.setenv("WB_RUNS_DIR", str(tmp_path / "runs"))
    (tmp_path / "experiments.toml").write_text(TINY)
    plugin = types.ModuleType("scatter_plugin")
    plugin.register_metrics = wb.hookimpl(lambda register: register(Scatter))
    plugin.register_metrics.__name__ = "register_metrics"
    registry = Registry.load(modules=[("scatter_plugin", plugin)])
    exp = load_experiment("tiny", file=tmp_path / "experiments.toml", registry=registry)
    recorder = Recorder()
    run = train(exp, listeners=[recorder])
    assert recorder.heard[0] == ("run_start", "tiny")
    assert [h for h in recorder.heard if h[0] == "log"] == [("log", 3, 3), ("log", 6, 6)]
    assert ("phase", "computing") in recorder.heard
    assert recorder.heard[-1] == ("run_end", "done", ["scatter", "swd"], 2)
    assert 0 <= run.summary["metrics"]["scatter"] <= 1
    with Image.open(run.dir / "scatter.png") as im:
        assert im.size == (32, 32)
    assert (run.dir / "scatter.json").read_text().strip().startswith("{")


def test_the_experiment_s_own_registry_provides_its_hooks(tmp_path, monkeypatch):
    """Run hooks come from the registry the experiment was resolved with, not from the process-wide one."""
    monkeypatch.setenv("WB_RUNS_DIR", str(tmp_path / "runs"))
    (tmp_path / "experiments.toml").write_text(TINY.replace('"swd", "scatter"', '"swd"'))
    logged = []
    plugin = types.ModuleType("logger_plugin")
    plugin.on_log = wb.hookimpl(lambda run, step, metrics: logged.append(step))
    plugin.on_log.__name__ = "on_log"
    registry = Registry.load(modules=[("logger_plugin", plugin)])
    train(load_experiment("tiny", file=tmp_path / "experiments.toml", registry=registry), evaluate_at_end=False)
    assert logged == [3, 6]
    train(load_experiment("tiny", file=tmp_path / "experiments.toml"), evaluate_at_end=False)
    assert logged == [3, 6]  # the default registry has no such plugin
