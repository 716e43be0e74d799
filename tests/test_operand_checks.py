"""Every kind of bad input to ``sparse_mm`` gets our own, explicit error (``operand_checks``).

Each case asserts the exception class (``InputTypeError`` is a ``TypeError``,
``InputValueError`` a ``ValueError``) and that the message names the argument at fault, what
was received and what was expected -- never a crash deep inside torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import pytest
import torch

from sparsegrad_lab import (
    InputTypeError,
    InputValueError,
    SparseGradLabError,
    sparse_mm,
)
from sparsegrad_lab.operand_checks import check_sparse_mm_inputs

# Tiny tensors: one intra-op thread (see tests/conftest.py).
pytestmark = pytest.mark.usefixtures("torch_single_thread")


def _coo(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.ones(shape, dtype=dtype).to_sparse()


def _csr(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.ones(shape, dtype=dtype).to_sparse_csr()


def _dense(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.ones(shape, dtype=dtype)


class Case(NamedTuple):
    """A bad call: ``make()`` returns ``(A, B, backward)``; the error and message fragments."""

    make: Callable[[], tuple[Any, Any, Any]]
    error: type[Exception]
    fragments: tuple[str, ...]


# Built lazily (inside the test) so torch's sparse invariant checks are on while they are made.
CASES: dict[str, Case] = {
    # -- not tensors ------------------------------------------------------------------------
    "A-list": Case(
        lambda: ([[1.0, 0.0]], _dense(2, 1), "sddmm"),
        InputTypeError,
        ("A must be a sparse torch.Tensor", "type list"),
    ),
    "A-None": Case(
        lambda: (None, _dense(2, 1), "sddmm"),
        InputTypeError,
        ("A must be a sparse torch.Tensor", "type NoneType"),
    ),
    "A-float": Case(
        lambda: (3.0, _dense(2, 1), "sddmm"),
        InputTypeError,
        ("A must be a sparse torch.Tensor", "type float"),
    ),
    "B-list": Case(
        lambda: (_coo(2, 2), [[1.0], [2.0]], "sddmm"),
        InputTypeError,
        ("B must be a dense torch.Tensor", "type list"),
    ),
    "B-scalar": Case(
        lambda: (_csr(2, 2), 2.0, "sddmm"),
        InputTypeError,
        ("B must be a dense torch.Tensor", "type float"),
    ),
    # -- layouts ----------------------------------------------------------------------------
    "A-dense": Case(
        lambda: (_dense(2, 3), _dense(3, 1), "sddmm"),
        InputTypeError,
        ("A must be sparse", "torch.sparse_coo or torch.sparse_csr", "dense", "(2, 3)"),
    ),
    "A-csc": Case(
        lambda: (_dense(2, 3).to_sparse_csc(), _dense(3, 1), "sddmm"),
        InputTypeError,
        ("A has layout torch.sparse_csc", "expected torch.sparse_coo or torch.sparse_csr"),
    ),
    "A-bsr": Case(
        lambda: (_dense(2, 4).to_sparse_bsr((1, 2)), _dense(4, 1), "sddmm"),
        InputTypeError,
        ("A has layout torch.sparse_bsr", "expected torch.sparse_coo or torch.sparse_csr"),
    ),
    "A-bsc": Case(
        lambda: (_dense(2, 4).to_sparse_bsc((1, 2)), _dense(4, 1), "sddmm"),
        InputTypeError,
        ("A has layout torch.sparse_bsc", "expected torch.sparse_coo or torch.sparse_csr"),
    ),
    "B-coo": Case(
        lambda: (_coo(2, 3), _coo(3, 1), "sddmm"),
        InputTypeError,
        ("B must be a dense (strided) tensor", "got layout torch.sparse_coo"),
    ),
    "B-csr": Case(
        lambda: (_csr(2, 3), _csr(3, 2), "sddmm"),
        InputTypeError,
        ("B must be a dense (strided) tensor", "got layout torch.sparse_csr"),
    ),
    # -- hybrid sparse ----------------------------------------------------------------------
    "A-hybrid-coo-2d": Case(
        lambda: (
            torch.sparse_coo_tensor(torch.tensor([[0, 2]]), torch.ones(2, 4), (3, 4)),
            _dense(4, 1),
            "sddmm",
        ),
        InputValueError,
        ("A is a hybrid sparse tensor", "sparse_dim=1", "dense_dim=1", "dense_dim=0"),
    ),
    "A-hybrid-coo-3d": Case(
        lambda: (_dense(2, 3, 4).to_sparse(2), _dense(2, 4, 1), "sddmm"),
        InputValueError,
        ("A is a hybrid sparse tensor", "sparse_dim=2", "dense_dim=1", "movedim(-1, 0)"),
    ),
    "A-hybrid-csr": Case(
        lambda: (_dense(2, 3, 4).to_sparse_csr(dense_dim=1), _dense(2, 4, 1), "sddmm"),
        InputValueError,
        ("A is a hybrid sparse tensor", "dense_dim=1", "dense_dim=0"),
    ),
    # -- ranks ------------------------------------------------------------------------------
    "A-1d": Case(
        lambda: (_coo(4), _dense(4, 1), "sddmm"),
        InputValueError,
        ("A must be 2-D (n, m) or batched 3-D (b, n, m)", "(4,)"),
    ),
    "A-4d": Case(
        lambda: (_coo(2, 2, 3, 4), _dense(2, 2, 4, 1), "sddmm"),
        InputValueError,
        ("A must be 2-D (n, m) or batched 3-D (b, n, m)", "(2, 2, 3, 4)"),
    ),
    "rank-2d-A-3d-B": Case(
        lambda: (_coo(3, 4), _dense(2, 4, 1), "sddmm"),
        InputValueError,
        ("A is 2-D (3, 4)", "B must be 2-D (m, p)", "B of shape (2, 4, 1)"),
    ),
    "rank-3d-A-2d-B": Case(
        lambda: (_csr(2, 3, 4), _dense(4, 1), "sddmm"),
        InputValueError,
        ("A is 3-D (2, 3, 4)", "B must be 3-D (b, m, p)", "B of shape (4, 1)"),
    ),
    "rank-1d-B": Case(
        lambda: (_coo(3, 4), _dense(4), "sddmm"),
        InputValueError,
        ("B must be 2-D", "B of shape (4,)"),
    ),
    # -- shapes -----------------------------------------------------------------------------
    "inner-2d": Case(
        lambda: (_coo(3, 4), _dense(5, 2), "sddmm"),
        InputValueError,
        ("inner dimensions differ", "A has 4 columns", "(3, 4)", "B has 5 rows", "(5, 2)"),
    ),
    "inner-3d": Case(
        lambda: (_csr(2, 3, 4), _dense(2, 3, 2), "sddmm"),
        InputValueError,
        ("inner dimensions differ", "A has 4 columns", "B has 3 rows", "(2, 3, 2)"),
    ),
    "batch": Case(
        lambda: (_coo(2, 3, 4), _dense(3, 4, 1), "sddmm"),
        InputValueError,
        ("batch sizes differ", "A has 2 items", "(2, 3, 4)", "B has 3", "(3, 4, 1)"),
    ),
    # -- dtypes -----------------------------------------------------------------------------
    "dtype-mismatch": Case(
        lambda: (_coo(3, 4), _dense(4, 1, dtype=torch.float64), "sddmm"),
        InputTypeError,
        ("A and B must have the same dtype", "A torch.float32", "B torch.float64"),
    ),
    "dtype-real-complex": Case(
        lambda: (_csr(3, 4, dtype=torch.complex64), _dense(4, 1), "sddmm"),
        InputTypeError,
        ("A and B must have the same dtype", "A torch.complex64", "B torch.float32"),
    ),
    "dtype-int64": Case(
        lambda: (_coo(3, 4, dtype=torch.int64), _dense(4, 1, dtype=torch.int64), "sddmm"),
        InputTypeError,
        (
            "A has dtype torch.int64, which is not supported",
            "float32, float64, complex64, complex128",
        ),
    ),
    "dtype-bool": Case(
        lambda: (_coo(3, 4, dtype=torch.bool), _dense(4, 1, dtype=torch.bool), "sddmm"),
        InputTypeError,
        (
            "A has dtype torch.bool, which is not supported",
            "float32, float64, complex64, complex128",
        ),
    ),
    "float16-on-cpu": Case(
        lambda: (_coo(3, 4, dtype=torch.float16), _dense(4, 1, dtype=torch.float16), "sddmm"),
        InputTypeError,
        ("torch.float16 is supported on CUDA only", "cpu", "float32"),
    ),
    "bfloat16-on-cpu": Case(
        lambda: (_csr(3, 4, dtype=torch.bfloat16), _dense(4, 1, dtype=torch.bfloat16), "sddmm"),
        InputTypeError,
        ("torch.bfloat16 is supported on CUDA only", "cpu", "float32"),
    ),
    # -- devices ('meta' stands in for a second device on a machine without a GPU) --------------
    "device-B-meta": Case(
        lambda: (_coo(3, 4), _dense(4, 1).to("meta"), "sddmm"),
        InputValueError,
        ("A and B must be on the same device", "A on cpu", "B on meta"),
    ),
    "device-both-meta": Case(
        lambda: (_coo(3, 4).to("meta"), _dense(4, 1).to("meta"), "sddmm"),
        InputValueError,
        ("A is on the meta device", "holds no indices or values"),
    ),
    "device-A-meta": Case(
        lambda: (_coo(3, 4).to("meta"), _dense(4, 1), "sddmm"),
        InputValueError,
        ("A and B must be on the same device", "A on meta", "B on cpu"),
    ),
    # -- backward= --------------------------------------------------------------------------
    "backward-unknown": Case(
        lambda: (_coo(3, 4), _dense(4, 1), "fast"),
        InputValueError,
        ("backward must be one of", "'sddmm'", "'gather'", "'dense'", "got 'fast'"),
    ),
    "backward-wrong-case": Case(
        lambda: (_coo(3, 4), _dense(4, 1), "SDDMM"),
        InputValueError,
        ("backward must be one of", "got 'SDDMM'"),
    ),
    "backward-None": Case(
        lambda: (_csr(3, 4), _dense(4, 1), None),
        InputValueError,
        ("backward must be one of", "got None"),
    ),
    "backward-list": Case(
        lambda: (_csr(3, 4), _dense(4, 1), ["sddmm"]),
        InputValueError,
        ("backward must be one of", "got ['sddmm']"),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_refused_with_a_precise_message(name: str) -> None:
    case = CASES[name]
    A, B, backward = case.make()
    with pytest.raises(case.error) as info:
        sparse_mm(A, B, backward=backward)
    message = str(info.value)
    assert message.startswith("sparse_mm: "), message
    for fragment in case.fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    # The built-in class a caller would catch, and our own base class.
    builtin = TypeError if case.error is InputTypeError else ValueError
    assert isinstance(info.value, builtin) and isinstance(info.value, SparseGradLabError)


@pytest.mark.parametrize("name", list(CASES))
def test_checks_run_whatever_the_grad_mode(name: str) -> None:
    """Refused under ``torch.no_grad()`` too, and by the checker called on its own."""
    case = CASES[name]
    A, B, backward = case.make()
    with torch.no_grad(), pytest.raises(case.error):
        sparse_mm(A, B, backward=backward)
    with pytest.raises(case.error):
        check_sparse_mm_inputs(A, B, backward)


def test_error_classes() -> None:
    assert issubclass(InputTypeError, TypeError) and issubclass(InputTypeError, SparseGradLabError)
    assert issubclass(InputValueError, ValueError)
    assert issubclass(InputValueError, SparseGradLabError)
    assert not issubclass(InputTypeError, ValueError)
    assert not issubclass(InputValueError, TypeError)


@pytest.mark.parametrize(
    ("A", "B"),
    [
        pytest.param(lambda: _coo(3, 4), lambda: _dense(4, 2), id="coo-2d"),
        pytest.param(lambda: _csr(2, 3, 4), lambda: _dense(2, 4, 2), id="csr-3d"),
        pytest.param(
            lambda: torch.sparse_csr_tensor(
                torch.tensor([0, 1, 2], dtype=torch.int32),
                torch.tensor([0, 1], dtype=torch.int32),
                torch.ones(2, dtype=torch.complex64),
                (2, 2),
            ),
            lambda: _dense(2, 1, dtype=torch.complex64),
            id="csr-int32-complex",
        ),
        pytest.param(lambda: torch.zeros(0, 4).to_sparse(), lambda: _dense(4, 2), id="zero-rows"),
    ],
)
def test_valid_input_passes_the_checks(
    A: Callable[[], torch.Tensor], B: Callable[[], torch.Tensor]
) -> None:
    a, b = A(), B()
    for backward in ("sddmm", "gather", "dense"):
        check_sparse_mm_inputs(a, b, backward)
    assert sparse_mm(a, b).shape == (*a.shape[:-1], b.shape[-1])
