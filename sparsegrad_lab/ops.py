"""``sparse_mm``: sparse ``A`` times dense ``B`` with a gradient that stays sparse.

Forward and backward sit side by side here. For :math:`C = A B` and upstream
:math:`G = \\partial L / \\partial \\bar C`:

.. math::

    \\nabla_A L = P_A \\odot (G B^{\\mathsf H}) \\quad \\text{(values only at A's pattern)},
    \\qquad \\nabla_B L = A^{\\mathsf H} G .

The first is a sampled dense-dense product (:mod:`sparsegrad_lab.sddmm`), exposed as a
forward operation too (:func:`sampled_mm`); the second another sparse-times-dense product,
with ``Aᴴ``'s pattern from a permutation cached with the pattern (or, on a small graph in a
first-order backward, a scatter). Under ``create_graph=True`` both backward products are
applied as the autograd functions below, so double backward needs no extra code: the
derivative of the sampled product :math:`s = P \\odot (G B^{\\mathsf H})` against an upstream
``H`` (values on the pattern) is :math:`\\nabla_G = H B` and
:math:`\\nabla_B = H^{\\mathsf H} G` -- the same two products again. Without it they call the
kernels directly.

The inputs reach torch's kernels only in the form those read: index tensors contiguous
(:mod:`sparsegrad_lab.pattern`), dense operands contiguous -- a strided or expanded operand
is copied in full first, and every such copy is counted by the memory check before it is
made (:func:`~sparsegrad_lab.sddmm.copy_bytes`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Literal, ParamSpec, TypeVar

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx

from . import memory_guard
from ._checks import (
    check_indices,
    check_sampled_mm_inputs,
    check_sparse_matrix,
    check_sparse_mm_inputs,
)
from ._torch_util import element_size
from .csr_from_values import (
    CooFromValues,
    coo_from_values,
    csr_from_values,
    differentiable_csr,
)
from .errors import InputTypeError, InputValueError
from .pattern import (
    SparsityPattern,
    coalesced,
    contiguous_indices,
    differentiable_gradient,
    kept_pattern,
    pattern_mismatch,
    pattern_of,
    strided_index_bytes,
    values_of,
)
from .sddmm import (
    CHUNK_BYTES,
    BackwardStrategy,
    copy_bytes,
    sampled_product,
    sampled_product_workspace_bytes,
)

__all__ = ["SampledProduct", "SparseMatMul", "sampled_mm", "sparse_mm", "sparsity_pattern"]

#: Up to this many stored entries, a first-order ``"sddmm"`` backward computes both
#: gradients from one gather of ``G``'s rows (:func:`_small_graph_backward`) instead of
#: torch's sampled kernel and a second gather. Measured on one CPU thread: about 30 % less
#: backward time at 500 entries, a tie near 1,000, 10-20 % more from 1,500 on (the
#: gather's row sums cost more than the kernel's fixed cost from there).
SHARED_GATHER_MAX_NNZ = 1024

P = ParamSpec("P")
R = TypeVar("R")


#: Up to this many stored entries, the forward of a 2-D CPU COO ``A`` (no kept pattern)
#: is torch's own COO product, which checks the range of every index as it reads it: the
#: index check then has only the order of a coalesced ``A`` left to do, and the pattern's
#: row pointers are never built (the first-order backward of such a graph does not need
#: them). Per entry that kernel is slower than the CSR one (2x at 1,000 entries, 10x at
#: 10⁴, one thread), so above this bound it is the CSR product with the full check; up to
#: it, the whole step is as fast or faster with it, from p = 8 to 4,096 on one and two
#: threads (within 10 % at the widest p).
COO_PRODUCT_MAX_NNZ = 1024


def coo_product(*, layout: str, batched: bool, device: str, nnz: int, kept: bool) -> bool:
    """Whether :func:`sparse_mm`'s forward is torch's CPU COO product, not the CSR one.

    ``layout`` is ``"coo"`` or ``"csr"``, ``device`` a device type. True for a coalesced
    2-D COO ``A`` on the CPU, of at most :data:`COO_PRODUCT_MAX_NNZ`
    stored entries, without a kept pattern (an uncoalesced ``A`` is checked in full
    before it is coalesced, and then takes the CSR product). The memory model decides
    with this same function.

    >>> coo_product(layout="coo", batched=False, device="cpu", nnz=500, kept=False)
    True
    """
    return (
        layout == "coo"
        and not batched
        and device == "cpu"
        and nnz <= COO_PRODUCT_MAX_NNZ
        and not kept
    )


def coo_product_for(A: Tensor, *, kept: bool) -> bool:
    """:func:`coo_product` for a sparse matrix ``A`` that passed the input checks.

    >>> coo_product_for(torch.eye(3).to_sparse(), kept=False)
    True
    """
    return (
        A.layout == torch.sparse_coo
        and A.is_coalesced()
        and coo_product(
            layout="coo", batched=A.dim() == 3, device=A.device.type, nnz=A._nnz(), kept=kept
        )
    )


def _spmm(pattern: SparsityPattern, values: Tensor, X: Tensor) -> Tensor:
    """``A @ X`` for the CSR matrix (pattern, values), on torch's own CSR kernel."""
    return _sparse_times(pattern.to_csr(_resolved(values)), X)


def _resolved(X: Tensor) -> Tensor:
    """``X`` with a lazy conjugation materialised; ``X`` itself (no kernel call) when none."""
    return X.resolve_conj() if X.is_conj() else X


def _materialised(X: Tensor) -> Tensor:
    """``X`` as contiguous memory without a lazy conjugation: itself, or one copy.

    The copy is :func:`~sparsegrad_lab.sddmm.copy_bytes` ``(X)``, counted by the caller's
    memory check; differentiable (autograd's ``copy_``).
    """
    if not copy_bytes(X):
        return X
    return torch.empty(X.shape, dtype=X.dtype, device=X.device).copy_(X)


def _flat(values: Tensor) -> Tensor:
    """``values`` as ``(nnz,)``: already so for COO and 2-D CSR, which skip the reshape call."""
    return values if values.dim() == 1 else values.reshape(-1)


def _sparse_times(A: Tensor, X: Tensor) -> Tensor:
    """``A @ X`` for a 2-D CSR or COO ``A`` (no autograd), in the inputs' dtype."""
    if torch.is_autocast_enabled(X.device.type):
        # Autocast would cast this product to bfloat16/float16, which torch's CPU CSR
        # kernel does not implement (it aborts for COO input): compute in the inputs' dtype.
        with torch.autocast(X.device.type, enabled=False):
            return torch.mm(A, _resolved(X))
    return torch.mm(A, _resolved(X))  # not A @ X, whose Python wrapper costs a little more


def _adjoint_values(values: Tensor, pattern: SparsityPattern) -> tuple[Tensor, SparsityPattern]:
    """Values and pattern of ``Aᴴ`` (differentiable in ``values``)."""
    transpose = pattern.transpose
    return values[transpose.perm].conj(), transpose.pattern


def _check_operands(pattern: SparsityPattern, values: Tensor, B: Tensor) -> None:
    """``SparseMatMul``'s own check: ``values`` and ``B`` must fit ``pattern``.

    Cheap (shapes only), so that a wrong ``values`` can never be read out of bounds.
    """
    if values.shape != (pattern.nnz,):
        raise InputValueError(
            f"SparseMatMul: values must have shape ({pattern.nnz},), one per stored entry of "
            f"the pattern, got {tuple(values.shape)}"
        )
    if B.dim() != 2 or B.shape[0] != pattern.shape[1]:
        raise InputValueError(
            f"SparseMatMul: B must be 2-D with {pattern.shape[1]} rows (the pattern's "
            f"columns), got shape {tuple(B.shape)}"
        )


class SparseMatMul(torch.autograd.Function):
    """Autograd function ``C = A(values) @ B`` for a fixed :class:`SparsityPattern`.

    Takes the values of ``A`` (aligned with ``pattern``) rather than ``A`` itself, so that
    the gradient flows into them as a plain dense tensor and the values' own backward
    turns it into a sparse tensor of ``A``'s layout. Use :func:`sparse_mm`, which builds
    and checks the pattern; here only the shapes of ``values`` and ``B`` are checked.

    ``apply(values, B, pattern, strategy)``: values ``(nnz,)``, B ``(M, p)`` -> ``(N, p)``.
    When the backward runs without ``create_graph`` it calls the kernels directly; with
    it, it applies :class:`SparseMatMul` and :class:`SampledProduct` again, so that its
    result can be differentiated.

    Examples
    --------
    >>> from sparsegrad_lab.pattern import pattern_and_values
    >>> pattern, values = pattern_and_values(torch.eye(3).to_sparse())
    >>> SparseMatMul.apply(values, torch.ones(3, 2), pattern, "sddmm").shape
    torch.Size([3, 2])
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        values: Tensor,
        B: Tensor,
        pattern: SparsityPattern,
        strategy: BackwardStrategy,
    ) -> Tensor:
        _check_operands(pattern, values, B)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(values, B)
        ctx.pattern, ctx.strategy = pattern, strategy  # type: ignore[attr-defined]
        return _spmm(pattern, values, B)

    @staticmethod
    def backward(ctx: Any, G: Tensor | None) -> tuple[Tensor | None, Tensor | None, None, None]:
        if G is None:  # no gradient reached C: none for A and B either, as torch does
            return None, None, None, None
        values, B = ctx.saved_tensors
        grad_values, grad_B = _matmul_backward(
            ctx.pattern,
            ctx.strategy,
            values,
            B,
            G,
            ctx.needs_input_grad[0],
            ctx.needs_input_grad[1],
        )
        return grad_values, grad_B, None, None


def _matmul_backward(
    pattern: SparsityPattern,
    strategy: BackwardStrategy,
    values: Tensor,
    B: Tensor,
    G: Tensor,
    need_values: bool,
    need_B: bool,
) -> tuple[Tensor | None, Tensor | None]:
    """``∇values = (G Bᴴ)`` at the pattern and ``∇B = Aᴴ G``, each only if needed."""
    # An expanded gradient (from .sum()) has stride 0: its copy, C's size, is counted by
    # the memory check of ∇B (one read of the available memory per backward), or alone.
    copied = copy_bytes(G)
    if not need_B:
        _guard_copy(G, "the upstream gradient", pattern, "free memory before calling backward")
    G = G.contiguous()
    if need_values and need_B and _route(pattern, G, strategy, True) == "shared gather":
        return _small_graph_backward(pattern, values, B, G, copied)
    grad_values = _sampled(pattern, G, B, strategy) if need_values else None
    grad_B = _adjoint_product(pattern, values, G, strategy, copied) if need_B else None
    return grad_values, grad_B


class SparseMatMulOfA(torch.autograd.Function):
    """``C = A @ B`` with the sparse ``A`` itself as input: what :func:`sparse_mm` applies.

    ``apply(A, B, pattern, strategy, by_coo)``, ``A`` checked and (COO) coalesced, ``B``
    ``(M, p)``; ``by_coo`` (:func:`coo_product`): the product is torch's COO kernel, and
    ``A``'s index ranges are checked by it, not yet by :func:`sparse_mm`.
    The products are :class:`SparseMatMul`'s; the difference is that the gradient of ``A``
    is returned directly as a sparse tensor of ``A``'s layout and pattern -- built so that
    it can be differentiated again under ``create_graph`` -- which saves a second autograd
    node (``values()``) per call: on a lesson-sized graph, node bookkeeping is a sizeable
    part of the whole step.
    """

    @staticmethod
    def forward(
        ctx: Any,
        A: Tensor,
        B: Tensor,
        pattern: SparsityPattern,
        strategy: BackwardStrategy,
        by_coo: bool,
    ) -> Tensor:
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(A, B)
        ctx.pattern, ctx.strategy = pattern, strategy
        ctx.layout, ctx.shape = A.layout, tuple(A.shape)
        ctx.indices = (
            (A.indices(),)
            if A.layout == torch.sparse_coo
            else (
                A.crow_indices(),
                A.col_indices(),
            )
        )
        if by_coo:
            try:
                return _sparse_times(A, B)
            except RuntimeError as error:
                refused = error
            # Outside the handler, so that the message naming the index is all one sees.
            check_indices(A, "sparse_mm", values_counted=True)
            raise refused
        if A.layout == torch.sparse_csr and A.dim() == 2:
            return _sparse_times(A.detach(), B)  # A is its own pattern's CSR matrix
        return _spmm(pattern, _flat(A.values()), B)

    @staticmethod
    def backward(
        ctx: Any, G: Tensor | None
    ) -> tuple[Tensor | None, Tensor | None, None, None, None]:
        if G is None:
            return None, None, None, None, None
        A, B = ctx.saved_tensors
        # Under create_graph, ∇B = Aᴴ G must stay a function of A: its values are read
        # through autograd then, so that a second derivative reaches A.
        values = values_of(A) if torch.is_grad_enabled() else _flat(A.values())
        grad_values, grad_B = _matmul_backward(
            ctx.pattern,
            ctx.strategy,
            values,
            B,
            G,
            ctx.needs_input_grad[0],
            ctx.needs_input_grad[1],
        )
        grad_A = None
        if grad_values is not None:
            if not differentiable_gradient(A):
                grad_values = grad_values.detach()  # as torch's own constructor expects
            if ctx.layout == torch.sparse_coo:
                grad_A = coo_from_values(ctx.indices[0], grad_values, ctx.shape)
            else:
                crow, col = ctx.indices
                if grad_values.shape != col.shape:  # a batch's values are (b, nnz)
                    grad_values = grad_values.reshape(col.shape)
                grad_A = csr_from_values(crow, col, grad_values, ctx.shape)
        return grad_A, grad_B, None, None, None


class SampledProduct(torch.autograd.Function):
    """Autograd function ``s = (G Bᴴ)`` at ``pattern``'s positions (an SDDMM).

    ``apply(G, B, pattern, strategy)``: G ``(N, p)``, B ``(M, p)`` -> ``(nnz,)``.
    Its own gradient, for an upstream ``H`` on the pattern: ``∇G = H B``, ``∇B = Hᴴ G``.
    Use :func:`sampled_mm` for the checked, public form.

    Examples
    --------
    >>> from sparsegrad_lab.pattern import pattern_and_values
    >>> pattern, _ = pattern_and_values(torch.eye(2).to_sparse())
    >>> SampledProduct.apply(torch.ones(2, 3), torch.ones(2, 3), pattern, "sddmm")
    tensor([3., 3.])
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        G: Tensor,
        B: Tensor,
        pattern: SparsityPattern,
        strategy: BackwardStrategy,
    ) -> Tensor:
        N, M = pattern.shape
        if (
            G.dim() != 2
            or B.dim() != 2
            or (G.shape[0], B.shape[0]) != (N, M)
            or (G.shape[1] != B.shape[1])
        ):
            raise InputValueError(
                f"SampledProduct: G must be ({N}, p) and B ({M}, p) for the pattern's "
                f"{N} x {M} matrix, got {tuple(G.shape)} and {tuple(B.shape)}"
            )
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(G, B)
        ctx.pattern, ctx.strategy = pattern, strategy  # type: ignore[attr-defined]
        return sampled_product(pattern, G, B, strategy)

    @staticmethod
    def backward(ctx: Any, H: Tensor | None) -> tuple[Tensor | None, Tensor | None, None, None]:
        if H is None:
            return None, None, None, None
        G, B = ctx.saved_tensors
        pattern, strategy = ctx.pattern, ctx.strategy
        grad_G = grad_B = None
        if ctx.needs_input_grad[0]:
            _guard_copy(B, "B", pattern)  # torch's CSR product reads B contiguous
            grad_G = _product(pattern, H, B, strategy)
        if ctx.needs_input_grad[1]:
            grad_B = _adjoint_product(pattern, H, G, strategy)
        return grad_G, grad_B, None, None


# Inside a backward, torch.is_grad_enabled() is True exactly when create_graph=True asked
# for the result to be differentiated again. Only then are the products autograd functions;
# otherwise the kernels run directly, without a nested Function's bookkeeping per product.


def _product(
    pattern: SparsityPattern, values: Tensor, X: Tensor, strategy: BackwardStrategy
) -> Tensor:
    """``A(values) @ X`` inside a backward."""
    if torch.is_grad_enabled():
        return SparseMatMul.apply(values, X, pattern, strategy)  # type: ignore[no-any-return]
    return _spmm(pattern, values, X)


def _adjoint_product(
    pattern: SparsityPattern,
    values: Tensor,
    X: Tensor,
    strategy: BackwardStrategy,
    copied: int = 0,
) -> Tensor:
    """``A(values)ᴴ @ X`` inside a backward.

    Through the transpose of the pattern (a sort of the column indices, cached with the
    pattern) when the result will be differentiated again, for a kept pattern (which
    sorts once for all its calls), and when ``nnz x p`` is large. Otherwise -- a
    first-order backward on a small graph -- by a scatter,
    ``(Aᴴ X)[c] = Σ_{k: c_k = c} v̄_k X[r_k]``: one gather and one ``index_add_`` of
    ``nnz x p`` entries (at most :data:`~sparsegrad_lab.sddmm.CHUNK_BYTES`), where sorting
    the indices would cost more than the product itself. ``copied``: bytes of a copy the
    caller made of ``X`` since the last check (counted here with the rest).
    """
    nnz, (M, p) = pattern.nnz, (pattern.shape[1], X.shape[-1])
    if _route(pattern, X, strategy, False) == "transpose":
        _guard_backward(pattern, X, copied + _transpose_bytes(pattern), "the transpose of A")
        adjoint, adjoint_pattern = _adjoint_values(values, pattern)
        return _product(adjoint_pattern, adjoint, X, strategy)
    _guard_backward(pattern, X, copied + nnz * p * X.element_size(), "the scattered terms")
    return _scatter_adjoint(pattern, values, X.index_select(0, pattern.row), M)


def _scatter_adjoint(pattern: SparsityPattern, values: Tensor, rows: Tensor, M: int) -> Tensor:
    """``(Aᴴ X)[c] = Σ_{k: c_k = c} v̄_k X[r_k]`` from ``rows = X[r]``, scaled in place."""
    # conj_physical: values may be a view of A's storage, which a lazy conj view cannot wrap.
    conj = values.conj_physical() if values.is_complex() else values
    rows.mul_(conj.unsqueeze(1))
    return rows.new_zeros(M, rows.shape[-1]).index_add_(0, pattern.col, rows)


BackwardRoute = Literal["shared gather", "scatter", "transpose"]


def first_order_route(
    strategy: str, *, nnz: int, p: int, elem: int, kept: bool, both: bool = True
) -> BackwardRoute:
    """How a first-order backward (no ``create_graph``) of :func:`sparse_mm` computes ``∇B``.

    ``"transpose"``: through the transposed pattern, for a kept pattern (which sorts once
    for all its calls) or when the ``nnz x p`` gathered rows exceed
    :data:`~sparsegrad_lab.sddmm.CHUNK_BYTES`; otherwise ``"scatter"`` (one gather of
    ``G``'s rows and an ``index_add_``), which with ``"sddmm"``, both gradients wanted
    (``both``) and at most :data:`SHARED_GATHER_MAX_NNZ` entries also gives ``∇A``
    (``"shared gather"``). Under ``create_graph`` it is always the transpose. The memory
    model describes each route with this same function.

    >>> first_order_route("sddmm", nnz=500, p=8, elem=4, kept=False)
    'shared gather'
    """
    if kept or nnz * p * elem > CHUNK_BYTES:
        return "transpose"
    if both and strategy == "sddmm" and nnz <= SHARED_GATHER_MAX_NNZ:
        return "shared gather"
    return "scatter"


def _route(pattern: SparsityPattern, X: Tensor, strategy: str, both: bool) -> BackwardRoute:
    """:func:`first_order_route` for this backward (``"transpose"`` under create_graph)."""
    if torch.is_grad_enabled():
        return "transpose"
    kept = pattern._source is not None
    return first_order_route(
        strategy, nnz=pattern.nnz, p=X.shape[-1], elem=X.element_size(), kept=kept, both=both
    )


def _small_graph_backward(
    pattern: SparsityPattern, values: Tensor, B: Tensor, G: Tensor, copied: int = 0
) -> tuple[Tensor, Tensor]:
    """Both gradients of a small graph from one gather of ``G``'s rows.

    With :math:`g_k = G_{r_k}` (row :math:`r_k` of ``G``, gathered once),

    .. math::

        s_k = \\sum_l g_{kl} \\overline{B_{c_k l}}, \\qquad
        (A^{\\mathsf H} G)_c = \\sum_{k:\\, c_k = c} \\bar v_k \\, g_k ,

    the sampled product and the scatter of :func:`_adjoint_product` share the gather. On a
    graph of at most :data:`SHARED_GATHER_MAX_NNZ` entries that saves more than torch's
    sampled kernel gains: its fixed cost per call is most of its time there. The working
    set is two ``nnz x p`` blocks, at most ``2 CHUNK_BYTES`` (:func:`first_order_route`).
    A strided ``B`` is gathered from as it is (no copy); ``copied`` is what the caller copied.
    """
    p = G.shape[-1]
    _guard_backward(pattern, G, copied + 2 * pattern.nnz * p * G.element_size(), "gathered rows")
    rows = G.index_select(0, pattern.row)
    # Conjugated in place (a real B needs no call); freed before the scatter allocates ∇B.
    picked = B.index_select(0, pattern.col)
    grad_values = (picked.conj_physical_() if picked.is_complex() else picked).mul_(rows).sum(-1)
    del picked
    return grad_values, _scatter_adjoint(pattern, values, rows, pattern.shape[1])


def _sampled(pattern: SparsityPattern, G: Tensor, B: Tensor, strategy: BackwardStrategy) -> Tensor:
    """``(G Bᴴ)`` at the pattern, inside a backward.

    The sampled product copies a strided ``B`` (an expanded one, say) in full: that copy is
    checked first.
    """
    _guard_copy(B, "B", pattern)
    if torch.is_grad_enabled():
        return SampledProduct.apply(G, B, pattern, strategy)  # type: ignore[no-any-return]
    return sampled_product(pattern, G, B, strategy)


def _eager_only(fn: Callable[P, R]) -> Callable[P, R]:
    """Run ``fn`` eagerly inside ``torch.compile``: a graph break, not a crash.

    torch.compile traces tensors as "fake" tensors, which have no sparse CSR support and
    lose the COO indices this package reads (dynamo fails with "tuple index out of range",
    or "Sparse CSR tensors do not have strides"). The dense work around the call is still
    compiled; the sparse product runs torch's kernels as it does without compile.
    """
    wrapped: Callable[P, R] = torch.compiler.disable(fn, recursive=True)
    return functools.wraps(fn)(wrapped)


# ---------------------------------------------------------------------------- memory guard


def _index_bytes(count: int) -> int:
    """Bytes of an int64 index vector of ``count`` entries (int32 when the caller says so)."""
    return count * 8


def _pattern_bytes(A: Tensor) -> int:
    """What building ``A``'s pattern allocates: COO's row pointers, a batch's stacked indices.

    COO ``(b, n, m)``: ``b n + 1`` int64 row pointers (and, batched, the stacked row and
    column of every entry); batched CSR: the stacked row pointers and columns. A 2-D CSR
    pattern is ``A``'s own indices. The row pointers of a graph that :func:`coo_product`
    multiplies are counted too: a later step (``create_graph``, torch's sampled kernel)
    builds them on first use, after this check.
    """
    b, n = (A.shape[0], A.shape[1]) if A.dim() == 3 else (1, A.shape[0])
    if A.layout == torch.sparse_coo:
        stacked = 2 * A._nnz() if A.dim() == 3 else 0
        return _index_bytes(b * n + 1 + stacked)
    if A.dim() == 3:
        return _index_bytes(b * n + 1 + A.col_indices().numel())
    return 0


def _transpose_bytes(pattern: SparsityPattern) -> int:
    """What ``pattern.transpose`` allocates when first used (zero once it is cached).

    ``M + 1`` row pointers, the sorted columns, the permutation (int64) and the gathered
    rows; counted at int64 throughout (int32 where they fit: an upper bound).
    """
    if "transpose" in pattern.__dict__:
        return 0
    return _index_bytes(pattern.shape[1] + 1 + 3 * pattern.nnz)


def _guard_backward(pattern: SparsityPattern, X: Tensor, extra: int, what: str) -> None:
    """Backward runs later than the forward's check: read what is available once more.

    ``extra`` bytes of temporaries (named by ``what``) plus the ``M x p`` result.
    """
    needed = extra + pattern.shape[1] * X.shape[-1] * X.element_size()
    if needed > memory_guard.NEGLIGIBLE_BYTES:
        n, m = pattern.block_shape
        memory_guard.check_fits(
            needed,
            what=f"the backward's {what} and ∇B = Aᴴ G for A of {pattern.batch} x {n} x {m} "
            f"with {pattern.nnz} stored entries and p={X.shape[-1]}",
            device=pattern.device,
            advice="free memory before calling backward, or use fewer columns of B",
        )


def _guard_copy(X: Tensor, name: str, pattern: SparsityPattern, advice: str = "") -> None:
    """Check, in a backward, that the copy a kernel makes of a strided ``X`` fits.

    No read of the available memory at all when the copy is negligible (a contiguous
    ``X``: none).
    """
    needed = copy_bytes(X)
    if needed > memory_guard.NEGLIGIBLE_BYTES:
        n, m = pattern.block_shape
        memory_guard.check_fits(
            needed,
            what=f"the backward's contiguous copy of {name} (shape {tuple(X.shape)}, strides "
            f"{X.stride()}) for A of {pattern.batch} x {n} x {m}",
            device=pattern.device,
            advice=advice
            or f"pass {name} as a contiguous tensor of the size it has, not an expanded or "
            "strided view of a larger one",
        )


def _refuse_if_over(
    needed: int, available: int, device: torch.device, what: str, advice: str
) -> None:
    """:func:`memory_guard.check_fits` with the memory this call already read."""
    memory_guard.check_fits(needed, what=what, device=device, available=available, advice=advice)


def sparsity_pattern(A: Tensor) -> SparsityPattern:
    """The pattern of ``A``, to build once and pass to every :func:`sparse_mm` with that ``A``.

    In a loop that multiplies matrices with the same stored positions (a fixed graph whose
    edge weights are learned, say), each call would otherwise check ``A``'s indices and
    rebuild the pattern, and each backward would rebuild the transpose that ``∇B = Aᴴ G``
    needs: a sort of the ``nnz`` column indices, two gathers and a row-pointer conversion
    (the ``sddmm_kept`` rows of the committed CPU benchmark show what keeping it saves). A
    kept pattern checks ``A``'s indices once, here, owns a copy of them, computes its
    transpose on first use and reuses it. The price is memory, held for as long as you
    keep the pattern: the copy of the indices and, after the first backward, an int64
    permutation and two int32 index vectors of length ``nnz`` (int64 beyond 2³¹),
    ``m + 1`` row pointers and, for CSR, the expanded row of each entry in ``A``'s index
    dtype -- 24 to 40 bytes per stored entry in all.

    Parameters
    ----------
    A : Tensor
        Sparse COO or CSR, ``(n, m)`` or ``(b, n, m)``. Only its indices matter; the
        values may change from call to call.

    Returns
    -------
    SparsityPattern
        Pass it as ``sparse_mm(A, B, pattern=...)``. Each call checks that ``A`` has exactly
        the indices the pattern was built from (one comparison pass with the pattern's own
        copy, so index buffers refilled in place are caught too) and refuses otherwise.

    Raises
    ------
    InputTypeError, InputValueError
        If ``A`` is not a sparse matrix or any of its indices is invalid.

    Examples
    --------
    >>> crow, col = torch.tensor([0, 1, 3]), torch.tensor([1, 0, 1])
    >>> pattern = sparsity_pattern(torch.sparse_csr_tensor(crow, col, torch.ones(3)))
    >>> for step in range(2):
    ...     w = torch.full((3,), float(step + 1), requires_grad=True)
    ...     A = torch.sparse_csr_tensor(crow, col, w, (2, 2))
    ...     sparse_mm(A, torch.ones(2, 1), pattern=pattern).sum().backward()
    >>> w.grad
    tensor([1., 1., 1.])
    """
    check_sparse_matrix(A, "sparsity_pattern")
    check_indices(A, "sparsity_pattern", values_counted=True)
    return kept_pattern(A)


def _check_kept_pattern(pattern: object, A: Tensor, where: str) -> None:
    """Refuse a ``pattern=`` that is not a pattern of ``A`` (coalesced already, if COO)."""
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


def _pattern_for(
    A: Tensor, kept: SparsityPattern | None, where: str, *, ranges: bool = True
) -> tuple[Tensor, SparsityPattern | None]:
    """``A`` coalesced (once) and checked: its indices, or their match with ``kept``.

    Returns the kept pattern, or ``None`` when the caller must build one (after its
    memory check, since building allocates). ``ranges=False``: the product checks the
    index ranges (:func:`coo_product`).
    """
    # The input checks counted a CSR A's values already.
    if kept is None or (A.layout == torch.sparse_coo and not A.is_coalesced()):
        # Before coalesce(), which reads them.
        check_indices(A, where, values_counted=True, ranges=ranges)
    A = coalesced(A)
    if kept is not None:
        _check_kept_pattern(kept, A, where)
    return A, kept


@_eager_only
def sparse_mm(
    A: Tensor,
    B: Tensor,
    *,
    backward: BackwardStrategy = "sddmm",
    pattern: SparsityPattern | None = None,
) -> Tensor:
    """Sparse ``A`` times dense ``B``, differentiable in both, with a sparse ``∇A``.

    .. math::

        C = A B, \\qquad
        \\nabla_A L = P_A \\odot (G B^{\\mathsf H}), \\qquad
        \\nabla_B L = A^{\\mathsf H} G,

    where :math:`G = \\partial L / \\partial \\bar C` and :math:`P_A` keeps only the
    positions ``A`` stores. ``A.grad`` has ``A``'s layout and exactly its coalesced pattern;
    a batch is treated as one block-diagonal matrix, with no Python loop over items.

    Parameters
    ----------
    A : Tensor
        Sparse COO or CSR, ``(n, m)`` or ``(b, n, m)`` (CSR items with equal nnz, as torch
        requires). dtype float32, float64, complex64 or complex128 (float16 and bfloat16
        on CUDA only); CSR indices int32 or int64.
    B : Tensor
        Dense ``(m, p)`` or ``(b, m, p)``, same dtype and device as ``A``.
    backward : {"sddmm", "gather", "dense"}, default "sddmm"
        How ``∇A`` is computed (see :mod:`sparsegrad_lab.sddmm`); all give the same numbers.
    pattern : SparsityPattern, optional
        ``sparsity_pattern(A)``, kept across calls whose ``A`` has the same indices: saves
        rebuilding the pattern and, in the backward, the transpose (see
        :func:`sparsity_pattern`). Checked against ``A`` on every call.

    Returns
    -------
    Tensor
        Dense ``(n, p)`` or ``(b, n, p)``.

    Raises
    ------
    InputTypeError, InputValueError
        For inputs it cannot multiply; the message names the argument and what was expected.
    MemoryBudgetError
        If the result, or the chosen backward's temporaries, would not fit in the device's
        available memory (checked before anything is allocated). A strided or expanded
        ``B`` that a kernel copies in full counts with its full size.

    Examples
    --------
    >>> A = torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, 3.0]]).to_sparse().requires_grad_()
    >>> B = torch.arange(6.0).reshape(3, 2).requires_grad_()
    >>> C = sparse_mm(A, B)
    >>> C
    tensor([[ 4.,  6.],
            [12., 16.]], grad_fn=<SparseMatMulOfABackward>)
    >>> C.sum().backward()
    >>> A.grad.layout, A.grad.coalesce().values()    # (G Bᵀ) at A's three entries
    (torch.sparse_coo, tensor([5., 1., 9.]))
    >>> B.grad
    tensor([[1., 1.],
            [2., 2.],
            [3., 3.]])
    """
    check_sparse_mm_inputs(A, B, backward)
    by_coo = coo_product_for(A, kept=pattern is not None)
    A, kept = _pattern_for(A, pattern, "sparse_mm", ranges=not by_coo)
    b, n, m = A.shape if A.dim() == 3 else (1, *A.shape)
    p = B.shape[-1]
    # torch's CSR product reads B contiguous: a strided or expanded B is copied in full
    # (the COO product reads it as it is, but not through a lazy conjugation).
    b_copy = copy_bytes(B) if not by_coo or B.is_conj() else 0
    # A pattern copies strided index views (edges.t()): see sparsegrad_lab.pattern.
    strided = strided_index_bytes(A)
    pattern_bytes = 0 if kept else _pattern_bytes(A) + strided
    result = b * n * p * element_size(B.dtype) + pattern_bytes + b_copy
    nnz = A._nnz() if A.layout == torch.sparse_coo else A.col_indices().numel()
    workspace = 0
    if A.requires_grad and torch.is_grad_enabled():
        workspace = (
            sampled_product_workspace_bytes(
                backward, batch=b, block_shape=(n, m), nnz=nnz, p=p, dtype=B.dtype
            )
            + strided
        )  # ∇A is built on contiguous copies of strided indices
    if result + workspace > memory_guard.NEGLIGIBLE_BYTES:
        available = memory_guard.available_bytes(A.device)
        copy_of_B = (
            f", and a contiguous copy of B (shape {tuple(B.shape)}, strides {B.stride()})"
            if b_copy
            else ""
        )
        _refuse_if_over(
            result,
            available,
            A.device,
            f"sparse_mm: the result C of {b * n} x {p} (and A's pattern){copy_of_B}",
            "use fewer rows or columns, or split B's columns"
            + ("; pass B as a contiguous tensor of the size it has" if b_copy else ""),
        )
        _refuse_if_over(
            workspace,
            available,
            A.device,
            f"sparse_mm: backward={backward!r} for A of "
            f"{b} x {n} x {m} with {nnz} stored entries and p={p}",
            "use backward='sddmm', whose working set stays bounded",
        )
    pattern = kept if kept is not None else pattern_of(A)
    # A 2-D B is used as it is: even a no-op reshape of a B that requires grad adds an
    # autograd node to every forward and backward.
    B2 = B if A.dim() == 2 else B.reshape(b * m, p)
    if A.layout == torch.sparse_csr and (A.dim() == 3 or strided):
        # One autograd node reading A: a double backward through SparseMatMulOfA reads A
        # twice, and torch 2.13 corrupts the sum of two batched CSR gradients. A 2-D A
        # with strided index views is multiplied through the pattern's contiguous copies
        # too: torch's CSR product reads a strided int32 col as if it were contiguous.
        C = SparseMatMul.apply(values_of(A), B2, pattern, backward)
    else:
        C = SparseMatMulOfA.apply(A, B2, pattern, backward, by_coo)
    return C if A.dim() == 2 else C.view(b, n, p)


@_eager_only
def sampled_mm(
    A: Tensor,
    X: Tensor,
    Y: Tensor,
    *,
    backward: BackwardStrategy = "sddmm",
    pattern: SparsityPattern | None = None,
) -> Tensor:
    """``X @ Y`` evaluated only at ``A``'s stored positions (an SDDMM), as a sparse tensor.

    .. math::

        S = P_A \\odot (X Y), \\qquad
        s_k = \\sum_{l=1}^{d} X_{r_k l} \\, Y_{l c_k}, \\qquad
        \\nabla_X L = S_G \\, Y^{\\mathsf H}, \\qquad
        \\nabla_Y L = X^{\\mathsf H} S_G,

    where :math:`(r_k, c_k)` are the positions ``A`` stores and :math:`S_G` is the sparse
    upstream gradient on those positions. Only ``A``'s pattern is used: its values are
    ignored and receive no gradient. Graph-attention scores
    :math:`s_k = q_{r_k} \\cdot k_{c_k}` on the edges of a graph ``A`` are
    ``sampled_mm(A, Q, K.T)``; the ``n x m`` product ``X Y`` is never formed (with the
    default ``backward="sddmm"``). Its backward runs the same kernels as :func:`sparse_mm`.

    Parameters
    ----------
    A : Tensor
        Sparse COO or CSR, ``(n, m)`` or ``(b, n, m)``; any dtype (its values are unused).
    X : Tensor
        Dense ``(n, d)`` or ``(b, n, d)``.
    Y : Tensor
        Dense ``(d, m)`` or ``(b, d, m)``, same dtype and device as ``X`` (float32, float64,
        complex64 or complex128; float16 and bfloat16 on CUDA only).
    backward : {"sddmm", "gather", "dense"}, default "sddmm"
        How the sampled product is computed (see :mod:`sparsegrad_lab.sddmm`); here it is
        the forward, and the first-order backward of a later double backward.
    pattern : SparsityPattern, optional
        ``sparsity_pattern(A)`` kept across calls with the same indices (see
        :func:`sparsity_pattern`); checked against ``A`` on every call.

    Returns
    -------
    Tensor
        Sparse, ``A``'s layout and shape and exactly ``A``'s coalesced pattern (CSR keeps
        its index dtype; the index tensors are contiguous), dtype of ``X`` (also under
        autocast); differentiable in ``X`` and ``Y``. Read its values with ``S.values()``:
        a CSR result that needs a gradient is a
        :class:`~sparsegrad_lab.csr_from_values.DifferentiableCsr`, whose ``values()`` can
        be differentiated twice (torch's own ``values()`` of a CSR tensor cannot).

    Raises
    ------
    InputTypeError, InputValueError
        For inputs it cannot take; the message names the argument and what was expected.
    MemoryBudgetError
        If the values, the sampled product's temporaries, the contiguous copies of a
        strided or expanded ``X`` or ``Y`` (copied in full) or (when ``X`` or ``Y`` needs a
        gradient) the backward's results would not fit in the available memory.

    Examples
    --------
    >>> A = torch.tensor([[0.0, 1.0], [1.0, 1.0]]).to_sparse_csr()   # 3 edges
    >>> Q = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    >>> K = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> S = sampled_mm(A, Q, K.T)        # s_k = Q[r_k] · K[c_k]
    >>> S.layout, S.values()
    (torch.sparse_csr, tensor([2., 3., 4.], grad_fn=<CsrValuesBackward>))
    >>> S.values().sum().backward()
    >>> Q.grad                           # row r sums the K rows of its edges
    tensor([[0., 1.],
            [1., 1.]])
    """
    check_sampled_mm_inputs(A, X, Y, backward)
    A, kept = _pattern_for(A.detach(), pattern, "sampled_mm")
    b, n, m = A.shape if A.dim() == 3 else (1, *A.shape)
    d = X.shape[-1]
    elem = element_size(X.dtype)
    nnz = A._nnz() if A.layout == torch.sparse_coo else A.col_indices().numel()
    shape = f"A of {b} x {n} x {m} with {nnz} stored entries and d={d}"
    # The kernels read X and Yᴴ as contiguous memory: a strided or expanded X or Y (or a
    # complex Y, whose Yᴴ is a lazy conjugate) is copied in full, once, before them.
    Y_h = Y.mH
    copied = {name: copy_bytes(M) for name, M in (("X", X), ("Y", Y_h))}
    values_bytes = (
        nnz * elem
        + (0 if kept else _pattern_bytes(A))
        + strided_index_bytes(A)  # the result's indices, contiguous (see contiguous_indices)
        + sum(copied.values())
        + sampled_product_workspace_bytes(
            backward, batch=b, block_shape=(n, m), nnz=nnz, p=d, dtype=X.dtype
        )
    )
    backward_bytes = 0
    if (X.requires_grad or Y.requires_grad) and torch.is_grad_enabled():
        # ∇X and ∇Y, and the transpose of A that ∇Y = Xᴴ S_G may build.
        backward_bytes = b * (n + m) * d * elem + _index_bytes(b * m + 1 + 3 * nnz)
    if values_bytes + backward_bytes > memory_guard.NEGLIGIBLE_BYTES:
        available = memory_guard.available_bytes(A.device)
        copies = [
            f"{name} (shape {tuple(M.shape)}, strides {M.stride()})"
            for name, M in (("X", X), ("Y", Y))
            if copied[name]
        ]
        _refuse_if_over(
            values_bytes,
            available,
            A.device,
            f"sampled_mm: the values and backward={backward!r} temporaries for {shape}"
            + (f", with a contiguous copy of {' and '.join(copies)}" if copies else ""),
            "use backward='sddmm', whose working set stays bounded, or a smaller d"
            + (
                "; the kernels read X and Yᴴ row by row, so a strided or expanded X, or a Y "
                "that is not K.T of a contiguous K, is copied in full"
                if copies
                else ""
            ),
        )
        _refuse_if_over(
            backward_bytes,
            available,
            A.device,
            f"sampled_mm: the backward (∇X, ∇Y and the transpose of A) for {shape}",
            "use a smaller d, or fewer rows and columns",
        )
    A = contiguous_indices(A)  # shared by the pattern and the result
    pattern = kept if kept is not None else pattern_of(A)
    # SampledProduct gives G Bᴴ at the pattern; with B = Yᴴ that is X Y.
    values = SampledProduct.apply(
        _materialised(X).reshape(b * n, d), _materialised(Y_h).reshape(b * m, d), pattern, backward
    )
    if A.layout == torch.sparse_coo:
        out: Tensor = CooFromValues.apply(A.indices(), values, tuple(A.shape))
        return out
    crow, col = A.crow_indices(), A.col_indices()
    # values() of the result is differentiable twice (torch's own CSR values() is not).
    return differentiable_csr(crow, col, values.reshape(col.shape), tuple(A.shape))
