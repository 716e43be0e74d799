"""Which kernels a call of ``sparse_mm`` takes, by size: each route decided here, once.

The same product can run on different kernels, and which is cheaper depends on the size of
the graph. The forward is torch's COO product or its CSR product (:func:`coo_product`); a
first-order backward computes ``∇B = Aᴴ G`` by a scatter or through the transposed pattern,
and on a small graph shares one gather with ``∇A`` (:func:`first_order_route`). The
operation (:mod:`sparsegrad_lab.autograd`) and the memory model
(:mod:`sparsegrad_lab.footprint`) both decide with these functions, so the model describes
the route the operation takes. The bounds are measured, not derived:
``benchmarks/route_thresholds.py`` times both sides of each on the machine it runs on.

>>> first_order_route("sddmm", nnz=500, p=8, elem=4, kept=False)
'shared gather'
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from .pattern import SparsityPattern

__all__ = [
    "COO_PRODUCT_MAX_NNZ",
    "SCATTER_MAX_BYTES",
    "SHARED_GATHER_MAX_NNZ",
    "BackwardRoute",
    "backward_route",
    "coo_product",
    "coo_product_for",
    "first_order_route",
]

#: Up to this many stored entries, the forward of a 2-D CPU COO ``A`` (no kept pattern) is
#: torch's own COO product, which checks the range of every index as it reads it: the index
#: check then has only the order of a coalesced ``A`` left to do, and the pattern's row
#: pointers are never built (the first-order backward of such a graph does not need them).
#: Per entry that kernel is slower than the CSR one, so above this bound the CSR product
#: with the full check is faster; up to it, the whole step is as fast or faster with the COO
#: product (``benchmarks/route_thresholds.py``, part "coo product").
COO_PRODUCT_MAX_NNZ = 1024

#: Up to this many bytes of gathered rows (``nnz x p`` values), a first-order backward
#: computes ``∇B = Aᴴ G`` by a scatter, without sorting the pattern into its transpose: on a
#: small graph the sort would cost more than the product itself. The same bound keeps the
#: scatter's working set (one or two ``nnz x p`` blocks) bounded.
SCATTER_MAX_BYTES = 4 * 2**20

#: Up to this many stored entries, a first-order ``"sddmm"`` backward computes both
#: gradients from one gather of ``G``'s rows instead of torch's sampled kernel and a second
#: gather: the kernel's fixed cost per call is most of its time on such a graph, and the
#: gather's row sums cost more than it beyond (``benchmarks/route_thresholds.py``, part
#: "shared gather").
SHARED_GATHER_MAX_NNZ = 1024

#: How a backward computes ``∇B`` (see :func:`first_order_route`).
BackwardRoute = Literal["shared gather", "scatter", "transpose"]


def coo_product(*, layout: str, batched: bool, device: str, nnz: int, kept: bool) -> bool:
    """Whether :func:`~sparsegrad_lab.sparse_mm`'s forward is torch's CPU COO product.

    ``layout`` is ``"coo"`` or ``"csr"``, ``device`` a device type. True for a coalesced
    2-D COO ``A`` on the CPU, of at most :data:`COO_PRODUCT_MAX_NNZ` stored entries, without
    a kept pattern (an uncoalesced ``A`` is checked in full before it is coalesced, and
    then takes the CSR product: :func:`coo_product_for`).

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


def first_order_route(
    strategy: str, *, nnz: int, p: int, elem: int, kept: bool, both: bool = True
) -> BackwardRoute:
    """How a first-order backward (no ``create_graph``) of ``sparse_mm`` computes ``∇B``.

    ``"transpose"``: through the transposed pattern, for a kept pattern (which sorts once
    for all its calls) or when the ``nnz x p`` gathered rows of ``elem`` bytes each exceed
    :data:`SCATTER_MAX_BYTES`; otherwise ``"scatter"`` (one gather of ``G``'s rows and an
    ``index_add_``), which with ``"sddmm"``, both gradients wanted (``both``) and at most
    :data:`SHARED_GATHER_MAX_NNZ` entries also gives ``∇A`` (``"shared gather"``).

    >>> first_order_route("gather", nnz=500, p=8, elem=4, kept=False)
    'scatter'
    >>> first_order_route("sddmm", nnz=500, p=8, elem=4, kept=True)
    'transpose'
    """
    if kept or nnz * p * elem > SCATTER_MAX_BYTES:
        return "transpose"
    if both and strategy == "sddmm" and nnz <= SHARED_GATHER_MAX_NNZ:
        return "shared gather"
    return "scatter"


def backward_route(pattern: SparsityPattern, X: Tensor, strategy: str, both: bool) -> BackwardRoute:
    """The route of a backward now running with upstream ``X``, for ``pattern``.

    :func:`first_order_route`, or ``"transpose"`` when the result will be differentiated
    again (``create_graph``: inside a backward, grad mode is on exactly then), since only
    the transposed product is an autograd function of its own.

    >>> from sparsegrad_lab.pattern import pattern_of
    >>> with torch.no_grad():
    ...     backward_route(pattern_of(torch.eye(2).to_sparse()), torch.ones(2, 3), "sddmm", True)
    'shared gather'
    """
    if torch.is_grad_enabled():
        return "transpose"
    return first_order_route(
        strategy,
        nnz=pattern.nnz,
        p=X.shape[-1],
        elem=X.element_size(),
        kept=pattern.source is not None,
        both=both,
    )
