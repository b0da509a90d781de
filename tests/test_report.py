"""The report of a run: progress.png keeps every preview (also across a resume); samples.png says what it shows."""

from __future__ import annotations

import torch
from PIL import Image

from workbench import report, runs
from workbench.experiment import load_experiment
from workbench.training import train

TINY = """\
[tiny]
seed = 1
dataset   = { name = "shapes", size = 8, n = 64 }
scheduler = { name = "linear", timesteps = 50 }
backbone  = { name = "unet", channels = 8, channel_mult = [1], groups = 4 }
sampler   = { name = "ddim", steps = 5 }
train     = { steps = 6, batch_size = 8, log_every = 2, checkpoint_every = 2, sample_every = 3, preview = 4 }
eval      = { samples = 8, metrics = [] }
"""


def test_previews_accumulate_into_progress_png_and_survive_a_resume(tmp_path):
    held_out = torch.rand(16, 1, 8, 8) * 2 - 1
    for step in (100, 200):
        report.record_preview(tmp_path, step, torch.rand(16, 1, 8, 8) * 2 - 1, held_out)
    with Image.open(tmp_path / "progress.png") as two_rows:
        height = two_rows.height
    report.record_preview(tmp_path, 300, torch.rand(16, 1, 8, 8) * 2 - 1, held_out)  # as a resumed process would
    assert sorted(int(k) for k in runs.load_checkpoint(tmp_path / report.PREVIEWS)) == [100, 200, 300]
    with Image.open(tmp_path / "progress.png") as three_rows:
        assert three_rows.height == height * 3 // 2


def test_a_run_with_sample_every_draws_progress_and_a_titled_sample_sheet(tmp_path, monkeypatch):
    monkeypatch.setenv("WB_RUNS_DIR", str(tmp_path / "runs"))
    (tmp_path / "e.toml").write_text(TINY)
    run = train(load_experiment("tiny", file=tmp_path / "e.toml"))
    previews = runs.load_checkpoint(run.dir / report.PREVIEWS)
    assert sorted(int(k) for k in previews) == [3, 6]  # every sample_every steps, and the last
    # the same noise each time: the two previews differ only through the weights, not the draw
    assert previews["3"].shape == previews["6"].shape == (4, 3, 8, 8)
    assert (run.dir / "progress.png").is_file() and (run.dir / "samples.png").is_file()
    assert report.describe(run.experiment.sampler) == "sampler ddim (steps 5, eta 0.0)"
