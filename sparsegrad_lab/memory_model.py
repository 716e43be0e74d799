"""The analytic byte model: peak memory of one sparse matmul step, predicted before it runs.

:func:`predict_peak_bytes` gives the peak *extra* memory of ``C = A @ B`` followed by
``C.backward(G)`` -- extra meaning above what exists before the call: ``A``, ``B`` and the
upstream gradient ``G`` are inputs and are not counted, while ``C``, ``A.grad``, ``B.grad``
and every temporary are. :func:`memory_breakdown` names the tensors that make the peak.
The measurements it is checked against, and the guard that uses it, are in
:mod:`sparsegrad_lab.memory`.

The implementations compared are named by :data:`IMPLEMENTATIONS`: ``"sddmm"``,
``"gather"`` and ``"dense"`` are :func:`sparsegrad_lab.sparse_mm` with that ``backward=``;
``"torch_coo"`` and ``"torch_csr"`` are ``torch.sparse.mm`` with autograd on a COO or a CSR
``A``; ``"tsgu"`` is ``torchsparsegradutils.sparse_mm`` (an optional dependency);
``"sddmm_kept"`` is the default ``sparse_mm`` called the way a training loop over a fixed
pattern calls it, with ``pattern=sparsity_pattern(A)`` built on the first call and kept (so
it and its transpose exist before the measured step).

>>> predict_peak_bytes("gather", n=1000, m=1000, nnz=10_000, p=16) > predict_peak_bytes(
...     "sddmm", n=1000, m=1000, nnz=10_000, p=16)
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from ._checks import dtype_from, layout_name
from .errors import InputValueError
from .sddmm import sampled_product_workspace_bytes

__all__ = [
    "IMPLEMENTATIONS",
    "PHASES",
    "Impl",
    "MemoryBreakdown",
    "Phase",
    "describe_case",
    "memory_breakdown",
    "output_bytes",
    "predict_peak_bytes",
    "unsupported_reason",
]

Impl = Literal["sddmm", "gather", "dense", "torch_coo", "torch_csr", "tsgu", "sddmm_kept"]
IMPLEMENTATIONS: tuple[Impl, ...] = (
    "sddmm",
    "gather",
    "dense",
    "torch_coo",
    "torch_csr",
    "tsgu",
    "sddmm_kept",
)
Phase = Literal["fwd", "bwd", "fwd+bwd"]
PHASES: tuple[Phase, ...] = ("fwd", "bwd", "fwd+bwd")

_SDDMM_IMPLS = ("sddmm", "gather", "dense", "sddmm_kept")
_FORWARD_STAGES = ("forward spmm", "block-diagonal assembly")


# ----------------------------------------------------------------------------- case checks


def unsupported_reason(impl: str, *, layout: Any = "csr", batch: int = 1) -> str | None:
    """Why ``impl`` cannot run on this kind of input, or ``None`` if it can.

    ``torch.sparse.mm`` multiplies 2-D matrices only, and ``"torch_coo"``/``"torch_csr"``
    name the layout of ``A`` they use, so each runs only on inputs of its own layout.

    >>> unsupported_reason("torch_coo", layout="csr")
    'torch_coo runs torch.sparse.mm on a COO A; this case has a CSR A'
    >>> unsupported_reason("sddmm", layout="coo", batch=8) is None
    True
    """
    if impl not in IMPLEMENTATIONS:
        raise InputValueError(f"impl must be one of {IMPLEMENTATIONS}, got {impl!r}")
    lay = layout_name(layout)
    if impl in ("torch_coo", "torch_csr"):
        own = impl.removeprefix("torch_")
        if lay != own:
            return (
                f"{impl} runs torch.sparse.mm on a {own.upper()} A; this case has a {lay.upper()} A"
            )
        if batch != 1:
            return f"{impl}: torch.sparse.mm multiplies 2-D matrices only (batch={batch})"
    return None


def describe_case(
    impl: str,
    *,
    n: int,
    m: int,
    nnz: int,
    p: int,
    batch: int = 1,
    dtype: Any = torch.float32,
    layout: Any = "csr",
) -> str:
    """A one-line name for a case, used in refusals and tables.

    >>> describe_case("gather", n=100, m=200, nnz=1000, p=8)
    'gather: A 100 x 200 (csr, nnz=1000), p=8, float32'
    """
    shape = f"{batch} x {n} x {m}" if batch != 1 else f"{n} x {m}"
    per = " per item" if batch != 1 else ""
    name = str(dtype_from(dtype)).removeprefix("torch.")
    return f"{impl}: A {shape} ({layout_name(layout)}, nnz={nnz}{per}), p={p}, {name}"


# ---------------------------------------------------------------------------- the model


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


@dataclass(frozen=True)
class _Dims:
    b: int
    n: int
    m: int
    nnz: int  # per batch item
    p: int
    elem: int  # bytes per value
    idx: int  # bytes per index of A (COO: always 8)
    is_complex: bool
    layout: str
    cpu: bool
    dtype: torch.dtype

    @property
    def N(self) -> int:  # rows of the block-diagonal matrix
        return self.b * self.n

    @property
    def M(self) -> int:
        return self.b * self.m

    @property
    def Z(self) -> int:  # stored entries in total
        return self.b * self.nnz


def _spmm_temporaries(d: _Dims, rows: int, index_bytes: int) -> dict[str, int]:
    """What torch's CPU sparse @ dense allocates besides its result.

    The CPU kernels compute into a temporary of the result's size and copy it over (two
    results alive at once), and MKL takes int32 indices only, so int64 CSR indices are
    copied to int32 for the call. On CUDA, cuSPARSE writes the result in place (its small
    workspace is not modelled).
    """
    if not d.cpu:
        return {}
    terms = {"spmm result temporary": rows * d.p * d.elem}
    if index_bytes == 8:
        terms["int32 copy of the indices for MKL"] = (rows + 1) * 4 + d.Z * 4
    return terms


def _ours(d: _Dims, impl: str) -> tuple[list[MemoryBreakdown], dict[str, int]]:
    """Stages of :func:`sparse_mm` (see :mod:`sparsegrad_lab.ops`), forward then backward.

    ``"sddmm_kept"``: the pattern, its expanded rows and its transpose were made by an
    earlier call and are held by the caller, so none of them is extra here.
    """
    N, M, Z, p, e, i = d.N, d.M, d.Z, d.p, d.elem, d.idx
    held = impl == "sddmm_kept"
    strategy = "sddmm" if held else impl
    # The pattern (sparsegrad_lab.pattern): CSR row pointers, and for a batch the indices
    # shifted onto the block diagonal; the graph keeps it (and its cached transpose) while C
    # is alive. A 2-D CSR input's pattern is A's own index tensors: nothing extra.
    if d.layout == "coo":
        pattern = {"pattern row pointers": (N + 1) * 8}
        if d.b > 1:  # rows and columns shifted to the block diagonal
            pattern["pattern rows/cols (block diagonal)"] = 2 * Z * 8
        pat_i = 8
    else:
        pattern = {}
        if d.b > 1:
            pattern["pattern row pointers + cols (block diagonal)"] = (N + 1) * i + Z * i
        pat_i = i
    if held:
        pattern = {}
    C = {"C": N * p * e}
    fwd_stage = MemoryBreakdown("forward spmm", {**pattern, **C, **_spmm_temporaries(d, N, pat_i)})
    kept = {**pattern, **C}

    s = {"grad values (before A.grad)": Z * e}
    workspace = sampled_product_workspace_bytes(
        strategy,  # type: ignore[arg-type]
        batch=d.b,
        block_shape=(d.n, d.m),
        nnz=Z,
        p=p,
        dtype=d.dtype,
    )
    # A CSR input's pattern expands its rows on first use (cached on the pattern): the
    # gather and dense strategies need them here, the sddmm kernel only at the transpose.
    rows = {"pattern expanded rows": Z * pat_i} if d.layout == "csr" and not held else {}
    early_rows = rows if strategy != "sddmm" else {}
    sampled = MemoryBreakdown(
        f"sampled product (backward={strategy!r})",
        {**kept, **early_rows, **s, "sampled-product workspace": workspace},
    )
    # Transpose of the pattern (SparsityPattern.transpose), int32 indices when they fit: a
    # CSR input first expands its rows (cached on the pattern); then a stable sort of int32
    # column keys (a key copy unless the columns are int32 already; sorted keys + int64
    # indices + an int64 iota inside the sort); the sorted keys are the transpose's rows,
    # its columns are the rows gathered by perm, and both stay cached with perm.
    fits = max(M, N, Z) < 2**31
    t_i = 4 if fits else 8
    keys = {"sort keys": Z * t_i} if pat_i != t_i else {}
    sort = MemoryBreakdown(
        "transpose: sort",
        {**kept, **s, **rows, **keys, "sort temporaries": Z * (t_i + 8 + 8)},
    )
    transpose = {
        **rows,
        "transpose perm (int64)": Z * 8,
        "transpose rows + cols": 2 * Z * t_i,
        "transpose row pointers": (M + 1) * t_i,
    }
    if held:
        transpose = {}
    gathered = {"rows gathered by perm": Z * pat_i} if pat_i != t_i else {}
    built = MemoryBreakdown("transpose built", {**kept, **s, **transpose, **gathered})
    adjoint = {"values of Aᴴ": Z * e * (2 if d.is_complex else 1)}  # complex: resolve_conj
    grad_B = {"grad B": M * p * e}
    spmm_B = MemoryBreakdown(
        "grad B spmm",
        {**kept, **s, **transpose, **adjoint, **grad_B, **_spmm_temporaries(d, M, t_i)},
    )
    clone = _grad_clone(d)
    accumulate = MemoryBreakdown(
        "A.grad accumulated", {**kept, **s, **transpose, **grad_B, **clone}
    )
    if held:
        return [fwd_stage, sampled, spmm_B, accumulate], kept
    return [fwd_stage, sampled, sort, built, spmm_B, accumulate], kept


def _grad_clone(d: _Dims) -> dict[str, int]:
    """AccumulateGrad stores a *clone* of a sparse gradient whose indices are still shared
    (2-D COO: the pattern holds views of ``A``'s indices; CSR: always): values plus a copy
    of ``A``'s index tensors. A batched COO gradient is stored as it is."""
    if d.layout == "coo":
        if d.b > 1:
            return {}
        indices = 2 * d.Z * 8
    else:
        indices = d.b * (d.n + 1) * d.idx + d.Z * d.idx
    return {"A.grad values": d.Z * d.elem, "A.grad indices": indices}


def _csr_transpose_conversion(
    d: _Dims,
) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """torch's ``Aᵀ`` of a CSR ``A`` converted back to CSR (torch_csr's and tsgu's grad B).

    Returns the live temporaries at the conversion's sort, at its gather, and the
    resulting CSR of ``Aᵀ`` (same index dtype as ``A``).
    """
    N, M, Z, e, i = d.N, d.M, d.Z, d.elem, d.idx
    common = {"conversion: row pointers": (N + 1) * i, "conversion: COO indices": 2 * Z * i}
    at_sort = {**common, "conversion: sort keys, values, perm, iota (int64)": 4 * Z * 8}
    at_gather = {
        **common,
        "conversion: sort perm + iota (int64)": 2 * Z * 8,
        "conversion: gathered indices + values": 2 * Z * i + Z * e,
        "conversion: row pointers of Aᵀ (x3)": 3 * (M + 1) * i,
    }
    result = {"Aᵀ as CSR": 2 * Z * i + Z * e + (M + 1) * i}
    return at_sort, at_gather, result


def _cpu_only(d: _Dims, name: str, nbytes: int) -> dict[str, int]:
    return {name: nbytes} if d.cpu else {}


def _torch(d: _Dims, impl: str) -> tuple[list[MemoryBreakdown], dict[str, int]]:
    """Stages of ``torch.sparse.mm`` autograd (2-D only), per torch 2.13's CPU kernels."""
    N, M, Z, p, e, i = d.N, d.M, d.Z, d.p, d.elem, d.idx
    C = {"C": N * p * e}
    grad_B = {"grad B": M * p * e}
    if impl == "torch_coo":
        # Forward: COO spmm writes a temporary of C's size. Backward of A: the dense
        # G Bᴴ (n x m), then sparse_mask copies A's indices. Backward of B: Aᵀ @ G, with Aᵀ
        # a copy of A's indices and values.
        fwd = MemoryBreakdown(
            "forward spmm", {**C, **_cpu_only(d, "spmm result temporary", N * p * e)}
        )
        gA = {"A.grad values": Z * e, "A.grad indices": 2 * Z * 8}
        dense = MemoryBreakdown(
            "dense G Bᴴ, then mask",
            {
                **C,
                "dense G Bᴴ (n x m)": N * M * e,
                "sparse_mask temporaries": 2 * Z * e + 2 * Z * 8,
            },
        )
        At = {"Aᵀ (copy of A)": Z * e + 2 * Z * 8}
        tr = MemoryBreakdown("transpose", {**C, **gA, **At, "transpose temporary": Z * 8})
        spmm_B = MemoryBreakdown(
            "grad B spmm",
            {**C, **gA, **At, **grad_B, **_cpu_only(d, "spmm result temporary", M * p * e)},
        )
        return [fwd, dense, tr, spmm_B], C
    # CSR: sampled_addmm into a clone of A (int64 indices), Aᵀ converted to CSR for grad B.
    fwd = MemoryBreakdown("forward spmm", {**C, **_spmm_temporaries(d, N, i)})
    gA = {"A.grad (int64 CSR)": (N + 1) * 8 + Z * 8 + Z * e}
    sampled = MemoryBreakdown(
        "sampled_addmm", {**C, "clone of A": Z * e + Z * i + (N + 1) * i, **gA}
    )
    at_sort, at_gather, At = _csr_transpose_conversion(d)
    sort = MemoryBreakdown("Aᵀ to CSR: sort", {**C, **gA, **at_sort})
    gather = MemoryBreakdown("Aᵀ to CSR: gather", {**C, **gA, **at_gather})
    spmm_B = MemoryBreakdown(
        "grad B spmm", {**C, **gA, **At, **grad_B, **_spmm_temporaries(d, M, i)}
    )
    acc = MemoryBreakdown(
        "A.grad accumulated", {**C, **gA, **grad_B, "A.grad clone": sum(gA.values())}
    )
    return [fwd, sampled, sort, gather, spmm_B, acc], C


def _tsgu(d: _Dims) -> tuple[list[MemoryBreakdown], dict[str, int]]:
    """Stages of ``torchsparsegradutils.sparse_mm`` 0.2.7 (gather backward, torch for grad B)."""
    N, M, Z, p, e, i = d.N, d.M, d.Z, d.p, d.elem, d.idx
    coo = d.layout == "coo"
    C = {"C": N * p * e}
    kept = dict(C)
    assembly: dict[str, int] = {}
    stacked_gA: dict[str, int] = {}
    if d.b > 1:
        # sparse_block_diag (a Python loop over items) copies A into one block-diagonal
        # matrix, saved for backward; the backward splits grad A and stacks it again
        # before computing grad B.
        if coo:
            kept["block-diagonal copy of A"] = Z * (16 + e)
            assembly = {"per-item copies": Z * (16 + e), "shifted, coalesced, stacked": 48 * Z}
            stacked_gA = {"stacked grad A": Z * (24 + e)}
        else:
            kept["block-diagonal copy of A"] = (N + 1) * 8 + Z * (8 + e)
            assembly = {"shifted indices": Z * 8 + N * 8}
            stacked_gA = {"stacked grad A": d.b * (d.n + 1) * 8 + Z * (8 + e)}
        i = 8  # the block-diagonal copy has int64 indices
    if coo:
        fwd_tmp = _cpu_only(d, "spmm result temporary", N * p * e)
    else:
        fwd_tmp = _spmm_temporaries(d, N, i)
    stages = [
        MemoryBreakdown("block-diagonal assembly", {**kept, **assembly}),
        MemoryBreakdown("forward spmm", {**kept, **fwd_tmp}),
    ]
    rows: dict[str, int] = {}
    if not coo:  # repeat_interleave expands the row pointers: iota, diff, cumsum, output
        rows = {"expanded rows (int64)": Z * 8}
        stages.append(
            MemoryBreakdown(
                "expand rows",
                {**kept, **rows, "repeat_interleave temporaries": 2 * N * 8 + max(N, Z) * 8},
            )
        )
    gathered = {"gathered rows of G": Z * p * e, "gathered rows of B": Z * p * e}
    gA = {"grad values": Z * e}
    stages.append(
        MemoryBreakdown("gather", {**kept, **rows, **gathered, "their product": Z * p * e, **gA})
    )
    grad_B = {"grad B": M * p * e}
    # The gathered blocks stay alive (locals) while grad B is computed.
    live = {**kept, **rows, **gathered, **gA, **stacked_gA}
    if coo:
        sparse_gA = {} if d.b > 1 else {"sparse grad A (copies A's indices)": Z * e + 2 * Z * 8}
        stages.append(
            MemoryBreakdown(
                "grad B spmm",
                {**live, **sparse_gA, **grad_B, **_cpu_only(d, "spmm result temporary", M * p * e)},
            )
        )
        return stages, kept
    d_bd = _Dims(d.b, d.n, d.m, d.nnz, p, e, i, d.is_complex, d.layout, d.cpu, d.dtype)
    at_sort, at_gather, At = _csr_transpose_conversion(d_bd)
    # torch.sparse.mm(A.t(), G) allocates its result (and the CPU temporary) first, then
    # converts the transposed A to CSR inside addmm.
    out_B = {**grad_B, **_cpu_only(d, "spmm result temporary", M * p * e)}
    stages += [
        MemoryBreakdown("Aᵀ to CSR: sort", {**live, **out_B, **at_sort}),
        MemoryBreakdown("Aᵀ to CSR: gather", {**live, **out_B, **at_gather}),
        MemoryBreakdown("grad B spmm", {**live, **At, **grad_B, **_spmm_temporaries(d_bd, M, i)}),
    ]
    return stages, kept


def memory_breakdown(
    impl: str,
    *,
    n: int,
    m: int,
    nnz: int,
    p: int,
    batch: int = 1,
    dtype: Any = torch.float32,
    layout: Any = "csr",
    phase: str = "fwd+bwd",
    index_dtype: Any = torch.int64,
    device: Any = "cpu",
) -> MemoryBreakdown:
    """The predicted peak of :func:`predict_peak_bytes`, with the tensors that make it.

    Same parameters as :func:`predict_peak_bytes`.

    >>> bd = memory_breakdown("gather", n=1000, m=1000, nnz=10_000, p=16)
    >>> bd.stage, bd.terms["sampled-product workspace"]
    ("sampled product (backward='gather')", 1920000)
    """
    if impl not in IMPLEMENTATIONS:
        raise InputValueError(f"impl must be one of {IMPLEMENTATIONS}, got {impl!r}")
    if phase not in PHASES:
        raise InputValueError(f"phase must be one of {PHASES}, got {phase!r}")
    for name, value, low in (
        ("n", n, 1),
        ("m", m, 1),
        ("nnz", nnz, 0),
        ("p", p, 1),
        ("batch", batch, 1),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise InputValueError(f"{name} must be an int >= {low}, got {value!r}")
    lay = layout_name(layout)
    reason = unsupported_reason(impl, layout=lay, batch=batch)
    if reason is not None:
        raise InputValueError(f"predict_peak_bytes: {reason}")
    dt = dtype_from(dtype)
    idt = dtype_from(index_dtype, "index_dtype")
    if idt not in (torch.int32, torch.int64):
        raise InputValueError(f"index_dtype must be torch.int32 or torch.int64, got {idt}")
    d = _Dims(
        b=batch,
        n=n,
        m=m,
        nnz=nnz,
        p=p,
        elem=torch.empty(0, dtype=dt).element_size(),
        idx=8 if lay == "coo" else idt.itemsize,
        is_complex=dt.is_complex,
        layout=lay,
        cpu=torch.device(device).type == "cpu",
        dtype=dt,
    )
    if impl in _SDDMM_IMPLS:
        stages, kept = _ours(d, impl)
    elif impl == "tsgu":
        stages, kept = _tsgu(d)
    else:
        stages, kept = _torch(d, impl)
    n_fwd = sum(1 for s in stages if s.stage in _FORWARD_STAGES)
    if phase == "fwd":
        return max(stages[:n_fwd], key=lambda s: s.peak_bytes)
    chosen = stages if phase == "fwd+bwd" else stages[n_fwd:]
    peak = max(chosen, key=lambda s: s.peak_bytes)
    if phase == "bwd":
        return MemoryBreakdown(peak.stage, peak.terms, kept)
    return peak


def predict_peak_bytes(
    impl: str,
    *,
    n: int,
    m: int,
    nnz: int,
    p: int,
    batch: int = 1,
    dtype: Any = torch.float32,
    layout: Any = "csr",
    phase: str = "fwd+bwd",
    index_dtype: Any = torch.int64,
    device: Any = "cpu",
) -> int:
    r"""Predicted peak extra memory of ``C = impl(A, B)`` and ``C.backward(G)``, in bytes.

    Extra means above the inputs ``A``, ``B`` and ``G``, which exist before the call.
    Notation: ``N = b n`` and ``M = b m`` rows of the block-diagonal ``A`` and ``B``,
    ``Z = b nnz`` stored entries, ``e`` bytes per value, ``i`` bytes per index of ``A``
    (COO: 8). The model walks the call in the order the code allocates and takes the
    largest sum of live tensors; :func:`memory_breakdown` returns that stage and its terms.

    Outputs, present in every implementation: ``C`` (:math:`N p e`), ``B.grad``
    (:math:`M p e`) and ``A.grad`` (:math:`Z e` values plus, for CSR and 2-D COO, a copy
    of ``A``'s indices: autograd stores a clone of a sparse gradient whose indices are
    shared).

    ``"sddmm"``, ``"gather"``, ``"dense"`` (:func:`sparsegrad_lab.sparse_mm`):

    * the pattern, kept by the graph while ``C`` lives: COO :math:`(N+1)\,8` row
      pointers (plus :math:`16 Z` block-diagonal indices for a batch); a 2-D CSR input's
      pattern is ``A``'s own indices (a batch: :math:`(N+1)i + Z i`), and its expanded rows
      (:math:`Z i`) appear on first use -- at the sampled product for ``"gather"`` and
      ``"dense"``, at the transpose for ``"sddmm"``;
    * forward spmm: ``C``, and on CPU a second result of ``C``'s size (torch computes
      into a temporary and copies) plus int32 copies of int64 indices for MKL,
      :math:`(N+1)\,4 + 4 Z`;
    * the sampled product: the values :math:`Z e` plus the strategy's workspace,
      :func:`sparsegrad_lab.sddmm.sampled_product_workspace_bytes` -- 0 for ``"sddmm"``
      (``sampled_addmm`` writes in place), :math:`3 Z p e` for ``"gather"`` (two gathered
      blocks and their product), :math:`b n m e + 8 Z` for ``"dense"`` (:math:`16 Z` for a
      batch);
    * the transpose of the pattern (for ``B.grad``), in int32 indices when they fit: a
      sort of the column keys (a :math:`4 Z` key copy unless they are int32 already, then
      :math:`20 Z` inside the sort), leaving ``perm`` :math:`8 Z`, rows and columns
      :math:`8 Z` and row pointers :math:`4 (M+1)`, all cached while ``C`` lives (int64
      throughout when the indices do not fit in int32);
    * ``B.grad = Aᴴ G``: the permuted values :math:`Z e` (twice for complex: the
      conjugate is materialised), ``B.grad``, and the spmm's result temporary (its int32
      indices need no copy for MKL);
    * ``A.grad``: the clone described above.

    ``"sddmm_kept"``: the same steps with ``pattern=`` a kept pattern whose transpose an
    earlier call built: the pattern, the expanded rows and the transpose are held before
    the call and not counted, and there is no sort. (Its first call is ``"sddmm"``'s.)

    ``"torch_coo"``: forward as above without index copies; backward forms the dense
    :math:`G B^{\mathsf H}` (:math:`N M e`) and masks it (:math:`2 Z e + 16 Z`), then
    copies ``A`` for ``Aᵀ`` (:math:`Z e + 16 Z`) for ``B.grad``.

    ``"torch_csr"``: ``A.grad`` is ``sampled_addmm`` into a clone of ``A`` and comes out
    with int64 indices (:math:`(N+1)\,8 + 8 Z + Z e`); ``Aᵀ`` is converted to CSR for
    ``B.grad`` -- row pointers and COO indices :math:`(N+1)i + 2 Z i` throughout, plus
    :math:`32 Z` at its sort or :math:`2 Z i + 16 Z + Z e + 3(M+1)i` at its gather,
    leaving :math:`2 Z i + Z e + (M+1) i`; autograd then clones ``A.grad`` once more.

    ``"tsgu"``: for CSR, ``repeat_interleave`` expands the rows (:math:`8 Z`, with
    :math:`16 N + 8 \max(N, Z)` of temporaries); the gather backward (:math:`3 Z p e`);
    the two gathered blocks stay alive while ``B.grad`` is computed with torch (a COO
    copy of ``A``'s indices, or the CSR conversion above, which runs after ``B.grad`` and
    its CPU temporary are allocated). Batched inputs (approximate: a Python loop over
    items) keep a block-diagonal copy of ``A`` (COO :math:`Z(16 + e)`, CSR
    :math:`(N+1)8 + Z(8+e)`), build it through per-item copies (COO about
    :math:`Z(16+e) + 48 Z`), and hold the re-stacked ``A.grad`` while ``B.grad`` is made.

    Not covered by the tolerance below: complex dtypes for the torch implementations
    (``"torch_csr"`` misses about :math:`2 Z e` of conjugate copies) and CUDA, whose
    kernels allocate differently (cuSPARSE and CUB workspaces, no CPU copies); there the
    prediction is a guide.

    Parameters
    ----------
    impl : {"sddmm", "gather", "dense", "torch_coo", "torch_csr", "tsgu", "sddmm_kept"}
    n, m, nnz, p : int
        ``A`` is ``n x m`` with ``nnz`` stored entries (per batch item), ``B`` is ``m x p``.
    batch : int, default 1
        Number of batch items ``b`` (``torch_*`` take 2-D inputs only).
    dtype : torch.dtype or str, default float32
    layout : {"coo", "csr"}, default "csr"
        Layout of ``A`` (``torch_coo``/``torch_csr`` need their own).
    phase : {"fwd", "bwd", "fwd+bwd"}, default "fwd+bwd"
        ``"bwd"`` counts from the end of the forward (``C`` and the saved pattern excluded).
    index_dtype : torch.int32 or torch.int64, default int64
        Index dtype of a CSR ``A`` (COO indices are always int64).
    device : str or torch.device, default "cpu"
        On CUDA the CPU-only spmm temporaries are left out; the rest is the same code path.

    Returns
    -------
    int
        Bytes. Agrees with :func:`measure_peak_bytes` on CPU within 10 % for float32 and
        float64 at sizes where the peak is above a few MiB (``tests/test_memory.py``);
        a fresh process's resident high-water mark adds MKL/OpenMP buffers and paging.

    Examples
    --------
    >>> mib = predict_peak_bytes("sddmm", n=100_000, m=100_000, nnz=1_000_000, p=64) / 2**20
    >>> round(mib)
    104
    >>> round(predict_peak_bytes("dense", n=100_000, m=100_000, nnz=1_000_000, p=64) / 2**30)
    37
    """
    return memory_breakdown(
        impl,
        n=n,
        m=m,
        nnz=nnz,
        p=p,
        batch=batch,
        dtype=dtype,
        layout=layout,
        phase=phase,
        index_dtype=index_dtype,
        device=device,
    ).peak_bytes


def output_bytes(
    *, n: int, m: int, nnz: int, p: int, batch: int = 1, dtype: Any = torch.float32
) -> int:
    """Bytes of the outputs themselves: ``C``, the values of ``A.grad`` and ``B.grad``.

    The floor of any implementation's extra memory (index copies excluded).

    >>> output_bytes(n=10, m=20, nnz=30, p=4)
    600
    """
    e = torch.empty(0, dtype=dtype_from(dtype)).element_size()
    return batch * (n * p + nnz + m * p) * e
