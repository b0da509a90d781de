"""Named random streams: every draw of a run comes from a generator seeded by (seed, stream).

A run's randomness is split by purpose, so that one part can change (a
metric added, a picture drawn) without moving the numbers of another:

    training    t, noise and the batch indices of an in-memory set (the trainer's generator)
    holdout     the permutation that keeps eval.holdout of the data out of training
    forward     the noise of the forward-process picture
    samples     the samples that sample-quality metrics score and samples.png shows
    nll         the noise of the bound's Monte-Carlo terms
    directions  the random projections of the sliced Wasserstein distance
    trajectory  the reverse-process picture
    preview     the preview grids drawn during training (the same noise every time)

The offsets are the ones runs have always used, so a run repeats bit for bit
across versions. A stream not in the table (a third party's metric, say)
gets a stable offset from its name.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

STREAMS: dict[str, int] = {
    "training": 0,
    "holdout": 0,
    "forward": 0,
    "samples": 0,
    "nll": 1,
    "directions": 2,
    "trajectory": 777,
    "preview": 12345,
}


def stream_seed(seed: int, stream: str) -> int:
    """The seed of `stream` in a run seeded with `seed`."""
    offset = STREAMS.get(stream)
    if offset is None:
        offset = zlib.crc32(stream.encode()) % 2**31
    return seed + offset


def generator(seed: int, stream: str, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh torch.Generator on `device` for `stream` of a run seeded with `seed`."""
    import torch

    return torch.Generator(device=device).manual_seed(stream_seed(seed, stream))
