"""Pictures of a conditional run's samples: one labelled row per class, one panel per guidance scale.

Images: a row of each class's samples, headed by the class's index and name.
2-D points: one scatter per class, titled by the class, over that class's
held-out data in grey. Several guidance scales drawn from the same noise sit
side by side, titled by their scale: the fidelity / diversity trade-off at a glance.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from workbench.display import DATA_RGB, SAMPLE_RGB, draw_points, is_image_batch, tile

FONT = ImageFont.load_default()
CHAR_WIDTH = 6
"""Width in pixels of one character of Pillow's default bitmap font: the label column fits the longest title."""
HEADER = 18


def class_title(k: int, names: list[str]) -> str:
    """'7' for a class named by its index, '1 square' otherwise."""
    return names[k] if names[k] == str(k) else f"{k} {names[k]}"


def class_sheet(
    samples: torch.Tensor,
    labels: torch.Tensor,
    names: list[str],
    data: torch.Tensor | None = None,
    data_labels: torch.Tensor | None = None,
    per_class: int = 8,
    tile_size: int = 32,
    cell: int = 160,
) -> Image.Image:
    """One labelled row per class (images, at most `per_class` each), or one titled scatter per class (points)."""
    samples, labels = samples.detach().cpu(), labels.detach().cpu()
    classes = [k for k in range(len(names)) if bool((labels == k).any())]
    if is_image_batch(samples):
        side = samples.shape[-1]
        scale = max(1, tile_size // side)
        rows = []
        for k in classes:
            grid = tile(samples[labels == k][:per_class], nrow=per_class, border=1)
            rows.append(Image.fromarray(grid.numpy()).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST))
        label_width = 8 + CHAR_WIDTH * max(len(class_title(k, names)) for k in classes)
        width = label_width + max(im.width for im in rows)
        sheet = Image.new("RGB", (width, sum(im.height + 2 for im in rows)), "white")
        draw = ImageDraw.Draw(sheet)
        y = 0
        for k, im in zip(classes, rows):
            draw.text((4, y + im.height // 2 - 5), class_title(k, names), fill=(40, 40, 40), font=FONT)
            sheet.paste(im, (label_width, y))
            y += im.height + 2
        return sheet
    per_row = min(len(classes), 4)
    n_rows = (len(classes) + per_row - 1) // per_row
    sheet = Image.new("RGB", (per_row * (cell + 6) + 6, n_rows * (cell + HEADER + 6)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, k in enumerate(classes):
        x0, y0 = 6 + (i % per_row) * (cell + 6), (i // per_row) * (cell + HEADER + 6)
        draw.text((x0, y0 + 3), class_title(k, names), fill="black", font=FONT)
        mine = None if data is None else (data.cpu() if data_labels is None else data.cpu()[data_labels.cpu() == k])
        draw_points(draw, x0, y0 + HEADER, cell, cell, [(mine, DATA_RGB), (samples[labels == k], SAMPLE_RGB)])
    return sheet


def terminal_class_rows(
    samples: torch.Tensor, labels: torch.Tensor, names: list[str], data: torch.Tensor | None = None, per_class: int = 8
):
    """The terminal's picture: images as one labelled row per class; points as one scatter over the data."""
    from rich.table import Table
    from rich.text import Text

    from workbench.display import TerminalImage, terminal_samples

    if not is_image_batch(samples):
        return terminal_samples(samples, data)
    samples, labels = samples.detach().cpu(), labels.detach().cpu()
    sheet = Table.grid(padding=(0, 1))
    sheet.add_column(justify="right", style="dim")
    sheet.add_column()
    for k in range(len(names)):
        mine = samples[labels == k][:per_class]
        if len(mine):
            sheet.add_row(Text(class_title(k, names)), TerminalImage(mine, nrow=per_class))
    return sheet


def side_by_side(sheets: list[tuple[str, Image.Image]]) -> Image.Image:
    """Titled sheets left to right (one per guidance scale)."""
    width = sum(im.width + 10 for _, im in sheets)
    height = max(im.height for _, im in sheets) + HEADER
    out = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(out)
    x = 0
    for title, im in sheets:
        draw.text((x + 6, 3), title, fill="black", font=FONT)
        out.paste(im, (x, HEADER))
        x += im.width + 10
    return out


def save_class_sheet(path: Path, *args, **kwargs) -> Path:
    """class_sheet(...) written as a PNG."""
    class_sheet(*args, **kwargs).save(path)
    return path
