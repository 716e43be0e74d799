"""The byte terms of the operation, and the one number the guard and the model share.

``sparse_mm``'s memory guard predicts a call from its tensors, the lab's model predicts the
same call from a :class:`~sparsegrad_lab.implementations.Case`; both read
:mod:`sparsegrad_lab.footprint`, so for every case they must give one number -- and the
guard must act on it.
"""

from __future__ import annotations

import pytest
import torch

import sparsegrad_lab.memory_guard as memory_guard
from sparsegrad_lab import MemoryBudgetError, sparse_mm, sparsity_pattern
from sparsegrad_lab.footprint import (
    Dims,
    peak_of,
    sampled_mm_footprint,
    sparse_mm_footprint,
    sparse_mm_stages,
    sparse_storage_bytes,
    transpose_bytes,
    transpose_terms,
)
from sparsegrad_lab.implementations import Case, make_inputs
from sparsegrad_lab.measurement import measure_peak_bytes
from sparsegrad_lab.memory_model import memory_breakdown, predict_peak_bytes, storage_bytes
from sparsegrad_lab.pattern import pattern_of
from sparsegrad_lab.routes import SCATTER_MAX_BYTES, first_order_route

# Each route of the forward and the backward, both layouts, batches, dtypes, index dtypes.
CASES = [
    Case(n=50, m=40, nnz=300, p=8, layout="coo"),  # torch's COO product, one shared gather
    Case(n=50, m=40, nnz=300, p=8, layout="csr", index_dtype="int32"),
    Case(n=400, m=300, nnz=5000, p=64, layout="coo", dtype="float64"),  # a scatter for ∇B
    Case(n=400, m=300, nnz=5000, p=64, layout="csr", dtype="complex64"),
    Case(n=1000, m=1200, nnz=20_000, p=64, layout="csr"),  # the transposed pattern for ∇B
    Case(n=1000, m=1200, nnz=20_000, p=64, layout="coo", dtype="complex64"),
    Case(n=100, m=80, nnz=500, p=16, batch=3, layout="coo"),
    Case(n=100, m=80, nnz=500, p=16, batch=3, layout="csr", index_dtype="int32"),
]
IMPLS = ["sddmm", "gather", "dense", "sddmm_kept"]


def _call(impl: str, case: Case) -> tuple[torch.Tensor, torch.Tensor, str, object]:
    """The inputs, strategy and pattern of ``impl``'s call on ``case``, as the model sees it.

    ``"sddmm_kept"`` is a call whose kept pattern built its transpose in an earlier call.
    """
    A, B, G = make_inputs(case)
    if impl != "sddmm_kept":
        return A, B, impl, None
    kept = sparsity_pattern(A)
    sparse_mm(A, B, pattern=kept).backward(G)
    assert kept.has_transpose()
    A.grad = B.grad = None
    return A, B, "sddmm", kept


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", CASES, ids=Case.label)
def test_the_guards_prediction_is_the_models_peak(impl: str, case: Case) -> None:
    A, B, strategy, kept = _call(impl, case)
    guard = sparse_mm_footprint(A, B, strategy, kept=kept)  # type: ignore[arg-type]
    model = memory_breakdown(impl, case)
    assert guard.peak_bytes == predict_peak_bytes(impl, case)
    assert (guard.stage, guard.terms) == (model.stage, model.terms)
    with torch.no_grad():  # no backward to come: the forward's stages alone
        forward = sparse_mm_footprint(A, B, strategy, kept=kept)  # type: ignore[arg-type]
    assert forward.peak_bytes == predict_peak_bytes(impl, case, phase="fwd")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", CASES[::3], ids=Case.label)
def test_sparse_mm_refuses_at_the_models_peak(
    impl: str, case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The number the guard acts on: one byte less available than the model's peak is a
    refusal that names it; the peak itself is not."""
    A, B, strategy, kept = _call(impl, case)
    peak = predict_peak_bytes(impl, case)
    monkeypatch.setattr(memory_guard, "NEGLIGIBLE_BYTES", 0)
    monkeypatch.setattr(memory_guard, "available_bytes", lambda device: peak - 1)
    with pytest.raises(MemoryBudgetError) as info:
        sparse_mm(A, B, backward=strategy, pattern=kept)  # type: ignore[arg-type]
    assert info.value.needed_bytes == peak
    monkeypatch.setattr(memory_guard, "available_bytes", lambda device: peak)
    assert (
        sparse_mm(A, B, backward=strategy, pattern=kept).shape
        == (  # type: ignore[arg-type]
            *A.shape[:-1],
            case.p,
        )
    )


def test_a_kept_pattern_counts_its_transpose_until_it_has_one() -> None:
    case = Case(n=1000, m=1200, nnz=20_000, p=64, layout="csr")
    A, B, G = make_inputs(case)
    kept = sparsity_pattern(A)
    fresh = sparse_mm_footprint(A, B, "sddmm", kept=kept)
    sparse_mm(A, B, pattern=kept).backward(G)
    held = sparse_mm_footprint(A, B, "sddmm", kept=kept)
    assert held.peak_bytes == predict_peak_bytes("sddmm_kept", case)
    # Before its first backward it sorts, as an unkept pattern does, but is not built here;
    # it also builds the inverse permutation the registered operator reads (int32 here).
    unkept = predict_peak_bytes("sddmm", case)
    assert held.peak_bytes < fresh.peak_bytes <= unkept + 4 * case.nnz
    kw = {"b": 1, "n": 1000, "m": 1200, "Z": 20_000, "p": 64, "idx": 8, "cpu": True}
    d = Dims(**kw, dtype=torch.float32, layout="csr")
    inverse = sparse_mm_stages(d, "sddmm", kept=True, transposed=False)[0]
    assert any("transpose inverse perm" in stage.terms for stage in inverse)


def test_the_copies_a_call_makes_are_counted() -> None:
    """A strided B that torch's CSR product copies in full, and A's strided index views."""
    A = torch.eye(300).to_sparse_csr()
    B = torch.ones(1, 4).expand(300, 4)
    forward = sparse_mm_footprint(A, B, "sddmm")
    assert forward.terms["contiguous copy of B"] == 300 * 4 * 4
    assert "contiguous copy of B" not in sparse_mm_footprint(A, B.contiguous(), "sddmm").terms
    edges = torch.stack([torch.arange(300), torch.arange(300)], dim=1)  # (nnz, 2)
    A = torch.sparse_coo_tensor(edges.t(), torch.ones(300), (300, 300), is_coalesced=True)
    assert not A.indices().is_contiguous()
    terms = sparse_mm_footprint(A, torch.ones(300, 4), "sddmm").terms
    assert terms["contiguous copies of A's strided indices"] == 2 * 300 * 8


def test_the_transpose_is_counted_until_it_is_built() -> None:
    pattern = pattern_of(torch.eye(10).to_sparse())
    sort, built = transpose_terms(10, 10, 10, 8)
    assert transpose_bytes(pattern) == max(sum(sort.values()), sum(built.values()))
    pattern.transpose  # noqa: B018 - built on first use
    assert transpose_bytes(pattern) == 0


def test_transpose_terms_count_the_transposes_own_tensors() -> None:
    """Its permutation (int64), rows, columns and row pointers (int32 here), as built."""
    A = torch.rand(30, 20).lt(0.3).to_sparse()
    pattern = pattern_of(A)
    _sort, built = transpose_terms(30, 20, pattern.nnz, 8)
    transpose = pattern.transpose
    t = transpose.pattern
    held = [transpose.perm, t.row, t.col, t.crow]
    assert {x.dtype for x in (t.row, t.col, t.crow)} == {torch.int32}
    assert sum(x.numel() * x.element_size() for x in held) == (
        built["transpose perm (int64)"]
        + built["transpose rows + cols"]
        + built["transpose row pointers"]
    )


@pytest.mark.parametrize("layout", ["coo", "csr"])
@pytest.mark.parametrize("batch", [1, 3])
def test_sparse_storage_bytes_counts_the_real_arrays(layout: str, batch: int) -> None:
    A, _B, _G = make_inputs(Case(n=40, m=50, nnz=123, p=1, batch=batch, layout=layout))
    arrays = (
        (A._indices(), A._values())
        if layout == "coo"
        else (A.crow_indices(), A.col_indices(), A.values())
    )
    real = sum(x.numel() * x.element_size() for x in arrays)
    sparse_dims = 3 if batch > 1 else 2
    assert real == sparse_storage_bytes(
        layout, rows=40, nnz=batch * 123, value_bytes=4, batch=batch, sparse_dims=sparse_dims
    )
    assert real == storage_bytes(A)[layout]


def test_the_scatter_bound_is_where_the_model_and_the_route_turn() -> None:
    """One bound decides the route of the operation and of the model alike."""
    p, elem = 64, 4
    largest = SCATTER_MAX_BYTES // (p * elem)
    assert first_order_route("gather", nnz=largest, p=p, elem=elem, kept=False) == "scatter"
    assert first_order_route("gather", nnz=largest + 1, p=p, elem=elem, kept=False) == "transpose"
    for nnz, sorted_ in ((largest, False), (largest + 1, True)):
        d = Dims(b=1, n=nnz, m=nnz, Z=nnz, p=p, dtype=torch.float32, idx=8, layout="csr", cpu=True)
        stages, _alive = sparse_mm_stages(d, "gather")
        assert any(s.stage == "transpose: sort" for s in stages) == sorted_


def test_peak_of_a_phase() -> None:
    d = Dims(b=1, n=100, m=100, Z=1000, p=8, dtype=torch.float32, idx=8, layout="csr", cpu=True)
    model = sparse_mm_stages(d, "gather")
    full, fwd, bwd = (peak_of(model, phase) for phase in ("fwd+bwd", "fwd", "bwd"))
    assert fwd.stage == "forward spmm" and fwd.peak_bytes <= full.peak_bytes
    assert bwd.baseline == model[1] and bwd.peak_bytes == full.peak_bytes - sum(model[1].values())


def test_sampled_mm_footprint_counts_values_copies_and_the_backward() -> None:
    A = torch.ones(10, 10).to_sparse()  # 100 entries, 11 row pointers to build
    K = torch.ones(10, 2)
    values, backward = sampled_mm_footprint(A, torch.ones(10, 2), K.T, "sddmm", kept=False)
    assert values.terms == {"values": 400, "pattern row pointers": 88}
    assert backward.terms == {}
    X = torch.ones(10, 2, requires_grad=True)
    values, backward = sampled_mm_footprint(A, X, K.T.contiguous(), "sddmm", kept=True)
    assert values.terms == {"values": 400, "contiguous copy of Yᴴ": 80}
    assert backward.terms["grad X"] == backward.terms["grad Y"] == 80
    assert backward.terms["transpose of A"] > 0


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_a_kept_patterns_first_call_allocates_no_more_than_the_guard_predicts(layout: str) -> None:
    # The first call builds the transpose and the operator's inverse permutation, which the
    # pattern then holds; what it allocates beyond them is freed by the end of the step.
    case = Case(n=4000, m=4000, nnz=80_000, p=64, layout=layout)
    A, B, G = make_inputs(case)
    sparse_mm(A, B).backward(G)  # torch's own first-call costs paid before measuring
    A.grad = B.grad = None
    kept = sparsity_pattern(A)
    predicted = sparse_mm_footprint(A, B, "sddmm", kept=kept).peak_bytes
    measured = measure_peak_bytes(lambda: sparse_mm(A, B, pattern=kept).backward(G))
    assert kept.has_transpose()
    assert 0.9 * predicted <= measured <= predicted
