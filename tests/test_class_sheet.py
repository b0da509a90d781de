"""Pictures of conditional samples: one labelled row per class (images), one titled scatter per class (points)."""

from __future__ import annotations

import numpy as np
import torch

from workbench.class_sheet import class_sheet, class_title, side_by_side


def test_images_get_one_row_per_class_asked_for():
    names = ["disc", "square", "triangle"]
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    images = torch.stack([torch.full((3, 8, 8), -1.0 + k) for k in labels.tolist()])  # class k: grey level k
    sheet = np.asarray(class_sheet(images, labels, names, per_class=4, tile_size=8))
    # Three rows of one 8x8 tile height plus borders; every class's row holds its own grey level only.
    row_height = 8 + 2
    assert sheet.shape[0] == 3 * (row_height + 2)
    for k in range(3):
        row = sheet[k * (row_height + 2) : k * (row_height + 2) + row_height, -8 * 4 :]
        level = round((k / 2) * 255) if k < 2 else 255
        assert (np.abs(row.astype(int) - level) <= 1).any()
    assert class_title(1, names) == "1 square" and class_title(3, ["0", "1", "2", "3"]) == "3"


def test_points_get_one_panel_per_class_and_scales_sit_side_by_side():
    labels = torch.arange(8).repeat_interleave(10)
    points = torch.randn(80, 2, generator=torch.Generator().manual_seed(0)) * 0.1
    sheet = class_sheet(points, labels, [str(k) for k in range(8)], cell=50)
    assert sheet.size == (4 * 56 + 6, 2 * (50 + 18 + 6))  # 8 classes: two rows of four panels
    both = side_by_side([("guidance 0", sheet), ("guidance 1", sheet)])
    assert both.size == (2 * (sheet.width + 10), sheet.height + 18)


def test_the_terminal_shows_one_labelled_row_per_class():
    from rich.console import Console

    from workbench.class_sheet import terminal_class_rows

    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    images = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    console = Console(width=80, record=True, color_system=None)
    console.print(terminal_class_rows(images, labels, ["disc", "square", "triangle"]))
    text = console.export_text()
    lines = [line.strip() for line in text.splitlines()]
    titles = [line.split()[:2] for line in lines if line[:1].isdigit()]
    assert titles == [["0", "disc"], ["1", "square"], ["2", "triangle"]]
