"""Fixtures shared by every test package."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    """Tiny tensors: torch's intra-op threads only add spinning on a busy 2-core CI
    machine (training tests ran 5x faster with one thread)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
