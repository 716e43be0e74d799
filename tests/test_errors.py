"""Tests of the package's exceptions and byte formatting (:mod:`sparsegrad_lab.errors`).

The promise of the module: every error is one of one family, :class:`SparseGradLabError`,
and also the built-in exception a caller would catch anyway, so ``except TypeError`` or
``except MemoryError`` keeps working; :func:`format_bytes` is what every message uses.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
import torch

import sparsegrad_lab
from sparsegrad_lab import sparse_mm
from sparsegrad_lab.errors import (
    InputTypeError,
    InputValueError,
    MemoryBudgetError,
    SparseGradLabError,
    format_bytes,
)


@pytest.mark.parametrize(
    ("num_bytes", "text"),
    [
        (0, "0 B"),
        (1, "1 B"),
        (1023, "1023 B"),  # the last count below a KiB stays in bytes
        (1024, "1.00 KiB"),
        (1536, "1.50 KiB"),
        (1536.0, "1.50 KiB"),
        (21_604, "21.10 KiB"),
        (2**20, "1.00 MiB"),
        (5 * 2**29, "2.50 GiB"),
        (3 * 2**30, "3.00 GiB"),
        (2**40, "1.00 TiB"),
        (8 * (10**12 + 1), "7.28 TiB"),
        (2**50, "1024.00 TiB"),  # TiB is the largest unit: no PiB
        # Just below a unit boundary the rounded value is one of the next unit, never 1024.00.
        (1023.7, "1.00 KiB"),
        (2**20 - 1, "1.00 MiB"),
        (2**30 - 1, "1.00 GiB"),
        (2**40 - 1, "1.00 TiB"),
        (2**20 - 5_121, "1019.00 KiB"),
        (-512, "-512 B"),  # a difference of two counts can be negative
        (-2048, "-2.00 KiB"),
    ],
)
def test_format_bytes_on_hand_examples(num_bytes: float, text: str) -> None:
    assert format_bytes(num_bytes) == text


@pytest.mark.parametrize(
    ("error", "builtin", "not_builtin"),
    [
        (InputTypeError, TypeError, ValueError),
        (InputValueError, ValueError, TypeError),
        (MemoryBudgetError, MemoryError, ValueError),
    ],
)
def test_each_error_is_the_builtin_a_caller_catches(
    error: type[Exception], builtin: type[Exception], not_builtin: type[Exception]
) -> None:
    assert issubclass(error, SparseGradLabError) and issubclass(error, builtin)
    assert not issubclass(error, not_builtin)  # one meaning each: caught once, not twice


def test_a_real_refusal_is_caught_as_a_type_error_and_as_the_family() -> None:
    B = torch.ones(2, 2)
    with pytest.raises(TypeError):
        sparse_mm(torch.ones(2, 2), B)  # a dense A: the wrong kind of argument
    with pytest.raises(SparseGradLabError, match="sparse_mm"):
        sparse_mm(torch.ones(2, 2), B)
    with pytest.raises(ValueError, match="backward must be one of"):
        sparse_mm(torch.eye(2).to_sparse(), B, backward="fast")  # type: ignore[arg-type]


def test_memory_budget_error_carries_both_numbers() -> None:
    error = MemoryBudgetError("f: would need 2.00 KiB", needed_bytes=2048, budget_bytes=1024)
    assert str(error) == "f: would need 2.00 KiB"
    assert (error.needed_bytes, error.budget_bytes) == (2048, 1024)
    with pytest.raises(TypeError):
        MemoryBudgetError("f", 2048, 1024)  # type: ignore[misc]  # keywords only: no mix-up


def test_every_exception_the_package_defines_is_of_the_family() -> None:
    defined = []
    for info in pkgutil.iter_modules(sparsegrad_lab.__path__, "sparsegrad_lab."):
        module = importlib.import_module(info.name)
        for _name, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == module.__name__:
                defined.append(value)
    # The walk reaches classes beyond errors.py (benchmark_report's OutputExistsError, ...).
    assert any(cls.__module__ != "sparsegrad_lab.errors" for cls in defined)
    outside = [cls.__qualname__ for cls in defined if not issubclass(cls, SparseGradLabError)]
    assert outside == []
