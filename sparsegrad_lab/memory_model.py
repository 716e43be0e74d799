r"""The analytic byte model: what a sparse matrix stores, and the peak of one training step.

:func:`storage_bytes` counts the bytes of ``A``'s COO, CSR and dense forms.
:func:`predict_peak_bytes` predicts the peak *extra* memory of ``C = f(A, B)`` followed by
``C.backward(G)`` for an implementation ``f`` of :mod:`sparsegrad_lab.implementations`:
extra meaning above what exists before the call. ``A``, ``B`` and the upstream gradient
``G`` are inputs and are not counted; ``C``, ``A.grad``, ``B.grad`` and every temporary are.

Each implementation's model is a list of *stages*, the points of its call where a peak can
occur, in the order the code allocates; a stage is a
:class:`~sparsegrad_lab.footprint.MemoryBreakdown` naming every tensor alive there. The
prediction is the largest stage; :func:`memory_breakdown` returns it with its terms. The
stages of ``sparse_mm`` are :func:`~sparsegrad_lab.footprint.sparse_mm_stages`, the same
function its memory guard predicts a call with, so for one case the guard and this model
give one number; those of torch and torchsparsegradutils are in
:mod:`sparsegrad_lab.third_party`. Notation: ``N = b n`` and ``M = b m`` rows of the
block-diagonal ``A`` and ``B``, ``Z = b nnz`` stored entries, ``e`` bytes per value, ``i``
bytes per index of ``A`` (COO: 8).

The prediction agrees with :func:`~sparsegrad_lab.measurement.measure_peak_bytes` on CPU
within 10 % for float32 and float64 at sizes whose peak is above a few MiB
(``tests/test_memory_model.py``). Complex dtypes for the torch implementations and CUDA,
whose kernels allocate differently (cuSPARSE and CUB workspaces, no CPU copies), are not
covered by that tolerance: there the prediction is a guide.

>>> predict_peak_bytes("gather", n=1000, m=1000, nnz=10_000, p=16) > predict_peak_bytes(
...     "sddmm", n=1000, m=1000, nnz=10_000, p=16)
True
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .errors import InputTypeError, InputValueError
from .footprint import PHASES, MemoryBreakdown, peak_of, sparse_storage_bytes
from .implementations import Case, as_case, get_implementation

__all__ = [
    "memory_breakdown",
    "output_bytes",
    "predict_peak_bytes",
    "storage_bytes",
]


# ------------------------------------------------------------------------- storage of A


def storage_bytes(A: Tensor, *, index_dtype: torch.dtype = torch.int64) -> dict[str, int]:
    r"""Bytes ``A``'s entries take as COO, as CSR and as a dense array.

    For ``A`` of shape ``(n, m)`` (or ``(b, n, m)``) with nnz stored entries, ``s`` bytes per
    value and ``t`` per index (8 for torch's int64),

    .. math::

        \text{COO} = \mathrm{nnz}\,(d\,t + s), \quad
        \text{CSR} = b (n + 1)\, t + \mathrm{nnz}\,(t + s), \quad
        \text{dense} = b\, n\, m\, s,

    with ``d`` = 2 (or 3 for a batch: one index per dimension). A dense input counts its
    nonzeros; an uncoalesced COO input counts distinct positions.

    Returns
    -------
    dict
        ``{"coo": ..., "csr": ..., "dense": ...}`` in bytes.

    Examples
    --------
    >>> storage_bytes(torch.eye(1000).to_sparse())
    {'coo': 20000, 'csr': 20008, 'dense': 4000000}
    """
    if not isinstance(A, Tensor):
        raise InputTypeError(f"storage_bytes: A must be a torch.Tensor, got {type(A).__name__}")
    if A.dim() not in (2, 3):
        raise InputValueError(
            f"storage_bytes: A must be 2-D (n, m) or 3-D (b, n, m), got shape {tuple(A.shape)}"
        )
    if A.layout == torch.sparse_coo:
        nnz = A._nnz() if A.is_coalesced() else A.coalesce()._nnz()
    elif A.layout == torch.sparse_csr:
        nnz = A._nnz() * (A.shape[0] if A.dim() == 3 else 1)  # torch's _nnz is per item
    elif A.layout == torch.strided:
        nnz = int(A.count_nonzero())
    else:
        raise InputTypeError(
            f"storage_bytes: A must be strided, sparse COO or sparse CSR, got {A.layout}"
        )
    if not isinstance(index_dtype, torch.dtype) or index_dtype not in (torch.int32, torch.int64):
        raise InputTypeError(
            f"storage_bytes: index_dtype must be torch.int32 or torch.int64, got {index_dtype!r}"
        )
    t, s = index_dtype.itemsize, A.element_size()
    b, n, m = A.shape if A.dim() == 3 else (1, *A.shape)
    sizes = {"rows": n, "nnz": nnz, "value_bytes": s, "index_bytes": t, "batch": b}
    return {
        "coo": sparse_storage_bytes("coo", **sizes, sparse_dims=A.dim()),
        "csr": sparse_storage_bytes("csr", **sizes),
        "dense": b * n * m * s,
    }


# ------------------------------------------------------------------------ the prediction


def memory_breakdown(
    impl: str, case: Case | None = None, *, phase: str = "fwd+bwd", **sizes: Any
) -> MemoryBreakdown:
    """The stage at which ``impl``'s predicted peak occurs, with the tensors that make it.

    Same parameters as :func:`predict_peak_bytes`.

    >>> bd = memory_breakdown("gather", n=1000, m=1000, nnz=10_000, p=16)
    >>> bd.stage, bd.terms["sampled-product workspace"]
    ("sampled product (backward='gather')", 1920000)
    """
    implementation = get_implementation(impl)
    if phase not in PHASES:
        raise InputValueError(f"phase must be one of {PHASES}, got {phase!r}")
    case = as_case(case, sizes, "predict_peak_bytes")
    reason = implementation.unsupported_reason(case)
    if reason is not None:
        raise InputValueError(f"predict_peak_bytes: {reason}")
    return peak_of(implementation.model(case.dims()), phase)


def predict_peak_bytes(
    impl: str, case: Case | None = None, *, phase: str = "fwd+bwd", **sizes: Any
) -> int:
    """Predicted peak extra memory of ``C = impl(A, B)`` and ``C.backward(G)``, in bytes.

    Parameters
    ----------
    impl : str
        A name of :data:`~sparsegrad_lab.implementations.IMPLEMENTATIONS`.
    case : Case, optional
        The sizes, layout, dtype and device; or give them as keywords instead (``n``,
        ``m``, ``nnz``, ``p``, ``batch``, ``layout``, ``dtype``, ``index_dtype``,
        ``device``: see :class:`~sparsegrad_lab.implementations.Case`).
    phase : {"fwd", "bwd", "fwd+bwd"}, default "fwd+bwd"
        ``"bwd"`` counts from the end of the forward (``C`` and the saved pattern excluded).

    Returns
    -------
    int
        Bytes: the largest stage of the model (see the module docstring).

    Examples
    --------
    >>> mib = predict_peak_bytes("sddmm", n=100_000, m=100_000, nnz=1_000_000, p=64) / 2**20
    >>> round(mib)
    104
    >>> round(predict_peak_bytes("dense", n=100_000, m=100_000, nnz=1_000_000, p=64) / 2**30)
    37
    """
    return memory_breakdown(impl, case, phase=phase, **sizes).peak_bytes


def output_bytes(case: Case | None = None, **sizes: Any) -> int:
    """Bytes of the outputs themselves: ``C``, the values of ``A.grad`` and ``B.grad``.

    The floor of any implementation's extra memory (index copies excluded).

    >>> output_bytes(n=10, m=20, nnz=30, p=4)
    600
    """
    case = as_case(case, sizes, "output_bytes")
    d = case.dims()
    return (d.N * d.p + d.Z + d.M * d.p) * d.elem
