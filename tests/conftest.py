"""Test-suite set-up: the hypothesis profile (see ``testing.py``) and a one-thread fixture."""

from collections.abc import Iterator

import pytest
import torch
from testing import load_hypothesis_profile

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
