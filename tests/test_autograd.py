"""Tests of the backward passes of the autograd Functions of :mod:`sparsegrad_lab.autograd`.

For ``C = A B`` and upstream ``G``, ``∇A = P_A ⊙ (G Bᴴ)`` is a ``SampledProduct`` and
``∇B = Aᴴ G`` a ``SparseMatMul``, each one of the two Functions again, so second derivatives
need no code of their own. Checked here: ``gradcheck``/``gradgradcheck`` in double precision
(through a sparse tensor built from values, and on the Functions directly) and a double backward
against the dense one; what the backward hands each leaf (stored zeros, duplicates of an
uncoalesced COO, an expanded upstream gradient, accumulation over two passes, the three
strategies bit for bit); which products it runs (none for a leaf that needs no gradient; the
small- and large-graph paths); and the memory it checks when it runs. The forward and the
arguments of ``sparse_mm`` are tested in ``test_ops.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from testing import (
    DEVICE_PARAMS,
    DOUBLE_DTYPES,
    DTYPES,
    LAYOUT_INDEX,
    RANKS,
    STRATEGIES,
    Problem,
    assert_close,
    assert_same_pattern,
    dense_reference,
    fixed_problem,
    make_generator,
    operation_grid,
    pattern_mask,
    random_dense,
    random_sparse,
    reference_dtype,
    run_sparse_mm,
    sparse_from_mask,
    uncoalesced_coo,
)
from torch import Tensor

import sparsegrad_lab.autograd as autograd
import sparsegrad_lab.routes as routes
from sparsegrad_lab import BackwardStrategy, MemoryBudgetError, sparse_mm
from sparsegrad_lab.autograd import SampledProduct, SparseMatMul
from sparsegrad_lab.pattern import pattern_and_values

# Tiny tensors: one intra-op thread (see tests/conftest.py).
pytestmark = pytest.mark.usefixtures("torch_single_thread")


# ============================================================================================
# 1. first and second derivatives: gradcheck and gradgradcheck in double precision
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
    A, B, _G = fixed_problem(batched).build(
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
    A, B, _G = fixed_problem(batched).build(
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
    problem = fixed_problem(batched)
    A, B, G = problem.build(layout=torch.sparse_coo, dtype=dtype, device=device)
    pattern, _values = pattern_and_values(A)
    p = B.shape[-1]
    G2 = G.detach().reshape(-1, p).clone().requires_grad_()
    B2 = B.detach().reshape(-1, p).clone().requires_grad_()

    def fn(G: Tensor, B: Tensor) -> Tensor:
        return SampledProduct.apply(G, B, pattern, strategy)

    _gradchecks(fn, G2, B2)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("dtype", DOUBLE_DTYPES, ids=str)
def test_gradchecks_through_the_coo_product(dtype: torch.dtype, strategy: BackwardStrategy) -> None:
    """First and second derivatives with the forward on torch's COO kernel (a coalesced
    ``A`` built inside); a double backward builds the row pointers on first use."""
    A, B, _G = fixed_problem(False, n=5, m=4, p=3).build(
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


@pytest.mark.parametrize(("layout", "index_dtype"), LAYOUT_INDEX)
def test_masked_gradcheck_with_default_flags(
    layout: torch.layout, index_dtype: torch.dtype
) -> None:
    """An undefined upstream gradient gives ``None``, not a sparse zero, as torch.sparse.mm."""
    A, B, _G = fixed_problem(False).build(
        layout=layout, dtype=torch.float64, device="cpu", index_dtype=index_dtype
    )
    A, B = A.requires_grad_(), B.requires_grad_()
    assert torch.autograd.gradcheck(lambda A, B: sparse_mm(A, B), (A, B), masked=True)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize(("layout", "index_dtype"), LAYOUT_INDEX)
def test_complex_csr_leaf_gradient(
    layout: torch.layout, index_dtype: torch.dtype, strategy: BackwardStrategy
) -> None:
    """A complex CSR leaf (which gradcheck cannot take) gets the reference gradient."""
    for batched in (False, True):
        A, B, G = fixed_problem(batched, seed=3).build(
            layout=layout, dtype=torch.complex128, device="cpu", index_dtype=index_dtype
        )
        _C, A, B = run_sparse_mm(A, B, G, strategy)
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
    A, B, G = fixed_problem(True, seed=5).build(
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
# 2. what the backward hands each leaf
# ============================================================================================


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
    _C, A, B = run_sparse_mm(A, B, G, strategy)
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
    C, A, B = run_sparse_mm(A, B, G, strategy)
    ref = dense_reference(A, B, G)
    assert_close(C, ref.C)
    assert A.grad is not None and B.grad is not None
    assert_same_pattern(A.grad, A)
    assert A.grad.coalesce()._nnz() == 6  # the distinct positions, not the stored entries
    assert_close(A.grad, ref.grad_A)
    assert_close(B.grad, ref.grad_B)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("batched", RANKS)
@pytest.mark.parametrize(("layout", "index_dtype"), LAYOUT_INDEX)
def test_expanded_upstream_gradient(
    layout: torch.layout, index_dtype: torch.dtype, batched: bool, strategy: BackwardStrategy
) -> None:
    """``C.sum().backward()`` hands backward a stride-0 gradient."""
    A, B, _G = fixed_problem(batched, seed=13).build(
        layout=layout, dtype=torch.float64, device="cpu", index_dtype=index_dtype
    )
    ones = torch.ones((*A.shape[:-1], B.shape[-1]), dtype=torch.float64)
    ref = dense_reference(A, B, ones)
    A, B = A.requires_grad_(), B.requires_grad_()
    sparse_mm(A, B, backward=strategy).sum().backward()
    assert A.grad is not None and B.grad is not None
    assert_close(A.grad, ref.grad_A)
    assert_close(B.grad, ref.grad_B)


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
    A, B, G = fixed_problem(batched, seed=14).build(
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
    results = [run_sparse_mm(A, B, G, s) for s in STRATEGIES]
    C0, A0, B0 = results[0]
    assert A0.grad is not None and B0.grad is not None
    ref = dense_reference(A, B, G)
    assert torch.equal(A0.grad.to_dense().to(ref.grad_A.dtype), ref.grad_A)
    for C, A_s, B_s in results[1:]:
        assert A_s.grad is not None and B_s.grad is not None
        assert torch.equal(C, C0)
        assert torch.equal(A_s.grad.to_dense(), A0.grad.to_dense())
        assert torch.equal(B_s.grad, B0.grad)


# ============================================================================================
# 3. which products the backward runs
# ============================================================================================


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
    A, B, G = fixed_problem(batched).build(
        layout=layout, dtype=torch.float64, device="cpu", index_dtype=index_dtype
    )
    _C, A, B = run_sparse_mm(A, B, G, strategy, grad_A=False)
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
    A, B, G = fixed_problem(batched).build(
        layout=layout, dtype=torch.float64, device="cpu", index_dtype=index_dtype
    )
    _C, A, B = run_sparse_mm(A, B, G, strategy, grad_B=False)
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
    _C, A, B = run_sparse_mm(A, B, G, "sddmm")
    expected = {"shared gather": [], "scatter": ["sampled"], "transpose": ["sampled", "transpose"]}
    assert taken == expected[path]
    ref = dense_reference(A, B, G)
    assert A.grad is not None and B.grad is not None
    assert_same_pattern(A.grad, A)
    assert_close(A.grad, ref.grad_A)
    assert_close(B.grad, ref.grad_B)


# ============================================================================================
# 4. what the backward checks before it allocates
# ============================================================================================


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
