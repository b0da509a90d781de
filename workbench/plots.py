"""Plots drawn with Pillow: training curves, the forward process, reverse trajectories.

No plotting library is needed: a line chart with axes, ticks and a legend,
and panels of scatters or image strips, are a few dozen lines of Pillow.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image, ImageDraw, ImageFont

from workbench.display import DATA_RGB, SAMPLE_RGB, draw_points, grid_image, is_image_batch, tile

PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]
FONT = ImageFont.load_default()


def smooth(values: Sequence[float], alpha: float | None = None) -> list[float]:
    """Exponential moving average; by default about ten points' memory (none for short series)."""
    alpha = alpha if alpha is not None else min(1.0, 10 / max(len(values), 1))
    out, current = [], None
    for v in values:
        current = v if current is None else alpha * v + (1 - alpha) * current
        out.append(current)
    return out


def line_chart(
    series: list[tuple[str, Sequence[float], Sequence[float]]],
    path: Path,
    title: str,
    xlabel: str = "step",
    ylabel: str = "",
    log_y: bool = False,
) -> Path:
    """A PNG line chart of (label, xs, ys) series with axes, ticks and a legend, written to `path`."""
    draw_line_chart(series, title, xlabel, ylabel, log_y).save(path)
    return path


def draw_line_chart(
    series: list[tuple[str, Sequence[float], Sequence[float]]],
    title: str,
    xlabel: str = "step",
    ylabel: str = "",
    log_y: bool = False,
    size: tuple[int, int] = (720, 420),
) -> Image.Image:
    """A line chart of (label, xs, ys) series with axes, ticks and a legend."""
    width, height = size
    left, right, top, bottom = 70, 20, 40, 50
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    points = [(x, y) for _, xs, ys in series for x, y in zip(xs, ys) if y is not None and math.isfinite(y) and (y > 0 or not log_y)]
    if not points:
        draw.text((left, height // 2), "no data", fill="black", font=FONT)
        return image
    fy = (lambda y: math.log10(y)) if log_y else (lambda y: y)
    x_lo, x_hi = min(p[0] for p in points), max(p[0] for p in points)
    y_lo, y_hi = min(fy(p[1]) for p in points), max(fy(p[1]) for p in points)
    x_hi, y_hi = (x_hi if x_hi > x_lo else x_lo + 1), (y_hi if y_hi > y_lo else y_lo + 1)

    def to_px(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x_lo) / (x_hi - x_lo) * (width - left - right),
                height - bottom - (fy(y) - y_lo) / (y_hi - y_lo) * (height - top - bottom))

    draw.rectangle((left, top, width - right, height - bottom), outline=(120, 120, 120))
    for i in range(5):
        x = x_lo + i * (x_hi - x_lo) / 4
        px = left + i * (width - left - right) / 4
        draw.line((px, height - bottom, px, height - bottom + 4), fill="black")
        draw.text((px - 15, height - bottom + 8), f"{x:.4g}", fill="black", font=FONT)
        y = y_lo + i * (y_hi - y_lo) / 4
        py = height - bottom - i * (height - top - bottom) / 4
        draw.line((left - 4, py, left, py), fill="black")
        draw.text((4, py - 6), f"{10 ** y if log_y else y:.3g}", fill="black", font=FONT)
    draw.text((width // 2 - 30, height - 18), xlabel, fill="black", font=FONT)
    draw.text((4, 8), ylabel, fill="black", font=FONT)
    draw.text((left, 12), title, fill="black", font=FONT)
    for i, (label, xs, ys) in enumerate(series):
        colour = PALETTE[i % len(PALETTE)]
        line = [to_px(x, y) for x, y in zip(xs, ys) if y is not None and math.isfinite(y) and (y > 0 or not log_y)]
        if len(line) > 1:
            draw.line(line, fill=colour, width=2)
        elif line:
            draw.ellipse((line[0][0] - 2, line[0][1] - 2, line[0][0] + 2, line[0][1] + 2), fill=colour)
        lx, ly = width - right - 170, top + 8 + 14 * i
        draw.line((lx, ly + 6, lx + 20, ly + 6), fill=colour, width=2)
        draw.text((lx + 26, ly), label, fill="black", font=FONT)
    return image


def training_curves(metrics: list[dict], path: Path) -> Path:
    """Loss against step (raw and smoothed) and the loss by timestep quarter, from metrics.jsonl records."""
    steps = [r["step"] for r in metrics]
    loss = [r["loss"] for r in metrics]
    series = [("loss", steps, loss), ("loss (smoothed)", steps, smooth(loss))]
    for q in range(4):
        ys = [r.get(f"loss_q{q}") for r in metrics]
        if any(y is not None for y in ys):
            series.append((f"t in quarter {q + 1}/4", steps, [y if y is not None else float("nan") for y in ys]))
    return line_chart(series, path, "training loss (quarters: t from least to most noisy)", ylabel="loss", log_y=True)


def panels(pictures: list[tuple[str, torch.Tensor]], data: torch.Tensor | None = None, cell: int = 200, lim: float = 2.5) -> Image.Image:
    """Titled panels side by side: each a 2-D scatter (over `data` in grey), or a column of images."""
    n = len(pictures)
    first = pictures[0][1]
    if is_image_batch(first):
        tiles = [tile(x, nrow=1, border=1) for _, x in pictures]
        tile_h, tile_w = tiles[0].shape[:2]
        scale = max(1, cell // max(tile_w, 1))
        w, h = tile_w * scale, tile_h * scale
    else:
        w = h = cell
    image = Image.new("RGB", (n * (w + 6) + 6, h + 26), "white")
    draw = ImageDraw.Draw(image)
    for i, (title, x) in enumerate(pictures):
        x0 = 6 + i * (w + 6)
        draw.text((x0, 4), title, fill="black", font=FONT)
        if is_image_batch(x):
            strip = Image.fromarray(tile(x, nrow=1, border=1).numpy()).resize((w, h), Image.NEAREST)
            image.paste(strip, (x0, 20))
        else:
            draw_points(draw, x0, 20, w, h, [(data, DATA_RGB), (x, SAMPLE_RGB)], lim=lim)
    return image


def save_rows(rows: list[tuple[str, Image.Image]], path: Path) -> Path:
    """Labelled images stacked top to bottom (e.g. one forward process per experiment), as a PNG."""
    rows_image(rows).save(path)
    return path


def rows_image(rows: list[tuple[str, Image.Image]]) -> Image.Image:
    """Labelled images stacked top to bottom."""
    width = max(im.width for _, im in rows)
    height = sum(im.height + 18 for _, im in rows)
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    y = 0
    for label, im in rows:
        draw.text((6, y + 3), label, fill=(60, 60, 60), font=FONT)
        sheet.paste(im, (0, y + 18))
        y += im.height + 18
    return sheet


def progress_sheet(previews: list[tuple[int, torch.Tensor]], data: torch.Tensor | None, per_row: int = 6) -> Image.Image:
    """The model learning: one row per preview step for images (the same noise each time, so the same samples
    sharpen), or one scatter per step for points, `per_row` to a row."""
    if is_image_batch(previews[0][1]):
        return rows_image([(f"step {step}", grid_image(x[:16], nrow=16, min_tile=32)) for step, x in previews])
    rows = [previews[i : i + per_row] for i in range(0, len(previews), per_row)]
    return rows_image([("", panels([(f"step {step}", x) for step, x in row], data, lim=1.1)) for row in rows])


def forward_process(diffusion, x0: torch.Tensor, steps: Sequence[int], generator: torch.Generator) -> list[tuple[str, torch.Tensor]]:
    """x0 noised to x_t at each of `steps` with one shared noise draw: [(title, x_t)]."""
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    out = []
    for t in steps:
        t_batch = torch.full((len(x0),), t, dtype=torch.long, device=x0.device)
        out.append((f"t={t}", diffusion.q_sample(x0, t_batch, noise)))
    return out


def image_columns(pictures: list[tuple[str, torch.Tensor]], shape: tuple[int, ...]) -> torch.Tensor:
    """Images of several pictures interleaved so that a grid with one column per picture shows them side by side."""
    return torch.stack([x for _, x in pictures], dim=1).reshape(-1, *shape)


def evenly_spaced_steps(num_timesteps: int, count: int = 8) -> list[int]:
    """`count` steps from 0 to T-1, evenly spaced."""
    return sorted({round(i * (num_timesteps - 1) / (count - 1)) for i in range(count)})
