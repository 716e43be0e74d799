"""Tests of the two memory measurements and the memory guard.

The fresh child process's resident high-water mark is compared once with the model (which
``test_memory_model.py`` checks against the in-process allocator in detail).
"""

from __future__ import annotations

import pytest
import torch
from testing import CUDA_DEVICE_PARAMS

from sparsegrad_lab import MemoryBudgetError
from sparsegrad_lab import memory as mem
from sparsegrad_lab import memory_model as model

#: Against a fresh process's resident set (adds page rounding and MKL/OpenMP buffers).
FRESH_RTOL = 0.20


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
        predicted = model.predict_peak_bytes(impl, **case, device=device)  # type: ignore[arg-type]
        assert 0.5 * measured <= predicted <= 1.5 * measured, (impl, predicted, measured)


def test_fresh_process_agrees_with_the_model() -> None:
    case = {"n": 20_000, "m": 20_000, "nnz": 200_000, "p": 32, "layout": "csr"}
    spec: mem.CaseSpec = {"impl": "gather", "threads": 1, **case}  # type: ignore[typeddict-item]
    result = mem.measure_in_fresh_process(spec, timeout_s=120)
    predicted = model.predict_peak_bytes("gather", **case)  # type: ignore[arg-type]
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
    what = model.describe_case("dense", n=100_000, m=100_000, nnz=1_000_000, p=64)
    need = model.predict_peak_bytes("dense", n=100_000, m=100_000, nnz=1_000_000, p=64)
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
