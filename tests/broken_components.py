"""Deliberately broken components: each must fail the `workbench.testing` check that names its fault."""

from __future__ import annotations

import math

import torch
from pydantic import Field

import workbench as wb
from workbench.plugins.losses import MSE, VLB


class OffByOneSampler(wb.ChainSampler):
    """DDIM (eta = 0) whose update reads alpha-bar one grid entry late: each step lands one step too far."""

    name = "off_by_one"
    steps: int = Field(50, ge=1)

    def timesteps(self, diffusion):
        return self.grid(diffusion, self.steps, "logsnr")

    def walk(self, walk, grid):
        abar = walk.diffusion.alphas_cumprod[grid].tolist() + [1.0, 1.0]
        x = walk.start()
        for i, t in enumerate(grid):
            x0, eps = walk.denoise(x, t, self.clip_denoised)
            a_s = abar[i + 2]  # the bug: the next step is abar[i + 1]
            x = math.sqrt(a_s) * x0 + math.sqrt(1 - a_s) * eps
            walk.visit(x)
        return x


class NonMonotoneScheduler(wb.Scheduler):
    """Linear betas with three negative ones half-way: alpha-bar rises there."""

    name = "non_monotone"

    def betas(self):
        betas = torch.linspace(1e-4, 0.02, self.timesteps, dtype=torch.float64) * 1000 / self.timesteps
        middle = self.timesteps // 2
        betas[middle : middle + 3] = -0.01  # alpha-bar rises over these steps
        return betas


class TimeBlindBackbone(wb.Backbone):
    """An MLP on x_t alone: it ignores t."""

    name = "time_blind"

    def build(self, data_shape, out_channels):
        if len(data_shape) != 1:
            raise wb.ConfigError("vectors only")
        net = torch.nn.Sequential(torch.nn.Linear(data_shape[0], 16), torch.nn.SiLU(), torch.nn.Linear(16, out_channels))

        class Blind(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.net = net

            def forward(self, x, t):
                return self.net(x)

        return Blind()


class UnweightedVLB(VLB):
    """The vlb loss that ignores the importance weights: its expectation under importance-sampled t is wrong."""

    name = "unweighted_vlb"

    def terms(self, model, diffusion, x0, t, noise, weights=None):
        return super().terms(model, diffusion, x0, t, noise, None)


class NatsVLB(VLB):
    """The vlb loss whose bound term L_t (what importance sampling learns from) is in nats, not bits: weighted ln 2."""

    name = "nats_vlb"

    def terms(self, model, diffusion, x0, t, noise, weights=None):
        terms = super().terms(model, diffusion, x0, t, noise, weights)
        return wb.LossTerms(terms.loss, bound=terms.bound * math.log(2))


class OffGridDataset(wb.Dataset):
    """Points said to take 17 levels whose values are scaled to [-1.5, 1.5]: off the range and off the grid."""

    name = "off_grid"

    @property
    def shape(self):
        return (2,)

    @property
    def levels(self):
        return 17

    def load(self):
        k = torch.randint(0, 17, (100, 2), generator=torch.Generator().manual_seed(0))
        return (k.float() / 8 - 1) * 1.5


class BlindMetric(wb.Metric):
    """A distance that never looks at the samples."""

    name = "blind"

    def compute(self, evaluation):
        return 0.25


def _snr_over_snr_weight(diffusion, t, gamma):
    """min(SNR, gamma) / SNR for every prediction: right for eps, wrong for v (which needs / (SNR + 1))."""
    snr = diffusion.snr(t)
    return snr.clamp(max=gamma) / snr


class WrongMinSNR(MSE):
    """The mse loss whose min-SNR weight for v-prediction has the eps denominator (diffusers' first attempt)."""

    name = "wrong_min_snr"

    def simple_loss(self, diffusion, prediction, x0, noise, t):
        target = diffusion.training_target(x0, noise, t)
        loss = ((prediction - target) ** 2).mean(dim=tuple(range(1, prediction.dim())))
        if self.min_snr_gamma is None:
            return loss
        if diffusion.prediction == "x0":
            return loss * diffusion.snr(t).clamp(max=self.min_snr_gamma).to(loss.dtype)
        return loss * _snr_over_snr_weight(diffusion, t, self.min_snr_gamma).to(loss.dtype)
