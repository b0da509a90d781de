"""Built-in training objectives: `mse` (L_simple), `vlb` (the full bound) and `hybrid`.

Every loss draws, per example, a step t and noise eps, forms
x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, calls the model once, and
returns a per-example loss [B] that the trainer averages. The diffusion
object says what the model predicts (eps, x0 or v) and whether it also
outputs a variance (learned_range); the losses read both from it.

- mse:    L_simple = |prediction - target|^2 (Ho et al. 2020, eq. 14), with
          optional min-SNR weighting (Hang et al. 2023).
- vlb:    L_prior + T * L_t at a uniform t: an unbiased estimate of the whole
          variational bound in bits/dim (Ho et al. 2020, eq. 5), optionally with
          importance sampling of t (Nichol & Dhariwal 2021, sec. 3.3).
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

from typing import TYPE_CHECKING, Any, Callable

from pydantic import Field, PrivateAttr

from workbench import ConfigError, Loss, hookimpl

if TYPE_CHECKING:
    import torch

    from workbench.diffusion import Diffusion


class DiffusionLoss(Loss):
    """Shared machinery of the built-in losses: drawing t and noise, and x_t."""

    def draw(
        self,
        diffusion: Diffusion,
        x0: torch.Tensor,
        generator: torch.Generator | None,
        t: torch.Tensor | None,
        noise: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(t, weights, noise, x_t): t then noise drawn with `generator` unless given; weights in x0's dtype."""
        import torch

        if t is None:
            t, weights = self.sample_timesteps(len(x0), diffusion.num_timesteps, x0.device, generator)
        else:
            weights = self.timestep_weights(t, diffusion.num_timesteps)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        return t, weights.to(x0.dtype), noise, diffusion.q_sample(x0, t, noise)


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


class MSE(DiffusionLoss):
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

    def __call__(
        self,
        model: Callable,
        diffusion: Diffusion,
        x0: torch.Tensor,
        generator: torch.Generator | None = None,
        t: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        t, weights, noise, x_t = self.draw(diffusion, x0, generator, t, noise)
        prediction, _ = diffusion.split_output(model(x_t, t))
        return weights * self.simple_loss(diffusion, prediction, x0, noise, t)


# --- the variational bound ----------------------------------------------------------


HISTORY = 10
"""Losses remembered per step for importance sampling (improved DDPM)."""
UNIFORM_PROB = 0.001
"""Share of uniform probability mixed into the importance-sampling distribution."""


class LossHistory:
    """The last HISTORY values of L_t for every step t, as improved-diffusion's LossSecondMomentResampler keeps them.

    Compared by identity (it holds tensors), so two losses with histories are
    equal only when they share it.
    """

    def __init__(self, values: torch.Tensor, counts: torch.Tensor) -> None:
        self.values = values  # [T, HISTORY] float64, CPU
        self.counts = counts  # [T] int64, CPU: how many of each row are filled

    @classmethod
    def empty(cls, num_timesteps: int) -> LossHistory:
        import torch

        return cls(torch.zeros(num_timesteps, HISTORY, dtype=torch.float64), torch.zeros(num_timesteps, dtype=torch.long))

    @property
    def num_timesteps(self) -> int:
        return len(self.counts)

    def record(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Append each (t, L_t) in batch order, dropping the oldest value of a full row."""
        values, counts = self.values.numpy(), self.counts.numpy()
        for step, loss in zip(t.tolist(), losses.tolist()):
            if counts[step] == HISTORY:
                values[step, :-1] = values[step, 1:]
                values[step, -1] = loss
            else:
                values[step, counts[step]] = loss
                counts[step] += 1

    def probabilities(self) -> torch.Tensor | None:
        """p_t proportional to sqrt(E[L_t^2]), mixed with UNIFORM_PROB of uniform; None until every t has HISTORY values."""
        if bool((self.counts < HISTORY).any()):
            return None
        rms = self.values.pow(2).mean(dim=1).sqrt()
        if not bool(rms.sum() > 0):
            return None
        return rms / rms.sum() * (1 - UNIFORM_PROB) + UNIFORM_PROB / self.num_timesteps


class _BoundLoss(DiffusionLoss):
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

    _history: LossHistory | None = PrivateAttr(None)
    _gather: Callable | None = PrivateAttr(None)

    def distribute(self, gather: Callable) -> None:
        self._gather = gather

    def timestep_probabilities(self, num_timesteps: int, device: torch.device) -> torch.Tensor | None:
        if not self.importance_sampling or self._history is None:
            return None
        self._check_history(num_timesteps)
        p = self._history.probabilities()
        return None if p is None else p.to(device)

    def _check_history(self, num_timesteps: int) -> None:
        if self._history is not None and self._history.num_timesteps != num_timesteps:
            raise ValueError(
                f"loss 'vlb' holds an importance-sampling history for T = {self._history.num_timesteps} steps, "
                f"but the diffusion has T = {num_timesteps}"
            )

    def __call__(
        self,
        model: Callable,
        diffusion: Diffusion,
        x0: torch.Tensor,
        generator: torch.Generator | None = None,
        t: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        from workbench.likelihood import bound_term, prior_bpd

        t, weights, noise, x_t = self.draw(diffusion, x0, generator, t, noise)
        term = bound_term(diffusion, model(x_t, t), x0, x_t, t, self.levels)
        if self.importance_sampling:
            self._check_history(diffusion.num_timesteps)
            if self._history is None:
                self._history = LossHistory.empty(diffusion.num_timesteps)
            seen_t, seen_term = t, term.detach()
            if self._gather is not None:  # under DDP: the global batch, as one process sees it
                seen_t, seen_term = self._gather(seen_t), self._gather(seen_term)
            self._history.record(seen_t.cpu(), seen_term.to("cpu", dtype=self._history.values.dtype))
        return prior_bpd(diffusion, x0) + weights * diffusion.num_timesteps * term

    def state_dict(self) -> dict[str, Any]:
        if self._history is None:
            return {}
        return {"loss_history": self._history.values.clone(), "loss_counts": self._history.counts.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        import torch

        if not state:
            self._history = None
            return
        if set(state) != {"loss_history", "loss_counts"}:
            raise ValueError(f"loss 'vlb' expects a state with loss_history and loss_counts, not {sorted(state)}")
        values = state["loss_history"].to("cpu", torch.float64).clone()
        counts = state["loss_counts"].to("cpu", torch.long).clone()
        self._history = LossHistory(values, counts)


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

    def __call__(
        self,
        model: Callable,
        diffusion: Diffusion,
        x0: torch.Tensor,
        generator: torch.Generator | None = None,
        t: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        import torch

        from workbench.likelihood import bound_term

        t, weights, noise, x_t = self.draw(diffusion, x0, generator, t, noise)
        output = model(x_t, t)
        prediction, var_values = diffusion.split_output(output)
        if var_values is None:
            raise ConfigError(f"loss '{self.name}' needs diffusion.variance = 'learned_range'")
        # The mean is detached in the bound term: L_simple alone trains it (improved DDPM sec. 3.1).
        frozen_mean = torch.cat([prediction.detach(), var_values], dim=1)
        vlb = diffusion.num_timesteps * bound_term(diffusion, frozen_mean, x0, x_t, t, self.levels)
        return weights * (self.simple_loss(diffusion, prediction, x0, noise, t) + self.vlb_weight * vlb)


@hookimpl
def register_losses(register):
    for cls in (MSE, VLB, Hybrid):
        register(cls)
