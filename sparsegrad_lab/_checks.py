"""Input validation for ``sparse_mm``: every mistake caught before torch sees it."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .errors import InputTypeError, InputValueError
from .sddmm import BACKWARD_STRATEGIES

_SUPPORTED_LAYOUTS = (torch.sparse_coo, torch.sparse_csr)
_EVERYWHERE_DTYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128)
# torch's CPU CSR kernels (MKL and native) implement no half-precision matmul.
_CUDA_ONLY_DTYPES = (torch.float16, torch.bfloat16)


def _kind(obj: Any) -> str:
    if isinstance(obj, Tensor):
        return f"a {obj.layout} tensor of shape {tuple(obj.shape)}"
    return f"an object of type {type(obj).__name__}"


def check_sparse_mm_inputs(A: Any, B: Any, backward: Any) -> None:
    """Raise :class:`InputTypeError` / :class:`InputValueError` if ``sparse_mm`` cannot run.

    >>> check_sparse_mm_inputs(torch.eye(2), torch.ones(2, 1), "sddmm")
    Traceback (most recent call last):
    ...
    sparsegrad_lab.errors.InputTypeError: sparse_mm: A must be sparse (torch.sparse_coo or \
torch.sparse_csr), got a dense (strided) tensor of shape (2, 2); convert it with \
A.to_sparse() or A.to_sparse_csr()
    """
    if not isinstance(backward, str) or backward not in BACKWARD_STRATEGIES:
        raise InputValueError(
            f"sparse_mm: backward must be one of {BACKWARD_STRATEGIES}, got {backward!r}"
        )
    if not isinstance(A, Tensor):
        raise InputTypeError(f"sparse_mm: A must be a sparse torch.Tensor, got {_kind(A)}")
    if not isinstance(B, Tensor):
        raise InputTypeError(f"sparse_mm: B must be a dense torch.Tensor, got {_kind(B)}")
    check_sparse_layout(A, "sparse_mm")
    if B.layout != torch.strided:
        raise InputTypeError(
            f"sparse_mm: B must be a dense (strided) tensor, got layout {B.layout}; "
            "convert it with B.to_dense()"
        )
    _check_shape_of_A(A, "sparse_mm")
    if B.dim() != A.dim():
        expected = "(m, p)" if A.dim() == 2 else "(b, m, p)"
        raise InputValueError(
            f"sparse_mm: A is {A.dim()}-D {tuple(A.shape)}, so B must be {A.dim()}-D "
            f"{expected}; got B of shape {tuple(B.shape)}"
        )
    if A.shape[-1] != B.shape[-2]:
        raise InputValueError(
            f"sparse_mm: inner dimensions differ: A has {A.shape[-1]} columns "
            f"(shape {tuple(A.shape)}) but B has {B.shape[-2]} rows (shape {tuple(B.shape)})"
        )
    if A.dim() == 3 and A.shape[0] != B.shape[0]:
        raise InputValueError(
            f"sparse_mm: batch sizes differ: A has {A.shape[0]} items (shape "
            f"{tuple(A.shape)}), B has {B.shape[0]} (shape {tuple(B.shape)})"
        )
    if A.dtype != B.dtype:
        raise InputTypeError(
            f"sparse_mm: A and B must have the same dtype, got A {A.dtype} and B {B.dtype}; "
            "cast one with .to(dtype)"
        )
    if A.dtype not in _EVERYWHERE_DTYPES + _CUDA_ONLY_DTYPES:
        raise InputTypeError(
            f"sparse_mm: dtype {A.dtype} is not supported; expected one of float32, "
            "float64, complex64, complex128 (or float16/bfloat16 on CUDA)"
        )
    if A.device != B.device:
        raise InputValueError(
            f"sparse_mm: A and B must be on the same device, got A on {A.device} and B on "
            f"{B.device}"
        )
    if A.dtype in _CUDA_ONLY_DTYPES and A.device.type != "cuda":
        raise InputTypeError(
            f"sparse_mm: {A.dtype} is supported on CUDA only (torch's {A.device.type} sparse "
            "kernels have no half-precision matmul); use float32 on this device"
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
        raise InputTypeError(f"{where}: A must be a sparse torch.Tensor, got {_kind(A)}")
    check_sparse_layout(A, where)
    _check_shape_of_A(A, where)


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
    if M.layout not in _SUPPORTED_LAYOUTS:
        raise InputTypeError(
            f"{where}: {name} has layout {M.layout}; expected torch.sparse_coo or "
            f"torch.sparse_csr (convert it with {name}.to_sparse_csr())"
        )


def _check_shape_of_A(A: Tensor, where: str) -> None:
    if A.dim() not in (2, 3):
        raise InputValueError(
            f"{where}: A must be 2-D (n, m) or batched 3-D (b, n, m), got shape {tuple(A.shape)}"
        )
    if A.dense_dim() != 0:
        raise InputValueError(
            f"{where}: A is a hybrid sparse tensor (sparse_dim={A.sparse_dim()}, "
            f"dense_dim={A.dense_dim()}); expected scalar values (dense_dim=0), e.g. "
            f"a sparse tensor with sparse_dim={A.dim()}"
        )


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
    if isinstance(layout, torch.layout) and layout in _SUPPORTED_LAYOUTS:
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
