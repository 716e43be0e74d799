r"""The analytic byte model: what a sparse matrix stores, and the peak of one training step.

:func:`storage_bytes` counts the bytes of ``A``'s COO, CSR and dense forms.
:func:`predict_peak_bytes` predicts the peak *extra* memory of ``C = f(A, B)`` followed by
``C.backward(G)`` for an implementation ``f`` of :mod:`sparsegrad_lab.implementations`:
extra meaning above what exists before the call. ``A``, ``B`` and the upstream gradient
``G`` are inputs and are not counted; ``C``, ``A.grad``, ``B.grad`` and every temporary are.

Each implementation's model is a list of *stages*, the points of its call where a peak can
occur, in the order the code allocates; a stage is a :class:`MemoryBreakdown` naming every
tensor alive there. The prediction is the largest stage; :func:`memory_breakdown` returns
it with its terms. The stages of ``sparse_mm`` are written below next to the maths of each,
in :func:`sparse_mm_stages`; those of torch and torchsparsegradutils are in
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

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from .errors import InputTypeError, InputValueError
from .ops import coo_product, first_order_route
from .sddmm import sampled_product_workspace_bytes

if TYPE_CHECKING:
    from .implementations import Case

__all__ = [
    "PHASES",
    "MemoryBreakdown",
    "Phase",
    "memory_breakdown",
    "output_bytes",
    "predict_peak_bytes",
    "sparse_mm_stages",
    "storage_bytes",
]

Phase = Literal["fwd", "bwd", "fwd+bwd"]
PHASES: tuple[Phase, ...] = ("fwd", "bwd", "fwd+bwd")

# Stages whose names say they belong to the forward; every other stage is backward.
_FORWARD_STAGES = ("forward spmm", "block-diagonal assembly")


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
    return {
        "coo": nnz * (A.dim() * t + s),
        "csr": b * (n + 1) * t + nnz * (t + s),
        "dense": b * n * m * s,
    }


# -------------------------------------------------------------------------- the stages


@dataclass(frozen=True)
class MemoryBreakdown:
    """The stage at which the predicted peak occurs and the live terms that make it.

    Attributes
    ----------
    stage : str
        Name of the step inside the call where the peak happens.
    terms : dict of str to int
        Bytes of every tensor alive at that step, by name.
    baseline : dict of str to int
        Terms that already exist when the phase starts (for ``phase="bwd"``: what the
        forward left behind) and are therefore subtracted.
    """

    stage: str
    terms: dict[str, int]
    baseline: dict[str, int] = field(default_factory=dict)

    @property
    def peak_bytes(self) -> int:
        """Sum of the live terms minus the baseline."""
        return sum(self.terms.values()) - sum(self.baseline.values())


#: A model: the stages of one call in order, and what the forward leaves alive for backward.
Stages = tuple[list[MemoryBreakdown], dict[str, int]]


@dataclass(frozen=True)
class Dims:
    """The sizes a model reads off a :class:`~sparsegrad_lab.implementations.Case`."""

    b: int
    n: int
    m: int
    nnz: int  # per batch item
    p: int
    elem: int  # bytes per value: e
    idx: int  # bytes per index of A: i (COO: always 8)
    is_complex: bool
    layout: str
    cpu: bool
    dtype: torch.dtype

    @classmethod
    def of(cls, case: Case) -> Dims:
        dtype = getattr(torch, case.dtype)
        idx = 8 if case.layout == "coo" else getattr(torch, case.index_dtype).itemsize
        return cls(
            b=case.batch,
            n=case.n,
            m=case.m,
            nnz=case.nnz,
            p=case.p,
            elem=dtype.itemsize,
            idx=idx,
            is_complex=dtype.is_complex,
            layout=case.layout,
            cpu=torch.device(case.device).type == "cpu",
            dtype=dtype,
        )

    @property
    def N(self) -> int:  # rows of the block-diagonal matrix
        return self.b * self.n

    @property
    def M(self) -> int:
        return self.b * self.m

    @property
    def Z(self) -> int:  # stored entries in total
        return self.b * self.nnz


def cpu_only(d: Dims, name: str, nbytes: int) -> dict[str, int]:
    """``{name: nbytes}`` on CPU, nothing on CUDA (a CPU kernel's own temporary)."""
    return {name: nbytes} if d.cpu else {}


def spmm_temporaries(d: Dims, rows: int, index_bytes: int) -> dict[str, int]:
    """What torch's CPU CSR sparse @ dense allocates besides its result.

    The CPU kernels compute into a temporary of the result's size, :math:`r p e`, and copy
    it over (two results alive at once); MKL takes int32 indices only, so int64 CSR indices
    are copied to int32 for the call, :math:`4 (r + 1) + 4 Z`. On CUDA cuSPARSE writes the
    result in place (its small workspace is not modelled).
    """
    terms = cpu_only(d, "spmm result temporary", rows * d.p * d.elem)
    if d.cpu and index_bytes == 8:
        terms["int32 copy of the indices for MKL"] = (rows + 1) * 4 + d.Z * 4
    return terms


def sparse_mm_stages(d: Dims, strategy: str, *, kept: bool = False) -> Stages:
    r"""The stages of :func:`sparsegrad_lab.sparse_mm` with ``backward=strategy``.

    ``kept=True`` is a call with ``pattern=`` a kept pattern whose transpose an earlier
    call built (``"sddmm_kept"``): the pattern, its expanded rows and its transpose are
    held by the caller, so none of them is extra here, and there is no sort.

    1. **forward spmm**: the pattern, kept by the graph while ``C`` lives -- COO
       :math:`8 (N+1)` row pointers (plus :math:`16 Z` block-diagonal indices for a batch);
       a 2-D CSR input's pattern is ``A``'s own indices (a batch: :math:`(N+1) i + Z i`) --
       then ``C`` (:math:`N p e`) and the CPU spmm temporaries. A small 2-D COO graph on
       the CPU (:func:`~sparsegrad_lab.ops.coo_product`) is multiplied by torch's COO
       kernel instead: ``C`` and its zero template (:math:`N p e`), no row pointers.
    2. **sampled product**: the gradient's values :math:`Z e` plus the strategy's
       workspace, :func:`~sparsegrad_lab.sddmm.sampled_product_workspace_bytes` (0 for
       ``"sddmm"``, :math:`3 Z p e` for ``"gather"``, :math:`b n m e + 8 Z` for
       ``"dense"``); a CSR pattern's expanded rows (:math:`Z i`) appear here for
       ``"gather"`` and ``"dense"``, at the transpose for ``"sddmm"``.
    3. **transpose: sort** and **transpose built** (for ``B.grad``), in int32 indices when
       they fit: a stable sort of the column keys (a :math:`4 Z` key copy unless they are
       int32 already, then :math:`20 Z` inside the sort), leaving ``perm`` :math:`8 Z`, rows
       and columns :math:`8 Z` and row pointers :math:`4 (M+1)`, cached while ``C`` lives.
    4. **grad B spmm**, ``B.grad = Aᴴ G``: the permuted values :math:`Z e` (twice for
       complex: the conjugate is materialised), ``B.grad`` (:math:`M p e`) and the spmm's
       temporaries.
    5. **A.grad accumulated**: autograd stores a clone of a sparse gradient whose indices
       are shared (:func:`_grad_clone`).

    A small graph -- :math:`Z p e` at most :data:`~sparsegrad_lab.sddmm.CHUNK_BYTES`, no
    kept pattern, as :func:`~sparsegrad_lab.ops.first_order_route` decides for the
    operation itself -- skips stages 3 and 4: **grad B scatter** computes ``Aᴴ G`` as one
    gather of ``G``'s rows (:math:`Z p e`), scaled by the (conjugated, :math:`Z e` for
    complex) values and added into ``B.grad`` (:math:`M p e`), beside a CSR pattern's
    expanded rows. With ``"sddmm"`` and at most
    :data:`~sparsegrad_lab.ops.SHARED_GATHER_MAX_NNZ` entries that gather is shared with
    the sampled product, which then holds the gathered rows of ``G`` and ``B``
    (:math:`2 Z p e`) instead of torch's kernel, and a CSR pattern's expanded rows from
    stage 2 on.
    """
    N, M, Z, p, e, i = d.N, d.M, d.Z, d.p, d.elem, d.idx
    by_coo = coo_product(
        layout=d.layout, batched=d.b > 1, device="cpu" if d.cpu else "cuda", nnz=Z, kept=kept
    )
    if by_coo:
        pattern = {}
        pat_i = 8
    elif d.layout == "coo":
        pattern = {"pattern row pointers": (N + 1) * 8}
        if d.b > 1:  # rows and columns shifted to the block diagonal
            pattern["pattern rows/cols (block diagonal)"] = 2 * Z * 8
        pat_i = 8
    else:
        pattern = {}
        if d.b > 1:
            pattern["pattern row pointers + cols (block diagonal)"] = (N + 1) * i + Z * i
        pat_i = i
    if kept:
        pattern = {}
    C = {"C": N * p * e}
    if by_coo:
        product = {"COO product's zero template": N * p * e}
    else:
        product = spmm_temporaries(d, N, pat_i)
    fwd_stage = MemoryBreakdown("forward spmm", {**pattern, **C, **product})
    alive = {**pattern, **C}

    s = {"grad values (before A.grad)": Z * e}
    rows = {"pattern expanded rows": Z * pat_i} if d.layout == "csr" and not kept else {}
    route = first_order_route(strategy, nnz=Z, p=p, elem=e, kept=kept)
    shared = route == "shared gather"
    if by_coo and strategy == "sddmm" and not shared:  # torch's sampled kernel takes CSR
        alive = {**alive, "pattern row pointers (for the sampled kernel)": (N + 1) * 8}
    if shared:
        workspace = {"gathered rows of G and B (2 x nnz x p)": 2 * Z * p * e}
    else:
        workspace = {
            "sampled-product workspace": sampled_product_workspace_bytes(
                strategy,  # type: ignore[arg-type]
                batch=d.b,
                block_shape=(d.n, d.m),
                nnz=Z,
                p=p,
                dtype=d.dtype,
            )
        }
    early_rows = rows if strategy != "sddmm" or shared else {}
    sampled = MemoryBreakdown(
        f"sampled product (backward={strategy!r})", {**alive, **early_rows, **s, **workspace}
    )
    if route != "transpose":
        grad_B = {"grad B": M * p * e}
        conj = {"conjugated values": Z * e} if d.is_complex else {}
        scatter = MemoryBreakdown(
            "grad B scatter",
            {**alive, **s, **rows, **conj, "scattered terms (nnz x p)": Z * p * e, **grad_B},
        )
        accumulate = MemoryBreakdown(
            "A.grad accumulated", {**alive, **s, **rows, **grad_B, **_grad_clone(d)}
        )
        return [fwd_stage, sampled, scatter, accumulate], alive
    fits = max(M, N, Z) < 2**31
    t_i = 4 if fits else 8
    keys = {"sort keys": Z * t_i} if pat_i != t_i else {}
    sort = MemoryBreakdown(
        "transpose: sort",
        {**alive, **s, **rows, **keys, "sort temporaries": Z * (t_i + 8 + 8)},
    )
    transpose = {
        **rows,
        "transpose perm (int64)": Z * 8,
        "transpose rows + cols": 2 * Z * t_i,
        "transpose row pointers": (M + 1) * t_i,
    }
    if kept:
        transpose = {}
    gathered = {"rows gathered by perm": Z * pat_i} if pat_i != t_i else {}
    built = MemoryBreakdown("transpose built", {**alive, **s, **transpose, **gathered})
    adjoint = {"values of Aᴴ": Z * e * (2 if d.is_complex else 1)}
    grad_B = {"grad B": M * p * e}
    spmm_B = MemoryBreakdown(
        "grad B spmm",
        {**alive, **s, **transpose, **adjoint, **grad_B, **spmm_temporaries(d, M, t_i)},
    )
    accumulate = MemoryBreakdown(
        "A.grad accumulated", {**alive, **s, **transpose, **grad_B, **_grad_clone(d)}
    )
    if kept:
        return [fwd_stage, sampled, spmm_B, accumulate], alive
    return [fwd_stage, sampled, sort, built, spmm_B, accumulate], alive


def _grad_clone(d: Dims) -> dict[str, int]:
    """AccumulateGrad stores a *clone* of a sparse gradient whose indices are still shared
    (2-D COO: the pattern holds views of ``A``'s indices; CSR: always): values :math:`Z e`
    plus a copy of ``A``'s index tensors. A batched COO gradient is stored as it is."""
    if d.layout == "coo":
        if d.b > 1:
            return {}
        indices = 2 * d.Z * 8
    else:
        indices = d.b * (d.n + 1) * d.idx + d.Z * d.idx
    return {"A.grad values": d.Z * d.elem, "A.grad indices": indices}


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
    # The registry names each implementation's model, and its models are built from the
    # stage functions here: imported at call time, as the registry imports this module.
    from .implementations import as_case, get_implementation

    implementation = get_implementation(impl)
    if phase not in PHASES:
        raise InputValueError(f"phase must be one of {PHASES}, got {phase!r}")
    case = as_case(case, sizes, "predict_peak_bytes")
    reason = implementation.unsupported_reason(case)
    if reason is not None:
        raise InputValueError(f"predict_peak_bytes: {reason}")
    stages, alive = implementation.model(Dims.of(case))
    n_fwd = sum(1 for s in stages if s.stage in _FORWARD_STAGES)
    if phase == "fwd":
        return max(stages[:n_fwd], key=lambda s: s.peak_bytes)
    chosen = stages if phase == "fwd+bwd" else stages[n_fwd:]
    peak = max(chosen, key=lambda s: s.peak_bytes)
    if phase == "bwd":
        return MemoryBreakdown(peak.stage, peak.terms, alive)
    return peak


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
    from .implementations import as_case

    case = as_case(case, sizes, "output_bytes")
    d = Dims.of(case)
    return d.b * (d.n * d.p + d.nnz + d.m * d.p) * d.elem


#: What :class:`~sparsegrad_lab.implementations.Implementation` holds as its model.
Model = Callable[[Dims], Stages]
