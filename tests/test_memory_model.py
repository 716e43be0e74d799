"""Tests of the analytic memory model against what torch actually allocates.

The model is checked against torch.profiler's allocation events on CPU (exact, fast).
Tolerance: it must agree with the in-process measurement within ``MODEL_RTOL`` (10 %) for
float32/float64 at sizes whose peak is a few MiB or more -- the promise stated in
``predict_peak_bytes``. (The fresh-process check is in ``test_memory.py``.)
"""

from __future__ import annotations

import pytest
import torch

from sparsegrad_lab import memory as mem
from sparsegrad_lab import memory_model as model

#: Relative agreement the model promises against the allocator-level measurement.
MODEL_RTOL = 0.10

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
        predicted = model.predict_peak_bytes(impl, phase=phase, **case)  # type: ignore[arg-type]
        stage = model.memory_breakdown(impl, phase=phase, **case).stage  # type: ignore[arg-type]
        assert measured > 0
        assert abs(predicted - measured) <= MODEL_RTOL * measured, (
            f"{impl} {phase} {case}: model {predicted} B vs measured {measured} B "
            f"(ratio {predicted / measured:.3f}, predicted peak at {stage!r})"
        )


@pytest.mark.parametrize(
    ("impl", "layout"),
    [
        (impl, layout)
        for impl in model.IMPLEMENTATIONS
        for layout in ("coo", "csr")
        if model.unsupported_reason(impl, layout=layout) is None
    ],
)
def test_model_agrees_with_measurement_for_every_impl(impl: str, layout: str) -> None:
    if impl == "tsgu":
        pytest.importorskip("torchsparsegradutils")
    _assert_model_agrees(impl, model.PHASES, layout=layout, **SIZES)


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
    sddmm, gather, dense = (model.predict_peak_bytes(s, **kw) for s in ("sddmm", "gather", "dense"))
    outputs = model.output_bytes(**kw)
    # The outputs, plus index bookkeeping and (on CPU) spmm temporaries of C's and ∇B's size.
    assert outputs < sddmm < 3 * outputs
    assert gather > 3 * kw["nnz"] * kw["p"] * 4  # the three nnz x p blocks
    assert dense > kw["n"] * kw["m"] * 4  # the dense n x m product
    # A kept pattern already holds its transpose (16 bytes per entry: perm, rows, columns).
    kept = model.predict_peak_bytes("sddmm_kept", **kw)
    assert outputs < kept <= sddmm - 16 * kw["nnz"]


def test_breakdown_sums_to_the_prediction_and_bwd_excludes_the_forward() -> None:
    full = model.memory_breakdown("sddmm", **SIZES, phase="fwd+bwd")
    bwd = model.memory_breakdown("sddmm", **SIZES, phase="bwd")
    assert full.peak_bytes == sum(full.terms.values())
    assert bwd.peak_bytes == full.peak_bytes - sum(bwd.baseline.values())
    assert "C" in bwd.baseline
    assert model.predict_peak_bytes("sddmm", **SIZES, phase="fwd") < full.peak_bytes


def test_model_refuses_what_it_cannot_describe() -> None:
    with pytest.raises(ValueError, match="impl must be one of"):
        model.predict_peak_bytes("magic", **SIZES)
    with pytest.raises(ValueError, match="phase must be one of"):
        model.predict_peak_bytes("sddmm", **SIZES, phase="both")
    with pytest.raises(ValueError, match=r"torch_coo runs torch\.sparse\.mm on a COO A"):
        model.predict_peak_bytes("torch_coo", **SIZES, layout="csr")
    with pytest.raises(ValueError, match="2-D matrices only"):
        model.predict_peak_bytes("torch_csr", **SIZES, batch=2)
    with pytest.raises(ValueError, match="nnz must be an int >= 0, got -1"):
        model.predict_peak_bytes("sddmm", n=3, m=3, nnz=-1, p=2)
