"""Tests of ``sparse_mm`` and its autograd functions ``SparseMatMul`` and ``SampledProduct``.

Three layers (see the house style): hand-worked examples checked exactly; every layout x rank
x dtype x strategy x device against a dense float64/complex128 reference on random problems
(hypothesis); ``gradcheck``/``gradgradcheck`` in double precision. Then the edge cases the
contract names one by one.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given
from testing import (
    CUDA_DEVICE_PARAMS,
    DEVICE_PARAMS,
    DTYPES,
    HALF_DTYPES,
    LAYOUT_IDS,
    LAYOUT_INDEX,
    LAYOUTS,
    RANKS,
    STRATEGIES,
    Problem,
    assert_close,
    assert_same_pattern,
    dense_reference,
    make_generator,
    operation_grid,
    pattern_mask,
    random_dense,
    random_sparse,
    reference_dtype,
    sparse_from_mask,
    uncoalesced_coo,
)
from testing import problems as problem_strategy
from torch import Tensor

import sparsegrad_lab
import sparsegrad_lab.autograd as autograd
import sparsegrad_lab.memory_guard as memory_guard
import sparsegrad_lab.routes as routes
from sparsegrad_lab import (
    BackwardStrategy,
    MemoryBudgetError,
    sampled_mm,
    sparse_mm,
    sparsity_pattern,
)
from sparsegrad_lab.autograd import SampledProduct, SparseMatMul
from sparsegrad_lab.errors import format_bytes
from sparsegrad_lab.footprint import sparse_mm_footprint
from sparsegrad_lab.pattern import pattern_and_values
from sparsegrad_lab.sddmm import sampled_product_workspace_bytes

# Tiny tensors: one intra-op thread (see tests/conftest.py).
pytestmark = pytest.mark.usefixtures("torch_single_thread")

DOUBLE_DTYPES = [torch.float64, torch.complex128]


def _fixed_problem(batched: bool, *, n: int = 3, m: int = 4, p: int = 2, seed: int = 0) -> Problem:
    return Problem(batch=2 if batched else None, n=n, m=m, p=p, density=0.5, seed=seed)


def _run(
    A: Tensor,
    B: Tensor,
    G: Tensor,
    strategy: BackwardStrategy,
    *,
    grad_A: bool = True,
    grad_B: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """Fresh leaves, ``C = sparse_mm(A, B)``, ``C.backward(G)``; returns ``(C, A, B)``."""
    A = A.detach().clone().requires_grad_(grad_A)
    B = B.detach().clone().requires_grad_(grad_B)
    C = sparse_mm(A, B, backward=strategy)
    C.backward(G)
    return C, A, B


# ============================================================================================
# 1. hand-worked examples, checked exactly
# ============================================================================================


@pytest.mark.parametrize("layout", LAYOUTS, ids=LAYOUT_IDS.get)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_hand_worked_real_example(layout: torch.layout, strategy: BackwardStrategy) -> None:
    #      A = [[0, 2, 0],     B = [[0, 1],     G = [[1, 2],
    #           [1, 0, 3]]          [2, 3],          [3, 4]]
    #                               [4, 5]]
    # C = A B = [[2*[2,3]], [1*[0,1] + 3*[4,5]]] = [[4, 6], [12, 16]]
    # ∇A at (0,1) = G[0]·B[1] = 2 + 6 = 8;  (1,0) = G[1]·B[0] = 0 + 4 = 4;
    #       (1,2) = G[1]·B[2] = 12 + 20 = 32
    # ∇B = Aᵀ G = [[G[1]], [2 G[0]], [3 G[1]]] = [[3, 4], [2, 4], [9, 12]]
    dense = torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, 3.0]], dtype=torch.float64)
    A = (
        dense.to_sparse() if layout == torch.sparse_coo else dense.to_sparse_csr()
    ).requires_grad_()
    B = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]], dtype=torch.float64, requires_grad=True)
    G = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    C = sparse_mm(A, B, backward=strategy)
    C.backward(G)
    assert torch.equal(C.detach(), torch.tensor([[4.0, 6.0], [12.0, 16.0]], dtype=torch.float64))
    expected_grad_A = torch.tensor([[0.0, 8.0, 0.0], [4.0, 0.0, 32.0]], dtype=torch.float64)
    assert A.grad is not None and A.grad.layout == layout
    assert torch.equal(A.grad.to_dense(), expected_grad_A)
    assert_same_pattern(A.grad, A)
    expected_grad_B = torch.tensor([[3.0, 4.0], [2.0, 4.0], [9.0, 12.0]], dtype=torch.float64)
    assert B.grad is not None and torch.equal(B.grad, expected_grad_B)


@pytest.mark.parametrize("layout", LAYOUTS, ids=LAYOUT_IDS.get)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_hand_worked_complex_example_is_conjugated(
    layout: torch.layout, strategy: BackwardStrategy
) -> None:
    # A = [[i, 2]], B = [[1 + i], [3]], G = [[1]]:
    # C = i (1 + i) + 6 = 5 + i;  ∇A = G Bᴴ = [[1 - i, 3]];  ∇B = Aᴴ G = [[-i], [2]].
    # Without the conjugations the gradients would read [[1 + i, 3]] and [[i], [2]].
    dense = torch.tensor([[1j, 2.0]], dtype=torch.complex128)
    A = (
        dense.to_sparse() if layout == torch.sparse_coo else dense.to_sparse_csr()
    ).requires_grad_()
    B = torch.tensor([[1 + 1j], [3.0]], dtype=torch.complex128, requires_grad=True)
    C = sparse_mm(A, B, backward=strategy)
    C.backward(torch.ones_like(C))
    assert torch.equal(C.detach(), torch.tensor([[5 + 1j]], dtype=torch.complex128))
    assert A.grad is not None
    assert torch.equal(A.grad.to_dense(), torch.tensor([[1 - 1j, 3.0]], dtype=torch.complex128))
    assert B.grad is not None
    assert torch.equal(B.grad, torch.tensor([[-1j], [2.0]], dtype=torch.complex128))


def test_hand_worked_batched_example() -> None:
    # Item 0: [[1, 0], [0, 2]] @ [[1], [1]] = [[1], [2]];  item 1: [[0, 3], [0, 0]] @ [[2], [5]]
    # = [[15], [0]]. With G = ones: ∇A item 0 = B₀ᵀ at the diagonal = [1, 1]; item 1 at (0, 1)
    # = B₁[1] = 5. ∇B item 0 = A₀ᵀ 1 = [[1], [2]]; item 1 = A₁ᵀ 1 = [[0], [3]].
    dense = torch.tensor([[[1.0, 0.0], [0.0, 2.0]], [[0.0, 3.0], [0.0, 0.0]]], dtype=torch.float64)
    A = dense.to_sparse().requires_grad_()
    B = torch.tensor([[[1.0], [1.0]], [[2.0], [5.0]]], dtype=torch.float64, requires_grad=True)
    C = sparse_mm(A, B)
    C.backward(torch.ones_like(C))
    assert torch.equal(C.detach(), torch.tensor([[[1.0], [2.0]], [[15.0], [0.0]]]).double())
    assert A.grad is not None
    expected = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 5.0], [0.0, 0.0]]]).double()
    assert torch.equal(A.grad.to_dense(), expected)
    assert B.grad is not None
    assert torch.equal(B.grad, torch.tensor([[[1.0], [2.0]], [[0.0], [3.0]]]).double())


# ============================================================================================
# 2. every layout x rank x dtype x strategy x device against the dense reference
# ============================================================================================


@operation_grid(DTYPES)
@given(data=problem_strategy(batched=True))
def test_matches_dense_reference(
    layout: torch.layout,
    index_dtype: torch.dtype,
    batched: bool,
    dtype: torch.dtype,
    strategy: BackwardStrategy,
    device: torch.device,
    data: Problem,
) -> None:
    problem = data if batched else dataclasses.replace(data, batch=None)
    A, B, G = problem.build(layout=layout, dtype=dtype, device=device, index_dtype=index_dtype)
    C, A, B = _run(A, B, G, strategy)
    ref = dense_reference(A, B, G)
    assert C.layout == torch.strided and C.dtype == dtype and C.device.type == device.type
    assert_close(C, ref.C)
    assert A.grad is not None and B.grad is not None
    assert_same_pattern(A.grad, A)
    assert A.grad.dtype == dtype
    assert_close(A.grad, ref.grad_A)
    assert B.grad.dtype == dtype and B.grad.shape == B.shape
    assert_close(B.grad, ref.grad_B)


@operation_grid(HALF_DTYPES, CUDA_DEVICE_PARAMS)
def test_half_precision_on_cuda(
    layout: torch.layout,
    index_dtype: torch.dtype,
    batched: bool,
    dtype: torch.dtype,
    strategy: BackwardStrategy,
    device: torch.device,
) -> None:
    problem = _fixed_problem(batched, n=5, m=6, p=3, seed=7)
    A, B, G = problem.build(layout=layout, dtype=dtype, device=device, index_dtype=index_dtype)
    C, A, B = _run(A, B, G, strategy)
    ref = dense_reference(A, B, G)
    assert C.dtype == dtype and C.device.type == "cuda"
    assert_close(C, ref.C)
    assert A.grad is not None and B.grad is not None
    assert_same_pattern(A.grad, A)
    assert_close(A.grad, ref.grad_A)
    assert_close(B.grad, ref.grad_B)


# ============================================================================================
# 3. gradcheck and gradgradcheck in double precision
# ============================================================================================


def _gradchecks(fn: Callable[..., Tensor], *inputs: Tensor) -> None:
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


def _leaf_inputs(A: Tensor, B: Tensor) -> tuple[Tensor, Tensor]:
    values = A.detach().values() if A.layout == torch.sparse_csr else A.detach()._values()
    return values.clone().requires_grad_(), B.detach().clone().requires_grad_()


@operation_grid(DOUBLE_DTYPES)
def test_gradcheck_through_the_sparse_tensor(
    layout: torch.layout,
    index_dtype: torch.dtype,
    batched: bool,
    dtype: torch.dtype,
    strategy: BackwardStrategy,
    device: torch.device,
) -> None:
    """Differentiate w.r.t. the values of ``A`` (building ``A`` inside) and ``B``.

    torch's sparse constructors hand back a gradient for ``v`` that cannot be differentiated
    again, so this ``gradgradcheck`` exercises second derivatives through ``B`` only;
    :func:`test_gradcheck_sparse_matmul_values` covers those through the values.
    """
    if layout == torch.sparse_csr and dtype.is_complex:
        pytest.skip(
            "torch cannot build a complex CSR tensor from values that require grad "
            "('sparse_compressed_tensor does not support automatic differentiation for "
            "outputs with complex dtype'); covered by the value-level gradcheck"
        )
    A, B, _G = _fixed_problem(batched).build(
        layout=layout, dtype=dtype, device=device, index_dtype=index_dtype
    )
    values, B = _leaf_inputs(A, B)
    if layout == torch.sparse_coo:
        indices = A._indices()

        def fn(v: Tensor, B: Tensor) -> Tensor:
            return sparse_mm(torch.sparse_coo_tensor(indices, v, A.shape), B, backward=strategy)

    else:
        crow, col = A.crow_indices(), A.col_indices()

        def fn(v: Tensor, B: Tensor) -> Tensor:
            return sparse_mm(torch.sparse_csr_tensor(crow, col, v, A.shape), B, backward=strategy)

    _gradchecks(fn, values, B)


@operation_grid(DOUBLE_DTYPES)
def test_gradcheck_sparse_matmul_values(
    layout: torch.layout,
    index_dtype: torch.dtype,
    batched: bool,
    dtype: torch.dtype,
    strategy: BackwardStrategy,
    device: torch.device,
) -> None:
    """``SparseMatMul.apply(values, B, pattern, strategy)``: the only route for complex CSR."""
    A, B, _G = _fixed_problem(batched).build(
        layout=layout, dtype=dtype, device=device, index_dtype=index_dtype
    )
    pattern, values = pattern_and_values(A)
    p = B.shape[-1]
    values, B = values.detach().clone().requires_grad_(), B.detach().clone().requires_grad_()

    def fn(v: Tensor, B: Tensor) -> Tensor:
        return SparseMatMul.apply(v, B.reshape(-1, p), pattern, strategy)

    _gradchecks(fn, values, B)


@pytest.mark.parametrize("device", DEVICE_PARAMS)
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("dtype", DOUBLE_DTYPES, ids=str)
@pytest.mark.parametrize("batched", RANKS)
def test_gradcheck_sampled_product(
    batched: bool, dtype: torch.dtype, strategy: BackwardStrategy, device: torch.device
) -> None:
    """``SampledProduct.apply(G, B, pattern, strategy)`` w.r.t. ``G`` and ``B``, twice."""
    problem = _fixed_problem(batched)
    A, B, G = problem.build(layout=torch.sparse_coo, dtype=dtype, device=device)
    pattern, _values = pattern_and_values(A)
    p = B.shape[-1]
    G2 = G.detach().reshape(-1, p).clone().requires_grad_()
    B2 = B.detach().reshape(-1, p).clone().requires_grad_()

    def fn(G: Tensor, B: Tensor) -> Tensor:
        return SampledProduct.apply(G, B, pattern, strategy)

    _gradchecks(fn, G2, B2)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize(("layout", "index_dtype"), LAYOUT_INDEX)
def test_complex_csr_leaf_gradient(
    layout: torch.layout, index_dtype: torch.dtype, strategy: BackwardStrategy
) -> None:
    """A complex CSR leaf (which gradcheck cannot take) gets the reference gradient."""
    for batched in (False, True):
        A, B, G = _fixed_problem(batched, seed=3).build(
            layout=layout, dtype=torch.complex128, device="cpu", index_dtype=index_dtype
        )
        _C, A, B = _run(A, B, G, strategy)
        ref = dense_reference(A, B, G)
        assert A.grad is not None and B.grad is not None
        assert_same_pattern(A.grad, A)
        assert_close(A.grad, ref.grad_A)
        assert_close(B.grad, ref.grad_B)


_DOUBLE_BACKWARD_CASES = [
    pytest.param(layout, index_dtype, through, id=f"{name}-through-{through}")
    for layout, index_dtype, name in (
        (torch.sparse_coo, torch.int64, "coo"),
        (torch.sparse_csr, torch.int64, "csr-int64"),
        (torch.sparse_csr, torch.int32, "csr-int32"),
    )
    for through in ("grad_B", "grad_A")
]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("dtype", DOUBLE_DTYPES, ids=str)
@pytest.mark.parametrize(("layout", "index_dtype", "through"), _DOUBLE_BACKWARD_CASES)
def test_double_backward_matches_dense(
    layout: torch.layout,
    index_dtype: torch.dtype,
    through: str,
    dtype: torch.dtype,
    strategy: BackwardStrategy,
) -> None:
    """With ``create_graph=True`` a first gradient differentiates like the dense one.

    ``L2 = Re⟨∇B, U⟩`` (a function of ``A`` and ``G``) or ``L2 = Re⟨∇A, V⟩`` (of ``B`` and
    ``G``) is differentiated once more; the same is done with a dense ``A`` whose gradient is
    masked to ``A``'s pattern by hand.
    """
    A, B, G = _fixed_problem(True, seed=5).build(
        layout=layout, dtype=dtype, device="cpu", index_dtype=index_dtype
    )
    gen = make_generator(11)
    U = random_dense(tuple(B.shape), dtype=dtype, generator=gen)
    V = random_dense(tuple(A.shape), dtype=dtype, generator=gen)
    mask = pattern_mask(A)
    ref_dtype = reference_dtype(dtype)

    def second_order(grad_A_values: Tensor, grad_B: Tensor) -> Tensor:
        # Through the stored values: torch cannot differentiate to_dense() of batched CSR.
        if through == "grad_B":
            return (grad_B * U.conj()).sum().real
        return (grad_A_values * V[mask].conj()).sum().real

    A_leaf = A.detach().clone().requires_grad_()
    B1 = B.detach().clone().requires_grad_()
    G1 = G.detach().clone().requires_grad_()
    C = sparse_mm(A_leaf, B1, backward=strategy)
    gA, gB = torch.autograd.grad(C, (A_leaf, B1), G1, create_graph=True)
    gA_values = gA.coalesce().values() if layout == torch.sparse_coo else gA.values()
    second_order(gA_values.reshape(-1), gB).backward()

    D = A.detach().to_dense().requires_grad_()
    B2 = B.detach().clone().requires_grad_()
    G2 = G.detach().clone().requires_grad_()
    dA, dB = torch.autograd.grad(D @ B2, (D, B2), G2, create_graph=True)
    second_order(dA[mask], dB).backward()

    assert G1.grad is not None and G2.grad is not None
    assert_close(G1.grad, G2.grad.to(ref_dtype))
    if through == "grad_B":  # ∇B = Aᴴ G does not depend on B
        assert B1.grad is None and B2.grad is None
        assert A_leaf.grad is not None and D.grad is not None
        assert_same_pattern(A_leaf.grad, A_leaf)
        assert_close(A_leaf.grad, (D.grad * mask).to(ref_dtype))
    else:  # ∇A = P ⊙ (G Bᴴ) does not depend on A
        assert A_leaf.grad is None and D.grad is None
        assert B1.grad is not None and B2.grad is not None
        assert_close(B1.grad, B2.grad.to(ref_dtype))


# ============================================================================================
# 4. edge cases
# ============================================================================================


def _check_against_reference(A: Tensor, B: Tensor, G: Tensor, strategy: BackwardStrategy) -> None:
    C, A, B = _run(A, B, G, strategy)
    ref = dense_reference(A, B, G)
    assert_close(C, ref.C)
    assert A.grad is not None and B.grad is not None
    assert_same_pattern(A.grad, A)
    assert_close(A.grad, ref.grad_A)
    assert_close(B.grad, ref.grad_B)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("batched", RANKS)
@pytest.mark.parametrize(("layout", "index_dtype"), LAYOUT_INDEX)
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex64], ids=str)
def test_no_stored_entries(
    layout: torch.layout,
    index_dtype: torch.dtype,
    batched: bool,
    strategy: BackwardStrategy,
    dtype: torch.dtype,
) -> None:
    problem = Problem(batch=2 if batched else None, n=3, m=4, p=2, density=0.0, seed=1)
    A, B, G = problem.build(layout=layout, dtype=dtype, device="cpu", index_dtype=index_dtype)
    assert A._nnz() == 0
    C, A, B = _run(A, B, G, strategy)
    assert torch.equal(C, torch.zeros_like(C))
    assert A.grad is not None and B.grad is not None
    assert A.grad._nnz() == 0
    assert_same_pattern(A.grad, A)
    assert torch.equal(B.grad, torch.zeros_like(B))


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("batched", RANKS)
@pytest.mark.parametrize(("layout", "index_dtype"), LAYOUT_INDEX)
def test_empty_rows_and_columns(
    layout: torch.layout, index_dtype: torch.dtype, batched: bool, strategy: BackwardStrategy
) -> None:
    shape = (2, 5, 6) if batched else (5, 6)
    gen = make_generator(2)
    A = random_sparse(
        shape,
        layout=layout,
        density=0.7,
        generator=gen,
        index_dtype=index_dtype,
        empty_rows=(0, 3),
        empty_cols=(1, 5),
    )
    B = random_dense((*shape[:-2], 6, 3), generator=gen)
    G = random_dense((*shape[:-2], 5, 3), generator=gen)
    _check_against_reference(A, B, G, strategy)
    C, A, B = _run(A, B, G, strategy)
    assert torch.equal(C[..., [0, 3], :], torch.zeros_like(C[..., [0, 3], :]))
    assert B.grad is not None
    assert torch.equal(B.grad[..., [1, 5], :], torch.zeros_like(B.grad[..., [1, 5], :]))


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize(("layout", "index_dtype"), LAYOUT_INDEX)
@pytest.mark.parametrize("dtype", [torch.float32, torch.complex128], ids=str)
@pytest.mark.parametrize(
    ("batch", "n", "m", "p"),
    [
        (None, 1, 4, 3),
        (None, 4, 1, 3),
        (None, 4, 3, 1),
        (None, 1, 1, 1),
        (1, 3, 4, 2),
        (1, 1, 1, 1),
        (3, 1, 2, 1),
    ],
    ids=["n=1", "m=1", "p=1", "1x1x1", "batch-of-one", "batch-of-one-1x1x1", "b3-n1-p1"],
)
def test_degenerate_shapes(
    batch: int | None,
    n: int,
    m: int,
    p: int,
    dtype: torch.dtype,
    layout: torch.layout,
    index_dtype: torch.dtype,
    strategy: BackwardStrategy,
) -> None:
    problem = Problem(batch=batch, n=n, m=m, p=p, density=1.0, seed=4)
    A, B, G = problem.build(layout=layout, dtype=dtype, device="cpu", index_dtype=index_dtype)
    _check_against_reference(A, B, G, strategy)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize(("layout", "index_dtype"), LAYOUT_INDEX)
def test_explicitly_stored_zeros_keep_their_gradient(
    layout: torch.layout, index_dtype: torch.dtype, strategy: BackwardStrategy
) -> None:
    mask = torch.tensor([[True, False, True], [False, True, True]])
    values = torch.tensor([0.0, 2.0, 0.0, -1.0], dtype=torch.float64)  # two stored zeros
    A = sparse_from_mask(mask, values, layout=layout, index_dtype=index_dtype)
    gen = make_generator(6)
    B, G = random_dense((3, 2), generator=gen), random_dense((2, 2), generator=gen)
    _C, A, B = _run(A, B, G, strategy)
    assert A.grad is not None
    assert_same_pattern(A.grad, A)
    expected = (G @ B.detach().T) * mask
    assert_close(A.grad, expected)
    assert (A.grad.to_dense()[0, 0] != 0) and (A.grad.to_dense()[1, 1] != 0)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("batched", RANKS)
def test_duplicate_coo_entries_get_full_gradient(
    batched: bool, dtype: torch.dtype, strategy: BackwardStrategy
) -> None:
    """Each duplicate of an uncoalesced COO entry gets the full gradient of its position."""
    shape = (2, 4, 5) if batched else (4, 5)
    gen = make_generator(8)
    indices, v0 = uncoalesced_coo(shape, nnz=7, duplicates=5, dtype=dtype, generator=gen)
    B = random_dense((*shape[:-2], 5, 3), dtype=dtype, generator=gen)
    G = random_dense((*shape[:-2], 4, 3), dtype=dtype, generator=gen)
    v = v0.clone().requires_grad_()
    A = torch.sparse_coo_tensor(indices, v, shape)
    assert not A.is_coalesced()
    C = sparse_mm(A, B, backward=strategy)
    C.backward(G)
    ref = dense_reference(A, B, G)
    assert_close(C, ref.C)
    # v_k's gradient is (G Bᴴ) at its own position, for every copy: ∂(Σ copies)/∂(one copy) = 1.
    assert v.grad is not None
    assert_close(v.grad, ref.grad_A[tuple(indices)], dtype=dtype)
    if not batched and not dtype.is_complex:
        # torch.sparse.mm is the gold standard for this case.
        w = v0.clone().requires_grad_()
        torch.sparse.mm(torch.sparse_coo_tensor(indices, w, shape), B).backward(G)
        assert w.grad is not None
        torch.testing.assert_close(v.grad, w.grad)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("batched", RANKS)
def test_uncoalesced_coo_leaf_gets_coalesced_gradient(
    batched: bool, strategy: BackwardStrategy
) -> None:
    shape = (2, 4, 5) if batched else (4, 5)
    gen = make_generator(9)
    indices, values = uncoalesced_coo(shape, nnz=6, duplicates=4, generator=gen)
    A = torch.sparse_coo_tensor(indices, values, shape)
    B = random_dense((*shape[:-2], 5, 2), generator=gen)
    G = random_dense((*shape[:-2], 4, 2), generator=gen)
    C, A, B = _run(A, B, G, strategy)
    ref = dense_reference(A, B, G)
    assert_close(C, ref.C)
    assert A.grad is not None and B.grad is not None
    assert_same_pattern(A.grad, A)
    assert A.grad.coalesce()._nnz() == 6  # the distinct positions, not the stored entries
    assert_close(A.grad, ref.grad_A)
    assert_close(B.grad, ref.grad_B)


def _non_contiguous(B: Tensor, how: str) -> Tensor:
    if how == "transposed":
        out = B.mT.contiguous().mT
    else:  # every other column of a wider tensor
        wide = torch.zeros((*B.shape[:-1], 2 * B.shape[-1]), dtype=B.dtype)
        wide[..., ::2] = B
        out = wide[..., ::2]
    assert not out.is_contiguous() and torch.equal(out, B)
    return out


@pytest.mark.parametrize("how", ["transposed", "sliced"])
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("batched", RANKS)
@pytest.mark.parametrize(("layout", "index_dtype"), LAYOUT_INDEX)
@pytest.mark.parametrize("dtype", [torch.float32, torch.complex128], ids=str)
def test_non_contiguous_B(
    layout: torch.layout,
    index_dtype: torch.dtype,
    batched: bool,
    strategy: BackwardStrategy,
    how: str,
    dtype: torch.dtype,
) -> None:
    A, B, G = _fixed_problem(batched, n=4, m=5, p=3, seed=12).build(
        layout=layout, dtype=dtype, device="cpu", index_dtype=index_dtype
    )
    ref = dense_reference(A, B, G)
    A = A.requires_grad_()
    Bnc = _non_contiguous(B, how).requires_grad_()
    C = sparse_mm(A, Bnc, backward=strategy)
    C.backward(_non_contiguous(G, how))  # a non-contiguous upstream gradient as well
    assert_close(C, ref.C)
    assert A.grad is not None and Bnc.grad is not None
    assert_same_pattern(A.grad, A)
    assert_close(A.grad, ref.grad_A)
    assert_close(Bnc.grad, ref.grad_B)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("batched", RANKS)
@pytest.mark.parametrize(("layout", "index_dtype"), LAYOUT_INDEX)
def test_expanded_upstream_gradient(
    layout: torch.layout, index_dtype: torch.dtype, batched: bool, strategy: BackwardStrategy
) -> None:
    """``C.sum().backward()`` hands backward a stride-0 gradient."""
    A, B, _G = _fixed_problem(batched, seed=13).build(
        layout=layout, dtype=torch.float64, device="cpu", index_dtype=index_dtype
    )
    ones = torch.ones((*A.shape[:-1], B.shape[-1]), dtype=torch.float64)
    ref = dense_reference(A, B, ones)
    A, B = A.requires_grad_(), B.requires_grad_()
    sparse_mm(A, B, backward=strategy).sum().backward()
    assert A.grad is not None and B.grad is not None
    assert_close(A.grad, ref.grad_A)
    assert_close(B.grad, ref.grad_B)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("batched", RANKS)
@pytest.mark.parametrize(("layout", "index_dtype"), LAYOUT_INDEX)
def test_only_B_requires_grad_skips_the_sampled_product(
    layout: torch.layout,
    index_dtype: torch.dtype,
    batched: bool,
    strategy: BackwardStrategy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*args: Any) -> None:
        raise AssertionError("SampledProduct (the gradient of A) ran although A needs none")

    monkeypatch.setattr(autograd.SampledProduct, "apply", refuse)
    A, B, G = _fixed_problem(batched).build(
        layout=layout, dtype=torch.float64, device="cpu", index_dtype=index_dtype
    )
    _C, A, B = _run(A, B, G, strategy, grad_A=False)
    assert A.grad is None
    assert B.grad is not None
    assert_close(B.grad, dense_reference(A, B, G).grad_B)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("batched", RANKS)
@pytest.mark.parametrize(("layout", "index_dtype"), LAYOUT_INDEX)
def test_only_A_requires_grad_skips_the_transposed_product(
    layout: torch.layout,
    index_dtype: torch.dtype,
    batched: bool,
    strategy: BackwardStrategy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*args: Any) -> None:
        raise AssertionError("Aᴴ (the gradient of B) was built although B needs none")

    monkeypatch.setattr(autograd, "_adjoint_values", refuse)
    A, B, G = _fixed_problem(batched).build(
        layout=layout, dtype=torch.float64, device="cpu", index_dtype=index_dtype
    )
    _C, A, B = _run(A, B, G, strategy, grad_B=False)
    assert B.grad is None
    assert A.grad is not None
    assert_close(A.grad, dense_reference(A, B, G).grad_A)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("batched", RANKS)
@pytest.mark.parametrize(("layout", "index_dtype"), LAYOUT_INDEX)
@pytest.mark.parametrize("path", ["shared gather", "scatter", "transpose"])
def test_small_and_large_graph_backward_paths_agree_with_the_reference(
    path: str,
    layout: torch.layout,
    index_dtype: torch.dtype,
    batched: bool,
    dtype: torch.dtype,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The three ways a first-order sddmm backward goes, by size: up to
    SHARED_GATHER_MAX_NNZ entries one gather of G's rows serves both gradients; above it
    torch's sampled kernel gives ∇A and a scatter ∇B; with the scatter's bound at zero every
    graph is "large": the sampled kernel and the transposed pattern."""
    taken: list[str] = []
    adjoint_values, sampled = autograd._adjoint_values, autograd.sampled_product
    monkeypatch.setattr(
        autograd, "_adjoint_values", lambda *a: taken.append("transpose") or adjoint_values(*a)
    )
    monkeypatch.setattr(
        autograd, "sampled_product", lambda *a: taken.append("sampled") or sampled(*a)
    )
    if path == "transpose":
        monkeypatch.setattr(routes, "SCATTER_MAX_BYTES", 0)
    if path == "scatter":
        monkeypatch.setattr(routes, "SHARED_GATHER_MAX_NNZ", 10)
    problem = Problem(batch=2 if batched else None, n=7, m=5, p=3, density=0.4, seed=21)
    A, B, G = problem.build(layout=layout, dtype=dtype, device="cpu", index_dtype=index_dtype)
    _C, A, B = _run(A, B, G, "sddmm")
    expected = {"shared gather": [], "scatter": ["sampled"], "transpose": ["sampled", "transpose"]}
    assert taken == expected[path]
    ref = dense_reference(A, B, G)
    assert A.grad is not None and B.grad is not None
    assert_same_pattern(A.grad, A)
    assert_close(A.grad, ref.grad_A)
    assert_close(B.grad, ref.grad_B)


def test_no_input_requires_grad_gives_a_constant() -> None:
    A, B, _G = _fixed_problem(False).build(
        layout=torch.sparse_csr, dtype=torch.float64, device="cpu"
    )
    C = sparse_mm(A, B)
    assert not C.requires_grad and C.grad_fn is None


_ACCUMULATION_CASES = [
    pytest.param(torch.sparse_coo, torch.int64, False, id="coo-2d"),
    pytest.param(torch.sparse_coo, torch.int64, True, id="coo-3d"),
    pytest.param(torch.sparse_csr, torch.int64, False, id="csr-int64-2d"),
    pytest.param(torch.sparse_csr, torch.int32, False, id="csr-int32-2d"),
    pytest.param(
        torch.sparse_csr,
        torch.int64,
        True,
        id="csr-int64-3d",
        marks=pytest.mark.xfail(
            strict=True,
            reason="torch 2.13: in-place add of batched CSR tensors (what AccumulateGrad does "
            "on the second backward) returns a tensor with values of shape (1,), so A.grad "
            "is corrupted; `g = A.clone(); g += A` shows it without sparse_mm",
        ),
    ),
    pytest.param(
        torch.sparse_csr,
        torch.int32,
        True,
        id="csr-int32-3d",
        marks=pytest.mark.xfail(
            strict=True,
            reason="torch 2.13: in-place add of batched CSR tensors corrupts A.grad (as above)",
        ),
    ),
]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize(("layout", "index_dtype", "batched"), _ACCUMULATION_CASES)
def test_gradients_accumulate_over_two_backward_passes(
    layout: torch.layout, index_dtype: torch.dtype, batched: bool, strategy: BackwardStrategy
) -> None:
    A, B, G = _fixed_problem(batched, seed=14).build(
        layout=layout, dtype=torch.float64, device="cpu", index_dtype=index_dtype
    )
    ref = dense_reference(A, B, G)
    A, B = A.requires_grad_(), B.requires_grad_()
    for _ in range(2):
        sparse_mm(A, B, backward=strategy).backward(G)
    assert A.grad is not None and B.grad is not None
    assert_same_pattern(A.grad, A)
    assert_close(A.grad, 2 * ref.grad_A)
    assert_close(B.grad, 2 * ref.grad_B)
    if layout == torch.sparse_csr:
        assert A.grad.crow_indices().dtype == index_dtype


@pytest.mark.parametrize("batched", RANKS)
@pytest.mark.parametrize(("layout", "index_dtype"), LAYOUT_INDEX)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_strategies_give_identical_numbers(
    layout: torch.layout, index_dtype: torch.dtype, batched: bool, dtype: torch.dtype
) -> None:
    """On small integers every product and sum is exact, so the three must agree bit for bit."""
    shape = (2, 5, 6) if batched else (5, 6)
    gen = make_generator(15)
    A = random_sparse(
        shape, layout=layout, dtype=dtype, generator=gen, index_dtype=index_dtype, density=0.5,
        integer_valued=True,
    )  # fmt: skip
    B = random_dense((*shape[:-2], 6, 4), dtype=dtype, generator=gen, integer_valued=True)
    G = random_dense((*shape[:-2], 5, 4), dtype=dtype, generator=gen, integer_valued=True)
    results = [_run(A, B, G, s) for s in STRATEGIES]
    C0, A0, B0 = results[0]
    assert A0.grad is not None and B0.grad is not None
    ref = dense_reference(A, B, G)
    assert torch.equal(A0.grad.to_dense().to(ref.grad_A.dtype), ref.grad_A)
    for C, A_s, B_s in results[1:]:
        assert A_s.grad is not None and B_s.grad is not None
        assert torch.equal(C, C0)
        assert torch.equal(A_s.grad.to_dense(), A0.grad.to_dense())
        assert torch.equal(B_s.grad, B0.grad)


@pytest.mark.parametrize(("layout", "index_dtype"), LAYOUT_INDEX)
@pytest.mark.parametrize("batched", RANKS)
def test_no_columns_in_B(layout: torch.layout, index_dtype: torch.dtype, batched: bool) -> None:
    A, B, G = _fixed_problem(batched, p=0).build(
        layout=layout, dtype=torch.float64, device="cpu", index_dtype=index_dtype
    )
    C, A, B = _run(A, B, G, "sddmm")
    assert C.shape == G.shape and C.numel() == 0
    assert A.grad is not None and B.grad is not None
    assert torch.equal(A.grad.to_dense(), torch.zeros(A.shape, dtype=torch.float64))
    assert B.grad.shape == B.shape


@pytest.mark.parametrize("inside", [False, True], ids=["backward-outside", "backward-inside"])
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("batched", RANKS)
@pytest.mark.parametrize("layout", LAYOUTS, ids=LAYOUT_IDS.get)
def test_autocast_to_bfloat16_computes_in_the_inputs_dtype(
    layout: torch.layout, batched: bool, strategy: BackwardStrategy, inside: bool
) -> None:
    """torch's CPU sparse kernels have no bfloat16 matmul (COO aborted inside MKL); a
    backward run under autocast computed ``"dense"``'s ``G Bᴴ`` in bfloat16."""
    A, B, G = _fixed_problem(batched).build(layout=layout, dtype=torch.float32, device="cpu")
    A, B = A.requires_grad_(), B.requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        C = sparse_mm(A, B, backward=strategy)
        if inside:
            C.backward(G)
    if not inside:
        C.backward(G)
    ref = dense_reference(A, B, G)
    assert C.dtype == torch.float32
    assert_close(C, ref.C)
    assert A.grad is not None and B.grad is not None
    assert_close(A.grad, ref.grad_A)
    assert_close(B.grad, ref.grad_B)


@pytest.mark.parametrize(("layout", "index_dtype"), LAYOUT_INDEX)
def test_masked_gradcheck_with_default_flags(
    layout: torch.layout, index_dtype: torch.dtype
) -> None:
    """An undefined upstream gradient gives ``None``, not a sparse zero, as torch.sparse.mm."""
    A, B, _G = _fixed_problem(False).build(
        layout=layout, dtype=torch.float64, device="cpu", index_dtype=index_dtype
    )
    A, B = A.requires_grad_(), B.requires_grad_()
    assert torch.autograd.gradcheck(lambda A, B: sparse_mm(A, B), (A, B), masked=True)


# ============================================================================================
# 5. the memory guard
# ============================================================================================


def _budget_problem() -> tuple[Tensor, Tensor]:
    gen = make_generator(16)
    A = random_sparse((30, 40), layout=torch.sparse_coo, density=0.05, generator=gen)
    B = random_dense((40, 4), generator=gen)
    return A, B


@pytest.mark.parametrize("strategy", ["dense", "gather"])
def test_memory_guard_refuses_a_backward_that_cannot_fit(
    strategy: BackwardStrategy, tiny_memory: Callable[[int], None]
) -> None:
    # C (30 x 4 float64) and its COO product's zero template take 1920 bytes: the forward
    # alone fits. The strategy's workspace in the backward does not.
    tiny_memory(4000)
    A, B = _budget_problem()
    nnz = A._nnz()
    workspace = sampled_product_workspace_bytes(
        strategy,
        batch=1,
        block_shape=(30, 40),
        nnz=nnz,
        p=4,
        dtype=torch.float64,
    )
    assert workspace > 4000  # the case really is over budget
    with torch.no_grad():
        sparse_mm(A, B, backward=strategy)  # no backward to come: the forward fits
    with pytest.raises(MemoryBudgetError) as info:
        sparse_mm(A.requires_grad_(), B, backward=strategy)
    assert isinstance(info.value, MemoryError)
    # One number: the peak of the call's stages, which include the workspace.
    needed = sparse_mm_footprint(A, B, strategy).peak_bytes
    assert needed > workspace
    message = str(info.value)
    assert f"backward={strategy!r}" in message and "its peak: sampled product" in message
    assert format_bytes(needed) in message and format_bytes(4000) in message
    assert f"{nnz} stored" in message and "p=4" in message
    assert "use backward='sddmm'" in message
    assert info.value.needed_bytes == needed and info.value.budget_bytes == 4000


def test_memory_guard_lets_sddmm_through(tiny_memory: Callable[[int], None]) -> None:
    # On a graph this small sddmm's backward gathers the 62 rows of G and B once for both
    # gradients (2 x 62 x 4 x 8 bytes) beside ∇B (40 x 4 x 8): 5248 bytes. The gather
    # strategy's three blocks alone need 5952, dense's product 9600.
    tiny_memory(5500)
    A, B = _budget_problem()
    assert A._nnz() == 62
    G = random_dense((30, 4), generator=make_generator(17))
    _check_against_reference(A, B, G, "sddmm")


@pytest.mark.parametrize("strategy", ["dense", "gather"])
def test_memory_guard_only_when_A_needs_a_gradient(
    strategy: BackwardStrategy, tiny_memory: Callable[[int], None]
) -> None:
    tiny_memory(4000)
    A, B = _budget_problem()
    C = sparse_mm(A, B.requires_grad_(), backward=strategy)
    assert C.requires_grad
    with torch.no_grad():
        C = sparse_mm(A.requires_grad_(), B, backward=strategy)
    assert not C.requires_grad


def test_memory_guard_refuses_a_result_that_cannot_fit(
    tiny_memory: Callable[[int], None],
) -> None:
    tiny_memory(1000)
    A = torch.eye(300, dtype=torch.float64).to_sparse_csr()  # its pattern is its own indices
    B = torch.ones(300, 4, dtype=torch.float64)
    # C and the CPU kernel's result temporary, 300 * 4 * 8 bytes each, and the int32 copy of
    # A's 301 row pointers and 300 columns MKL reads: 21604 bytes.
    with pytest.raises(MemoryBudgetError, match=r"result C of 300 x 4 .* would need 21.10 KiB"):
        sparse_mm(A, B)


@pytest.mark.parametrize("create_graph", [False, True], ids=["first-order", "create_graph"])
def test_memory_guard_counts_the_row_pointers_of_a_coo_A_where_they_are_built(
    create_graph: bool, tiny_memory: Callable[[int], None]
) -> None:
    """n = 10¹² rows, p = 0: C is empty, and torch's COO product builds no row pointers; the
    backward's sampled kernel (or a double backward's product) would build 8 TB of them,
    and is refused before it does."""
    tiny_memory(2**30)
    A = torch.sparse_coo_tensor(torch.tensor([[5], [1]]), torch.ones(1), (10**12, 2))
    A = A.coalesce().requires_grad_()
    # ∇A alone (first order): torch's sampled kernel, which reads CSR; with ∇B under
    # create_graph the sampled product is an autograd function, on the same kernel.
    B = torch.zeros(2, 0, requires_grad=create_graph)
    C = sparse_mm(A, B)  # nothing to allocate: C is empty and so is the backward's ∇B
    assert C.shape == (10**12, 0)
    inputs = (A, B) if create_graph else (A,)
    with pytest.raises(MemoryBudgetError, match=r"row pointers of A .* would need 7.28 TiB"):
        torch.autograd.grad(C.sum(), inputs, create_graph=create_graph)


def test_memory_is_read_once_per_call_and_not_for_negligible_sizes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reads: list[object] = []
    monkeypatch.setattr(
        memory_guard, "available_bytes", lambda device: reads.append(device) or 2**40
    )
    A = torch.eye(4).to_sparse().requires_grad_()
    sparse_mm(A, torch.ones(4, 2)).sum().backward()
    assert reads == []  # a few hundred bytes: not worth the read
    monkeypatch.setattr(memory_guard, "NEGLIGIBLE_BYTES", 0)
    C = sparse_mm(A, torch.ones(4, 2, requires_grad=True))
    assert len(reads) == 1  # the result and the backward's workspace: one read
    C.sum().backward()
    assert len(reads) == 2  # the backward's transpose and ∇B, checked when it runs


def test_strategies_and_keyword_defaults() -> None:
    assert set(sparsegrad_lab.BACKWARD_STRATEGIES) == {"sddmm", "gather", "dense"}
    parameters = inspect.signature(sparse_mm).parameters
    assert {k: v.default for k, v in parameters.items() if v.kind == v.KEYWORD_ONLY} == {
        "backward": "sddmm",
        "pattern": None,
    }


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "problem",
    [
        Problem(batch=None, n=7, m=5, p=3, density=0.4, seed=3),
        Problem(batch=None, n=1, m=1, p=1, density=1.0, seed=4),
        Problem(batch=None, n=6, m=4, p=2, density=0.0, seed=5),  # no stored entries
        Problem(batch=None, n=9, m=3, p=0, density=0.3, seed=6),
    ],
    ids=["random", "1x1", "empty", "p=0"],
)
@pytest.mark.parametrize("product", ["coo", "csr"])
def test_both_forward_products_of_a_small_coo_graph(
    product: str,
    problem: Problem,
    dtype: torch.dtype,
    strategy: BackwardStrategy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A coalesced 2-D CPU COO ``A`` of at most COO_PRODUCT_MAX_NNZ entries is multiplied
    by torch's COO kernel, which checks the index ranges itself; with the bound below zero
    by the CSR kernel. Both match the reference; only the CSR product builds the pattern's
    row pointers."""
    if product == "csr":
        monkeypatch.setattr(routes, "COO_PRODUCT_MAX_NNZ", -1)
    layouts: list[torch.layout] = []
    sparse_times = autograd._sparse_times
    monkeypatch.setattr(
        autograd, "_sparse_times", lambda A, X: layouts.append(A.layout) or sparse_times(A, X)
    )
    compressions: list[int] = []
    compress = torch._convert_indices_from_coo_to_csr
    monkeypatch.setattr(
        torch,
        "_convert_indices_from_coo_to_csr",
        lambda *a, **k: compressions.append(1) or compress(*a, **k),
    )
    A, B, G = problem.build(layout=torch.sparse_coo, dtype=dtype, device="cpu")
    A = A.coalesce()
    _check_against_reference(A, B, G, strategy)
    assert layouts[0] == (torch.sparse_coo if product == "coo" else torch.sparse_csr)
    assert bool(compressions) == (product == "csr")


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("dtype", DOUBLE_DTYPES, ids=str)
def test_gradchecks_through_the_coo_product(dtype: torch.dtype, strategy: BackwardStrategy) -> None:
    """First and second derivatives with the forward on torch's COO kernel (a coalesced
    ``A`` built inside); a double backward builds the row pointers on first use."""
    A, B, _G = _fixed_problem(False, n=5, m=4, p=3).build(
        layout=torch.sparse_coo, dtype=dtype, device="cpu"
    )
    A = A.coalesce()
    values, B = _leaf_inputs(A, B)
    indices, shape = A._indices(), A.shape
    assert routes.coo_product(layout="coo", batched=False, device="cpu", nnz=A._nnz(), kept=False)

    def fn(v: Tensor, B: Tensor) -> Tensor:
        A = torch.sparse_coo_tensor(indices, v, shape, is_coalesced=True)
        return sparse_mm(A, B, backward=strategy)

    _gradchecks(fn, values, B)


def test_an_index_the_coo_product_refuses_is_named_alone() -> None:
    """torch's COO kernel refuses a row out of range (safely: it checks before reading);
    the error the user sees is ours, naming the entry, not chained to torch's."""
    with torch.sparse.check_sparse_tensor_invariants(enable=False):
        A = torch.sparse_coo_tensor(
            torch.tensor([[0, 7], [1, 0]]), torch.ones(2), (2, 2), is_coalesced=True
        )
        with pytest.raises(sparsegrad_lab.InputValueError, match="row index 7 at entry 1") as info:
            sparse_mm(A, torch.ones(2, 3))
    assert info.value.__context__ is None and info.value.__cause__ is None


# ============================================================================================
# 6. operands torch's kernels cannot read as they are: expanded B, torch.func, p = 0
# ============================================================================================


@pytest.mark.parametrize("create_graph", [False, True], ids=["first-order", "create_graph"])
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("product", ["coo", "csr"])
@pytest.mark.parametrize(("layout", "index_dtype"), LAYOUT_INDEX)
def test_expanded_B_gives_the_dense_result(
    layout: torch.layout,
    index_dtype: torch.dtype,
    product: str,
    strategy: BackwardStrategy,
    create_graph: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stride-0 ``B`` (``expand``): copied where a kernel needs it contiguous, and right."""
    if product == "csr":
        monkeypatch.setattr(routes, "COO_PRODUCT_MAX_NNZ", -1)
    A, _B, G = _fixed_problem(False, n=5, m=6, p=3).build(
        layout=layout, dtype=torch.float64, device="cpu", index_dtype=index_dtype
    )
    row = random_dense((1, 3), generator=make_generator(2)).requires_grad_()
    B = row.expand(6, 3)
    A = A.requires_grad_()
    C = sparse_mm(A, B, backward=strategy)
    grad_A, grad_row = torch.autograd.grad(C, (A, row), G, create_graph=create_graph)
    ref = dense_reference(A, B, G)
    assert_close(C, ref.C)
    assert_close(grad_A, ref.grad_A)
    assert_close(grad_row, ref.grad_B.sum(0, keepdim=True))


def test_expanded_B_of_huge_logical_size() -> None:
    """2⁶⁰ rows of one row: torch's COO product reads it as it is (a result); the CSR
    product would copy it in full, which is refused before it is tried."""
    m = 2**60
    indices = torch.tensor([[0, 1, 1], [0, 5, m - 1]])
    A = torch.sparse_coo_tensor(indices, torch.ones(3), (2, m)).coalesce()
    b = torch.tensor([[1.0, 2.0, 3.0]])
    C = sparse_mm(A, b.expand(m, 3))  # few entries: torch's COO product, no copy
    assert torch.equal(C, torch.tensor([[1.0], [2.0]]) * b)
    with pytest.raises(MemoryBudgetError) as info:
        sparse_mm(A.to_sparse_csr(), b.expand(m, 3))
    message = str(info.value)
    assert message.startswith("sparse_mm: the result C of 2 x 3")
    assert f"contiguous copy of B (shape ({m}, 3), strides (0, 1))" in message
    assert "pass B as a contiguous tensor" in message
    assert info.value.needed_bytes >= m * 3 * 4


def test_backward_counts_the_copy_of_an_expanded_B(tiny_memory: Callable[[int], None]) -> None:
    """The sampled product of ∇A copies a stride-0 ``B`` in full: checked before, in the
    backward (the forward on torch's COO product needs no copy)."""
    A = torch.eye(4, dtype=torch.float64).to_sparse().requires_grad_()
    B = torch.ones(1, 50, dtype=torch.float64).expand(4, 50)  # a copy: 1600 bytes
    C = sparse_mm(A, B)
    tiny_memory(1000)
    with pytest.raises(MemoryBudgetError, match=r"the backward's contiguous copy of B \(shape"):
        C.backward(torch.ones(4, 50, dtype=torch.float64))


def test_backward_counts_the_copy_of_an_expanded_gradient(
    tiny_memory: Callable[[int], None],
) -> None:
    """``C.sum()`` hands the backward a stride-0 gradient, copied (C's size) before use."""
    A = torch.eye(4, dtype=torch.float64).to_sparse().requires_grad_()
    C = sparse_mm(A, torch.ones(4, 50, dtype=torch.float64))  # C: 1600 bytes
    tiny_memory(1000)
    with pytest.raises(MemoryBudgetError, match="contiguous copy of the upstream gradient"):
        C.sum().backward()


def _transformed_calls() -> dict[str, Callable[[], object]]:
    """Each public call under torch.func, COO and CSR, w.r.t. B (or X) and A's values."""
    dense = torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, 3.0]])
    coo, csr = dense.to_sparse(), dense.to_sparse_csr()
    B, v = torch.ones(3, 2), torch.tensor([2.0, 1.0, 3.0])
    # Read outside the transform: inside it, torch itself cannot read a sparse tensor's
    # indices ("Sparse CSR tensors do not have strides", or no storage for COO), nor
    # check the invariants of one it builds (this suite turns the checks on).
    indices, crow, col = coo.indices(), csr.crow_indices(), csr.col_indices()

    def coo_of(v: Tensor) -> Tensor:
        return torch.sparse_coo_tensor(
            indices, v, coo.shape, is_coalesced=True, check_invariants=False
        )

    def csr_of(v: Tensor) -> Tensor:
        return sparsegrad_lab.csr_tensor(crow, col, v, csr.shape)

    grad, vjp = torch.func.grad, torch.func.vjp
    return {
        "coo-grad-B": lambda: grad(lambda B: sparse_mm(coo, B).sum())(B),
        "csr-grad-B": lambda: grad(lambda B: sparse_mm(csr, B).sum())(B),
        "coo-grad-values": lambda: grad(lambda v: sparse_mm(coo_of(v), B).sum())(v),
        "csr-grad-values": lambda: grad(lambda v: sparse_mm(csr_of(v), B).sum())(v),
        "coo-vjp-B": lambda: vjp(lambda B: sparse_mm(coo, B), B),
        "csr-vjp-B": lambda: vjp(lambda B: sparse_mm(csr, B), B),
        "coo-sampled-grad-X": lambda: grad(
            lambda X: sampled_mm(coo, X, B.T).coalesce().values().sum()
        )(torch.ones(2, 2)),
        "csr-sampled-grad-X": lambda: grad(lambda X: sampled_mm(csr, X, B.T).values().sum())(
            torch.ones(2, 2)
        ),
        "coo-sampled-vjp-Y": lambda: vjp(lambda Y: sampled_mm(coo, torch.ones(2, 2), Y), B.T),
        "coo-closed-over-only": lambda: grad(lambda x: x * sparse_mm(coo, B).sum())(
            torch.tensor(1.0)
        ),
        "coo-vmap-B": lambda: torch.vmap(lambda B: sparse_mm(coo, B))(B.expand(4, 3, 2)),
        "coo-jacrev-values": lambda: torch.func.jacrev(lambda v: sparse_mm(coo_of(v), B))(v),
        "csr-sparsity_pattern": lambda: grad(lambda x: x * sparsity_pattern(csr).nnz)(
            torch.tensor(1.0)
        ),
    }


@pytest.mark.parametrize("name", list(_transformed_calls()))
def test_torch_func_transforms_are_refused_with_the_way_out(name: str) -> None:
    """functorch wraps tensors without storage; torch.sparse.mm works in the same call (COO),
    sparse_mm raised "Cannot access data pointer of Tensor that doesn't have storage"."""
    with pytest.raises(sparsegrad_lab.InputTypeError) as info:
        _transformed_calls()[name]()
    message = str(info.value)
    assert "torch.func transforms (grad, vjp, jacrev, vmap, ...) are not supported" in message
    assert "torch.autograd.grad(loss, inputs) or loss.backward()" in message


def test_the_same_gradients_through_torch_autograd() -> None:
    """The way out the refusal names gives torch.sparse.mm's gradient (and torch.func does too,
    for torch.sparse.mm: the reference)."""
    A = torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, 3.0]]).to_sparse()
    B = torch.ones(3, 2, requires_grad=True)
    (grad_B,) = torch.autograd.grad(sparse_mm(A, B).sum(), B)
    expected = torch.func.grad(lambda B: torch.sparse.mm(A, B).sum())(B.detach())
    assert torch.equal(grad_B, expected)


@pytest.mark.parametrize("layout", LAYOUTS, ids=LAYOUT_IDS.get)
@pytest.mark.parametrize(
    "route", ["first-order", "create_graph", "kept-pattern", "only-B", "batched"]
)
def test_p_0_with_huge_m_guards_the_transpose_row_pointers(
    layout: torch.layout, route: str, tiny_memory: Callable[[int], None]
) -> None:
    """p = 0: C and ∇B are empty, but the transpose of A has m + 1 row pointers (8 TiB
    here). A first-order backward on a small graph never builds it (a scatter); every
    route that does is refused before it allocates: a kept pattern's by the forward's
    check of the whole call, a double backward's by the backward's own."""
    m = 2**40
    batched = route == "batched"
    indices = torch.tensor([[0, 1], [5, m - 1]])
    if batched:
        indices = torch.cat([torch.tensor([[0, 1]]), indices])
    shape = (2, 2, m) if batched else (2, m)
    A = torch.sparse_coo_tensor(indices, torch.ones(2, dtype=torch.float64), shape).coalesce()
    if layout == torch.sparse_csr and not batched:
        A = A.to_sparse_csr()
    kept = sparsity_pattern(A) if route == "kept-pattern" else None
    A = A.requires_grad_(route != "only-B")
    B = torch.zeros(*shape[:-2], m, 0, dtype=torch.float64, requires_grad=True)
    if kept is not None:
        # A kept pattern's first backward builds its transpose: the forward's check, the
        # peak of the whole first-order call, counts it already.
        with pytest.raises(MemoryBudgetError, match=r"its peak: grad B spmm") as info:
            sparse_mm(A, B, pattern=kept)
        assert info.value.needed_bytes >= (m + 1) * 8
        return
    C = sparse_mm(A, B, pattern=kept)
    tiny_memory(2**30)
    inputs = (B,) if route == "only-B" else (A, B)
    if route in ("first-order", "batched"):
        grads = torch.autograd.grad(C.sum(), inputs)
        assert grads[-1].shape == B.shape and grads[-1].numel() == 0
        assert kept is None
        return
    with pytest.raises(MemoryBudgetError, match="the transpose of A") as info:
        torch.autograd.grad(C.sum(), inputs, create_graph=route != "kept-pattern")
    assert info.value.needed_bytes >= (m + 1) * 8  # the transpose's row pointers
