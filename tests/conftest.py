"""Test-suite set-up: the hypothesis profile (see ``testing.py``) and the shared fixtures."""

from collections.abc import Callable, Iterator

import pytest
import torch
from testing import load_hypothesis_profile

import sparsegrad_lab.memory_guard as memory_guard

load_hypothesis_profile()


@pytest.fixture(scope="module")
def torch_single_thread() -> Iterator[None]:
    """Run a module's tests with one intra-op thread, then restore the previous count.

    The unit tests multiply matrices of a few dozen entries, where extra threads buy nothing;
    on a busy two-core machine OpenMP's spin-waiting made them over ten times slower.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_memory(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """Call it with ``limit``: the memory guard then sees only ``limit`` bytes available and
    checks even the sizes it would otherwise wave through as negligible."""

    def set_limit(limit: int) -> None:
        monkeypatch.setattr(memory_guard, "NEGLIGIBLE_BYTES", 0)
        monkeypatch.setattr(memory_guard, "available_bytes", lambda device: limit)

    return set_limit
