"""Tests of a kept pattern: ``sparsity_pattern(A)`` passed to ``sparse_mm(..., pattern=)``.

A kept pattern must give exactly what a fresh call gives, step after step with new values,
while computing its transpose only once; and it must refuse any ``A`` whose indices differ
from those it was built from, naming the difference. ``sparse_mm`` with a kept pattern and
``pattern_mm(values, B, kept)`` run the same registered operator on the pattern's tensors.
"""

from __future__ import annotations

import pytest
import torch
from testing import (
    DEVICE_PARAMS,
    LAYOUT_INDEX,
    STRATEGIES,
    assert_close,
    assert_same_pattern,
    dense_reference,
    make_generator,
    pattern_mask,
    random_dense,
    random_sparse,
    sparse_from_mask,
    uncoalesced_coo,
)
from torch import Tensor

from sparsegrad_lab import (
    BackwardStrategy,
    InputTypeError,
    InputValueError,
    SparsityPattern,
    csr_tensor,
    pattern_mm,
    sparse_mm,
    sparsity_pattern,
)

pytestmark = pytest.mark.usefixtures("torch_single_thread")

SHAPES = [pytest.param((5, 4), id="2d"), pytest.param((3, 5, 4), id="3d")]


def with_values(A: Tensor, values: Tensor) -> Tensor:
    """A new sparse tensor with ``A``'s index tensors (shared, not copied) and ``values``."""
    if A.layout == torch.sparse_coo:
        return torch.sparse_coo_tensor(A.indices(), values, A.shape, is_coalesced=True)
    return torch.sparse_csr_tensor(A.crow_indices(), A.col_indices(), values, A.shape)


def _first_A(layout: torch.layout, index_dtype: torch.dtype, shape: tuple[int, ...]) -> Tensor:
    return random_sparse(
        shape, layout=layout, index_dtype=index_dtype, density=0.5, generator=make_generator(1)
    )


@pytest.mark.parametrize("device", DEVICE_PARAMS)
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("layout", "index_dtype"), LAYOUT_INDEX)
def test_kept_pattern_matches_the_reference_step_after_step(
    layout: torch.layout,
    index_dtype: torch.dtype,
    shape: tuple[int, ...],
    strategy: BackwardStrategy,
    device: torch.device,
) -> None:
    A0 = _first_A(layout, index_dtype, shape).to(device)
    pattern = sparsity_pattern(A0)
    generator = make_generator(2)
    transposes = []
    for _step in range(3):
        values = random_dense(A0.values().shape, generator=generator).to(device)
        A = with_values(A0, values.requires_grad_())
        B = random_dense((*shape[:-2], shape[-1], 3), generator=generator).to(device)
        G = random_dense((*shape[:-1], 3), generator=generator).to(device)
        B.requires_grad_()
        C = sparse_mm(A, B, backward=strategy, pattern=pattern)
        C.backward(G)
        ref = dense_reference(A, B, G)
        assert_close(C, ref.C)
        assert_close(B.grad, ref.grad_B)
        assert values.grad is not None  # aligned with A's stored entries, in A's order
        assert_close(with_values(A0, values.grad).to_dense(), ref.grad_A)
        assert pattern.has_transpose()  # built by the first backward, kept since
        transposes.append(pattern.transpose)
    assert transposes[1] is transposes[0] and transposes[2] is transposes[0]


@pytest.mark.parametrize(("layout", "index_dtype"), LAYOUT_INDEX)
def test_kept_pattern_gives_A_grad_in_A_layout(
    layout: torch.layout, index_dtype: torch.dtype
) -> None:
    A = _first_A(layout, index_dtype, (5, 4)).requires_grad_()
    B = random_dense((4, 2), generator=make_generator(3))
    pattern = sparsity_pattern(A)
    sparse_mm(A, B, pattern=pattern).sum().backward()
    assert A.grad is not None
    assert_same_pattern(A.grad, A)


@pytest.mark.parametrize(("layout", "index_dtype"), LAYOUT_INDEX)
def test_kept_pattern_double_backward(layout: torch.layout, index_dtype: torch.dtype) -> None:
    A0 = _first_A(layout, index_dtype, (4, 3))
    pattern = sparsity_pattern(A0)
    generator = make_generator(4)
    values = random_dense(A0.values().shape, generator=generator).requires_grad_()
    B = random_dense((3, 2), generator=generator).requires_grad_()

    def product(values: Tensor, B: Tensor) -> Tensor:
        return sparse_mm(with_values(A0, values), B, pattern=pattern)

    assert torch.autograd.gradcheck(product, (values, B))
    assert torch.autograd.gradgradcheck(product, (values, B))


def test_kept_pattern_serves_an_uncoalesced_coo_with_the_same_positions() -> None:
    generator = make_generator(5)
    indices, values = uncoalesced_coo((4, 5), nnz=6, duplicates=3, generator=generator)
    A = torch.sparse_coo_tensor(indices, values, (4, 5)).requires_grad_()
    B = random_dense((5, 2), generator=generator)
    pattern = sparsity_pattern(A.detach().coalesce())
    sparse_mm(A, B, pattern=pattern).sum().backward()
    A_fresh = A.detach().clone().requires_grad_()
    sparse_mm(A_fresh, B).sum().backward()
    assert A.grad is not None and A_fresh.grad is not None
    assert_close(A.grad.to_dense(), A_fresh.grad.to_dense())


_DENSE = [[1, 0, 2, 0], [0, 3, 0, 0], [4, 0, 0, 5], [0, 0, 6, 0], [0, 7, 0, 8]]  # 8 entries


def _mismatched_pair(case: str) -> tuple[Tensor, Tensor]:
    """``(built_from, used_with)`` for one way a later ``A`` can differ from the kept one."""
    coo = torch.tensor(_DENSE, dtype=torch.float64).to_sparse()
    csr = coo.to_sparse_csr()
    shifted = torch.sparse_coo_tensor(  # every entry one row down (cyclically)
        (coo.indices() + torch.tensor([[1], [0]])) % torch.tensor([[5], [4]]),
        coo.values(),
        coo.shape,
    ).coalesce()
    used_with = {
        "coo-other-positions": (coo, shifted),
        "nnz": (coo, torch.sparse_coo_tensor(coo.indices()[:, 1:], coo.values()[1:], coo.shape)),
        "layout": (coo, csr),
        "shape": (coo, torch.sparse_coo_tensor(coo.indices(), coo.values(), (5, 6))),
        "index-dtype": (
            csr,
            torch.sparse_csr_tensor(
                csr.crow_indices().int(), csr.col_indices().int(), csr.values(), csr.shape
            ),
        ),
        "csr-positions": (csr, shifted.to_sparse_csr()),
        "same-positions-uncoalesced": (
            coo,
            torch.sparse_coo_tensor(coo.indices().flip(1), coo.values().flip(0), coo.shape),
        ),
    }
    return used_with[case]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("coo-other-positions", r"its indices\(\) differ"),
        ("nnz", "it has 7 stored entries per matrix, but .* from 8"),
        ("layout", "its layout is torch.sparse_csr"),
        ("shape", r"its shape is \(5, 6\), but .* shape \(5, 4\)"),
        ("index-dtype", r"its crow_indices\(\) are torch.int32, .* from torch.int64"),
        ("csr-positions", r"its (crow|col)_indices\(\) differ"),
        ("same-positions-uncoalesced", None),
    ],
)
def test_kept_pattern_refuses_another_pattern(case: str, message: str | None) -> None:
    built_from, used_with = _mismatched_pair(case)
    pattern = sparsity_pattern(built_from)
    B = torch.ones(used_with.shape[-1], 2, dtype=used_with.dtype)
    if message is None:  # the same positions, only stored in another order: accepted
        assert_close(sparse_mm(used_with, B, pattern=pattern), used_with.to_dense() @ B)
        return
    with pytest.raises(
        InputValueError, match=f"^sparse_mm: pattern does not belong to A: {message}"
    ):
        sparse_mm(used_with, B, pattern=pattern)


def test_pattern_argument_must_be_a_kept_pattern() -> None:
    A = torch.eye(3, dtype=torch.float64).to_sparse_csr()
    B = torch.ones(3, 1, dtype=torch.float64)
    with pytest.raises(InputTypeError, match=r"pattern must be a SparsityPattern .* got .* Tensor"):
        sparse_mm(A, B, pattern=A)  # type: ignore[arg-type]
    derived = sparsity_pattern(A).transpose.pattern
    assert isinstance(derived, SparsityPattern)
    with pytest.raises(InputValueError, match=r"not built by sparsity_pattern\(A\)"):
        sparse_mm(A, B, pattern=derived)


@pytest.mark.parametrize(
    ("A", "error", "message"),
    [
        pytest.param(torch.eye(2), InputTypeError, "A must be sparse", id="dense"),
        pytest.param([[1.0]], InputTypeError, "A must be a sparse torch.Tensor", id="list"),
        pytest.param(torch.ones(1, 1, 1, 1).to_sparse(), InputValueError, "A must be 2-D", id="4d"),
    ],
)
def test_sparsity_pattern_rejects_what_sparse_mm_rejects(
    A: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"^sparsity_pattern: {message}"):
        sparsity_pattern(A)  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("layout", "index_dtype"), LAYOUT_INDEX)
def test_index_buffers_refilled_in_place_are_refused(
    layout: torch.layout, index_dtype: torch.dtype, shape: tuple[int, ...]
) -> None:
    """Refilling the very index tensors ``A`` was built from must not pass as "same indices".

    torch's index accessors do not share a version counter with those buffers, so without
    its own copy a kept pattern would compare them with themselves (and, for 2-D CSR, serve
    a stale transpose).
    """
    first = _first_A(layout, index_dtype, shape)
    # Another graph with as many entries (per item): the first one's columns reversed.
    flipped = pattern_mask(first).flip(-1)
    other = sparse_from_mask(flipped, first.values(), layout=layout, index_dtype=index_dtype)
    if layout == torch.sparse_coo:
        buffers, new = [first.indices().clone()], [other.indices()]
        A = torch.sparse_coo_tensor(buffers[0], first.values(), shape, is_coalesced=True)
    else:
        buffers = [first.crow_indices().clone(), first.col_indices().clone()]
        new = [other.crow_indices(), other.col_indices()]
        A = torch.sparse_csr_tensor(buffers[0], buffers[1], first.values(), shape)
    assert not all(torch.equal(b, n) for b, n in zip(buffers, new, strict=True))
    B = random_dense((*shape[:-2], shape[-1], 2), generator=make_generator(3))
    pattern = sparsity_pattern(A)
    sparse_mm(A, B, pattern=pattern)
    for buffer, refill in zip(buffers, new, strict=True):
        buffer.copy_(refill)  # the same tensors now hold another graph
    with pytest.raises(InputValueError, match=r"pattern does not belong to A: its .* differ"):
        sparse_mm(A, B, pattern=pattern)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128], ids=["float64", "complex128"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("layout", "index_dtype"), LAYOUT_INDEX)
def test_sparse_mm_and_pattern_mm_share_one_operator_on_a_kept_pattern(
    layout: torch.layout, index_dtype: torch.dtype, shape: tuple[int, ...], dtype: torch.dtype
) -> None:
    """``sparse_mm(A, B, pattern=kept)`` and ``pattern_mm(values, B, kept)``: one op, one
    derivative, the kept pattern's own index tensors -- so the same numbers, bit for bit,
    and the same transpose, built once for both."""
    A0 = _first_A(layout, index_dtype, shape)
    kept = sparsity_pattern(A0)
    generator = make_generator(6)
    values = random_dense(A0.values().shape, generator=generator, dtype=dtype)
    B = random_dense((*shape[:-2], shape[-1], 3), generator=generator, dtype=dtype)
    G = random_dense((*shape[:-1], 3), generator=generator, dtype=dtype)

    def grads(use_sparse_mm: bool) -> list[Tensor]:
        v, b = values.clone().requires_grad_(), B.clone().requires_grad_()
        if use_sparse_mm:
            # csr_tensor: torch's own CSR constructor takes no complex values needing grad.
            A = (
                with_values(A0, v)
                if layout == torch.sparse_coo
                else csr_tensor(A0.crow_indices(), A0.col_indices(), v, tuple(A0.shape))
            )
            C = sparse_mm(A, b, pattern=kept)
        else:
            C = pattern_mm(v.reshape(-1), b, kept)
        C.backward(G)
        assert v.grad is not None and b.grad is not None
        return [C.detach(), v.grad.reshape(-1), b.grad]

    by_sparse_mm = grads(True)
    transpose = kept.transpose
    for got, want in zip(grads(False), by_sparse_mm, strict=True):
        assert torch.equal(got, want)
    assert kept.transpose is transpose
    ref = dense_reference(with_values(A0, values), B, G)
    assert_close(by_sparse_mm[0], ref.C)
    assert_close(by_sparse_mm[2], ref.grad_B)
    assert_close(with_values(A0, by_sparse_mm[1].reshape(values.shape)).to_dense(), ref.grad_A)


def test_a_kept_pattern_builds_its_transpose_only_for_a_gradient() -> None:
    A = _first_A(torch.sparse_csr, torch.int64, (5, 4))
    kept = sparsity_pattern(A)
    B = torch.ones(4, 2, dtype=A.dtype)
    sparse_mm(A, B, pattern=kept)  # a forward alone: nothing to sort
    assert not kept.has_transpose()
    sparse_mm(A.requires_grad_(), B, pattern=kept)
    assert kept.has_operator_indices() and kept.has_transpose()


def test_pattern_mm_refuses_a_pattern_that_was_not_kept() -> None:
    A = torch.eye(3, dtype=torch.float64).to_sparse()
    values, B = torch.ones(3, dtype=torch.float64), torch.ones(3, 1, dtype=torch.float64)
    with pytest.raises(InputValueError, match=r"^pattern_mm: pattern was not built by sparsity_"):
        pattern_mm(values, B, sparsity_pattern(A).transpose.pattern)
    with pytest.raises(InputTypeError, match=r"^pattern_mm: indices must be PatternIndices or"):
        pattern_mm(values, B, A)  # type: ignore[arg-type]
