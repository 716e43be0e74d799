"""The public operations: ``sparse_mm``, ``sampled_mm`` and ``sparsity_pattern``.

Each checks its arguments (:mod:`sparsegrad_lab.operand_checks`, then the indices:
:mod:`sparsegrad_lab.index_checks`, or their match with a kept pattern), asks the memory
guard whether the whole call fits (:mod:`sparsegrad_lab.memory_guard`) before it
allocates, builds the pattern and applies the autograd Functions of
:mod:`sparsegrad_lab.autograd`, where the forward and backward sit side by side.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import torch
from torch import Tensor

from .autograd import SampledProduct, SparseMatMul, SparseMatMulOfA, materialised
from .csr_from_values import CooFromValues, differentiable_csr
from .index_checks import check_indices
from .memory_guard import check_sampled_mm_fits, check_sparse_mm_fits
from .operand_checks import check_sampled_mm_inputs, check_sparse_matrix, check_sparse_mm_inputs
from .pattern import (
    SparsityPattern,
    check_kept_pattern,
    coalesced,
    contiguous_indices,
    has_contiguous_indices,
    kept_pattern,
    pattern_of,
    values_of,
)
from .pattern_op import pattern_mm_2d
from .routes import coo_product_for
from .strategies import BackwardStrategy

__all__ = ["sampled_mm", "sparse_mm", "sparsity_pattern"]

P = ParamSpec("P")
R = TypeVar("R")


def _eager_only(fn: Callable[P, R]) -> Callable[P, R]:
    """Run ``fn`` eagerly inside ``torch.compile``: a graph break, not a crash.

    Dynamo cannot take a sparse tensor as an input of a graph (torch 2.13: "Attempted to
    wrap sparse Tensor") nor build one (``torch.sparse_coo_tensor`` is a function it skips),
    and its "fake" tensors have no sparse CSR support. A function that takes a sparse ``A``
    therefore cannot be traced whole, whatever it does inside. The dense work around the
    call is still compiled; the sparse product runs as it does without compile. A step
    over a kept pattern traces whole as ``pattern_mm(values, B, kept)``
    (:func:`sparsegrad_lab.pattern_op.pattern_mm`), whose values are a dense tensor.
    """
    wrapped: Callable[P, R] = torch.compiler.disable(fn, recursive=True)
    return functools.wraps(fn)(wrapped)


def sparsity_pattern(A: Tensor) -> SparsityPattern:
    """The pattern of ``A``, to build once and pass to every :func:`sparse_mm` with that ``A``.

    In a loop that multiplies matrices with the same stored positions (a fixed graph whose
    edge weights are learned, say), each call would otherwise check ``A``'s indices and
    rebuild the pattern, and each backward would rebuild the transpose that ``∇B = Aᴴ G``
    needs: a sort of the ``nnz`` column indices, two gathers and a row-pointer conversion
    (the ``sddmm_kept`` rows of the committed CPU benchmark show what keeping it saves). A
    kept pattern checks ``A``'s indices once, here, owns a copy of them, computes its
    transpose on first use and reuses it. The price is memory, held for as long as you
    keep the pattern: the copy of the indices and, after the first call that needs a
    gradient, an int64 permutation and three int32 index vectors of length ``nnz`` (the
    transpose's rows and columns and the inverse permutation; int64 beyond 2³¹), ``m + 1``
    row pointers and, for CSR, the expanded row of each entry in ``A``'s index dtype -- 28
    to 48 bytes per stored entry in all.

    With the default ``backward="sddmm"``, a call with a kept pattern multiplies through the
    registered operator ``sparsegrad_lab::pattern_mm`` on the pattern's own tensors
    (:attr:`SparsityPattern.operator_indices`): the product and derivative that
    ``pattern_mm(values, B, pattern)`` and :class:`~sparsegrad_lab.SparseLinear` run. That
    form takes the values as a dense tensor, with no sparse ``A`` and no check per call, and
    so traces whole under ``torch.compile(fullgraph=True)`` and ``torch.export``
    (``sparse_mm`` itself cannot: it takes a sparse tensor, see ``_eager_only``).

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
        check_kept_pattern(kept, A, where)
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

    where :math:`G` = ``C.grad`` (:math:`2\\, \\partial L / \\partial \\bar C`, torch's convention)
    and :math:`P_A` keeps only the positions ``A`` stores. ``A.grad`` has ``A``'s layout and
    exactly its coalesced pattern; a batch is treated as one block-diagonal matrix, with no
    Python loop over items.

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
        :func:`sparsity_pattern`). Checked against ``A`` on every call. With
        ``backward="sddmm"``, a call that needs a gradient runs the registered operator of
        :mod:`sparsegrad_lab.pattern_op` on it (the same numbers).

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
    # The forward's route, decided once: the COO product checks the index ranges itself.
    by_coo = coo_product_for(A, kept=pattern is not None)
    A, kept = _pattern_for(A, pattern, "sparse_mm", ranges=not by_coo)
    check_sparse_mm_fits(A, B, backward, kept=kept, by_coo=by_coo)
    b, n, m = A.shape if A.dim() == 3 else (1, *A.shape)
    p = B.shape[-1]
    pattern = kept if kept is not None else pattern_of(A)
    # A 2-D B is used as it is: even a no-op reshape of a B that requires grad adds an
    # autograd node to every forward and backward.
    B2 = B if A.dim() == 2 else B.reshape(b * m, p)
    if kept is not None and backward == "sddmm" and _needs_grad(A, B):
        # A training loop's path: the registered op of pattern_op on the kept pattern's own
        # tensors (its transpose sorted once, on the first call), the same op and derivative
        # that pattern_mm(values, B, kept) and SparseLinear run, compiled or not.
        C = pattern_mm_2d(values_of(A), B2, *kept.operator_indices)
    elif A.layout == torch.sparse_csr and (A.dim() == 3 or not has_contiguous_indices(A)):
        # One autograd node reading A: a double backward through SparseMatMulOfA reads A
        # twice, and torch 2.13 corrupts the sum of two batched CSR gradients. A 2-D A
        # with strided index views is multiplied through the pattern's contiguous copies
        # too: torch's CSR product reads a strided int32 col as if it were contiguous.
        C = SparseMatMul.apply(values_of(A), B2, pattern, backward)
    elif by_coo:
        C = _coo_product(A, B2, pattern, backward)
    else:
        C = SparseMatMulOfA.apply(A, B2, pattern, backward, False)
    return C if A.dim() == 2 else C.view(b, n, p)


def _needs_grad(A: Tensor, B: Tensor) -> bool:
    """Whether the product will be differentiated (a forward alone needs no transpose)."""
    return torch.is_grad_enabled() and (A.requires_grad or B.requires_grad)


def _coo_product(
    A: Tensor, B: Tensor, pattern: SparsityPattern, backward: BackwardStrategy
) -> Tensor:
    """:class:`SparseMatMulOfA` on torch's COO product, whose kernel checks the index ranges.

    The order of a coalesced ``A`` was checked before; a range the kernel refuses (with a
    ``RuntimeError``) is named by the ranges' check, run then and only then.
    """
    try:
        C: Tensor = SparseMatMulOfA.apply(A, B, pattern, backward, True)
        return C
    except RuntimeError as error:
        refused = error
    # Outside the handler, so that the message naming the index is all one sees.
    check_indices(A, "sparse_mm", order=False)
    raise refused


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
    check_sampled_mm_fits(A, X, Y, backward, kept=kept is not None)
    b, n, m = A.shape if A.dim() == 3 else (1, *A.shape)
    d = X.shape[-1]
    A = contiguous_indices(A)  # shared by the pattern and the result
    pattern = kept if kept is not None else pattern_of(A)
    # SampledProduct gives G Bᴴ at the pattern; with B = Yᴴ that is X Y.
    values = SampledProduct.apply(
        materialised(X).reshape(b * n, d), materialised(Y.mH).reshape(b * m, d), pattern, backward
    )
    if A.layout == torch.sparse_coo:
        out: Tensor = CooFromValues.apply(A.indices(), values, tuple(A.shape))
        return out
    crow, col = A.crow_indices(), A.col_indices()
    # values() of the result is differentiable twice (torch's own CSR values() is not).
    return differentiable_csr(crow, col, values.reshape(col.shape), tuple(A.shape))
