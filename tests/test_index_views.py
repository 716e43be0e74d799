"""Index tensors that are views: valid sparse tensors whose indices are not contiguous.

torch hands these out and its own ``torch.sparse.mm`` reads them right: the ``indices()``
of a COO tensor built from an ``(nnz, 2)`` edge list as ``edges.t()`` (strides ``(1, 2)``),
indices sliced out of a larger buffer (a storage offset), ``crow_indices()`` and
``col_indices()`` that are a slice or a strided column of another tensor, int32 or int64.
Several of torch's low-level kernels read index storage as if it were contiguous: the
COO -> CSR row-pointer conversion, the CPU CSR product (MKL) on a strided int32 ``col``,
and every kernel handed a CSR tensor built with ``check_invariants=False``. The package
copies such views once where they enter (:mod:`sparsegrad_lab.pattern`).

Every result -- the forward on both sides of ``COO_PRODUCT_MAX_NNZ``, the kept pattern,
``∇A`` and ``∇B`` under ``create_graph=True``, ``sampled_mm`` and its gradients -- is
compared with the dense float64 reference; the case that crashed (heap corruption in
``sampled_mm``) runs in a child process.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable

import pytest
import torch
from support.child_process import run_in_child
from testing import STRATEGIES, assert_close, dense_reference, make_generator, pattern_mask
from torch import Tensor

from sparsegrad_lab import BackwardStrategy, sampled_mm, sparse_mm, sparsity_pattern
from sparsegrad_lab.pattern import (
    contiguous_indices,
    has_contiguous_indices,
    pattern_of,
    strided_index_bytes,
)
from sparsegrad_lab.routes import COO_PRODUCT_MAX_NNZ

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def _coo_from_edges_t(mask: Tensor, values: Tensor) -> Tensor:
    """COO whose ``indices()`` is ``edges.t()`` of a contiguous ``(nnz, 2)`` edge list."""
    edges = mask.nonzero().contiguous()  # nonzero() itself is column-major: make it (nnz, 2)
    return torch.sparse_coo_tensor(edges.t(), values, mask.shape, is_coalesced=True)


def _coo_from_shuffled_edges_t(mask: Tensor, values: Tensor) -> Tensor:
    """As :func:`_coo_from_edges_t`, the edges shuffled: uncoalesced, coalesced by the call."""
    edges = mask.nonzero().contiguous()
    perm = torch.randperm(edges.shape[0], generator=make_generator(3))
    return torch.sparse_coo_tensor(edges[perm].t(), values[perm], mask.shape)


def _coo_from_a_slice(mask: Tensor, values: Tensor) -> Tensor:
    """COO whose ``indices()`` are columns 3: of a larger buffer: a storage offset."""
    indices = mask.nonzero().t().contiguous()
    buffer = torch.cat([torch.zeros(indices.shape[0], 3, dtype=torch.int64), indices], 1)
    return torch.sparse_coo_tensor(buffer[:, 3:], values, mask.shape, is_coalesced=True)


def _csr_views(index_dtype: torch.dtype, *, strided: bool) -> Callable[[Tensor, Tensor], Tensor]:
    """CSR whose ``crow_indices()`` and ``col_indices()`` are views into larger buffers.

    ``strided=False``: slices with a storage offset, which torch's invariant check accepts.
    ``strided=True``: every other element of a buffer (stride 2), which that check refuses
    ("expected col_indices to be a contiguous tensor per batch") but torch builds without
    it -- its default -- and then its CPU product reads a strided int32 ``col`` wrongly.
    """

    def build(mask: Tensor, values: Tensor) -> Tensor:
        template = mask.to(torch.float64).to_sparse_csr()
        crow = template.crow_indices().to(index_dtype)
        col = template.col_indices().to(index_dtype)
        if strided:
            crow, col = (torch.stack([i, torch.zeros_like(i)], 1)[:, 0] for i in (crow, col))
        else:
            crow, col = (torch.cat([torch.zeros(5, dtype=index_dtype), i])[5:] for i in (crow, col))
        return torch.sparse_csr_tensor(crow, col, values, mask.shape, check_invariants=not strided)

    return build


BUILDERS = [
    pytest.param(_coo_from_edges_t, id="coo-edges.t()"),
    pytest.param(_coo_from_shuffled_edges_t, id="coo-edges.t()-uncoalesced"),
    pytest.param(_coo_from_a_slice, id="coo-slice"),
    pytest.param(_csr_views(torch.int64, strided=False), id="csr-int64-offsets"),
    pytest.param(_csr_views(torch.int32, strided=False), id="csr-int32-offsets"),
    pytest.param(_csr_views(torch.int64, strided=True), id="csr-int64-strided"),
    pytest.param(_csr_views(torch.int32, strided=True), id="csr-int32-strided"),
]

#: Below and above COO_PRODUCT_MAX_NNZ: a small COO ``A`` takes torch's COO product, a
#: larger one the CSR product through the pattern's row pointers.
SIZES = [
    pytest.param((20, 16, 0.3), id="few-entries"),
    pytest.param((80, 70, 0.25), id="many-entries"),
]


def _problem(
    build: Callable[[Tensor, Tensor], Tensor], size: tuple[int, int, float]
) -> tuple[Tensor, Tensor, Tensor]:
    n, m, density = size
    gen = make_generator(7)
    mask = torch.rand(n, m, generator=gen) < density
    A = build(mask, torch.randn(int(mask.sum()), dtype=torch.float64, generator=gen))
    B = torch.randn(m, 3, dtype=torch.float64, generator=gen)
    G = torch.randn(n, 3, dtype=torch.float64, generator=gen)
    return A, B, G


def test_the_builders_give_index_views() -> None:
    nnz_small = _problem(_coo_from_edges_t, (20, 16, 0.3))[0]._nnz()
    nnz_large = _problem(_coo_from_edges_t, (80, 70, 0.25))[0]._nnz()
    assert nnz_small <= COO_PRODUCT_MAX_NNZ < nnz_large  # both products are exercised
    for param in BUILDERS:
        A = _problem(param.values[0], (20, 16, 0.3))[0]
        if A.layout == torch.sparse_coo:
            assert not A._indices().is_contiguous()
        elif has_contiguous_indices(A):
            assert A.crow_indices().storage_offset() > 0 and A.col_indices().storage_offset() > 0
        else:
            assert A.crow_indices().stride() == A.col_indices().stride() == (2,)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("build", BUILDERS)
@pytest.mark.parametrize("kept", [False, True], ids=["pattern-per-call", "kept-pattern"])
def test_sparse_mm_with_index_views(
    build: Callable[[Tensor, Tensor], Tensor], size: tuple[int, int, float], kept: bool
) -> None:
    A, B, G = _problem(build, size)
    pattern = sparsity_pattern(A) if kept else None
    ref = dense_reference(A, B, G)
    assert_close(sparse_mm(A, B, pattern=pattern), ref.C)
    # Under create_graph the backward runs through the transpose of the pattern.
    A_leaf, B_leaf = A.detach().requires_grad_(), B.clone().requires_grad_()
    C = sparse_mm(A_leaf, B_leaf, pattern=pattern)
    grad_A, grad_B = torch.autograd.grad(C, (A_leaf, B_leaf), G, create_graph=True)
    assert_close(grad_A, ref.grad_A)
    assert_close(grad_B, ref.grad_B)
    # And a first-order backward, on its own routes (scatter, shared gather).
    C = sparse_mm(A_leaf, B_leaf, pattern=pattern)
    grad_A, grad_B = torch.autograd.grad(C, (A_leaf, B_leaf), G)
    assert_close(grad_A, ref.grad_A)
    assert_close(grad_B, ref.grad_B)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("build", BUILDERS)
def test_sampled_mm_with_index_views(
    build: Callable[[Tensor, Tensor], Tensor],
    size: tuple[int, int, float],
    strategy: BackwardStrategy,
) -> None:
    A, _B, _G = _problem(build, size)
    n, m = A.shape
    gen = make_generator(8)
    X = torch.randn(n, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    Y = torch.randn(4, m, dtype=torch.float64, generator=gen, requires_grad=True)
    mask = pattern_mask(A)
    H = torch.randn(n, m, dtype=torch.float64, generator=gen) * mask  # upstream on the pattern
    for pattern in (None, sparsity_pattern(A)):
        S = sampled_mm(A, X, Y, backward=strategy, pattern=pattern)
        assert_close(S, (X.detach() @ Y.detach()) * mask)
        assert has_contiguous_indices(S)  # torch's own kernels may use the result
        grad_X, grad_Y = torch.autograd.grad(S.values(), (X, Y), H[mask])
        assert_close(grad_X, H @ Y.detach().T)
        assert_close(grad_Y, X.detach().T @ H)


def test_pattern_indices_are_contiguous_copies_of_views() -> None:
    A = _problem(_coo_from_edges_t, (20, 16, 0.3))[0]
    pattern = pattern_of(A)
    assert pattern.row.is_contiguous() and pattern.col.is_contiguous()
    # (A.to_sparse_csr() gets this wrong: torch's conversion reads the view as contiguous.)
    rows = A._indices()[0].contiguous()
    expected = torch.cat([torch.zeros(1, dtype=torch.int64), rows.bincount(minlength=20).cumsum(0)])
    assert torch.equal(pattern.crow, expected)
    assert strided_index_bytes(A) == A._indices().numel() * 8
    assert strided_index_bytes(contiguous_indices(A)) == 0
    assert torch.equal(contiguous_indices(A).indices(), A.indices())


_CRASH = """
import torch
torch.sparse.check_sparse_tensor_invariants.disable()  # as in any user's session
import sparsegrad_lab
pos = torch.tensor([[0, 5], [0, 99999], [1, 50000], [2, 77777]])
A = torch.sparse_coo_tensor(pos.t(), torch.ones(4), (3, 100000), is_coalesced=True)
X, Y = torch.randn(3, 2, dtype=torch.float64), torch.randn(2, 100000, dtype=torch.float64)
expected = (X @ Y)[pos[:, 0], pos[:, 1]]
{call}
print("done")
"""


@pytest.mark.parametrize(
    "call",
    [
        "for _ in range(20):\n"
        "    S = sparsegrad_lab.sampled_mm(A, X, Y)\n"
        "    assert torch.allclose(S.coalesce().values(), expected), S",
        "for _ in range(20):\n"
        "    crow = sparsegrad_lab.sparsity_pattern(A).crow\n"
        "    assert crow.tolist() == [0, 2, 3, 4], crow",
    ],
    ids=["sampled_mm", "sparsity_pattern"],
)
def test_the_reported_crash_in_a_child_process(call: str) -> None:
    status, output = run_in_child(_CRASH.format(call=textwrap.dedent(call)))
    assert status == 0, f"exit status {status}:\n{output}"
    assert "done" in output
