"""Shared pytest set-up for the unit tests and the doctests in the package."""

import pytest
import torch

# Times each lesson and samples its kernel's memory while nbval runs it (tests/notebook_budget.py).
pytest_plugins = ["tests.notebook_budget"]


@pytest.fixture(autouse=True)
def _check_sparse_invariants():
    # Every sparse tensor a test or doctest builds is validated by torch, which also answers
    # torch's "invariant checks are implicitly disabled" warning by opting in explicitly.
    with torch.sparse.check_sparse_tensor_invariants():
        yield


@pytest.fixture(autouse=True)
def _doctest_torch(doctest_namespace):
    doctest_namespace["torch"] = torch
