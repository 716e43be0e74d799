"""The autograd Functions of ``sparse_mm`` and ``sampled_mm``, and their backward products.

A call with a kept pattern and the default ``"sddmm"`` runs the registered operator of
:mod:`sparsegrad_lab.pattern_op` instead: the sort of the transpose is paid once there, so
none of the routes below that avoid it applies. These Functions serve a call that builds its
pattern (the small-graph routes of :mod:`sparsegrad_lab.routes`), the ``"gather"`` and
``"dense"`` strategies, and ``sampled_mm``.

For :math:`C = A B` and upstream :math:`G` = ``C.grad`` (torch's convention:
:math:`2\\, \\partial L / \\partial \\bar C` for complex ``C``, :math:`\\partial L / \\partial C`
for real; see :mod:`~sparsegrad_lab.sddmm`):

.. math::

    \\nabla_A L = P_A \\odot (G B^{\\mathsf H}) \\quad \\text{(values only at A's pattern)},
    \\qquad \\nabla_B L = A^{\\mathsf H} G .

The first is a sampled dense-dense product (:mod:`sparsegrad_lab.sddmm`), the autograd
function :class:`SampledProduct`; the second another sparse-times-dense product,
:class:`SparseMatMul`, with ``Aᴴ``'s pattern from a permutation cached with the pattern (or,
on a small graph in a first-order backward, a scatter: :mod:`sparsegrad_lab.routes`). Under
``create_graph=True`` both backward products are applied as these autograd functions, so
double backward needs no extra code: the derivative of the sampled product
:math:`s = P \\odot (G B^{\\mathsf H})` against an upstream ``H`` (values on the pattern) is
:math:`\\nabla_G = H B` and :math:`\\nabla_B = H^{\\mathsf H} G` -- the same two products
again. Without it they call the kernels directly. They differentiate into each other, which
is why they live in one module.

The inputs reach torch's kernels only in the form those read: index tensors contiguous
(:mod:`sparsegrad_lab.pattern`), dense operands contiguous -- a strided or expanded operand
is copied in full first, and every such copy is counted by the memory guard before it is
made (:func:`~sparsegrad_lab.sddmm.copy_bytes`). A backward checks again what it allocates
when it runs (:func:`~sparsegrad_lab.memory_guard.check_backward_fits`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx

from .csr_from_values import coo_from_values, csr_from_values
from .errors import InputValueError
from .memory_guard import (
    check_backward_fits,
    check_copy_fits,
    check_row_pointers_fit,
)
from .pattern import SparsityPattern, differentiable_gradient, values_of
from .routes import BackwardRoute, backward_route
from .sddmm import copy_bytes, sampled_product
from .strategies import BackwardStrategy

__all__ = [
    "SampledProduct",
    "SparseMatMul",
    "SparseMatMulOfA",
    "materialised",
]


def _spmm(pattern: SparsityPattern, values: Tensor, X: Tensor) -> Tensor:
    """``A @ X`` for the CSR matrix (pattern, values), on torch's own CSR kernel."""
    return _sparse_times(pattern.to_csr(_resolved(values)), X)


def _resolved(X: Tensor) -> Tensor:
    """``X`` with a lazy conjugation materialised; ``X`` itself (no kernel call) when none."""
    return X.resolve_conj() if X.is_conj() else X


def materialised(X: Tensor) -> Tensor:
    """``X`` as contiguous memory without a lazy conjugation: itself, or one copy.

    The copy is :func:`~sparsegrad_lab.sddmm.copy_bytes` ``(X)``, counted by the caller's
    memory check; differentiable (autograd's ``copy_``).

    >>> materialised(torch.ones(1, 3).expand(2, 3)).stride()
    (3, 1)
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
        check_copy_fits(G, "the upstream gradient", pattern, "free memory before calling backward")
    G = G.contiguous()
    # Decided once for the whole backward: one gather for both gradients, or ∇B by its own.
    route = backward_route(pattern, G, strategy, both=need_values and need_B)
    if route == "shared gather":
        return _small_graph_backward(pattern, values, B, G, copied)
    grad_values = _sampled(pattern, G, B, strategy) if need_values else None
    grad_B = _adjoint_product(pattern, values, G, strategy, route, copied) if need_B else None
    return grad_values, grad_B


class SparseMatMulOfA(torch.autograd.Function):
    """``C = A @ B`` with the sparse ``A`` itself as input: what :func:`sparse_mm` applies.

    ``apply(A, B, pattern, strategy, by_coo)``, ``A`` checked and (COO) coalesced, ``B``
    ``(M, p)``; ``by_coo`` (:func:`~sparsegrad_lab.routes.coo_product`): the product is
    torch's COO kernel, which checks ``A``'s index ranges itself (and raises
    ``RuntimeError`` on one out of range: :func:`~sparsegrad_lab.sparse_mm` names it).
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
            return _sparse_times(A, B)
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
            check_copy_fits(B, "B", pattern)  # torch's CSR product reads B contiguous
            check_row_pointers_fit(pattern)  # a COO product's pattern builds them now
            grad_G = _product(pattern, H, B, strategy)
        if ctx.needs_input_grad[1]:
            route = backward_route(pattern, G, strategy, both=False)
            grad_B = _adjoint_product(pattern, H, G, strategy, route)
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
    route: BackwardRoute,
    copied: int = 0,
) -> Tensor:
    """``A(values)ᴴ @ X`` inside a backward, by the ``route`` the caller decided.

    ``"transpose"``: through the transpose of the pattern (a sort of the column indices,
    cached with the pattern). ``"scatter"``: ``(Aᴴ X)[c] = Σ_{k: c_k = c} v̄_k X[r_k]``,
    one gather and one ``index_add_`` of ``nnz x p`` entries, where sorting the indices
    would cost more than the product itself (:func:`~sparsegrad_lab.routes.first_order_route`
    says when). ``copied``: bytes of a copy the caller made of ``X`` since the last check
    (counted here with the rest).
    """
    check_backward_fits(pattern, X, route, copied)
    if route == "transpose":
        adjoint, adjoint_pattern = _adjoint_values(values, pattern)
        return _product(adjoint_pattern, adjoint, X, strategy)
    return _scatter_adjoint(pattern, values, X.index_select(0, pattern.row), pattern.shape[1])


def _scatter_adjoint(pattern: SparsityPattern, values: Tensor, rows: Tensor, M: int) -> Tensor:
    """``(Aᴴ X)[c] = Σ_{k: c_k = c} v̄_k X[r_k]`` from ``rows = X[r]``, scaled in place."""
    # conj_physical: values may be a view of A's storage, which a lazy conj view cannot wrap.
    conj = values.conj_physical() if values.is_complex() else values
    rows.mul_(conj.unsqueeze(1))
    return rows.new_zeros(M, rows.shape[-1]).index_add_(0, pattern.col, rows)


def _small_graph_backward(
    pattern: SparsityPattern, values: Tensor, B: Tensor, G: Tensor, copied: int = 0
) -> tuple[Tensor, Tensor]:
    """Both gradients of a small graph from one gather of ``G``'s rows.

    With :math:`g_k = G_{r_k}` (row :math:`r_k` of ``G``, gathered once),

    .. math::

        s_k = \\sum_l g_{kl} \\overline{B_{c_k l}}, \\qquad
        (A^{\\mathsf H} G)_c = \\sum_{k:\\, c_k = c} \\bar v_k \\, g_k ,

    the sampled product and the scatter of :func:`_adjoint_product` share the gather. On a
    graph of at most :data:`~sparsegrad_lab.routes.SHARED_GATHER_MAX_NNZ` entries that saves
    more than torch's sampled kernel gains: its fixed cost per call is most of its time
    there. The working set is two ``nnz x p`` blocks, at most ``2 SCATTER_MAX_BYTES``
    (:func:`~sparsegrad_lab.routes.first_order_route`). A strided ``B`` is gathered from as
    it is (no copy); ``copied`` is what the caller copied.
    """
    check_backward_fits(pattern, G, "shared gather", copied)
    rows = G.index_select(0, pattern.row)
    # Conjugated in place (a real B needs no call); freed before the scatter allocates ∇B.
    picked = B.index_select(0, pattern.col)
    grad_values = (picked.conj_physical_() if picked.is_complex() else picked).mul_(rows).sum(-1)
    del picked
    return grad_values, _scatter_adjoint(pattern, values, rows, pattern.shape[1])


def _sampled(pattern: SparsityPattern, G: Tensor, B: Tensor, strategy: BackwardStrategy) -> Tensor:
    """``(G Bᴴ)`` at the pattern, inside a backward.

    The sampled product copies a strided ``B`` (an expanded one, say) in full: that copy is
    checked first, and so are the row pointers torch's sampled kernel reads, which a COO
    product's pattern builds on first use.
    """
    check_copy_fits(B, "B", pattern)
    if strategy == "sddmm":
        check_row_pointers_fit(pattern)
    if torch.is_grad_enabled():
        return SampledProduct.apply(G, B, pattern, strategy)  # type: ignore[no-any-return]
    return sampled_product(pattern, G, B, strategy)
