"""The names of ``sparse_mm``'s backward strategies: the bottom of the package.

How the gradient of ``A`` -- the sampled product :math:`P_A \\odot (G B^{\\mathsf H})` --
is computed: ``"sddmm"`` (a true sampled product, the default), ``"gather"`` or
``"dense"``; :mod:`sparsegrad_lab.sddmm` says what each does. The names live here, below
everything that checks or dispatches on them, so that no check has to import the code that
computes the product.

>>> BACKWARD_STRATEGIES
('sddmm', 'gather', 'dense')
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["BACKWARD_STRATEGIES", "BackwardStrategy"]

#: A backward strategy's name, as ``sparse_mm(..., backward=...)`` takes it.
BackwardStrategy = Literal["sddmm", "gather", "dense"]

#: Every backward strategy, in the order the lessons and tables list them.
BACKWARD_STRATEGIES: tuple[BackwardStrategy, ...] = get_args(BackwardStrategy)
