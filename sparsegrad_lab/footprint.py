r"""What ``sparse_mm`` and ``sampled_mm`` allocate: each byte term once, and the stages of a call.

One home for every byte count of the operation. The memory guard
(:mod:`sparsegrad_lab.memory_guard`) predicts a call from its tensors with these functions
before anything is allocated; the lab's model (:mod:`sparsegrad_lab.memory_model`) predicts
the same call from a benchmark case with the same functions; the test-matrix generators and
the benchmark count a sparse matrix's storage with :func:`sparse_storage_bytes`. So for one
call the guard's prediction and the model's peak are one number
(``tests/test_footprint.py``).

A call is a list of *stages*, the points where a peak can occur, in the order the code
allocates; a stage is a :class:`MemoryBreakdown` naming every tensor alive there, and the
prediction is the largest stage (:func:`peak_of`). The stages of ``sparse_mm`` are in
:func:`sparse_mm_stages`, next to the maths of each. Notation: ``N = b n`` and ``M = b m``
rows of the block-diagonal ``A`` and of ``B``, ``Z = b nnz`` stored entries, ``e`` bytes per
value, ``i`` bytes per index of ``A`` (COO: 8). ``A``, ``B`` and the upstream gradient ``G``
are inputs and are not counted; ``C``, ``A.grad``, ``B.grad`` and every temporary are.

>>> A = torch.eye(1000).to_sparse_csr().requires_grad_()
>>> breakdown = sparse_mm_footprint(A, torch.ones(1000, 16), "sddmm")
>>> breakdown.stage, breakdown.peak_bytes
("sampled product (backward='sddmm')", 204000)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from .pattern import SparsityPattern, strided_index_bytes
from .routes import coo_product, coo_product_for, first_order_route
from .sddmm import copy_bytes, sampled_product_workspace_bytes
from .strategies import BackwardStrategy

__all__ = [
    "INDEX_BYTES",
    "PHASES",
    "Dims",
    "MemoryBreakdown",
    "Phase",
    "Stages",
    "cpu_only",
    "gathered_rows_bytes",
    "grad_B_bytes",
    "pattern_terms",
    "peak_of",
    "row_pointers_bytes",
    "sampled_mm_footprint",
    "sparse_mm_dims",
    "sparse_mm_footprint",
    "sparse_mm_stages",
    "sparse_storage_bytes",
    "spmm_temporaries",
    "transpose_bytes",
    "transpose_index_bytes",
    "transpose_terms",
]

#: Bytes per index of torch's default index dtype (int64): COO indices, row pointers.
INDEX_BYTES = 8

Phase = Literal["fwd", "bwd", "fwd+bwd"]
#: The parts of a call a prediction covers.
PHASES: tuple[Phase, ...] = ("fwd", "bwd", "fwd+bwd")

# Stages whose names say they belong to the forward; every other stage is backward.
_FORWARD_STAGES = ("forward spmm", "block-diagonal assembly")


# --------------------------------------------------------------- storage of a sparse matrix


def sparse_storage_bytes(
    layout: str,
    *,
    rows: int,
    nnz: int,
    value_bytes: int,
    index_bytes: int = INDEX_BYTES,
    batch: int = 1,
    sparse_dims: int = 2,
) -> int:
    r"""Bytes a sparse matrix stores: its indices and values.

    For ``batch`` items of ``rows`` rows with ``nnz`` stored entries in all, ``s`` bytes per
    value and ``t`` per index,

    .. math::

        \text{COO} = \mathrm{nnz}\,(d\,t + s), \qquad
        \text{CSR} = b\,(\mathrm{rows} + 1)\, t + \mathrm{nnz}\,(t + s),

    with ``d`` = ``sparse_dims`` index rows (2, or 3 for a batched COO tensor).

    >>> sparse_storage_bytes("coo", rows=3, nnz=5, value_bytes=4)
    100
    >>> sparse_storage_bytes("csr", rows=3, nnz=5, value_bytes=4)
    92
    """
    if layout == "coo":
        return nnz * (sparse_dims * index_bytes + value_bytes)
    return batch * (rows + 1) * index_bytes + nnz * (index_bytes + value_bytes)


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


class Dims(NamedTuple):
    """The sizes a model reads: of a benchmark case, or of a call's own tensors.

    ``Z`` counts the stored entries of every item; ``idx`` the bytes per index of ``A``
    (COO: always 8). ``batched`` is a 3-D ``A`` (a batch of one is still one).
    ``b_copy`` and ``strided_index`` are the contiguous copies a call makes of a strided
    ``B`` (:func:`~sparsegrad_lab.sddmm.copy_bytes`) and of ``A``'s strided index views
    (:func:`~sparsegrad_lab.pattern.strided_index_bytes`); a case has neither. A tuple:
    built and hashed in a fraction of a microsecond, on every call of ``sparse_mm``.
    """

    b: int
    n: int
    m: int
    Z: int
    p: int
    dtype: torch.dtype
    idx: int
    layout: str
    cpu: bool
    batched: bool = False
    b_copy: int = 0
    strided_index: int = 0

    @property
    def N(self) -> int:
        """Rows of the block-diagonal matrix: ``b n``."""
        return self.b * self.n

    @property
    def M(self) -> int:
        """Its columns, and the rows of ``B``: ``b m``."""
        return self.b * self.m

    @property
    def elem(self) -> int:
        """Bytes per value: ``e``."""
        return self.dtype.itemsize

    @property
    def is_complex(self) -> bool:
        """Whether the values are complex (a conjugate is then materialised)."""
        return self.dtype.is_complex


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


def row_pointers_bytes(rows: int, index_bytes: int = INDEX_BYTES) -> int:
    """Row pointers of a CSR matrix with ``rows`` rows: ``rows + 1`` indices.

    >>> row_pointers_bytes(10)
    88
    """
    return (rows + 1) * index_bytes


def pattern_terms(d: Dims) -> dict[str, int]:
    r"""What building ``A``'s pattern allocates (:func:`~sparsegrad_lab.pattern.pattern_of`).

    COO: :math:`8 (N+1)` row pointers, plus :math:`16 Z` block-diagonal rows and columns
    for a batch; CSR: nothing for a 2-D ``A`` (its own indices), :math:`(N+1) i + Z i` of
    block-diagonal row pointers and columns for a batch. Plus the contiguous copies of
    ``A``'s strided index views, which the pattern keeps.
    """
    terms: dict[str, int] = {}
    if d.layout == "coo":
        terms["pattern row pointers"] = row_pointers_bytes(d.N)
        if d.batched:  # rows and columns shifted to the block diagonal
            terms["pattern rows/cols (block diagonal)"] = 2 * d.Z * INDEX_BYTES
    elif d.batched:
        terms["pattern row pointers + cols (block diagonal)"] = (
            row_pointers_bytes(d.N, d.idx) + d.Z * d.idx
        )
    if d.strided_index:
        terms["contiguous copies of A's strided indices"] = d.strided_index
    return terms


def transpose_index_bytes(N: int, M: int, Z: int) -> int:
    """Bytes per index of the transpose of an ``N x M`` pattern of ``Z`` entries.

    int32 whenever it can address them all (:attr:`~sparsegrad_lab.pattern.SparsityPattern.
    transpose` sorts int32 keys, and torch's CPU CSR kernel would otherwise convert).

    >>> transpose_index_bytes(10, 10, 30), transpose_index_bytes(10, 2**31, 30)
    (4, 8)
    """
    return 4 if max(N, M, Z) < 2**31 else 8


def transpose_terms(
    N: int, M: int, Z: int, pattern_index_bytes: int
) -> tuple[dict[str, int], dict[str, int]]:
    r"""What building the transpose of a pattern allocates: at its sort, and once built.

    For an ``N x M`` pattern of ``Z`` entries whose indices take ``pattern_index_bytes``
    each, and :math:`t` bytes per index of the transpose (:func:`transpose_index_bytes`): a
    stable sort of the column keys (a :math:`t Z` key copy unless they are of that dtype
    already, then :math:`(t + 16) Z` inside the sort) leaves ``perm`` :math:`8 Z`, rows and
    columns :math:`2 t Z` and row pointers :math:`t (M+1)`, after a gather of the pattern's
    rows by ``perm`` (:math:`i Z`, unless of the transpose's dtype).

    >>> sort, built = transpose_terms(10, 10, 30, 8)
    >>> sum(sort.values()), sum(built.values())
    (720, 764)
    """
    t = transpose_index_bytes(N, M, Z)
    sort = {"sort keys": Z * t} if pattern_index_bytes != t else {}
    sort["sort temporaries"] = Z * (t + 8 + 8)
    built = {
        "transpose perm (int64)": Z * 8,
        "transpose rows + cols": 2 * Z * t,
        "transpose row pointers": row_pointers_bytes(M, t),
    }
    if pattern_index_bytes != t:
        built["rows gathered by perm"] = Z * pattern_index_bytes
    return sort, built


def transpose_bytes(pattern: SparsityPattern) -> int:
    """What ``pattern.transpose`` allocates at its peak when first used; zero once built.

    >>> from sparsegrad_lab.pattern import pattern_of
    >>> transpose_bytes(pattern_of(torch.eye(10).to_sparse()))
    284
    """
    if pattern.has_transpose():
        return 0
    N, M = pattern.shape
    sort, built = transpose_terms(N, M, pattern.nnz, pattern.col.element_size())
    return max(sum(sort.values()), sum(built.values()))


def gathered_rows_bytes(Z: int, p: int, elem: int) -> int:
    """One ``nnz x p`` block of gathered rows (a scatter's terms; twice for a shared gather).

    >>> gathered_rows_bytes(100, 8, 4)
    3200
    """
    return Z * p * elem


def grad_B_bytes(M: int, p: int, elem: int) -> int:
    """``∇B`` (and ``C``, with ``N`` rows): a dense ``M x p`` result.

    >>> grad_B_bytes(100, 8, 4)
    3200
    """
    return M * p * elem


def _grad_clone(d: Dims) -> dict[str, int]:
    """AccumulateGrad stores a *clone* of a sparse gradient whose indices are still shared
    (2-D COO: the pattern holds views of ``A``'s indices; CSR: always): values :math:`Z e`
    plus a copy of ``A``'s index tensors. A batched COO gradient is stored as it is."""
    if d.layout == "coo" and d.batched:
        return {}
    # A's index tensors: its storage without the values.
    indices = sparse_storage_bytes(
        d.layout, rows=d.n, nnz=d.Z, value_bytes=0, index_bytes=d.idx, batch=d.b
    )
    return {"A.grad values": d.Z * d.elem, "A.grad indices": indices}


def sparse_mm_stages(
    d: Dims,
    strategy: str,
    *,
    kept: bool = False,
    transposed: bool | None = None,
    by_coo: bool | None = None,
) -> Stages:
    r"""The stages of :func:`sparsegrad_lab.sparse_mm` with ``backward=strategy``.

    ``kept=True`` is a call with ``pattern=`` a kept pattern: it is held by the caller, so
    building it is not extra here. ``transposed`` (by default ``kept``) says that the
    transpose, and a CSR pattern's expanded rows, were built by an earlier call and are
    held too: no sort (``"sddmm_kept"``). ``by_coo`` is the forward's route
    (:func:`~sparsegrad_lab.routes.coo_product`), decided from ``d`` when not given.

    1. **forward spmm**: the pattern (:func:`pattern_terms`), kept by the graph while ``C``
       lives, then ``C`` (:math:`N p e`), the CPU spmm temporaries and a contiguous copy of
       a strided ``B``. A small 2-D COO graph on the CPU is multiplied by torch's COO kernel
       instead: ``C`` and its zero template (:math:`N p e`), no row pointers.
    2. **sampled product**: the gradient's values :math:`Z e` plus the strategy's
       workspace, :func:`~sparsegrad_lab.sddmm.sampled_product_workspace_bytes` (0 for
       ``"sddmm"``, :math:`3 Z p e` for ``"gather"``, :math:`b n m e + 8 Z` for
       ``"dense"``); a CSR pattern's expanded rows (:math:`Z i`) appear here for
       ``"gather"`` and ``"dense"``, at the transpose for ``"sddmm"``.
    3. **transpose: sort** and **transpose built** (for ``B.grad``):
       :func:`transpose_terms`, cached while ``C`` lives; a kept pattern's first call with
       ``"sddmm"`` (through the registered operator) also builds the inverse permutation
       (:math:`t Z`), which the pattern then holds.
    4. **grad B spmm**, ``B.grad = Aᴴ G``: the permuted values :math:`Z e` (twice for
       complex: the conjugate is materialised), ``B.grad`` (:math:`M p e`) and the spmm's
       temporaries.
    5. **A.grad accumulated**: autograd stores a clone of a sparse gradient whose indices
       are shared (and a gradient on ``A``'s strided index views is built on contiguous
       copies).

    A small graph -- :math:`Z p e` at most :data:`~sparsegrad_lab.routes.SCATTER_MAX_BYTES`,
    no kept pattern, as :func:`~sparsegrad_lab.routes.first_order_route` decides for the
    operation itself -- skips stages 3 and 4: **grad B scatter** computes ``Aᴴ G`` as one
    gather of ``G``'s rows (:math:`Z p e`), scaled by the (conjugated, :math:`Z e` for
    complex) values and added into ``B.grad`` (:math:`M p e`), beside a CSR pattern's
    expanded rows. With ``"sddmm"`` and at most
    :data:`~sparsegrad_lab.routes.SHARED_GATHER_MAX_NNZ` entries that gather is shared with
    the sampled product, which then holds the gathered rows of ``G`` and ``B``
    (:math:`2 Z p e`) instead of torch's kernel, and a CSR pattern's expanded rows from
    stage 2 on.
    """
    if transposed is None:
        transposed = kept
    N, M, Z, p, e, i = d.N, d.M, d.Z, d.p, d.elem, d.idx
    if by_coo is None:
        device = "cpu" if d.cpu else "cuda"
        by_coo = coo_product(layout=d.layout, batched=d.batched, device=device, nnz=Z, kept=kept)
    pat_i = INDEX_BYTES if d.layout == "coo" else i
    pattern = {} if kept else pattern_terms(d)
    if by_coo:  # the row pointers are not built by the forward
        pattern.pop("pattern row pointers", None)
    C = {"C": grad_B_bytes(N, p, e)}
    if by_coo:
        product = {"COO product's zero template": N * p * e}
    else:
        product = spmm_temporaries(d, N, pat_i)
    copy_B = {"contiguous copy of B": d.b_copy} if d.b_copy else {}
    fwd_stage = MemoryBreakdown("forward spmm", {**pattern, **C, **product, **copy_B})
    alive = {**pattern, **C}

    s = {"grad values (before A.grad)": Z * e}
    held_rows = kept and transposed
    rows = {"pattern expanded rows": Z * pat_i} if d.layout == "csr" and not held_rows else {}
    route = first_order_route(strategy, nnz=Z, p=p, elem=e, kept=kept)
    shared = route == "shared gather"
    if by_coo and strategy == "sddmm" and not shared:  # torch's sampled kernel takes CSR
        alive = {**alive, "pattern row pointers (for the sampled kernel)": row_pointers_bytes(N)}
    if shared:
        workspace = {"gathered rows of G and B (2 x nnz x p)": 2 * gathered_rows_bytes(Z, p, e)}
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
    grad_B = {"grad B": grad_B_bytes(M, p, e)}
    clone = {**_grad_clone(d)}
    if d.strided_index:
        clone["A.grad's contiguous indices"] = d.strided_index
    if route != "transpose":
        conj = {"conjugated values": Z * e} if d.is_complex else {}
        scattered = {"scattered terms (nnz x p)": gathered_rows_bytes(Z, p, e)}
        scatter = MemoryBreakdown(
            "grad B scatter", {**alive, **s, **rows, **conj, **scattered, **grad_B}
        )
        accumulate = MemoryBreakdown(
            "A.grad accumulated", {**alive, **s, **rows, **grad_B, **clone}
        )
        return [fwd_stage, sampled, scatter, accumulate], alive
    sort_terms, built_terms = transpose_terms(N, M, Z, pat_i)
    if kept and strategy == "sddmm":  # the operator reads A's values through perm's inverse
        built_terms["transpose inverse perm"] = Z * transpose_index_bytes(N, M, Z)
    transpose = {} if transposed else {**rows, **built_terms}
    transpose.pop("rows gathered by perm", None)  # freed once the transpose is built
    adjoint = {"values of Aᴴ": Z * e * (2 if d.is_complex else 1)}
    spmm_B = MemoryBreakdown(
        "grad B spmm",
        {
            **alive,
            **s,
            **transpose,
            **adjoint,
            **grad_B,
            **spmm_temporaries(d, M, transpose_index_bytes(N, M, Z)),
        },
    )
    accumulate = MemoryBreakdown(
        "A.grad accumulated", {**alive, **s, **transpose, **grad_B, **clone}
    )
    if transposed:
        return [fwd_stage, sampled, spmm_B, accumulate], alive
    sort = MemoryBreakdown("transpose: sort", {**alive, **s, **rows, **sort_terms})
    built = MemoryBreakdown("transpose built", {**alive, **s, **rows, **built_terms})
    return [fwd_stage, sampled, sort, built, spmm_B, accumulate], alive


def peak_of(model: Stages, phase: str = "fwd+bwd") -> MemoryBreakdown:
    """The largest stage of ``model`` within ``phase`` (``"bwd"``: less what the forward left).

    >>> d = Dims(b=1, n=100, m=100, Z=1000, p=8, dtype=torch.float32, idx=8, layout="csr",
    ...          cpu=True)
    >>> peak_of(sparse_mm_stages(d, "sddmm"), "fwd").stage
    'forward spmm'
    """
    stages, alive = model
    n_fwd = sum(1 for s in stages if s.stage in _FORWARD_STAGES)
    if phase == "fwd":
        return max(stages[:n_fwd], key=lambda s: s.peak_bytes)
    chosen = stages if phase == "fwd+bwd" else stages[n_fwd:]
    peak = max(chosen, key=lambda s: s.peak_bytes)
    if phase == "bwd":
        return MemoryBreakdown(peak.stage, peak.terms, alive)
    return peak


# ------------------------------------------------------------------- a call's own tensors


def sparse_mm_dims(A: Tensor, B: Tensor, *, by_coo: bool) -> Dims:
    """The :class:`Dims` of ``sparse_mm(A, B)`` for a checked ``A`` (coalesced, if COO).

    ``by_coo``: the forward is torch's COO product, which reads a strided ``B`` as it is
    (but not through a lazy conjugation); torch's CSR product copies it.

    >>> sparse_mm_dims(torch.eye(3).to_sparse(), torch.ones(3, 2), by_coo=True).Z
    3
    """
    return _dims(A, B.shape[-1], B.dtype, copy_bytes(B) if not by_coo or B.is_conj() else 0)


def _dims(A: Tensor, p: int, dtype: torch.dtype, b_copy: int = 0) -> Dims:
    shape = A.shape
    batched = len(shape) == 3
    b, n, m = shape if batched else (1, *shape)
    if A.layout == torch.sparse_coo:
        layout, Z, idx = "coo", A._nnz(), INDEX_BYTES
    else:
        col = A.col_indices()
        layout, Z, idx = "csr", col.numel(), col.element_size()
    cpu = A.device.type == "cpu"
    return Dims(b, n, m, Z, p, dtype, idx, layout, cpu, batched, b_copy, strided_index_bytes(A))


def sparse_mm_footprint(
    A: Tensor,
    B: Tensor,
    strategy: BackwardStrategy,
    *,
    kept: SparsityPattern | None = None,
    by_coo: bool | None = None,
) -> MemoryBreakdown:
    """The predicted peak of ``sparse_mm(A, B, backward=strategy, pattern=kept)``.

    What the guard checks before the call allocates: the forward and, when ``A`` needs a
    gradient (grad mode on), the first-order backward too -- the largest stage of
    :func:`sparse_mm_stages` for this call's sizes, dtype, layout, strategy and kept pattern
    (whether it has built its transpose already). ``A`` is checked (and coalesced, if COO);
    ``by_coo`` is the forward's route, decided here when not given.

    >>> A = torch.eye(4).to_sparse()
    >>> sparse_mm_footprint(A, torch.ones(4, 2), "sddmm").terms
    {'C': 32, "COO product's zero template": 32}
    """
    if by_coo is None:
        by_coo = coo_product_for(A, kept=kept is not None)
    phase = "fwd+bwd" if A.requires_grad and torch.is_grad_enabled() else "fwd"
    transposed = kept is not None and kept.has_transpose()
    dims = sparse_mm_dims(A, B, by_coo=by_coo)
    return _cached_peak(dims, strategy, kept is not None, transposed, by_coo, phase)


@functools.lru_cache(maxsize=256)
def _cached_peak(
    d: Dims, strategy: str, kept: bool, transposed: bool, by_coo: bool, phase: str
) -> MemoryBreakdown:
    # A training loop calls with the same sizes every step: the stages are built once. The
    # breakdown returned is shared between such calls: read it, do not change it.
    model = sparse_mm_stages(d, strategy, kept=kept, transposed=transposed, by_coo=by_coo)
    return peak_of(model, phase)


def sampled_mm_footprint(
    A: Tensor, X: Tensor, Y: Tensor, strategy: BackwardStrategy, *, kept: bool
) -> tuple[MemoryBreakdown, MemoryBreakdown]:
    """What ``sampled_mm(A, X, Y)`` allocates: its values, then (if needed) its backward.

    The values of the result and the sampled product's workspace, the pattern unless
    ``kept``, contiguous copies of strided index views and of a strided ``X`` or ``Yᴴ``
    (the kernels read both row by row); then, when ``X`` or ``Y`` needs a gradient, ``∇X``,
    ``∇Y`` and the transpose of ``A`` that ``∇Y = Xᴴ S_G`` may build. ``A`` is checked (and
    coalesced, if COO).

    >>> values, backward = sampled_mm_footprint(
    ...     torch.eye(4).to_sparse_csr(), torch.ones(4, 2), torch.ones(4, 2).T, "sddmm",
    ...     kept=False)
    >>> values.terms, backward.terms
    ({'values': 16}, {})
    >>> sampled_mm_footprint(torch.eye(4).to_sparse_csr(), torch.ones(4, 2), torch.ones(2, 4),
    ...                      "sddmm", kept=False)[0].terms     # Yᴴ is copied to be read by rows
    {'values': 16, 'contiguous copy of Yᴴ': 32}
    """
    d = _dims(A, X.shape[-1], X.dtype)
    b, n, m, coo = d.b, d.n, d.m, d.layout == "coo"
    values = {"values": d.Z * d.elem}
    if kept:  # the pattern is the caller's; the result's indices are still made contiguous
        if d.strided_index:
            values["contiguous copies of A's strided indices"] = d.strided_index
    else:
        values.update(pattern_terms(d))
    for name, M in (("X", X), ("Yᴴ", Y.mH)):
        if copy_bytes(M):
            values[f"contiguous copy of {name}"] = copy_bytes(M)
    workspace = sampled_product_workspace_bytes(
        strategy, batch=b, block_shape=(n, m), nnz=d.Z, p=d.p, dtype=d.dtype
    )
    if workspace:
        values["sampled-product workspace"] = workspace
    backward: dict[str, int] = {}
    if (X.requires_grad or Y.requires_grad) and torch.is_grad_enabled():
        backward = {
            "grad X": grad_B_bytes(d.N, d.p, d.elem),
            "grad Y": grad_B_bytes(d.M, d.p, d.elem),
        }
        sort, built = transpose_terms(d.N, d.M, d.Z, INDEX_BYTES if coo else d.idx)
        backward["transpose of A"] = max(sum(sort.values()), sum(built.values()))
    return MemoryBreakdown("values", values), MemoryBreakdown("backward", backward)
