r"""The implementations the benchmark compares ``sparse_mm`` with, and their memory models.

``torch.sparse.mm`` with autograd on a COO or a CSR ``A`` (2-D only), and
``torchsparsegradutils.sparse_mm`` 0.2.7, an optional dependency imported only when run.
Each model lists the stages of one forward + backward as torch 2.13's CPU kernels allocate
them (see :mod:`sparsegrad_lab.footprint` for the notation); the lessons and the
benchmark read them through :func:`~sparsegrad_lab.memory_model.predict_peak_bytes`.

>>> from sparsegrad_lab.memory_model import predict_peak_bytes
>>> predict_peak_bytes("torch_coo", n=1000, m=1000, nnz=10_000, p=16, layout="coo") > 4e6
True
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from .footprint import Dims, MemoryBreakdown, Stages, cpu_only, spmm_temporaries

__all__ = ["torch_coo_stages", "torch_csr_stages", "tsgu_matmul", "tsgu_stages"]


def tsgu_matmul() -> Callable[[Tensor, Tensor], Tensor]:
    """``torchsparsegradutils.sparse_mm``, imported here so the package never needs it."""
    import torchsparsegradutils

    def tsgu(A: Tensor, B: Tensor) -> Tensor:
        return torchsparsegradutils.sparse_mm(A, B)  # type: ignore[no-any-return]

    return tsgu


def torch_coo_stages(d: Dims) -> Stages:
    r"""``torch.sparse.mm`` autograd on a 2-D COO ``A``.

    Forward: ``C`` and, on CPU, a temporary of its size. Backward of ``A``: the dense
    :math:`G B^{\mathsf H}` (:math:`N M e`), then ``sparse_mask`` copies ``A``'s indices
    (:math:`2 Z e + 16 Z` of temporaries). Backward of ``B``: ``Aᵀ @ G``, with ``Aᵀ`` a copy
    of ``A``'s indices and values (:math:`Z e + 16 Z`).
    """
    N, M, Z, p, e = d.N, d.M, d.Z, d.p, d.elem
    C = {"C": N * p * e}
    grad_B = {"grad B": M * p * e}
    fwd = MemoryBreakdown("forward spmm", {**C, **cpu_only(d, "spmm result temporary", N * p * e)})
    gA = {"A.grad values": Z * e, "A.grad indices": 2 * Z * 8}
    dense = MemoryBreakdown(
        "dense G Bᴴ, then mask",
        {**C, "dense G Bᴴ (n x m)": N * M * e, "sparse_mask temporaries": 2 * Z * e + 2 * Z * 8},
    )
    At = {"Aᵀ (copy of A)": Z * e + 2 * Z * 8}
    tr = MemoryBreakdown("transpose", {**C, **gA, **At, "transpose temporary": Z * 8})
    spmm_B = MemoryBreakdown(
        "grad B spmm",
        {**C, **gA, **At, **grad_B, **cpu_only(d, "spmm result temporary", M * p * e)},
    )
    return [fwd, dense, tr, spmm_B], C


def torch_csr_stages(d: Dims) -> Stages:
    r"""``torch.sparse.mm`` autograd on a 2-D CSR ``A``.

    ``A.grad`` is ``sampled_addmm`` into a clone of ``A`` and comes out with int64 indices
    (:math:`8 (N+1) + 8 Z + Z e`); ``Aᵀ`` is converted to CSR for ``B.grad``
    (:func:`_csr_transpose_conversion`); autograd then clones ``A.grad`` once more. Complex
    dtypes miss about :math:`2 Z e` of conjugate copies.
    """
    N, M, Z, p, e, i = d.N, d.M, d.Z, d.p, d.elem, d.idx
    C = {"C": N * p * e}
    grad_B = {"grad B": M * p * e}
    fwd = MemoryBreakdown("forward spmm", {**C, **spmm_temporaries(d, N, i)})
    gA = {"A.grad (int64 CSR)": (N + 1) * 8 + Z * 8 + Z * e}
    sampled = MemoryBreakdown(
        "sampled_addmm", {**C, "clone of A": Z * e + Z * i + (N + 1) * i, **gA}
    )
    at_sort, at_gather, At = _csr_transpose_conversion(d, i)
    sort = MemoryBreakdown("Aᵀ to CSR: sort", {**C, **gA, **at_sort})
    gather = MemoryBreakdown("Aᵀ to CSR: gather", {**C, **gA, **at_gather})
    spmm_B = MemoryBreakdown(
        "grad B spmm", {**C, **gA, **At, **grad_B, **spmm_temporaries(d, M, i)}
    )
    acc = MemoryBreakdown(
        "A.grad accumulated", {**C, **gA, **grad_B, "A.grad clone": sum(gA.values())}
    )
    return [fwd, sampled, sort, gather, spmm_B, acc], C


def _csr_transpose_conversion(
    d: Dims, i: int
) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    r"""torch's ``Aᵀ`` of a CSR ``A`` (``i`` bytes per index) converted back to CSR.

    Row pointers and COO indices, :math:`(N+1) i + 2 Z i`, throughout; plus :math:`32 Z` at
    its sort, or :math:`2 Z i + 16 Z + Z e + 3 (M+1) i` at its gather; it leaves the CSR of
    ``Aᵀ``, :math:`2 Z i + Z e + (M+1) i`. Returns the live terms at the sort, at the gather,
    and the result.
    """
    N, M, Z, e = d.N, d.M, d.Z, d.elem
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


def tsgu_stages(d: Dims) -> Stages:
    r"""``torchsparsegradutils.sparse_mm`` 0.2.7: gather backward, torch for ``B.grad``.

    A batch (approximate: a Python loop over items) is first copied into one block-diagonal
    matrix saved for backward (COO :math:`Z(16 + e)`, through per-item copies of about
    :math:`Z(16 + e) + 48 Z`; CSR :math:`8 (N+1) + Z(8 + e)`), and the backward holds the
    re-stacked ``A.grad`` while ``B.grad`` is made. For CSR, ``repeat_interleave`` expands
    the rows (:math:`8 Z`, with :math:`16 N + 8 \max(N, Z)` of temporaries). The gather
    backward takes :math:`3 Z p e`; the two gathered blocks stay alive while ``B.grad`` is
    computed with torch (a COO copy of ``A``'s indices, or the CSR conversion, which runs
    after ``B.grad`` and its CPU temporary are allocated).
    """
    N, M, Z, p, e, i = d.N, d.M, d.Z, d.p, d.elem, d.idx
    coo = d.layout == "coo"
    alive = {"C": N * p * e}
    assembly: dict[str, int] = {}
    stacked_gA: dict[str, int] = {}
    if d.b > 1:
        if coo:
            alive["block-diagonal copy of A"] = Z * (16 + e)
            assembly = {"per-item copies": Z * (16 + e), "shifted, coalesced, stacked": 48 * Z}
            stacked_gA = {"stacked grad A": Z * (24 + e)}
        else:
            alive["block-diagonal copy of A"] = (N + 1) * 8 + Z * (8 + e)
            assembly = {"shifted indices": Z * 8 + N * 8}
            stacked_gA = {"stacked grad A": d.b * (d.n + 1) * 8 + Z * (8 + e)}
        i = 8  # the block-diagonal copy has int64 indices
    fwd_tmp = cpu_only(d, "spmm result temporary", N * p * e) if coo else spmm_temporaries(d, N, i)
    stages = [
        MemoryBreakdown("block-diagonal assembly", {**alive, **assembly}),
        MemoryBreakdown("forward spmm", {**alive, **fwd_tmp}),
    ]
    rows: dict[str, int] = {}
    if not coo:  # repeat_interleave expands the row pointers: iota, diff, cumsum, output
        rows = {"expanded rows (int64)": Z * 8}
        stages.append(
            MemoryBreakdown(
                "expand rows",
                {**alive, **rows, "repeat_interleave temporaries": 2 * N * 8 + max(N, Z) * 8},
            )
        )
    gathered = {"gathered rows of G": Z * p * e, "gathered rows of B": Z * p * e}
    gA = {"grad values": Z * e}
    stages.append(
        MemoryBreakdown("gather", {**alive, **rows, **gathered, "their product": Z * p * e, **gA})
    )
    grad_B = {"grad B": M * p * e}
    live = {**alive, **rows, **gathered, **gA, **stacked_gA}
    out_B = {**grad_B, **cpu_only(d, "spmm result temporary", M * p * e)}
    if coo:
        sparse_gA = {} if d.b > 1 else {"sparse grad A (copies A's indices)": Z * e + 2 * Z * 8}
        stages.append(MemoryBreakdown("grad B spmm", {**live, **sparse_gA, **out_B}))
        return stages, alive
    at_sort, at_gather, At = _csr_transpose_conversion(d, i)
    # torch.sparse.mm(A.t(), G) allocates its result (and the CPU temporary) first, then
    # converts the transposed A to CSR inside addmm.
    stages += [
        MemoryBreakdown("Aᵀ to CSR: sort", {**live, **out_B, **at_sort}),
        MemoryBreakdown("Aᵀ to CSR: gather", {**live, **out_B, **at_gather}),
        MemoryBreakdown("grad B spmm", {**live, **At, **grad_B, **spmm_temporaries(d, M, i)}),
    ]
    return stages, alive
