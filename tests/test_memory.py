"""Tests of the memory model, the two measurements and the memory guard.

The model is checked against torch.profiler's allocation events on CPU (exact, fast), and
once against a fresh child process's resident high-water mark. Tolerance: the model must
agree with the in-process measurement within ``MODEL_RTOL`` (10 %) for float32/float64 at
sizes whose peak is a few MiB or more -- the promise stated in ``predict_peak_bytes``.
"""

from __future__ import annotations

import pytest
import torch
from testing import CUDA_DEVICE_PARAMS

from sparsegrad_lab import MemoryBudgetError
from sparsegrad_lab import memory as mem

#: Relative agreement the model promises against the allocator-level measurement.
MODEL_RTOL = 0.10
#: Against a fresh process's resident set (adds page rounding and MKL/OpenMP buffers).
FRESH_RTOL = 0.20

# Small but not tiny: peaks of 1-40 MiB, each measured in well under a second.
SIZES = {"n": 2000, "m": 3000, "nnz": 30_000, "p": 32}


def _measure_phases(impl: str, phases: tuple[str, ...], **case: object) -> dict[str, int]:
    spec = {"impl": impl, **case}
    A, B, G = mem.make_case_inputs(spec)  # type: ignore[arg-type]
    fn = mem.implementation(impl)
    fn(A, B).backward(G)  # warm-up: lazily created state is not the op's memory
    measured = {}
    # The suite turns on torch's sparse invariant checks, which allocate; the model
    # describes ordinary runs.
    with torch.sparse.check_sparse_tensor_invariants(enable=False):
        for phase in phases:
            A.grad = B.grad = None
            if phase == "fwd":
                measured[phase] = mem.measure_peak_bytes(lambda: fn(A, B))
            elif phase == "fwd+bwd":
                measured[phase] = mem.measure_peak_bytes(lambda: fn(A, B).backward(G))
            else:
                C = fn(A, B)
                measured[phase] = mem.measure_peak_bytes(lambda: C.backward(G))  # noqa: B023
                del C
    return measured


def _assert_model_agrees(impl: str, phases: tuple[str, ...], **case: object) -> None:
    for phase, measured in _measure_phases(impl, phases, **case).items():
        predicted = mem.predict_peak_bytes(impl, phase=phase, **case)  # type: ignore[arg-type]
        stage = mem.memory_breakdown(impl, phase=phase, **case).stage  # type: ignore[arg-type]
        assert measured > 0
        assert abs(predicted - measured) <= MODEL_RTOL * measured, (
            f"{impl} {phase} {case}: model {predicted} B vs measured {measured} B "
            f"(ratio {predicted / measured:.3f}, predicted peak at {stage!r})"
        )


@pytest.mark.parametrize(
    ("impl", "layout"),
    [
        (impl, layout)
        for impl in mem.IMPLEMENTATIONS
        for layout in ("coo", "csr")
        if mem.unsupported_reason(impl, layout=layout) is None
    ],
)
def test_model_agrees_with_measurement_for_every_impl(impl: str, layout: str) -> None:
    if impl == "tsgu":
        pytest.importorskip("torchsparsegradutils")
    _assert_model_agrees(impl, mem.PHASES, layout=layout, **SIZES)


@pytest.mark.parametrize(
    ("impl", "extra"),
    [
        ("sddmm", {"layout": "csr", "index_dtype": torch.int32}),
        ("torch_csr", {"layout": "csr", "index_dtype": torch.int32}),
        ("sddmm", {"layout": "coo", "batch": 4, "n": 1000, "m": 1500, "nnz": 8000}),
        ("gather", {"layout": "csr", "batch": 4, "n": 1000, "m": 1500, "nnz": 8000}),
        ("sddmm", {"layout": "csr", "dtype": torch.float64}),
        ("sddmm_kept", {"layout": "coo", "batch": 4, "n": 1000, "m": 1500, "nnz": 8000}),
        ("sddmm_kept", {"layout": "csr", "batch": 4, "n": 1000, "m": 1500, "nnz": 8000}),
        ("sddmm_kept", {"layout": "csr", "dtype": torch.complex64}),
        # few entries per row: the n- and m-sized terms dominate
        ("sddmm", {"layout": "coo", "n": 50_000, "m": 50_000, "nnz": 20_000, "p": 8}),
        ("torch_csr", {"layout": "csr", "n": 50_000, "m": 50_000, "nnz": 20_000, "p": 8}),
    ],
)
def test_model_agrees_on_other_shapes_and_dtypes(impl: str, extra: dict[str, object]) -> None:
    _assert_model_agrees(impl, ("fwd+bwd",), **{**SIZES, **extra})


def test_model_orders_the_strategies_as_the_lessons_say() -> None:
    kw = {"n": 100_000, "m": 100_000, "nnz": 1_000_000, "p": 64}
    sddmm, gather, dense = (mem.predict_peak_bytes(s, **kw) for s in ("sddmm", "gather", "dense"))
    outputs = mem.output_bytes(**kw)
    # The outputs, plus index bookkeeping and (on CPU) spmm temporaries of C's and ∇B's size.
    assert outputs < sddmm < 3 * outputs
    assert gather > 3 * kw["nnz"] * kw["p"] * 4  # the three nnz x p blocks
    assert dense > kw["n"] * kw["m"] * 4  # the dense n x m product
    # A kept pattern already holds its transpose (16 bytes per entry: perm, rows, columns).
    kept = mem.predict_peak_bytes("sddmm_kept", **kw)
    assert outputs < kept <= sddmm - 16 * kw["nnz"]


def test_breakdown_sums_to_the_prediction_and_bwd_excludes_the_forward() -> None:
    full = mem.memory_breakdown("sddmm", **SIZES, phase="fwd+bwd")
    bwd = mem.memory_breakdown("sddmm", **SIZES, phase="bwd")
    assert full.peak_bytes == sum(full.terms.values())
    assert bwd.peak_bytes == full.peak_bytes - sum(bwd.baseline.values())
    assert "C" in bwd.baseline
    assert mem.predict_peak_bytes("sddmm", **SIZES, phase="fwd") < full.peak_bytes


def test_model_refuses_what_it_cannot_describe() -> None:
    with pytest.raises(ValueError, match="impl must be one of"):
        mem.predict_peak_bytes("magic", **SIZES)
    with pytest.raises(ValueError, match="phase must be one of"):
        mem.predict_peak_bytes("sddmm", **SIZES, phase="both")
    with pytest.raises(ValueError, match=r"torch_coo runs torch\.sparse\.mm on a COO A"):
        mem.predict_peak_bytes("torch_coo", **SIZES, layout="csr")
    with pytest.raises(ValueError, match="2-D matrices only"):
        mem.predict_peak_bytes("torch_csr", **SIZES, batch=2)
    with pytest.raises(ValueError, match="nnz must be an int >= 0, got -1"):
        mem.predict_peak_bytes("sddmm", n=3, m=3, nnz=-1, p=2)


def test_measure_peak_bytes_sees_temporaries_and_results_on_cpu() -> None:
    def temporaries() -> None:
        a = torch.empty(250_000)  # 1 MB
        b = torch.empty(500_000)  # 2 MB, while a is alive
        del a, b

    assert mem.measure_peak_bytes(temporaries) == 3_000_000
    assert mem.measure_peak_bytes(lambda: torch.empty(1000, dtype=torch.float64)) == 8000


@pytest.mark.parametrize("device", CUDA_DEVICE_PARAMS)
def test_measure_peak_bytes_on_cuda(device: torch.device) -> None:
    peak = mem.measure_peak_bytes(lambda: torch.empty(1_000_000, device=device), device)
    assert 4_000_000 <= peak < 4_000_000 + 2**21  # the caching allocator rounds blocks up
    # The model's CUDA terms are the CPU ones without the CPU-only temporaries; check the
    # strategies whose peak is dominated by well-known tensors.
    for impl in ("sddmm", "gather"):
        case = {"n": 20_000, "m": 20_000, "nnz": 200_000, "p": 32, "layout": "csr"}
        A, B, G = mem.make_case_inputs({"impl": impl, "device": str(device), **case})  # type: ignore[typeddict-item]
        fn = mem.implementation(impl)
        fn(A, B).backward(G)
        A.grad = B.grad = None
        measured = mem.measure_peak_bytes(lambda: fn(A, B).backward(G), device)  # noqa: B023
        predicted = mem.predict_peak_bytes(impl, **case, device=device)  # type: ignore[arg-type]
        assert 0.5 * measured <= predicted <= 1.5 * measured, (impl, predicted, measured)


def test_fresh_process_agrees_with_the_model() -> None:
    case = {"n": 20_000, "m": 20_000, "nnz": 200_000, "p": 32, "layout": "csr"}
    spec: mem.CaseSpec = {"impl": "gather", "threads": 1, **case}  # type: ignore[typeddict-item]
    result = mem.measure_in_fresh_process(spec, timeout_s=120)
    predicted = mem.predict_peak_bytes("gather", **case)  # type: ignore[arg-type]
    assert result.baseline_bytes > 50 * 2**20  # an interpreter with torch loaded
    assert result.fwd_s > 0 and result.bwd_s > 0
    assert "VmHWM" in result.method or "ru_maxrss" in result.method
    assert abs(result.peak_extra_bytes - predicted) <= FRESH_RTOL * predicted, (
        result,
        predicted,
    )


def test_fresh_process_reports_a_failing_child() -> None:
    with pytest.raises(ValueError, match="needs key 'p'"):
        mem.measure_in_fresh_process({"impl": "sddmm", "n": 3, "m": 3, "nnz": 2})
    bad: mem.CaseSpec = {"impl": "sddmm", "n": 3, "m": 3, "nnz": 99, "p": 2}
    with pytest.raises(ChildProcessError, match="nnz"):
        mem.measure_in_fresh_process(bad, timeout_s=120)


def test_check_fits_refuses_with_the_sizes_in_the_message() -> None:
    what = mem.describe_case("dense", n=100_000, m=100_000, nnz=1_000_000, p=64)
    need = mem.predict_peak_bytes("dense", n=100_000, m=100_000, nnz=1_000_000, p=64)
    with pytest.raises(MemoryBudgetError) as info:
        mem.check_fits(need, what=what)
    message = str(info.value)
    assert "dense: A 100000 x 100000 (csr, nnz=1000000), p=64, float32" in message
    assert "would need 37.30 GiB" in message
    assert "budget 512.00 MiB" in message
    assert info.value.needed_bytes == need
    assert info.value.budget_bytes == mem.DEFAULT_BUDGET_BYTES
    assert isinstance(info.value, MemoryError)  # what callers catch anyway
    mem.check_fits(mem.DEFAULT_BUDGET_BYTES, what=what)  # exactly at the budget fits


def test_guarded_returns_refused_instead_of_running() -> None:
    ran: list[int] = []

    def work() -> int:
        ran.append(1)
        return 7

    refused = mem.guarded(work, predicted_bytes=2**31, what="gather on a big A", budget=2**30)
    assert refused.refused and refused.status == "refused" and refused.value is None
    assert "gather on a big A would need 2.00 GiB" in refused.message
    assert "budget 1.00 GiB" in refused.message
    assert ran == []
    done = mem.guarded(work, predicted_bytes=2**20, what="small", budget=2**30)
    assert not done.refused and done.value == 7 and done.message == "" and ran == [1]


def test_default_budget_leaves_binder_headroom() -> None:
    # A kernel with torch loaded (~260 MiB), the Jupyter server (~150 MiB) and a budget's
    # worth of temporaries must stay below the lessons' 1.5 GiB limit.
    assert 260 * 2**20 + 150 * 2**20 + mem.DEFAULT_BUDGET_BYTES < 1.5 * 2**30
