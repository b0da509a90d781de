"""A tiny convolutional backbone for images [C, H, W], as a workbench plugin.

Three 3x3 convolutions at full resolution; a sinusoidal embedding of t (and,
for a conditional run, an embedding of the class label, index K meaning "no
label") enters every layer as a per-channel shift. Small enough for a laptop,
big enough to learn the digits; its tests run workbench.testing's backbone
contract.
"""

from __future__ import annotations

import math

from pydantic import Field

import workbench as wb


class TinyConv(wb.Backbone):
    """Three 3x3 convolutions with a sinusoidal time embedding as per-channel shifts (images only)."""

    name = "tinyconv"

    width: int = Field(32, ge=1, description="channels of the hidden layers")
    time_embed_dim: int = Field(32, ge=2, description="size of the sinusoidal embedding of t")

    def build(self, data_shape, out_channels, num_classes=None):
        if len(data_shape) != 3:
            raise wb.ConfigError(
                f"backbone 'tinyconv' is for images [C, H, W], but this dataset's examples have shape {tuple(data_shape)}",
                hint='for vectors use backbone = { name = "mlp" }',
            )
        return _Net(data_shape[0], out_channels, self.width, self.time_embed_dim, num_classes)


def _net_class():
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self, channels, out_channels, width, embed_dim, num_classes):
            super().__init__()
            half = embed_dim // 2
            self.register_buffer("freqs", torch.exp(-math.log(10_000.0) * torch.arange(half) / half))
            self.time = nn.Sequential(nn.Linear(2 * half, width), nn.SiLU(), nn.Linear(width, 2 * width))
            self.label = nn.Embedding(num_classes + 1, 2 * width) if num_classes else None
            self.conv_in = nn.Conv2d(channels, width, 3, padding=1)
            self.conv_mid = nn.Conv2d(width, width, 3, padding=1)
            self.conv_out = nn.Conv2d(width, out_channels, 3, padding=1)

        def forward(self, x, t, y=None):
            angles = t.to(x.dtype)[:, None] * self.freqs
            shift = self.time(torch.cat([angles.sin(), angles.cos()], dim=1))
            if self.label is not None:
                if y is None:
                    y = torch.full_like(t, self.label.num_embeddings - 1)
                shift = shift + self.label(y)
            a, b = shift[:, :, None, None].chunk(2, dim=1)
            h = torch.nn.functional.silu(self.conv_in(x) + a)
            h = torch.nn.functional.silu(self.conv_mid(h) + b)
            return self.conv_out(h)

    return Net


def _Net(*args):
    return _net_class()(*args)


@wb.hookimpl
def register_backbones(register):
    register(TinyConv)
