"""A residual MLP for vector data [B, D] (the 2-D toy sets), conditioned on the step t.

    x [B, D] -> [Fourier features] -> Linear -> width
             -> depth x ResidualBlock(h, emb)      emb = TimeEmbedding(t)
             -> norm -> SiLU -> Linear (zero-initialised) -> [B, out_dim]

Each block is the vector version of the U-Net's residual block: the time embedding is
projected and added inside every block, so every depth sees t. Built with `num_classes = K`,
a learned embedding of the label y in 0..K (K: "no label") is added to the time embedding
(improved-diffusion's `label_emb`), and the model is `model(x_t, t, y)`.

With `fourier_features = L > 0` the input layer sees, besides x, sin and cos of pi 2^j x for
every coordinate and j < L (the positional encoding of NeRF, Mildenhall et al. 2020; Tancik et
al. 2020 show why it lets an MLP fit sharp detail that raw coordinates, with an MLP's bias
towards smooth functions, only reach after long training). A thin shape such as the swiss
roll needs its denoiser to change over distances of its thickness, not of the whole box.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from workbench.plugins.nets.layers import TimeEmbedding, null_labels, zero_init


def _norm(width: int, layer_norm: bool) -> nn.Module:
    return nn.LayerNorm(width) if layer_norm else nn.Identity()


def fourier_features(x: torch.Tensor, frequencies: int) -> torch.Tensor:
    """x [B, D] -> [B, D (1 + 2 L)]: x, then sin(pi 2^j x) and cos(pi 2^j x) for j = 0..L-1."""
    if not frequencies:
        return x
    scales = math.pi * 2.0 ** torch.arange(frequencies, dtype=x.dtype, device=x.device)
    args = (x[:, :, None] * scales).flatten(1)  # [B, D L], coordinate-major
    return torch.cat([x, torch.sin(args), torch.cos(args)], dim=1)


class ResidualBlock(nn.Module):
    """h + Linear(Dropout(SiLU(Linear(SiLU(Norm(h))) + Linear(emb)))), the last Linear zeroed."""

    def __init__(self, width: int, embed_dim: int, dropout: float, layer_norm: bool) -> None:
        super().__init__()
        self.norm = _norm(width, layer_norm)
        self.fc1 = nn.Linear(width, width)
        self.emb_proj = nn.Linear(embed_dim, width)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = zero_init(nn.Linear(width, width))

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """h [B, width]; emb [B, embed_dim], the time embedding already passed through SiLU."""
        r = self.fc1(F.silu(self.norm(h))) + self.emb_proj(emb)
        return h + self.fc2(self.dropout(F.silu(r)))


class MLP(nn.Module):
    """model(x_t [B, D], t [B]) -> [B, out_dim]."""

    def __init__(
        self,
        data_dim: int,
        out_dim: int,
        width: int = 128,
        depth: int = 3,
        time_embed_dim: int = 128,
        dropout: float = 0.0,
        layer_norm: bool = True,
        fourier_features: int = 0,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        self.fourier_features = fourier_features
        self.time_embed = TimeEmbedding(time_embed_dim, width)
        self.num_classes = num_classes
        self.label_embed = nn.Embedding(num_classes + 1, width) if num_classes else None
        self.input = nn.Linear(data_dim * (1 + 2 * fourier_features), width)
        self.blocks = nn.ModuleList(ResidualBlock(width, width, dropout, layer_norm) for _ in range(depth))
        self.out_norm = _norm(width, layer_norm)
        self.output = zero_init(nn.Linear(width, out_dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.time_embed(t, x.shape[0])
        if self.label_embed is not None:
            emb = emb + self.label_embed(null_labels(y, self.num_classes, x) if y is None else y)
        emb = F.silu(emb)  # every block's projection starts with SiLU
        h = self.input(fourier_features(x, self.fourier_features))
        for block in self.blocks:
            h = block(h, emb)
        return self.output(F.silu(self.out_norm(h)))
