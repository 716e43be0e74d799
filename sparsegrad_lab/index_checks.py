"""Validation of sparse indices: every index in range, before a kernel reads one.

torch checks sparse invariants only when asked, and its kernels read out of bounds (or abort
the process) on an index out of range. :func:`check_indices` decides with a few reductions
over the indices -- one pass, a handful of kernels, whatever ``nnz`` is -- and only when one
fails does a search find the first offending entry, so that the message can name it.
"""

from __future__ import annotations

from typing import NoReturn

import numpy as np
import torch
from torch import Tensor

from .errors import InputValueError

__all__ = ["FEW_ENTRIES", "check_indices", "check_values_count"]


def check_indices(
    A: Tensor,
    where: str,
    name: str = "A",
    *,
    values_counted: bool = False,
    ranges: bool = True,
    order: bool = True,
) -> None:
    """Raise :class:`InputValueError` unless every index of sparse ``A`` is valid.

    COO: every index in range, and a tensor marked coalesced really sorted without
    duplicates (``order``). CSR:
    one value per column index, row pointers starting at 0, never decreasing and ending
    at nnz, columns in range. ``A`` is a checked sparse matrix on a real device (not meta);
    ``values_counted=True`` says that its values were counted already (the input checks of
    ``sparse_mm`` and ``sampled_mm`` do), which skips that step. ``ranges=False`` (COO
    only) leaves out the ranges of the indices, for a caller whose next step is torch's
    CPU COO product: that kernel checks the range of every index before it reads one, and
    raises on the first that is out of range; the caller then calls this again for the
    ranges only, ``order=False``, to name the index.

    (torch's own validator, ``check_invariants=True``, also requires sorted columns within
    each row -- which no kernel here needs -- and costs as much as the product itself at
    10⁵ stored entries.)

    >>> bad = torch.sparse_coo_tensor(torch.tensor([[0, 5], [0, 1]]), torch.ones(2), (2, 2),
    ...                               check_invariants=False)
    >>> check_indices(bad, "sparse_mm")
    Traceback (most recent call last):
    ...
    sparsegrad_lab.errors.InputValueError: sparse_mm: A: row index 5 at entry 1 is out of \
range for 2 rows; build A from valid indices (torch.sparse.check_sparse_tensor_invariants \
finds them at construction)
    """
    if A.layout == torch.sparse_coo:
        if not _coo_indices_valid(A, ranges, order):
            _explain_coo(A, where, name)
    else:
        if not values_counted:
            check_values_count(A, where, name)
        if not _csr_indices_valid(A):
            _explain_csr(A, where, name)


def _coo_indices_valid(A: Tensor, ranges: bool = True, order: bool = True) -> bool:
    indices = A._indices()
    sorted_ = order and A.is_coalesced()  # the order matters only for a coalesced A
    if indices.shape[1] == 0 or not (ranges or sorted_):
        return True
    if indices.shape[1] <= FEW_ENTRIES and indices.is_cpu:
        return _few_coo_indices_valid(indices.numpy(), tuple(A.shape), sorted_, ranges)
    if ranges:
        lo, hi = torch.aminmax(indices, dim=1)
        if min(lo.tolist()) < 0 or any(h >= s for h, s in zip(hi.tolist(), A.shape, strict=True)):
            return False
    if not sorted_ or indices.shape[1] == 1:
        return True
    key = _row_major_keys(indices, A.shape)
    if indices.shape[1] <= FEW_ENTRIES:
        # Two kernels instead of four (two slices, a comparison, an all); the nnz x 8 bytes
        # of steps it allocates instead of a bool mask stay below 128 KiB here.
        return int(key.diff().min()) > 0
    return bool((key[1:] > key[:-1]).all())


#: Up to this many stored entries a temporary of nnz int64 is small (128 KiB, freed before
#: the product allocates) and the number of kernel calls, not their work, is the cost of a
#: check: a CPU ``A`` is then checked on numpy views of its indices. Measured with
#: ``benchmarks/route_thresholds.py --only "few entries"`` (one and two threads, CSR and
#: COO): numpy takes about half torch's time up to 10⁵ entries; the bound stays lower so
#: that a check's temporaries stay small next to a small graph's own.
FEW_ENTRIES = 16384


def _few_csr_indices_valid(crow: np.ndarray, col: np.ndarray, m: int) -> bool:
    """The CSR check of a few CPU entries on numpy views (see :func:`_few_coo_indices_valid`).

    Row pointers (``(n + 1,)``, or ``(b, n + 1)`` for a batch) start at 0, never decrease
    and end at nnz; columns lie in :math:`[0, m)`.
    """
    nnz = col.shape[-1]
    if crow.ndim == 1:
        ends_wrong = crow[0] != 0 or crow[-1] != nnz
    else:
        ends_wrong = bool(crow[:, 0].any()) or bool((crow[:, -1] != nnz).any())
    if ends_wrong or bool((crow[..., 1:] < crow[..., :-1]).any()):
        return False
    return nnz == 0 or bool(col.min() >= 0 and col.max() < m)


def _few_coo_indices_valid(
    indices: np.ndarray, shape: tuple[int, ...], coalesced: bool, ranges: bool = True
) -> bool:
    """The COO check of a few CPU entries, on a numpy view of the same memory.

    The same tests as the torch path below; at a lesson's few hundred entries the fixed
    cost of each torch kernel call, not the work, is what a check costs, and numpy's is
    smaller (:data:`FEW_ENTRIES`).
    Without ``ranges``, an index out of range may wrap the row-major key around; the
    caller's kernel then refuses that index (see :func:`check_indices`).
    """
    if ranges:
        # As unsigned integers, negative indices are larger than any size: one reduction
        # checks both ends of every dimension's range.
        highest = indices.view(np.uint64).max(axis=1).tolist()
        if any(h >= s for h, s in zip(highest, shape, strict=True)):
            return False
    if not coalesced:
        return True
    key = indices[0]
    for axis in range(1, len(shape)):
        key = key * shape[axis] + indices[axis]
    return bool((key[1:] > key[:-1]).all())


def _row_major_keys(indices: Tensor, shape: torch.Size) -> Tensor:
    """Each entry's position in the flattened tensor.

    Built in one buffer, the first step fused (``c + m r``): at 10⁶ entries and more, each
    fresh temporary of ``nnz`` int64 costs page faults comparable to the arithmetic itself,
    and at the lessons' few hundred entries each extra kernel costs more than its work.
    """
    key = torch.add(indices[1], indices[0], alpha=shape[1])
    for axis in range(2, len(shape)):
        key.mul_(shape[axis]).add_(indices[axis])
    return key


def _csr_indices_valid(A: Tensor) -> bool:
    crow, col = A.crow_indices(), A.col_indices()
    nnz = col.shape[-1]
    if col.numel() <= FEW_ENTRIES and col.is_cpu:
        return _few_csr_indices_valid(crow.numpy(), col.numpy(), A.shape[-1])
    if A.dim() == 2 and crow.shape[0] > 1 and nnz > 0:
        # The common case, read back to Python once instead of five times.
        lo, hi = torch.aminmax(col)
        ends = (crow.diff().min(), crow[0], crow[-1], lo, hi)
        step, first, last, lo_, hi_ = torch.stack(ends).tolist()
        return step >= 0 and first == 0 and last == nnz and lo_ >= 0 and hi_ < A.shape[-1]
    if A.dim() == 2:  # two scalars: cheaper read one by one than through tensor ops
        if int(crow[0]) != 0 or int(crow[-1]) != nnz:
            return False
    elif bool(crow[:, 0].any()) or bool((crow[:, -1] != nnz).any()):
        return False
    if crow.shape[-1] > 1 and int(crow.diff(dim=-1).min()) < 0:
        return False
    if nnz == 0:
        return True
    lo, hi = torch.aminmax(col)
    return int(lo) >= 0 and int(hi) < A.shape[-1]


_AXES = {2: ("row", "column"), 3: ("batch", "row", "column")}
_AXIS_UNITS = {"batch": "items", "row": "rows", "column": "columns"}
_FIX = (
    "build A from valid indices (torch.sparse.check_sparse_tensor_invariants finds them at "
    "construction)"
)


def _first(bad: Tensor) -> int:
    """Position of the first ``True`` of a 1-D bool tensor known to hold one."""
    return int(bad.nonzero()[0, 0])


def _explain_coo(A: Tensor, where: str, name: str) -> NoReturn:
    """Raise naming the first invalid entry of COO ``A`` (known to have one)."""
    indices = A._indices()
    axes = _AXES[A.dim()]
    lo, hi = torch.aminmax(indices, dim=1)
    limits = torch.tensor(A.shape, device=indices.device)
    if bool(((lo < 0) | (hi >= limits)).any()):
        out = (indices < 0) | (indices >= limits.unsqueeze(1))
        entry = _first(out.any(0))
        axis = _first(out[:, entry])
        label = axes[axis]
        raise InputValueError(
            f"{where}: {name}: {label} index {int(indices[axis, entry])} at entry {entry} is "
            f"out of range for {A.shape[axis]} {_AXIS_UNITS[label]}; {_FIX}"
        )
    # In range, so the failure was the order of a tensor marked coalesced.
    entry = _first(_row_major_keys(indices, A.shape).diff() <= 0) + 1
    raise InputValueError(
        f"{where}: {name} is marked coalesced, but entry {entry} at "
        f"{tuple(indices[:, entry].tolist())} does not come after entry {entry - 1} "
        f"at {tuple(indices[:, entry - 1].tolist())} in row-major order (sorted, "
        "no duplicates); build A without is_coalesced=True, or call "
        "torch.sparse_coo_tensor(indices, values, size).coalesce()"
    )


def check_values_count(A: Tensor, where: str, name: str = "A") -> None:
    """Raise unless CSR ``A`` has exactly one value per column index (O(1)).

    >>> A = torch.sparse_csr_tensor(torch.tensor([0, 1]), torch.tensor([0]), torch.ones(2),
    ...                             (1, 1), check_invariants=False)
    >>> check_values_count(A, "sparse_mm")
    Traceback (most recent call last):
    ...
    sparsegrad_lab.errors.InputValueError: sparse_mm: A has values of shape (2,) for column \
indices of shape (1,); expected one value per column index
    """
    # Tensor.values: the shape only, not a subclass's own values() (sampled_mm's CSR result
    # reads them through an autograd Function, needless for a shape).
    values, col = Tensor.values(A), A.col_indices()
    if values.shape != col.shape:
        raise InputValueError(
            f"{where}: {name} has values of shape {tuple(values.shape)} for column indices "
            f"of shape {tuple(col.shape)}; expected one value per column index"
        )


def _explain_csr(A: Tensor, where: str, name: str) -> NoReturn:
    """Raise naming the first invalid row pointer or column of CSR ``A`` (known to have one)."""
    crow, col = A.crow_indices(), A.col_indices()
    nnz, m = col.shape[-1], A.shape[-1]
    crow2 = crow.reshape(-1, crow.shape[-1])
    col2 = col.reshape(crow2.shape[0], nnz)
    item = "" if A.dim() == 2 else " of item {}"
    first, last, steps = crow2[:, 0], crow2[:, -1], crow2.diff(dim=1)
    if bool((first != 0).any()):
        t = _first(first != 0)
        raise InputValueError(
            f"{where}: {name}: crow_indices(){item.format(t)} must start at 0, got "
            f"{int(first[t])}; {_FIX}"
        )
    if bool((last != nnz).any()):
        t = _first(last != nnz)
        raise InputValueError(
            f"{where}: {name}: crow_indices(){item.format(t)} must end at nnz = {nnz}, got "
            f"{int(last[t])}; {_FIX}"
        )
    if bool((steps < 0).any()):
        t = _first((steps < 0).any(1))
        entry = _first(steps[t] < 0) + 1
        raise InputValueError(
            f"{where}: {name}: crow_indices(){item.format(t)} must not decrease, but entry "
            f"{entry} is {int(crow2[t, entry])} after {int(crow2[t, entry - 1])}; {_FIX}"
        )
    # The row pointers are valid, so the failure was a column.
    out = (col2 < 0) | (col2 >= m)
    t = _first(out.any(1))
    entry = _first(out[t])
    raise InputValueError(
        f"{where}: {name}: column index {int(col2[t, entry])} at entry {entry}"
        f"{item.format(t)} is out of range for {m} columns; {_FIX}"
    )
