"""Tests of the analytic byte model: storage of a matrix, and the peak of a step against what
torch actually allocates.

The model is checked against torch.profiler's allocation events on CPU (exact, fast).
Tolerance: it must agree with the in-process measurement within ``MODEL_RTOL`` (10 %) for
float32/float64 at sizes whose peak is a few MiB or more -- the promise stated in
``predict_peak_bytes``. (The fresh-process check is in ``test_measurement.py``.)
"""

from __future__ import annotations

import pytest
import torch

from sparsegrad_lab import memory_model as model
from sparsegrad_lab.errors import InputTypeError, InputValueError
from sparsegrad_lab.example_matrices import uniform_random
from sparsegrad_lab.footprint import PHASES
from sparsegrad_lab.implementations import IMPLEMENTATIONS, Case, get_implementation, make_inputs
from sparsegrad_lab.measurement import measure_peak_bytes
from sparsegrad_lab.memory_model import storage_bytes

#: Relative agreement the model promises against the allocator-level measurement.
MODEL_RTOL = 0.10

# Small but not tiny: peaks of 1-40 MiB, each measured in well under a second.
SIZES = {"n": 2000, "m": 3000, "nnz": 30_000, "p": 32}


def _measure_phases(impl: str, phases: tuple[str, ...], **sizes: object) -> dict[str, int]:
    A, B, G = make_inputs(Case(**sizes))  # type: ignore[arg-type]
    fn = get_implementation(impl).matmul()
    fn(A, B).backward(G)  # warm-up: lazily created state is not the op's memory
    measured = {}
    # The suite turns on torch's sparse invariant checks, which allocate; the model
    # describes ordinary runs.
    with torch.sparse.check_sparse_tensor_invariants(enable=False):
        for phase in phases:
            A.grad = B.grad = None
            if phase == "fwd":
                measured[phase] = measure_peak_bytes(lambda: fn(A, B))
            elif phase == "fwd+bwd":
                measured[phase] = measure_peak_bytes(lambda: fn(A, B).backward(G))
            else:
                C = fn(A, B)
                measured[phase] = measure_peak_bytes(lambda: C.backward(G))  # noqa: B023
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
        for impl in IMPLEMENTATIONS
        for layout in ("coo", "csr")
        if get_implementation(impl).unsupported_reason(Case(**SIZES, layout=layout)) is None
    ],
)
def test_model_agrees_with_measurement_for_every_impl(impl: str, layout: str) -> None:
    if impl == "tsgu":
        pytest.importorskip("torchsparsegradutils")
    _assert_model_agrees(impl, PHASES, layout=layout, **SIZES)


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
        # at most SHARED_GATHER_MAX_NNZ entries: one gather serves both gradients
        ("sddmm", {"layout": "coo", "n": 400, "m": 400, "nnz": 1000, "p": 512}),
        ("sddmm", {"layout": "csr", "n": 400, "m": 400, "nnz": 1000, "p": 512}),
        (
            "sddmm",
            {"layout": "csr", "n": 400, "m": 400, "nnz": 1000, "p": 256, "dtype": torch.complex64},
        ),
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


def test_the_peak_lies_in_the_backward_and_bwd_excludes_the_forward() -> None:
    full = model.memory_breakdown("sddmm", **SIZES, phase="fwd+bwd")
    bwd = model.memory_breakdown("sddmm", **SIZES, phase="bwd")
    assert bwd.stage == full.stage  # the sampled product, not the forward
    assert "C" in bwd.baseline and bwd.peak_bytes < full.peak_bytes
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
    with pytest.raises(ValueError, match="nnz must be >= 0, got -1"):
        model.predict_peak_bytes("sddmm", n=3, m=3, nnz=-1, p=2)
    with pytest.raises(InputValueError, match="not both"):
        model.predict_peak_bytes("sddmm", Case(**SIZES), n=3)
    with pytest.raises(InputValueError, match=r"predict_peak_bytes: .*'q'"):
        model.predict_peak_bytes("sddmm", **SIZES, q=3)


def test_case_and_keywords_give_the_same_prediction() -> None:
    case = Case(**SIZES, layout="coo", dtype=torch.float64, batch=2)
    kw = {**SIZES, "layout": "coo", "dtype": "float64", "batch": 2}
    for impl in ("sddmm", "gather", "dense", "tsgu", "sddmm_kept"):
        assert model.predict_peak_bytes(impl, case) == model.predict_peak_bytes(impl, **kw)
    assert model.output_bytes(case) == 2 * (2000 * 32 + 30_000 + 3000 * 32) * 8


# --------------------------------------------------------------------------- storage_bytes


def test_storage_bytes_hand_example():
    # 3 x 4 float32 with 5 entries: COO 5 (2*8 + 4), CSR 4*8 + 5 (8 + 4), dense 12 * 4.
    A = torch.tensor([[1.0, 0, 2, 0], [0, 0, 0, 3], [4, 5, 0, 0]])
    expected = {"coo": 100, "csr": 92, "dense": 48}
    assert storage_bytes(A) == expected
    assert storage_bytes(A.to_sparse()) == expected
    assert storage_bytes(A.to_sparse_csr()) == expected
    assert storage_bytes(A.to_sparse(), index_dtype=torch.int32) == {
        "coo": 60,
        "csr": 56,
        "dense": 48,
    }


def test_storage_bytes_counts_distinct_positions_of_uncoalesced_coo():
    A = torch.sparse_coo_tensor(torch.tensor([[0, 0], [1, 1]]), torch.ones(2), (2, 2))
    assert storage_bytes(A)["coo"] == 1 * (16 + 4)


def test_storage_bytes_batched():
    A = torch.stack([torch.eye(3, dtype=torch.float64)] * 2)  # b=2, 6 entries
    expected = {"coo": 6 * (3 * 8 + 8), "csr": 2 * 4 * 8 + 6 * 16, "dense": 18 * 8}
    assert storage_bytes(A.to_sparse()) == expected
    assert storage_bytes(A.to_sparse_csr()) == expected


def test_storage_bytes_agrees_with_the_real_arrays():
    A = uniform_random(40, 50, nnz=123, seed=0, dtype=torch.float64)
    csr = A.to_sparse_csr()
    real_coo = sum(t.numel() * t.element_size() for t in (A.indices(), A.values()))
    parts = (csr.crow_indices(), csr.col_indices(), csr.values())
    real_csr = sum(t.numel() * t.element_size() for t in parts)
    assert storage_bytes(A) == {"coo": real_coo, "csr": real_csr, "dense": 40 * 50 * 8}


@pytest.mark.parametrize(
    ("A", "kwargs", "error", "words"),
    [
        ([[1.0]], {}, InputTypeError, "A must be a torch.Tensor, got list"),
        (torch.ones(3), {}, InputValueError, "2-D"),
        (torch.eye(2), {"index_dtype": torch.int16}, InputTypeError, "index_dtype"),
    ],
)
def test_storage_bytes_errors(A, kwargs, error, words):
    with pytest.raises(error, match=words):
        storage_bytes(A, **kwargs)
