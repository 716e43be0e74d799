"""Sparse tensors built from their parts, differentiable in the values at O(nnz) cost.

torch 2.13's own ``torch.sparse_csr_tensor`` backward masks the incoming gradient through
steps whose memory grows with ``n m`` (lesson 03, section 9, measures both), and refuses
complex values that require grad. The gradient of the values of

.. math::

    A = \\operatorname{CSR}(\\mathrm{crow}, \\mathrm{col}, v), \\qquad
    \\frac{\\partial L}{\\partial \\bar v_k} = \\bar G_{r_k c_k},

is the upstream gradient ``G`` read at the stored positions: ``G.values()`` when ``G``
stores exactly ``A``'s positions, a gather for a dense ``G``, a sorted-key lookup for a
sparse ``G`` with other positions. Those reads are ordinary differentiable torch
operations, so with ``create_graph=True`` the backward is itself differentiated: second
derivatives through ``v`` are complete (the reading of a gradient at fixed positions is
linear in it).

:class:`CsrValues` is the inverse step, the values of a CSR ``A``, whose backward builds
the gradient through :func:`csr_tensor`; torch's own ``values()`` backward for CSR tensors
(``ValuesBackward0``) wraps the upstream gradient in a CSR tensor outside autograd, so under
``create_graph=True`` the gradient it passes on no longer depends on anything, and a second
derivative through it silently misses every term that flows through the upstream gradient.
A result handed to users, whose values they read with ``S.values()``, is therefore a
:class:`DifferentiableCsr` (:func:`differentiable_csr`), whose ``values()`` is
:class:`CsrValues`.

Every tensor built here has contiguous index tensors: torch's kernels read the indices of a
tensor built with ``check_invariants=False`` as contiguous storage (the CPU CSR product on a
strided int32 ``col`` is silently wrong), so a strided view is copied first.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from . import _torch_util
from .errors import InputTypeError, InputValueError
from .operand_checks import check_not_transformed
from .scalar_checks import check_sizes

__all__ = [
    "CooFromValues",
    "CsrFromValues",
    "CsrValues",
    "DifferentiableCsr",
    "coo_from_values",
    "csr_from_values",
    "csr_tensor",
    "differentiable_csr",
    "plain_csr",
]

_torch_util.spend_csr_beta_notice()


def csr_tensor(crow: Tensor, col: Tensor, values: Tensor, size: tuple[int, ...]) -> Tensor:
    """A CSR tensor from its parts, differentiable in ``values`` at O(nnz) cost.

    The structure is checked here -- shapes of ``crow``, ``col`` and ``values`` against
    ``size`` and against each other -- but not the index values: that pass over the
    indices is made by :func:`sparsegrad_lab.sparse_mm` (and the other operations of the
    package) when the tensor is used, so the parts of an existing valid tensor are not
    checked twice. When ``values`` requires grad the tensor is built through
    :class:`CsrFromValues` (see the module docstring); autograd's check for values
    modified in place after the forward stays in force.

    Parameters
    ----------
    crow : Tensor
        Row pointers, ``(n + 1,)`` or ``(b, n + 1)``, int32 or int64.
    col : Tensor
        Column indices, ``(nnz,)`` or ``(b, nnz)``, same dtype as ``crow``.
    values : Tensor
        Shape of ``col``.
    size : tuple of int
        ``(n, m)`` or ``(b, n, m)``, each size and their product within int64 (torch counts
        elements in int64).

    Returns
    -------
    Tensor
        Sparse CSR; the index tensors are not copied (unless they are strided views, which
        torch's kernels cannot read: those are copied once).

    Raises
    ------
    InputTypeError, InputValueError
        For parts or a size that do not make a CSR tensor, and inside a ``torch.func``
        transform (see :func:`~sparsegrad_lab.operand_checks.check_not_transformed`).

    Examples
    --------
    >>> A = csr_tensor(torch.tensor([0, 1, 1]), torch.tensor([2]), torch.tensor([5.0]), (2, 3))
    >>> A.to_dense()
    tensor([[0., 0., 5.],
            [0., 0., 0.]])
    """
    size = _check_csr_parts(crow, col, values, size)
    if values.requires_grad and torch.is_grad_enabled():
        return CsrFromValues.apply(crow, col, values, size)  # type: ignore[no-any-return]
    return plain_csr(crow, col, values, size)


def _check_csr_parts(crow: Any, col: Any, values: Any, size: Any) -> tuple[int, ...]:
    for name, part in (("crow", crow), ("col", col), ("values", values)):
        if not isinstance(part, Tensor) or part.layout != torch.strided:
            kind = f"a {part.layout} tensor" if isinstance(part, Tensor) else type(part).__name__
            raise InputTypeError(
                f"csr_tensor: {name} must be a dense (strided) torch.Tensor, got {kind}; "
                f"convert it with torch.as_tensor({name})"
            )
    check_not_transformed("csr_tensor", crow=crow, col=col, values=values)
    if not isinstance(size, tuple | list | torch.Size) or len(size) not in (2, 3):
        raise InputTypeError(
            f"csr_tensor: size must be a tuple (n, m) or (b, n, m) of ints, got {size!r}"
        )
    size = check_sizes(size, "size", "csr_tensor")
    lead = size[:-2]
    if crow.dtype not in (torch.int32, torch.int64) or col.dtype != crow.dtype:
        raise InputTypeError(
            f"csr_tensor: crow and col must both be int32 or both int64, got {crow.dtype} "
            f"and {col.dtype}"
        )
    if tuple(crow.shape) != (*lead, size[-2] + 1):
        raise InputValueError(
            f"csr_tensor: crow must have shape {(*lead, size[-2] + 1)} for size {size}, got "
            f"{tuple(crow.shape)}"
        )
    if col.dim() != len(lead) + 1 or tuple(col.shape[:-1]) != lead:
        raise InputValueError(
            f"csr_tensor: col must have shape {(*lead, 'nnz')} for size {size}, got "
            f"{tuple(col.shape)}"
        )
    if values.shape != col.shape:
        raise InputValueError(
            f"csr_tensor: values must have col's shape {tuple(col.shape)} (one value per "
            f"column index), got {tuple(values.shape)}"
        )
    if not crow.device == col.device == values.device:
        raise InputValueError(
            f"csr_tensor: crow, col and values must be on one device, got {crow.device}, "
            f"{col.device} and {values.device}"
        )
    return size


def plain_csr(crow: Tensor, col: Tensor, values: Tensor, size: tuple[int, ...]) -> Tensor:
    """A CSR tensor of parts taken from a valid ``A``, built without torch's checks.

    The package validates indices itself (one vectorised pass), so torch's checks are off;
    torch's kernels then read the index storage as contiguous: a strided view is copied.

    >>> plain_csr(torch.tensor([0, 1]), torch.tensor([0]), torch.ones(1), (1, 1)).layout
    torch.sparse_csr
    """
    return torch.sparse_csr_tensor(
        crow.contiguous(), col.contiguous(), values, size, check_invariants=False
    )


class DifferentiableCsr(Tensor):
    """A sparse CSR tensor whose ``values()`` can be differentiated twice.

    What :func:`~sparsegrad_lab.sampled_mm` returns for a CSR ``A`` whose result needs a
    gradient. torch's own ``values()`` of a CSR tensor has a backward that cuts the upstream
    gradient off autograd (see the module docstring), so with ``create_graph=True`` a second
    derivative through ``S.values()`` would be silently wrong; here ``values()`` is
    :class:`CsrValues`, whose backward is differentiable. Nothing else differs: torch
    functions see a plain CSR tensor and return plain tensors (``__torch_function__`` is
    disabled, as for ``torch.nn.Parameter``), and it pickles as a plain CSR tensor.
    ``S.detach()``, ``S.clone()`` and every other result are plain tensors again.

    >>> S = differentiable_csr(torch.tensor([0, 1]), torch.tensor([0]),
    ...                        torch.ones(1, requires_grad=True), (1, 1))
    >>> type(S).__name__, S.layout, S.values()
    ('DifferentiableCsr', torch.sparse_csr, tensor([1.], grad_fn=<CsrValuesBackward>))
    """

    __torch_function__ = torch._C._disabled_torch_function_impl  # type: ignore[assignment]

    def values(self) -> Tensor:
        """The values, shaped like ``col_indices()``; differentiable twice under autograd."""
        if self.requires_grad and torch.is_grad_enabled():
            values: Tensor = CsrValues.apply(self)
            return values
        return super().values()

    def __reduce_ex__(self, protocol: Any) -> Any:
        # As a plain tensor: torch.load(weights_only=True) admits no classes of its own.
        plain = Tensor._make_subclass(Tensor, self, self.requires_grad)
        return plain.__reduce_ex__(protocol)


class CsrFromValues(torch.autograd.Function):
    """``A = CSR(crow, col, values)`` whose backward costs O(nnz), not O(n m).

    ``apply(crow, col, values, size[, twice])``. The backward returns
    ``∂L/∂v̄_k = Ḡ_{r_k c_k}`` read from the upstream gradient (sparse or dense), built of
    differentiable torch operations, so a double backward goes through it. ``values`` is
    saved for backward (though the reading does not need it) so that autograd refuses a
    backward after the values were modified in place, as it does for
    ``torch.sparse_csr_tensor``. ``twice=True`` returns a :class:`DifferentiableCsr`.
    """

    @staticmethod
    def forward(
        ctx: Any,
        crow: Tensor,
        col: Tensor,
        values: Tensor,
        size: tuple[int, ...],
        twice: bool = False,
    ) -> Tensor:
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(crow, col, values)
        ctx.size = size
        A = plain_csr(crow, col, values, size)
        return Tensor._make_subclass(DifferentiableCsr, A) if twice else A

    @staticmethod
    def backward(ctx: Any, grad: Tensor | None) -> tuple[None, None, Tensor | None, None, None]:
        crow, col, _values = ctx.saved_tensors
        if grad is None:  # no gradient reached A: say so, as torch's own functions do
            return None, None, None, None, None
        return None, None, _csr_values_at(grad, crow, col, ctx.size), None, None


class CooFromValues(torch.autograd.Function):
    """``A = COO(indices, values)`` (coalesced indices), with a differentiable backward.

    ``apply(indices, values, size)``; the backward reads the upstream gradient at the
    stored positions, as :class:`CsrFromValues` does, where torch's
    ``sparse_coo_tensor`` backward is not differentiable again.
    """

    @staticmethod
    def forward(ctx: Any, indices: Tensor, values: Tensor, size: tuple[int, ...]) -> Tensor:
        ctx.set_materialize_grads(False)
        indices = indices.contiguous()  # a strided view (edges.t()): see the module docstring
        ctx.save_for_backward(indices, values)
        ctx.size = size
        return torch.sparse_coo_tensor(
            indices, values, size, is_coalesced=True, check_invariants=False
        )

    @staticmethod
    def backward(ctx: Any, grad: Tensor | None) -> tuple[None, Tensor | None, None]:
        indices, _values = ctx.saved_tensors
        if grad is None:
            return None, None, None
        if (
            grad.layout == torch.sparse_coo
            and grad.is_coalesced()
            and grad.indices().shape == indices.shape
            and torch.equal(grad.indices(), indices)
        ):
            return None, grad.values().clone(), None  # not a view: see _csr_values_at
        size = ctx.size
        flat = indices[0]
        for axis in range(1, len(size)):
            flat = flat * size[axis] + indices[axis]
        return None, _values_at_flat(grad, flat, size), None


class CsrValues(torch.autograd.Function):
    """``A.values()`` of a CSR ``A``, whose backward autograd can differentiate again.

    ``apply(A)`` -> values of shape ``A.col_indices().shape``. The backward is
    :func:`csr_tensor` of the incoming gradient on ``A``'s indices.
    """

    @staticmethod
    def forward(ctx: Any, A: Tensor) -> Tensor:
        ctx.set_materialize_grads(False)
        ctx.crow, ctx.col, ctx.size = A.crow_indices(), A.col_indices(), tuple(A.shape)
        return A.values()

    @staticmethod
    def backward(ctx: Any, grad: Tensor | None) -> Tensor | None:
        if grad is None:
            return None
        return csr_from_values(ctx.crow, ctx.col, grad, ctx.size)


def csr_from_values(crow: Tensor, col: Tensor, values: Tensor, size: tuple[int, ...]) -> Tensor:
    """:func:`csr_tensor` without the structure checks, for parts taken from a valid ``A``.

    >>> csr_from_values(torch.tensor([0, 1]), torch.tensor([0]), torch.ones(1), (1, 1)).layout
    torch.sparse_csr
    """
    if values.requires_grad and torch.is_grad_enabled():
        return CsrFromValues.apply(crow, col, values, size)  # type: ignore[no-any-return]
    return plain_csr(crow, col, values, size)


def coo_from_values(indices: Tensor, values: Tensor, size: tuple[int, ...]) -> Tensor:
    """A coalesced COO tensor from a valid ``A``'s indices, differentiable twice in ``values``.

    >>> coo_from_values(torch.tensor([[0], [1]]), torch.ones(1), (1, 2)).to_dense()
    tensor([[0., 1.]])
    """
    if values.requires_grad and torch.is_grad_enabled():
        return CooFromValues.apply(indices, values, size)  # type: ignore[no-any-return]
    return torch.sparse_coo_tensor(
        indices.contiguous(), values, size, is_coalesced=True, check_invariants=False
    )


def differentiable_csr(crow: Tensor, col: Tensor, values: Tensor, size: tuple[int, ...]) -> Tensor:
    """:func:`csr_from_values` as a :class:`DifferentiableCsr` when ``values`` needs a gradient.

    For a result handed to users, who read it with ``S.values()``: second derivatives
    through that stay complete. Parts taken from a valid ``A``, unchecked.

    >>> S = differentiable_csr(torch.tensor([0, 1]), torch.tensor([0]), torch.ones(1), (1, 1))
    >>> type(S).__name__, S.to_dense()                # no gradient: a plain CSR tensor
    ('Tensor', tensor([[1.]]))
    """
    if values.requires_grad and torch.is_grad_enabled():
        return CsrFromValues.apply(crow, col, values, size, True)  # type: ignore[no-any-return]
    return plain_csr(crow, col, values, size)


def _csr_values_at(grad: Tensor, crow: Tensor, col: Tensor, size: tuple[int, ...]) -> Tensor:
    """``grad`` at the stored positions of CSR ``(crow, col)``, shaped like its values."""
    if (
        grad.layout == torch.sparse_csr
        and grad.col_indices().shape == col.shape
        and torch.equal(grad.crow_indices(), crow)
        and torch.equal(grad.col_indices(), col)
    ):
        # A copy, not the view values() gives: a view of a sparse tensor cannot be re-viewed
        # (torch.real, view_as_real: "Sparse CSR tensors do not have strides"). Under
        # create_graph, read through CsrValues: torch's values() backward is wrong for a
        # batched CSR tensor (it builds one whose index shapes disagree).
        if grad.requires_grad and torch.is_grad_enabled():
            values: Tensor = CsrValues.apply(grad)
            return values.clone()
        return grad.values().clone()
    m = size[-1]
    # Row t n + i of every stored entry of the (b n, m) stacked matrix, then its flat position.
    counts = crow.diff(dim=-1).reshape(-1)
    rows = torch.arange(counts.numel(), device=col.device).repeat_interleave(
        counts, output_size=col.numel()
    )
    flat = rows * m + col.reshape(-1).to(torch.int64)
    return _values_at_flat(grad, flat, size).reshape(col.shape)


def _values_at_flat(grad: Tensor, flat: Tensor, size: tuple[int, ...]) -> Tensor:
    """``grad`` (dense or sparse, of shape ``size``) at row-major flat positions ``flat``."""
    if grad.layout == torch.strided:
        return grad.reshape(-1)[flat]
    # Any other sparse gradient: match positions through sorted flat keys, O(nnz log nnz).
    coo = grad.to_sparse_coo().coalesce()
    idx = coo.indices()
    if idx.shape[1] == 0:
        return torch.zeros(flat.shape, dtype=grad.dtype, device=grad.device)
    keys = idx[0]
    for axis in range(1, len(size)):
        keys = keys * size[axis] + idx[axis]  # ascending: the coalesced order
    at = torch.searchsorted(keys, flat).clamp(max=keys.numel() - 1)
    picked = coo.values()[at]
    return torch.where(keys[at] == flat, picked, torch.zeros_like(picked))
