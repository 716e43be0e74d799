"""Batches of sparse matrices: block-diagonal assembly and split, and batched CSR stacking.

A batch of sparse matrices :math:`A_1, \\dots, A_b` (shapes :math:`n_t \\times m_t`, any
mix of sizes and nnz) multiplies a batch of dense :math:`B_t` (:math:`m_t \\times p`) in
one call through the block-diagonal matrix

.. math::

    \\operatorname{diag}(A_1, \\dots, A_b)
    \\begin{pmatrix} B_1 \\\\ \\vdots \\\\ B_b \\end{pmatrix}
    = \\begin{pmatrix} A_1 B_1 \\\\ \\vdots \\\\ A_b B_b \\end{pmatrix},
    \\qquad \\operatorname{diag}(A_1, \\dots, A_b) \\in
    \\mathbb{F}^{(\\sum_t n_t) \\times (\\sum_t m_t)} .

Entry :math:`(i, j)` of :math:`A_t` sits at :math:`(R_t + i, C_t + j)` with the exclusive
prefix sums :math:`R_t = \\sum_{s<t} n_s`, :math:`C_t = \\sum_{s<t} m_s`. The functions
here compute those offsets with ``cumsum`` and hand them to every stored entry with
``repeat_interleave``, so the work is a few tensor operations whatever the batch size --
no Python loop does arithmetic per item. Only the values are differentiable (indices
never are), and every function moves values without changing them, so a gradient that
reaches an output's values flows back unchanged to the matching entries of the inputs.

torch's own batched CSR (``(b, n, m)``) needs equal shapes *and* equal nnz per item;
:func:`stack_csr` builds one, :func:`sparse_block_diag` covers everything else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .csr_from_values import csr_tensor
from .errors import InputTypeError, InputValueError
from .index_checks import check_indices
from .operand_checks import check_sparse_layout
from .pattern import pattern_and_values
from .scalar_checks import check_int, kind_of

__all__ = ["sparse_block_diag", "sparse_block_diag_split", "stack_csr"]

# The largest index an int32 CSR can hold; past it the result needs int64 indices.
_INT32_MAX = 2**31 - 1


def _check_sparse(fn: str, name: str, M: Any, *, dims: tuple[int, ...]) -> Tensor:
    """Validate one sparse operand: a tensor, COO or CSR, not hybrid, of rank in ``dims``."""
    if not isinstance(M, Tensor):
        raise InputTypeError(f"{fn}: {name} must be a sparse torch.Tensor, got {kind_of(M)}")
    check_sparse_layout(M, fn, name)
    if M.dense_dim() != 0:
        raise InputValueError(
            f"{fn}: {name} is a hybrid sparse tensor (sparse_dim={M.sparse_dim()}, "
            f"dense_dim={M.dense_dim()}); expected scalar values (dense_dim=0)"
        )
    if M.dim() not in dims:
        expected = " or ".join(f"{d}-D" for d in dims)
        raise InputValueError(f"{fn}: {name} must be {expected}, got shape {tuple(M.shape)}")
    return M


def _check_alike(fn: str, matrices: Sequence[Tensor]) -> None:
    """Every matrix must share the first one's layout, dtype and device."""
    first = matrices[0]
    for t, M in enumerate(matrices[1:], start=1):
        if M.layout != first.layout:
            raise InputTypeError(
                f"{fn}: all matrices must have the same layout, got matrices[0] {first.layout} "
                f"and matrices[{t}] {M.layout}; convert with .to_sparse() or .to_sparse_csr()"
            )
        if M.dtype != first.dtype:
            raise InputTypeError(
                f"{fn}: all matrices must have the same dtype, got matrices[0] {first.dtype} "
                f"and matrices[{t}] {M.dtype}; cast with .to(dtype)"
            )
        if M.device != first.device:
            raise InputValueError(
                f"{fn}: all matrices must be on the same device, got matrices[0] on "
                f"{first.device} and matrices[{t}] on {M.device}"
            )


def _check_indices_of(fn: str, M: Tensor, name: str) -> None:
    """Refuse the indices of ``M`` (called ``name``) that ``sparse_mm`` would refuse.

    A block must be checked before its entries move: shifted by its offsets, an index out
    of its block's range lands inside another block, where it is a legal entry of the
    result, so only the block itself can tell that it is wrong.
    """
    if M.device.type != "meta":  # a meta tensor holds no indices to read
        check_indices(M, fn, name=name)


def _check_batch(fn: str, A: Tensor) -> None:
    """:func:`_check_indices_of` for each item of a batched ``(b, n, m)`` ``A``.

    The whole batch is checked at once, as ``sparse_mm`` checks it; only if that fails is
    each item checked alone, so that the message names the block (and its entry) at fault.
    An error that lies between items (a batch index out of range, items out of order) is
    reported for the whole batch.
    """
    if A.device.type == "meta":
        return
    try:
        check_indices(A, fn, name="matrices[0]")
    except InputValueError:
        for t, item in enumerate(_items(A)):
            check_indices(item, fn, name=f"block {t}")
        raise


def _items(A: Tensor) -> list[Tensor]:
    """The 2-D items of batched ``A``, as they are stored (indices not yet checked)."""
    if A.layout == torch.sparse_csr:
        return [A[t] for t in range(A.shape[0])]  # views of crow, col and values
    indices, values = A._indices(), A._values()
    batch = indices[0]
    valid = (batch >= 0) & (batch < A.shape[0])
    # One stable sort groups the entries by item, each item's in their stored order; A[t]
    # instead would scan all entries once per item.
    order = torch.argsort(torch.where(valid, batch, A.shape[0]), stable=True)
    counts = torch.bincount(batch[valid], minlength=A.shape[0]).tolist()
    return [
        torch.sparse_coo_tensor(
            indices[1:, part],
            values[part],
            A.shape[1:],
            is_coalesced=A.is_coalesced(),
            check_invariants=False,
        )
        for part in torch.split(order[: sum(counts)], counts)
    ]


def _exclusive_cumsum(x: Tensor) -> Tensor:
    """``[0, x_0, x_0 + x_1, ...]`` without the total: the start offset of each item."""
    return torch.cumsum(x, dim=0, dtype=x.dtype) - x  # cumsum would promote int32 to int64


def sparse_block_diag(*matrices: Tensor) -> Tensor:
    """The block-diagonal sparse matrix :math:`\\operatorname{diag}(A_1, \\dots, A_b)`.

    .. math::

        \\operatorname{diag}(A_1, \\dots, A_b)
        \\begin{pmatrix} B_1 \\\\ \\vdots \\\\ B_b \\end{pmatrix}
        = \\begin{pmatrix} A_1 B_1 \\\\ \\vdots \\\\ A_b B_b \\end{pmatrix},

    so one :func:`~sparsegrad_lab.sparse_mm` multiplies a whole batch of matrices whose
    shapes or nnz differ (which torch's batched CSR cannot hold). Entry :math:`(i, j)` of
    :math:`A_t` lands at :math:`(R_t + i, C_t + j)`, :math:`R_t, C_t` the rows and columns
    of the blocks before it. Assembled with one ``cat`` per index array and offsets from
    ``cumsum`` + ``repeat_interleave``: no per-item arithmetic in Python.

    Parameters
    ----------
    *matrices : Tensor
        Either several 2-D sparse matrices :math:`(n_t, m_t)`, all COO or all CSR, with
        the same dtype and device (shapes and nnz may differ; ``n_t`` or ``m_t`` may be 0),
        or a single batched 3-D COO or CSR tensor ``(b, n, m)`` whose items are the blocks.
        Differentiable in the values.

    Returns
    -------
    Tensor
        2-D ``(Σ n_t, Σ m_t)`` of the inputs' layout. COO: coalesced (duplicates of an
        uncoalesced input are summed), int64 indices. CSR: int32 indices when every input
        has int32 indices and the result still fits in int32, else int64.

    Raises
    ------
    InputTypeError, InputValueError
        No matrices, a non-tensor, a dense or hybrid tensor, a layout other than COO/CSR,
        mixed layouts, dtypes or devices, an item that is not 2-D, or a block that
        :func:`~sparsegrad_lab.sparse_mm` would refuse (an index out of range, row pointers
        out of place, a COO tensor marked coalesced that is not): shifted into the result,
        such an entry would be a legal entry of another block. The message names the block
        (the item, of a batched input) and its entry.

    Examples
    --------
    >>> A1 = torch.tensor([[1.0, 0.0], [0.0, 2.0]]).to_sparse()
    >>> A2 = torch.tensor([[3.0, 4.0, 0.0]]).to_sparse()
    >>> D = sparse_block_diag(A1, A2)
    >>> D.shape, D.layout, D.is_coalesced()
    (torch.Size([3, 5]), torch.sparse_coo, True)
    >>> D.to_dense()
    tensor([[1., 0., 0., 0., 0.],
            [0., 2., 0., 0., 0.],
            [0., 0., 3., 4., 0.]])
    >>> from sparsegrad_lab import sparse_mm
    >>> B1, B2 = torch.ones(2, 1), torch.ones(3, 1)
    >>> sparse_mm(D, torch.cat([B1, B2]))           # vstack(A1 @ B1, A2 @ B2)
    tensor([[1.],
            [2.],
            [7.]])
    >>> bad = torch.sparse_coo_tensor(torch.tensor([[0], [4]]), torch.ones(1), (1, 3),
    ...                               check_invariants=False)  # column 4 of 3
    >>> sparse_block_diag(A1, bad)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    sparsegrad_lab.errors.InputValueError: sparse_block_diag: block 1: column index 4 at \
entry 0 is out of range for 3 columns...
    """
    fn = "sparse_block_diag"
    if len(matrices) == 1 and isinstance(matrices[0], list | tuple):
        raise InputTypeError(
            f"{fn}: pass the matrices as separate arguments, sparse_block_diag(*matrices), "
            f"not one {type(matrices[0]).__name__}"
        )
    if not matrices:
        raise InputValueError(f"{fn}: expected at least one sparse matrix, got none")
    if len(matrices) == 1:
        A = _check_sparse(fn, "matrices[0]", matrices[0], dims=(2, 3))
        if A.dim() == 3:
            _check_batch(fn, A)
            return _batched_block_diag(A)
        matrices = (A,)
    else:
        matrices = tuple(
            _check_sparse(fn, f"matrices[{t}]", M, dims=(2,)) for t, M in enumerate(matrices)
        )
        _check_alike(fn, matrices)
    for t, M in enumerate(matrices):
        _check_indices_of(fn, M, f"block {t}")
    if matrices[0].layout == torch.sparse_coo:
        return _coo_block_diag(matrices)
    return _csr_block_diag(matrices)


def _batched_block_diag(A: Tensor) -> Tensor:
    # A batched tensor is exactly the block-diagonal matrix sparse_mm already builds.
    pattern, values = pattern_and_values(A)
    if A.layout == torch.sparse_csr:
        return pattern.to_csr(values)
    indices = torch.stack([pattern.row, pattern.col])
    return torch.sparse_coo_tensor(
        indices, values, pattern.shape, is_coalesced=True, check_invariants=False
    )


def _coo_block_diag(matrices: Sequence[Tensor]) -> Tensor:
    matrices = [M.coalesce() for M in matrices]  # differentiable; sums duplicates
    device = matrices[0].device
    shape_list = [tuple(M.shape) for M in matrices]
    shapes = torch.tensor(shape_list, dtype=torch.int64, device=device)
    nnz = [M._nnz() for M in matrices]
    total_nnz = sum(nnz)
    starts = _exclusive_cumsum(shapes)  # (b, 2): (R_t, C_t)
    entry_starts = starts.repeat_interleave(
        torch.tensor(nnz, device=device), dim=0, output_size=total_nnz
    )
    indices = torch.cat([M.indices() for M in matrices], dim=1) + entry_starts.T
    values = torch.cat([M.values() for M in matrices])
    size = (sum(n for n, _ in shape_list), sum(m for _, m in shape_list))
    # Each block is sorted row-major and every block's rows follow the previous block's,
    # so the concatenation is already in coalesced order.
    return torch.sparse_coo_tensor(indices, values, size, is_coalesced=True, check_invariants=False)


def _csr_block_diag(matrices: Sequence[Tensor]) -> Tensor:
    device = matrices[0].device
    rows = [M.shape[0] for M in matrices]
    cols = [M.shape[1] for M in matrices]
    nnz = [M._nnz() for M in matrices]
    N, M_, total_nnz = sum(rows), sum(cols), sum(nnz)
    all_int32 = all(M.crow_indices().dtype == torch.int32 for M in matrices)
    fits_int32 = max(N, M_, total_nnz) <= _INT32_MAX
    index_dtype = torch.int32 if all_int32 and fits_int32 else torch.int64
    rows_t = torch.tensor(rows, dtype=index_dtype, device=device)
    nnz_t = torch.tensor(nnz, dtype=index_dtype, device=device)
    cols_t = torch.tensor(cols, dtype=index_dtype, device=device)
    # Row pointers: each block's crow (without its closing total) shifted by the nnz of
    # the blocks before it, then the grand total closes the whole matrix.
    crow = torch.cat([M.crow_indices()[:-1].to(index_dtype) for M in matrices])
    crow = crow + _exclusive_cumsum(nnz_t).repeat_interleave(rows_t, output_size=N)
    crow = torch.cat([crow, torch.tensor([total_nnz], dtype=index_dtype, device=device)])
    col = torch.cat([M.col_indices().to(index_dtype) for M in matrices])
    col = col + _exclusive_cumsum(cols_t).repeat_interleave(nnz_t, output_size=total_nnz)
    values = torch.cat([M.values() for M in matrices])
    return csr_tensor(crow, col, values, (N, M_))


def _check_shapes(fn: str, shapes: Sequence[Any], D: Tensor) -> list[tuple[int, int]]:
    if not shapes:
        raise InputValueError(f"{fn}: expected at least one block shape (rows, cols), got none")
    checked = []
    for t, shape in enumerate(shapes):
        try:
            if isinstance(shape, Tensor) or len(shape) != 2:
                raise TypeError
            # A negative size is an InputValueError naming it; anything but an int, this:
            n, m = (check_int(s, f"shapes[{t}]", fn, minimum=0) for s in shape)
        except TypeError:
            raise InputTypeError(
                f"{fn}: shapes[{t}] must be a pair of ints (rows, cols), got {shape!r}; pass "
                "the shapes as separate arguments, sparse_block_diag_split(D, *shapes)"
            ) from None
        checked.append((n, m))
    total = (sum(n for n, _ in checked), sum(m for _, m in checked))
    if total != tuple(D.shape):
        raise InputValueError(
            f"{fn}: the block shapes add up to {total}, but D has shape {tuple(D.shape)}; "
            "expected shapes whose rows and columns sum to D's"
        )
    return checked


def sparse_block_diag_split(D: Tensor, *shapes: tuple[int, int]) -> tuple[Tensor, ...]:
    """Split :math:`D = \\operatorname{diag}(A_1, \\dots, A_b)` back into its blocks.

    The inverse of :func:`sparse_block_diag`: block :math:`t` of shape
    :math:`(n_t, m_t)` is :math:`A_t = D[R_t : R_t + n_t,\\ C_t : C_t + m_t]` with
    :math:`R_t, C_t` the exclusive prefix sums of the shapes, so
    ``sparse_block_diag_split(sparse_block_diag(*A), *shapes) == A``. Vectorised: each
    stored entry finds its block by ``bucketize`` against the row offsets, and a single
    ``torch.split`` by per-block counts cuts the indices and values.

    Parameters
    ----------
    D : Tensor
        2-D sparse COO or CSR matrix whose stored entries all lie in the diagonal blocks.
        Differentiable in the values.
    *shapes : tuple of int
        ``(n_t, m_t)`` for each block, in order; the rows must add up to ``D.shape[0]``
        and the columns to ``D.shape[1]``. Zero-sized blocks are allowed.

    Returns
    -------
    tuple of Tensor
        One 2-D sparse matrix per shape, in ``D``'s layout. COO blocks are coalesced
        (an uncoalesced ``D`` is coalesced first); CSR blocks keep ``D``'s index dtype.

    Raises
    ------
    InputTypeError, InputValueError
        ``D`` not a 2-D COO/CSR sparse matrix, a shape that is not a pair of non-negative
        ints, shapes that do not add up to ``D``'s, indices of ``D`` that
        :func:`~sparsegrad_lab.sparse_mm` would refuse (the message names the entry), or a
        stored entry of ``D`` outside the diagonal blocks (the message names the first such
        position, in row-major order; a stored zero counts, since it is part of ``D``'s
        pattern).

    Examples
    --------
    >>> D = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 3.0]]).to_sparse_csr()
    >>> A1, A2 = sparse_block_diag_split(D, (1, 1), (1, 2))
    >>> A1.to_dense(), A2.to_dense()
    (tensor([[1.]]), tensor([[2., 3.]]))
    >>> sparse_block_diag_split(D, (1, 2), (1, 1))
    Traceback (most recent call last):
    ...
    sparsegrad_lab.errors.InputValueError: sparse_block_diag_split: D has a stored entry at \
(1, 1), outside the diagonal blocks: row 1 is in block 1 (rows 1:2), whose columns are 2:3
    """
    fn = "sparse_block_diag_split"
    D = _check_sparse(fn, "D", D, dims=(2,))
    checked = _check_shapes(fn, shapes, D)
    # A row out of range has no block (bucketize would index past the last one), and a
    # row pointer out of place misassigns whole rows: checked first, as sparse_mm does.
    _check_indices_of(fn, D, "D")
    device = D.device
    if D.layout == torch.sparse_coo:
        D = D.coalesce()  # differentiable; CSR order lets one split serve every block
        indices, values = D.indices(), D.values()
        row, col = indices[0], indices[1]
        index_dtype = torch.int64
    else:
        crow, col, values = D.crow_indices(), D.col_indices(), D.values()
        index_dtype = crow.dtype
    sizes = torch.tensor(checked, dtype=torch.int64, device=device)  # (b, 2)
    ends = torch.cumsum(sizes, dim=0)
    starts = ends - sizes  # (b, 2): (R_t, C_t)

    if D.layout == torch.sparse_coo:
        # right=True: entry row r goes to the block t with R_t <= r < R_t + n_t, which
        # skips zero-row blocks (their end equals the next block's start).
        block = torch.bucketize(row, ends[:, 0].contiguous(), right=True)
        counts = torch.bincount(block, minlength=len(checked))
    else:
        row_starts, row_ends = starts[:, 0], ends[:, 0]
        counts = crow[row_ends].long() - crow[row_starts].long()
        block = torch.arange(len(checked), device=device).repeat_interleave(
            counts, output_size=values.numel()
        )
    col_start = starts[block, 1]
    outside = (col < col_start) | (col >= ends[block, 1])
    if bool(outside.any()):
        _raise_off_diagonal(fn, D, outside, block, starts, ends)

    split_sizes = counts.tolist()
    value_parts = torch.split(values, split_sizes)
    if D.layout == torch.sparse_coo:
        local = indices - starts[block].T
        return tuple(
            torch.sparse_coo_tensor(idx, val, shape, is_coalesced=True, check_invariants=False)
            for idx, val, shape in zip(
                torch.split(local, split_sizes, dim=1), value_parts, checked, strict=True
            )
        )

    # Block t's row pointers are crow[R_t : R_t + n_t + 1] - crow[R_t]: gather all of them
    # at once. Output slot s of block t reads crow[s - t], since each block adds one slot.
    b = len(checked)
    ptr_counts = sizes[:, 0] + 1
    total_ptrs = int(D.shape[0]) + b
    owner = torch.arange(b, device=device).repeat_interleave(ptr_counts, output_size=total_ptrs)
    gathered = crow[torch.arange(total_ptrs, device=device) - owner]
    local_crow = gathered - crow[starts[owner, 0]]
    local_col = col - col_start.to(index_dtype)
    return tuple(
        csr_tensor(c, k, v, shape)
        for c, k, v, shape in zip(
            torch.split(local_crow, ptr_counts.tolist()),
            torch.split(local_col, split_sizes),
            value_parts,
            checked,
            strict=True,
        )
    )


def _raise_off_diagonal(
    fn: str, D: Tensor, outside: Tensor, block: Tensor, starts: Tensor, ends: Tensor
) -> None:
    k = int(outside.nonzero()[0, 0])  # entries are in row-major order: k is the first
    if D.layout == torch.sparse_coo:
        r, c = (int(i) for i in D.indices()[:, k].tolist())
    else:
        crow = D.crow_indices()
        r = int(torch.searchsorted(crow, crow.new_tensor([k]), right=True)[0]) - 1
        c = int(D.col_indices()[k])
    t = int(block[k])
    r0, c0 = (int(i) for i in starts[t].tolist())
    r1, c1 = (int(i) for i in ends[t].tolist())
    raise InputValueError(
        f"{fn}: D has a stored entry at ({r}, {c}), outside the diagonal blocks: row {r} is "
        f"in block {t} (rows {r0}:{r1}), whose columns are {c0}:{c1}"
    )


def stack_csr(matrices: Sequence[Tensor]) -> Tensor:
    """Stack 2-D CSR matrices into torch's batched 3-D CSR tensor ``(b, n, m)``.

    Item :math:`t` of the result is :math:`A_t`; as a batch it is the same operator as
    :math:`\\operatorname{diag}(A_1, \\dots, A_b)`, and ``sparse_mm`` on it computes
    :math:`A_t B_t` for every ``t`` at once. torch stores a batched CSR as stacked row
    pointers, column indices and values, which is why every item needs the same shape,
    index dtype *and* number of stored entries; for anything else use
    :func:`sparse_block_diag`.

    Parameters
    ----------
    matrices : sequence of Tensor
        At least one 2-D CSR matrix, all of the same shape, dtype, device, index dtype and
        nnz. Differentiable in the values.

    Returns
    -------
    Tensor
        Batched CSR ``(b, n, m)`` with the inputs' index dtype.

    Raises
    ------
    InputTypeError, InputValueError
        An empty sequence, a non-tensor or non-CSR item, a hybrid or non-2-D item, or
        items that differ in shape, dtype, device, index dtype or nnz.

    Examples
    --------
    >>> A1 = torch.tensor([[1.0, 0.0], [0.0, 2.0]]).to_sparse_csr()
    >>> A2 = torch.tensor([[0.0, 3.0], [4.0, 0.0]]).to_sparse_csr()
    >>> S = stack_csr([A1, A2])
    >>> S.shape, S.layout, S.values().tolist()
    (torch.Size([2, 2, 2]), torch.sparse_csr, [[1.0, 2.0], [3.0, 4.0]])
    """
    fn = "stack_csr"
    if isinstance(matrices, Tensor) or not isinstance(matrices, Sequence):
        raise InputTypeError(
            f"{fn}: matrices must be a sequence (list or tuple) of 2-D CSR tensors, got "
            f"{kind_of(matrices)}"
        )
    if not matrices:
        raise InputValueError(f"{fn}: expected at least one CSR matrix, got an empty sequence")
    checked = [_check_sparse(fn, f"matrices[{t}]", M, dims=(2,)) for t, M in enumerate(matrices)]
    for t, M in enumerate(checked):
        if M.layout != torch.sparse_csr:
            raise InputTypeError(
                f"{fn}: matrices[{t}] has layout {M.layout}; expected torch.sparse_csr "
                "(convert it with .to_sparse_csr())"
            )
    _check_alike(fn, checked)
    first = checked[0]
    for t, M in enumerate(checked[1:], start=1):
        if M.shape != first.shape:
            raise InputValueError(
                f"{fn}: all matrices must have the same shape, got matrices[0] "
                f"{tuple(first.shape)} and matrices[{t}] {tuple(M.shape)}; use "
                "sparse_block_diag for matrices of different shapes"
            )
        if M.crow_indices().dtype != first.crow_indices().dtype:
            raise InputTypeError(
                f"{fn}: all matrices must have the same index dtype, got matrices[0] "
                f"{first.crow_indices().dtype} and matrices[{t}] {M.crow_indices().dtype}"
            )
    nnz = [M._nnz() for M in checked]
    if len(set(nnz)) > 1:
        shown = nnz if len(nnz) <= 10 else [*nnz[:10], "..."]
        raise InputValueError(
            f"{fn}: torch's batched CSR needs the same number of stored entries in every "
            f"item, got nnz {shown}; use sparse_block_diag(*matrices) to batch matrices "
            "whose nnz differ"
        )
    crow = torch.stack([M.crow_indices() for M in checked])
    col = torch.stack([M.col_indices() for M in checked])
    values = torch.stack([M.values() for M in checked])
    return csr_tensor(crow, col, values, (len(checked), *first.shape))
