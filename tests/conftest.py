"""Shared fixtures: a fresh registry per test, loaded from the installed entry points."""

from __future__ import annotations

import pytest
import torch

from workbench.registry import Registry


@pytest.fixture
def registry() -> Registry:
    """The installed plugins (built-ins and any third party), loaded afresh."""
    return Registry.load()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors run fastest on one thread, and do not fight other test processes for the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
