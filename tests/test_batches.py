"""Training batches: epochs of a streamed set, resuming mid-epoch, and ranks' shards of the global batch."""

from __future__ import annotations

from itertools import islice

import pytest
import torch

from workbench import batches, distributed
from workbench.errors import ConfigError


def rank(r: int, world: int) -> distributed.Context:
    return distributed.Context(rank=r, world_size=world, local_rank=r)


def take(sampler, k: int) -> list[list[int]]:
    return list(islice(iter(sampler), k))


def test_each_epoch_reads_distinct_examples_and_drops_the_incomplete_batch():
    epochs = take(batches.EpochBatches(n=10, size=3, seed=5, start=0, context=distributed.SINGLE), 6)
    first, second = sum(epochs[:3], []), sum(epochs[3:], [])
    assert all(len(batch) == 3 for batch in epochs)
    assert len(set(first)) == len(set(second)) == 9 and set(first) <= set(range(10))
    assert first != second  # a new permutation every epoch
    assert first == torch.randperm(10, generator=torch.Generator().manual_seed(5))[:9].tolist()


def test_a_later_start_reads_what_an_uninterrupted_run_reads_from_there():
    straight = take(batches.EpochBatches(n=10, size=3, seed=5, start=0, context=distributed.SINGLE), 8)
    resumed = take(batches.EpochBatches(n=10, size=3, seed=5, start=4, context=distributed.SINGLE), 4)
    assert resumed == straight[4:]


def test_the_ranks_shards_make_up_the_global_batch():
    single = take(batches.EpochBatches(n=20, size=4, seed=1, start=2, context=distributed.SINGLE), 5)
    shards = [take(batches.EpochBatches(n=20, size=4, seed=1, start=2, context=rank(r, 2)), 5) for r in range(2)]
    assert [a + b for a, b in zip(*shards)] == single

    data = torch.arange(50.0)[:, None]
    one = next(batches.in_memory(data, 6, torch.Generator().manual_seed(3), distributed.SINGLE))
    parts = [next(batches.in_memory(data, 6, torch.Generator().manual_seed(3), rank(r, 3))) for r in range(3)]
    assert torch.equal(torch.cat(parts), one) and len(parts[0]) == 2


def test_streamed_batches_are_the_dataset_items_of_the_sampled_indices():
    """Datasets may return (data, label) pairs; the training batch is the data, in the sampler's order."""
    x = torch.randn(12, 2)
    dataset = torch.utils.data.TensorDataset(x, torch.arange(12))
    indices = take(batches.EpochBatches(n=12, size=4, seed=0, start=1, context=rank(1, 2)), 4)
    streamed = list(islice(batches.streamed(dataset, 4, 0, 1, rank(1, 2), torch.device("cpu")), 4))
    for batch, index in zip(streamed, indices):
        assert torch.equal(batch, x[index])


def test_a_streamed_set_smaller_than_a_micro_batch_is_a_clear_error():
    with pytest.raises(ConfigError, match="streams 5 examples, fewer than one micro-batch of 8") as excinfo:
        batches.EpochBatches(n=5, size=8, seed=0, start=0, context=distributed.SINGLE)
    assert "train.batch_size" in excinfo.value.hint
