"""Exceptions raised by sparsegrad_lab.

Every error names the argument at fault, what was received and what was expected. The
classes subclass the built-in exception a caller would catch anyway (``TypeError``,
``ValueError``, ``MemoryError``), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "InputTypeError",
    "InputValueError",
    "MemoryBudgetError",
    "SparseGradLabError",
    "format_bytes",
]


class SparseGradLabError(Exception):
    """Base class of every exception this package raises on purpose."""


class InputTypeError(SparseGradLabError, TypeError):
    """An argument has the wrong kind: not a tensor, wrong layout, wrong dtype."""


class InputValueError(SparseGradLabError, ValueError):
    """An argument has the right kind but a wrong value: shape, device, option."""


class MemoryBudgetError(SparseGradLabError, MemoryError):
    """A computation was refused because its predicted peak memory exceeds the budget.

    Attributes
    ----------
    needed_bytes : int
        The predicted peak extra memory of the refused computation.
    budget_bytes : int
        The budget it was checked against.
    """

    def __init__(self, message: str, *, needed_bytes: int, budget_bytes: int) -> None:
        super().__init__(message)
        self.needed_bytes = needed_bytes
        self.budget_bytes = budget_bytes


def format_bytes(num_bytes: float) -> str:
    """Render a byte count with a binary unit, e.g. ``format_bytes(3 * 2**30) == '3.00 GiB'``.

    The unit is chosen after rounding, so a count just below a unit boundary reads as one of
    the next unit, never as ``1024.00`` of the smaller one.

    >>> format_bytes(1536)
    '1.50 KiB'
    >>> format_bytes(2**20 - 1)
    '1.00 MiB'
    """
    if round(abs(num_bytes)) < 1024:
        return f"{num_bytes:.0f} B"
    value = float(num_bytes)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if abs(round(value, 2)) < 1024:
            return f"{value:.2f} {unit}"
    return f"{value / 1024:.2f} TiB"
