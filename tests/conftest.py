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


@pytest.fixture
def png_folder(tmp_path):
    """tmp_path/images: 40 distinct 8x8 RGB PNGs (the `shapes` dataset's images), a set to stream."""
    from PIL import Image

    from workbench.plugins.data.images import draw_shapes

    folder = tmp_path / "images"
    folder.mkdir()
    images, _ = draw_shapes(40, 8, torch.Generator().manual_seed(0))
    for i, image in enumerate(images.permute(0, 2, 3, 1).numpy()):
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    return folder


def pytest_configure(config):
    """Runs in tests use one torch thread (fast and steady on 2 shared cores) and a cache of their own, not ~/.cache.

    Tests of the thread probe itself unset WB_THREADS.
    """
    import os
    import tempfile

    os.environ.setdefault("WB_THREADS", "1")
    os.environ.setdefault("WB_CACHE_DIR", tempfile.mkdtemp(prefix="wb-test-cache-"))
