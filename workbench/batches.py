"""Where training batches come from: the global batch's indices, and this rank's shard of them.

Every rank draws the indices of the same *global* micro-batch and reads only
its own contiguous shard of it (`distributed.shard`), so a run's numbers do
not depend on the number of processes and no rank reads what another one
trains on. There are two kinds of training set:

- An in-memory tensor. Indices are drawn uniformly, with replacement, from
  the trainer's generator, the same one that draws t and noise, so the one
  generator state in a checkpoint resumes all three.
- A torch Dataset that streams (a large image folder, say). It is read in
  epochs of a seeded permutation, without replacement, by DataLoader worker
  processes. Global batch b of a run is a function of the seed and b alone,
  so a resumed run, with the same or another number of processes, reads
  exactly what an uninterrupted one would have.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch

from workbench import distributed
from workbench.errors import ConfigError


def in_memory(
    data: torch.Tensor,
    size: int,
    generator: torch.Generator,
    context: distributed.Context,
    labels: torch.Tensor | None = None,
) -> Iterator[torch.Tensor] | Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless shards of global batches of `size` examples drawn uniformly from `data`;
    (examples, their labels) pairs when `labels` [N] are given (the same draws either way)."""
    while True:
        index = distributed.shard(torch.randint(len(data), (size,), device=data.device, generator=generator), context)
        yield data[index] if labels is None else (data[index], labels[index])


def check_epoch(n: int, size: int) -> None:
    """A streamed set must hold at least one global micro-batch of `size` examples."""
    if n < size:
        raise ConfigError(
            f"the training set streams {n} examples, fewer than one micro-batch of {size}",
            hint="lower train.batch_size (or raise train.accumulate), or lower eval.holdout",
        )


class EpochBatches(torch.utils.data.Sampler):
    """This rank's indices of global batches `start`, `start` + 1, ... of a shuffled dataset.

    Epoch e is the permutation `randperm(n)` drawn from a generator seeded with
    seed + e (torch's DistributedSampler seeds its epochs the same way). The
    last incomplete batch of an epoch is dropped, so each epoch has
    n // size batches and batch b is batch b % (n // size) of epoch b // (n // size).
    """

    def __init__(self, n: int, size: int, seed: int, start: int, context: distributed.Context) -> None:
        check_epoch(n, size)
        self.n, self.size, self.seed, self.start, self.context = n, size, seed, start, context

    def __iter__(self) -> Iterator[list[int]]:
        per_epoch = self.n // self.size
        epoch, position = divmod(self.start, per_epoch)
        while True:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + epoch))
            for k in range(position, per_epoch):
                yield distributed.shard(order[k * self.size : (k + 1) * self.size], self.context).tolist()
            epoch, position = epoch + 1, 0


def streamed(
    dataset: torch.utils.data.Dataset,
    size: int,
    seed: int,
    start: int,
    context: distributed.Context,
    device: torch.device,
) -> Iterator[torch.Tensor]:
    """Endless shards of global batches `start`, `start` + 1, ... of `dataset`, read by DataLoader workers."""
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=EpochBatches(len(dataset), size, seed, start, context),
        num_workers=min(4, torch.get_num_threads()),
        pin_memory=device.type == "cuda",
        # Its own generator for the workers' seeds: otherwise each new loader draws them from the
        # global RNG, which dropout uses, and a resumed run would drop out other units.
        generator=torch.Generator().manual_seed(seed),
    )
    for batch in loader:
        yield example_tensor(batch).to(device, non_blocking=True)


def select(data: Any, index: torch.Tensor) -> Any:
    """The examples at `index` of a tensor (a tensor), or of a torch Dataset (a Subset, read lazily)."""
    if isinstance(data, torch.Tensor):
        return data[index]
    return torch.utils.data.Subset(data, index.tolist())


def first_examples(data: Any, n: int) -> torch.Tensor:
    """The first n examples of a tensor or a torch Dataset, as one tensor."""
    if isinstance(data, torch.Tensor):
        return data[:n]
    return torch.stack([example_tensor(data[i]) for i in range(max(1, min(len(data), n)))])


def example_tensor(item: Any) -> torch.Tensor:
    """A dataset item's data tensor (datasets may return (data, label) pairs)."""
    return item[0] if isinstance(item, (tuple, list)) else item
