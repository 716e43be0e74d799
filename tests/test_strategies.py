"""Tests of the backward strategies' names (:mod:`sparsegrad_lab.strategies`).

One home for the names: the ``BackwardStrategy`` type and the ``BACKWARD_STRATEGIES`` tuple
name the same three, in the order the lessons and tables list them; the public operations
take each of them and nothing else, and each name reaches a computation of its own.
"""

from __future__ import annotations

import inspect
import typing

import pytest
import torch

import sparsegrad_lab
from sparsegrad_lab import InputValueError, sampled_mm, sparse_mm
from sparsegrad_lab.sddmm import sampled_product_workspace_bytes
from sparsegrad_lab.strategies import BACKWARD_STRATEGIES, BackwardStrategy

# Tiny tensors: one intra-op thread (see tests/conftest.py).
pytestmark = pytest.mark.usefixtures("torch_single_thread")

#: Not names of a strategy: a near miss of each kind, and values of other types.
NOT_STRATEGIES = ["SDDMM", "sddmm ", "", "fast", "sparse", "dense_then_mask", None, 0, b"sddmm"]


def test_the_type_and_the_tuple_name_the_same_strategies_in_order() -> None:
    assert typing.get_origin(BackwardStrategy) is typing.Literal
    assert typing.get_args(BackwardStrategy) == ("sddmm", "gather", "dense")
    assert BACKWARD_STRATEGIES == ("sddmm", "gather", "dense")
    # The package exports these objects, not copies that could drift.
    assert sparsegrad_lab.BACKWARD_STRATEGIES is BACKWARD_STRATEGIES
    assert sparsegrad_lab.BackwardStrategy is BackwardStrategy


def test_sparse_mm_defaults_to_the_first_strategy() -> None:
    default = inspect.signature(sparse_mm).parameters["backward"].default
    assert default == BACKWARD_STRATEGIES[0]
    assert inspect.signature(sampled_mm).parameters["backward"].default == default


@pytest.mark.parametrize("strategy", BACKWARD_STRATEGIES)
def test_every_name_is_accepted_and_gives_the_same_exact_numbers(strategy: str) -> None:
    # Small integers: every product and sum is exact, so each strategy must give these.
    A = torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, 3.0]]).to_sparse().requires_grad_()
    B = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]], requires_grad=True)
    C = sparse_mm(A, B, backward=strategy)  # type: ignore[arg-type]
    C.backward(torch.ones_like(C))
    assert A.grad is not None  # ∇A = 1 Bᵀ at (0, 1), (1, 0), (1, 2): row sums of B
    assert torch.equal(A.grad.to_dense(), torch.tensor([[0.0, 5.0, 0.0], [1.0, 0.0, 9.0]]))
    X = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    S = sampled_mm(A.detach(), X, B.detach().T, backward=strategy)  # type: ignore[arg-type]
    # X Bᵀ at A's positions: (0, 1) = [1, 2]·[2, 3], (1, 0) = [3, 4]·[0, 1], (1, 2) = [3, 4]·[4, 5]
    assert torch.equal(S.detach().coalesce().values(), torch.tensor([8.0, 4.0, 32.0]))


@pytest.mark.parametrize("bad", NOT_STRATEGIES, ids=repr)
def test_nothing_else_is_accepted(bad: object) -> None:
    A, B = torch.eye(2).to_sparse(), torch.ones(2, 2)
    message = rf"backward must be one of \('sddmm', 'gather', 'dense'\), got {bad!r}"
    with pytest.raises(InputValueError, match=f"^sparse_mm: {message}"):
        sparse_mm(A, B, backward=bad)  # type: ignore[arg-type]
    with pytest.raises(InputValueError, match=message):
        sampled_mm(A, B, B, backward=bad)  # type: ignore[arg-type]


def test_each_name_reaches_a_workspace_of_its_own() -> None:
    # A 100 x 100 float32 block with 200 entries, p = 8: sampled_addmm writes straight into
    # its output (0 bytes), gather holds three 200 x 8 blocks, dense the 100 x 100 product
    # and an int64 index per entry.
    sizes = {"batch": 1, "block_shape": (100, 100), "nnz": 200, "p": 8, "dtype": torch.float32}
    workspace = {s: sampled_product_workspace_bytes(s, **sizes) for s in BACKWARD_STRATEGIES}  # type: ignore[arg-type]
    assert workspace == {"sddmm": 0, "gather": 3 * 200 * 8 * 4, "dense": 100 * 100 * 4 + 200 * 8}
