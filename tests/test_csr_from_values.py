"""Tests of ``csr_from_values``: ``csr_tensor`` and the autograd functions behind it.

``csr_tensor(crow, col, v, size)`` must build the tensor torch would, check its structure,
give ``v`` the upstream gradient read at the stored positions (a plain strided tensor, even
for complex values), keep autograd's in-place check, and be differentiable twice: second
derivatives through ``v`` are compared with a dense float64 reference by hand, not only by
``gradgradcheck`` (which drops outputs without ``grad_fn`` and so could miss a term).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
from testing import assert_close, make_generator, pattern_mask, random_dense, random_sparse
from torch import Tensor

from sparsegrad_lab import InputTypeError, InputValueError, sparse_mm
from sparsegrad_lab.csr_from_values import csr_tensor
from sparsegrad_lab.example_matrices import uniform_random
from sparsegrad_lab.measurement import measure_peak_bytes

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def test_csr_tensor_builds_without_warning_and_shares_indices() -> None:
    crow = torch.tensor([0, 1, 1, 3])
    col = torch.tensor([2, 0, 1])
    values = torch.tensor([5.0, 6.0, 7.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's beta-state notice would fail here
        A = csr_tensor(crow, col, values, (3, 3))
    assert A.layout == torch.sparse_csr and A.shape == (3, 3)
    expected = torch.tensor([[0.0, 0.0, 5.0], [0.0, 0.0, 0.0], [6.0, 7.0, 0.0]])
    assert torch.equal(A.to_dense(), expected)
    # The indices are not copied.
    assert A.crow_indices().data_ptr() == crow.data_ptr()
    assert A.col_indices().data_ptr() == col.data_ptr()


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64], ids=str)
def test_csr_tensor_keeps_index_dtype(index_dtype: torch.dtype) -> None:
    crow = torch.tensor([0, 2], dtype=index_dtype)
    col = torch.tensor([0, 3], dtype=index_dtype)
    A = csr_tensor(crow, col, torch.tensor([1.0, 2.0]), (1, 4))
    assert A.crow_indices().dtype == A.col_indices().dtype == index_dtype
    assert A.to_dense().tolist() == [[1.0, 0.0, 0.0, 2.0]]


def _upstream(kind: str, shape: tuple[int, ...], A: Tensor, generator: torch.Generator) -> Tensor:
    """An upstream gradient for A: dense, or sparse with A's or with other positions."""
    dense = random_dense(shape, generator=generator)
    if kind == "dense":
        return dense
    if kind == "same-positions":
        return csr_tensor(A.crow_indices(), A.col_indices(), A.values() * 0 + 7.0, A.shape)
    other = random_sparse(shape, layout=torch.sparse_coo, density=0.5, generator=generator)
    return other if kind == "other-coo" else other.to_sparse_csr()


@pytest.mark.parametrize("shape", [(5, 4), (3, 5, 4)], ids=["2d", "3d"])
@pytest.mark.parametrize("kind", ["dense", "same-positions", "other-coo", "other-csr"])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64], ids=str)
def test_csr_tensor_values_gradient_is_the_upstream_at_the_stored_positions(
    kind: str, shape: tuple[int, ...], index_dtype: torch.dtype
) -> None:
    generator = make_generator(11)
    A0 = random_sparse(
        shape, layout=torch.sparse_csr, index_dtype=index_dtype, density=0.5, generator=generator
    )
    values = A0.values().clone().requires_grad_()
    A = csr_tensor(A0.crow_indices(), A0.col_indices(), values, tuple(A0.shape))
    if kind == "other-csr" and len(shape) == 3:
        pytest.skip("torch cannot convert a batched COO tensor with unequal nnz per item to CSR")
    G = _upstream(kind, shape, A0, generator)
    (grad,) = torch.autograd.grad(A, values, G)
    expected = G.to_dense()[pattern_mask(A0)]  # the stored positions, in CSR (row-major) order
    assert grad.shape == values.shape
    assert_close(grad.reshape(-1), expected)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128], ids=str)
def test_csr_tensor_is_differentiable_twice_through_sparse_mm(dtype: torch.dtype) -> None:
    # complex128 too: torch.sparse_csr_tensor refuses complex values that require grad.
    generator = make_generator(12)
    A0 = random_sparse(
        (4, 3), layout=torch.sparse_csr, dtype=dtype, density=0.6, generator=generator
    )
    values = A0.values().clone().requires_grad_()
    B = random_dense((3, 2), dtype=dtype, generator=generator).requires_grad_()

    def product(values: Tensor, B: Tensor) -> Tensor:
        return sparse_mm(csr_tensor(A0.crow_indices(), A0.col_indices(), values, A0.shape), B)

    assert torch.autograd.gradcheck(product, (values, B))
    if not dtype.is_complex:  # torch 2.13: complex double backward through CSR needs strides
        assert torch.autograd.gradgradcheck(product, (values, B))


def test_csr_tensor_backward_memory_grows_with_nnz_not_with_n_times_m() -> None:
    # torch's own constructor backward grows with n m here (lesson 03 section 9 shows it).
    n, nnz = 20_000, 200_000
    A0 = uniform_random(n, n, nnz=nnz, seed=1, layout="csr")
    values = A0.values().clone().requires_grad_()
    B = torch.randn(n, 8)

    def step() -> None:
        A = csr_tensor(A0.crow_indices(), A0.col_indices(), values, tuple(A0.shape))
        sparse_mm(A, B).sum().backward()

    step()
    with torch.sparse.check_sparse_tensor_invariants(enable=False):
        peak = measure_peak_bytes(step)
    assert peak < 40 * nnz  # a few value/index vectors of length nnz, C and its gradient


# --------------------------------------------------------------------------------------------
# second derivatives through the values, against a dense float64 reference
# --------------------------------------------------------------------------------------------


def _dense_from(values: Tensor, A0: Tensor) -> Tensor:
    """The dense matrix with ``values`` at ``A0``'s positions, differentiable in ``values``."""
    positions = pattern_mask(A0).nonzero(as_tuple=True)  # row-major: CSR value order
    dense = torch.zeros(A0.shape, dtype=values.dtype)
    return dense.index_put(positions, values.reshape(-1))


def _second_order(
    build: Callable[[Tensor], Tensor], mm: Callable[[Tensor, Tensor], Tensor], v: Tensor, B: Tensor
) -> tuple[Tensor, Tensor]:
    """``∂L2/∂v`` and ``∂L2/∂B`` for ``L2 = ⟨∇v L, U⟩ + ⟨∇B L, W⟩``, ``L = ‖A(v) B‖² / 2``.

    ``L``'s upstream gradient is ``C`` itself, so ``∇v L = (C Bᵀ) at the pattern`` depends on
    ``v`` and ``B``, and every second-order term -- also those through ``∇v L`` -- counts.
    """
    v, B = v.detach().clone().requires_grad_(), B.detach().clone().requires_grad_()
    C = mm(build(v), B)
    grad_v, grad_B = torch.autograd.grad((C * C).sum() / 2, (v, B), create_graph=True)
    gen = make_generator(21)
    U = random_dense(tuple(grad_v.shape), generator=gen)
    W = random_dense(tuple(grad_B.shape), generator=gen)
    ((grad_v * U).sum() + (grad_B * W).sum()).backward()
    assert v.grad is not None and B.grad is not None
    return v.grad, B.grad


@pytest.mark.parametrize("shape", [(5, 4), (3, 5, 4)], ids=["2d", "3d"])
@pytest.mark.parametrize("strategy", ["sddmm", "gather", "dense"])
def test_csr_tensor_second_derivatives_match_the_dense_reference(
    shape: tuple[int, ...], strategy: str
) -> None:
    gen = make_generator(22)
    A0 = random_sparse(shape, layout=torch.sparse_csr, density=0.5, generator=gen)
    B = random_dense((*shape[:-2], shape[-1], 3), generator=gen)
    crow, col = A0.crow_indices(), A0.col_indices()

    def build(v: Tensor) -> Tensor:
        return csr_tensor(crow, col, v, tuple(A0.shape))

    def ours(A: Tensor, B: Tensor) -> Tensor:
        return sparse_mm(A, B, backward=strategy)  # type: ignore[arg-type]

    got_v, got_B = _second_order(build, ours, A0.values(), B)
    ref_v, ref_B = _second_order(lambda v: _dense_from(v, A0), torch.matmul, A0.values(), B)
    assert_close(got_v, ref_v)
    assert_close(got_B, ref_B)


# --------------------------------------------------------------------------------------------
# what the issue found broken: complex gradients, in-place values, messages
# --------------------------------------------------------------------------------------------


def test_complex_values_gradient_is_a_plain_strided_tensor() -> None:
    crow, col = torch.tensor([0, 1, 2]), torch.tensor([1, 0])
    v = torch.tensor([1 + 1j, 2j], requires_grad=True)
    A = csr_tensor(crow, col, v, (2, 2))
    (grad,) = torch.autograd.grad(sparse_mm(A, torch.ones(2, 1, dtype=v.dtype)).real.sum(), v)
    assert grad.layout == torch.strided and grad._base is None
    # torch.real and view_as_real re-view the tensor: a view of a sparse tensor cannot be.
    assert torch.equal(torch.real(grad), torch.ones(2))
    assert torch.view_as_real(grad).shape == (2, 2)


@pytest.mark.parametrize("batched", [False, True], ids=["2d", "3d"])
def test_values_modified_in_place_after_the_forward_are_refused(batched: bool) -> None:
    shape = (2, 3, 3) if batched else (3, 3)
    A0 = random_sparse(shape, layout=torch.sparse_csr, density=0.6, generator=make_generator(5))
    v = A0.values().clone().requires_grad_()
    values = v * 1.0  # a non-leaf, which may be modified in place
    C = sparse_mm(
        csr_tensor(A0.crow_indices(), A0.col_indices(), values, A0.shape),
        torch.ones(*shape[:-1], 1, dtype=torch.float64),
    )
    with torch.no_grad():
        values.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        C.sum().backward()


@pytest.mark.parametrize(
    ("args", "error", "words"),
    [
        (([0, 1], [0], torch.ones(1), (1, 1)), InputTypeError, "crow must be a dense"),
        ((torch.tensor([0, 1]), torch.tensor([0]), [1.0], (1, 1)), InputTypeError, "values must"),
        ((torch.tensor([0, 1]), torch.tensor([0]), torch.ones(1), None), InputTypeError, "size"),
        (
            (torch.tensor([0, 1]), torch.tensor([0]), torch.ones(1), (1, -1)),
            InputValueError,
            "size[1] must be >= 0",
        ),
        (
            (torch.tensor([0, 1]), torch.tensor([0]), torch.ones(2), (1, 1)),
            InputValueError,
            "values must have col's shape (1,)",
        ),
        (
            (torch.tensor([0, 1]), torch.tensor([0]), torch.ones(0), (1, 1)),
            InputValueError,
            "one value per column index",
        ),
        (
            (torch.tensor([0, 1, 1]), torch.tensor([0]), torch.ones(1), (1, 1)),
            InputValueError,
            "crow must have shape (2,)",
        ),
        (
            (torch.tensor([0, 1]), torch.tensor([0], dtype=torch.int32), torch.ones(1), (1, 1)),
            InputTypeError,
            "must both be int32 or both int64",
        ),
        (
            (torch.tensor([[0, 1]]), torch.tensor([0]), torch.ones(1), (1, 1, 1)),
            InputValueError,
            "col must have shape",
        ),
    ],
    ids=[
        "crow-list",
        "values-list",
        "size-None",
        "size-negative",
        "more-values",
        "fewer-values",
        "crow-length",
        "index-dtypes",
        "batched-col",
    ],
)
def test_csr_tensor_refuses_malformed_parts(
    args: tuple, error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=r"^csr_tensor: ") as info:
        csr_tensor(*args)
    assert words in str(info.value)


_EMPTY_ROWS = (torch.zeros(3, dtype=torch.int64), torch.zeros(0, dtype=torch.int64), torch.ones(0))


@pytest.mark.parametrize(
    ("size", "error", "words"),
    [
        ((2, 2**63), InputValueError, "size[1] is 9223372036854775808, more than torch's int64"),
        ((2, 2**62), InputValueError, "holds 9223372036854775808 elements, more than torch can"),
        ((2, 2**63 - 1), InputValueError, "holds 18446744073709551614 elements"),
        ((2, -3), InputValueError, "size[1] must be >= 0, got -3"),
        ((2, 2.0), InputTypeError, "size[1] must be an int, got float"),
        ((2, True), InputTypeError, "size[1] must be an int, got bool"),
        ((2, "4"), InputTypeError, "size[1] must be an int, got str"),
    ],
    ids=["2**63", "numel-2**63", "numel-2**64", "negative", "float", "bool", "str"],
)
def test_csr_tensor_refuses_a_size_torch_cannot_hold(
    size: tuple, error: type[Exception], words: str
) -> None:
    """A size torch cannot count failed inside torch, with a C++ source location."""
    with pytest.raises(error, match=r"^csr_tensor: ") as info:
        csr_tensor(*_EMPTY_ROWS, size)
    assert words in str(info.value)
    assert "Exception raised from" not in str(info.value)


def test_csr_tensor_accepts_the_largest_size_torch_holds() -> None:
    A = csr_tensor(*_EMPTY_ROWS, (2, 2**62 - 1))  # 2**63 - 2 elements: within int64
    assert A.shape == (2, 2**62 - 1)
    assert csr_tensor(torch.zeros(1, dtype=torch.int64), *_EMPTY_ROWS[1:], (0, 2**63 - 1)).shape


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="torch 2.13: the backward of torch.sparse_coo_tensor / torch.sparse_csr_tensor in "
    "the values is not differentiable, so second derivatives through a tensor they build miss "
    "the terms that flow through ∇v -- silently (gradgradcheck drops such outputs); "
    "csr_tensor (above) is the way to get them",
)
@pytest.mark.parametrize("constructor", ["sparse_coo_tensor", "sparse_csr_tensor"])
def test_second_derivatives_through_torch_constructors_are_incomplete(constructor: str) -> None:
    gen = make_generator(23)
    A0 = random_sparse((5, 4), layout=torch.sparse_csr, density=0.5, generator=gen)
    B = random_dense((4, 3), generator=gen)
    crow, col = A0.crow_indices(), A0.col_indices()
    coo_indices = A0.to_sparse_coo().indices()

    def build(v: Tensor) -> Tensor:
        if constructor == "sparse_coo_tensor":
            return torch.sparse_coo_tensor(coo_indices, v, A0.shape)
        return torch.sparse_csr_tensor(crow, col, v, A0.shape)

    got_v, got_B = _second_order(build, sparse_mm, A0.values(), B)
    ref_v, ref_B = _second_order(lambda v: _dense_from(v, A0), torch.matmul, A0.values(), B)
    assert_close(got_v, ref_v)
    assert_close(got_B, ref_B)
