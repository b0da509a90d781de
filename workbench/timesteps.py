"""Which steps t a training batch is noised to: uniform, or importance-sampled from the bound's history.

The trainer owns one of these, as improved-diffusion's trainer owns a
`ScheduleSampler` (resample.py): it draws t for the global batch, hands the
loss the weights that keep the objective unbiased, and after the loss is
computed records what the loss reports.

- `UniformTimesteps`: t ~ U{0, ..., T-1}, every weight 1 (Ho et al. 2020).
- `ImportanceTimesteps`: p_t proportional to sqrt(E[L_t^2]) over the last
  HISTORY values of the bound's term L_t at each t, mixed with UNIFORM_PROB of
  uniform, and weights 1 / (T p_t); uniform until every t has HISTORY values
  (Nichol & Dhariwal 2021, sec. 3.3; improved-diffusion's
  LossSecondMomentResampler). The history is part of the checkpoint, so a
  resumed run draws what an uninterrupted one would.

Under DistributedDataParallel each rank sees only its shard of the batch;
`gather` (the ranks' values concatenated in rank order) lets every rank
record the global batch and so keep the state one process would.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from workbench.components import Loss

HISTORY = 10
"""Losses remembered per step for importance sampling (improved DDPM)."""
UNIFORM_PROB = 0.001
"""Share of uniform probability mixed into the importance-sampling distribution."""


class UniformTimesteps:
    """t uniform over the T steps; all weights 1."""

    def __init__(self, num_timesteps: int) -> None:
        self.num_timesteps = num_timesteps

    def sample(self, n: int, device: torch.device, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """n steps and their weights 1 / (T p(t)) (float64 [n])."""
        t = torch.randint(0, self.num_timesteps, (n,), generator=generator, device=device)
        return t, torch.ones(n, dtype=torch.float64, device=device)

    def update(self, t: torch.Tensor, bound: torch.Tensor | None) -> None:
        """Learn from the loss's bound terms at steps t (uniform sampling learns nothing)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"uniform timestep sampling keeps no state, but was given one with keys {sorted(state)}")


class ImportanceTimesteps(UniformTimesteps):
    """p_t ~ sqrt(E[L_t^2]) from the last HISTORY bound terms per step (improved DDPM, sec. 3.3)."""

    def __init__(self, num_timesteps: int, gather: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        super().__init__(num_timesteps)
        self.gather = gather
        self.values = torch.zeros(num_timesteps, HISTORY, dtype=torch.float64)  # CPU
        self.counts = torch.zeros(num_timesteps, dtype=torch.long)  # how many of each row are filled
        self.started = False  # a checkpoint of a run that never recorded stays empty

    def probabilities(self) -> torch.Tensor | None:
        """p_t mixed with UNIFORM_PROB of uniform, float64 [T]; None until every t has HISTORY values."""
        if bool((self.counts < HISTORY).any()):
            return None
        rms = self.values.pow(2).mean(dim=1).sqrt()
        if not bool(rms.sum() > 0):
            return None
        return rms / rms.sum() * (1 - UNIFORM_PROB) + UNIFORM_PROB / self.num_timesteps

    def sample(self, n: int, device: torch.device, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.probabilities()
        if p is None:
            return super().sample(n, device, generator)
        p = p.to(device)
        t = torch.multinomial(p, n, replacement=True, generator=generator)
        return t, 1.0 / (self.num_timesteps * p[t].to(torch.float64))

    def update(self, t: torch.Tensor, bound: torch.Tensor | None) -> None:
        """Append each (t, L_t) in batch order (the global batch's under DDP), dropping a full row's oldest."""
        if bound is None:
            raise ValueError("importance sampling of t learns from the loss's bound terms, but the loss reported none")
        bound = bound.detach()
        if self.gather is not None:
            t, bound = self.gather(t), self.gather(bound)
        self.started = True
        values, counts = self.values.numpy(), self.counts.numpy()
        for step, loss in zip(t.cpu().tolist(), bound.to("cpu", torch.float64).tolist()):
            if counts[step] == HISTORY:
                values[step, :-1] = values[step, 1:]
                values[step, -1] = loss
            else:
                values[step, counts[step]] = loss
                counts[step] += 1

    def state_dict(self) -> dict[str, Any]:
        if not self.started:
            return {}
        return {"loss_history": self.values.clone(), "loss_counts": self.counts.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            self.values.zero_()
            self.counts.zero_()
            self.started = False
            return
        if set(state) != {"loss_history", "loss_counts"}:
            raise ValueError(f"importance sampling of t expects a state with loss_history and loss_counts, not {sorted(state)}")
        values = state["loss_history"].to("cpu", torch.float64)
        if tuple(values.shape) != (self.num_timesteps, HISTORY):
            raise ValueError(
                f"the importance-sampling history has shape {tuple(values.shape)}, "
                f"but T = {self.num_timesteps} steps need ({self.num_timesteps}, {HISTORY})"
            )
        self.values = values.clone()
        self.counts = state["loss_counts"].to("cpu", torch.long).clone()
        self.started = True


def timestep_sampler(
    loss: Loss, num_timesteps: int, gather: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> UniformTimesteps:
    """The timestep sampler that `loss` asks for (its `timestep_sampling`)."""
    if loss.timestep_sampling == "importance":
        return ImportanceTimesteps(num_timesteps, gather)
    return UniformTimesteps(num_timesteps)
