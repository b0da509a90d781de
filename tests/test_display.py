"""Pictures: PNG grids and scatters, and their terminal renderings."""

from __future__ import annotations

import torch
from PIL import Image
from rich.console import Console

from workbench.display import TerminalImage, TerminalScatter, save_grid, save_scatter, sparkline, tile


def test_tile_places_each_image_inside_a_thin_border():
    images = torch.stack([torch.full((3, 4, 4), v) for v in (-1.0, 0.0, 1.0, 1.0)])
    grid = tile(images, nrow=2, border=1, background=7)
    assert grid.shape == (2 * 5 + 1, 2 * 5 + 1, 3) and grid.dtype == torch.uint8
    assert (grid[0] == 7).all() and (grid[:, 0] == 7).all() and (grid[5] == 7).all()
    assert (grid[1:5, 1:5] == 0).all() and (grid[1:5, 6:10] == 128).all() and (grid[6:10, 1:5] == 255).all()


def test_grayscale_grid_png_has_the_expected_size(tmp_path):
    images = torch.rand(10, 1, 8, 8) * 2 - 1
    path = save_grid(images, tmp_path / "g.png", nrow=5, min_tile=16)
    with Image.open(path) as im:
        assert im.size == (5 * (16 + 2) + 2, 2 * (16 + 2) + 2) and im.mode == "RGB"  # 16 px tiles, 2 px gutters


def test_scatter_png_draws_samples_and_data_in_two_colours(tmp_path):
    data = torch.tensor([[-0.5, -0.5]])
    samples = torch.tensor([[0.5, 0.5]])
    with Image.open(save_scatter(samples, data, tmp_path / "s.png", size=101)) as im:
        colours = {im.getpixel((x, y)) for x in range(101) for y in range(101)}
    assert (150, 150, 150) in colours and (230, 80, 40) in colours


def render(renderable, width=40, colour=True) -> list:
    console = Console(width=width, force_terminal=colour, color_system="truecolor" if colour else None, record=True)
    return list(console.render(renderable, console.options))


def test_terminal_image_uses_half_blocks_in_colour_and_fits_the_width():
    images = torch.zeros(4, 3, 8, 8)
    segments = render(TerminalImage(images, nrow=2), width=40)
    lines = "".join(s.text for s in segments).splitlines()
    assert len(lines) == (2 * 9 + 1 + 1) // 2 and all(len(line) == 19 for line in lines)
    assert set("".join(lines)) == {"▀"}
    assert any(s.style and s.style.bgcolor for s in segments)
    narrow = "".join(s.text for s in render(TerminalImage(torch.zeros(64, 3, 32, 32)), width=30)).splitlines()
    assert max(len(line) for line in narrow) <= 30


def test_terminal_image_falls_back_to_ascii_without_colour():
    images = torch.stack([torch.full((1, 4, 4), -1.0), torch.full((1, 4, 4), 1.0)])
    text = "".join(s.text for s in render(TerminalImage(images, nrow=2), colour=False))
    assert "▀" not in text and "@" in text and " " in text


def test_terminal_scatter_puts_braille_dots_where_the_points_are():
    samples = torch.tensor([[1.0, 1.0]])   # top right
    data = torch.tensor([[-1.0, -1.0]])    # bottom left
    lines = "".join(s.text for s in render(TerminalScatter(samples, data, height=8), width=40)).splitlines()
    assert len(lines) == 8
    top, bottom = lines[0].rstrip(), lines[-1]
    assert top and "\u2800" < top[-1] <= "\u28ff" and top.strip() == top[-1]
    assert bottom.strip() and bottom.index(bottom.strip()[0]) < len(bottom) // 4


def test_sparkline_spans_the_range():
    line = sparkline([3.0, 2.0, 1.0, 0.0], width=4).plain
    assert line == "█▆▃▁"


def test_the_sample_sheet_puts_originals_beside_generated_in_one_layout():
    from workbench.display import clipped, grid_image, sample_sheet

    g = torch.Generator().manual_seed(0)
    data, samples = torch.rand(9, 1, 8, 8, generator=g) * 2 - 1, torch.rand(9, 1, 8, 8, generator=g) * 2 - 1
    sheet = sample_sheet(samples, data, "title")
    left, right = grid_image(data, 3), grid_image(samples, 3)
    assert left.size == right.size  # one layout for both panels
    assert sheet.width == left.width + right.width + 3 * 16
    x, y = 16, 44  # where the first panel is pasted
    assert sheet.crop((x, y, x + left.width, y + left.height)).tobytes() == left.tobytes()
    x = 16 + left.width + 16
    assert sheet.crop((x, y, x + right.width, y + right.height)).tobytes() == right.tobytes()
    # a gutter of at least 1/8 of a tile between 64-pixel tiles: 8x8 digits never touch
    tile_px = 64
    assert left.width == 3 * tile_px + 4 * (tile_px // 8)


def test_values_outside_the_data_range_are_counted_not_hidden():
    from workbench.display import clipped

    assert clipped(torch.zeros(10)) == ""
    assert clipped(torch.tensor([0.0, 1.5, -2.0, 1.0])).startswith("2 of 4 values (50.00%) outside [-1, 1]")


def test_long_phases_get_a_bar_and_training_shows_no_loss_before_it_has_one():
    """A phase with progress gets a transient bar on a terminal, which ends with the phase; the training
    bar's loss column stays empty until the first logging step (never 'loss nan')."""
    import io

    from rich.console import Console

    from workbench.console import ConsoleListener

    out = io.StringIO()
    listener = ConsoleListener(Console(file=out, force_terminal=True, width=100))
    listener.phase("drawing 8 samples with ddpm")
    for done in range(1, 5):
        listener.advance(done, 4)
        assert (listener.phase_bar is None) == (done == 4)  # ended exactly when done
    listener.train_start(0, 10)
    listener.step(3)
    listener.train_end()
    assert "nan" not in out.getvalue() and "drawing 8 samples" in out.getvalue()


def test_progress_across_batches_counts_up_to_the_whole():
    import workbench as wb
    from workbench.diffusion import Diffusion

    seen = []
    diffusion = Diffusion(wb.build("scheduler", "cosine", timesteps=20).betas())
    sampler = wb.build("sampler", "ddim", steps=5)
    wb.draw_samples(sampler, lambda x, t: torch.zeros_like(x), diffusion, (10, 2), torch.Generator().manual_seed(0),
                    batch_size=4, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(done, 15) for done in range(1, 16)]  # 3 batches of 5 model evaluations, one count
