"""Built-in training objectives: `mse` (L_simple), `vlb` (the full bound) and `hybrid`.

Every loss is given, per example, a step t and noise eps (the trainer draws
them, see workbench.timesteps), forms x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps,
calls the model once, and returns a per-example loss [B] that the trainer
averages (`Loss.terms`; calling the loss draws t and eps itself). The diffusion
object says what the model predicts (eps, x0 or v) and whether it also
outputs a variance (learned_range); the losses read both from it.

- mse:    L_simple = |prediction - target|^2 (Ho et al. 2020, eq. 14), with
          optional min-SNR weighting (Hang et al. 2023).
- vlb:    L_prior + T * L_t at a uniform t: an unbiased estimate of the whole
          variational bound in bits/dim (Ho et al. 2020, eq. 5); with
          `importance_sampling` it asks the trainer to draw t by importance
          (Nichol & Dhariwal 2021, sec. 3.3; workbench.timesteps).
- hybrid: L_simple + lambda * T * L_t with the mean stop-gradiented in the bound
          term, so it trains only the learned variance (Nichol & Dhariwal 2021, sec. 3.1).

The bound terms come from `workbench.likelihood`, which `wb.nll` uses too, so
the `vlb` loss averages to exactly what `wb.nll` reports.

Data levels: `vlb` and `hybrid` have a `levels` option, the number of discrete
values per dimension of the data, which picks the decoder at t = 0
(discretized Gaussian, or a Gaussian density when None). An experiment
leaves it unset and the pipeline fills it from the dataset with
`loss.for_data(dataset.levels)`; set it only when calling a loss by hand.

This module imports torch only inside methods: `wb list` loads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Literal

from pydantic import Field

from workbench import ConfigError, Loss, hookimpl
from workbench.components import LossTerms

if TYPE_CHECKING:
    import torch

    from workbench.diffusion import Diffusion


# --- L_simple -------------------------------------------------------------------


def min_snr_weight(diffusion: Diffusion, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma weight (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting"), float64 [B].

    The weight turns each prediction's loss into min(SNR, gamma) * |x0 error|^2:
    min(SNR, gamma) / SNR for eps, min(SNR, gamma) for x0, min(SNR, gamma) / (SNR + 1) for v.
    """
    snr = diffusion.snr(t)
    if diffusion.prediction == "eps":
        return (gamma / snr).clamp(max=1.0)  # min(SNR, gamma) / SNR, finite at SNR = 0
    if diffusion.prediction == "x0":
        return snr.clamp(max=gamma)
    return snr.clamp(max=gamma) / (snr + 1)


class MSE(Loss):
    """L_simple: mean squared error of the model's eps, x0 or v prediction (Ho et al. 2020), optional min-SNR weighting."""

    name = "mse"

    min_snr_gamma: float | None = Field(
        None,
        gt=0,
        description="min-SNR-gamma weighting (Hang et al. 2023; 5 is their choice); none: unweighted",
    )

    def check(self, prediction: str, variance: str) -> None:
        if variance == "learned_range":
            raise ConfigError(
                f"loss '{self.name}' cannot train variance = 'learned_range': the mean squared error gives "
                "the variance channels no gradient; the losses 'hybrid' and 'vlb' learn the variance",
                hint='set loss = { name = "hybrid" }, or keep mse with diffusion.variance = "fixed_small"',
            )

    def simple_loss(self, diffusion: Diffusion, prediction: torch.Tensor, x0: torch.Tensor,
                    noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """mean over dimensions of (prediction - target)^2, min-SNR weighted if asked, [B]."""
        from workbench.likelihood import mean_flat

        loss = mean_flat((prediction - diffusion.training_target(x0, noise, t)) ** 2)
        if self.min_snr_gamma is not None:
            loss = loss * min_snr_weight(diffusion, t, self.min_snr_gamma).to(loss.dtype)
        return loss

    def terms(
        self,
        model: Callable,
        diffusion: Diffusion,
        x0: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor,
        weights: torch.Tensor | None = None,
    ) -> LossTerms:
        prediction, _ = diffusion.split_output(model(diffusion.q_sample(x0, t, noise), t))
        loss = self.simple_loss(diffusion, prediction, x0, noise, t)
        return LossTerms(loss if weights is None else weights * loss)


# --- the variational bound ----------------------------------------------------------


class _BoundLoss(Loss):
    """A loss with a variational-bound term, which needs the data's levels for its decoder."""

    levels: int | None = Field(
        None,
        ge=2,
        description="discrete values per data dimension, for the decoder at t = 0 (bins of 2/(levels-1)); "
        "taken from the dataset when not set; none: continuous data (a Gaussian density)",
    )

    def for_data(self, levels: int | None) -> _BoundLoss:
        """This loss with `levels` from the dataset, unless it was set explicitly (then they must agree)."""
        if "levels" not in self.model_fields_set:
            return self.model_copy(update={"levels": levels}, deep=True)
        if self.levels != levels:
            raise ConfigError(
                f"loss '{self.name}': levels = {self.levels} but the dataset has levels = {levels}",
                hint="remove the loss's levels option: it is taken from the dataset",
            )
        return self


class VLB(_BoundLoss):
    """The full variational bound in bits/dim: prior KL + T x the KL (or decoder) term at a random t (Ho et al. 2020)."""

    name = "vlb"

    importance_sampling: bool = Field(
        False,
        description="draw t with p_t ~ sqrt(E[L_t^2]) from the last 10 losses per step, weighted "
        "1/(T p_t) to stay unbiased (Nichol & Dhariwal 2021, sec. 3.3); uniform until every t has 10",
    )

    @property
    def timestep_sampling(self) -> Literal["uniform", "importance"]:
        return "importance" if self.importance_sampling else "uniform"

    def terms(
        self,
        model: Callable,
        diffusion: Diffusion,
        x0: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor,
        weights: torch.Tensor | None = None,
    ) -> LossTerms:
        """L_prior + T * L_t: the prior term is exact, so only T * L_t carries the importance weight."""
        from workbench.likelihood import bound_term, prior_bpd

        x_t = diffusion.q_sample(x0, t, noise)
        term = bound_term(diffusion, model(x_t, t), x0, x_t, t, self.levels)
        scale = diffusion.num_timesteps if weights is None else weights * diffusion.num_timesteps
        return LossTerms(prior_bpd(diffusion, x0) + scale * term, bound=term)


class Hybrid(_BoundLoss, MSE):
    """L_simple + lambda * L_vlb, the bound term training only the learned variance (Nichol & Dhariwal 2021)."""

    name = "hybrid"

    vlb_weight: float = Field(
        0.001,
        ge=0,
        description="lambda, the weight of L_vlb = T * L_t in bits/dim (0.001 in improved DDPM)",
    )

    def check(self, prediction: str, variance: str) -> None:
        if variance != "learned_range":
            raise ConfigError(
                f"loss '{self.name}' needs diffusion.variance = 'learned_range', not {variance!r}: "
                "its bound term only trains the variance the model outputs",
                hint='set diffusion.variance = "learned_range", or use loss = { name = "mse" } with a fixed variance',
            )

    def terms(
        self,
        model: Callable,
        diffusion: Diffusion,
        x0: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor,
        weights: torch.Tensor | None = None,
    ) -> LossTerms:
        import torch

        from workbench.likelihood import bound_term

        x_t = diffusion.q_sample(x0, t, noise)
        prediction, var_values = diffusion.split_output(model(x_t, t))
        if var_values is None:
            raise ConfigError(f"loss '{self.name}' needs diffusion.variance = 'learned_range'")
        # The mean is detached in the bound term: L_simple alone trains it (improved DDPM sec. 3.1).
        frozen_mean = torch.cat([prediction.detach(), var_values], dim=1)
        term = bound_term(diffusion, frozen_mean, x0, x_t, t, self.levels)
        loss = self.simple_loss(diffusion, prediction, x0, noise, t) + self.vlb_weight * (diffusion.num_timesteps * term)
        return LossTerms(loss if weights is None else weights * loss, bound=term)


@hookimpl
def register_losses(register):
    for cls in (MSE, VLB, Hybrid):
        register(cls)
