"""Run directories: finding runs, checkpoints, and the sample / eval / runs commands on a tiny real run."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from workbench import runs
from workbench.cli import make_app
from workbench.errors import WorkbenchError
from workbench.experiment import load_experiment
from workbench.training import train

TINY = """\
[tiny]
description = "a tiny swiss roll run"
dataset   = { name = "swissroll", n = 400 }
scheduler = { name = "linear", timesteps = 40, scale_with_timesteps = false, beta_end = 0.2 }
backbone  = { name = "mlp", width = 16, depth = 1 }
train     = { steps = 4, batch_size = 32, log_every = 2 }
eval      = { samples = 100, metrics = ["swd"] }

[tiny_v]
extends = "tiny"
diffusion = { prediction = "v" }
train = { lr = 0.01 }
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Two finished tiny runs (tiny and tiny_v) under ./runs, trained once for the module."""
    path = tmp_path_factory.mktemp("runs_cli")
    (path / "experiments.toml").write_text(TINY)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(path)
        mp.setenv("WB_RUNS_DIR", str(path / "runs"))
        for name in ("tiny", "tiny_v"):
            train(load_experiment(name))
    return path


@pytest.fixture
def wb(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("WB_RUNS_DIR", str(workdir / "runs"))

    def invoke(*args: str):
        return CliRunner().invoke(make_app(), list(args), catch_exceptions=False)

    return invoke


def test_find_run_by_directory_id_and_experiment(workdir):
    runs_dir = workdir / "runs"
    (latest,) = [d for d in runs.run_dirs(runs_dir, "tiny")]
    assert runs.find_run_dir(str(latest), runs_dir) == latest
    assert runs.find_run_dir(f"tiny/{latest.name}", runs_dir) == latest
    other = runs.run_dirs(runs_dir, "tiny_v")[0]
    if other.name == latest.name:  # both runs started within one second: a bare id is ambiguous
        with pytest.raises(WorkbenchError, match="is ambiguous"):
            runs.find_run_dir(latest.name, runs_dir)
    else:
        assert runs.find_run_dir(latest.name, runs_dir) == latest
    assert runs.find_run_dir("tiny", runs_dir) == latest
    with pytest.raises(WorkbenchError, match=r"no run 'tinny' .*\(did you mean 'tiny'"):
        runs.find_run_dir("tinny", runs_dir)


def test_checkpoints_are_written_atomically_and_load_without_code(tmp_path):
    path = tmp_path / "c.pt"
    runs.save_checkpoint(path, {"step": 1, "w": torch.ones(2)})
    assert not list(tmp_path.glob(".*tmp")) and runs.load_checkpoint(path)["step"] == 1

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(WorkbenchError, match="cannot load checkpoint"):
        runs.load_checkpoint(tmp_path / "evil.pt")


def test_wb_sample_writes_a_png_and_npz_and_never_overwrites(wb, workdir):
    result = wb("sample", "tiny", "-n", "50", "--sampler", "ddim", "--steps", "5", "--npz")
    assert result.exit_code == 0, result.output
    run_dir = runs.find_run_dir("tiny", workdir / "runs")
    png = run_dir / "samples-ddim-5-seed0.png"
    assert png.is_file() and png.with_suffix(".npz").is_file()
    raw = np.load(png.with_suffix(".npz"))["samples"]
    assert raw.shape == (50, 2) and np.isfinite(raw).all()
    Image.open(png).verify()
    assert wb("sample", "tiny", "-n", "50", "--sampler", "ddim", "--steps", "5").exit_code == 0
    assert (run_dir / "samples-ddim-5-seed0-1.png").is_file()
    # the same seed gives the same samples
    wb("sample", "tiny", "-n", "50", "--sampler", "ddim", "--steps", "5", "--npz", "--out", str(workdir / "again.png"))
    assert np.array_equal(np.load(workdir / "again.npz")["samples"], raw)


def test_wb_sample_bad_input(wb):
    result = wb("sample", "tiny", "--sampler", "ddimm")
    assert result.exit_code == 2 and "did you mean 'ddim'" in result.output
    result = wb("sample", "tiny", "-o", "eta")
    assert result.exit_code != 0 and "expected KEY=VALUE" in result.output
    result = wb("sample", "nothing")
    assert result.exit_code != 0 and "no run 'nothing'" in result.output


def test_wb_eval_appends_to_the_summary(wb, workdir):
    run_dir = runs.find_run_dir("tiny", workdir / "runs")
    before = json.loads((run_dir / "summary.json").read_text())["metrics"]
    result = wb("eval", "tiny", "--metric", "nll", "--samples", "50")
    assert result.exit_code == 0, result.output
    after = json.loads((run_dir / "summary.json").read_text())["metrics"]
    assert after["swd"] == before["swd"] and after["nll"] > 0
    line = json.loads((run_dir / "evaluations.jsonl").read_text().splitlines()[-1])
    assert line["nll"] == after["nll"] and line["sampler"] == "ddpm"
    # the bound's breakdown by step is saved for a plot, and adds up to the reported value
    terms = json.loads((run_dir / "nll_terms.json").read_text())
    assert len(terms["per_step"]) == 40
    assert sum(terms["per_step"]) + terms["prior"] == pytest.approx(after["nll"], rel=1e-9)
    with Image.open(run_dir / "nll_terms.png") as im:
        assert im.size == (720, 420)


def test_wb_runs_lists_and_compares(wb):
    rows = json.loads(wb("runs", "--json").output)
    assert {r["experiment"] for r in rows} == {"tiny", "tiny_v"}
    tiny = next(r for r in rows if r["experiment"] == "tiny")
    assert tiny["status"] == "done" and tiny["step"] == tiny["steps"] == 4 and "swd" in tiny["metrics"]
    assert "swissroll linear mlp eps mse ddpm" == tiny["options"]
    assert "tiny_v" in wb("runs").output
    diff = json.loads(wb("runs", "--compare", "tiny", "--compare", "tiny_v", "--json").output)
    assert diff["options"] == {"diffusion.prediction": ["eps", "v"], "train.lr": [0.001, 0.01]}
    assert set(diff["metrics"]) >= {"swd"}
    assert wb("runs", "--compare", "tiny").exit_code != 0


def test_latest_means_the_newest_run_id_not_the_last_directory_touched(tmp_path):
    runs_dir = tmp_path / "runs"
    ids = ["20260101-120000", "20260101-120000-2", "20260101-120000-10", "20260102-080000"]
    for run_id in reversed(ids):  # created newest first, so the oldest has the newest mtime
        (runs_dir / "e" / run_id).mkdir(parents=True)
        (runs_dir / "e" / run_id / runs.EXPERIMENT).write_text("[e]\n")
    os.utime(runs_dir / "e" / ids[0], (4e9, 4e9))  # touched last (e.g. sampled from)
    assert [d.name for d in runs.run_dirs(runs_dir, "e")] == ids
    assert runs.latest_run_dir(runs_dir, "e").name == "20260102-080000"


def test_an_evaluation_with_another_sampler_is_keyed_by_it_and_never_overwrites(wb, workdir):
    """The training's swd stays; `wb eval --sampler ddim --samples 50` adds its own figure, named by what differs."""
    run_dir = runs.find_run_dir("tiny", workdir / "runs")
    before = json.loads((run_dir / "summary.json").read_text())["metrics"]
    result = wb("eval", "tiny", "--metric", "swd", "--sampler", "ddpm", "--samples", "50")
    assert result.exit_code == 0, result.output
    assert json.loads((run_dir / "summary.json").read_text())["metrics"]["swd"] == before["swd"]  # same sampler, other n
    result = wb("eval", "tiny", "--metric", "swd", "--sampler", "ddim", "--samples", "50", "--steps", "10")
    assert result.exit_code == 0, result.output
    after = json.loads((run_dir / "summary.json").read_text())["metrics"]
    assert after["swd (n 50)"] != after["swd"]
    key = "swd (sampler ddim (steps 10, eta 0.0); n 50)"
    assert after["swd"] == before["swd"] and key in after and key in result.output
    line = json.loads((run_dir / "evaluations.jsonl").read_text().splitlines()[-1])
    assert line["sampler"] == "ddim" and line["sampler_options"]["steps"] == 10 and line["samples"] == 50
    assert line[key] == after[key]
