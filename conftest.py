"""Shared pytest set-up for the unit tests and the doctests in the package."""

import os

# ``make test`` runs the suite in two pytest-xdist workers, one per core of a 2-core machine.
# Each worker, and every kernel, server or child it starts (they inherit this environment),
# then uses one thread: two processes with a pool of two threads each on two cores spin
# against each other (OpenMP's busy-waiting), which measured several times slower than
# running the suite in one process.
if "PYTEST_XDIST_WORKER" in os.environ:  # before torch's import: its pools start at one thread
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"

import pytest
import torch

if "PYTEST_XDIST_WORKER" in os.environ:
    torch.set_num_threads(1)

# Times each lesson and samples its kernel's memory while nbval runs it
# (tests/support/notebook_budget.py).
pytest_plugins = ["tests.support.notebook_budget"]


@pytest.fixture(autouse=True)
def _check_sparse_invariants():
    # Every sparse tensor a test or doctest builds is validated by torch, which also answers
    # torch's "invariant checks are implicitly disabled" warning by opting in explicitly.
    with torch.sparse.check_sparse_tensor_invariants():
        yield


@pytest.fixture(autouse=True)
def _doctest_torch(doctest_namespace):
    doctest_namespace["torch"] = torch
