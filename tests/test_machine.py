"""Engine choices measured per machine: the cores a process may use, the probe, its cache, and what users force."""

from __future__ import annotations

import pytest
import torch

from workbench import machine
from workbench.experiment import load_experiment
from workbench.machine import Choices, available_cpus, cgroup_cpu_quota, probe
from workbench.training import prepare

TINY = """\
[mlp]
seed = 1
dataset   = { name = "swissroll", n = 300 }
scheduler = { name = "linear", timesteps = 50 }
backbone  = { name = "mlp", width = 16, depth = 1 }
train     = { steps = 2, batch_size = 32 }

[unet]
extends = "mlp"
dataset = { name = "shapes", size = 8, n = 64 }
backbone = { name = "unet", channels = 8, channel_mult = [1], groups = 4 }
train = { batch_size = 8 }
"""


def test_the_cgroup_quota_caps_the_cores(tmp_path):
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(tmp_path) is None
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 cores: two threads can use them
    assert cgroup_cpu_quota(tmp_path) == 2
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")  # cgroup v1: half a core
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(tmp_path) == 1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_quota(tmp_path) is None
    import os

    assert 1 <= available_cpus() <= len(os.sched_getaffinity(0))


def test_the_probe_picks_the_faster_candidate_at_each_stage():
    """Fake steps whose cost differs by two orders of magnitude: the probe must find the cheap one of each pair."""
    a = torch.randn(48, 48)
    cost = {("threads", 1): 1, ("threads", 2): 20, ("layout", "channels_last"): 20, ("layout", "contiguous"): 1,
            ("fused", True): 1, ("fused", False): 20}

    def make_step(choice: Choices):
        work = cost[("threads", choice.threads)] * cost[("layout", choice.layout)] * cost[("fused", choice.fused)]

        def step():
            for _ in range(work):
                a @ a
        return step

    before = torch.get_rng_state()
    best, measured = probe(make_step, torch.device("cpu"), [2, 1], ["channels_last", "contiguous"], [True, False])
    assert best == Choices(1, "contiguous", True)
    assert len(measured) == 4  # 2 thread counts, then the other layout, then the other kernel (the best one re-timed)
    assert torch.equal(torch.get_rng_state(), before)


def test_choices_are_measured_once_cached_and_forced_by_the_user(tmp_path, monkeypatch):
    (tmp_path / "e.toml").write_text(TINY)
    exp = load_experiment("mlp", file=tmp_path / "e.toml")
    cpu = torch.device("cpu")
    first, line = machine.choose(exp, cpu, cache_dir=tmp_path / "cache")
    assert "measured now" in line and first.layout == "contiguous"  # no convolutions to lay out
    assert len(list((tmp_path / "cache" / "engine").iterdir())) == 1
    again, line = machine.choose(exp, cpu, cache_dir=tmp_path / "cache")
    assert again == first and "measured on this machine before" in line
    forced, _ = machine.choose(exp, cpu, cache_dir=tmp_path / "cache", threads=3)
    assert forced.threads == 3
    forced, _ = machine.choose(load_experiment("mlp", file=tmp_path / "e.toml", overrides=["train.threads=2"]), cpu)
    assert forced.threads == 2
    unet = load_experiment("unet", file=tmp_path / "e.toml", overrides=["train.layout=contiguous"])
    assert machine.choose(unet, cpu, threads=1)[0].layout == "contiguous"


def test_prepare_applies_the_choices(tmp_path, monkeypatch):
    from workbench.settings import load_settings

    (tmp_path / "e.toml").write_text(TINY)
    monkeypatch.setenv("WB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("WB_THREADS", "1")
    before = torch.get_num_threads()
    try:
        heard = []
        exp = load_experiment("unet", file=tmp_path / "e.toml", overrides=["train.layout=contiguous"])
        trainer, _, _ = prepare(exp, torch.device("cpu"), note=heard.append, settings=load_settings())
        assert torch.get_num_threads() == 1 and heard and heard[0].startswith("engine: 1 thread, contiguous")
        convolutions = [p for p in trainer.model.parameters() if p.ndim == 4]
        assert convolutions and all(p.is_contiguous() for p in convolutions)
    finally:
        torch.set_num_threads(before)


def test_a_resumed_run_keeps_the_choices_it_started_with(tmp_path, monkeypatch):
    from workbench import runs
    from workbench.training import train

    (tmp_path / "e.toml").write_text(TINY)
    monkeypatch.setenv("WB_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("WB_CACHE_DIR", str(tmp_path / "cache"))
    exp = load_experiment("mlp", file=tmp_path / "e.toml", overrides=["eval.metrics=[]"])
    run = train(exp, evaluate_at_end=False)
    started = machine.run_choices(run.dir)
    assert started is not None and started.threads == 1  # WB_THREADS=1 in the tests
    forced = Choices(threads=1, layout="contiguous", fused=not started.fused)  # as if the cache now said otherwise
    machine.save_run_choices(run.dir, forced)
    heard = []
    from workbench.events import Listener

    class Recorder(Listener):
        def note(self, message):
            heard.append(message)

    longer = load_experiment("mlp", file=run.dir / runs.EXPERIMENT, overrides=["train.steps=4"])
    train(longer, resume_dir=run.dir, evaluate_at_end=False, listeners=[Recorder()])
    assert any(line.endswith("(as this run started)") and ("foreach" if forced.fused is False else "fused") in line for line in heard)


def test_a_mistake_in_the_data_surfaces_before_the_probe(tmp_path, monkeypatch):
    """The probe can take minutes for a large network: a missing folder must not wait for it."""
    from workbench.errors import WorkbenchError
    from workbench.settings import load_settings

    (tmp_path / "e.toml").write_text(TINY + '\n[missing]\nextends = "unet"\ndataset = { name = "folder", path = "no/such/dir", size = 8 }\n')

    def probe_ran(*args, **kwargs):
        raise AssertionError("the probe ran before the data were loaded")

    monkeypatch.setattr(machine, "choose", probe_ran)
    with pytest.raises(WorkbenchError, match="no/such/dir"):
        prepare(load_experiment("missing", file=tmp_path / "e.toml"), torch.device("cpu"), settings=load_settings())
