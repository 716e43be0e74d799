"""``sparse_mm``: sparse ``A`` times dense ``B`` with a gradient that stays sparse.

Forward and backward sit side by side here. For :math:`C = A B` and upstream
:math:`G = \\partial L / \\partial \\bar C`:

.. math::

    \\nabla_A L = P_A \\odot (G B^{\\mathsf H}) \\quad \\text{(values only at A's pattern)},
    \\qquad \\nabla_B L = A^{\\mathsf H} G .

The first is a sampled dense-dense product (:mod:`sparsegrad_lab.sddmm`), the second
another sparse-times-dense product, with ``Aᴴ``'s pattern from a cached permutation.
Both backward products are themselves differentiable autograd functions, so double
backward needs no extra code: the derivative of the sampled product
:math:`s = P \\odot (G B^{\\mathsf H})` against an upstream ``H`` (values on the pattern) is
:math:`\\nabla_G = H B` and :math:`\\nabla_B = H^{\\mathsf H} G` -- the same two products again.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx

from ._checks import check_sparse_matrix, check_sparse_mm_inputs
from .errors import InputTypeError, InputValueError, MemoryBudgetError, format_bytes
from .pattern import SparsityPattern, pattern_and_values, pattern_mismatch
from .sddmm import BackwardStrategy, sampled_product, sampled_product_workspace_bytes

__all__ = ["SampledProduct", "SparseMatMul", "sparse_mm", "sparsity_pattern"]


def _spmm(pattern: SparsityPattern, values: Tensor, X: Tensor) -> Tensor:
    """``A @ X`` for the CSR matrix (pattern, values), on torch's own CSR kernel."""
    return pattern.to_csr(values.resolve_conj()) @ X.resolve_conj()


def _adjoint_values(values: Tensor, pattern: SparsityPattern) -> tuple[Tensor, SparsityPattern]:
    """Values and pattern of ``Aᴴ`` (differentiable in ``values``)."""
    transpose = pattern.transpose
    return values[transpose.perm].conj(), transpose.pattern


class SparseMatMul(torch.autograd.Function):
    """Autograd function ``C = A(values) @ B`` for a fixed :class:`SparsityPattern`.

    Takes the values of ``A`` (aligned with ``pattern``) rather than ``A`` itself, so that
    the gradient flows into them as a plain dense tensor and torch's own ``values()``
    backward turns it into a sparse tensor of ``A``'s layout. Use :func:`sparse_mm`,
    which builds the pattern, unless you call this in a loop with a pattern you keep.

    ``apply(values, B, pattern, strategy)``: values ``(nnz,)``, B ``(M, p)`` -> ``(N, p)``.

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
        ctx.save_for_backward(values, B)
        ctx.pattern, ctx.strategy = pattern, strategy  # type: ignore[attr-defined]
        return _spmm(pattern, values, B)

    @staticmethod
    def backward(ctx: Any, G: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        values, B = ctx.saved_tensors
        pattern, strategy = ctx.pattern, ctx.strategy
        G = G.contiguous()  # an expanded gradient (from .sum()) has stride 0
        grad_values = grad_B = None
        if ctx.needs_input_grad[0]:
            grad_values = SampledProduct.apply(G, B, pattern, strategy)
        if ctx.needs_input_grad[1]:
            adjoint, adjoint_pattern = _adjoint_values(values, pattern)
            grad_B = SparseMatMul.apply(adjoint, G, adjoint_pattern, strategy)
        return grad_values, grad_B, None, None


class SampledProduct(torch.autograd.Function):
    """Autograd function ``s = (G Bᴴ)`` at ``pattern``'s positions (an SDDMM).

    ``apply(G, B, pattern, strategy)``: G ``(N, p)``, B ``(M, p)`` -> ``(nnz,)``.
    Its own gradient, for an upstream ``H`` on the pattern: ``∇G = H B``, ``∇B = Hᴴ G``.

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
        ctx.save_for_backward(G, B)
        ctx.pattern, ctx.strategy = pattern, strategy  # type: ignore[attr-defined]
        return sampled_product(pattern, G, B, strategy)

    @staticmethod
    def backward(ctx: Any, H: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        G, B = ctx.saved_tensors
        pattern, strategy = ctx.pattern, ctx.strategy
        grad_G = grad_B = None
        if ctx.needs_input_grad[0]:
            grad_G = SparseMatMul.apply(H, B, pattern, strategy)
        if ctx.needs_input_grad[1]:
            adjoint, adjoint_pattern = _adjoint_values(H, pattern)
            grad_B = SparseMatMul.apply(adjoint, G, adjoint_pattern, strategy)
        return grad_G, grad_B, None, None


def available_memory_bytes(device: torch.device) -> int:
    """Memory a new allocation on ``device`` can still get, in bytes.

    CUDA: free device memory plus what torch's caching allocator holds unused. CPU: the
    kernel's ``MemAvailable`` estimate (Linux), else physical pages still free.

    >>> available_memory_bytes(torch.device("cpu")) > 0
    True
    """
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + cached)
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _refuse_if_output_cannot_fit(pattern: SparsityPattern, p: int, dtype: torch.dtype) -> None:
    needed = pattern.shape[0] * p * torch.empty(0, dtype=dtype).element_size()
    available = available_memory_bytes(pattern.device)
    if needed > available:
        raise MemoryBudgetError(
            f"sparse_mm: the result C of {pattern.shape[0]} x {p} would need "
            f"{format_bytes(needed)}, but only {format_bytes(available)} is available on "
            f"{pattern.device}; use fewer rows or columns, or split B's columns",
            needed_bytes=needed,
            budget_bytes=available,
        )


def _refuse_if_backward_cannot_fit(
    pattern: SparsityPattern, p: int, dtype: torch.dtype, strategy: BackwardStrategy
) -> None:
    needed = sampled_product_workspace_bytes(
        strategy,
        batch=pattern.batch,
        block_shape=pattern.block_shape,
        nnz=pattern.nnz,
        p=p,
        dtype=dtype,
    )
    available = available_memory_bytes(pattern.device)
    if needed > available:
        n, m = pattern.block_shape
        raise MemoryBudgetError(
            f"sparse_mm: backward={strategy!r} would need {format_bytes(needed)} of "
            f"temporaries for A of {pattern.batch} x {n} x {m} with {pattern.nnz} stored "
            f"entries and p={p}, but only {format_bytes(available)} is available on "
            f"{pattern.device}; use backward='sddmm', whose working set stays bounded",
            needed_bytes=needed,
            budget_bytes=available,
        )


def sparsity_pattern(A: Tensor) -> SparsityPattern:
    """The pattern of ``A``, to build once and pass to every :func:`sparse_mm` with that ``A``.

    In a loop that multiplies matrices with the same stored positions (a fixed graph whose
    edge weights are learned, say), each call would otherwise rebuild the pattern, and each
    backward would rebuild the transpose that ``∇B = Aᴴ G`` needs: a sort of the ``nnz``
    column indices, two gathers and a row-pointer conversion (the ``sddmm_kept`` rows of
    the committed CPU benchmark show what keeping it saves). A kept pattern computes its
    transpose on first use and reuses it. The price is memory, held for as long as you
    keep the pattern: after the first backward, an int64 permutation and two int32 index
    vectors of length ``nnz`` (int64 beyond 2³¹), ``m + 1`` row pointers and, for CSR, the
    expanded row of each entry in ``A``'s index dtype -- 16 to 24 bytes per stored entry.

    Parameters
    ----------
    A : Tensor
        Sparse COO or CSR, ``(n, m)`` or ``(b, n, m)``. Only its indices matter; the
        values may change from call to call.

    Returns
    -------
    SparsityPattern
        Pass it as ``sparse_mm(A, B, pattern=...)``. Each call checks that ``A`` has exactly
        the indices the pattern was built from (one comparison pass) and refuses otherwise.

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
    pattern, _values = pattern_and_values(A.detach())
    return pattern


def _check_kept_pattern(pattern: object, A: Tensor) -> None:
    """Refuse a ``pattern=`` that is not a pattern of ``A`` (coalesced already, if COO)."""
    if not isinstance(pattern, SparsityPattern):
        raise InputTypeError(
            "sparse_mm: pattern must be a SparsityPattern from sparsity_pattern(A) or None, "
            f"got an object of type {type(pattern).__name__}"
        )
    reason = pattern_mismatch(pattern, A)
    if reason is not None:
        raise InputValueError(
            f"sparse_mm: pattern does not belong to A: {reason}; build it from this A with "
            "sparsity_pattern(A), or pass pattern=None"
        )


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
        available memory (checked before anything is allocated).

    Examples
    --------
    >>> A = torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, 3.0]]).to_sparse().requires_grad_()
    >>> B = torch.arange(6.0).reshape(3, 2).requires_grad_()
    >>> C = sparse_mm(A, B)
    >>> C
    tensor([[ 4.,  6.],
            [12., 16.]], grad_fn=<SparseMatMulBackward>)
    >>> C.sum().backward()
    >>> A.grad.layout, A.grad.coalesce().values()    # (G Bᵀ) at A's three entries
    (torch.sparse_coo, tensor([5., 1., 9.]))
    >>> B.grad
    tensor([[1., 1.],
            [2., 2.],
            [3., 3.]])
    """
    check_sparse_mm_inputs(A, B, backward)
    if pattern is not None:
        if A.layout == torch.sparse_coo:
            A = A.coalesce()  # what pattern_and_values does anyway: a no-op the second time
        _check_kept_pattern(pattern, A)
    pattern, values = pattern_and_values(A, pattern)
    p = B.shape[-1]
    _refuse_if_output_cannot_fit(pattern, p, B.dtype)
    if values.requires_grad and torch.is_grad_enabled():
        _refuse_if_backward_cannot_fit(pattern, p, B.dtype, backward)
    if A.dim() == 2:
        return SparseMatMul.apply(values, B, pattern, backward)
    b, n, _m = A.shape
    C = SparseMatMul.apply(values, B.reshape(-1, p), pattern, backward)
    return C.view(b, n, p)
