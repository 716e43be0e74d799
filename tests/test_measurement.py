"""Tests of the two memory measurements.

The fresh child process's resident high-water mark is compared once with the model (which
``test_memory_model.py`` checks against the in-process allocator in detail). The memory
guard's policy is tested where it is used: the generators (``test_example_matrices.py``),
the sweep, the widgets and the benchmark.
"""

from __future__ import annotations

import pytest
import torch
from testing import CUDA_DEVICE_PARAMS

from sparsegrad_lab.implementations import Case, get_implementation, make_inputs
from sparsegrad_lab.measurement import measure_in_fresh_process, measure_peak_bytes
from sparsegrad_lab.memory_model import predict_peak_bytes

#: Against a fresh process's resident set (adds page rounding and MKL/OpenMP buffers).
FRESH_RTOL = 0.20


def test_measure_peak_bytes_sees_temporaries_and_results_on_cpu() -> None:
    def temporaries() -> None:
        a = torch.empty(250_000)  # 1 MB
        b = torch.empty(500_000)  # 2 MB, while a is alive
        del a, b

    assert measure_peak_bytes(temporaries) == 3_000_000
    assert measure_peak_bytes(lambda: torch.empty(1000, dtype=torch.float64)) == 8000


@pytest.mark.parametrize("device", CUDA_DEVICE_PARAMS)
def test_measure_peak_bytes_on_cuda(device: torch.device) -> None:
    peak = measure_peak_bytes(lambda: torch.empty(1_000_000, device=device), device)
    assert 4_000_000 <= peak < 4_000_000 + 2**21  # the caching allocator rounds blocks up
    # The model's CUDA terms are the CPU ones without the CPU-only temporaries; check the
    # strategies whose peak is dominated by well-known tensors.
    case = Case(n=20_000, m=20_000, nnz=200_000, p=32, device=str(device))
    for impl in ("sddmm", "gather"):
        A, B, G = make_inputs(case)
        fn = get_implementation(impl).matmul()
        fn(A, B).backward(G)
        A.grad = B.grad = None
        measured = measure_peak_bytes(lambda: fn(A, B).backward(G), device)  # noqa: B023
        predicted = predict_peak_bytes(impl, case)
        assert 0.5 * measured <= predicted <= 1.5 * measured, (impl, predicted, measured)


@pytest.mark.slow
def test_fresh_process_agrees_with_the_model() -> None:
    case = Case(n=20_000, m=20_000, nnz=200_000, p=32)
    result = measure_in_fresh_process("gather", case, threads=1, timeout_s=120)
    predicted = predict_peak_bytes("gather", case)
    assert result.baseline_bytes > 50 * 2**20  # an interpreter with torch loaded
    assert result.fwd_s > 0 and result.bwd_s > 0
    assert "VmHWM" in result.method or "ru_maxrss" in result.method
    assert abs(result.peak_extra_bytes - predicted) <= FRESH_RTOL * predicted, (
        result,
        predicted,
    )


@pytest.mark.slow
def test_fresh_process_reports_a_failing_child() -> None:
    with pytest.raises(ValueError, match="impl must be one of"):
        measure_in_fresh_process("magic", Case(n=3, m=3, nnz=2, p=2))
    # float16 runs on CUDA only: sparse_mm refuses it inside the child.
    half = Case(n=3, m=3, nnz=2, p=2, dtype="float16")
    with pytest.raises(ChildProcessError, match=r"sddmm: A 3 x 3 .* failed: InputTypeError"):
        measure_in_fresh_process("sddmm", half, timeout_s=120)
