"""The sampled dense-dense product: the gradient of ``A`` at ``A``'s own positions.

For :math:`C = A B` with a real loss :math:`L` and upstream gradient :math:`G` = ``C.grad``,
which torch defines as :math:`\\partial L / \\partial \\operatorname{Re} C + i\\, \\partial L /
\\partial \\operatorname{Im} C = 2\\, \\partial L / \\partial \\bar C` (plain :math:`\\partial L /
\\partial C` for real tensors), the gradient torch stores for ``A``, in the same convention, is

.. math::

    2\\, \\frac{\\partial L}{\\partial \\bar A_{ij}} = \\sum_l G_{il} \\overline{B_{jl}}
    = (G B^{\\mathsf H})_{ij},

but ``A`` only *has* the entries :math:`(r_k, c_k)` it stores, so only

.. math::

    s_k = \\sum_{l=1}^{p} G_{r_k l} \\, \\overline{B_{c_k l}}, \\qquad k = 1, \\dots, \\mathrm{nnz}

is needed. The factor 2 is torch's, not a slip: for :math:`L = |z|^2 = z \\bar z`,
:math:`\\partial L / \\partial \\bar z = z`, and ``z.grad`` is twice that:

>>> z = torch.tensor(1 + 2j, requires_grad=True)
>>> (z.abs() ** 2).backward()
>>> z.grad
tensor(2.+4.j)

Three ways to get the same ``s`` -- the spine of the lessons:

``"dense"``
    form :math:`G B^{\\mathsf H}` (``n x m`` per batch item), then pick the stored entries.
    What ``torch.sparse.mm`` does for COO. :math:`O(n m)` memory.
``"gather"``
    gather row :math:`r_k` of ``G`` and row :math:`c_k` of ``B`` for every ``k``, multiply,
    sum. :math:`O(\\mathrm{nnz}\\, p)` temporaries.
``"sddmm"``
    a true sampled product: torch's ``sparse.sampled_addmm`` kernel where it supports the
    dtype (it loops over the stored entries), otherwise the gather done in chunks whose
    working set is bounded by :data:`CHUNK_BYTES` whatever ``nnz`` is. The default.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._torch_util import element_size
from .csr_from_values import plain_csr
from .pattern import SparsityPattern
from .strategies import BackwardStrategy

__all__ = [
    "CHUNK_BYTES",
    "copy_bytes",
    "sampled_product",
    "sampled_product_at",
    "sampled_product_workspace_bytes",
]

#: Bound on the temporaries of one chunk of the chunked sampled product, in bytes.
CHUNK_BYTES = 4 * 2**20

# dtypes torch's sampled_addmm kernel accepts (it refuses float16/bfloat16 on CPU).
_SAMPLED_ADDMM_DTYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128)


def sampled_product(
    pattern: SparsityPattern, G: Tensor, B: Tensor, strategy: BackwardStrategy = "sddmm"
) -> Tensor:
    """Values of :math:`G B^{\\mathsf H}` at the stored positions of ``pattern``.

    Parameters
    ----------
    pattern : SparsityPattern
        Positions :math:`(r_k, c_k)` of an ``(N, M)`` matrix.
    G : Tensor
        Dense ``(N, p)``.
    B : Tensor
        Dense ``(M, p)``.
    strategy : {"sddmm", "gather", "dense"}
        How to compute it; all three return the same numbers.

    Returns
    -------
    Tensor
        ``(nnz,)`` with :math:`s_k = \\sum_l G_{r_k l} \\overline{B_{c_k l}}`, in the dtype
        of ``G`` and ``B`` also under autocast. Not tracked by autograd:
        :class:`sparsegrad_lab.autograd.SampledProduct` is the differentiable form.

    A ``G`` or ``B`` that is not contiguous (an expanded view, say) is copied first
    (:func:`copy_bytes`): callers count that copy in their memory check.

    Examples
    --------
    >>> from sparsegrad_lab.pattern import pattern_and_values
    >>> A = torch.tensor([[0.0, 1.0], [1.0, 0.0]]).to_sparse()
    >>> pattern, _ = pattern_and_values(A)
    >>> G, B = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[5.0, 6.0], [7.0, 8.0]])
    >>> sampled_product(pattern, G, B)           # (G Bᵀ)[0, 1] and (G Bᵀ)[1, 0]
    tensor([23., 39.])
    """
    if pattern.nnz == 0:
        return G.new_zeros(0)
    if torch.is_autocast_enabled(G.device.type):
        # Autocast would run "dense"'s matmul in bfloat16/float16, and the backward then
        # multiplies those values with torch's CPU CSR kernel, which has no such dtype:
        # every strategy computes in the inputs' dtype, as sparse_mm's products do.
        with torch.autocast(G.device.type, enabled=False):
            return _sampled_product(pattern, G, B, strategy)
    return _sampled_product(pattern, G, B, strategy)


def _sampled_product(
    pattern: SparsityPattern, G: Tensor, B: Tensor, strategy: BackwardStrategy
) -> Tensor:
    G, B = G.contiguous(), B.contiguous()  # see copy_bytes
    if strategy == "dense":
        return _dense_then_mask(pattern, G, B)
    if strategy == "gather":
        return _gather_rows(pattern, G, B, 0, pattern.nnz)
    if G.dtype in _SAMPLED_ADDMM_DTYPES:
        B_h = B.mH if B.is_complex() else B.mT  # mT: one view call less for real B
        return _sampled_addmm(pattern.crow, pattern.col, pattern.shape, G, B_h)
    return _chunked_gather(pattern, G, B)


def sampled_product_at(
    crow: Tensor, col: Tensor, shape: tuple[int, int], G: Tensor, B: Tensor
) -> Tensor:
    """:func:`sampled_product` (``"sddmm"``) at the CSR positions ``(crow, col)``, trusted.

    For callers that hold a pattern's index tensors and multiply often (the registered
    operator of :mod:`sparsegrad_lab.pattern_op`): on the dtypes torch's sampled kernel
    takes, no pattern object is built per call. ``G`` and ``B`` must be contiguous and free
    of lazy conjugation; ``shape`` is ``(N, M)``.

    >>> crow, col = torch.tensor([0, 1, 2]), torch.tensor([1, 0])
    >>> G, B = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[5.0, 6.0], [7.0, 8.0]])
    >>> sampled_product_at(crow, col, (2, 2), G, B)     # (G Bᵀ)[0, 1] and (G Bᵀ)[1, 0]
    tensor([23., 39.])
    """
    if col.shape[0] == 0 or G.dtype not in _SAMPLED_ADDMM_DTYPES:
        return sampled_product(SparsityPattern(col, 1, shape, _crow=crow), G, B, "sddmm")
    # A physical conjugate: inside a compiled graph torch runs the operator with its
    # Conjugate key excluded, and would read a lazy conj() view unconjugated.
    B_h = B.conj_physical().mT if B.is_complex() else B.mT
    if torch.is_autocast_enabled(G.device.type):
        with torch.autocast(G.device.type, enabled=False):  # see sampled_product
            return _sampled_addmm(crow, col, shape, G, B_h)
    return _sampled_addmm(crow, col, shape, G, B_h)


def _sampled_addmm(
    crow: Tensor, col: Tensor, shape: tuple[int, int], G: Tensor, B_h: Tensor
) -> Tensor:
    """torch's sampled kernel at ``(crow, col)``: ``(G B_h)`` there, ``(nnz,)``, not tracked
    by autograd (``B_h`` is ``Bᴴ``: a transposed view, conjugated for complex ``B``)."""
    # Written in place into a plain tensor we own: returning ``.values()`` of a fresh CSR
    # result would hand autograd a view of a sparse tensor, which complex autograd cannot
    # re-view ("Sparse CSR tensors do not have strides").
    out = G.new_zeros(col.shape[0])
    target = plain_csr(crow, col, out, shape)
    if torch.is_grad_enabled():
        with torch.no_grad():  # out= takes no autograd; the callers differentiate this
            torch.sparse.sampled_addmm(target, G, B_h, beta=0.0, out=target)
    else:
        torch.sparse.sampled_addmm(target, G, B_h, beta=0.0, out=target)
    return out


def _dense_then_mask(pattern: SparsityPattern, G: Tensor, B: Tensor) -> Tensor:
    b, (n, m) = pattern.batch, pattern.block_shape
    dense = torch.matmul(G.view(b, n, -1), B.view(b, m, -1).mH)  # (b, n, m): the O(nm) step
    # Entry (t n + i, t m + j) sits at t n m + i m + j = row * m + col - t m of the flat
    # (b, n, m) product; built in place so a single int64 index per entry is alive.
    flat = pattern.row.to(torch.int64, copy=True).mul_(m).add_(pattern.col)
    if b > 1:
        flat.sub_(torch.div(pattern.row, n, rounding_mode="floor").mul_(m))
    return dense.view(-1).index_select(0, flat)


def _gather_rows(pattern: SparsityPattern, G: Tensor, B: Tensor, start: int, stop: int) -> Tensor:
    rows = G.index_select(0, pattern.row[start:stop])
    cols = B.index_select(0, pattern.col[start:stop])
    # Conjugated in place: multiplying by a lazy conj() view would copy it first.
    return (rows * cols.conj_physical_()).sum(-1)


def _chunked_gather(pattern: SparsityPattern, G: Tensor, B: Tensor) -> Tensor:
    # Three (chunk, p) temporaries live at once: two gathered blocks and their product.
    chunk = max(1, CHUNK_BYTES // (3 * max(1, G.shape[1]) * G.element_size()))
    out = G.new_empty(pattern.nnz)
    for start in range(0, pattern.nnz, chunk):
        stop = min(start + chunk, pattern.nnz)
        out[start:stop] = _gather_rows(pattern, G, B, start, stop)
    return out


def copy_bytes(X: Tensor) -> int:
    """Bytes of the copy a kernel makes of ``X`` before reading it: zero when it need not.

    torch's CSR kernels (the product, ``sampled_addmm``) and :func:`sampled_product` read a
    dense operand as contiguous memory without a lazy conjugation, so any other ``X`` -- an
    expanded view with stride 0, a transpose, a slice, a conjugate view -- is copied in full
    first: ``X.numel()`` elements, however little memory the view itself takes.

    >>> copy_bytes(torch.ones(4, 3)), copy_bytes(torch.ones(1, 3).expand(4, 3))
    (0, 48)
    """
    if X.is_contiguous() and not X.is_conj():
        return 0
    return X.numel() * X.element_size()


def sampled_product_workspace_bytes(
    strategy: BackwardStrategy,
    *,
    batch: int,
    block_shape: tuple[int, int],
    nnz: int,
    p: int,
    dtype: torch.dtype,
) -> int:
    """Predicted peak temporaries of :func:`sampled_product`, output excluded, in bytes.

    ``"dense"``: the ``b n m`` product plus an int64 flat index per entry (and the
    entries' batch items, for a batch);
    ``"gather"``: three ``nnz x p`` blocks (two gathered operands and their product);
    ``"sddmm"``: a zero template and a copy of the indices (sampled_addmm) or three
    chunk-sized blocks (chunked gather), whichever the dtype uses.

    >>> sampled_product_workspace_bytes(
    ...     "gather", batch=1, block_shape=(10, 10), nnz=100, p=8, dtype=torch.float32)
    9600
    """
    elem = element_size(dtype)
    n, m = block_shape
    if strategy == "dense":
        return batch * n * m * elem + nnz * 8 * (2 if batch > 1 else 1)
    if strategy == "gather":
        return 3 * nnz * p * elem
    if dtype in _SAMPLED_ADDMM_DTYPES:
        return 0  # torch's kernel writes straight into the output
    chunk = max(1, CHUNK_BYTES // (3 * max(1, p) * elem))
    return 3 * min(nnz, chunk) * p * elem
