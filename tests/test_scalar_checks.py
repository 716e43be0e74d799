"""The scalar argument checks: one function per kind of value, each naming the caller."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparsegrad_lab import BACKWARD_STRATEGIES, InputTypeError, InputValueError
from sparsegrad_lab.scalar_checks import (
    MAX_NUMEL,
    check_int,
    check_real,
    check_sizes,
    check_strategy,
    dtype_from,
    kind_of,
    layout_name,
    parse_layout,
)


@pytest.mark.parametrize(
    ("value", "bounds", "error", "words"),
    [
        (True, {}, InputTypeError, "f: n must be an int, got bool"),
        (2.0, {}, InputTypeError, "f: n must be an int, got float"),
        (torch.tensor(2), {}, InputTypeError, "f: n must be an int, got Tensor"),
        (0, {"minimum": 1}, InputValueError, "f: n must be >= 1, got 0"),
        (4, {"minimum": 0, "below": 4}, InputValueError, r"f: n must lie in \[0, 4\), got 4"),
        (-1, {"minimum": 0, "below": 4}, InputValueError, r"f: n must lie in \[0, 4\), got -1"),
    ],
)
def test_check_int_refuses_naming_the_argument(value, bounds, error, words) -> None:
    with pytest.raises(error, match=f"^{words}$"):
        check_int(value, "n", "f", **bounds)


def test_check_int_takes_every_integral_number() -> None:
    assert check_int(np.int64(3), "n", "f", minimum=0, below=4) == 3
    assert type(check_int(np.int32(3), "n", "f")) is int


def test_check_real_refuses_nan_and_out_of_range() -> None:
    assert check_real(1, "x", "f", low=0.0, high=1.0) == 1.0
    for value in (float("nan"), -0.5, 1.5):
        with pytest.raises(InputValueError, match=r"^f: x must lie in \[0.0, 1.0\]"):
            check_real(value, "x", "f", low=0.0, high=1.0)
    with pytest.raises(InputTypeError, match="x must be a real number, got complex"):
        check_real(1j, "x", "f", low=0.0, high=1.0)


def test_check_sizes_stays_within_int64() -> None:
    assert check_sizes([2, np.int64(3)], "size", "f") == (2, 3)
    with pytest.raises(InputValueError, match=r"size\[0\] is 9223372036854775808"):
        check_sizes((MAX_NUMEL + 1, 1), "size", "f")
    with pytest.raises(InputValueError, match="more than torch can count"):
        check_sizes((2**32, 2**32), "size", "f")


def test_check_strategy_names_every_strategy() -> None:
    for strategy in BACKWARD_STRATEGIES:
        assert check_strategy(strategy, "f") == strategy
    with pytest.raises(InputValueError, match=r"^f: backward must be one of \('sddmm'"):
        check_strategy(None, "f")


def test_kind_of_describes_tensors_and_objects() -> None:
    assert kind_of(torch.eye(2).to_sparse()) == "a torch.sparse_coo tensor of shape (2, 2)"
    assert kind_of(None) == "an object of type NoneType"


@pytest.mark.parametrize("given", ["coo", "csr", torch.sparse_coo, torch.sparse_csr])
def test_parse_layout_accepts_both_layouts_and_their_names(given: object) -> None:
    parsed = parse_layout(given, "f")
    assert parsed in (torch.sparse_coo, torch.sparse_csr)
    assert layout_name(given) == str(parsed).removeprefix("torch.sparse_")


@pytest.mark.parametrize("given", ["bsr", torch.sparse_bsr, torch.strided, None, 3])
def test_parse_layout_refuses_everything_else_naming_the_caller(given: object) -> None:
    with pytest.raises(InputValueError, match=r"^f: layout must be torch.sparse_coo, .* got "):
        parse_layout(given, "f")


def test_dtype_from_names_and_refusals() -> None:
    assert dtype_from("float64") is torch.float64 and dtype_from(torch.int32) is torch.int32
    with pytest.raises(InputValueError, match=r"index_dtype must be a torch\.dtype or its name"):
        dtype_from("float33", "index_dtype")
