"""Training on several processes with PyTorch's own distributed engine.

`wb run EXP --nproc N` hands the same command to torch's elastic launcher
(the machinery behind `torchrun`), which starts N workers with RANK,
WORLD_SIZE and a rendezvous in their environment. Each worker joins the
process group (NCCL on CUDA, gloo on CPU) and trains the same model wrapped
in DistributedDataParallel.

Every rank draws the *global* batch indices, timesteps and noise from the
same seeded generator and keeps its own contiguous shard, so a run's
numbers do not depend on N; DDP averages the gradients, which makes the
update that of the global batch. Only rank 0 writes the run directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from workbench.errors import ConfigError


@dataclass(frozen=True)
class Context:
    """This process's place in the group."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Context(rank=0, world_size=1, local_rank=0)


def launched() -> bool:
    """True inside a worker started by torchrun / the elastic launcher with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def under_launcher() -> bool:
    """True in a worker that torch's elastic launcher started (`wb run --nproc`, torchrun)."""
    return "TORCHELASTIC_RUN_ID" in os.environ


def init(device: torch.device) -> tuple[Context, torch.device]:
    """Join the process group if this is a launched worker; (context, this rank's device)."""
    if not launched():
        return SINGLE, device
    context = Context(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        device = torch.device("cuda", context.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return context, device


def shard(x: torch.Tensor, context: Context) -> torch.Tensor:
    """This rank's contiguous slice of a global batch (the batch size is a multiple of the world size)."""
    if context.world_size == 1:
        return x
    size = len(x) // context.world_size
    return x[context.rank * size : (context.rank + 1) * size]


def all_sum(x: torch.Tensor, context: Context) -> torch.Tensor:
    """Sum a tensor over all ranks (in place, and returned)."""
    if context.world_size > 1:
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def all_gather(x: torch.Tensor, context: Context) -> torch.Tensor:
    """Every rank's `x` (of one shape on all ranks) concatenated in rank order: the global batch
    when each rank holds its shard."""
    if context.world_size == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(context.world_size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def any_rank(flag: bool, context: Context, device: torch.device) -> bool:
    """True on every rank when `flag` is true on any (e.g. one rank received Ctrl-C)."""
    if context.world_size == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    return bool(all_sum(value, context).item() > 0)


def broadcast(obj: Any, context: Context) -> Any:
    """Rank 0's `obj` on every rank (e.g. the run directory it created)."""
    if context.world_size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(context: Context) -> None:
    if context.world_size > 1:
        dist.barrier()


def finish(context: Context) -> None:
    """Leave the process group."""
    if context.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def check_batch(batch_size: int, accumulate: int, context: Context, experiment: str) -> None:
    """The global batch must split evenly into micro-batches and ranks."""
    parts = accumulate * context.world_size
    if batch_size % parts:
        raise ConfigError(
            f"experiment '{experiment}': train.batch_size ({batch_size}) must be divisible by "
            f"train.accumulate x processes ({accumulate} x {context.world_size} = {parts})",
        )


def check_devices(device: torch.device, nproc: int) -> None:
    """On CUDA each worker of a node takes its own GPU (NCCL cannot share one between ranks)."""
    if device.type != "cuda":
        return
    count = torch.cuda.device_count()
    if nproc > count:
        raise ConfigError(
            f"--nproc {nproc} on CUDA needs {nproc} GPUs on this node, and it has {count}",
            hint=f"use --nproc {count} (one process per GPU), or --device cpu",
        )


def launch(argv: list[str], nproc: int, nnodes: int = 1, node_rank: int = 0, rdzv_endpoint: str | None = None) -> int:
    """Run `python -m workbench ARGV` on `nproc` workers per node through torch's elastic launcher.

    Returns the exit code, without the launcher's traceback: the workers have
    already said what went wrong (rank 0 alone, for what every rank meets at
    once: Ctrl-C, a NaN loss). 0 when all succeed; else the exit code of the
    first worker that failed (128 + N if signal N killed it), or 128 + N when
    the launcher itself got signal N and passed it on to the workers.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    launcher = [f"--nproc-per-node={nproc}", f"--nnodes={nnodes}", f"--node-rank={node_rank}"]
    if rdzv_endpoint:
        launcher += ["--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}"]
    elif nnodes == 1:
        launcher += ["--standalone"]
    else:
        raise ConfigError("--nnodes > 1 needs --rdzv-endpoint HOST:PORT (the same on every node)")
    try:
        run(parse_args([*launcher, "--module", "workbench", *argv]))
    except SignalException as exc:  # Ctrl-C reached the launcher too; the workers were told to stop
        return 128 + int(exc.sigval)
    except ChildFailedError as exc:
        _, failure = exc.get_first_failure()
        return failure.exitcode if failure.exitcode > 0 else 128 - failure.exitcode
    return 0
