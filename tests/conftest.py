"""Shared fixtures: a fresh registry per test, loaded from the installed entry points."""

from __future__ import annotations

import pytest

from workbench.registry import Registry


@pytest.fixture
def registry() -> Registry:
    """The installed plugins (built-ins and any third party), loaded afresh."""
    return Registry.load()
