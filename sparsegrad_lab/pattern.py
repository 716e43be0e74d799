"""The sparsity pattern of ``A``, reduced to one 2-D CSR structure.

Every input ``sparse_mm`` accepts -- COO or CSR, 2-D ``(n, m)`` or batched ``(b, n, m)`` --
is the same thing to the kernels: a set of stored positions ``(r_k, c_k)`` of a 2-D matrix
plus a vector of values ``v_k``. A batch of ``b`` matrices is the block-diagonal matrix

.. math::

    \\operatorname{diag}(A_1, \\dots, A_b) \\in \\mathbb{F}^{bn \\times bm},

so item ``t``'s entry ``(i, j)`` sits at ``(t n + i, t m + j)`` and
``diag(A_t) @ vstack(B_t) = vstack(A_t B_t)``. Holding that matrix in CSR order (rows
ascending, columns ascending within a row, no duplicates) lets one set of kernels serve
all eight input kinds without a Python loop over the batch.

The pattern is built once per call and never differentiated; the values travel separately
as an ordinary dense tensor, which is what makes double backward work with plain autograd.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "CsrFromValues",
    "SparsityPattern",
    "csr_tensor",
    "pattern_and_values",
    "pattern_mismatch",
]


def csr_tensor(crow: Tensor, col: Tensor, values: Tensor, size: tuple[int, ...]) -> Tensor:
    """Build a CSR tensor from trusted parts, differentiable in ``values`` at O(nnz) cost.

    The parts come from an existing valid tensor, so invariant checks are skipped, and
    torch's beta-state notice is not shown. When ``values`` requires grad the tensor is
    built through :class:`CsrFromValues`: torch 2.13's own backward of
    ``torch.sparse_csr_tensor`` masks the incoming gradient through steps whose memory
    grows with ``n m`` (lesson 03, section 9, measures both), while the gradient of the
    values is simply the incoming gradient read at the stored positions.

    >>> A = csr_tensor(torch.tensor([0, 1, 1]), torch.tensor([2]), torch.tensor([5.0]), (2, 3))
    >>> A.to_dense()
    tensor([[0., 0., 5.],
            [0., 0., 0.]])
    """
    if values.requires_grad and torch.is_grad_enabled():
        return CsrFromValues.apply(crow, col, values, tuple(size))  # type: ignore[no-any-return]
    return _plain_csr(crow, col, values, size)


def _plain_csr(crow: Tensor, col: Tensor, values: Tensor, size: tuple[int, ...]) -> Tensor:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, col, values, size, check_invariants=False)


class CsrFromValues(torch.autograd.Function):
    """``A = CSR(crow, col, values)`` whose backward costs O(nnz), not O(n m).

    For an upstream gradient ``G`` of ``A`` (sparse or dense), the gradient of ``values``
    is ``G`` read at ``A``'s stored positions: ``G.values()`` when ``G`` stores exactly
    ``A``'s positions (the gradient :func:`sparsegrad_lab.sparse_mm` gives ``A``), a gather
    for a dense ``G``, a sorted-key lookup for a sparse ``G`` with other positions.
    """

    @staticmethod
    def forward(
        ctx: Any, crow: Tensor, col: Tensor, values: Tensor, size: tuple[int, ...]
    ) -> Tensor:
        ctx.crow, ctx.col, ctx.size = crow, col, size
        return _plain_csr(crow, col, values, size)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, None, Tensor, None]:
        return None, None, _values_at(grad, ctx.crow, ctx.col, ctx.size), None


def _values_at(grad: Tensor, crow: Tensor, col: Tensor, size: tuple[int, ...]) -> Tensor:
    """``grad`` at the stored positions of CSR ``(crow, col)``, shaped like its values."""
    if (
        grad.layout == torch.sparse_csr
        and grad.col_indices().shape == col.shape
        and torch.equal(grad.crow_indices(), crow)
        and torch.equal(grad.col_indices(), col)
    ):
        return grad.values()
    crow_bd, col_bd, batch, (n, m) = _block_diagonal(crow, col, size)
    pattern = SparsityPattern(crow_bd, col_bd, batch, (n, m))
    # Entry k sits at flat position row * m + (col mod m) of the (b n, m) stacked matrix.
    flat = pattern.row.to(torch.int64) * m + pattern.col.to(torch.int64) % m
    if grad.layout == torch.strided:
        return grad.reshape(-1)[flat].reshape(col.shape)
    # Any other sparse gradient: match positions through sorted flat keys, O(nnz log nnz).
    coo = grad.to_sparse_coo().coalesce()
    idx = coo.indices()
    if idx.shape[1] == 0:
        return torch.zeros(col.shape, dtype=grad.dtype, device=grad.device)
    item = idx[0] if idx.shape[0] == 3 else torch.zeros_like(idx[0])
    keys = (item * n + idx[-2]) * m + idx[-1]  # ascending: the coalesced order
    at = torch.searchsorted(keys, flat).clamp(max=keys.numel() - 1)
    picked = coo.values()[at]
    return torch.where(keys[at] == flat, picked, torch.zeros_like(picked)).reshape(col.shape)


def _block_diagonal(
    crow: Tensor, col: Tensor, size: tuple[int, ...]
) -> tuple[Tensor, Tensor, int, tuple[int, int]]:
    """``(crow, col, b, (n, m))`` of the 2-D block-diagonal form of a (batched) CSR layout.

    A batch's item ``t`` moves to rows ``t n ..`` and columns ``t m ..``; the index dtype
    stays the input's unless int32 cannot address the whole matrix.
    """
    if len(size) == 2:
        return crow, col, 1, (size[0], size[1])
    b, n, m = size
    per_item = col.shape[-1]
    index_dtype = crow.dtype
    if max(b * per_item, b * max(n, m)) >= 2**31:
        index_dtype = torch.int64  # int32 cannot address the whole block-diagonal matrix
    item = torch.arange(b, device=col.device, dtype=index_dtype).unsqueeze(1)
    crow_bd = torch.cat(
        [
            (crow[:, :-1].to(index_dtype) + item * per_item).reshape(-1),
            torch.tensor([b * per_item], device=col.device, dtype=index_dtype),
        ]
    )
    col_bd = (col.to(index_dtype) + item * m).reshape(-1)
    return crow_bd, col_bd, b, (n, m)


@dataclass(frozen=True, eq=False)
class SparsityPattern:
    """Stored positions of a (block-diagonal) 2-D matrix in CSR order.

    Parameters
    ----------
    crow : Tensor
        Row pointers, shape ``(N + 1,)``; row ``r`` owns entries ``crow[r]:crow[r+1]``.
    col : Tensor
        Column of each entry, shape ``(nnz,)``, same index dtype as ``crow``.
    batch : int
        Number of diagonal blocks ``b`` (1 for a 2-D input).
    block_shape : tuple of int
        ``(n, m)``, the shape of one block; the whole matrix is ``(b n, b m)``.
    _row : Tensor, optional
        Row of each entry, if already at hand; see :attr:`row`.
    _source : _Source, optional
        The layout, shape and index tensors of the ``A`` it was built from, so that a kept
        pattern can be checked against a later ``A`` (:func:`pattern_mismatch`).

    Examples
    --------
    >>> A = torch.tensor([[0.0, 2.0], [3.0, 0.0]]).to_sparse()
    >>> pattern, values = pattern_and_values(A)
    >>> pattern.shape, pattern.nnz, values.tolist()
    ((2, 2), 2, [2.0, 3.0])
    >>> pattern.transpose.pattern.col.tolist()
    [1, 0]
    """

    crow: Tensor
    col: Tensor
    batch: int
    block_shape: tuple[int, int]
    # The expanded rows, when the caller already has them (COO input, the transpose);
    # otherwise :attr:`row` expands ``crow`` on first use -- the default CSR path never does.
    _row: Tensor | None = field(default=None, repr=False)
    _source: _Source | None = field(default=None, repr=False)

    @cached_property
    def row(self) -> Tensor:
        """Row of each entry, shape ``(nnz,)``: the expanded form of ``crow``."""
        if self._row is not None:
            return self._row
        counts = self.crow.diff()
        rows = torch.arange(counts.numel(), device=self.crow.device, dtype=self.crow.dtype)
        return rows.repeat_interleave(counts, output_size=self.nnz)

    @property
    def shape(self) -> tuple[int, int]:
        """``(N, M) = (b n, b m)``, the shape of the block-diagonal matrix."""
        n, m = self.block_shape
        return (self.batch * n, self.batch * m)

    @property
    def nnz(self) -> int:
        """Number of stored entries (after merging duplicates)."""
        return int(self.col.numel())

    @property
    def device(self) -> torch.device:
        """Device of the index tensors."""
        return self.col.device

    def to_csr(self, values: Tensor) -> Tensor:
        """The 2-D CSR tensor with this pattern and ``values`` (the indices are not copied)."""
        return csr_tensor(self.crow, self.col, values, self.shape)

    @cached_property
    def transpose(self) -> TransposedPattern:
        """The pattern of ``Aᵀ`` in its own CSR order, and the permutation that gets there.

        Entry ``k`` of the transpose is entry ``perm[k]`` of this pattern, so the values
        of ``Aᴴ`` are ``values[perm].conj()``. Computed at most once per pattern (the
        gradient of ``B`` and the double-backward products reuse it). The transpose does
        not link back to its source, which keeps the pair free of reference cycles.
        """
        n, m = self.block_shape
        # A stable sort by column keeps rows ascending inside each column: CSR order of Aᵀ.
        # The sorted keys are the transpose's rows. Its indices are int32 whenever they fit:
        # int32 keys sort about 2.5x faster than int64 on CPU, and torch's CPU CSR kernel
        # (MKL) would otherwise convert int64 indices to int32 on every product.
        fits_int32 = max(self.batch * max(n, m), self.nnz) < 2**31
        index_dtype = torch.int32 if fits_int32 else torch.int64
        row_t, perm = torch.sort(self.col.to(index_dtype), stable=True)
        crow_t = torch._convert_indices_from_coo_to_csr(row_t, self.batch * m, out_int32=fits_int32)
        transposed = SparsityPattern(
            crow=crow_t,
            col=self.row[perm].to(index_dtype),
            batch=self.batch,
            block_shape=(m, n),
            _row=row_t,
        )
        return TransposedPattern(transposed, perm)


@dataclass(frozen=True, eq=False)
class _Source:
    """What a pattern was built from: ``A``'s layout, shape and index tensors.

    COO: the coalesced ``indices()``; CSR: ``crow_indices()`` and ``col_indices()``. For
    a 2-D CSR input these are the pattern's own tensors, so keeping them costs nothing.
    """

    layout: torch.layout
    shape: tuple[int, ...]
    indices: tuple[Tensor, ...]


def _index_tensors(A: Tensor) -> tuple[Tensor, ...]:
    if A.layout == torch.sparse_coo:
        return (A.indices(),)
    return (A.crow_indices(), A.col_indices())


_INDEX_NAMES = {
    torch.sparse_coo: ("indices()",),
    torch.sparse_csr: ("crow_indices()", "col_indices()"),
}


def pattern_mismatch(pattern: SparsityPattern, A: Tensor) -> str | None:
    """Why ``pattern`` is not the pattern of ``A`` (coalesced, if COO), or ``None`` if it is.

    A kept pattern may only serve an ``A`` with exactly the indices it was built from:
    same layout, shape, device, index dtype and values of every index. Comparing the
    indices costs one pass over them -- far less than rebuilding the pattern.

    >>> A = torch.eye(3).to_sparse_csr()
    >>> pattern, _ = pattern_and_values(A)
    >>> pattern_mismatch(pattern, torch.eye(3).to_sparse_csr()) is None
    True
    >>> pattern_mismatch(pattern, torch.ones(3, 3).to_sparse_csr())
    'it has 9 stored entries per matrix, but the pattern was built from 3'
    >>> pattern_mismatch(pattern, torch.eye(3).flip(0).to_sparse_csr())
    'its col_indices() differ from those the pattern was built from'
    """
    source = pattern._source
    if source is None:
        return "the pattern was not built from a sparse tensor (a derived pattern cannot be kept)"
    if A.layout != source.layout:
        return f"its layout is {A.layout}, but the pattern was built from a {source.layout} tensor"
    if tuple(A.shape) != source.shape:
        return f"its shape is {tuple(A.shape)}, but the pattern was built for shape {source.shape}"
    if A.device != pattern.device:
        return f"it is on {A.device}, but the pattern is on {pattern.device}"
    mine = _index_tensors(A)
    if mine[-1].shape != source.indices[-1].shape:  # COO (dims, nnz); CSR col ([b,] nnz)
        return (
            f"it has {mine[-1].shape[-1]} stored entries per matrix, but the pattern was "
            f"built from {source.indices[-1].shape[-1]}"
        )
    names = _INDEX_NAMES[A.layout]
    for name, index, kept in zip(names, mine, source.indices, strict=True):
        if index.dtype != kept.dtype:
            return f"its {name} are {index.dtype}, but the pattern was built from {kept.dtype}"
        if not torch.equal(index, kept):
            return f"its {name} differ from those the pattern was built from"
    return None


@dataclass(frozen=True, eq=False)
class TransposedPattern:
    """``Aᵀ``'s pattern together with the permutation from ``A``'s value order to it."""

    pattern: SparsityPattern
    perm: Tensor


def pattern_and_values(
    A: Tensor, kept: SparsityPattern | None = None
) -> tuple[SparsityPattern, Tensor]:
    """Split a validated sparse ``A`` into its CSR-ordered pattern and its values.

    The values stay attached to autograd: a gradient that reaches them flows back into
    ``A`` as a sparse tensor of ``A``'s own layout (torch's ``values()`` backward builds
    it from ``A``'s indices). Uncoalesced COO is coalesced first, so duplicated positions
    are summed in the forward and each receives the full gradient of its position -- the
    derivative of a sum with respect to each of its terms.

    Parameters
    ----------
    A : Tensor
        Sparse COO or CSR, shape ``(n, m)`` or ``(b, n, m)``, already validated.
    kept : SparsityPattern, optional
        A pattern built earlier from an ``A`` with the same indices: it is returned as it
        is (with its cached transpose) instead of a new one. The caller checks the match
        first with :func:`pattern_mismatch`.

    Returns
    -------
    pattern : SparsityPattern
        Positions of the block-diagonal ``(b n, b m)`` matrix in CSR order.
    values : Tensor
        Shape ``(nnz,)``, aligned with ``pattern``.

    Examples
    --------
    >>> i = torch.tensor([[1, 0, 1], [0, 2, 0]])            # (1, 0) is stored twice
    >>> A = torch.sparse_coo_tensor(i, torch.tensor([1.0, 2.0, 3.0]), (2, 3))
    >>> pattern, values = pattern_and_values(A)
    >>> pattern.row.tolist(), pattern.col.tolist(), values.tolist()
    ([0, 1], [2, 0], [2.0, 4.0])
    """
    batched = A.dim() == 3
    b, n, m = A.shape if batched else (1, *A.shape)
    if A.layout == torch.sparse_coo:
        A = A.coalesce()
    if kept is not None:
        return kept, A.values().reshape(-1)
    source = _Source(A.layout, tuple(A.shape), _index_tensors(A))
    if A.layout == torch.sparse_coo:
        indices, values = A.indices(), A.values()
        if batched:
            item = indices[0]
            row, col = item * n + indices[1], item * m + indices[2]
        else:
            row, col = indices[0], indices[1]
        crow = torch._convert_indices_from_coo_to_csr(row, b * n)
        return SparsityPattern(crow, col, b, (n, m), _row=row, _source=source), values

    crow, col, _b, _shape = _block_diagonal(A.crow_indices(), A.col_indices(), tuple(A.shape))
    values = A.values().reshape(-1)
    return SparsityPattern(crow, col, b, (n, m), _source=source), values
