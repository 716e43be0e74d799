"""Tests of the registered ops ``sparsegrad_lab::pattern_mm`` / ``pattern_sddmm`` and their indices.

Three layers (see the house style): hand-worked examples checked exactly; every layout x rank
x dtype x device x route against a dense float64/complex128 reference on random problems
(hypothesis); ``gradcheck``/``gradgradcheck`` in double precision. Then ``opcheck`` of both
ops on every supported case, the tracers (``make_fx``, ``torch.compile``), the edge cases and
the errors. Each numerical test runs both routes: the functional ``pattern_mm`` (eagerly, the
autograd Function) and the registered op called directly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given
from testing import (
    CUDA_DEVICE_PARAMS,
    DEVICE_PARAMS,
    DTYPES,
    LAYOUT_INDEX,
    RANKS,
    Problem,
    assert_close,
    dense_reference,
    make_generator,
    random_dense,
    random_sparse,
    reference_dtype,
)
from testing import problems as problem_strategy
from torch import Tensor

from sparsegrad_lab import InputTypeError, InputValueError, sparsity_pattern
from sparsegrad_lab.pattern_op import (
    PATTERN_MM,
    PATTERN_SDDMM,
    PatternIndices,
    pattern_mm,
    pattern_mm_2d,
    pattern_sddmm,
)

pytestmark = pytest.mark.usefixtures("torch_single_thread")

DOUBLE_DTYPES = [torch.float64, torch.complex128]
ROUTES = ["function", "op"]


def _split(A: Tensor) -> tuple[PatternIndices, Tensor]:
    """The checked indices of sparse ``A`` and its values in their order, as a fresh leaf."""
    indices = PatternIndices.from_sparse(A)
    A = A.detach()
    values = A.coalesce().values() if A.layout == torch.sparse_coo else A.values().reshape(-1)
    return indices, values.clone()


def _product(route: str, values: Tensor, B: Tensor, indices: PatternIndices) -> Tensor:
    """``A(values) @ B`` by the public function, or by the registered op itself."""
    if route == "function":
        return pattern_mm(values, B, indices)
    C = PATTERN_MM(values, _rows(B), *indices.tensors)
    return C.reshape(*indices.size[:-1], B.shape[-1])


def _sampled(route: str, G: Tensor, B: Tensor, indices: PatternIndices) -> Tensor:
    if route == "function":
        return pattern_sddmm(G, B, indices)
    return PATTERN_SDDMM(_rows(G), _rows(B), *indices.tensors)


def _rows(X: Tensor) -> Tensor:
    """A batch ``(b, m, p)`` stacked as ``(b m, p)``, as the op takes it (p may be 0)."""
    return X.reshape(X.shape[:-1].numel(), X.shape[-1])


def _run(route: str, A: Tensor, B: Tensor, G: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Fresh leaves, ``C = A(values) B``, ``C.backward(G)``; returns ``(C, ∇values, ∇B)``."""
    indices, values = _split(A)
    values.requires_grad_()
    B = B.detach().clone().requires_grad_()
    C = _product(route, values, B, indices)
    C.backward(G)
    assert values.grad is not None and B.grad is not None
    return C, values.grad, B.grad


def _at_pattern(A: Tensor, grad_values: Tensor) -> Tensor:
    """``grad_values`` placed at ``A``'s pattern, dense (for comparison with the reference)."""
    return PatternIndices.from_sparse(A).to_sparse(grad_values).to_dense()


def _check_against_reference(route: str, A: Tensor, B: Tensor, G: Tensor) -> None:
    C, grad_values, grad_B = _run(route, A, B, G)
    ref = dense_reference(A, B, G)
    assert C.dtype == B.dtype and C.device == B.device and C.shape == ref.C.shape
    assert_close(C, ref.C)
    assert grad_values.dtype == B.dtype and grad_values.dim() == 1
    assert_close(_at_pattern(A, grad_values), ref.grad_A, dtype=B.dtype)
    assert grad_B.shape == B.shape
    assert_close(grad_B, ref.grad_B)


# ============================================================================================
# 1. hand-worked examples, checked exactly
# ============================================================================================


@pytest.mark.parametrize("route", ROUTES)
def test_hand_worked_real_example(route: str) -> None:
    #      A = [[0, 2, 0],     B = [[0, 1],     G = [[1, 2],
    #           [1, 0, 3]]          [2, 3],          [3, 4]]
    #                               [4, 5]]
    # C = A B = [[4, 6], [12, 16]]
    # ∇v at (0,1) = G[0]·B[1] = 8;  (1,0) = G[1]·B[0] = 4;  (1,2) = G[1]·B[2] = 32
    # ∇B = Aᵀ G = [[3, 4], [2, 4], [9, 12]]
    A = torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, 3.0]], dtype=torch.float64).to_sparse_csr()
    B = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]], dtype=torch.float64)
    G = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    C, grad_values, grad_B = _run(route, A, B, G)
    assert torch.equal(C.detach(), torch.tensor([[4.0, 6.0], [12.0, 16.0]], dtype=torch.float64))
    assert torch.equal(grad_values, torch.tensor([8.0, 4.0, 32.0], dtype=torch.float64))
    expected_B = torch.tensor([[3.0, 4.0], [2.0, 4.0], [9.0, 12.0]], dtype=torch.float64)
    assert torch.equal(grad_B, expected_B)


@pytest.mark.parametrize("route", ROUTES)
def test_hand_worked_complex_example_is_conjugated(route: str) -> None:
    # A = [[i, 0], [0, 2]], B = [[1], [i]], G = [[1], [1]]:
    # C = [[i], [2i]]; ∇v = G Bᴴ at the pattern = [1·conj(1), 1·conj(i)] = [1, -i];
    # ∇B = Aᴴ G = [[-i], [2]].
    A = torch.tensor([[1j, 0], [0, 2]], dtype=torch.complex128).to_sparse()
    B = torch.tensor([[1], [1j]], dtype=torch.complex128)
    G = torch.ones(2, 1, dtype=torch.complex128)
    C, grad_values, grad_B = _run(route, A, B, G)
    assert torch.equal(C.detach(), torch.tensor([[1j], [2j]], dtype=torch.complex128))
    assert torch.equal(grad_values, torch.tensor([1, -1j], dtype=torch.complex128))
    assert torch.equal(grad_B, torch.tensor([[-1j], [2]], dtype=torch.complex128))


@pytest.mark.parametrize("route", ROUTES)
def test_hand_worked_batched_example(route: str) -> None:
    # Item 0: A0 = [[1, 0], [0, 0]] (row 1 empty); item 1: A1 = [[0, 2], [3, 0]].
    A = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 2.0], [3.0, 0.0]]], dtype=torch.float64)
    B = torch.tensor([[[1.0], [2.0]], [[3.0], [4.0]]], dtype=torch.float64)
    G = torch.tensor([[[1.0], [1.0]], [[1.0], [2.0]]], dtype=torch.float64)
    C, grad_values, grad_B = _run(route, A.to_sparse(), B, G)
    assert torch.equal(C.detach(), torch.tensor([[[1.0], [0.0]], [[8.0], [9.0]]]).double())
    # ∇v: item 0 (0,0): G0[0]·B0[0] = 1; item 1 (0,1): G1[0]·B1[1] = 4, (1,0): G1[1]·B1[0] = 6
    assert torch.equal(grad_values, torch.tensor([1.0, 4.0, 6.0], dtype=torch.float64))
    # ∇B = Aᵀ G per item: item 0 [[1], [0]]; item 1 [[3·2], [2·1]] = [[6], [2]]
    assert torch.equal(grad_B, torch.tensor([[[1.0], [0.0]], [[6.0], [2.0]]]).double())


def test_hand_worked_sampled_product() -> None:
    # s_k = G[r_k] · conj(B[c_k]) at A's entries (0, 1) and (1, 0).
    indices = PatternIndices.from_edges([0, 1], [1, 0], (2, 2))
    G = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    B = torch.tensor([[5.0, 6.0], [7.0, 8.0]])
    assert torch.equal(pattern_sddmm(G, B, indices), torch.tensor([23.0, 39.0]))


# ============================================================================================
# 2. against the dense float64 reference, random problems
# ============================================================================================


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("device", DEVICE_PARAMS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("batched", RANKS)
@pytest.mark.parametrize(("layout", "index_dtype"), LAYOUT_INDEX)
@given(data=problem_strategy(batched=True))
def test_matches_dense_reference(
    layout: torch.layout,
    index_dtype: torch.dtype,
    batched: bool,
    dtype: torch.dtype,
    device: torch.device,
    route: str,
    data: Problem,
) -> None:
    problem = data if batched else dataclasses.replace(data, batch=None)
    A, B, G = problem.build(layout=layout, dtype=dtype, device=device, index_dtype=index_dtype)
    _check_against_reference(route, A, B, G)


@pytest.mark.parametrize("device", CUDA_DEVICE_PARAMS)
@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("batched", RANKS)
def test_on_cuda(batched: bool, dtype: torch.dtype, route: str, device: torch.device) -> None:
    problem = Problem(batch=3 if batched else None, n=7, m=5, p=4, density=0.4, seed=2)
    A, B, G = problem.build(layout=torch.sparse_csr, dtype=dtype, device=device)
    _check_against_reference(route, A, B, G)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("dtype", DOUBLE_DTYPES, ids=str)
@given(data=problem_strategy())
def test_sampled_product_matches_dense_reference(
    dtype: torch.dtype, route: str, data: Problem
) -> None:
    A, B, G = data.build(layout=torch.sparse_coo, dtype=dtype, device="cpu")
    indices, _ = _split(A)
    expected = (G @ B.mH) * (A.to_dense() != 0)
    got = _sampled(route, G, B, indices)
    assert_close(indices.to_sparse(got).to_dense(), expected)


# ============================================================================================
# 3. gradcheck and gradgradcheck in double precision
# ============================================================================================

_GRADCHECK_CASES = [
    pytest.param(Problem(batch=None, n=4, m=3, p=2, density=0.5, seed=1), id="2d"),
    pytest.param(Problem(batch=2, n=3, m=4, p=2, density=0.5, seed=2), id="batched"),
    pytest.param(Problem(batch=None, n=1, m=1, p=1, density=1.0, seed=3), id="1x1"),
    pytest.param(Problem(batch=None, n=3, m=3, p=2, density=0.0, seed=4), id="nnz0"),
    pytest.param(Problem(batch=None, n=3, m=4, p=0, density=0.5, seed=5), id="p0"),
]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("dtype", DOUBLE_DTYPES, ids=str)
@pytest.mark.parametrize("problem", _GRADCHECK_CASES)
def test_gradcheck_and_gradgradcheck(problem: Problem, dtype: torch.dtype, route: str) -> None:
    A, B, _ = problem.build(layout=torch.sparse_csr, dtype=dtype, device="cpu")
    indices, values = _split(A)
    inputs = (values.requires_grad_(), B.requires_grad_())

    def product(v: Tensor, X: Tensor) -> Tensor:
        return _product(route, v, X, indices)

    assert torch.autograd.gradcheck(product, inputs)
    assert torch.autograd.gradgradcheck(product, inputs)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("dtype", DOUBLE_DTYPES, ids=str)
@pytest.mark.parametrize("problem", _GRADCHECK_CASES)
def test_gradcheck_sampled_product(problem: Problem, dtype: torch.dtype, route: str) -> None:
    A, B, G = problem.build(layout=torch.sparse_coo, dtype=dtype, device="cpu")
    indices, _ = _split(A)
    inputs = (G.requires_grad_(), B.requires_grad_())

    def sampled(X: Tensor, Y: Tensor) -> Tensor:
        return _sampled(route, X, Y, indices)

    assert torch.autograd.gradcheck(sampled, inputs)
    assert torch.autograd.gradgradcheck(sampled, inputs)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("dtype", DOUBLE_DTYPES, ids=str)
@pytest.mark.parametrize("through", ["grad_B", "grad_values"])
def test_double_backward_matches_dense(dtype: torch.dtype, through: str, route: str) -> None:
    """A first gradient taken with ``create_graph=True`` differentiates like the dense one.

    ``L2 = Re⟨∇B, U⟩`` (a function of the values and ``G``) or ``L2 = Re⟨∇v, V⟩`` (of ``B``
    and ``G``), against the same with a dense ``A`` whose gradient is read at the pattern.
    """
    A, B, G = Problem(batch=2, n=3, m=4, p=2, density=0.5, seed=5).build(
        layout=torch.sparse_coo, dtype=dtype, device="cpu"
    )
    gen = make_generator(11)
    U = random_dense(tuple(B.shape), dtype=dtype, generator=gen)
    mask = A.to_dense() != 0
    V = random_dense((int(mask.sum()),), dtype=dtype, generator=gen)

    def second_order(grad_values: Tensor, grad_B: Tensor) -> Tensor:
        if through == "grad_B":
            return (grad_B * U.conj()).sum().real
        return (grad_values * V.conj()).sum().real

    indices, values = _split(A)
    v1, B1, G1 = (t.detach().clone().requires_grad_() for t in (values, B, G))
    gv, gB = torch.autograd.grad(_product(route, v1, B1, indices), (v1, B1), G1, create_graph=True)
    second_order(gv, gB).backward()

    D = A.detach().to_dense().requires_grad_()
    B2, G2 = (t.detach().clone().requires_grad_() for t in (B, G))
    dA, dB = torch.autograd.grad(D @ B2, (D, B2), G2, create_graph=True)
    second_order(dA[mask], dB).backward()

    assert G1.grad is not None and G2.grad is not None
    assert_close(G1.grad, G2.grad)
    if through == "grad_B":  # ∇B = Aᴴ G does not depend on B
        assert v1.grad is not None and D.grad is not None and B1.grad is None
        assert_close(v1.grad, D.grad[mask])
    else:  # ∇v = (G Bᴴ) at the pattern does not depend on the values
        assert B1.grad is not None and B2.grad is not None and v1.grad is None
        assert_close(B1.grad, B2.grad)


# ============================================================================================
# 4. opcheck: schema, fake (meta) implementation, autograd registration, AOT dispatch
# ============================================================================================

_OPCHECK_CASES = [
    pytest.param(Problem(batch=None, n=4, m=3, p=2, density=0.5, seed=1), id="2d"),
    pytest.param(Problem(batch=3, n=3, m=4, p=2, density=0.5, seed=2), id="batched"),
    pytest.param(Problem(batch=None, n=4, m=3, p=0, density=0.5, seed=3), id="p0"),
    pytest.param(Problem(batch=None, n=4, m=3, p=2, density=0.0, seed=4), id="nnz0"),
]


@pytest.mark.parametrize("requires_grad", [True, False], ids=["grad", "no-grad"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("problem", _OPCHECK_CASES)
def test_opcheck_pattern_mm(problem: Problem, dtype: torch.dtype, requires_grad: bool) -> None:
    A, B, _ = problem.build(layout=torch.sparse_csr, dtype=dtype, device="cpu")
    indices, values = _split(A)
    args = (values.requires_grad_(requires_grad), _rows(B), *indices.tensors)
    torch.library.opcheck(PATTERN_MM, args)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("problem", _OPCHECK_CASES)
def test_opcheck_pattern_sddmm(problem: Problem, dtype: torch.dtype) -> None:
    A, B, G = problem.build(layout=torch.sparse_coo, dtype=dtype, device="cpu")
    indices, _ = _split(A)
    G2, B2 = _rows(G).requires_grad_(), _rows(B).requires_grad_()
    torch.library.opcheck(PATTERN_SDDMM, (G2, B2, *indices.tensors))


# ============================================================================================
# 5. tracers take the registered op
# ============================================================================================


def test_make_fx_records_the_registered_ops() -> None:
    """A tracer's dispatch mode sends the function to the op, forward and backward."""
    from torch.fx.experimental.proxy_tensor import make_fx

    A, B, _ = Problem(batch=None, n=4, m=3, p=2, density=0.5, seed=1).build(
        layout=torch.sparse_csr, dtype=torch.float64, device="cpu"
    )
    indices, values = _split(A)

    def step(v: Tensor, X: Tensor, *index: Tensor) -> tuple[Tensor, ...]:
        traced = dataclasses.replace(indices, **dict(zip(_INDEX_NAMES, index, strict=True)))
        return torch.autograd.grad(pattern_mm(v, X, traced).sum(), (v, X))

    inputs = (values.requires_grad_(), B.requires_grad_(), *indices.tensors)
    graph = make_fx(step, tracing_mode="fake")(*inputs)
    targets = {str(node.target) for node in graph.graph.nodes}
    assert "sparsegrad_lab.pattern_mm.default" in targets
    assert "sparsegrad_lab.pattern_sddmm.default" in targets
    for got, want in zip(graph(*inputs), step(*inputs), strict=True):
        assert_close(got, want)


_INDEX_NAMES = ("crow", "col", "crow_t", "col_t", "perm", "perm_t")


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128], ids=str)
def test_compiled_fullgraph_matches_eager(dtype: torch.dtype) -> None:
    torch._dynamo.reset()
    A, B, G = Problem(batch=2, n=4, m=3, p=2, density=0.5, seed=8).build(
        layout=torch.sparse_coo, dtype=dtype, device="cpu"
    )
    indices, values = _split(A)

    def loss(v: Tensor, X: Tensor) -> Tensor:
        return (pattern_mm(v, X, indices) * G).sum().abs()

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    results = []
    for fn in (loss, compiled):
        v, X = values.clone().requires_grad_(), B.clone().requires_grad_()
        out = fn(v, X)
        out.backward()
        results.append((out.detach(), v.grad, X.grad))
    for got, want in zip(results[1], results[0], strict=True):
        assert got is not None and want is not None
        assert_close(got, want.to(reference_dtype(dtype)))


# ============================================================================================
# 6. edge cases
# ============================================================================================


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex64], ids=str)
@pytest.mark.parametrize(
    ("shape", "p", "kw"),
    [
        pytest.param((5, 4), 3, {"empty_rows": (0, 2), "empty_cols": (1,)}, id="empty-rows"),
        pytest.param((5, 4), 3, {"density": 0.0}, id="nnz0"),
        pytest.param((3, 2, 4), 3, {"density": 0.0}, id="batched-nnz0"),
        pytest.param((5, 4), 0, {}, id="p0"),
        pytest.param((2, 5, 4), 0, {}, id="batched-p0"),
        pytest.param((1, 1), 1, {"density": 1.0}, id="1x1"),
        pytest.param((0, 3), 2, {}, id="no-rows"),
        pytest.param((3, 0), 2, {}, id="no-columns"),
        pytest.param((3, 4, 2), 2, {"empty_rows": (1,)}, id="batched-empty-rows"),
    ],
)
def test_edge_cases_match_the_reference(
    shape: tuple[int, ...], p: int, kw: dict[str, Any], dtype: torch.dtype, route: str
) -> None:
    gen = make_generator(17)
    A = random_sparse(shape, layout=torch.sparse_coo, dtype=dtype, generator=gen, **kw)
    B = random_dense((*shape[:-2], shape[-1], p), dtype=dtype, generator=gen)
    G = random_dense((*shape[:-2], shape[-2], p), dtype=dtype, generator=gen)
    _check_against_reference(route, A, B, G)


@pytest.mark.parametrize("route", ROUTES)
def test_never_forms_the_dense_product(route: str) -> None:
    """n = m = 10⁶: a dense ``n x m`` step (4 TB) could not run; the sampled product can."""
    n = 10**6
    indices = PatternIndices.from_edges([0, 5, n - 1], [n - 1, 5, 0], (n, n))
    values = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    B = torch.ones(n, 2, requires_grad=True)
    C = _product(route, values, B, indices)
    C.sum().backward()
    assert values.grad is not None and B.grad is not None
    assert torch.equal(values.grad, torch.full((3,), 2.0))
    assert C.shape == (n, 2) and float(C.detach().sum()) == 12.0
    assert float(B.grad.sum()) == 12.0


@pytest.mark.parametrize("route", ROUTES)
def test_only_the_gradients_asked_for(route: str) -> None:
    A, B, G = Problem(batch=None, n=4, m=3, p=2, density=0.5, seed=1).build(
        layout=torch.sparse_csr, dtype=torch.float64, device="cpu"
    )
    indices, values = _split(A)
    B.requires_grad_()
    _product(route, values, B, indices).backward(G)
    assert values.grad is None and B.grad is not None
    ref = dense_reference(A, B, G)
    assert_close(B.grad, ref.grad_B)


@pytest.mark.parametrize("route", ROUTES)
def test_non_contiguous_and_conjugated_operands(route: str) -> None:
    gen = make_generator(3)
    A = random_sparse((4, 5), layout=torch.sparse_csr, dtype=torch.complex128, generator=gen)
    X = random_dense((3, 5), dtype=torch.complex128, generator=gen)
    G = random_dense((4, 3), dtype=torch.complex128, generator=gen)
    B = X.mT.conj()  # a transposed view and a lazy conjugation
    assert B.is_conj() and not B.is_contiguous()
    _check_against_reference(route, A, B, G)


def test_batched_values_may_keep_their_batch_dimension() -> None:
    A, B, _ = Problem(batch=2, n=3, m=3, p=2, density=0.6, seed=2).build(
        layout=torch.sparse_csr, dtype=torch.float64, device="cpu"
    )
    indices = PatternIndices.from_sparse(A)
    flat = pattern_mm(A.values().reshape(-1), B, indices)
    assert torch.equal(pattern_mm(A.values(), B, indices), flat)


def test_autocast_computes_in_the_inputs_dtype() -> None:
    A, B, _ = Problem(batch=None, n=4, m=3, p=2, density=0.5, seed=1).build(
        layout=torch.sparse_csr, dtype=torch.float32, device="cpu"
    )
    indices, values = _split(A)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        C = pattern_mm(values, B, indices)
    assert C.dtype == torch.float32
    assert_close(C, dense_reference(A, B, torch.zeros_like(C)).C, dtype=torch.float32)


# ============================================================================================
# 7. the indices
# ============================================================================================


@pytest.mark.parametrize(("layout", "index_dtype"), LAYOUT_INDEX)
@pytest.mark.parametrize("batched", RANKS)
def test_indices_describe_the_matrix_and_its_transpose(
    layout: torch.layout, index_dtype: torch.dtype, batched: bool
) -> None:
    shape = (3, 5, 4) if batched else (5, 4)
    A = random_sparse(shape, layout=layout, generator=make_generator(5), index_dtype=index_dtype)
    indices = PatternIndices.from_sparse(A)
    assert indices.size == shape and indices.batch == (3 if batched else 1)
    assert {t.dtype for t in indices.tensors} == {torch.int32}  # small: int32 throughout
    # The block-diagonal matrix and its transpose, from each half of the indices.
    N, M = indices.crow.shape[0] - 1, indices.crow_t.shape[0] - 1
    ones = torch.arange(1.0, indices.nnz + 1, dtype=torch.float64)
    D = torch.sparse_csr_tensor(indices.crow, indices.col, ones, (N, M)).to_dense()
    T = torch.sparse_csr_tensor(
        indices.crow_t, indices.col_t, ones[indices.perm.long()], (M, N)
    ).to_dense()
    assert torch.equal(T, D.T)
    assert torch.equal(indices.perm[indices.perm_t.long()].long(), torch.arange(indices.nnz))
    assert torch.equal(indices.to_sparse(ones).to_dense(), _values_like(A, ones))


def _values_like(A: Tensor, values: Tensor) -> Tensor:
    A = A.detach().to(torch.float64)
    if A.layout == torch.sparse_coo:
        A = A.coalesce()
        return torch.sparse_coo_tensor(A.indices(), values, A.shape).to_dense()
    return torch.sparse_csr_tensor(
        A.crow_indices(), A.col_indices(), values.reshape(A.values().shape), A.shape
    ).to_dense()


def test_from_pattern_equals_from_sparse() -> None:
    A = random_sparse((2, 4, 5), layout=torch.sparse_coo, generator=make_generator(9))
    from_pattern = PatternIndices.from_pattern(sparsity_pattern(A))
    from_sparse = PatternIndices.from_sparse(A)
    assert from_pattern.size == from_sparse.size == (2, 4, 5)
    for a, b in zip(from_pattern.tensors, from_sparse.tensors, strict=True):
        assert torch.equal(a, b)


def test_from_edges_merges_duplicates_in_row_major_order() -> None:
    indices = PatternIndices.from_edges([1, 0, 1, 1], [0, 2, 0, 1], (2, 3))
    assert indices.nnz == 3
    assert indices.rows().tolist() == [0, 1, 1] and indices.col.tolist() == [2, 0, 1]


def test_the_indices_are_copies_the_caller_cannot_change() -> None:
    A = torch.eye(3).to_sparse_csr()
    indices = PatternIndices.from_sparse(A)
    A.col_indices()[0] = 2  # refilled in place after the check
    assert indices.col.tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        pytest.param(
            lambda: PatternIndices.from_edges([0, 2], [0, 1], (2, 2)),
            InputValueError,
            "the edge list: row index 2 at entry 1 is out of range for 2 rows",
            id="edge-row-out-of-range",
        ),
        pytest.param(
            lambda: PatternIndices.from_edges([0, 1], [0, -1], (2, 2)),
            InputValueError,
            "the edge list: column index -1 at entry 1 is out of range for 2 columns",
            id="edge-negative-column",
        ),
        pytest.param(
            lambda: PatternIndices.from_edges([0, 1], [0], (2, 2)),
            InputValueError,
            "rows and cols must have the same length",
            id="edge-lengths",
        ),
        pytest.param(
            lambda: PatternIndices.from_edges([0.5], [0], (2, 2)),
            InputTypeError,
            "rows must hold integers, got dtype torch.float32",
            id="edge-floats",
        ),
        pytest.param(
            lambda: PatternIndices.from_edges([0], [0], (2, 2, 2)),
            InputTypeError,
            "size must be a pair (n, m) of ints",
            id="edge-size",
        ),
        pytest.param(
            lambda: PatternIndices.from_sparse(torch.eye(2)),
            InputTypeError,
            "PatternIndices.from_sparse: A must be sparse",
            id="dense-A",
        ),
        pytest.param(
            lambda: PatternIndices.from_sparse(
                torch.sparse_csr_tensor(
                    torch.tensor([0, 1, 2]),
                    torch.tensor([0, 3]),
                    torch.ones(2),
                    (2, 2),
                    check_invariants=False,
                )
            ),
            InputValueError,
            "column index 3 at entry 1 is out of range for 2 columns",
            id="csr-column-out-of-range",
        ),
        pytest.param(
            lambda: PatternIndices.from_pattern("not a pattern"),  # type: ignore[arg-type]
            InputTypeError,
            "pattern must be a SparsityPattern, got an object of type str",
            id="not-a-pattern",
        ),
    ],
)
def test_bad_patterns_are_refused_naming_the_fault(
    call: Callable[[], object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=_literal(message)):
        call()


def _literal(text: str) -> str:
    import re

    return re.escape(text)


_INDICES = PatternIndices.from_edges([0, 1], [1, 0], (2, 3))


@pytest.mark.parametrize(
    ("values", "B", "error", "message"),
    [
        pytest.param(
            torch.ones(3),
            torch.ones(3, 2),
            InputValueError,
            "values must have shape (2,), one per stored entry of the pattern of size (2, 3), "
            "got (3,)",
            id="values-shape",
        ),
        pytest.param(
            torch.ones(2),
            torch.ones(2, 2),
            InputValueError,
            "B must have shape (3, 'p') for the pattern of size (2, 3), got (2, 2)",
            id="B-rows",
        ),
        pytest.param(
            torch.ones(2),
            torch.ones(3, 2, dtype=torch.float64),
            InputTypeError,
            "values, B and the indices must share a dtype and a device",
            id="dtypes",
        ),
        pytest.param(
            [1.0, 2.0],
            torch.ones(3, 2),
            InputTypeError,
            "values and B must be torch.Tensors, got an object of type list",
            id="list",
        ),
    ],
)
def test_operands_that_do_not_fit_are_refused(
    values: Tensor, B: Tensor, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=_literal("pattern_mm: " + message)):
        pattern_mm(values, B, _INDICES)


def test_the_op_itself_refuses_a_short_values_vector() -> None:
    """Called directly, without the function's checks, it still never reads out of bounds."""
    with pytest.raises(InputValueError, match=r"values must have shape \(2,\)"):
        PATTERN_MM(torch.ones(1), torch.ones(3, 2), *_INDICES.tensors)
    with pytest.raises(InputValueError, match=r"values must have shape \(2,\)"):
        pattern_mm_2d(torch.ones(1), torch.ones(3, 2), *_INDICES.tensors)


def test_sampled_product_refuses_misfit_operands() -> None:
    with pytest.raises(InputValueError, match=r"pattern_sddmm: G must be \(2, 'p'\)"):
        pattern_sddmm(torch.ones(3, 2), torch.ones(3, 2), _INDICES)
