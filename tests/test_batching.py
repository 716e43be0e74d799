"""Tests for sparse_block_diag, sparse_block_diag_split and stack_csr."""

from __future__ import annotations

import textwrap

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from support.child_process import run_in_child
from testing import DEVICE_PARAMS, LAYOUTS

from sparsegrad_lab.batching import sparse_block_diag, sparse_block_diag_split, stack_csr
from sparsegrad_lab.errors import InputTypeError, InputValueError
from sparsegrad_lab.index_checks import FEW_ENTRIES
from sparsegrad_lab.ops import sparse_mm

INDEX_DTYPES = [torch.int32, torch.int64]


# ---------------------------------------------------------------------------- helpers


def random_dense(
    n: int, m: int, density: float, *, gen: torch.Generator, dtype=torch.float64, device="cpu"
) -> torch.Tensor:
    """A dense (n, m) matrix with about density * n * m nonzeros (never exactly zero)."""
    mask = torch.rand(n, m, generator=gen) < density
    values = torch.rand(n, m, generator=gen) + 0.5  # away from 0 so the pattern is the mask
    if dtype.is_complex:
        values = torch.complex(values, torch.rand(n, m, generator=gen) + 0.5)
    return (values * mask).to(dtype=dtype, device=device)


def to_layout(dense: torch.Tensor, layout: torch.layout, index_dtype=torch.int64) -> torch.Tensor:
    if layout == torch.sparse_coo:
        return dense.to_sparse()
    A = dense.to_sparse_csr()
    if index_dtype == torch.int64:
        return A
    return torch.sparse_csr_tensor(
        A.crow_indices().to(index_dtype),
        A.col_indices().to(index_dtype),
        A.values(),
        A.shape,
    )


def index_dtype_of(A: torch.Tensor) -> torch.dtype:
    return A.indices().dtype if A.layout == torch.sparse_coo else A.crow_indices().dtype


def assert_valid(A: torch.Tensor) -> None:
    """Rebuild A with torch's invariant checks on, and check a COO claim of coalescedness."""
    if A.layout == torch.sparse_coo:
        torch.sparse_coo_tensor(A._indices(), A._values(), A.shape, check_invariants=True)
        assert A.is_coalesced()
        rows, cols = A._indices()
        linear = rows * A.shape[1] + cols
        assert bool((linear[1:] > linear[:-1]).all()), "coalesced COO must be strictly sorted"
    else:
        torch.sparse_csr_tensor(
            A.crow_indices(), A.col_indices(), A.values(), A.shape, check_invariants=True
        )


def assert_same_sparse(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Exact equality of layout, shape, index dtype, indices and values."""
    assert actual.layout == expected.layout
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    assert index_dtype_of(actual) == index_dtype_of(expected)
    if expected.layout == torch.sparse_coo:
        expected = expected.coalesce()
        assert torch.equal(actual.indices(), expected.indices())
    else:
        assert torch.equal(actual.crow_indices(), expected.crow_indices())
        assert torch.equal(actual.col_indices(), expected.col_indices())
    assert torch.equal(actual.values().detach(), expected.values().detach())


# ---------------------------------------------------------------------- block diag


@pytest.mark.parametrize("layout", LAYOUTS)
def test_hand_worked_example(layout):
    A1 = to_layout(torch.tensor([[1.0, 0.0], [0.0, 2.0]]), layout)
    A2 = to_layout(torch.tensor([[0.0, 3.0, 4.0]]), layout)
    D = sparse_block_diag(A1, A2)
    expected = torch.tensor(
        [
            [1.0, 0.0, 0.0, 0.0, 0.0],
            [0.0, 2.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 3.0, 4.0],
        ]
    )
    assert D.layout == layout
    assert torch.equal(D.to_dense(), expected)
    if layout == torch.sparse_csr:
        assert D.crow_indices().tolist() == [0, 1, 2, 4]
        assert D.col_indices().tolist() == [0, 1, 3, 4]
    else:
        assert D.indices().tolist() == [[0, 1, 2, 2], [0, 1, 3, 4]]


block_shapes = st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=5)


@settings(deadline=None)  # first calls pay torch start-up costs
@given(
    shapes=block_shapes,
    density=st.sampled_from([0.0, 0.3, 1.0]),
    layout=st.sampled_from(LAYOUTS),
    index_dtype=st.sampled_from(INDEX_DTYPES),
    seed=st.integers(0, 2**16),
)
def test_block_diag_against_dense_and_round_trip(shapes, density, layout, index_dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    dense = [random_dense(n, m, density, gen=gen) for n, m in shapes]
    blocks = [to_layout(d, layout, index_dtype) for d in dense]
    D = sparse_block_diag(*blocks)

    assert D.layout == layout
    assert_valid(D)
    torch.testing.assert_close(D.to_dense(), torch.block_diag(*dense), rtol=0, atol=0)
    if layout == torch.sparse_csr:
        assert D.crow_indices().dtype == index_dtype
        assert D.col_indices().dtype == index_dtype

    parts = sparse_block_diag_split(D, *shapes)
    assert len(parts) == len(blocks)
    for part, block in zip(parts, blocks, strict=True):
        assert_valid(part)
        assert_same_sparse(part, block)


@pytest.mark.parametrize("device", DEVICE_PARAMS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.complex128])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_dtypes_and_devices(layout, dtype, device):
    gen = torch.Generator().manual_seed(1)
    dense = [
        random_dense(n, m, 0.4, gen=gen, dtype=dtype, device=device)
        for n, m in [(3, 4), (1, 1), (5, 2)]
    ]
    D = sparse_block_diag(*(to_layout(d, layout) for d in dense))
    assert D.device == device and D.dtype == dtype
    assert torch.equal(D.to_dense(), torch.block_diag(*dense))
    for part, d in zip(sparse_block_diag_split(D, (3, 4), (1, 1), (5, 2)), dense, strict=True):
        assert torch.equal(part.to_dense(), d)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_single_matrix_and_batch_of_one(layout):
    dense = torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, 3.0]])
    D = sparse_block_diag(to_layout(dense, layout))
    assert torch.equal(D.to_dense(), dense)
    batched = to_layout(dense.unsqueeze(0), layout)
    D = sparse_block_diag(batched)
    assert D.shape == (2, 3)
    assert torch.equal(D.to_dense(), dense)
    (part,) = sparse_block_diag_split(D, (2, 3))
    assert torch.equal(part.to_dense(), dense)


def test_uncoalesced_coo_sums_duplicates():
    i = torch.tensor([[1, 0, 1], [0, 1, 0]])
    A1 = torch.sparse_coo_tensor(i, torch.tensor([1.0, 2.0, 3.0]), (2, 2))
    A2 = torch.sparse_coo_tensor(i, torch.tensor([5.0, 6.0, 7.0]), (2, 2))
    assert not A1.is_coalesced()
    D = sparse_block_diag(A1, A2)
    assert_valid(D)
    assert torch.equal(D.to_dense(), torch.block_diag(A1.to_dense(), A2.to_dense()))
    assert D._nnz() == 4


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("b", [1, 2, 4])
def test_batched_3d_input(layout, b):
    gen = torch.Generator().manual_seed(b)
    # Equal nnz per item (torch's batched CSR requires it): permute one fixed pattern.
    base = random_dense(4, 3, 0.5, gen=gen)
    items = [base.flatten()[torch.randperm(12, generator=gen)].view(4, 3) for _ in range(b)]
    batched = to_layout(torch.stack(items), layout)
    D = sparse_block_diag(batched)
    assert D.layout == layout
    assert_valid(D)
    assert torch.equal(D.to_dense(), torch.block_diag(*items))
    for part, item in zip(sparse_block_diag_split(D, *[(4, 3)] * b), items, strict=True):
        assert torch.equal(part.to_dense(), item)


def test_batched_int32_csr_keeps_index_dtype():
    items = torch.eye(3).expand(2, 3, 3)
    csr = items.to_sparse_csr()
    batched = torch.sparse_csr_tensor(
        csr.crow_indices().int(), csr.col_indices().int(), csr.values(), csr.shape
    )
    D = sparse_block_diag(batched)
    assert D.crow_indices().dtype == torch.int32
    assert torch.equal(D.to_dense(), torch.eye(6))


def test_csr_index_dtype_rules():
    a32 = to_layout(torch.eye(2), torch.sparse_csr, torch.int32)
    a64 = to_layout(torch.eye(2), torch.sparse_csr, torch.int64)
    assert sparse_block_diag(a32, a32).crow_indices().dtype == torch.int32
    mixed = sparse_block_diag(a32, a64)
    assert mixed.crow_indices().dtype == torch.int64
    assert mixed.col_indices().dtype == torch.int64
    assert torch.equal(mixed.to_dense(), torch.eye(4))


def test_csr_int32_overflow_promotes_to_int64():
    # Two 1 x 2**30 blocks: 2**31 columns in all, one past what int32 can address. Only
    # the row pointers (length 2) and one entry per block are stored, so this is cheap.
    wide = 2**30
    block = torch.sparse_csr_tensor(
        torch.tensor([0, 1], dtype=torch.int32),
        torch.tensor([wide - 1], dtype=torch.int32),
        torch.tensor([1.0]),
        (1, wide),
    )
    D = sparse_block_diag(block, block)
    assert D.shape == (2, 2 * wide)
    assert D.crow_indices().dtype == torch.int64
    assert D.col_indices().tolist() == [wide - 1, 2 * wide - 1]
    parts = sparse_block_diag_split(D, (1, wide), (1, wide))
    assert [p.col_indices().tolist() for p in parts] == [[wide - 1], [wide - 1]]


# ------------------------------------------------------------------ sparse_mm usage


@pytest.mark.parametrize("layout", LAYOUTS)
def test_sparse_mm_of_block_diag_is_vstack_of_products(layout):
    gen = torch.Generator().manual_seed(3)
    A1d, A2d = random_dense(4, 3, 0.5, gen=gen), random_dense(2, 5, 0.5, gen=gen)
    B1, B2 = (
        torch.randn(3, 6, generator=gen, dtype=torch.float64),
        torch.randn(5, 6, generator=gen, dtype=torch.float64),
    )
    D = sparse_block_diag(to_layout(A1d, layout), to_layout(A2d, layout))
    C = sparse_mm(D, torch.cat([B1, B2]))
    torch.testing.assert_close(C, torch.cat([A1d @ B1, A2d @ B2]))


# ------------------------------------------------------------------------ gradients


def masked_reference_grad(dense: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    return grad * (dense != 0)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_gradient_flows_through_block_diag(layout):
    gen = torch.Generator().manual_seed(4)
    A1d, A2d = random_dense(4, 3, 0.5, gen=gen), random_dense(2, 5, 0.6, gen=gen)
    B = torch.randn(8, 3, generator=gen, dtype=torch.float64)
    W = torch.randn(6, 3, generator=gen, dtype=torch.float64)  # upstream gradient
    A1 = to_layout(A1d, layout).requires_grad_()
    A2 = to_layout(A2d, layout).requires_grad_()
    (sparse_mm(sparse_block_diag(A1, A2), B) * W).sum().backward()

    ref1, ref2 = A1d.clone().requires_grad_(), A2d.clone().requires_grad_()
    (torch.block_diag(ref1, ref2) @ B * W).sum().backward()
    for A, ref, dense in ((A1, ref1, A1d), (A2, ref2, A2d)):
        assert A.grad is not None and A.grad.layout == layout
        torch.testing.assert_close(A.grad.to_dense(), masked_reference_grad(dense, ref.grad))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_gradient_flows_through_batched_block_diag(layout):
    gen = torch.Generator().manual_seed(5)
    base = random_dense(3, 4, 0.5, gen=gen)
    items = torch.stack([base, 2 * base.flip(0)])  # equal nnz per item
    A = to_layout(items, layout).requires_grad_()
    B = torch.randn(8, 2, generator=gen, dtype=torch.float64)
    W = torch.randn(6, 2, generator=gen, dtype=torch.float64)
    (sparse_mm(sparse_block_diag(A), B) * W).sum().backward()

    ref = items.clone().requires_grad_()
    (torch.block_diag(*ref.unbind()) @ B * W).sum().backward()
    assert A.grad is not None and A.grad.layout == layout
    torch.testing.assert_close(A.grad.to_dense(), masked_reference_grad(items, ref.grad))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_gradient_flows_through_split(layout):
    gen = torch.Generator().manual_seed(6)
    A1d, A2d = random_dense(3, 2, 0.6, gen=gen), random_dense(4, 5, 0.4, gen=gen)
    dense = torch.block_diag(A1d, A2d)
    D = to_layout(dense, layout).requires_grad_()
    B1 = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    B2 = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    P1, P2 = sparse_block_diag_split(D, (3, 2), (4, 5))
    (sparse_mm(P1, B1).sum() + 2 * sparse_mm(P2, B2).sum()).backward()

    ref = dense.clone().requires_grad_()
    (ref[:3, :2] @ B1).sum().add(2 * (ref[3:, 2:] @ B2).sum()).backward()
    assert D.grad is not None and D.grad.layout == layout
    torch.testing.assert_close(D.grad.to_dense(), masked_reference_grad(dense, ref.grad))


def test_gradient_through_values_of_stack_csr():
    A1 = to_layout(torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.sparse_csr).requires_grad_()
    A2 = to_layout(torch.tensor([[0.0, 3.0], [4.0, 0.0]]), torch.sparse_csr).requires_grad_()
    S = stack_csr([A1, A2])
    (S.values() * torch.tensor([[10.0, 20.0], [30.0, 40.0]])).sum().backward()
    assert A1.grad.layout == torch.sparse_csr
    assert A1.grad.values().tolist() == [10.0, 20.0]
    assert A2.grad.values().tolist() == [30.0, 40.0]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_gradcheck_block_diag_values(layout):
    gen = torch.Generator().manual_seed(7)
    A1 = to_layout(random_dense(3, 2, 0.6, gen=gen), layout)
    A2 = to_layout(random_dense(2, 4, 0.6, gen=gen), layout)

    def rebuild(M: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        if layout == torch.sparse_coo:
            return torch.sparse_coo_tensor(M.indices(), values, M.shape)
        return torch.sparse_csr_tensor(M.crow_indices(), M.col_indices(), values, M.shape)

    def f(v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
        return sparse_block_diag(rebuild(A1, v1), rebuild(A2, v2)).to_dense()

    v1 = A1.values().clone().requires_grad_()
    v2 = A2.values().clone().requires_grad_()
    assert torch.autograd.gradcheck(f, (v1, v2))


# ------------------------------------------------------------------------ stack_csr


@pytest.mark.parametrize("device", DEVICE_PARAMS)
@pytest.mark.parametrize("index_dtype", INDEX_DTYPES)
def test_stack_csr_matches_dense_stack(index_dtype, device):
    gen = torch.Generator().manual_seed(8)
    base = random_dense(4, 5, 0.4, gen=gen)
    items = [base, 3 * base.flip(1), base.roll(1, 0)]  # same nnz, different patterns
    S = stack_csr([to_layout(d, torch.sparse_csr, index_dtype).to(device) for d in items])
    assert S.shape == (3, 4, 5) and S.layout == torch.sparse_csr
    assert S.crow_indices().dtype == index_dtype
    assert_valid(S)
    assert torch.equal(S.to_dense().cpu(), torch.stack(items))
    B = torch.randn(3, 5, 2, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(sparse_mm(S, B.to(device)).cpu(), torch.stack(items) @ B)


def test_stack_csr_batch_of_one():
    A = to_layout(torch.tensor([[0.0, 1.0], [2.0, 0.0]]), torch.sparse_csr)
    S = stack_csr((A,))
    assert S.shape == (1, 2, 2)
    assert torch.equal(S.to_dense()[0], A.to_dense())


# --------------------------------------------------------------------------- errors


with torch.sparse.check_sparse_tensor_invariants():  # built at collection, outside conftest
    COO = torch.eye(2).to_sparse()
    CSR = torch.eye(2).to_sparse_csr()


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((), InputValueError, "at least one"),
        (([COO, COO],), InputTypeError, "separate arguments"),
        ((COO, "x"), InputTypeError, r"matrices\[1\] must be a sparse torch.Tensor"),
        ((COO, torch.eye(2)), InputTypeError, r"matrices\[1\] must be sparse.*dense"),
        ((COO, CSR), InputTypeError, "same layout"),
        ((COO, COO.double()), InputTypeError, "same dtype"),
        ((torch.eye(2).to_sparse_csc(),), InputTypeError, "layout torch.sparse_csc"),
        ((torch.ones(2, 2, 3).to_sparse(2),), InputValueError, "hybrid"),
        ((COO, torch.ones(1, 2, 2).to_sparse()), InputValueError, r"matrices\[1\] must be 2-D"),
        ((torch.ones(2, 2, 2, 2).to_sparse(),), InputValueError, "must be 2-D or 3-D"),
    ],
)
def test_block_diag_errors(args, error, match):
    with pytest.raises(error, match=match):
        sparse_block_diag(*args)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_block_diag_device_mismatch():
    with pytest.raises(InputValueError, match="same device"):
        sparse_block_diag(COO, COO.cuda())


@pytest.mark.parametrize("layout", LAYOUTS)
def test_split_rejects_off_diagonal_entry(layout):
    dense = torch.block_diag(torch.ones(2, 2), torch.ones(1, 3))
    dense[2, 1] = 5.0  # row 2 is block 1's, column 1 is block 0's
    dense[1, 4] = 7.0  # earlier in row-major order: this is the one to name
    D = to_layout(dense, layout)
    with pytest.raises(InputValueError, match=r"stored entry at \(1, 4\).*block 0 \(rows 0:2\)"):
        sparse_block_diag_split(D, (2, 2), (1, 3))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_split_rejects_entry_in_zero_column_block(layout):
    D = to_layout(torch.tensor([[0.0, 0.0], [0.0, 1.0], [0.0, 0.0]]), layout)
    with pytest.raises(
        InputValueError, match=r"\(1, 1\).*block 1 \(rows 1:2\), whose columns are 2:2"
    ):
        sparse_block_diag_split(D, (1, 2), (1, 0), (1, 0))


@pytest.mark.parametrize(
    ("shapes", "error", "match"),
    [
        ((), InputValueError, "at least one block shape"),
        (((1, 1), (1, 2)), InputValueError, r"add up to \(2, 3\).*shape \(2, 2\)"),
        (([(1, 1), (1, 1)],), InputTypeError, r"shapes\[0\] must be a pair of ints"),
        (((1, 1.5), (1, 0.5)), InputTypeError, r"shapes\[0\]"),
        (((3, 1), (-1, 1)), InputValueError, r"shapes\[1\] must be >= 0, got -1"),
    ],
)
def test_split_shape_errors(shapes, error, match):
    with pytest.raises(error, match=match):
        sparse_block_diag_split(COO, *shapes)


@pytest.mark.parametrize(
    ("D", "error", "match"),
    [
        (torch.eye(2), InputTypeError, "D must be sparse"),
        (torch.eye(2).expand(1, 2, 2).to_sparse(), InputValueError, "D must be 2-D"),
        ([[1.0]], InputTypeError, "D must be a sparse torch.Tensor"),
    ],
)
def test_split_input_errors(D, error, match):
    with pytest.raises(error, match=match):
        sparse_block_diag_split(D, (1, 1), (1, 1))


def test_split_accepts_torch_size_shapes():
    parts = sparse_block_diag_split(CSR, torch.Size([1, 1]), torch.Size([1, 1]))
    assert [p.to_dense().item() for p in parts] == [1.0, 1.0]


@pytest.mark.parametrize(
    ("matrices", "error", "match"),
    [
        ([], InputValueError, "at least one"),
        (CSR, InputTypeError, "must be a sequence"),
        ([CSR, COO], InputTypeError, r"matrices\[1\] has layout torch.sparse_coo"),
        ([CSR, torch.eye(3).to_sparse_csr()], InputValueError, "same shape"),
        ([CSR, CSR.double()], InputTypeError, "same dtype"),
        (
            [CSR, to_layout(torch.eye(2), torch.sparse_csr, torch.int32)],
            InputTypeError,
            "same index dtype",
        ),
        (
            [CSR, torch.tensor([[1.0, 1.0], [0.0, 1.0]]).to_sparse_csr()],
            InputValueError,
            r"same number of stored entries.*nnz \[2, 3\].*sparse_block_diag",
        ),
        ([torch.ones(1, 2, 2).to_sparse_csr()], InputValueError, "must be 2-D"),
    ],
)
def test_stack_csr_errors(matrices, error, match):
    with pytest.raises(error, match=match):
        stack_csr(matrices)


def test_errors_are_builtin_subclasses():
    # Callers who catch the built-in exceptions keep working.
    with pytest.raises(ValueError):
        sparse_block_diag()
    with pytest.raises(TypeError):
        stack_csr([COO])


# ---------------------------------------------------------------- malformed blocks
#
# Shifted into the block diagonal, an index out of its block's range lands inside another
# block, where it is a legal entry: sparse_mm on the result would return garbage (or blame a
# coalesced flag the caller never set). The blocks must be refused as sparse_mm refuses them,
# naming the block. Built with torch's invariant checks off, as in a user's session, and in a
# child process, where a crash fails one test instead of killing pytest (see
# test_malformed_input.py); the child exits 0 only after the expected InputValueError.

_CHILD = """
import sys
import torch
torch.sparse.check_sparse_tensor_invariants.disable()  # as in any user's session
from sparsegrad_lab import InputValueError
from sparsegrad_lab.batching import sparse_block_diag, sparse_block_diag_split
import sparsegrad_lab.index_checks
sparsegrad_lab.index_checks.FEW_ENTRIES = {few_entries}

def coo(indices, size, **kw):
    i = torch.tensor(indices)
    return torch.sparse_coo_tensor(i, torch.ones(i.shape[-1]), size, check_invariants=False, **kw)

def csr(crow, col, size, values=None):
    col = torch.tensor(col)
    v = torch.ones(col.shape if values is None else values)
    return torch.sparse_csr_tensor(torch.tensor(crow), col, v, size, check_invariants=False)

COO, CSR = torch.eye(2).to_sparse(), torch.eye(2).to_sparse_csr()
try:
{call}
except InputValueError as error:
    print(error)
    blames_the_flag = "coalesced" in str(error) and "coalesced" not in {expected!r}
    sys.exit(0 if {expected!r} in str(error) and not blames_the_flag else 3)
print("no InputValueError was raised")
sys.exit(2)
"""

#: name -> (the call; the message it must raise)
MALFORMED: dict[str, tuple[str, str]] = {
    # -- 2-D blocks, COO ------------------------------------------------------------------
    "coo-column-out-of-range": (
        "sparse_block_diag(COO, COO, coo([[0, 1], [0, 7]], (2, 3)))",
        "sparse_block_diag: block 2: column index 7 at entry 1 is out of range for 3 columns",
    ),
    "coo-row-out-of-range": (  # used to be blamed on is_coalesced=True by sparse_mm
        "sparse_block_diag(coo([[0, 5], [0, 1]], (2, 2)), COO)",
        "sparse_block_diag: block 0: row index 5 at entry 1 is out of range for 2 rows",
    ),
    "coo-negative-column": (
        "sparse_block_diag(COO, coo([[0, 1], [0, -1]], (2, 2)))",
        "sparse_block_diag: block 1: column index -1 at entry 1 is out of range for 2 columns",
    ),
    "coo-marked-coalesced-column-out-of-range": (
        "sparse_block_diag(COO, coo([[0, 1], [0, 7]], (2, 3), is_coalesced=True))",
        "sparse_block_diag: block 1: column index 7 at entry 1 is out of range for 3 columns",
    ),
    "coo-falsely-coalesced": (
        "sparse_block_diag(COO, coo([[1, 0], [0, 0]], (2, 2), is_coalesced=True))",
        "sparse_block_diag: block 1 is marked coalesced, but entry 1 at (0, 0) does not come "
        "after entry 0 at (1, 0)",
    ),
    "coo-single-matrix": (
        "sparse_block_diag(coo([[0, 1], [0, 7]], (2, 3)))",
        "sparse_block_diag: block 0: column index 7 at entry 1 is out of range for 3 columns",
    ),
    # -- 2-D blocks, CSR ------------------------------------------------------------------
    "csr-column-out-of-range": (
        "sparse_block_diag(CSR, csr([0, 1, 2], [0, 7], (2, 3)))",
        "sparse_block_diag: block 1: column index 7 at entry 1 is out of range for 3 columns",
    ),
    "csr-crow-ending-past-nnz": (
        "sparse_block_diag(csr([0, 1, 3], [0, 1], (2, 2)), CSR)",
        "sparse_block_diag: block 0: crow_indices() must end at nnz = 2, got 3",
    ),
    "csr-crow-decreasing": (
        "sparse_block_diag(CSR, csr([0, 2, 1, 2], [0, 1], (3, 2)))",
        "sparse_block_diag: block 1: crow_indices() must not decrease, but entry 2 is 1 after 2",
    ),
    "csr-more-values-than-columns": (
        "sparse_block_diag(CSR, csr([0, 1, 2], [0, 1], (2, 2), values=5))",
        "sparse_block_diag: block 1 has values of shape (5,) for column indices of shape (2,)",
    ),
    # -- one batched (3-D) input: its items are the blocks ----------------------------------
    "batched-coo-column-out-of-range": (
        "sparse_block_diag(coo([[0, 1], [0, 0], [0, 5]], (2, 2, 2)))",
        "sparse_block_diag: block 1: column index 5 at entry 0 is out of range for 2 columns",
    ),
    "batched-coo-row-out-of-range": (
        "sparse_block_diag(coo([[0, 1, 1], [0, 0, 4], [0, 0, 1]], (2, 2, 2)))",
        "sparse_block_diag: block 1: row index 4 at entry 1 is out of range for 2 rows",
    ),
    "batched-coo-batch-index-out-of-range": (  # in no block: the batch is named
        "sparse_block_diag(coo([[0, 3], [0, 0], [0, 1]], (2, 2, 2)))",
        "sparse_block_diag: matrices[0]: batch index 3 at entry 1 is out of range for 2 items",
    ),
    "batched-coo-falsely-coalesced-item": (
        "sparse_block_diag(coo([[1, 1], [1, 0], [0, 0]], (2, 2, 2), is_coalesced=True))",
        "sparse_block_diag: block 1 is marked coalesced, but entry 1 at (0, 0) does not come "
        "after entry 0 at (1, 0)",
    ),
    "batched-csr-column-out-of-range": (
        "sparse_block_diag(csr([[0, 1], [0, 1]], [[0], [5]], (2, 1, 2)))",
        "sparse_block_diag: block 1: column index 5 at entry 0 is out of range for 2 columns",
    ),
    "batched-csr-crow-ending-past-nnz": (
        "sparse_block_diag(csr([[0, 1, 2], [0, 2, 3]], [[0, 1], [0, 1]], (2, 2, 2)))",
        "sparse_block_diag: block 1: crow_indices() must end at nnz = 2, got 3",
    ),
    # -- the split: D's indices are checked before any entry looks for its block -----------
    "split-coo-row-beyond-the-last-block": (  # used to be a bare IndexError
        "sparse_block_diag_split(coo([[0, 3], [0, 0]], (3, 3)), (1, 1), (1, 1), (1, 1))",
        "sparse_block_diag_split: D: row index 3 at entry 1 is out of range for 3 rows",
    ),
    "split-coo-negative-row": (  # used to go to block 0
        "sparse_block_diag_split(coo([[-1, 0], [0, 0]], (3, 3)), (1, 1), (1, 1), (1, 1))",
        "sparse_block_diag_split: D: row index -1 at entry 0 is out of range for 3 rows",
    ),
    "split-csr-crow-ending-past-nnz": (
        "sparse_block_diag_split(csr([0, 1, 1, 3], [0, 1], (3, 3)), (1, 1), (1, 1), (1, 1))",
        "sparse_block_diag_split: D: crow_indices() must end at nnz = 2, got 3",
    ),
}


# check_indices reads a few CPU entries through numpy and more through torch kernels: with
# the bound at 0 these small cases take the torch path as well.
@pytest.mark.parametrize("few_entries", [FEW_ENTRIES, 0], ids=["numpy-check", "torch-check"])
@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_block_is_refused_naming_it(name: str, few_entries: int) -> None:
    call, expected = MALFORMED[name]
    code = _CHILD.format(
        call=textwrap.indent(call, "    "), expected=expected, few_entries=few_entries
    )
    status, output = run_in_child(code)
    assert status == 0, f"exit status {status}:\n{output}"
    assert expected in output


@pytest.mark.parametrize("index_dtype", INDEX_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_valid_blocks_give_exactly_the_reference(layout, index_dtype):
    # The checks refuse only what is wrong: zero-sized and empty blocks and int32 indices
    # pass, and the result is the reference index for index, value for value, for a list of
    # blocks and for a batch, with torch's invariant checks off as in a user's session.
    gen = torch.Generator().manual_seed(9)
    shapes = [(3, 4), (0, 2), (2, 0), (1, 1), (2, 3)]
    dense = [random_dense(n, m, 0.5, gen=gen) for n, m in shapes]
    dense[-1].zero_()
    blocks = [to_layout(d, layout, index_dtype) for d in dense]
    with torch.sparse.check_sparse_tensor_invariants(enable=False):
        D = sparse_block_diag(*blocks)
        parts = sparse_block_diag_split(D, *shapes)
    assert_same_sparse(D, to_layout(torch.block_diag(*dense), layout, index_dtype))
    for part, block in zip(parts, blocks, strict=True):
        assert_same_sparse(part, block)

    base = random_dense(3, 4, 0.5, gen=gen)
    items = torch.stack([base, 2 * base.flip(1)])  # equal nnz per item
    with torch.sparse.check_sparse_tensor_invariants(enable=False):
        D = sparse_block_diag(to_layout(items, layout, index_dtype))
    assert_same_sparse(D, to_layout(torch.block_diag(*items), layout, index_dtype))


def test_meta_blocks_are_not_read():
    # A meta tensor holds no indices: there is nothing to check, and the shape still works.
    block = torch.eye(2).to_sparse().to("meta")
    D = sparse_block_diag(block, block)
    assert D.shape == (4, 4) and D.device.type == "meta"
