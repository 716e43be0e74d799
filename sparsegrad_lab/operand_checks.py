"""Checks of the tensor operands of ``sparse_mm`` and ``sampled_mm``, before torch sees them.

The sparse matrix (layout, rank, not hybrid, not on the meta device), the dense operands
(shapes that fit it, one dtype and device, a supported dtype) and the way the call is made
(plain autograd, not a ``torch.func`` transform). The indices themselves are checked by
:mod:`sparsegrad_lab.index_checks`, scalar arguments by :mod:`sparsegrad_lab.scalar_checks`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .errors import InputTypeError, InputValueError
from .index_checks import check_values_count
from .scalar_checks import SPARSE_LAYOUTS, check_strategy, kind_of

__all__ = [
    "check_dtype_and_device",
    "check_not_transformed",
    "check_sampled_mm_inputs",
    "check_sparse_layout",
    "check_sparse_matrix",
    "check_sparse_mm_inputs",
]

_EVERYWHERE_DTYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128)
# torch's CPU CSR kernels (MKL and native) implement no half-precision matmul.
_CUDA_ONLY_DTYPES = (torch.float16, torch.bfloat16)


def check_sparse_mm_inputs(A: Any, B: Any, backward: Any) -> None:
    """Raise :class:`InputTypeError` / :class:`InputValueError` if ``sparse_mm`` cannot run.

    >>> check_sparse_mm_inputs(torch.eye(2), torch.ones(2, 1), "sddmm")
    Traceback (most recent call last):
    ...
    sparsegrad_lab.errors.InputTypeError: sparse_mm: A must be sparse (torch.sparse_coo or \
torch.sparse_csr), got a dense (strided) tensor of shape (2, 2); convert it with \
A.to_sparse() or A.to_sparse_csr()
    """
    check_strategy(backward, "sparse_mm")
    if not isinstance(A, Tensor):
        raise InputTypeError(f"sparse_mm: A must be a sparse torch.Tensor, got {kind_of(A)}")
    if not isinstance(B, Tensor):
        raise InputTypeError(f"sparse_mm: B must be a dense torch.Tensor, got {kind_of(B)}")
    check_not_transformed("sparse_mm", A=A, B=B)
    check_sparse_layout(A, "sparse_mm")
    if B.layout != torch.strided:
        raise InputTypeError(
            f"sparse_mm: B must be a dense (strided) tensor, got layout {B.layout}; "
            "convert it with B.to_dense()"
        )
    _check_shape_of_A(A, "sparse_mm")
    # Read once: on a lesson-sized graph these checks are a visible part of the call.
    shape, b_shape, dtype, device = A.shape, B.shape, A.dtype, A.device
    if len(b_shape) != len(shape):
        expected = "(m, p)" if len(shape) == 2 else "(b, m, p)"
        raise InputValueError(
            f"sparse_mm: A is {len(shape)}-D {tuple(shape)}, so B must be {len(shape)}-D "
            f"{expected}; got B of shape {tuple(b_shape)}"
        )
    if shape[-1] != b_shape[-2]:
        raise InputValueError(
            f"sparse_mm: inner dimensions differ: A has {shape[-1]} columns "
            f"(shape {tuple(shape)}) but B has {b_shape[-2]} rows (shape {tuple(b_shape)})"
        )
    if len(shape) == 3 and shape[0] != b_shape[0]:
        raise InputValueError(
            f"sparse_mm: batch sizes differ: A has {shape[0]} items (shape "
            f"{tuple(shape)}), B has {b_shape[0]} (shape {tuple(b_shape)})"
        )
    if dtype != B.dtype:
        raise InputTypeError(
            f"sparse_mm: A and B must have the same dtype, got A {dtype} and B {B.dtype}; "
            "cast one with .to(dtype)"
        )
    if device != B.device:
        raise InputValueError(
            f"sparse_mm: A and B must be on the same device, got A on {device} and B on {B.device}"
        )
    check_dtype_and_device("sparse_mm", dtype, device, "A")
    _check_not_meta(A, "sparse_mm")


def _functorch_level() -> int | None:
    """The level of the innermost ``torch.func`` transform running now, or ``None``."""
    level: int | None = torch._C._functorch.maybe_current_level()
    return level


def check_not_transformed(where: str, **tensors: Any) -> None:
    """Raise :class:`InputTypeError` inside a ``torch.func`` transform (grad, vjp, vmap, ...).

    Under such a transform every tensor an operation touches is a functorch wrapper without
    storage of its own -- even one the function closed over, once an operation has read it
    -- and this package reads index storage directly (numpy views in the index checks, the
    row pointers handed to torch's sparse kernels); its autograd functions are also
    written for ``torch.autograd``, not for functorch. Refused here, with the way out,
    instead of failing deep inside torch ("Cannot access data pointer of Tensor that
    doesn't have storage"). ``tensors`` are the arguments by name.

    >>> check_not_transformed("sparse_mm", B=torch.ones(1))  # plain autograd: passes
    >>> import torch.func
    >>> torch.func.grad(lambda B: check_not_transformed("sparse_mm", B=B) or B.sum())(
    ...     torch.ones(1))
    Traceback (most recent call last):
    ...
    sparsegrad_lab.errors.InputTypeError: sparse_mm: torch.func transforms (grad, vjp, \
jacrev, vmap, ...) are not supported, and B is a functorch-wrapped tensor; compute the \
gradient with torch.autograd.grad(loss, inputs) or loss.backward() instead
    """
    is_wrapped = torch._C._functorch.is_functorch_wrapped_tensor
    if _functorch_level() is None and not any(
        isinstance(tensor, Tensor) and is_wrapped(tensor) for tensor in tensors.values()
    ):
        return  # plain autograd: the usual case, decided in a few hundred nanoseconds
    wrapped = [name for name, t in tensors.items() if isinstance(t, Tensor) and is_wrapped(t)]
    if len(wrapped) == 1:
        which = f"{wrapped[0]} is a functorch-wrapped tensor"
    elif wrapped:
        which = f"{', '.join(wrapped[:-1])} and {wrapped[-1]} are functorch-wrapped tensors"
    else:
        which = "it was called inside one"
    raise InputTypeError(
        f"{where}: torch.func transforms (grad, vjp, jacrev, vmap, ...) are not "
        f"supported, and {which}; compute the gradient with "
        "torch.autograd.grad(loss, inputs) or loss.backward() instead"
    )


def _check_not_meta(A: Tensor, where: str) -> None:
    # A meta tensor passes every check of shape and dtype, then fails deep inside torch.
    if A.device.type == "meta":
        raise InputValueError(
            f"{where}: A is on the meta device, which holds no indices or values; build it "
            "on a real device (cpu, cuda)"
        )


def check_dtype_and_device(where: str, dtype: torch.dtype, device: torch.device, name: str) -> None:
    """Raise :class:`InputTypeError` unless ``dtype`` (of ``name``) is multiplied on ``device``.

    float32, float64, complex64 and complex128 everywhere; float16 and bfloat16 on CUDA only.

    >>> check_dtype_and_device("f", torch.float16, torch.device("cpu"), "A")
    Traceback (most recent call last):
    ...
    sparsegrad_lab.errors.InputTypeError: f: torch.float16 is supported on CUDA only (torch's \
cpu sparse kernels have no half-precision matmul); use float32 on this device
    """
    if dtype in _EVERYWHERE_DTYPES:
        return
    if dtype not in _CUDA_ONLY_DTYPES:
        raise InputTypeError(
            f"{where}: {name} has dtype {dtype}, which is not supported; expected one of "
            "float32, float64, complex64, complex128 (or float16/bfloat16 on CUDA)"
        )
    if device.type != "cuda":
        raise InputTypeError(
            f"{where}: {dtype} is supported on CUDA only (torch's {device.type} sparse "
            "kernels have no half-precision matmul); use float32 on this device"
        )


def check_sampled_mm_inputs(A: Any, X: Any, Y: Any, backward: Any) -> None:
    """Raise :class:`InputTypeError` / :class:`InputValueError` if ``sampled_mm`` cannot run.

    ``A`` gives only its pattern, so its dtype is free; ``X`` ``(n, d)`` and ``Y`` ``(d, m)``
    (or batched) must be dense, of one supported dtype and on ``A``'s device.

    >>> check_sampled_mm_inputs(torch.eye(2).to_sparse(), torch.ones(2, 3), torch.ones(2, 2),
    ...                         "sddmm")
    Traceback (most recent call last):
    ...
    sparsegrad_lab.errors.InputValueError: sampled_mm: X @ Y needs X's columns to match Y's \
rows, got X of shape (2, 3) and Y of shape (2, 2)
    """
    where = "sampled_mm"
    check_strategy(backward, where)
    check_not_transformed(where, A=A, X=X, Y=Y)
    check_sparse_matrix(A, where)
    rows, cols = ("(n, d)", "(d, m)") if A.dim() == 2 else ("(b, n, d)", "(b, d, m)")
    for name, M, expected in (("X", X, rows), ("Y", Y, cols)):
        if not isinstance(M, Tensor) or M.layout != torch.strided:
            raise InputTypeError(
                f"{where}: {name} must be a dense (strided) tensor, got {kind_of(M)}"
            )
        if M.dim() != A.dim():
            raise InputValueError(
                f"{where}: A is {A.dim()}-D {tuple(A.shape)}, so {name} must be {A.dim()}-D "
                f"{expected}; got {name} of shape {tuple(M.shape)}"
            )
    if X.shape[-1] != Y.shape[-2]:
        raise InputValueError(
            f"{where}: X @ Y needs X's columns to match Y's rows, got X of shape "
            f"{tuple(X.shape)} and Y of shape {tuple(Y.shape)}"
        )
    if X.shape[-2] != A.shape[-2] or Y.shape[-1] != A.shape[-1]:
        raise InputValueError(
            f"{where}: X @ Y must have A's shape {tuple(A.shape[-2:])}, got X of shape "
            f"{tuple(X.shape)} and Y of shape {tuple(Y.shape)}"
        )
    if A.dim() == 3 and not X.shape[0] == Y.shape[0] == A.shape[0]:
        raise InputValueError(
            f"{where}: batch sizes differ: A has {A.shape[0]} items, X {X.shape[0]} and "
            f"Y {Y.shape[0]}"
        )
    if X.dtype != Y.dtype:
        raise InputTypeError(
            f"{where}: X and Y must have the same dtype, got X {X.dtype} and Y {Y.dtype}; "
            "cast one with .to(dtype)"
        )
    check_dtype_and_device(where, X.dtype, X.device, "X")
    if not A.device == X.device == Y.device:
        raise InputValueError(
            f"{where}: A, X and Y must be on the same device, got {A.device}, {X.device} "
            f"and {Y.device}"
        )


def check_sparse_matrix(A: Any, where: str) -> None:
    """Raise unless ``A`` is a sparse COO/CSR tensor of shape ``(n, m)`` or ``(b, n, m)``.

    ``where`` names the caller in the message.

    >>> check_sparse_matrix(torch.ones(2, 2, 2, 2).to_sparse(), "sparsity_pattern")
    Traceback (most recent call last):
    ...
    sparsegrad_lab.errors.InputValueError: sparsity_pattern: A must be 2-D (n, m) or \
batched 3-D (b, n, m), got shape (2, 2, 2, 2)
    """
    if not isinstance(A, Tensor):
        raise InputTypeError(f"{where}: A must be a sparse torch.Tensor, got {kind_of(A)}")
    check_not_transformed(where, A=A)
    check_sparse_layout(A, where)
    _check_shape_of_A(A, where)
    _check_not_meta(A, where)


def check_sparse_layout(M: Tensor, where: str, name: str = "A") -> None:
    """Raise :class:`InputTypeError` unless the tensor ``M`` (called ``name``) is COO or CSR.

    >>> check_sparse_layout(torch.eye(2).to_sparse_csc(), "stack_csr", "matrices[0]")
    Traceback (most recent call last):
    ...
    sparsegrad_lab.errors.InputTypeError: stack_csr: matrices[0] has layout \
torch.sparse_csc; expected torch.sparse_coo or torch.sparse_csr (convert it with \
matrices[0].to_sparse_csr())
    """
    if M.layout == torch.strided:
        raise InputTypeError(
            f"{where}: {name} must be sparse (torch.sparse_coo or torch.sparse_csr), got a "
            f"dense (strided) tensor of shape {tuple(M.shape)}; convert it with "
            f"{name}.to_sparse() or {name}.to_sparse_csr()"
        )
    if M.layout not in SPARSE_LAYOUTS:
        raise InputTypeError(
            f"{where}: {name} has layout {M.layout}; expected torch.sparse_coo or "
            f"torch.sparse_csr (convert it with {name}.to_sparse_csr())"
        )


def _check_shape_of_A(A: Tensor, where: str) -> None:
    if A.dim() not in (2, 3):
        raise InputValueError(
            f"{where}: A must be 2-D (n, m) or batched 3-D (b, n, m), got shape {tuple(A.shape)}"
        )
    if A.layout == torch.sparse_csr:
        col_shape = A.col_indices().shape
        # Tensor.values: the shape only, not a subclass's own values() (sampled_mm's CSR
        # result reads them through an autograd Function, needless for a shape).
        if Tensor.values(A).shape[: len(col_shape)] != col_shape:
            check_values_count(A, where)  # torch derives dense_dim from the values: not yet
    # With dense_dim 0 as well, a CSR A has exactly one value per column index.
    if A.dense_dim() != 0:
        raise InputValueError(
            f"{where}: A is a hybrid sparse tensor (sparse_dim={A.sparse_dim()}, "
            f"dense_dim={A.dense_dim()}) of shape {tuple(A.shape)}; expected scalar values "
            "(dense_dim=0). To multiply each of its dense slices as one matrix of a batch, "
            "move that dimension to the front: A.to_dense().movedim(-1, 0).to_sparse()"
        )
