"""Named random streams: stable seeds per purpose, independent generators."""

from __future__ import annotations

import torch

from workbench.streams import STREAMS, generator, stream_seed


def test_each_stream_has_its_seed_and_unknown_names_a_stable_one():
    assert stream_seed(5, "nll") == 5 + STREAMS["nll"]
    assert stream_seed(5, "preview") != stream_seed(5, "trajectory")
    assert stream_seed(0, "my_metric") == stream_seed(0, "my_metric") != stream_seed(0, "other_metric")


def test_generators_of_one_stream_repeat_and_of_two_streams_differ():
    a, b = generator(3, "nll"), generator(3, "nll")
    assert torch.equal(torch.randn(5, generator=a), torch.randn(5, generator=b))
    assert not torch.equal(torch.randn(5, generator=generator(3, "nll")), torch.randn(5, generator=generator(3, "directions")))
