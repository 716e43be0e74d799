"""The index checks: every invariant a kernel relies on, the first offender named."""

from __future__ import annotations

import pytest
import torch

from sparsegrad_lab import InputValueError, index_checks
from sparsegrad_lab.index_checks import check_indices

# Tiny tensors: one intra-op thread (see tests/conftest.py).
pytestmark = pytest.mark.usefixtures("torch_single_thread")


@pytest.mark.parametrize("nnz", [3, 5000])  # either side of the few-entries branch
def test_check_indices_sees_the_order_of_a_coo_marked_coalesced(nnz: int) -> None:
    rows = torch.arange(nnz)
    good = torch.stack((rows, rows % 7))
    A = torch.sparse_coo_tensor(good, torch.ones(nnz), (nnz, 7), is_coalesced=True)
    check_indices(A, "sparse_mm")  # sorted, no duplicates: passes
    bad = good.clone()
    bad[:, nnz - 1] = bad[:, nnz - 2]  # the last entry repeats the one before
    with torch.sparse.check_sparse_tensor_invariants(enable=False):
        A = torch.sparse_coo_tensor(bad, torch.ones(nnz), (nnz, 7), is_coalesced=True)
    with pytest.raises(InputValueError, match=f"entry {nnz - 1} at .* does not come after"):
        check_indices(A, "sparse_mm")


@pytest.mark.parametrize(
    ("crow", "col", "words"),
    [
        ([0, 1, 3], [1, 0, 1], None),
        ([1, 1, 3], [1, 0, 1], "must start at 0, got 1"),
        ([0, 2, 2], [1, 0, 1], "must end at nnz = 3, got 2"),
        ([0, 2, 1, 3], [1, 0, 1], "must not decrease, but entry 2 is 1 after 2"),
        ([0, 1, 3], [1, 0, 2], "column index 2 at entry 2 is out of range for 2 columns"),
        ([0, 1, 3], [1, -1, 1], "column index -1 at entry 1 is out of range"),
        ([0, 0, 0], [], None),
    ],
)
@pytest.mark.parametrize("few_entries", [None, 0], ids=["numpy-branch", "torch-branch"])
def test_check_indices_reads_every_csr_invariant(
    crow: list[int],
    col: list[int],
    words: str | None,
    few_entries: int | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if few_entries is not None:  # these few entries then take the torch kernels' path
        monkeypatch.setattr(index_checks, "FEW_ENTRIES", few_entries)

    size = (len(crow) - 1, 2)
    with torch.sparse.check_sparse_tensor_invariants(enable=False):
        c = torch.tensor(col, dtype=torch.int64)
        A = torch.sparse_csr_tensor(torch.tensor(crow), c, torch.ones(len(col)), size)
    if words is None:
        check_indices(A, "sparse_mm")
    else:
        with pytest.raises(InputValueError, match=words):
            check_indices(A, "sparse_mm")


@pytest.mark.parametrize("few_entries", [None, 0], ids=["numpy-branch", "torch-branch"])
def test_check_indices_checks_what_it_is_asked_to(
    few_entries: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ranges=False`` leaves the ranges to torch's COO product; ``order=False`` then names
    the index that product refused, without checking the order a second time."""
    if few_entries is not None:
        monkeypatch.setattr(index_checks, "FEW_ENTRIES", few_entries)
    with torch.sparse.check_sparse_tensor_invariants(enable=False):
        unsorted = torch.sparse_coo_tensor(
            torch.tensor([[1, 0], [0, 0]]), torch.ones(2), (2, 2), is_coalesced=True
        )
        out_of_range = torch.sparse_coo_tensor(
            torch.tensor([[0, 7], [0, 0]]), torch.ones(2), (2, 2), is_coalesced=True
        )
    with pytest.raises(InputValueError, match="does not come after"):
        check_indices(unsorted, "f", ranges=False)
    check_indices(unsorted, "f", order=False)  # in range: passes
    check_indices(out_of_range, "f", ranges=False)  # sorted: passes
    with pytest.raises(InputValueError, match="row index 7 at entry 1 is out of range"):
        check_indices(out_of_range, "f", order=False)
