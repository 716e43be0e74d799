"""Input validation for ``sparse_mm``: every mistake caught before torch sees it."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, NoReturn

import numpy as np
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
    _check_dtype_and_device("sparse_mm", dtype, device, "A")
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


def _check_not_meta(A: Tensor, where: str) -> None:
    # A meta tensor passes every check of shape and dtype, then fails deep inside torch.
    if A.device.type == "meta":
        raise InputValueError(
            f"{where}: A is on the meta device, which holds no indices or values; build it "
            "on a real device (cpu, cuda)"
        )


def _check_dtype_and_device(
    where: str, dtype: torch.dtype, device: torch.device, name: str
) -> None:
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
    if not isinstance(backward, str) or backward not in BACKWARD_STRATEGIES:
        raise InputValueError(
            f"{where}: backward must be one of {BACKWARD_STRATEGIES}, got {backward!r}"
        )
    check_not_transformed(where, A=A, X=X, Y=Y)
    check_sparse_matrix(A, where)
    rows, cols = ("(n, d)", "(d, m)") if A.dim() == 2 else ("(b, n, d)", "(b, d, m)")
    for name, M, expected in (("X", X, rows), ("Y", Y, cols)):
        if not isinstance(M, Tensor) or M.layout != torch.strided:
            raise InputTypeError(
                f"{where}: {name} must be a dense (strided) tensor, got {_kind(M)}"
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
    _check_dtype_and_device(where, X.dtype, X.device, "X")
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
        raise InputTypeError(f"{where}: A must be a sparse torch.Tensor, got {_kind(A)}")
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


# ------------------------------------------------------------------- the indices themselves


def check_indices(
    A: Tensor,
    where: str,
    name: str = "A",
    *,
    values_counted: bool = False,
    ranges: bool = True,
) -> None:
    """Raise :class:`InputValueError` unless every index of sparse ``A`` is valid.

    torch checks sparse invariants only when asked, and its kernels read out of bounds
    (or abort the process) on an index out of range. A few reductions over the indices
    decide -- one pass, a handful of kernels, whatever ``nnz`` is; only when one fails
    does a search find the first offending entry, so the message can name it. COO: every
    index in range, and a tensor marked coalesced really sorted without duplicates. CSR:
    one value per column index, row pointers starting at 0, never decreasing and ending
    at nnz, columns in range. ``A`` is a checked sparse matrix on a real device (not meta);
    ``values_counted=True`` says that its values were counted already (the input checks of
    ``sparse_mm`` and ``sampled_mm`` do), which skips that step. ``ranges=False`` (COO
    only) leaves out the ranges of the indices, for a caller whose next step is torch's
    CPU COO product: that kernel checks the range of every index before it reads one, and
    raises on the first that is out of range (the caller then calls this again, with the
    ranges, for the message).

    (torch's own validator, ``check_invariants=True``, also requires sorted columns within
    each row -- which no kernel here needs -- and costs as much as the product itself at
    10⁵ stored entries.)

    >>> bad = torch.sparse_coo_tensor(torch.tensor([[0, 5], [0, 1]]), torch.ones(2), (2, 2),
    ...                               check_invariants=False)
    >>> check_indices(bad, "sparse_mm")
    Traceback (most recent call last):
    ...
    sparsegrad_lab.errors.InputValueError: sparse_mm: A: row index 5 at entry 1 is out of \
range for 2 rows; build A from valid indices (torch.sparse.check_sparse_tensor_invariants \
finds them at construction)
    """
    if A.layout == torch.sparse_coo:
        if not _coo_indices_valid(A, ranges):
            _explain_coo(A, where, name)
    else:
        if not values_counted:
            check_values_count(A, where, name)
        if not _csr_indices_valid(A):
            _explain_csr(A, where, name)


def _coo_indices_valid(A: Tensor, ranges: bool = True) -> bool:
    indices = A._indices()
    if indices.shape[1] == 0 or not (ranges or A.is_coalesced()):
        return True
    if indices.shape[1] <= _FEW_ENTRIES and indices.is_cpu:
        return _few_coo_indices_valid(indices.numpy(), tuple(A.shape), A.is_coalesced(), ranges)
    if ranges:
        lo, hi = torch.aminmax(indices, dim=1)
        if min(lo.tolist()) < 0 or any(h >= s for h, s in zip(hi.tolist(), A.shape, strict=True)):
            return False
    if not A.is_coalesced() or indices.shape[1] == 1:
        return True
    key = _row_major_keys(indices, A.shape)
    if indices.shape[1] <= _FEW_ENTRIES:
        # Two kernels instead of four (two slices, a comparison, an all); the nnz x 8 bytes
        # of steps it allocates instead of a bool mask stay below 32 KiB here.
        return int(key.diff().min()) > 0
    return bool((key[1:] > key[:-1]).all())


#: Up to this many stored entries a temporary of nnz int64 is negligible (32 KiB) and the
#: number of kernel calls, not their work, is the cost of a check.
_FEW_ENTRIES = 4096


def _few_csr_indices_valid(crow: np.ndarray, col: np.ndarray, m: int) -> bool:
    """The CSR check of a few CPU entries on numpy views (see :func:`_few_coo_indices_valid`).

    Row pointers (``(n + 1,)``, or ``(b, n + 1)`` for a batch) start at 0, never decrease
    and end at nnz; columns lie in :math:`[0, m)`.
    """
    nnz = col.shape[-1]
    if crow.ndim == 1:
        ends_wrong = crow[0] != 0 or crow[-1] != nnz
    else:
        ends_wrong = bool(crow[:, 0].any()) or bool((crow[:, -1] != nnz).any())
    if ends_wrong or bool((crow[..., 1:] < crow[..., :-1]).any()):
        return False
    return nnz == 0 or bool(col.min() >= 0 and col.max() < m)


def _few_coo_indices_valid(
    indices: np.ndarray, shape: tuple[int, ...], coalesced: bool, ranges: bool = True
) -> bool:
    """The COO check of a few CPU entries, on a numpy view of the same memory.

    The same tests as the torch path below; at a lesson's few hundred entries a torch
    kernel call costs about 3 µs of dispatch against numpy's 1 µs, which made the check
    (about 13 µs against 5 µs here, one thread) a fifth of a whole ``sparse_mm`` step.
    Without ``ranges``, an index out of range may wrap the row-major key around; the
    caller's kernel then refuses that index (see :func:`check_indices`).
    """
    if ranges:
        # As unsigned integers, negative indices are larger than any size: one reduction
        # checks both ends of every dimension's range.
        highest = indices.view(np.uint64).max(axis=1).tolist()
        if any(h >= s for h, s in zip(highest, shape, strict=True)):
            return False
    if not coalesced:
        return True
    key = indices[0]
    for axis in range(1, len(shape)):
        key = key * shape[axis] + indices[axis]
    return bool((key[1:] > key[:-1]).all())


def _row_major_keys(indices: Tensor, shape: torch.Size) -> Tensor:
    """Each entry's position in the flattened tensor.

    Built in one buffer, the first step fused (``c + m r``): at 10⁶ entries and more, each
    fresh temporary of ``nnz`` int64 costs page faults comparable to the arithmetic itself,
    and at the lessons' few hundred entries each extra kernel costs more than its work.
    """
    key = torch.add(indices[1], indices[0], alpha=shape[1])
    for axis in range(2, len(shape)):
        key.mul_(shape[axis]).add_(indices[axis])
    return key


def _csr_indices_valid(A: Tensor) -> bool:
    crow, col = A.crow_indices(), A.col_indices()
    nnz = col.shape[-1]
    if col.numel() <= _FEW_ENTRIES and col.is_cpu:
        return _few_csr_indices_valid(crow.numpy(), col.numpy(), A.shape[-1])
    if A.dim() == 2 and crow.shape[0] > 1 and nnz > 0:
        # The common case, read back to Python once instead of five times.
        lo, hi = torch.aminmax(col)
        ends = (crow.diff().min(), crow[0], crow[-1], lo, hi)
        step, first, last, lo_, hi_ = torch.stack(ends).tolist()
        return step >= 0 and first == 0 and last == nnz and lo_ >= 0 and hi_ < A.shape[-1]
    if A.dim() == 2:  # two scalars: cheaper read one by one than through tensor ops
        if int(crow[0]) != 0 or int(crow[-1]) != nnz:
            return False
    elif bool(crow[:, 0].any()) or bool((crow[:, -1] != nnz).any()):
        return False
    if crow.shape[-1] > 1 and int(crow.diff(dim=-1).min()) < 0:
        return False
    if nnz == 0:
        return True
    lo, hi = torch.aminmax(col)
    return int(lo) >= 0 and int(hi) < A.shape[-1]


_AXES = {2: ("row", "column"), 3: ("batch", "row", "column")}
_AXIS_UNITS = {"batch": "items", "row": "rows", "column": "columns"}
_FIX = (
    "build A from valid indices (torch.sparse.check_sparse_tensor_invariants finds them at "
    "construction)"
)


def _first(bad: Tensor) -> int:
    """Position of the first ``True`` of a 1-D bool tensor known to hold one."""
    return int(bad.nonzero()[0, 0])


def _explain_coo(A: Tensor, where: str, name: str) -> NoReturn:
    """Raise naming the first invalid entry of COO ``A`` (known to have one)."""
    indices = A._indices()
    axes = _AXES[A.dim()]
    lo, hi = torch.aminmax(indices, dim=1)
    limits = torch.tensor(A.shape, device=indices.device)
    if bool(((lo < 0) | (hi >= limits)).any()):
        out = (indices < 0) | (indices >= limits.unsqueeze(1))
        entry = _first(out.any(0))
        axis = _first(out[:, entry])
        label = axes[axis]
        raise InputValueError(
            f"{where}: {name}: {label} index {int(indices[axis, entry])} at entry {entry} is "
            f"out of range for {A.shape[axis]} {_AXIS_UNITS[label]}; {_FIX}"
        )
    # In range, so the failure was the order of a tensor marked coalesced.
    entry = _first(_row_major_keys(indices, A.shape).diff() <= 0) + 1
    raise InputValueError(
        f"{where}: {name} is marked coalesced, but entry {entry} at "
        f"{tuple(indices[:, entry].tolist())} does not come after entry {entry - 1} "
        f"at {tuple(indices[:, entry - 1].tolist())} in row-major order (sorted, "
        "no duplicates); build A without is_coalesced=True, or call "
        "torch.sparse_coo_tensor(indices, values, size).coalesce()"
    )


def check_values_count(A: Tensor, where: str, name: str = "A") -> None:
    """Raise unless CSR ``A`` has exactly one value per column index (O(1)).

    >>> A = torch.sparse_csr_tensor(torch.tensor([0, 1]), torch.tensor([0]), torch.ones(2),
    ...                             (1, 1), check_invariants=False)
    >>> check_values_count(A, "sparse_mm")
    Traceback (most recent call last):
    ...
    sparsegrad_lab.errors.InputValueError: sparse_mm: A has values of shape (2,) for column \
indices of shape (1,); expected one value per column index
    """
    values, col = Tensor.values(A), A.col_indices()  # Tensor.values: see _check_shape_of_A
    if values.shape != col.shape:
        raise InputValueError(
            f"{where}: {name} has values of shape {tuple(values.shape)} for column indices "
            f"of shape {tuple(col.shape)}; expected one value per column index"
        )


def _explain_csr(A: Tensor, where: str, name: str) -> NoReturn:
    """Raise naming the first invalid row pointer or column of CSR ``A`` (known to have one)."""
    crow, col = A.crow_indices(), A.col_indices()
    nnz, m = col.shape[-1], A.shape[-1]
    crow2 = crow.reshape(-1, crow.shape[-1])
    col2 = col.reshape(crow2.shape[0], nnz)
    item = "" if A.dim() == 2 else " of item {}"
    first, last, steps = crow2[:, 0], crow2[:, -1], crow2.diff(dim=1)
    if bool((first != 0).any()):
        t = _first(first != 0)
        raise InputValueError(
            f"{where}: {name}: crow_indices(){item.format(t)} must start at 0, got "
            f"{int(first[t])}; {_FIX}"
        )
    if bool((last != nnz).any()):
        t = _first(last != nnz)
        raise InputValueError(
            f"{where}: {name}: crow_indices(){item.format(t)} must end at nnz = {nnz}, got "
            f"{int(last[t])}; {_FIX}"
        )
    if bool((steps < 0).any()):
        t = _first((steps < 0).any(1))
        entry = _first(steps[t] < 0) + 1
        raise InputValueError(
            f"{where}: {name}: crow_indices(){item.format(t)} must not decrease, but entry "
            f"{entry} is {int(crow2[t, entry])} after {int(crow2[t, entry - 1])}; {_FIX}"
        )
    # The row pointers are valid, so the failure was a column.
    out = (col2 < 0) | (col2 >= m)
    t = _first(out.any(1))
    entry = _first(out[t])
    raise InputValueError(
        f"{where}: {name}: column index {int(col2[t, entry])} at entry {entry}"
        f"{item.format(t)} is out of range for {m} columns; {_FIX}"
    )
