"""The trainer: model, EMA of its weights, optimizer, timestep sampler and generator of one run.

`Trainer.step(batches)` is one optimizer step, the whole of what training
does to the numbers (Ho et al. 2020, Algorithm 1, with AdamW, warm-up,
gradient clipping, accumulation and an EMA of the weights);
`state_dict()` / `load_state_dict()` are everything a checkpoint needs to
continue it bit for bit. The loop around it is workbench.training.

Reproducibility: t, the noise and the batch indices of an in-memory set come
from one seeded generator (the "training" stream), dropout from torch's
global RNG, a streamed set's order from the seed and the step
(workbench.batches). Under DistributedDataParallel every rank draws the
global batch's t and noise and keeps its own shard, so the numbers do not
depend on the number of processes.
"""

from __future__ import annotations

import copy
from contextlib import nullcontext
from typing import Any, Callable, Iterator

import torch
from torch.nn.parallel import DistributedDataParallel

from workbench import batches, distributed, streams
from workbench.guidance import WithLabels, drop_labels
from workbench.pipeline import Pipeline
from workbench.timesteps import timestep_sampler


class Trainer:
    """Holds what one run trains; `step()` takes one optimizer step."""

    def __init__(
        self,
        pipeline: Pipeline,
        context: distributed.Context = distributed.SINGLE,
        note: Callable[[str], None] = lambda message: None,
        fused: bool = True,
    ) -> None:
        exp, spec = pipeline.exp, pipeline.exp.train
        distributed.check_batch(spec.batch_size, spec.accumulate, context, exp.name)
        self.exp, self.pipeline, self.context, self.device = exp, pipeline, context, pipeline.device
        self.model, self.diffusion, self.loss = pipeline.model, pipeline.diffusion, pipeline.loss
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.parameters = sum(p.numel() for p in self.model.parameters())
        self.optimizer = adamw(self.model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay, fused=fused)
        self.generator = streams.generator(exp.seed, "training", self.device)
        gather = (lambda x: distributed.all_gather(x, context)) if context.world_size > 1 else None
        self.timesteps = timestep_sampler(self.loss, self.diffusion.num_timesteps, gather)
        # DDP averages the gradients over ranks; compile goes outside it (PyTorch's recommended order).
        self.ddp = DistributedDataParallel(self.model) if context.world_size > 1 else None
        network = self.ddp or self.model
        self.forward = torch.compile(network) if spec.compile else network
        self.autocast = spec.precision == "bf16" and fast_bf16(self.device)
        if spec.precision == "bf16" and not self.autocast:
            note(f"this {self.device.type} has no fast bf16 (CUDA, or a CPU with AVX512-BF16 / AMX); training in fp32")
        self.choices: Any = None  # the engine choices it runs with (workbench.machine), set by training.prepare
        self.steps_done = 0
        self.wall_time = 0.0
        self.losses: list[float] = []  # the logged losses, one per logging step

    def batches(self, train_data: Any) -> Iterator[torch.Tensor]:
        """Endless shards, this rank's, of the global micro-batches (see workbench.batches)."""
        size = self.exp.train.batch_size // self.exp.train.accumulate
        if isinstance(train_data, torch.Tensor):
            return batches.in_memory(train_data, size, self.generator, self.context, self.pipeline.train_labels)
        start = self.steps_done * self.exp.train.accumulate  # the global batches already trained on
        return batches.streamed(train_data, size, self.exp.seed, start, self.context, self.device)

    def learning_rate(self, step: int) -> float:
        """Linear warm-up to the peak rate over `train.warmup` steps, then constant."""
        warmup = self.exp.train.warmup
        return self.exp.train.lr * min(1.0, (step + 1) / warmup) if warmup else self.exp.train.lr

    def step(self, source: Iterator[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step over `accumulate` micro-batches.

        Returns the mean loss (a device scalar) and the loss summed and counted
        per quarter of the timesteps [2, 4], without a host sync.
        """
        spec = self.exp.train
        T = self.diffusion.num_timesteps
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(self.steps_done)
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        by_quarter = torch.zeros(2, 4, device=self.device)
        for micro in range(spec.accumulate):
            # This rank's shard of the global micro-batch, then t and noise for the whole
            # global micro-batch and this rank's shard of each.
            x0, y = self.unpack(next(source))
            size = len(x0) * self.context.world_size
            t, weights = self.timesteps.sample(size, self.device, self.generator)
            noise = torch.randn((size, *x0.shape[1:]), generator=self.generator, dtype=x0.dtype, device=self.device)
            t, weights, noise = (distributed.shard(v, self.context) for v in (t, weights, noise))
            model = self.forward if y is None else WithLabels(self.forward, self.drop_labels(y, size))
            last = micro == spec.accumulate - 1
            with self.ddp.no_sync() if self.ddp is not None and not last else nullcontext():
                with torch.autocast(self.device.type, dtype=torch.bfloat16) if self.autocast else nullcontext():
                    terms = self.loss.terms(model, self.diffusion, x0, t, noise, weights.to(x0.dtype))
                loss = terms.loss.mean()
                (loss / spec.accumulate).backward()
            self.timesteps.update(t, terms.bound)
            total += loss.detach().float() / spec.accumulate
            quarter = t * 4 // T
            by_quarter[0].index_add_(0, quarter, terms.loss.detach().float())
            by_quarter[1].index_add_(0, quarter, torch.ones_like(quarter, dtype=torch.float))
        if spec.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), spec.grad_clip)
        self.optimizer.step()
        self.update_ema()
        self.steps_done += 1
        return total, by_quarter

    @staticmethod
    def unpack(batch: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(x0, labels) of a conditional run's batch; (x0, None) of an unconditional one's."""
        return (batch[0], batch[1]) if isinstance(batch, tuple) else (batch, None)

    def drop_labels(self, y: torch.Tensor, size: int) -> torch.Tensor:
        """This rank's labels, each replaced by "no label" with probability condition.dropout.

        The coin flips are drawn for the whole global micro-batch of `size` from the
        training generator, after t and noise, and sharded like them, so the result
        does not depend on the number of processes. No draw at all with dropout 0.
        """
        p = self.exp.condition.dropout
        if p == 0:
            return y
        drop = torch.rand(size, generator=self.generator, device=self.device) < p
        return drop_labels(y, distributed.shard(drop, self.context), self.pipeline.num_classes)

    @torch.no_grad()
    def update_ema(self) -> None:
        """ema <- d * ema + (1 - d) * weights, with d warmed up as min(ema, (1 + n) / (10 + n))
        so that short runs are not dominated by the random initialisation."""
        decay = min(self.exp.train.ema, (1 + self.steps_done) / (10 + self.steps_done))
        torch._foreach_lerp_(list(self.ema.parameters()), list(self.model.parameters()), 1.0 - decay)
        for ema_buffer, buffer in zip(self.ema.buffers(), self.model.buffers()):
            ema_buffer.copy_(buffer)

    def state_dict(self) -> dict[str, Any]:
        """Everything a checkpoint holds: weights, EMA, optimizer, step, every RNG state, the timestep sampler."""
        return {
            "step": self.steps_done,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "timesteps": self.timesteps.state_dict(),
            "wall_time": self.wall_time,
            "losses": self.losses,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state_dict()`'s output (checkpoints from before the timestep sampler say "loss_state")."""
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.timesteps.load_state_dict(state["timesteps"] if "timesteps" in state else state["loss_state"])
        self.steps_done, self.wall_time, self.losses = state["step"], state["wall_time"], list(state["losses"])


def adamw(params: Any, lr: float, weight_decay: float = 0.0, fused: bool = True) -> torch.optim.AdamW:
    """AdamW (Loshchilov & Hutter 2019), with torch's fused kernel where asked and this torch has one for the device.

    The fused kernel updates every parameter in one pass instead of a dozen
    elementwise passes over the foreach lists; the update it computes is the
    same. Which is faster depends on the machine (workbench.machine measures it).
    """
    params = list(params)
    if fused:
        try:
            return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
        except (RuntimeError, TypeError):  # no fused kernel for this device or torch
            pass
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast speeds training up on `device`: a CUDA GPU with bf16, or a CPU with
    AVX512-BF16 or AMX (elsewhere bf16 is emulated and slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return False
