"""Tests of the sparsity pattern: ``pattern_and_values``, ``SparsityPattern``, the transpose."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from testing import (
    DEVICE_PARAMS,
    DTYPES,
    LAYOUT_INDEX,
    LAYOUTS,
    Problem,
    make_generator,
    pattern_mask,
    random_sparse,
    uncoalesced_coo,
)
from testing import problems as problem_strategy
from torch import Tensor

from sparsegrad_lab import sparsity_pattern
from sparsegrad_lab.pattern import SparsityPattern, pattern_and_values, pattern_of

# Tiny tensors: one intra-op thread (see tests/conftest.py).
pytestmark = pytest.mark.usefixtures("torch_single_thread")


def _block_diagonal(A: Tensor) -> Tensor:
    """Dense ``diag(A_1, ..., A_b)`` (or ``A`` itself when 2-D), duplicates summed."""
    dense = A.detach().cpu().to_dense()
    return torch.block_diag(*dense) if dense.dim() == 3 else dense


def _check_pattern(pattern: SparsityPattern, values: Tensor, A: Tensor) -> None:
    """Everything a pattern promises about the ``A`` it came from."""
    b, n, m = A.shape if A.dim() == 3 else (1, *A.shape)
    N, M = b * n, b * m
    assert pattern.batch == b and pattern.block_shape == (n, m) and pattern.shape == (N, M)
    assert pattern.device == A.device and values.device == A.device
    crow, col, row = pattern.crow.cpu(), pattern.col.cpu(), pattern.row.cpu()
    # CSR structure: N + 1 pointers from 0 to nnz, non-decreasing; row is crow expanded.
    assert crow.shape == (N + 1,) and crow[0] == 0 and crow[-1] == pattern.nnz
    assert bool((crow.diff() >= 0).all())
    expanded = torch.repeat_interleave(torch.arange(N), crow.diff().long())
    assert torch.equal(row.long(), expanded)
    assert col.shape == row.shape == values.shape == (pattern.nnz,)
    # CSR order without duplicates: the linear position r M + c strictly increases.
    linear = row.long() * M + col.long()
    assert bool((linear.diff() > 0).all())
    assert bool((col >= 0).all()) and bool((col < M).all())
    # Index dtype: CSR keeps its own (int32 stays int32), COO is int64.
    index_dtype = A.crow_indices().dtype if A.layout == torch.sparse_csr else torch.int64
    assert crow.dtype == col.dtype == row.dtype == index_dtype
    # Exactly A's coalesced pattern, placed block-diagonally, with the values aligned.
    expected_mask = pattern_mask(A)
    expected_mask = torch.block_diag(*expected_mask) if A.dim() == 3 else expected_mask
    got_mask = torch.zeros(N, M, dtype=torch.bool)
    got_mask[row.long(), col.long()] = True
    assert torch.equal(got_mask, expected_mask)
    assert torch.equal(values.detach().cpu(), _block_diagonal(A)[row.long(), col.long()])
    assert torch.equal(pattern.to_csr(values.detach()).cpu().to_dense(), _block_diagonal(A))


@pytest.mark.parametrize("device", DEVICE_PARAMS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("layout", "index_dtype"), LAYOUT_INDEX)
@given(problem=problem_strategy())
def test_pattern_and_values(
    layout: torch.layout,
    index_dtype: torch.dtype,
    dtype: torch.dtype,
    device: torch.device,
    problem: Problem,
) -> None:
    A, _B, _G = problem.build(layout=layout, dtype=dtype, device=device, index_dtype=index_dtype)
    pattern, values = pattern_and_values(A)
    assert values.dtype == dtype
    _check_pattern(pattern, values, A)


def test_hand_worked_batched_pattern() -> None:
    # Item 0 stores (0, 1); item 1 stores (0, 0) and (1, 1). In the 4 x 6 block-diagonal
    # matrix (n = 2, m = 3) they sit at (0, 1), (2, 3) and (3, 4).
    dense = torch.zeros(2, 2, 3)
    dense[0, 0, 1], dense[1, 0, 0], dense[1, 1, 1] = 1.0, 2.0, 3.0
    pattern, values = pattern_and_values(dense.to_sparse())
    assert pattern.row.tolist() == [0, 2, 3]
    assert pattern.col.tolist() == [1, 3, 4]
    assert pattern.crow.tolist() == [0, 1, 1, 2, 3]
    assert values.tolist() == [1.0, 2.0, 3.0]
    assert pattern.shape == (4, 6) and pattern.nnz == 3


@pytest.mark.parametrize("batched", [False, True], ids=["2d", "3d"])
@given(seed=st.integers(0, 2**31 - 1), duplicates=st.integers(1, 6))
def test_uncoalesced_coo_is_summed(batched: bool, seed: int, duplicates: int) -> None:
    shape = (2, 3, 4) if batched else (3, 4)
    indices, values = uncoalesced_coo(
        shape, nnz=5, duplicates=duplicates, generator=make_generator(seed)
    )
    A = torch.sparse_coo_tensor(indices, values, shape)
    assert not A.is_coalesced()
    pattern, merged = pattern_and_values(A)
    assert pattern.nnz == 5 == merged.numel()
    _check_pattern(pattern, merged, A)


@pytest.mark.parametrize(("layout", "index_dtype"), LAYOUT_INDEX)
@pytest.mark.parametrize("batched", [False, True], ids=["2d", "3d"])
def test_values_stay_attached_to_autograd(
    layout: torch.layout, index_dtype: torch.dtype, batched: bool
) -> None:
    shape = (2, 3, 4) if batched else (3, 4)
    A = random_sparse(
        shape, layout=layout, generator=make_generator(1), index_dtype=index_dtype, density=0.5
    ).requires_grad_()
    _pattern, values = pattern_and_values(A)
    assert values.requires_grad
    weights = torch.arange(values.numel(), dtype=values.dtype)
    (values * weights).sum().backward()
    assert A.grad is not None and A.grad.layout == layout
    # The k-th value in CSR order got weight k: the gradient is k at the k-th stored position.
    expected = torch.zeros(_pattern.shape, dtype=torch.float64)
    expected[_pattern.row.long(), _pattern.col.long()] = weights
    assert torch.equal(_block_diagonal(A.grad), expected)


def test_int32_index_promotion_at_the_int32_limit() -> None:
    """Batched int32 CSR whose block-diagonal matrix has 2³¹ rows needs int64 indices."""

    def pattern_for(n: int) -> SparsityPattern:
        crow = torch.empty((2, n + 1), dtype=torch.int32, device="meta")
        col = torch.empty((2, 3), dtype=torch.int32, device="meta")
        values = torch.empty((2, 3), device="meta")
        A = torch.sparse_csr_tensor(crow, col, values, (2, n, 4), check_invariants=False)
        return pattern_and_values(A)[0]

    below = pattern_for(2**30 - 1)  # 2 (2³⁰ - 1) = 2³¹ - 2 rows: int32 still addresses them
    assert below.crow.dtype == below.col.dtype == below.row.dtype == torch.int32
    at = pattern_for(2**30)  # 2³¹ rows
    assert at.crow.dtype == at.col.dtype == at.row.dtype == torch.int64
    assert at.shape == (2**31, 8)


# --------------------------------------------------------------------------------------------
# SparsityPattern.transpose
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128], ids=str)
@pytest.mark.parametrize(("layout", "index_dtype"), LAYOUT_INDEX)
@given(problem=problem_strategy())
def test_transpose(
    layout: torch.layout, index_dtype: torch.dtype, dtype: torch.dtype, problem: Problem
) -> None:
    A, _B, _G = problem.build(layout=layout, dtype=dtype, device="cpu", index_dtype=index_dtype)
    pattern, values = pattern_and_values(A)
    transposed = pattern.transpose
    t = transposed.pattern
    n, m = pattern.block_shape
    assert t.block_shape == (m, n) and t.batch == pattern.batch and t.nnz == pattern.nnz
    # The transpose is internal: its indices are int32 whenever they fit (faster to sort,
    # and what torch's CPU CSR kernel wants), whatever A's index dtype is.
    assert t.crow.dtype == t.col.dtype == t.row.dtype == torch.int32
    # perm is a permutation of the entries.
    perm = transposed.perm
    assert torch.equal(perm.sort().values, torch.arange(pattern.nnz))
    # Entry k of the transpose is entry perm[k] of the pattern, mirrored.
    assert torch.equal(t.row, pattern.col[perm]) and torch.equal(t.col, pattern.row[perm])
    # The transpose is itself a valid CSR pattern, and with values[perm].conj() it is Aᴴ.
    adjoint = t.to_csr(values[perm].conj())
    expected = _block_diagonal(A).mH
    assert torch.equal(adjoint.to_dense(), expected)
    with torch.sparse.check_sparse_tensor_invariants():
        torch.sparse_csr_tensor(t.crow, t.col, values[perm], t.shape, check_invariants=True)
    # Transposing twice gets back where we started.
    back = t.transpose
    assert torch.equal(back.pattern.crow, pattern.crow)
    assert torch.equal(back.pattern.col, pattern.col)
    assert torch.equal(perm[back.perm], torch.arange(pattern.nnz))


def test_transpose_is_computed_once() -> None:
    pattern, _ = pattern_and_values(torch.eye(3).to_sparse())
    assert pattern.transpose is pattern.transpose


def test_transpose_of_an_empty_pattern() -> None:
    A = torch.zeros(2, 3, 4).to_sparse_csr()
    pattern, _ = pattern_and_values(A)
    t = pattern.transpose.pattern
    assert t.nnz == 0 and t.crow.tolist() == [0] * (2 * 4 + 1) and t.block_shape == (4, 3)


@pytest.mark.parametrize("layout", LAYOUTS, ids=["coo", "csr"])
def test_to_csr_round_trip(layout: torch.layout) -> None:
    A = random_sparse((2, 4, 5), layout=layout, generator=make_generator(3), density=0.5)
    pattern, values = pattern_and_values(A)
    assert torch.equal(pattern.to_csr(values).to_dense(), _block_diagonal(A))


# ---------------------------------------------------------------------- public queries


@pytest.mark.parametrize(("layout", "index_dtype"), LAYOUT_INDEX)
def test_a_pattern_says_what_it_has_built(layout: torch.layout, index_dtype: torch.dtype) -> None:
    """has_transpose and has_row_pointers answer without building anything."""
    A = random_sparse((6, 5), layout=layout, density=0.4, generator=make_generator(1))
    if layout == torch.sparse_csr:
        A = torch.sparse_csr_tensor(
            A.crow_indices().to(index_dtype), A.col_indices().to(index_dtype), A.values(), A.shape
        )
    pattern = pattern_of(A.coalesce() if layout == torch.sparse_coo else A)
    # CSR comes with its row pointers; COO builds them on first use.
    assert pattern.has_row_pointers() == (layout == torch.sparse_csr)
    assert not pattern.has_transpose()
    pattern.crow  # noqa: B018 - built here
    transpose = pattern.transpose
    assert pattern.has_row_pointers() and pattern.has_transpose()
    assert pattern.transpose is transpose  # cached: built once
    assert not transpose.pattern.has_transpose()  # the transpose's own is never needed


@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
def test_a_kept_pattern_says_what_it_was_built_from(layout: torch.layout) -> None:
    A = random_sparse((6, 5), layout=layout, density=0.4, generator=make_generator(2))
    A = A.coalesce() if layout == torch.sparse_coo else A
    assert pattern_of(A).source is None  # built for one call: no source to match
    source = sparsity_pattern(A).source
    assert source is not None
    assert source.layout == layout and source.shape == (6, 5)
    own = (A.indices(),) if layout == torch.sparse_coo else (A.crow_indices(), A.col_indices())
    assert len(source.indices) == len(own)
    for kept, index in zip(source.indices, own, strict=True):
        assert torch.equal(kept, index) and kept.data_ptr() != index.data_ptr()  # a copy
