"""Pieces shared by the built-in networks: the sinusoidal time embedding and zero initialisation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [B, dim] of step indices t [B] (Vaswani et al. 2017; DDPM, Ho et al. 2020).

    Frequencies run geometrically from 1 down to 1/max_period:
    emb = [cos(t * w_0), ..., cos(t * w_{h-1}), sin(t * w_0), ..., sin(t * w_{h-1})]
    with w_i = max_period^(-i/h) and h = dim // 2 (improved-diffusion's `timestep_embedding`,
    the same as diffusers' `Timesteps(flip_sin_to_cos=True, downscale_freq_shift=0)`).
    An odd `dim` gets one zero column at the end. Computed in float32 whatever t is.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) / half * torch.arange(half, dtype=torch.float32, device=t.device))
    args = t.to(torch.float32)[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class TimeEmbedding(nn.Module):
    """t [B] -> sinusoid(frequency_dim) -> Linear -> SiLU -> Linear -> [B, embed_dim] (as in DDPM)."""

    def __init__(self, frequency_dim: int, embed_dim: int) -> None:
        super().__init__()
        self.frequency_dim = frequency_dim
        self.linear_1 = nn.Linear(frequency_dim, embed_dim)
        self.linear_2 = nn.Linear(embed_dim, embed_dim)

    def forward(self, t: torch.Tensor, batch_size: int) -> torch.Tensor:
        # A single step index (0-d) stands for the same step for the whole batch.
        t = t.reshape(-1).expand(batch_size) if t.numel() == 1 else t
        weight = self.linear_1.weight
        emb = timestep_embedding(t.to(weight.device), self.frequency_dim).to(weight.dtype)
        return self.linear_2(F.silu(self.linear_1(emb)))


def null_labels(y: None, num_classes: int, x: torch.Tensor) -> torch.Tensor:
    """The "no label" index K for every example of the batch x: what a conditional net reads when y is None."""
    return torch.full((x.shape[0],), num_classes, dtype=torch.long, device=x.device)


def zero_init(module: nn.Module) -> nn.Module:
    """Zero every parameter of `module` and return it.

    Used on the last layer of each residual branch and on the output layer, so that a freshly
    initialised network is an identity around each residual and outputs zeros (improved-diffusion's
    `zero_module`; Goyal et al. 2017 zero the last norm of each block for the same reason).
    """
    for p in module.parameters():
        nn.init.zeros_(p)
    return module
