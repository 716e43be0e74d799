"""Malformed sparse input is refused with ``InputValueError``, never a crash or garbage.

The suite runs with torch's invariant checks ON (``conftest.py``), which would catch these
tensors at construction and hide what a user sees: there the checks are off, and torch's
kernels read the bad indices out of bounds -- an abort, a segfault or uninitialised memory.
So each case runs in a child process with the checks OFF (``child_process.run_in_child``:
a fork of a server that imported torch, in torch's default state); the child exits 0 only
after catching ``InputValueError`` with the expected message, so a crash (any other exit
status) fails the test instead of killing pytest.
"""

from __future__ import annotations

import textwrap

import pytest
from support.child_process import run_in_child

from sparsegrad_lab.index_checks import FEW_ENTRIES
from sparsegrad_lab.routes import COO_PRODUCT_MAX_NNZ

_CHILD = """
import sys
import torch
torch.sparse.check_sparse_tensor_invariants.disable()  # as in any user's session
from sparsegrad_lab import InputValueError, csr_tensor, sampled_mm, sparse_mm, sparsity_pattern
from sparsegrad_lab.autograd import SparseMatMul
from sparsegrad_lab.pattern import pattern_and_values
import sparsegrad_lab.index_checks, sparsegrad_lab.routes
sparsegrad_lab.index_checks.FEW_ENTRIES = {few_entries}
sparsegrad_lab.routes.COO_PRODUCT_MAX_NNZ = {coo_product_max}

def coo(indices, size, **kw):
    i = torch.tensor(indices)
    return torch.sparse_coo_tensor(i, torch.ones(i.shape[1]), size, check_invariants=False, **kw)

def csr(crow, col, size, values=None):
    col = torch.tensor(col)
    v = torch.ones(col.shape if values is None else values)
    return torch.sparse_csr_tensor(torch.tensor(crow), col, v, size, check_invariants=False)

def coo_t(edges, size, **kw):  # indices() is edges.t(): a strided view, strides (1, 2)
    e = torch.tensor(edges)
    v = torch.ones(e.shape[0])
    return torch.sparse_coo_tensor(e.t(), v, size, check_invariants=False, **kw)

def csr_strided(crow, col, size, dtype=torch.int64):  # every other element of a buffer
    crow, col = (torch.tensor(i, dtype=dtype).repeat_interleave(2)[::2] for i in (crow, col))
    v = torch.ones(col.shape)
    return torch.sparse_csr_tensor(crow, col, v, size, check_invariants=False)

try:
{call}
except InputValueError as error:
    print(error)
    sys.exit(0 if {expected!r} in str(error) else 3)
print("no InputValueError was raised")
sys.exit(2)
"""

#: name -> (the call, with A built by the helpers above; the message it must raise)
CASES: dict[str, tuple[str, str]] = {
    # -- COO --------------------------------------------------------------------------------
    "coo-row-out-of-range": (
        "sparse_mm(coo([[0, 5], [0, 1]], (2, 2)), torch.ones(2, 3))",
        "sparse_mm: A: row index 5 at entry 1 is out of range for 2 rows",
    ),
    "coo-column-out-of-range": (
        "sparse_mm(coo([[0, 1], [0, 7]], (2, 2)), torch.ones(2, 3))",
        "sparse_mm: A: column index 7 at entry 1 is out of range for 2 columns",
    ),
    "coo-negative-row": (
        "sparse_mm(coo([[0, -1], [0, 1]], (2, 2)), torch.ones(2, 3))",
        "sparse_mm: A: row index -1 at entry 1 is out of range for 2 rows",
    ),
    "coo-batch-out-of-range": (
        "sparse_mm(coo([[0, 3], [0, 1], [1, 0]], (2, 2, 2)), torch.ones(2, 2, 3))",
        "sparse_mm: A: batch index 3 at entry 1 is out of range for 2 items",
    ),
    # Marked coalesced and in row-major order: the ranges are left to torch's COO product.
    "coo-coalesced-row-out-of-range": (
        "sparse_mm(coo([[0, 5], [0, 1]], (2, 2), is_coalesced=True), torch.ones(2, 3))",
        "sparse_mm: A: row index 5 at entry 1 is out of range for 2 rows",
    ),
    "coo-coalesced-column-out-of-range": (
        "sparse_mm(coo([[0, 1], [0, 7]], (2, 2), is_coalesced=True), torch.ones(2, 3))",
        "sparse_mm: A: column index 7 at entry 1 is out of range for 2 columns",
    ),
    "coo-coalesced-negative-row": (
        "sparse_mm(coo([[-1, 0], [0, 0]], (2, 2), is_coalesced=True), torch.ones(2, 3))",
        "sparse_mm: A: row index -1 at entry 0 is out of range for 2 rows",
    ),
    "coo-coalesced-row-whose-key-wraps-around": (  # 2**62 * 4 is 0 in int64
        "sparse_mm(coo([[0, 2**62], [1, 2]], (2, 4), is_coalesced=True), torch.ones(4, 3))",
        "sparse_mm: A: row index 4611686018427387904 at entry 1 is out of range for 2 rows",
    ),
    "coo-falsely-coalesced-order": (
        "sparse_mm(coo([[1, 0], [0, 0]], (2, 2), is_coalesced=True), torch.ones(2, 3))",
        "A is marked coalesced, but entry 1 at (0, 0) does not come after entry 0 at (1, 0)",
    ),
    "coo-falsely-coalesced-duplicate": (
        "sparse_mm(coo([[0, 0], [1, 1]], (2, 2), is_coalesced=True), torch.ones(2, 3))",
        "A is marked coalesced, but entry 1 at (0, 1) does not come after entry 0 at (0, 1)",
    ),
    # Strided index views (edges.t()) are read where they are, by numpy and torch alike.
    "coo-edges.t()-row-out-of-range": (
        "sparse_mm(coo_t([[0, 0], [5, 1]], (2, 2)), torch.ones(2, 3))",
        "sparse_mm: A: row index 5 at entry 1 is out of range for 2 rows",
    ),
    "coo-edges.t()-coalesced-column-out-of-range": (
        "sparse_mm(coo_t([[0, 0], [1, 7]], (2, 2), is_coalesced=True), torch.ones(2, 3))",
        "sparse_mm: A: column index 7 at entry 1 is out of range for 2 columns",
    ),
    "coo-edges.t()-falsely-coalesced-order": (
        "sampled_mm(coo_t([[1, 0], [0, 0]], (2, 2), is_coalesced=True), torch.ones(2, 3), "
        "torch.ones(3, 2))",
        "A is marked coalesced, but entry 1 at (0, 0) does not come after entry 0 at (1, 0)",
    ),
    # -- CSR --------------------------------------------------------------------------------
    "csr-strided-int32-column-out-of-range": (
        "sparse_mm(csr_strided([0, 1, 2], [0, 5], (2, 2), torch.int32), torch.ones(2, 3))",
        "sparse_mm: A: column index 5 at entry 1 is out of range for 2 columns",
    ),
    "csr-strided-crow-decreasing": (
        "sparsity_pattern(csr_strided([0, 2, 1, 2], [0, 1], (3, 2)))",
        "sparsity_pattern: A: crow_indices() must not decrease, but entry 2 is 1 after 2",
    ),
    "csr-crow-decreasing": (
        "sparse_mm(csr([0, 2, 1, 2], [0, 1], (3, 2)), torch.ones(2, 3))",
        "sparse_mm: A: crow_indices() must not decrease, but entry 2 is 1 after 2",
    ),
    "csr-crow-not-starting-at-0": (
        "sparse_mm(csr([1, 1, 2], [0, 1], (2, 2)), torch.ones(2, 3))",
        "sparse_mm: A: crow_indices() must start at 0, got 1",
    ),
    "csr-crow-not-ending-at-nnz": (
        "sparse_mm(csr([0, 1, 3], [0, 1], (2, 2)), torch.ones(2, 3))",
        "sparse_mm: A: crow_indices() must end at nnz = 2, got 3",
    ),
    "csr-column-out-of-range": (
        "sparse_mm(csr([0, 1, 2], [0, 5], (2, 2)), torch.ones(2, 3))",
        "sparse_mm: A: column index 5 at entry 1 is out of range for 2 columns",
    ),
    "csr-negative-column": (
        "sparse_mm(csr([0, 1, 2], [0, -1], (2, 2)), torch.ones(2, 3))",
        "sparse_mm: A: column index -1 at entry 1 is out of range for 2 columns",
    ),
    "csr-batched-bad-item": (
        "sparse_mm(csr([[0, 1, 2], [0, 2, 1]], [[0, 1], [0, 1]], (2, 2, 2)), torch.ones(2, 2, 3))",
        "crow_indices() of item 1 must end at nnz = 2, got 1",
    ),
    "csr-batched-values-of-the-wrong-shape": (
        "sparse_mm(csr([[0, 1, 2], [0, 1, 2]], [[0, 1], [0, 1]], (2, 2, 2), values=2), "
        "torch.ones(2, 2, 3))",
        "sparse_mm: A has values of shape (2,) for column indices of shape (2, 2)",
    ),
    "csr-more-values-than-columns": (
        "sparse_mm(csr([0, 1, 2], [0, 1], (2, 2), values=5), torch.ones(2, 3))",
        "sparse_mm: A has values of shape (5,) for column indices of shape (2,)",
    ),
    "csr_tensor-more-values": (
        "csr_tensor(torch.tensor([0, 1, 2]), torch.tensor([0, 1]), torch.ones(3), (2, 2))",
        "csr_tensor: values must have col's shape (2,) (one value per column index), got (3,)",
    ),
    "csr_tensor-fewer-values": (
        "csr_tensor(torch.tensor([0, 1, 2]), torch.tensor([0, 1]), torch.ones(1), (2, 2))",
        "csr_tensor: values must have col's shape (2,) (one value per column index), got (1,)",
    ),
    "SparseMatMul-values-of-the-wrong-length": (
        "pattern, _ = pattern_and_values(torch.eye(2).to_sparse_csr())\n"
        "SparseMatMul.apply(torch.ones(5), torch.ones(2, 3), pattern, 'sddmm')",
        "SparseMatMul: values must have shape (2,), one per stored entry of the pattern, got (5,)",
    ),
    # -- the other entry points check the same way -------------------------------------------
    "sampled_mm": (
        "sampled_mm(coo([[0, 5], [0, 1]], (2, 2)), torch.ones(2, 3), torch.ones(3, 2))",
        "sampled_mm: A: row index 5 at entry 1 is out of range for 2 rows",
    ),
    "sparsity_pattern": (
        "sparsity_pattern(csr([0, 1, 2], [0, 9], (2, 2)))",
        "sparsity_pattern: A: column index 9 at entry 1 is out of range for 2 columns",
    ),
    "kept-pattern-with-more-values": (
        "kept = sparsity_pattern(csr([0, 1, 2], [0, 1], (2, 2)))\n"
        "sparse_mm(csr([0, 1, 2], [0, 1], (2, 2), values=5), torch.ones(2, 3), pattern=kept)",
        "sparse_mm: A has values of shape (5,) for column indices of shape (2,)",
    ),
}


# The checks read a few CPU entries through numpy and more through torch kernels; a small
# 2-D COO A is multiplied by torch's COO kernel, which checks the index ranges itself. With
# the bounds at 0 and -1 these same small cases take the other paths, so all four are
# tried on every case.
_BRANCHES = [
    pytest.param(FEW_ENTRIES, COO_PRODUCT_MAX_NNZ, id="numpy-coo-product"),
    pytest.param(0, COO_PRODUCT_MAX_NNZ, id="torch-coo-product"),
    pytest.param(FEW_ENTRIES, -1, id="numpy-csr-product"),
    pytest.param(0, -1, id="torch-csr-product"),
]


@pytest.mark.parametrize(("few_entries", "coo_product_max"), _BRANCHES)
@pytest.mark.parametrize("name", list(CASES))
def test_malformed_input_raises_in_a_child_process_with_checks_off(
    name: str, few_entries: int, coo_product_max: int
) -> None:
    call, expected = CASES[name]
    code = _CHILD.format(
        call=textwrap.indent(call, "    "),
        expected=expected,
        few_entries=few_entries,
        coo_product_max=coo_product_max,
    )
    status, output = run_in_child(code)
    assert status == 0, f"exit status {status}:\n{output}"
    assert expected in output
