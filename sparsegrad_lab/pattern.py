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

Its index tensors are always contiguous. torch hands out strided views of a valid tensor's
indices -- ``indices()`` of a COO tensor built from ``edges.t()``, a row of such indices,
a ``col_indices()`` that is a slice -- and several of its kernels read index storage as if
it were contiguous: ``torch._convert_indices_from_coo_to_csr`` on a strided row, the CPU
CSR product (MKL) on a strided int32 ``col``, and every kernel that takes a CSR tensor built
with ``check_invariants=False``. A strided view is therefore copied once where it enters:
by :class:`SparsityPattern`, which keeps contiguous copies, and by
:func:`contiguous_indices` for a tensor handed on; a contiguous one, with or without a
storage offset, is used as it is. (torch's own invariant check refuses a strided CSR index
tensor, but builds one without complaint with the checks off, its default; a strided COO
``indices()`` it accepts either way.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import torch
from torch import Tensor

from .csr_from_values import CsrFromValues, CsrValues, plain_csr
from .errors import InputTypeError, InputValueError

__all__ = [
    "PatternSource",
    "SparsityPattern",
    "TransposedPattern",
    "check_kept_pattern",
    "coalesced",
    "contiguous_indices",
    "differentiable_gradient",
    "has_contiguous_indices",
    "kept_pattern",
    "pattern_and_values",
    "pattern_mismatch",
    "pattern_of",
    "strided_index_bytes",
    "values_of",
]


def _batch_as_one_csr(
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
    # Both results are fresh contiguous tensors (the arithmetic below copies), whatever the
    # strides of the input's index views.
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
    col : Tensor
        Column of each entry, shape ``(nnz,)``.
    batch : int
        Number of diagonal blocks ``b`` (1 for a 2-D input).
    block_shape : tuple of int
        ``(n, m)``, the shape of one block; the whole matrix is ``(b n, b m)``.
    _crow, _row : Tensor, optional
        Row pointers ``(N + 1,)`` and row of each entry ``(nnz,)``, same index dtype as
        ``col``: at least one of them. Each derives the other on first use (:attr:`crow`,
        :attr:`row`).
    _source : PatternSource, optional
        The layout, shape and index tensors of the ``A`` it was built from, so that a kept
        pattern can be checked against a later ``A`` (:func:`pattern_mismatch`); read it as
        :attr:`source`.

    Notes
    -----
    A strided index tensor (a view torch handed out) is replaced by a contiguous copy when
    the pattern is built: the kernels it feeds read index storage as contiguous (see the
    module docstring).

    Examples
    --------
    >>> A = torch.tensor([[0.0, 2.0], [3.0, 0.0]]).to_sparse()
    >>> pattern, values = pattern_and_values(A)
    >>> pattern.shape, pattern.nnz, values.tolist()
    ((2, 2), 2, [2.0, 3.0])
    >>> pattern.has_transpose(), pattern.transpose.pattern.col.tolist(), pattern.has_transpose()
    (False, [1, 0], True)
    """

    col: Tensor
    batch: int
    block_shape: tuple[int, int]
    # CSR input has the row pointers; :attr:`row` expands them on first use (∇B, "gather",
    # "dense"; never the forward). COO input and the transpose have the rows; :attr:`crow`
    # compresses them on first use (a small COO graph's product and backward never do).
    _crow: Tensor | None = field(default=None, repr=False)
    _row: Tensor | None = field(default=None, repr=False)
    _source: PatternSource | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name in ("col", "_crow", "_row"):
            index = getattr(self, name)
            if index is not None and not index.is_contiguous():
                object.__setattr__(self, name, index.contiguous())

    @cached_property
    def crow(self) -> Tensor:
        """Row pointers, shape ``(N + 1,)``; row ``r`` owns entries ``crow[r]:crow[r+1]``."""
        if self._crow is not None:
            return self._crow
        rows = self._row
        assert rows is not None, "a pattern has its row pointers or its rows"
        return torch._convert_indices_from_coo_to_csr(
            rows, self.shape[0], out_int32=rows.dtype == torch.int32
        )

    @cached_property
    def row(self) -> Tensor:
        """Row of each entry, shape ``(nnz,)``: the expanded form of ``crow``."""
        if self._row is not None:
            return self._row
        # Row r repeated crow[r+1] - crow[r] times, in crow's dtype. (torch's CSR -> COO
        # conversion is a little faster but returns the columns too, doubling the memory.)
        return torch.repeat_interleave(self.crow.diff(), output_size=self.nnz)

    @property
    def source(self) -> PatternSource | None:
        """What a kept pattern was built from (:func:`kept_pattern`); ``None`` for any other.

        A pattern with a source serves every call whose ``A`` has exactly those indices, so
        it is worth sorting once for all of them (its :attr:`transpose`).
        """
        return self._source

    def has_row_pointers(self) -> bool:
        """Whether :attr:`crow` is there without being built (a COO pattern builds it lazily).

        >>> A = torch.eye(2).to_sparse()
        >>> pattern_of(A).has_row_pointers(), pattern_of(A.to_sparse_csr()).has_row_pointers()
        (False, True)
        """
        return self._crow is not None or "crow" in self.__dict__  # cached_property's slot

    def has_transpose(self) -> bool:
        """Whether :attr:`transpose` has been built (it then costs nothing more).

        >>> pattern_of(torch.eye(2).to_sparse_csr()).has_transpose()
        False
        """
        return "transpose" in self.__dict__  # cached_property's slot

    def has_operator_indices(self) -> bool:
        """Whether :attr:`operator_indices` has been built (a traced call can only read it).

        >>> pattern = kept_pattern(torch.eye(2).to_sparse())
        >>> pattern.has_operator_indices(), len(pattern.operator_indices), pattern.has_transpose()
        (False, 6, True)
        """
        return "operator_indices" in self.__dict__  # cached_property's slot

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
        """The 2-D CSR tensor with this pattern and ``values`` (the indices are not copied).

        Not tracked by autograd in ``values``: the autograd functions of
        :mod:`sparsegrad_lab.autograd` differentiate through it themselves.
        """
        return plain_csr(self.crow, self.col, values, self.shape)

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
        transposed = SparsityPattern(
            col=self.row[perm].to(index_dtype), batch=self.batch, block_shape=(m, n), _row=row_t
        )
        return TransposedPattern(transposed, perm)

    @cached_property
    def operator_indices(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``(crow, col, crow_t, col_t, perm, perm_t)``: the index arguments of the registered
        ops of :mod:`sparsegrad_lab.pattern_op`, built from this pattern's own tensors.

        ``crow``/``col`` are this pattern's, ``crow_t``/``col_t`` its transpose's (each pair
        of one dtype), ``perm`` the transpose's permutation and ``perm_t`` its inverse
        (:attr:`TransposedPattern.inverse`). Nothing is copied that the pattern holds
        already; the transpose and the inverse are built on first use and cached, and so is
        the tuple (:meth:`has_operator_indices`): a compiled function reads it as it is.

        >>> crow, col, crow_t, col_t, perm, perm_t = kept_pattern(
        ...     torch.tensor([[0.0, 2.0], [3.0, 4.0]]).to_sparse()).operator_indices
        >>> col.tolist(), col_t.tolist(), perm.tolist(), perm_t.tolist()
        ([1, 0, 1], [1, 0, 1], [1, 0, 2], [1, 0, 2])
        """
        transpose = self.transpose
        return (
            self.crow,
            self.col,
            transpose.pattern.crow,
            transpose.pattern.col,
            transpose.perm,
            transpose.inverse,
        )


@dataclass(frozen=True, eq=False)
class PatternSource:
    """What a kept pattern was built from: ``A``'s layout, shape and a copy of its indices.

    COO: the coalesced ``indices()``; CSR: ``crow_indices()`` and ``col_indices()``. For
    a 2-D input the pattern's own ``crow``/``col`` (or ``row``/``col``) are these copies or
    views of them, so keeping them costs no more memory.
    """

    layout: torch.layout
    shape: tuple[int, ...]
    indices: tuple[Tensor, ...]


def _index_tensors(A: Tensor) -> tuple[Tensor, ...]:
    # _indices(): what indices() gives for a coalesced COO A, and readable before coalescing.
    if A.layout == torch.sparse_coo:
        return (A._indices(),)
    return (A.crow_indices(), A.col_indices())


def has_contiguous_indices(A: Tensor) -> bool:
    """Whether every index tensor of sparse ``A`` is contiguous (a storage offset is fine).

    >>> edges = torch.tensor([[0, 1], [1, 0]])               # (nnz, 2): one edge per row
    >>> has_contiguous_indices(torch.sparse_coo_tensor(edges.t(), torch.ones(2), (2, 2)))
    False
    """
    return all(index.is_contiguous() for index in _index_tensors(A))


def strided_index_bytes(A: Tensor) -> int:
    """Bytes of the copies that make ``A``'s index tensors contiguous: zero when they are.

    What :func:`contiguous_indices`, a pattern of ``A``, or a gradient built on ``A``'s
    indices copies, each (for the memory check).

    >>> edges = torch.tensor([[0, 1], [1, 0]])
    >>> strided_index_bytes(torch.sparse_coo_tensor(edges.t(), torch.ones(2), (2, 2)))
    32
    """
    return sum(i.numel() * i.element_size() for i in _index_tensors(A) if not i.is_contiguous())


def contiguous_indices(A: Tensor) -> Tensor:
    """``A`` itself when its index tensors are contiguous, else ``A`` on contiguous copies.

    Not tracked by autograd: for an ``A`` whose values need no gradient (the pattern of
    :func:`~sparsegrad_lab.sampled_mm`, a kept pattern). The values are shared, not copied;
    a COO ``A`` keeps its coalesced flag. See the module docstring for why.

    >>> edges = torch.tensor([[0, 1], [1, 0]])
    >>> A = torch.sparse_coo_tensor(edges.t(), torch.ones(2), (2, 2), is_coalesced=True)
    >>> contiguous_indices(A).indices().is_contiguous(), A.indices().is_contiguous()
    (True, False)
    """
    if has_contiguous_indices(A):
        return A
    A = A.detach()
    if A.layout == torch.sparse_coo:
        return torch.sparse_coo_tensor(
            A._indices().contiguous(),
            A._values(),
            A.shape,
            is_coalesced=A.is_coalesced(),
            check_invariants=False,
        )
    return plain_csr(A.crow_indices(), A.col_indices(), A.values(), tuple(A.shape))


_INDEX_NAMES = {
    torch.sparse_coo: ("indices()",),
    torch.sparse_csr: ("crow_indices()", "col_indices()"),
}


def pattern_mismatch(pattern: SparsityPattern, A: Tensor) -> str | None:
    """Why ``pattern`` is not the pattern of ``A`` (coalesced, if COO), or ``None`` if it is.

    A kept pattern may only serve an ``A`` with exactly the indices it was built from:
    same layout, shape, device, index dtype and values of every index. Comparing the
    indices with the pattern's own copy costs one pass over them -- far less than
    rebuilding the pattern -- and catches index buffers refilled in place.

    >>> pattern = kept_pattern(torch.eye(3).to_sparse_csr())
    >>> pattern_mismatch(pattern, torch.eye(3).to_sparse_csr()) is None
    True
    >>> pattern_mismatch(pattern, torch.ones(3, 3).to_sparse_csr())
    'it has 9 stored entries per matrix, but the pattern was built from 3'
    >>> pattern_mismatch(pattern, torch.eye(3).flip(0).to_sparse_csr())
    'its col_indices() differ from those the pattern was built from'
    """
    source = pattern.source
    if source is None:
        return "it was not built by sparsity_pattern(A) (only such a pattern can be kept)"
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


def check_kept_pattern(pattern: object, A: Tensor, where: str) -> None:
    """Refuse a ``pattern=`` that is not a kept pattern of ``A`` (coalesced already, if COO).

    ``where`` names the caller in the message.

    >>> check_kept_pattern(pattern_of(torch.eye(2).to_sparse()), torch.eye(2).to_sparse(), "f")
    Traceback (most recent call last):
    ...
    sparsegrad_lab.errors.InputValueError: f: pattern does not belong to A: it was not built \
by sparsity_pattern(A) (only such a pattern can be kept); build it from this A with \
sparsity_pattern(A), or pass pattern=None
    """
    if not isinstance(pattern, SparsityPattern):
        raise InputTypeError(
            f"{where}: pattern must be a SparsityPattern from sparsity_pattern(A) or None, "
            f"got an object of type {type(pattern).__name__}"
        )
    reason = pattern_mismatch(pattern, A)
    if reason is not None:
        raise InputValueError(
            f"{where}: pattern does not belong to A: {reason}; build it from this A with "
            "sparsity_pattern(A), or pass pattern=None"
        )


@dataclass(frozen=True, eq=False)
class TransposedPattern:
    """``Aᵀ``'s pattern together with the permutation from ``A``'s value order to it."""

    pattern: SparsityPattern
    perm: Tensor

    @cached_property
    def inverse(self) -> Tensor:
        """The inverse of :attr:`perm`: entry ``j`` of ``A`` is entry ``inverse[j]`` of ``Aᵀ``.

        In the transpose's index dtype; built on first use (the derivative of a product on
        ``Aᵀ`` reads ``A``'s values through it) and cached.

        >>> kept_pattern(torch.eye(2).flip(0).to_sparse()).transpose.inverse.tolist()
        [1, 0]
        """
        dtype = self.pattern.col.dtype
        order = torch.arange(self.perm.shape[0], dtype=dtype, device=self.perm.device)
        return torch.empty_like(order).scatter_(0, self.perm, order)


def coalesced(A: Tensor) -> Tensor:
    """``A`` itself unless it is an uncoalesced COO tensor, then ``A.coalesce()``.

    >>> coalesced(torch.eye(2).to_sparse_csr()).layout
    torch.sparse_csr
    """
    if A.layout == torch.sparse_coo and not A.is_coalesced():
        return A.coalesce()
    return A


def differentiable_gradient(A: Tensor) -> bool:
    """Whether a gradient handed to ``A`` may itself be differentiable (``create_graph``).

    True for COO, a leaf, and a CSR ``A`` built by :func:`~sparsegrad_lab.csr_tensor`;
    False for a CSR ``A`` from ``torch.sparse_csr_tensor(crow, col, v)``, whose backward
    in torch 2.13 fails on a gradient that requires grad.

    >>> differentiable_gradient(torch.eye(2).to_sparse_csr())
    True
    """
    return (
        A.layout == torch.sparse_coo
        or A.grad_fn is None
        or isinstance(A.grad_fn, CsrFromValues._backward_cls)
    )


def values_of(A: Tensor) -> Tensor:
    """The values of a CSR or coalesced COO ``A``, flat ``(nnz,)``, attached to autograd.

    A gradient that reaches them flows back into ``A`` as a sparse tensor of ``A``'s own
    layout and pattern. For a CSR leaf, or a CSR ``A`` built by
    :func:`~sparsegrad_lab.csr_tensor`, this goes through
    :class:`~sparsegrad_lab.csr_from_values.CsrValues`, so that the gradient can be
    differentiated again (torch's own ``values()`` backward for CSR gives one autograd
    cannot). A CSR ``A`` from ``torch.sparse_csr_tensor(crow, col, v)`` keeps torch's
    path: that constructor's backward cannot be differentiated again either way.

    >>> values_of(torch.eye(2).to_sparse_csr())
    tensor([1., 1.])
    """
    if (
        A.layout == torch.sparse_csr
        and A.requires_grad
        and torch.is_grad_enabled()
        and differentiable_gradient(A)
    ):
        values: Tensor = CsrValues.apply(A)
    else:
        values = A.values()
    return values.reshape(-1)


def pattern_and_values(A: Tensor) -> tuple[SparsityPattern, Tensor]:
    """Split a validated sparse ``A`` into its CSR-ordered pattern and its values.

    Uncoalesced COO is coalesced first, so duplicated positions are summed in the forward
    and each receives the full gradient of its position -- the derivative of a sum with
    respect to each of its terms. The pattern shares ``A``'s index tensors where it can;
    :func:`kept_pattern` builds one that owns them.

    Parameters
    ----------
    A : Tensor
        Sparse COO or CSR, shape ``(n, m)`` or ``(b, n, m)``, already validated.

    Returns
    -------
    pattern : SparsityPattern
        Positions of the block-diagonal ``(b n, b m)`` matrix in CSR order.
    values : Tensor
        Shape ``(nnz,)``, aligned with ``pattern`` (see :func:`values_of`).

    Examples
    --------
    >>> i = torch.tensor([[1, 0, 1], [0, 2, 0]])            # (1, 0) is stored twice
    >>> A = torch.sparse_coo_tensor(i, torch.tensor([1.0, 2.0, 3.0]), (2, 3))
    >>> pattern, values = pattern_and_values(A)
    >>> pattern.row.tolist(), pattern.col.tolist(), values.tolist()
    ([0, 1], [2, 0], [2.0, 4.0])
    """
    A = coalesced(A)
    return _pattern(A, None), values_of(A)


def pattern_of(A: Tensor) -> SparsityPattern:
    """The pattern of a validated, coalesced (if COO) ``A``, sharing its index tensors.

    >>> pattern_of(torch.eye(2).to_sparse_csr()).nnz
    2
    """
    return _pattern(A, None)


def kept_pattern(A: Tensor) -> SparsityPattern:
    """A pattern of validated ``A`` that owns copies of its indices, to keep across calls.

    The copy is what lets :func:`pattern_mismatch` see an ``A`` whose index buffers were
    refilled in place since: torch's index accessors do not share a version counter with
    the tensors ``A`` was built from, so only a comparison with our own copy can tell.

    >>> pattern = kept_pattern(torch.eye(2).to_sparse_csr())
    >>> pattern.crow.tolist(), pattern.col.tolist()
    ([0, 1, 2], [0, 1])
    """
    A = coalesced(A.detach())
    # contiguous_format: clone() would keep the strides of a strided view.
    own = tuple(index.clone(memory_format=torch.contiguous_format) for index in _index_tensors(A))
    if A.layout == torch.sparse_coo:
        A = torch.sparse_coo_tensor(
            own[0], A.values(), A.shape, is_coalesced=True, check_invariants=False
        )
    else:
        A = plain_csr(own[0], own[1], A.values(), tuple(A.shape))
    return _pattern(A, PatternSource(A.layout, tuple(A.shape), own))


def _pattern(A: Tensor, source: PatternSource | None) -> SparsityPattern:
    batched = A.dim() == 3
    b, n, m = A.shape if batched else (1, *A.shape)
    if A.layout == torch.sparse_coo:
        indices = A.indices()
        if batched:
            item = indices[0]
            row, col = item * n + indices[1], item * m + indices[2]
        else:
            # One call for both views; a strided view (from edges.t()) is copied by the
            # pattern, which keeps its indices contiguous.
            row, col = indices.unbind()
        return SparsityPattern(col, b, (n, m), _row=row, _source=source)
    crow, col, _b, _shape = _batch_as_one_csr(A.crow_indices(), A.col_indices(), tuple(A.shape))
    return SparsityPattern(col, b, (n, m), _crow=crow, _source=source)
