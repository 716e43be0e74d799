"""Tests of the benchmark case, its seeded inputs and the registry of implementations."""

from __future__ import annotations

import pytest
import torch

from sparsegrad_lab.errors import InputTypeError, InputValueError
from sparsegrad_lab.example_matrices import uniform_random
from sparsegrad_lab.implementations import (
    IMPLEMENTATIONS,
    REGISTRY,
    Case,
    Implementation,
    as_case,
    get_implementation,
    make_inputs,
)

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def test_case_normalises_names_and_compares_by_value() -> None:
    case = Case(n=4, m=5, nnz=6, p=2, layout=torch.sparse_coo, dtype=torch.float64)
    assert (case.layout, case.dtype, case.index_dtype, case.device) == (
        "coo",
        "float64",
        "int64",
        "cpu",
    )
    assert case == Case(n=4, m=5, nnz=6, p=2, layout="coo", dtype="float64")
    assert len({case, Case(n=4, m=5, nnz=6, p=2, layout="coo", dtype="float64")}) == 1


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"n": 0}, "Case: n must be >= 1, got 0"),
        ({"nnz": 21}, "nnz=21 does not fit in a 4 x 5 matrix"),
        ({"layout": "bsr"}, "layout must be"),
        ({"dtype": "int32"}, "dtype must be floating-point or complex"),
        ({"index_dtype": "int16"}, "index_dtype must be torch.int32 or torch.int64"),
    ],
)
def test_case_refuses_what_cannot_be_built(kwargs: dict[str, object], words: str) -> None:
    with pytest.raises(InputValueError, match=words):
        Case(**{"n": 4, "m": 5, "nnz": 6, "p": 2, **kwargs})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [({"p": 2.0}, "Case: p must be an int, got float"), ({"batch": True}, "got bool")],
)
def test_case_sizes_must_be_ints(kwargs: dict[str, object], words: str) -> None:
    with pytest.raises(InputTypeError, match=words):
        Case(**{"n": 4, "m": 5, "nnz": 6, "p": 2, **kwargs})  # type: ignore[arg-type]


def test_as_case_takes_a_case_or_keywords_not_both() -> None:
    case = Case(n=4, m=5, nnz=6, p=2)
    assert as_case(case, {}, "f") is case
    assert as_case(None, {"n": 4, "m": 5, "nnz": 6, "p": 2}, "f") == case
    with pytest.raises(InputValueError, match="f: give a Case or its fields"):
        as_case(case, {"p": 3}, "f")
    with pytest.raises(InputTypeError, match="f: case must be a Case, got dict"):
        as_case({"n": 4}, {}, "f")  # type: ignore[arg-type]
    with pytest.raises(InputValueError, match=r"f: .*'m'"):
        as_case(None, {"n": 4, "nnz": 6, "p": 2}, "f")


@pytest.mark.parametrize("layout", ["coo", "csr"])
@pytest.mark.parametrize("batch", [1, 3])
def test_make_inputs_is_seeded_and_stacks_the_items(layout: str, batch: int) -> None:
    case = Case(n=6, m=7, nnz=9, p=2, batch=batch, layout=layout, seed=4)
    A, B, G = make_inputs(case)
    again = make_inputs(case)
    assert torch.equal(A.detach().to_dense(), again[0].detach().to_dense())
    assert torch.equal(B, again[1]) and torch.equal(G, again[2])
    assert A.requires_grad and B.requires_grad and not G.requires_grad
    lead = (batch,) if batch > 1 else ()
    assert A.shape == (*lead, 6, 7) and B.shape == (*lead, 7, 2) and G.shape == (*lead, 6, 2)
    dense = A.detach().to_dense().reshape(-1, 6, 7)
    for t in range(batch):  # item t is uniform_random with seed + t
        item = uniform_random(6, 7, nnz=9, seed=4 + t).to_dense()
        assert torch.equal(dense[t], item)


def test_make_inputs_uses_the_index_dtype_of_a_csr_case() -> None:
    A, _, _ = make_inputs(Case(n=6, m=7, nnz=9, p=2, batch=2, index_dtype="int32"))
    assert A.layout == torch.sparse_csr and A.crow_indices().dtype == torch.int32


def test_an_unknown_name_is_refused_with_the_known_ones() -> None:
    with pytest.raises(InputValueError, match=r"impl must be one of \('sddmm', .* got 'magic'"):
        get_implementation("magic")


@pytest.mark.parametrize("name", IMPLEMENTATIONS)
def test_every_runnable_implementation_computes_a_times_b(name: str) -> None:
    implementation = get_implementation(name)
    if implementation.missing_reason() is not None:
        pytest.skip(implementation.missing_reason())
    for layout in ("coo", "csr"):
        case = Case(n=6, m=7, nnz=9, p=2, layout=layout)
        if implementation.unsupported_reason(case) is not None:
            continue
        A, B, G = make_inputs(case)
        C = implementation.matmul()(A, B)
        assert torch.allclose(C, A.detach().to_dense() @ B.detach(), atol=1e-6)
        C.backward(G)
        assert A.grad is not None and B.grad is not None


def test_unsupported_and_missing_reasons() -> None:
    csr = Case(n=2, m=2, nnz=1, p=1)
    coo_batch = Case(n=2, m=2, nnz=1, p=1, layout="coo", batch=2)
    assert "on a COO A; this case has a CSR A" in get_implementation(
        "torch_coo"
    ).unsupported_reason(csr)  # type: ignore[operator]
    assert "2-D matrices only (batch=2)" in get_implementation("torch_coo").unsupported_reason(
        coo_batch
    )  # type: ignore[operator]
    assert get_implementation("sddmm").unsupported_reason(coo_batch) is None
    missing = Implementation(
        "nowhere",
        "nowhere.mm",
        lambda: torch.sparse.mm,
        REGISTRY["sddmm"].model,
        requires="no_such_module_here",
        install="pip install it",
    )
    assert missing.missing_reason() == (
        "nowhere needs no_such_module_here, which is not installed (pip install it)"
    )
    with pytest.raises(ModuleNotFoundError, match="no_such_module_here"):
        missing.matmul()


def test_the_kept_pattern_refuses_a_matrix_with_other_positions() -> None:
    fn = get_implementation("sddmm_kept").matmul()
    A, B, _ = make_inputs(Case(n=6, m=7, nnz=9, p=2, seed=0))
    other, _, _ = make_inputs(Case(n=6, m=7, nnz=9, p=2, seed=1))
    fn(A, B)
    with pytest.raises(InputValueError):
        fn(other, B)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_pattern_mm_entry_gives_the_default_results(layout: str, batch: int) -> None:
    """``"pattern_mm"``: the values as a dense leaf through the registered op; ``C``, ``∇B``
    and ``A.grad`` (the dense gradient on ``A``'s indices) are the default ``sparse_mm``'s,
    call after call."""
    case = Case(n=6, m=7, nnz=9, p=2, layout=layout, batch=batch, dtype="float64")
    A, B, G = make_inputs(case)
    fn, default = get_implementation("pattern_mm").matmul(), REGISTRY["sddmm"].matmul()
    for _ in range(2):
        results = []
        for f in (fn, default):
            A.grad = B.grad = None
            C = f(A, B)
            C.backward(G)
            assert A.grad is not None and B.grad is not None
            results.append((C.detach(), B.grad, A.grad.to_dense()))
        for got, want in zip(*results, strict=True):
            torch.testing.assert_close(got, want)
