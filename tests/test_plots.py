"""Plots: charts, panels, the forward process, and `wb noise`."""

from __future__ import annotations

import math

import torch
from PIL import Image
from typer.testing import CliRunner

import workbench as wb
from workbench import plots
from workbench.cli import make_app


def test_line_chart_and_training_curves_write_pngs_of_the_given_size(tmp_path):
    records = [{"step": s, "loss": 1.0 / s, "loss_q0": 2.0 / s, "loss_q1": None, "loss_q2": 0.5, "loss_q3": 0.4} for s in range(1, 30)]
    path = plots.training_curves(records, tmp_path / "loss.png")
    with Image.open(path) as im:
        assert im.size == (720, 420)
        colours = {im.getpixel((x, y)) for x in range(0, 720, 2) for y in range(0, 420, 2)}
    assert plots.PALETTE[0] in colours and plots.PALETTE[1] in colours  # raw and smoothed loss drawn
    with Image.open(plots.line_chart([("a", [0], [float("nan")])], tmp_path / "empty.png", "t")) as im:
        assert im.size == (720, 420)


def test_smooth_is_an_exponential_moving_average():
    assert plots.smooth([1.0, 0.0, 0.0], alpha=0.5) == [1.0, 0.5, 0.25]
    assert plots.smooth([3.0, 1.0]) == [3.0, 1.0]  # short series are left as they are


def test_forward_process_uses_one_noise_draw_and_the_schedule():
    diffusion = wb.Diffusion(wb.build("scheduler", "linear", timesteps=100).betas())
    x0 = torch.ones(4, 2)
    steps = plots.evenly_spaced_steps(100, 5)
    assert steps == [0, 25, 50, 74, 99]
    pictures = plots.forward_process(diffusion, x0, steps, torch.Generator().manual_seed(0))
    assert [title for title, _ in pictures] == [f"t={t}" for t in steps]
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    for t, (_, x_t) in zip(steps, pictures):
        abar = diffusion.alphas_cumprod[t].item()
        expected = math.sqrt(abar) * x0 + math.sqrt(1 - abar) * noise
        torch.testing.assert_close(x_t, expected)


def test_panels_lay_out_image_columns_and_scatters():
    images = [(f"t={t}", torch.zeros(3, 1, 8, 8)) for t in range(4)]
    sheet = plots.panels(images)
    assert sheet.width > 4 * 8 and sheet.height > 3 * 8
    scatters = plots.panels([("a", torch.zeros(10, 2)), ("b", torch.ones(10, 2))], cell=50)
    assert sheet.mode == scatters.mode == "RGB" and scatters.size == (2 * 56 + 6, 50 + 26)


def test_wb_noise_writes_one_row_per_experiment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WB_RUNS_DIR", str(tmp_path / "runs"))
    (tmp_path / "experiments.toml").write_text(
        '[lin]\ndescription = "x"\ndataset = { name = "moons", n = 300 }\nscheduler = { name = "linear", timesteps = 50, scale_with_timesteps = false }\n'
        'backbone = { name = "mlp" }\n\n[cos]\nextends = "lin"\nscheduler = { name = "cosine" }\n'
    )
    result = CliRunner().invoke(make_app(), ["noise", "lin", "cos", "--steps", "4"])
    assert result.exit_code == 0, result.output
    assert "lin: linear schedule, T = 50" in result.output and "cos: cosine schedule" in result.output
    assert not list(tmp_path.glob("*.png"))  # pictures go under the runs directory, not the working folder
    with Image.open(tmp_path / "runs" / "noise" / "noise-lin-cos.png") as im:
        assert im.height == 2 * (200 + 26 + 18) and im.width == 4 * 206 + 6
