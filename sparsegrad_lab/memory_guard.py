"""The one memory-guard policy: predict first, then refuse politely before allocating.

Every part of the package that could exhaust memory follows the same two rules.

1. **Does it fit at all?** Before a computation allocates, its peak extra memory is
   predicted and compared with :func:`available_bytes`: what *this process* can still get.
   On CPU that is the smallest of the host's ``MemAvailable``, the container's limit minus
   its usage (cgroup v2 ``memory.max``, cgroup v1 ``memory.limit_in_bytes``, for the
   process's own group and every group above it), and ``RLIMIT_AS`` minus the address
   space already mapped. A Binder pod capped at 2 GiB on a host with 200 GiB free is
   therefore seen as the 2 GiB pod it is. On CUDA it is the device's free memory plus what
   torch's caching allocator holds unused. ``sparse_mm`` and the test-matrix generators
   ask only this question; the memory is read once per call, and not at all for an
   operation needing less than :data:`NEGLIGIBLE_BYTES` (the read costs more than such an
   operation). ``sparse_mm``'s prediction is the peak of its stages
   (:func:`~sparsegrad_lab.footprint.sparse_mm_footprint`), the number the lab's model
   gives for the same case; its backward checks again what it allocates then
   (:func:`check_backward_fits`), since memory may have been taken in between. The
   benchmark asks it too, with a safety margin: a case's predicted peak plus its inputs
   must fit in :data:`PLANNING_FRACTION` of what is available, read once per device and
   run, because on CPU a child process then builds a second copy of the inputs beside a
   second torch (about 250 MiB) to measure the peak afresh.
2. **Does it fit the budget?** Interactive callers (the lessons' sweeps and widgets) set a
   *budget* as well, :data:`LAB_BUDGET_BYTES` unless told otherwise, so that one slider
   dragged to its end cannot take a 2 GiB Binder kernel down; the limit is then the
   smaller of the budget and what is available (:func:`limit_bytes`).

A refusal is a :class:`~sparsegrad_lab.errors.MemoryBudgetError` that names the
computation, what it would need, the limit it was checked against and what to do instead.
:func:`check_fits` is the only place that raises it for size; :func:`guarded` turns a
refusal into a result, for loops that must go on past one case too large.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import torch
from torch import Tensor

from .errors import MemoryBudgetError, format_bytes
from .footprint import (
    gathered_rows_bytes,
    grad_B_bytes,
    row_pointers_bytes,
    sampled_mm_footprint,
    sparse_mm_footprint,
    transpose_bytes,
)
from .pattern import SparsityPattern
from .routes import BackwardRoute
from .sddmm import copy_bytes
from .strategies import BackwardStrategy

__all__ = [
    "LAB_BUDGET_BYTES",
    "NEGLIGIBLE_BYTES",
    "PLANNING_FRACTION",
    "GuardedResult",
    "available_bytes",
    "check_backward_fits",
    "check_copy_fits",
    "check_fits",
    "check_row_pointers_fit",
    "check_sampled_mm_fits",
    "check_sparse_mm_fits",
    "guarded",
    "limit_bytes",
    "proc_field_kib",
]

#: The budget of the lessons' sweeps and widgets: 512 MiB of extra memory per operation.
#:
#: mybinder.org restarts a kernel whose container passes 2 GiB (and promises only 1 GiB),
#: and the lessons must each stay under 1.5 GiB. A kernel with torch, matplotlib and
#: ipywidgets loaded holds about 260 MiB, the JupyterLab server about 150 MiB, and the
#: notebook's own inputs and figures some tens of MiB; a fresh-process measurement starts a
#: second interpreter with torch (another ~250 MiB). 512 MiB for one operation's extra
#: memory keeps the sum near 1.2 GiB, below both limits, with the model's tolerance to spare.
LAB_BUDGET_BYTES = 512 * 2**20

#: Below this, an operation's extra memory is not checked at all: reading what is
#: available costs tens of microseconds (several /proc and /sys files), more than the whole
#: product on a lesson-sized graph, and a process that cannot find 1 MiB more is past
#: saving by a polite refusal anyway.
NEGLIGIBLE_BYTES = 2**20

#: The share of :func:`available_bytes` a benchmark case may plan to use, with its inputs
#: and its first call (rule 1 above: the margin for the fresh process that measures it).
PLANNING_FRACTION = 0.8

# cgroup v1 reports "no limit" as a huge number near 2**63 rather than a word.
_NO_LIMIT = 2**60

_CGROUP_ROOT = Path("/sys/fs/cgroup")
_PROC_SELF = Path("/proc/self")
_MEMINFO = Path("/proc/meminfo")


# ------------------------------------------------------------------------ what is available


def available_bytes(device: Any = "cpu") -> int:
    """Memory a new allocation on ``device`` can still get, in bytes.

    CPU: the smallest of the host's ``MemAvailable``, the cgroup limits minus usage (v2 and
    v1, this process's group and its ancestors) and ``RLIMIT_AS`` minus the mapped address
    space. CUDA: free device memory plus what torch's caching allocator holds unused.

    Parameters
    ----------
    device : torch.device or str, default "cpu"

    Returns
    -------
    int
        Bytes, never negative.

    Examples
    --------
    >>> available_bytes("cpu") > 0
    True
    """
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + cached)
    if device.type == "meta":
        return _NO_LIMIT
    limits = [_host_available(), *_cgroup_headroom(), *_address_space_headroom()]
    return max(0, min(limits))


def _read_int(path: Path) -> int | None:
    """An integer file of /proc or /sys, or None when absent, unreadable or ``max``."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text or text == "max":
        return None
    try:
        return int(text.split()[0])
    except ValueError:
        return None


def proc_field_kib(key: str, path: Path = _PROC_SELF / "status") -> int | None:
    """The ``key:`` field of a ``/proc`` file in KiB (``/proc/self/status`` unless told).

    ``None`` when the file or the field is missing (not Linux, a restricted sandbox).

    >>> (proc_field_kib("VmRSS") or 1) > 0
    True
    """
    try:
        with path.open() as lines:
            for line in lines:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _host_available() -> int:
    kib = proc_field_kib("MemAvailable", _MEMINFO)
    if kib is not None:
        return kib * 1024
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _reclaimable(stat: Path, key: str) -> int:
    """Page cache the kernel drops before it kills: counted as available, as docker does."""
    try:
        for line in stat.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _own_cgroups(proc_self: Path) -> dict[str, str]:
    """``{controller: path}`` from /proc/self/cgroup; the v2 group is under the key ``""``."""
    groups: dict[str, str] = {}
    try:
        lines = (proc_self / "cgroup").read_text().splitlines()
    except OSError:
        return groups
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _hierarchy, controllers, path = parts
        for controller in controllers.split(",") if controllers else [""]:
            groups[controller] = path
    return groups


def _group_and_ancestors(base: Path, group: str) -> list[Path]:
    """``base/group`` and each folder above it up to ``base``, those that exist.

    Inside a container the group's path is often relative to another namespace, so the
    mount's own root (``base``) is always among the candidates.
    """
    parts = [part for part in group.split("/") if part]
    candidates = [base.joinpath(*parts[:k]) for k in range(len(parts), -1, -1)]
    return [path for path in candidates if path.is_dir()]


def _cgroup_headroom(root: Path = _CGROUP_ROOT, proc_self: Path = _PROC_SELF) -> list[int]:
    """Limit minus (usage - reclaimable page cache) of every memory cgroup over this process."""
    groups = _own_cgroups(proc_self)
    headroom: list[int] = []
    if "" in groups:  # cgroup v2
        unified = root / "unified" if (root / "unified").is_dir() else root
        for folder in _group_and_ancestors(unified, groups[""]):
            limit = _read_int(folder / "memory.max")
            usage = _read_int(folder / "memory.current")
            if limit is not None and usage is not None and limit < _NO_LIMIT:
                usage -= _reclaimable(folder / "memory.stat", "inactive_file")
                headroom.append(limit - max(0, usage))
    if "memory" in groups:  # cgroup v1
        for folder in _group_and_ancestors(root / "memory", groups["memory"]):
            limit = _read_int(folder / "memory.limit_in_bytes")
            usage = _read_int(folder / "memory.usage_in_bytes")
            if limit is not None and usage is not None and limit < _NO_LIMIT:
                usage -= _reclaimable(folder / "memory.stat", "total_inactive_file")
                headroom.append(limit - max(0, usage))
    return headroom


def _address_space_headroom(proc_self: Path = _PROC_SELF) -> list[int]:
    """``RLIMIT_AS`` minus the address space this process has mapped (``VmSize``)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return []
    mapped_kib = proc_field_kib("VmSize", proc_self / "status") or 0
    return [soft - mapped_kib * 1024]


# ------------------------------------------------------------------------------- the guard


def check_fits(
    needed_bytes: int,
    *,
    what: str,
    budget: int | None = None,
    device: Any = "cpu",
    available: int | None = None,
    advice: str = "shrink the case",
) -> None:
    """Raise :class:`MemoryBudgetError` unless ``needed_bytes`` fits; the policy's one check.

    The limit is ``available`` (read with :func:`available_bytes` when not given), or the
    smaller of it and ``budget`` when a budget is set.

    Parameters
    ----------
    needed_bytes : int
        The predicted peak extra memory of the computation.
    what : str
        Names the computation and its sizes; the message starts with it.
    budget : int, optional
        An interactive caller's cap (e.g. :data:`LAB_BUDGET_BYTES`); ``None`` for none.
    device : torch.device or str, default "cpu"
        Where the computation would allocate.
    available : int, optional
        What :func:`available_bytes` returned, when the caller already read it this call.
    advice : str
        What to do instead; ends the message.

    Examples
    --------
    >>> check_fits(2**30, what="gather on A 1000 x 1000", budget=2**29)
    Traceback (most recent call last):
    ...
    sparsegrad_lab.errors.MemoryBudgetError: gather on A 1000 x 1000 would need 1.00 GiB of \
extra memory, above the budget of 512.00 MiB; refused before running: shrink the case
    >>> check_fits(10, what="a tiny case")  # fits: returns None
    """
    if available is None:
        available = available_bytes(device)
    limit = limit_bytes(budget, device, available)
    if limit == budget:
        against = "the budget of"
    else:
        against = f"what is available on {torch.device(device)},"
    if needed_bytes > limit:
        raise MemoryBudgetError(
            f"{what} would need {format_bytes(needed_bytes)} of extra memory, above "
            f"{against} {format_bytes(limit)}; refused before running: {advice}",
            needed_bytes=int(needed_bytes),
            budget_bytes=int(limit),
        )


def limit_bytes(
    budget: int | None = None, device: Any = "cpu", available: int | None = None
) -> int:
    """The limit :func:`check_fits` applies: the smaller of ``budget`` and what is available.

    ``available`` is what :func:`available_bytes` returned, when the caller already read it;
    ``budget=None`` is no budget. A caller that previews whether cases would be refused
    (the memory explorer) compares them with this, once read, as the guard would.

    >>> limit_bytes(2**20, available=2**30), limit_bytes(None, available=2**30)
    (1048576, 1073741824)
    """
    if available is None:
        available = available_bytes(device)
    return available if budget is None else min(budget, available)


T = TypeVar("T")


@dataclass(frozen=True)
class GuardedResult(Generic[T]):
    """Outcome of :func:`guarded`: the value if it ran, the reason if it was refused.

    Attributes
    ----------
    status : {"ran", "refused"}
    value : object or None
        What the function returned (``None`` when refused).
    predicted_bytes, budget_bytes : int
        The prediction and the limit it was checked against.
    message : str
        Empty when it ran; the refusal otherwise ("... would need X ...").
    """

    status: Literal["ran", "refused"]
    value: T | None
    predicted_bytes: int
    budget_bytes: int
    message: str = ""

    @property
    def refused(self) -> bool:
        """True when the computation was not run."""
        return self.status == "refused"


def guarded(
    fn: Callable[[], T],
    *,
    predicted_bytes: int,
    what: str,
    budget: int | None = LAB_BUDGET_BYTES,
    device: Any = "cpu",
) -> GuardedResult[T]:
    """Run ``fn()`` only if ``predicted_bytes`` passes :func:`check_fits`; never raise for size.

    For sweeps and widgets: a refused point becomes a result that says so, so one big case
    does not stop the loop (or kill the kernel).

    >>> r = guarded(lambda: 42, predicted_bytes=2**40, what="a huge case")
    >>> r.refused, r.value
    (True, None)
    >>> r.message.startswith("a huge case would need 1.00 TiB of extra memory")
    True
    >>> guarded(lambda: 42, predicted_bytes=10, what="small").value
    42
    """
    available = available_bytes(device)
    limit = limit_bytes(budget, device, available)
    try:
        check_fits(predicted_bytes, what=what, budget=budget, device=device, available=available)
    except MemoryBudgetError as refusal:
        return GuardedResult("refused", None, int(predicted_bytes), int(limit), str(refusal))
    return GuardedResult("ran", fn(), int(predicted_bytes), int(limit))


# -------------------------------------------------------------- the operations' own checks


def check_sparse_mm_fits(
    A: Tensor,
    B: Tensor,
    strategy: BackwardStrategy,
    *,
    kept: SparsityPattern | None,
    by_coo: bool,
) -> None:
    """Refuse ``sparse_mm(A, B)`` before it allocates if its predicted peak does not fit.

    The prediction is :func:`~sparsegrad_lab.footprint.sparse_mm_footprint`: the forward
    and, when ``A`` needs a gradient, the first-order backward -- the model's peak for the
    same case. ``A`` is checked (coalesced, if COO); ``kept`` is the ``pattern=`` argument,
    ``by_coo`` the forward's route (:func:`~sparsegrad_lab.routes.coo_product_for`). The
    message names the stage at the peak and what to change.

    >>> check_sparse_mm_fits(torch.eye(3).to_sparse(), torch.ones(3, 2), "sddmm", kept=None,
    ...                      by_coo=True)  # a few bytes: not even checked
    """
    footprint = sparse_mm_footprint(A, B, strategy, kept=kept, by_coo=by_coo)
    if footprint.peak_bytes <= NEGLIGIBLE_BYTES:
        return
    b, n, m = A.shape if A.dim() == 3 else (1, *A.shape)
    p = B.shape[-1]
    if footprint.stage == "forward spmm":
        copied = "contiguous copy of B" in footprint.terms
        what = f"sparse_mm: the result C of {b * n} x {p} (and A's pattern)" + (
            f", and a contiguous copy of B (shape {tuple(B.shape)}, strides {B.stride()})"
            if copied
            else ""
        )
        advice = "use fewer rows or columns, or split B's columns" + (
            "; pass B as a contiguous tensor of the size it has" if copied else ""
        )
    else:
        nnz = A._nnz() if A.layout == torch.sparse_coo else A.col_indices().numel()
        what = (
            f"sparse_mm: backward={strategy!r} for A of {b} x {n} x {m} with {nnz} stored "
            f"entries and p={p} (its peak: {footprint.stage})"
        )
        advice = (
            "use backward='sddmm', whose working set stays bounded"
            if strategy != "sddmm"
            else "use fewer rows or columns, or split B's columns"
        )
    check_fits(footprint.peak_bytes, what=what, device=A.device, advice=advice)


def check_sampled_mm_fits(
    A: Tensor, X: Tensor, Y: Tensor, strategy: BackwardStrategy, *, kept: bool
) -> None:
    """Refuse ``sampled_mm(A, X, Y)`` before it allocates if its values or backward cannot fit.

    Two checks against one read of the available memory: the values with the sampled
    product's temporaries, and (when ``X`` or ``Y`` needs a gradient) the backward
    (:func:`~sparsegrad_lab.footprint.sampled_mm_footprint`).

    >>> check_sampled_mm_fits(torch.eye(3).to_sparse(), torch.ones(3, 2), torch.ones(2, 3),
    ...                       "sddmm", kept=False)  # a few bytes: not even checked
    """
    values, backward = sampled_mm_footprint(A, X, Y, strategy, kept=kept)
    if values.peak_bytes + backward.peak_bytes <= NEGLIGIBLE_BYTES:
        return
    available = available_bytes(A.device)
    b, n, m = A.shape if A.dim() == 3 else (1, *A.shape)
    nnz = A._nnz() if A.layout == torch.sparse_coo else A.col_indices().numel()
    shape = f"A of {b} x {n} x {m} with {nnz} stored entries and d={X.shape[-1]}"
    copies = [  # named by the argument, though the kernels read Yᴴ
        f"{name} (shape {tuple(M.shape)}, strides {M.stride()})"
        for name, M, read in (("X", X, "X"), ("Y", Y, "Yᴴ"))
        if f"contiguous copy of {read}" in values.terms
    ]
    check_fits(
        values.peak_bytes,
        what=f"sampled_mm: the values and backward={strategy!r} temporaries for {shape}"
        + (f", with a contiguous copy of {' and '.join(copies)}" if copies else ""),
        device=A.device,
        available=available,
        advice="use backward='sddmm', whose working set stays bounded, or a smaller d"
        + (
            "; the kernels read X and Yᴴ row by row, so a strided or expanded X, or a Y "
            "that is not K.T of a contiguous K, is copied in full"
            if copies
            else ""
        ),
    )
    check_fits(
        backward.peak_bytes,
        what=f"sampled_mm: the backward (∇X, ∇Y and the transpose of A) for {shape}",
        device=A.device,
        available=available,
        advice="use a smaller d, or fewer rows and columns",
    )


def check_backward_fits(
    pattern: SparsityPattern, X: Tensor, route: BackwardRoute, copied: int = 0
) -> None:
    """In a backward, check what computing ``∇B = Aᴴ X`` by ``route`` allocates now.

    The backward runs later than the forward's check, so what is available is read once
    more: the route's temporaries (:mod:`sparsegrad_lab.footprint`'s terms: the transpose
    unless built already, the scattered terms, or the rows gathered for both gradients),
    ``copied`` bytes of a copy the caller made of ``X`` since the last check, and the
    ``M x p`` result.
    """
    Z, p, elem = pattern.nnz, X.shape[-1], X.element_size()
    if route == "transpose":
        extra, what = transpose_bytes(pattern), "the transpose of A"
    elif route == "scatter":
        extra, what = gathered_rows_bytes(Z, p, elem), "the scattered terms"
    else:
        extra, what = 2 * gathered_rows_bytes(Z, p, elem), "gathered rows"
    needed = copied + extra + grad_B_bytes(pattern.shape[1], p, elem)
    if needed > NEGLIGIBLE_BYTES:
        n, m = pattern.block_shape
        check_fits(
            needed,
            what=f"the backward's {what} and ∇B = Aᴴ G for A of {pattern.batch} x {n} x {m} "
            f"with {Z} stored entries and p={p}",
            device=pattern.device,
            advice="free memory before calling backward, or use fewer columns of B",
        )


def check_copy_fits(X: Tensor, name: str, pattern: SparsityPattern, advice: str = "") -> None:
    """In a backward, check that the copy a kernel makes of a strided ``X`` fits.

    No read of the available memory at all when the copy is negligible (a contiguous
    ``X``: none).
    """
    needed = copy_bytes(X)
    if needed > NEGLIGIBLE_BYTES:
        n, m = pattern.block_shape
        check_fits(
            needed,
            what=f"the backward's contiguous copy of {name} (shape {tuple(X.shape)}, strides "
            f"{X.stride()}) for A of {pattern.batch} x {n} x {m}",
            device=pattern.device,
            advice=advice
            or f"pass {name} as a contiguous tensor of the size it has, not an expanded or "
            "strided view of a larger one",
        )


def check_row_pointers_fit(pattern: SparsityPattern) -> None:
    """In a backward, check the row pointers a pattern is about to build on first use.

    A small COO graph's forward is torch's COO product, which needs none; torch's sampled
    kernel and a double backward's products do, and build them then.
    """
    if pattern.has_row_pointers():
        return
    needed = row_pointers_bytes(pattern.shape[0], pattern.col.element_size())
    if needed > NEGLIGIBLE_BYTES:
        n, m = pattern.block_shape
        check_fits(
            needed,
            what=f"the backward's row pointers of A ({pattern.batch} x {n} x {m})",
            device=pattern.device,
            advice="use fewer rows",
        )
