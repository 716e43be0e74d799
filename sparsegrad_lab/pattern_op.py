"""``pattern_mm``: a sparse matrix given by fixed indices and a dense values vector, as torch ops.

The values :math:`v \\in \\mathbb{F}^{\\mathrm{nnz}}` of a matrix :math:`A(v)` whose stored
positions :math:`(r_k, c_k)` never change are an ordinary dense tensor here: an
``nn.Parameter`` of shape ``(nnz,)`` that every optimizer, weight decay, gradient clipping,
``GradScaler``, DDP and ``state_dict`` handle as they handle any weight. The product goes
through two operators registered with :func:`torch.library.custom_op`, each with a fake
(meta) implementation and an autograd formula, so ``torch.compile(fullgraph=True)`` and
``torch.export`` see one opaque op over dense tensors and never a sparse tensor:

``sparsegrad_lab::pattern_mm``
    :math:`C = A(v) B`, with

    .. math::

        \\nabla_v L = \\big(G B^{\\mathsf H}\\big)_{r_k c_k} \\;(\\texttt{pattern\\_sddmm}),
        \\qquad \\nabla_B L = A(v)^{\\mathsf H} G \\;(\\texttt{pattern\\_mm} \\text{ on }
        A^{\\mathsf T}\\text{'s indices}),

    where :math:`G` = ``C.grad`` = :math:`2\\, \\partial L / \\partial \\bar C` (torch's convention,
    which makes the complex case come out conjugated) and :math:`A^{\\mathsf H}` has the values
    :math:`\\bar v_{\\pi(k)}` in the transpose's CSR order.
``sparsegrad_lab::pattern_sddmm``
    :math:`s_k = \\sum_l G_{r_k l} \\overline{B_{c_k l}}`, the sampled product of
    :func:`sparsegrad_lab.sddmm.sampled_product` (torch's ``sampled_addmm`` kernel, or the
    chunked gather whose working set stays below :data:`~sparsegrad_lab.sddmm.CHUNK_BYTES`;
    never the ``n x m`` product), with

    .. math::

        \\nabla_G L = A(h) B, \\qquad \\nabla_B L = A(h)^{\\mathsf H} G

    for the upstream :math:`h` on the pattern: ``pattern_mm`` twice.

Each backward is written with these two ops, so it is differentiable again (double
backward) with no further code. Both ops take the same index tensors -- the CSR row
pointers and columns of ``A`` and of ``Aᵀ``, the permutation ``perm`` from ``A``'s value
order to ``Aᵀ``'s and its inverse -- so that swapping the two halves turns an op on ``A``
into the same op on ``Aᵀ``. :class:`PatternIndices` builds and checks them once; nothing
is sorted, converted or validated per call. A kept pattern (``sparsity_pattern(A)``) holds
them as its own tensors (:attr:`~sparsegrad_lab.SparsityPattern.operator_indices`): that is
how ``sparse_mm(A, B, pattern=kept)`` runs these same ops, and ``pattern_mm(values, B,
kept)`` takes it directly. A batch of ``b`` matrices is the
block-diagonal ``b n x b m`` matrix (see :mod:`sparsegrad_lab.pattern`).

Two routes, one set of maths. When a tracer is at work (``torch.compile``, ``torch.export``,
``make_fx``, ``opcheck``) :func:`pattern_mm` calls the registered op. An eager call runs
the same kernels and the same derivative functions, written once, through a plain autograd
Function instead: a call into a Python custom op through the dispatcher and its generated
autograd wrapper costs about as much as the whole product of a few hundred entries, and
eagerly nothing needs the op.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .errors import InputTypeError, InputValueError
from .index_checks import check_indices
from .operand_checks import check_sparse_matrix
from .pattern import SparsityPattern, coalesced, pattern_of
from .scalar_checks import check_int
from .sddmm import sampled_product_at

__all__ = [
    "INDEX_NAMES",
    "PATTERN_MM",
    "PATTERN_SDDMM",
    "PatternIndices",
    "pattern_mm",
    "pattern_mm_2d",
    "pattern_sddmm",
]


# --------------------------------------------------------------------------- the kernels


def _plain(x: Tensor) -> Tensor:
    """``x`` with a lazy conjugation or negation materialised (``x`` itself when none).

    Inside a compiled graph torch runs the op with its ``Conjugate`` and ``Negative``
    dispatch keys excluded: a kernel handed a lazy ``conj()`` view would then read it
    unconjugated. Every conjugation here is therefore physical.
    """
    if x.is_conj():
        x = x.resolve_conj()
    return x.resolve_neg() if x.is_neg() else x


def _mm_kernel(
    values: Tensor,
    dense: Tensor,
    crow: Tensor,
    col: Tensor,
    crow_t: Tensor,
    col_t: Tensor,
    perm: Tensor,
    perm_t: Tensor,
) -> Tensor:
    """``CSR(crow, col, values) @ dense`` on torch's CSR kernel; the indices are trusted."""
    # The one check per call: torch's kernel would read past a short values vector.
    if values.dim() != 1 or values.shape[0] != col.shape[0]:
        raise InputValueError(
            f"sparsegrad_lab::pattern_mm: values must have shape ({col.shape[0]},), one per "
            f"stored entry, got {tuple(values.shape)}"
        )
    values, dense = _plain(values).contiguous(), _plain(dense)
    shape = (crow.shape[0] - 1, crow_t.shape[0] - 1)
    A = torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)
    if torch.is_autocast_enabled(dense.device.type):
        # Autocast would cast the product to a half type, which torch's CPU CSR kernel lacks.
        with torch.autocast(dense.device.type, enabled=False):
            return torch.mm(A, dense)
    return torch.mm(A, dense)


def _sddmm_kernel(
    grad: Tensor,
    dense: Tensor,
    crow: Tensor,
    col: Tensor,
    crow_t: Tensor,
    col_t: Tensor,
    perm: Tensor,
    perm_t: Tensor,
) -> Tensor:
    """``(grad @ denseᴴ)`` at the pattern, ``(nnz,)``: the package's sampled product."""
    grad, dense = _plain(grad).contiguous(), _plain(dense).contiguous()
    return sampled_product_at(crow, col, (crow.shape[0] - 1, crow_t.shape[0] - 1), grad, dense)


# The derivatives, written once for both routes (the registered ops and the eager fast path):
# ``mm`` and ``sddmm`` are the differentiable products of the route, or the bare kernels in
# a first-order backward.
Product = Callable[..., Tensor]


def _adjoint(values: Tensor, perm: Tensor) -> Tensor:
    """Values of ``Aᴴ`` in the transpose's CSR order: ``conj(values[perm])``."""
    picked = values.index_select(0, perm)
    return torch.conj_physical(picked) if picked.is_complex() else picked


def _transposed(indices: Sequence[Tensor]) -> tuple[Tensor, ...]:
    """``Aᵀ``'s index arguments from ``A``'s: the two halves swapped."""
    crow, col, crow_t, col_t, perm, perm_t = indices
    return (crow_t, col_t, crow, col, perm_t, perm)


def _mm_grads(
    mm: Product,
    sddmm: Product,
    values: Tensor,
    dense: Tensor,
    G: Tensor,
    indices: Sequence[Tensor],
    need: Sequence[bool],
) -> tuple[Tensor | None, Tensor | None]:
    """``C = A(v) B``: ``∇v = (G Bᴴ)`` at the pattern, ``∇B = A(v)ᴴ G``."""
    # Once for both products: a transposed or expanded (from .sum()) G would otherwise be
    # copied by each of them.
    G = G.contiguous()
    grad_values = sddmm(G, dense, *indices) if need[0] else None
    grad_dense = None
    if need[1]:
        grad_dense = mm(_adjoint(values, indices[4]), G, *_transposed(indices))
    return grad_values, grad_dense


def _sddmm_grads(
    mm: Product,
    sddmm: Product,
    G: Tensor,
    dense: Tensor,
    H: Tensor,
    indices: Sequence[Tensor],
    need: Sequence[bool],
) -> tuple[Tensor | None, Tensor | None]:
    """``s = (G Bᴴ)`` at the pattern: ``∇G = A(h) B``, ``∇B = A(h)ᴴ G`` (``sddmm`` unused:
    the signature is :func:`_mm_grads`', so that one shell serves both ops)."""
    grad_G = mm(H, dense, *indices) if need[0] else None
    grad_dense = mm(_adjoint(H, indices[4]), G, *_transposed(indices)) if need[1] else None
    return grad_G, grad_dense


#: The derivative of one op: ``grads(mm, sddmm, first, dense, upstream, indices, need)``.
Grads = Callable[
    [Product, Product, Tensor, Tensor, Tensor, Sequence[Tensor], Sequence[bool]],
    tuple[Tensor | None, Tensor | None],
]


# --------------------------------------------------------------------------- the operators


@torch.library.custom_op("sparsegrad_lab::pattern_mm", mutates_args=())
def _pattern_mm(
    values: Tensor,
    dense: Tensor,
    crow: Tensor,
    col: Tensor,
    crow_t: Tensor,
    col_t: Tensor,
    perm: Tensor,
    perm_t: Tensor,
) -> Tensor:
    """``A(values) @ dense`` for ``A`` of ``len(crow) - 1`` rows and ``len(crow_t) - 1`` columns."""
    return _mm_kernel(values, dense, crow, col, crow_t, col_t, perm, perm_t)


@_pattern_mm.register_fake
def _(
    values: Tensor,
    dense: Tensor,
    crow: Tensor,
    col: Tensor,
    crow_t: Tensor,
    col_t: Tensor,
    perm: Tensor,
    perm_t: Tensor,
) -> Tensor:
    torch._check(values.dim() == 1 and values.shape[0] == col.shape[0])
    torch._check(dense.dim() == 2 and dense.shape[0] == crow_t.shape[0] - 1)
    torch._check(values.dtype == dense.dtype)
    return dense.new_empty((crow.shape[0] - 1, dense.shape[1]))


@torch.library.custom_op("sparsegrad_lab::pattern_sddmm", mutates_args=())
def _pattern_sddmm(
    grad: Tensor,
    dense: Tensor,
    crow: Tensor,
    col: Tensor,
    crow_t: Tensor,
    col_t: Tensor,
    perm: Tensor,
    perm_t: Tensor,
) -> Tensor:
    """``(grad @ denseᴴ)`` at the pattern's positions, ``(nnz,)``."""
    return _sddmm_kernel(grad, dense, crow, col, crow_t, col_t, perm, perm_t)


@_pattern_sddmm.register_fake
def _(
    grad: Tensor,
    dense: Tensor,
    crow: Tensor,
    col: Tensor,
    crow_t: Tensor,
    col_t: Tensor,
    perm: Tensor,
    perm_t: Tensor,
) -> Tensor:
    torch._check(grad.dim() == 2 and grad.shape[0] == crow.shape[0] - 1)
    torch._check(dense.dim() == 2 and dense.shape[0] == crow_t.shape[0] - 1)
    torch._check(grad.shape[1] == dense.shape[1] and grad.dtype == dense.dtype)
    return grad.new_empty(col.shape[0])


#: The registered overloads, called directly: ``CustomOpDef.__call__`` adds a Python layer.
PATTERN_MM = torch.ops.sparsegrad_lab.pattern_mm.default
PATTERN_SDDMM = torch.ops.sparsegrad_lab.pattern_sddmm.default


def _save(ctx: Any, inputs: tuple[Tensor, ...], output: Tensor) -> None:
    ctx.save_for_backward(*inputs)


def _op_backward(grads: Grads) -> Callable[[Any, Tensor], tuple[Tensor | None, ...]]:
    """The registered op's backward: ``grads`` on the saved inputs, with the ops themselves."""

    def backward(ctx: Any, upstream: Tensor) -> tuple[Tensor | None, ...]:
        first, dense, *indices = ctx.saved_tensors
        need = ctx.needs_input_grad
        found = grads(PATTERN_MM, PATTERN_SDDMM, first, dense, upstream, indices, need)
        return (*found, *(None,) * len(indices))

    return backward


_pattern_mm.register_autograd(_op_backward(_mm_grads), setup_context=_save)
_pattern_sddmm.register_autograd(_op_backward(_sddmm_grads), setup_context=_save)


# --------------------------------------------------------------------------- the eager route


def _eager_function(name: str, kernel: Product, grads: Grads) -> Any:
    """An op's maths as a plain autograd Function, ``apply(first, dense, *indices)``.

    The same kernel and derivative as the registered op, without the dispatcher's per-call
    cost; one shell for both ops (each differentiates into the other).
    """

    def forward(ctx: Any, first: Tensor, dense: Tensor, indices: tuple[Tensor, ...]) -> Tensor:
        # The indices travel as one tuple: autograd never differentiates them, and each
        # tensor argument of ``apply`` costs a few microseconds of bookkeeping.
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(first, dense)
        ctx.indices = indices
        return kernel(first, dense, *indices)

    def backward(ctx: Any, upstream: Tensor | None) -> tuple[Tensor | None, ...]:
        if upstream is None:  # no gradient reached the output: none for the inputs either
            return (None, None, None)
        first, dense = ctx.saved_tensors
        mm, sddmm = _eager_products()
        found = grads(mm, sddmm, first, dense, upstream, ctx.indices, ctx.needs_input_grad)
        return (*found, None)

    methods = {"forward": staticmethod(forward), "backward": staticmethod(backward)}
    return type(name, (torch.autograd.Function,), {"__doc__": kernel.__doc__, **methods})


#: :data:`PATTERN_MM` and :data:`PATTERN_SDDMM` as autograd Functions: what an eager call runs.
_EagerPatternMM = _eager_function("_EagerPatternMM", _mm_kernel, _mm_grads)
_EagerPatternSDDMM = _eager_function("_EagerPatternSDDMM", _sddmm_kernel, _sddmm_grads)


def _eager_mm(values: Tensor, dense: Tensor, *indices: Tensor) -> Tensor:
    return _EagerPatternMM.apply(values, dense, indices)  # type: ignore[no-any-return]


def _eager_sddmm(grad: Tensor, dense: Tensor, *indices: Tensor) -> Tensor:
    return _EagerPatternSDDMM.apply(grad, dense, indices)  # type: ignore[no-any-return]


def _eager_products() -> tuple[Product, Product]:
    """The products a backward uses: differentiable under ``create_graph``, else the kernels."""
    if torch.is_grad_enabled():
        return _eager_mm, _eager_sddmm
    return _mm_kernel, _sddmm_kernel


def _traced() -> bool:
    """Whether this call is being traced (compile, export, make_fx): then the registered op.

    A tracer's dispatch mode (fake tensors, proxies) sits on torch's dispatch stack; the
    compiler's own flag covers dynamo, which folds this test to a constant.
    """
    return torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack() > 0


def pattern_mm_2d(values: Tensor, dense: Tensor, *indices: Tensor) -> Tensor:
    """``A(values) @ dense`` on trusted operands: the registered op when traced, else eager.

    ``values`` ``(nnz,)``, ``dense`` ``(M, p)`` of one dtype and device, ``indices`` the six
    tensors of :attr:`PatternIndices.tensors`. No checks beyond the op's own (for a layer
    that checks its input once); use :func:`pattern_mm`.

    >>> indices = PatternIndices.from_sparse(torch.eye(2).to_sparse())
    >>> pattern_mm_2d(torch.tensor([2.0, 3.0]), torch.ones(2, 1), *indices.tensors)
    tensor([[2.],
            [3.]])
    """
    if _traced():
        return PATTERN_MM(values, dense, *indices)  # type: ignore[no-any-return]
    return _EagerPatternMM.apply(values, dense, indices)  # type: ignore[no-any-return]


def _sddmm_2d(G: Tensor, dense: Tensor, *indices: Tensor) -> Tensor:
    if _traced():
        return PATTERN_SDDMM(G, dense, *indices)  # type: ignore[no-any-return]
    return _EagerPatternSDDMM.apply(G, dense, indices)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- the indices

#: The ops' index arguments, in order: :class:`PatternIndices`' fields, a layer's buffers.
INDEX_NAMES = ("crow", "col", "crow_t", "col_t", "perm", "perm_t")


@dataclass(frozen=True, eq=False)
class PatternIndices:
    """The index tensors of a fixed sparsity pattern, as the two ops take them.

    ``A`` is ``(n, m)``, or a batch ``(b, n, m)`` held as the block-diagonal
    ``(b n, b m)`` matrix; its ``nnz`` values live in a separate dense vector, in CSR order
    of that matrix (for COO input: the coalesced order; for CSR: ``A.values()`` flattened).
    Built by :meth:`from_sparse`, :meth:`from_pattern` or :meth:`from_edges`, all index
    tensors share one dtype: int32 wherever it can address the matrix (torch's CPU kernel
    would otherwise convert int64 on every product), int64 beyond. :meth:`of_kept` shares
    a kept pattern's tensors instead, whose two pairs may differ in dtype.

    Those constructors check the indices once (a kept pattern was checked when it was
    built); the ops trust them afterwards.

    Attributes
    ----------
    crow, col : Tensor
        CSR row pointers ``(b n + 1,)`` and columns ``(nnz,)`` of ``A``.
    crow_t, col_t : Tensor
        The same for ``Aᵀ``: ``(b m + 1,)`` and ``(nnz,)``.
    perm, perm_t : Tensor
        ``(nnz,)``: entry ``k`` of ``Aᵀ`` is entry ``perm[k]`` of ``A``; ``perm_t`` is the
        inverse permutation (entry ``j`` of ``A`` is entry ``perm_t[j]`` of ``Aᵀ``).
    size : tuple of int
        ``(n, m)``, or ``(b, n, m)`` for a batch.

    Examples
    --------
    >>> A = torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, 3.0]]).to_sparse()
    >>> indices = PatternIndices.from_sparse(A)
    >>> indices.size, indices.nnz, indices.col.tolist(), indices.perm.tolist()
    ((2, 3), 3, [1, 0, 2], [1, 0, 2])
    """

    crow: Tensor
    col: Tensor
    crow_t: Tensor
    col_t: Tensor
    perm: Tensor
    perm_t: Tensor
    size: tuple[int, ...]

    @property
    def nnz(self) -> int:
        """Number of stored entries (of the whole batch)."""
        return int(self.col.shape[0])

    @property
    def batch(self) -> int:
        """``b`` for a batch ``(b, n, m)``, 1 for a single matrix."""
        return self.size[0] if len(self.size) == 3 else 1

    @property
    def tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``(crow, col, crow_t, col_t, perm, perm_t)``, the ops' index arguments in order."""
        return (self.crow, self.col, self.crow_t, self.col_t, self.perm, self.perm_t)

    def to(self, device: torch.device | str) -> PatternIndices:
        """The same indices on ``device`` (``self`` when they are there already).

        >>> PatternIndices.from_edges([0], [1], (1, 2)).to("cpu").col.device
        device(type='cpu')
        """
        if torch.device(device) == self.col.device:
            return self
        crow, col, crow_t, col_t, perm, perm_t = (index.to(device) for index in self.tensors)
        return PatternIndices(crow, col, crow_t, col_t, perm, perm_t, self.size)

    def rows(self) -> Tensor:
        """Row of each entry in the block-diagonal matrix, ``(nnz,)`` (built on each call).

        >>> PatternIndices.from_sparse(torch.eye(2).to_sparse()).rows().tolist()
        [0, 1]
        """
        return torch.repeat_interleave(self.crow.diff(), output_size=self.nnz)

    def to_sparse(self, values: Tensor) -> Tensor:
        """The sparse COO tensor of shape :attr:`size` storing ``values`` at the pattern.

        Not tracked through ``values`` cheaply: meant for inspection and references.

        >>> indices = PatternIndices.from_sparse(torch.eye(2).to_sparse_csr())
        >>> indices.to_sparse(torch.tensor([3.0, 4.0])).to_dense()
        tensor([[3., 0.],
                [0., 4.]])
        """
        rows, cols = self.rows().long(), self.col.long()
        if len(self.size) == 2:
            coords = torch.stack([rows, cols])
        else:
            n, m = self.size[1], self.size[2]
            item = torch.div(rows, n, rounding_mode="floor")
            coords = torch.stack([item, rows - item * n, cols - item * m])
        return torch.sparse_coo_tensor(
            coords, values.reshape(-1), self.size, is_coalesced=True, check_invariants=False
        )

    @classmethod
    def from_sparse(cls, A: Tensor, where: str = "PatternIndices.from_sparse") -> PatternIndices:
        """The indices of a sparse COO or CSR ``A``, ``(n, m)`` or ``(b, n, m)``, checked once.

        Every index is validated (:func:`sparsegrad_lab.index_checks.check_indices`); an
        uncoalesced COO ``A`` is coalesced (duplicates become one entry). ``A``'s values
        are not read; in this pattern's order they are ``A.coalesce().values()`` (COO) or
        ``A.values().reshape(-1)`` (CSR).

        Raises
        ------
        InputTypeError, InputValueError
            If ``A`` is not a sparse matrix or an index is invalid; the message names it.
        """
        return cls.with_values(A, where)[0]

    @classmethod
    def with_values(
        cls, A: Tensor, where: str = "PatternIndices.with_values"
    ) -> tuple[PatternIndices, Tensor]:
        """:meth:`from_sparse`, and ``A``'s values in the pattern's order (detached, flat).

        >>> indices, values = PatternIndices.with_values(torch.eye(2).to_sparse_csr())
        >>> indices.nnz, values.tolist()
        (2, [1.0, 1.0])
        """
        check_sparse_matrix(A, where)
        check_indices(A, where)
        A = coalesced(A.detach())
        indices = cls.from_pattern(pattern_of(A), size=tuple(A.shape))
        return indices, A.values().reshape(-1)

    @classmethod
    def from_pattern(
        cls, pattern: SparsityPattern, size: Sequence[int] | None = None
    ) -> PatternIndices:
        """The indices of a :class:`~sparsegrad_lab.SparsityPattern` (trusted: it was checked).

        ``size`` defaults to the shape of the ``A`` a kept pattern was built from, else
        ``(n, m)`` for one block and ``(b, n, m)`` for several. Builds (and caches on
        ``pattern``) its transpose and the inverse permutation if it has none yet.

        >>> from sparsegrad_lab import sparsity_pattern
        >>> PatternIndices.from_pattern(sparsity_pattern(torch.eye(3).to_sparse())).nnz
        3
        """
        if not isinstance(pattern, SparsityPattern):
            raise InputTypeError(
                f"PatternIndices.from_pattern: pattern must be a SparsityPattern, got an "
                f"object of type {type(pattern).__name__}"
            )
        fits = max(pattern.batch * max(pattern.block_shape), pattern.nnz) < 2**31
        dtype = torch.int32 if fits else torch.int64
        # Copies we own, of one dtype, whatever the pattern shares with its source.
        crow, col, crow_t, col_t, perm, perm_t = (
            index.to(dtype=dtype, memory_format=torch.contiguous_format, copy=True)
            for index in pattern.operator_indices
        )
        shape = tuple(size) if size is not None else _size_of(pattern)
        return cls(crow, col, crow_t, col_t, perm, perm_t, shape)

    @classmethod
    def of_kept(cls, pattern: SparsityPattern) -> PatternIndices:
        """The indices of a kept pattern (``sparsity_pattern(A)``), sharing its tensors.

        Nothing is copied: a kept pattern owns its indices already, and the transpose and
        inverse permutation it builds on first use stay cached on it for every later call.
        Each index pair keeps the pattern's dtype (``A``'s, and int32 for the transpose
        wherever it fits).

        >>> from sparsegrad_lab import sparsity_pattern
        >>> kept = sparsity_pattern(torch.eye(3).to_sparse())
        >>> PatternIndices.of_kept(kept).col is kept.col
        True
        """
        crow, col, crow_t, col_t, perm, perm_t = _kept_tensors(pattern, "PatternIndices.of_kept")
        return cls(crow, col, crow_t, col_t, perm, perm_t, _size_of(pattern))

    @classmethod
    def from_edges(
        cls,
        rows: Tensor | Sequence[int],
        cols: Tensor | Sequence[int],
        size: Sequence[int],
        where: str = "PatternIndices.from_edges",
    ) -> PatternIndices:
        """The indices of the ``(n, m)`` matrix storing the edges ``(rows[k], cols[k])``.

        Duplicated edges become one entry; the entries are in row-major order, not the
        edge list's (:meth:`rows` and :attr:`col` give each entry's position).

        Raises
        ------
        InputTypeError, InputValueError
            For non-integer or mismatched edge tensors, a bad ``size``, or an edge out of
            range (the message names the entry).

        >>> PatternIndices.from_edges([1, 0], [0, 1], (2, 2)).col.tolist()
        [1, 0]
        >>> PatternIndices.from_edges([0, 2], [0, 1], (2, 2))
        Traceback (most recent call last):
        ...
        sparsegrad_lab.errors.InputValueError: PatternIndices.from_edges: the edge list: row \
index 2 at entry 1 is out of range for 2 rows; build A from valid indices \
(torch.sparse.check_sparse_tensor_invariants finds them at construction)
        """
        r, c = _edge_tensor(rows, "rows", where), _edge_tensor(cols, "cols", where)
        if r.shape != c.shape or r.device != c.device:
            raise InputValueError(
                f"{where}: rows and cols must have the same length and device, got "
                f"{tuple(r.shape)} on {r.device} and {tuple(c.shape)} on {c.device}"
            )
        if not isinstance(size, Sequence) or len(size) != 2:
            raise InputTypeError(f"{where}: size must be a pair (n, m) of ints, got {size!r}")
        shape = tuple(check_int(s, f"size[{i}]", where, minimum=0) for i, s in enumerate(size))
        ones = torch.ones(r.shape[0], device=r.device)
        A = torch.sparse_coo_tensor(torch.stack([r, c]), ones, shape, check_invariants=False)
        check_indices(A, where, "the edge list")
        return cls.from_sparse(A.coalesce(), where)


def _kept_tensors(pattern: object, where: str) -> tuple[Tensor, ...]:
    """A kept pattern's :attr:`~sparsegrad_lab.SparsityPattern.operator_indices`, or why not."""
    if not isinstance(pattern, SparsityPattern):
        raise InputTypeError(
            f"{where}: pattern must be a SparsityPattern, got an object of type "
            f"{type(pattern).__name__}"
        )
    if pattern.source is None:
        raise InputValueError(
            f"{where}: pattern was not built by sparsity_pattern(A); use "
            "PatternIndices.from_pattern, which copies the indices it shares with A"
        )
    if not pattern.has_operator_indices() and _traced():
        # A tracer cannot sort and cache the transpose on a Python object mid-graph.
        raise InputValueError(
            f"{where}: the kept pattern has not built its transpose yet, which a traced "
            "(compiled or exported) call cannot do; build it once before compiling: "
            "PatternIndices.of_kept(pattern) outside the compiled function"
        )
    return pattern.operator_indices


def _size_of(pattern: SparsityPattern) -> tuple[int, ...]:
    """The shape of the matrix ``pattern`` holds: its source's, else ``(n, m)`` or ``(b, n, m)``."""
    if pattern.source is not None:
        return pattern.source.shape
    n, m = pattern.block_shape
    return (n, m) if pattern.batch == 1 else (pattern.batch, n, m)


def _edge_tensor(edges: object, name: str, where: str) -> Tensor:
    index = edges if isinstance(edges, Tensor) else torch.as_tensor(edges)
    if not isinstance(edges, Tensor) and index.numel() == 0:
        index = index.long()  # [] reads as float32
    if index.dtype.is_floating_point or index.dtype.is_complex or index.dtype == torch.bool:
        raise InputTypeError(f"{where}: {name} must hold integers, got dtype {index.dtype}")
    if index.dim() != 1:
        raise InputValueError(f"{where}: {name} must be 1-D, got shape {tuple(index.shape)}")
    return index.long()


# --------------------------------------------------------------------------- functional forms


def pattern_mm(values: Tensor, B: Tensor, indices: PatternIndices | SparsityPattern) -> Tensor:
    """``A(values) @ B`` for the fixed pattern ``indices``, differentiable in both.

    .. math::

        C = A(v) B, \\qquad
        \\nabla_v L = \\big(G B^{\\mathsf H}\\big)_{r_k c_k}, \\qquad
        \\nabla_B L = A(v)^{\\mathsf H} G,

    with :math:`G` = ``C.grad`` (:math:`2\\, \\partial L / \\partial \\bar C`, torch's convention).
    One registered op (``torch.ops.sparsegrad_lab.pattern_mm``) whatever the shapes:
    ``torch.compile`` with ``fullgraph=True`` and ``torch.export`` trace it, and any order of
    derivative works.

    Parameters
    ----------
    values : Tensor
        Dense, ``(nnz,)`` in ``indices``' order (a batch's ``(b, nnz / b)`` is flattened).
        float32, float64, complex64 or complex128 (float16 and bfloat16 on CUDA only).
    B : Tensor
        Dense ``(m, p)``, or ``(b, m, p)`` for a batched pattern; ``values``' dtype and device.
    indices : PatternIndices or SparsityPattern
        The pattern, built once (:meth:`PatternIndices.from_sparse` and friends), or a kept
        pattern ``sparsity_pattern(A)``, whose tensors are used as they are
        (:meth:`PatternIndices.of_kept`): the same op and derivative as
        ``sparse_mm(A, B, pattern=kept)``, without a sparse tensor or a check per call.

    Returns
    -------
    Tensor
        ``(n, p)`` or ``(b, n, p)``.

    Raises
    ------
    InputTypeError, InputValueError
        If an argument does not fit the pattern; the message names it.

    Examples
    --------
    >>> A = torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, 3.0]]).to_sparse()
    >>> indices = PatternIndices.from_sparse(A)
    >>> values = A.values().clone().requires_grad_()
    >>> B = torch.arange(6.0).reshape(3, 2)
    >>> C = pattern_mm(values, B, indices)
    >>> C.detach()
    tensor([[ 4.,  6.],
            [12., 16.]])
    >>> C.sum().backward()
    >>> values.grad                     # (G Bᵀ) at the three entries, G all ones
    tensor([5., 1., 9.])
    """
    tensors, size = _operands_of(indices, "pattern_mm")
    _check_operands(values, B, size, tensors[1])
    flat = values.reshape(-1) if values.dim() != 1 else values
    if len(size) == 2:
        return pattern_mm_2d(flat, B, *tensors)
    b, n, m = size
    C = pattern_mm_2d(flat, B.reshape(b * m, B.shape[-1]), *tensors)
    return C.view(b, n, C.shape[-1])


def pattern_sddmm(G: Tensor, B: Tensor, indices: PatternIndices | SparsityPattern) -> Tensor:
    """``G Bᴴ`` at the stored positions of ``indices``: the sampled product, ``(nnz,)``.

    .. math::

        s_k = \\sum_l G_{r_k l} \\overline{B_{c_k l}}, \\qquad
        \\nabla_G L = A(h) B, \\qquad \\nabla_B L = A(h)^{\\mathsf H} G,

    for an upstream :math:`h` on the pattern. ``G`` is ``(n, p)`` and ``B`` ``(m, p)``
    (``(b, n, p)`` and ``(b, m, p)`` for a batch); ``indices`` as for :func:`pattern_mm`.
    This is ``∇values`` of :func:`pattern_mm`; its working set stays bounded whatever
    ``nnz`` is.

    >>> indices = PatternIndices.from_sparse(torch.eye(2).to_sparse())
    >>> pattern_sddmm(torch.ones(2, 3), torch.ones(2, 3), indices)
    tensor([3., 3.])
    """
    tensors, size = _operands_of(indices, "pattern_sddmm")
    n, m = size[-2], size[-1]
    if (
        not isinstance(G, Tensor)
        or not isinstance(B, Tensor)
        or G.shape[:-1] != (*size[:-2], n)
        or B.shape[:-1] != (*size[:-2], m)
        or G.shape[-1] != B.shape[-1]
        or G.dtype != B.dtype
    ):
        raise InputValueError(
            f"pattern_sddmm: G must be {(*size[:-2], n, 'p')} and B {(*size[:-2], m, 'p')} of "
            f"one dtype for the pattern of size {size}, got {_describe(G)} and {_describe(B)}"
        )
    p = G.shape[-1]
    # Explicit row counts: with p = 0, a -1 in reshape would be ambiguous.
    G2, B2 = G.reshape(G.shape[:-1].numel(), p), B.reshape(B.shape[:-1].numel(), p)
    return _sddmm_2d(G2, B2, *tensors)


def _operands_of(indices: object, where: str) -> tuple[tuple[Tensor, ...], tuple[int, ...]]:
    """The ops' index arguments and the matrix's size, from ``indices`` or a kept pattern.

    A kept pattern's own tensors are read as they are, without a :class:`PatternIndices`
    around them: this runs on every call of a training loop.
    """
    if isinstance(indices, PatternIndices):
        return indices.tensors, indices.size
    if isinstance(indices, SparsityPattern):
        return _kept_tensors(indices, where), _size_of(indices)
    raise InputTypeError(
        f"{where}: indices must be PatternIndices or a kept SparsityPattern "
        f"(sparsity_pattern(A)), got an object of type {type(indices).__name__}"
    )


def _describe(x: object) -> str:
    if isinstance(x, Tensor):
        return f"{x.dtype} of shape {tuple(x.shape)} on {x.device}"
    return f"an object of type {type(x).__name__}"


def _check_operands(values: Tensor, B: Tensor, size: tuple[int, ...], col: Tensor) -> None:
    """Shapes, dtypes and devices only: the indices were checked when they were built."""
    if not isinstance(values, Tensor) or not isinstance(B, Tensor):
        raise InputTypeError(
            f"pattern_mm: values and B must be torch.Tensors, got {_describe(values)} and "
            f"{_describe(B)}"
        )
    nnz = col.shape[0]
    one_per_item = values.dim() == 2 and len(size) == 3 and values.shape[0] == size[0]
    if values.numel() != nnz or not (values.dim() == 1 or one_per_item):
        raise InputValueError(
            f"pattern_mm: values must have shape ({nnz},), one per stored entry of "
            f"the pattern of size {size}, got {tuple(values.shape)}"
        )
    if B.dim() != len(size) or B.shape[:-1] != (*size[:-2], size[-1]):
        raise InputValueError(
            f"pattern_mm: B must have shape {(*size[:-2], size[-1], 'p')} for the pattern of "
            f"size {size}, got {tuple(B.shape)}"
        )
    if values.dtype != B.dtype or values.device != B.device or B.device != col.device:
        raise InputTypeError(
            f"pattern_mm: values, B and the indices must share a dtype and a device, got "
            f"values {_describe(values)}, B {_describe(B)}, indices on {col.device}"
        )
