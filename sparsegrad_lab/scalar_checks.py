"""Checks of the scalar arguments every module takes: counts, fractions, layouts, dtypes.

One function per kind of value, each naming the argument and the caller in its message
(``where``); every integer argument of the package goes through :func:`check_int`. The
checks of tensor operands are in :mod:`sparsegrad_lab.operand_checks`, those of sparse
indices in :mod:`sparsegrad_lab.index_checks`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .errors import InputTypeError, InputValueError
from .strategies import BACKWARD_STRATEGIES, BackwardStrategy

__all__ = [
    "MAX_NUMEL",
    "SPARSE_LAYOUTS",
    "check_int",
    "check_real",
    "check_sizes",
    "check_strategy",
    "dtype_from",
    "kind_of",
    "layout_name",
    "parse_layout",
]

#: The sparse layouts the package multiplies.
SPARSE_LAYOUTS = (torch.sparse_coo, torch.sparse_csr)


def kind_of(obj: Any) -> str:
    """What ``obj`` is, for a message: a tensor's layout and shape, or an object's type.

    >>> kind_of(torch.ones(2, 3)), kind_of([1])
    ('a torch.strided tensor of shape (2, 3)', 'an object of type list')
    """
    if isinstance(obj, Tensor):
        return f"a {obj.layout} tensor of shape {tuple(obj.shape)}"
    return f"an object of type {type(obj).__name__}"


def check_int(
    value: Any, name: str, where: str, *, minimum: int | None = None, below: int | None = None
) -> int:
    """``value`` as an int, or :class:`InputTypeError` / :class:`InputValueError` naming it.

    Any integral number passes (``numpy.int64`` too), a bool does not; ``minimum`` and
    ``below`` bound it as ``minimum <= value < below``. The one integer check of the package.

    >>> check_int(3, "n", "uniform_random", minimum=1)
    3
    >>> check_int(True, "n", "uniform_random")
    Traceback (most recent call last):
    ...
    sparsegrad_lab.errors.InputTypeError: uniform_random: n must be an int, got bool
    >>> check_int(5, "i", "draw", minimum=0, below=4)
    Traceback (most recent call last):
    ...
    sparsegrad_lab.errors.InputValueError: draw: i must lie in [0, 4), got 5
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputTypeError(f"{where}: {name} must be an int, got {type(value).__name__}")
    number = int(value)
    if below is not None and not (minimum if minimum is not None else number) <= number < below:
        raise InputValueError(f"{where}: {name} must lie in [{minimum}, {below}), got {number}")
    if minimum is not None and number < minimum:
        raise InputValueError(f"{where}: {name} must be >= {minimum}, got {number}")
    return number


def check_real(value: Any, name: str, where: str, *, low: float, high: float) -> float:
    """``value`` as a float in ``[low, high]`` (NaN refused), or an error naming it.

    >>> check_real(0.5, "density", "uniform_random", low=0.0, high=1.0)
    0.5
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputTypeError(f"{where}: {name} must be a real number, got {type(value).__name__}")
    if not low <= float(value) <= high:  # also refuses NaN
        raise InputValueError(f"{where}: {name} must lie in [{low}, {high}], got {value}")
    return float(value)


def check_strategy(backward: Any, where: str) -> BackwardStrategy:
    """``backward`` if it names a backward strategy, else :class:`InputValueError`.

    >>> check_strategy("fast", "sparse_mm")
    Traceback (most recent call last):
    ...
    sparsegrad_lab.errors.InputValueError: sparse_mm: backward must be one of ('sddmm', \
'gather', 'dense'), got 'fast'
    """
    if not isinstance(backward, str) or backward not in BACKWARD_STRATEGIES:
        raise InputValueError(
            f"{where}: backward must be one of {BACKWARD_STRATEGIES}, got {backward!r}"
        )
    return backward  # type: ignore[return-value]


_LAYOUT_NAMES = {"coo": torch.sparse_coo, "csr": torch.sparse_csr}


def parse_layout(layout: Any, where: str | None = None) -> torch.layout:
    """``torch.sparse_coo`` or ``torch.sparse_csr``, from the layout itself or its name.

    ``where`` names the caller in the message.

    >>> parse_layout("csr")
    torch.sparse_csr
    >>> parse_layout("bsr", "uniform_random")
    Traceback (most recent call last):
    ...
    sparsegrad_lab.errors.InputValueError: uniform_random: layout must be torch.sparse_coo, \
torch.sparse_csr, 'coo' or 'csr', got 'bsr'
    """
    if isinstance(layout, str) and layout in _LAYOUT_NAMES:
        return _LAYOUT_NAMES[layout]
    if isinstance(layout, torch.layout) and layout in SPARSE_LAYOUTS:
        return layout
    prefix = f"{where}: " if where else ""
    raise InputValueError(
        f"{prefix}layout must be torch.sparse_coo, torch.sparse_csr, 'coo' or 'csr', got {layout!r}"
    )


def layout_name(layout: Any, where: str | None = None) -> str:
    """``"coo"`` or ``"csr"``, from a layout or its name (see :func:`parse_layout`).

    >>> layout_name(torch.sparse_coo)
    'coo'
    """
    return "coo" if parse_layout(layout, where) == torch.sparse_coo else "csr"


def dtype_from(dtype: Any, name: str = "dtype") -> torch.dtype:
    """A ``torch.dtype`` from itself or its name (``"float32"``).

    >>> dtype_from("complex64")
    torch.complex64
    """
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    if not isinstance(dtype, torch.dtype):
        raise InputValueError(f"{name} must be a torch.dtype or its name, got {dtype!r}")
    return dtype


#: torch counts the elements of a tensor in int64: sizes and their product stay below 2**63.
MAX_NUMEL = 2**63 - 1


def check_sizes(size: Sequence[Any], name: str, where: str) -> tuple[int, ...]:
    """``size`` as a tuple of ints that torch can allocate a tensor's shape from.

    Each entry an int (not a bool) in :math:`[0, 2^{63})`, and their product at most
    :data:`MAX_NUMEL`: torch refuses more with a C++ source location ("numel: integer
    multiplication overflow", "Overflow when unpacking long long").

    >>> check_sizes((2, 3), "size", "csr_tensor")
    (2, 3)
    >>> check_sizes((4, 2**62), "size", "csr_tensor")
    Traceback (most recent call last):
    ...
    sparsegrad_lab.errors.InputValueError: csr_tensor: size (4, 4611686018427387904) holds \
18446744073709551616 elements, more than torch can count (2**63 - 1 = 9223372036854775807); \
use a smaller size
    """
    sizes = tuple(check_int(s, f"{name}[{i}]", where, minimum=0) for i, s in enumerate(size))
    for i, s in enumerate(sizes):
        if s > MAX_NUMEL:
            raise InputValueError(
                f"{where}: {name}[{i}] is {s}, more than torch's int64 sizes hold "
                f"(2**63 - 1 = {MAX_NUMEL}); use a smaller {name}"
            )
    numel = math.prod(sizes)
    if numel > MAX_NUMEL:
        raise InputValueError(
            f"{where}: {name} {sizes} holds {numel} elements, more than torch can count "
            f"(2**63 - 1 = {MAX_NUMEL}); use a smaller {name}"
        )
    return sizes
