"""Tests of the public operation ``sparse_mm`` (:mod:`sparsegrad_lab.ops`).

Hand-worked examples checked exactly; every layout x rank x dtype x strategy x device against a
dense float64/complex128 reference on random problems (hypothesis); then the edge cases of its
arguments the contract names one by one, the memory guard of the whole call, and the operands
torch's kernels cannot read as they are. The backward passes of its autograd Functions
(``gradcheck``/``gradgradcheck``, double backward, which products a backward runs) are tested
in ``test_autograd.py``.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable

import pytest
import torch
from hypothesis import given
from testing import (
    CUDA_DEVICE_PARAMS,
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
    fixed_problem,
    make_generator,
    operation_grid,
    random_dense,
    random_sparse,
    run_sparse_mm,
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
from sparsegrad_lab.errors import format_bytes
from sparsegrad_lab.footprint import sparse_mm_footprint
from sparsegrad_lab.sddmm import sampled_product_workspace_bytes

# Tiny tensors: one intra-op thread (see tests/conftest.py).
pytestmark = pytest.mark.usefixtures("torch_single_thread")


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
    C, A, B = run_sparse_mm(A, B, G, strategy)
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
    problem = fixed_problem(batched, n=5, m=6, p=3, seed=7)
    A, B, G = problem.build(layout=layout, dtype=dtype, device=device, index_dtype=index_dtype)
    C, A, B = run_sparse_mm(A, B, G, strategy)
    ref = dense_reference(A, B, G)
    assert C.dtype == dtype and C.device.type == "cuda"
    assert_close(C, ref.C)
    assert A.grad is not None and B.grad is not None
    assert_same_pattern(A.grad, A)
    assert_close(A.grad, ref.grad_A)
    assert_close(B.grad, ref.grad_B)


# ============================================================================================
# 3. edge cases
# ============================================================================================


def _check_against_reference(A: Tensor, B: Tensor, G: Tensor, strategy: BackwardStrategy) -> None:
    C, A, B = run_sparse_mm(A, B, G, strategy)
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
    C, A, B = run_sparse_mm(A, B, G, strategy)
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
    C, A, B = run_sparse_mm(A, B, G, strategy)
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
    A, B, G = fixed_problem(batched, n=4, m=5, p=3, seed=12).build(
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


def test_no_input_requires_grad_gives_a_constant() -> None:
    A, B, _G = fixed_problem(False).build(
        layout=torch.sparse_csr, dtype=torch.float64, device="cpu"
    )
    C = sparse_mm(A, B)
    assert not C.requires_grad and C.grad_fn is None


@pytest.mark.parametrize(("layout", "index_dtype"), LAYOUT_INDEX)
@pytest.mark.parametrize("batched", RANKS)
def test_no_columns_in_B(layout: torch.layout, index_dtype: torch.dtype, batched: bool) -> None:
    A, B, G = fixed_problem(batched, p=0).build(
        layout=layout, dtype=torch.float64, device="cpu", index_dtype=index_dtype
    )
    C, A, B = run_sparse_mm(A, B, G, "sddmm")
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
    A, B, G = fixed_problem(batched).build(layout=layout, dtype=torch.float32, device="cpu")
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


# ============================================================================================
# 4. the memory guard
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
# 5. operands torch's kernels cannot read as they are: expanded B, torch.func, p = 0
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
    A, _B, G = fixed_problem(False, n=5, m=6, p=3).build(
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
