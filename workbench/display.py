"""Pictures: PNG grids and scatters (Pillow), and the same in the terminal (Rich).

Images are tensors in [-1, 1], [N, C, H, W] with C = 1 or 3; 2-D points are
[N, 2]. In the terminal an image pixel pair becomes one half-block character
"▀" (top pixel as foreground colour, bottom as background); without colour
(NO_COLOR, no TTY) it falls back to ASCII shading. Scatters use braille
dots, 2x4 per character cell.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from rich.console import Console, ConsoleOptions, RenderResult
from rich.segment import Segment
from rich.style import Style
from rich.text import Text

if TYPE_CHECKING:
    from PIL import Image

SHADES = " .:-=+*#%@"
DATA_RGB = (150, 150, 150)
SAMPLE_RGB = (230, 80, 40)


def is_image_batch(x: torch.Tensor) -> bool:
    return x.ndim == 4 and x.shape[1] in (1, 3)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats -> 0..255 uint8, same shape."""
    return ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def tile(images: torch.Tensor, nrow: int | None = None, border: int = 1, background: int = 255) -> torch.Tensor:
    """Images [N, C, H, W] in [-1, 1] -> one uint8 grid [H', W', 3] with a thin border between tiles."""
    pixels = to_uint8(images)
    if pixels.shape[1] == 1:
        pixels = pixels.expand(-1, 3, -1, -1)
    n, _, h, w = pixels.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    grid = torch.full((3, ncol * (h + border) + border, nrow * (w + border) + border), background, dtype=torch.uint8)
    for i in range(n):
        r, c = divmod(i, nrow)
        top, left = border + r * (h + border), border + c * (w + border)
        grid[:, top : top + h, left : left + w] = pixels[i]
    return grid.permute(1, 2, 0).contiguous()


def upscale(images: torch.Tensor, min_tile: int = 64) -> torch.Tensor:
    """Images enlarged by an integer factor (nearest) so that a tile is at least `min_tile` pixels: visible at 100%."""
    scale = max(1, math.ceil(min_tile / images.shape[-1]))
    images = images.detach().float().cpu()
    return torch.nn.functional.interpolate(images, scale_factor=scale, mode="nearest") if scale > 1 else images


def grid_image(images: torch.Tensor, nrow: int | None = None, min_tile: int = 64) -> Image.Image:
    """A grid of images, enlarged to `min_tile` pixels, with a white gutter wide enough (1/8 of a tile) that tiles never fuse."""
    from PIL import Image

    large = upscale(images, min_tile)
    return Image.fromarray(tile(large, nrow, border=max(2, large.shape[-1] // 8)).numpy())


def save_grid(images: torch.Tensor, path: Path, nrow: int | None = None, min_tile: int = 64) -> Path:
    """A PNG grid of images (see grid_image)."""
    grid_image(images, nrow, min_tile).save(path)
    return path


def clipped(x: torch.Tensor) -> str:
    """'' when every value lies in [-1, 1], else how many do not (the picture shows them clipped to the data range)."""
    outside = int((x.detach().abs() > 1).sum())
    return f"{outside} of {x.numel()} values ({outside / x.numel():.2%}) outside [-1, 1], shown clipped" if outside else ""


def sample_sheet(samples: torch.Tensor, data: torch.Tensor | None, title: str = "") -> Image.Image:
    """The picture of a run's samples: for images, held-out originals beside the generated ones in two labelled
    panels of one layout; for points, the samples (orange) over the data (grey). A title line says what it shows."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    note = clipped(samples)
    if is_image_batch(samples):
        nrow = math.ceil(math.sqrt(len(samples)))
        generated = grid_image(samples, nrow)
        shown = [("generated" + (f": {note}" if note else ""), generated)]
        if data is not None:
            shown.insert(0, (f"held-out data ({min(len(data), len(samples))})", grid_image(data[: len(samples)], nrow)))
    else:
        points = samples.reshape(len(samples), -1)[:, :2]
        reference = None if data is None else data.reshape(len(data), -1)[:, :2]
        shown = [("samples (orange) over held-out data (grey)" + (f"; {note}" if note else ""), scatter_image(points, reference))]
    gap, top = 16, 44
    width = sum(im.width for _, im in shown) + gap * (len(shown) + 1)
    height = max(im.height for _, im in shown) + top + gap
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((gap, 6), title, fill="black", font=font)
    x = gap
    for label, im in shown:
        draw.text((x, top - 16), label, fill=(60, 60, 60), font=font)
        sheet.paste(im, (x, top))
        x += im.width + gap
    return sheet


def scatter_image(samples: torch.Tensor, data: torch.Tensor | None, size: int = 512) -> Image.Image:
    """A scatter of 2-D samples (orange) over data (grey), both in [-1, 1]^2 (slightly padded)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    for points, colour in ((data, DATA_RGB), (samples, SAMPLE_RGB)):
        if points is None:
            continue
        xy = _to_canvas(points, size, size)
        for x, y in xy.tolist():
            draw.ellipse((x - 1, y - 1, x + 1, y + 1), fill=colour)
    return image


def save_scatter(samples: torch.Tensor, data: torch.Tensor | None, path: Path, size: int = 512) -> Path:
    """A PNG scatter (see scatter_image)."""
    scatter_image(samples, data, size).save(path)
    return path


def save_samples(samples: torch.Tensor, path: Path, data: torch.Tensor | None = None, title: str = "") -> Path:
    """samples.png: the sample sheet (originals beside generated images, or samples over data points)."""
    sample_sheet(samples, data, title).save(path)
    return path


def draw_points(draw: Any, left: int, top: int, width: int, height: int,
                layers: list[tuple[torch.Tensor | None, tuple[int, int, int]]], lim: float = 1.1) -> None:
    """A grey frame at (left, top) and each (points, colour) layer in it, a pixel a point (the first layer beneath)."""
    draw.rectangle((left, top, left + width - 1, top + height - 1), outline=(200, 200, 200))
    for points, colour in layers:
        if points is None or len(points) == 0:
            continue
        for px, py in _to_canvas(points.reshape(len(points), -1)[:, :2], width, height, lim=lim).tolist():
            draw.point((left + px, top + py), fill=colour)


def _to_canvas(points: torch.Tensor, width: int, height: int, lim: float = 1.1) -> torch.Tensor:
    p = points.detach().float().cpu()
    x = ((p[:, 0] + lim) / (2 * lim) * (width - 1)).round()
    y = ((lim - p[:, 1]) / (2 * lim) * (height - 1)).round()
    keep = (x >= 0) & (x < width) & (y >= 0) & (y < height)
    return torch.stack([x[keep], y[keep]], dim=1).long()


# --- the terminal ---------------------------------------------------------------------


class TerminalImage:
    """A Rich renderable drawing an image grid with half blocks, fitted to the console width."""

    def __init__(self, images: torch.Tensor, nrow: int | None = None) -> None:
        self.grid = tile(images, nrow, border=1, background=0)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        grid = self.grid
        step = max(1, math.ceil(grid.shape[1] / max(options.max_width, 1)))
        grid = grid[::step, ::step]
        if grid.shape[0] % 2:
            grid = torch.cat([grid, torch.zeros_like(grid[:1])])
        colour = console.color_system is not None and not console.no_color
        rows = grid.tolist()
        for top, bottom in zip(rows[0::2], rows[1::2]):
            if colour:
                for upper, lower in zip(top, bottom):
                    yield Segment("▀", Style(color=f"rgb({upper[0]},{upper[1]},{upper[2]})", bgcolor=f"rgb({lower[0]},{lower[1]},{lower[2]})"))
            else:
                line = "".join(SHADES[min(len(SHADES) - 1, (sum(u) + sum(b)) * len(SHADES) // (6 * 256))] for u, b in zip(top, bottom))
                yield Segment(line)
            yield Segment.line()


class TerminalScatter:
    """A Rich renderable drawing 2-D samples over data with braille dots (2x4 per cell)."""

    BRAILLE = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))

    def __init__(self, samples: torch.Tensor, data: torch.Tensor | None = None, height: int = 16) -> None:
        self.samples, self.data, self.height = samples, data, height

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        cols = max(4, min(options.max_width, 2 * self.height + 2 * self.height // 2))
        rows = self.height
        width, height = 2 * cols, 4 * rows
        cells = [[0] * cols for _ in range(rows)]
        owner = [[""] * cols for _ in range(rows)]
        for points, tag in ((self.data, "data"), (self.samples, "samples")):
            if points is None:
                continue
            for x, y in _to_canvas(points, width, height).tolist():
                r, c = y // 4, x // 2
                cells[r][c] |= self.BRAILLE[y % 4][x % 2]
                owner[r][c] = tag
        colour = console.color_system is not None and not console.no_color
        styles = {"data": Style(color="grey50"), "samples": Style(color="rgb(230,80,40)", bold=True), "": Style()}
        for r in range(rows):
            for c in range(cols):
                char = chr(0x2800 + cells[r][c]) if cells[r][c] else " "
                yield Segment(char, styles[owner[r][c]] if colour else None)
            yield Segment.line()


def terminal_samples(samples: torch.Tensor, data: torch.Tensor | None = None):
    """The right terminal picture for a batch: held-out images beside generated ones (one grid if there are
    no data), or a scatter of samples over data."""
    if not is_image_batch(samples):
        return TerminalScatter(samples[:, :2], None if data is None else data[:, :2])
    shown = samples[:64]
    if data is None:
        return TerminalImage(shown)
    from rich.table import Table

    nrow = math.ceil(math.sqrt(len(shown)))
    sheet = Table.grid(padding=(0, 2))
    sheet.add_column()
    sheet.add_column()
    sheet.add_row(Text("held-out data", style="dim"), Text("generated", style="dim"))
    sheet.add_row(TerminalImage(data[: len(shown)], nrow), TerminalImage(shown, nrow))
    return sheet


SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 40) -> Text:
    """A one-line plot of a series (e.g. the loss), resampled to `width` characters."""
    if not values:
        return Text("")
    step = max(1, math.ceil(len(values) / width))
    points = [sum(values[i : i + step]) / len(values[i : i + step]) for i in range(0, len(values), step)]
    lo, hi = min(points), max(points)
    span = (hi - lo) or 1.0
    return Text("".join(SPARKS[round((v - lo) / span * (len(SPARKS) - 1))] for v in points), style="cyan")
