"""Peak memory of one sparse matmul step: measured, and guarded before it runs.

Used by the lessons, the widgets and the benchmark, next to the analytic model of
:mod:`sparsegrad_lab.memory_model`:

* two measurements: :func:`measure_peak_bytes` in this process (the CUDA caching
  allocator's peak, or on CPU the running sum of torch.profiler's allocation events) and
  :func:`measure_in_fresh_process` (the resident-set high-water mark of a child process,
  which also sees what MKL and OpenMP allocate outside torch);
* a guard, :func:`check_fits` and :func:`guarded`, that predicts before running and
  refuses with :class:`~sparsegrad_lab.errors.MemoryBudgetError` (or a ``"refused"``
  result) instead of letting a sweep or a widget kill the kernel;
* the inputs and the function of each implementation the model names,
  :func:`make_case_inputs` and :func:`implementation`.

>>> check_fits(2**20, what="a small step") is None
True
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import multiprocessing
import os
import resource
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypedDict, TypeVar

import torch
from torch import Tensor

from ._checks import dtype_from, layout_name
from .csr_from_values import csr_tensor
from .errors import InputValueError, MemoryBudgetError, format_bytes
from .memory_model import IMPLEMENTATIONS
from .pattern import SparsityPattern
from .patterns import uniform_random
from .sddmm import BACKWARD_STRATEGIES

__all__ = [
    "DEFAULT_BUDGET_BYTES",
    "CaseSpec",
    "FreshMeasurement",
    "GuardedResult",
    "check_fits",
    "guarded",
    "implementation",
    "make_case_inputs",
    "measure_in_fresh_process",
    "measure_peak_bytes",
]

#: Default budget of :func:`check_fits` and :func:`guarded`: 512 MiB of extra memory.
#:
#: mybinder.org restarts a kernel whose container passes 2 GiB (and promises only 1 GiB),
#: and the lessons must each stay under 1.5 GiB. A kernel with torch, matplotlib and
#: ipywidgets loaded holds about 260 MiB, the JupyterLab server about 150 MiB, and the
#: notebook's own inputs and figures some tens of MiB; a fresh-process measurement starts a
#: second interpreter with torch (another ~250 MiB). 512 MiB for one operation's extra
#: memory keeps the sum near 1.2 GiB, below both limits, with the model's tolerance to spare.
DEFAULT_BUDGET_BYTES = 512 * 2**20


# ----------------------------------------------------------------------------- the guard


def check_fits(predicted_bytes: int, *, budget: int = DEFAULT_BUDGET_BYTES, what: str) -> None:
    """Raise :class:`MemoryBudgetError` if ``predicted_bytes`` exceeds ``budget``.

    Parameters
    ----------
    predicted_bytes : int
        The peak extra memory the computation is predicted to need.
    budget : int, default :data:`DEFAULT_BUDGET_BYTES`
    what : str
        Names the computation and its sizes, e.g. :func:`describe_case`'s output.

    >>> check_fits(2**30, budget=2**29, what="gather on A 1000 x 1000")
    Traceback (most recent call last):
    ...
    sparsegrad_lab.errors.MemoryBudgetError: gather on A 1000 x 1000 would need 1.00 GiB of \
extra memory, budget 512.00 MiB; refused before running (shrink the case or raise the budget)
    """
    if predicted_bytes > budget:
        raise MemoryBudgetError(
            f"{what} would need {format_bytes(predicted_bytes)} of extra memory, budget "
            f"{format_bytes(budget)}; refused before running (shrink the case or raise the "
            "budget)",
            needed_bytes=int(predicted_bytes),
            budget_bytes=int(budget),
        )


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
    message : str
        Empty when it ran; the refusal otherwise ("... would need X, budget Y ...").
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
    budget: int = DEFAULT_BUDGET_BYTES,
) -> GuardedResult[T]:
    """Run ``fn()`` only if ``predicted_bytes`` fits in ``budget``; never raise for size.

    For sweeps and widgets: a refused point becomes a result that says so, so one big
    case does not stop the loop (or kill the kernel).

    >>> r = guarded(lambda: 42, predicted_bytes=2**40, what="a huge case")
    >>> r.refused, r.value
    (True, None)
    >>> r.message
    'a huge case would need 1.00 TiB of extra memory, budget 512.00 MiB; refused before \
running (shrink the case or raise the budget)'
    >>> guarded(lambda: 42, predicted_bytes=10, what="small").value
    42
    """
    try:
        check_fits(predicted_bytes, budget=budget, what=what)
    except MemoryBudgetError as refusal:
        return GuardedResult("refused", None, int(predicted_bytes), int(budget), str(refusal))
    return GuardedResult("ran", fn(), int(predicted_bytes), int(budget))


# ---------------------------------------------------------------------- inputs and impls


class CaseSpec(TypedDict, total=False):
    """A picklable description of one measured case (what a child process rebuilds).

    Keys: ``impl``, ``n``, ``m``, ``nnz`` (per item), ``p``, ``batch`` (1), ``layout``
    ("csr"), ``dtype`` ("float32"), ``index_dtype`` ("int64"), ``device`` ("cpu"),
    ``seed`` (0), ``threads`` (unchanged when absent).
    """

    impl: str
    n: int
    m: int
    nnz: int
    p: int
    batch: int
    layout: str
    dtype: str
    index_dtype: str
    device: str
    seed: int
    threads: int


def make_case_inputs(spec: CaseSpec) -> tuple[Tensor, Tensor, Tensor]:
    """Seeded inputs ``A`` (sparse, requires grad), ``B`` (requires grad) and ``G``.

    ``A`` has exactly ``nnz`` uniformly random distinct positions per batch item
    (:func:`sparsegrad_lab.patterns.uniform_random` with seeds ``seed, seed + 1, ...``);
    ``B`` and the upstream gradient ``G`` are standard normal.

    >>> A, B, G = make_case_inputs({"n": 4, "m": 5, "nnz": 6, "p": 2, "layout": "coo"})
    >>> A.layout, A._nnz(), tuple(B.shape), tuple(G.shape)
    (torch.sparse_coo, 6, (5, 2), (4, 2))
    """
    n, m, nnz, p = spec["n"], spec["m"], spec["nnz"], spec["p"]
    b = spec.get("batch", 1)
    layout = layout_name(spec.get("layout", "csr"))
    dtype = dtype_from(spec.get("dtype", "float32"))
    index_dtype = dtype_from(spec.get("index_dtype", "int64"), "index_dtype")
    device = torch.device(spec.get("device", "cpu"))
    seed = spec.get("seed", 0)
    items = [
        uniform_random(n, m, nnz=nnz, seed=seed + t, dtype=dtype, max_bytes=2**62) for t in range(b)
    ]
    if b == 1 and layout == "coo":
        A = items[0]
    elif layout == "coo":
        item = torch.arange(b).repeat_interleave(nnz)
        indices = torch.cat([item.unsqueeze(0), torch.cat([M.indices() for M in items], 1)])
        values = torch.cat([M.values() for M in items])
        A = torch.sparse_coo_tensor(indices, values, (b, n, m), is_coalesced=True)
    else:
        with warnings.catch_warnings():  # torch's one-time "CSR is in beta" notice
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            csrs = [M.to_sparse_csr() for M in items]
        crow = torch.stack([M.crow_indices() for M in csrs]).to(index_dtype)
        col = torch.stack([M.col_indices() for M in csrs]).to(index_dtype)
        values = torch.stack([M.values() for M in csrs])
        if b == 1:
            crow, col, values = crow[0], col[0], values[0]
        shape = (b, n, m) if b > 1 else (n, m)
        A = csr_tensor(crow, col, values, shape)
    gen = torch.Generator().manual_seed(seed + 10_007)
    lead = (b,) if b > 1 else ()
    B = torch.randn(*lead, m, p, generator=gen, dtype=dtype)
    G = torch.randn(*lead, n, p, generator=gen, dtype=dtype)
    return A.to(device).requires_grad_(), B.to(device).requires_grad_(), G.to(device)


def implementation(impl: str) -> Callable[[Tensor, Tensor], Tensor]:
    """The function ``(A, B) -> C`` that ``impl`` names.

    ``"tsgu"`` imports torchsparsegradutils here, so the package never needs it; a missing
    install raises ``ModuleNotFoundError`` saying what to install.

    >>> f = implementation("sddmm")
    >>> f(torch.eye(2).to_sparse(), torch.ones(2, 3)).shape
    torch.Size([2, 3])
    """
    if impl not in IMPLEMENTATIONS:
        raise InputValueError(f"impl must be one of {IMPLEMENTATIONS}, got {impl!r}")
    if impl == "sddmm_kept":
        return _sparse_mm_keeping_the_pattern()
    if impl in BACKWARD_STRATEGIES:
        from .ops import sparse_mm

        def ours(A: Tensor, B: Tensor) -> Tensor:
            return sparse_mm(A, B, backward=impl)  # type: ignore[arg-type]

        return ours
    if impl == "tsgu":
        try:
            import torchsparsegradutils
        except ModuleNotFoundError as missing:
            raise ModuleNotFoundError(
                "impl 'tsgu' needs torchsparsegradutils (pip install "
                "torchsparsegradutils==0.2.7, or the package's [bench] extra)"
            ) from missing
        return torchsparsegradutils.sparse_mm  # type: ignore[no-any-return]
    return torch.sparse.mm


def _sparse_mm_keeping_the_pattern() -> Callable[[Tensor, Tensor], Tensor]:
    """``sparse_mm`` with the pattern of the first ``A`` it is given, kept for later calls.

    Each call still checks ``A`` against the kept pattern, so a later ``A`` with other
    indices is refused rather than multiplied wrongly. Call it again for a new pattern.
    """
    from .ops import sparse_mm, sparsity_pattern

    kept: list[SparsityPattern] = []

    def with_kept_pattern(A: Tensor, B: Tensor) -> Tensor:
        if not kept:
            kept.append(sparsity_pattern(A))
        return sparse_mm(A, B, pattern=kept[0])

    return with_kept_pattern


# ------------------------------------------------------------------------ measurement


@contextlib.contextmanager
def _quiet_fd2() -> Iterator[None]:
    """Silence file descriptor 2 (kineto logs a line on fd 2 whenever a profile starts or
    stops, which nbval would compare and a terminal would show)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def measure_peak_bytes(fn: Callable[[], object], device: Any = "cpu") -> int:
    """Peak extra memory allocated by torch while ``fn()`` runs, in bytes.

    CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus
    what was allocated before. CPU: torch has no allocator statistics, so ``fn`` runs under
    ``torch.profiler`` with ``profile_memory=True`` and the peak is the maximum of the
    running sum of its allocation (+) and free (-) events, in time order. Memory that MKL
    or OpenMP allocate themselves is not seen; :func:`measure_in_fresh_process` sees it.
    Whatever ``fn`` returns is alive until it returns, so it is counted.

    >>> measure_peak_bytes(lambda: torch.ones(1000, 1000))      # 10⁶ float32
    4000000
    """
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev)
        fn()
        torch.cuda.synchronize(dev)
        return int(torch.cuda.max_memory_allocated(dev) - before)
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    # fd 2 stays silenced throughout: besides kineto's start/stop lines, torch prints a
    # timestamped C++ warning when fn frees a block allocated before profiling started
    # (e.g. zero_grad() on existing gradients); such a free is simply not counted.
    with _quiet_fd2():
        prof.__enter__()
        try:
            fn()
        finally:
            prof.__exit__(None, None, None)
    # The raw (kineto) events keep every allocation; prof.events() folds them into ops.
    raw: list[Any] = prof.profiler.kineto_results.events()  # type: ignore[union-attr]
    changes = sorted(
        (e.start_ns(), e.nbytes())
        for e in raw
        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
    )
    current = peak = 0
    for _t, nbytes in changes:
        current += nbytes
        peak = max(peak, current)
    return int(peak)


@dataclass(frozen=True)
class FreshMeasurement:
    """What :func:`measure_in_fresh_process` reports for one case.

    Attributes
    ----------
    peak_extra_bytes : int
        CPU: resident high-water mark during ``C = f(A, B); C.backward(G)`` minus the
        resident size just before (inputs built, one warm-up call done and freed). CUDA:
        the allocator's peak above what was allocated before.
    baseline_bytes : int
        Resident size (CPU) or allocated bytes (CUDA) before the measured call.
    fwd_s, bwd_s : float
        Wall time of the measured forward and backward: one run, in a process whose large
        blocks are all freshly mapped (see ``_tune_malloc``), so slower than a benchmark's
        median -- a sanity check, not a timing.
    method : str
        How the peak was read.
    """

    peak_extra_bytes: int
    baseline_bytes: int
    fwd_s: float
    bwd_s: float
    method: str


def _status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _tune_malloc() -> Any:
    # Large blocks straight from mmap and back on free, so the resident size follows
    # the live tensors: otherwise glibc keeps freed heap pages resident and a later
    # allocation reuses them unseen by the high-water mark.
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD
        return libc
    except (OSError, AttributeError):
        return None


def _measure_here(spec: CaseSpec) -> FreshMeasurement:
    # This process exists only to measure: torch's notices would just clutter the output.
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")
    libc = _tune_malloc()
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    A, B, G = make_case_inputs(spec)
    fn = implementation(spec["impl"])
    dev = A.device

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    # Warm-up: the first call loads kernels and thread pools, which are not the op's memory.
    fn(A, B).backward(G)
    A.grad = B.grad = None
    gc.collect()
    if libc is not None:
        libc.malloc_trim(0)
    if dev.type == "cuda":
        sync()
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev)
        method = "CUDA allocator peak"
    else:
        try:  # "5" resets this process's VmHWM to its current VmRSS (Linux >= 4.0)
            with open("/proc/self/clear_refs", "w") as clear:
                clear.write("5")
            method = "VmHWM after reset (clear_refs) minus VmRSS"
        except OSError:
            method = "ru_maxrss minus VmRSS (no reset: inputs' peak may hide the op's)"
        before = _status_kib("VmRSS") or 0
    t0 = time.perf_counter()
    C = fn(A, B)
    sync()
    t1 = time.perf_counter()
    C.backward(G)
    sync()
    t2 = time.perf_counter()
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev)
    else:
        hwm = _status_kib("VmHWM")
        peak = hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return FreshMeasurement(max(0, int(peak - before)), int(before), t1 - t0, t2 - t1, method)


def _child(spec: CaseSpec, conn: Any) -> None:
    try:
        conn.send(("ok", _measure_here(spec)))
    except BaseException as exc:  # the parent re-raises with the case named
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def measure_in_fresh_process(case_spec: CaseSpec, *, timeout_s: float = 600.0) -> FreshMeasurement:
    """Measure one case's peak extra memory in a new Python process.

    The child is started with the ``spawn`` method (a fresh interpreter: no memory, heap
    fragments or thread pools inherited), builds the inputs with :func:`make_case_inputs`,
    runs the case once to warm up, then measures one ``C = f(A, B); C.backward(G)``. See
    :class:`FreshMeasurement` for what is reported. The child holds a second copy of
    torch (about 250 MiB) besides the case itself.

    Parameters
    ----------
    case_spec : CaseSpec
        Must name ``impl``, ``n``, ``m``, ``nnz`` and ``p``; the rest has defaults.
    timeout_s : float, default 600
        The child is killed after this long.

    Raises
    ------
    ChildProcessError
        If the child fails, dies (for example killed for memory) or times out.
    """
    for key in ("impl", "n", "m", "nnz", "p"):
        if key not in case_spec:
            raise InputValueError(
                f"measure_in_fresh_process: case_spec needs key {key!r}, got {sorted(case_spec)}"
            )
    ctx = multiprocessing.get_context("spawn")
    parent, child_end = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(dict(case_spec), child_end), daemon=True)
    proc.start()
    child_end.close()
    try:
        if not parent.poll(timeout_s):
            raise ChildProcessError(
                f"measure_in_fresh_process: {dict(case_spec)} gave no answer in {timeout_s} s"
            )
        status, payload = parent.recv()
    except EOFError:
        proc.join(5)
        raise ChildProcessError(
            f"measure_in_fresh_process: the child for {dict(case_spec)} died with exit code "
            f"{proc.exitcode} (a negative code is the signal; -9 is often the OOM killer)"
        ) from None
    finally:
        if proc.is_alive():
            proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join()
        parent.close()
    if status != "ok":
        raise ChildProcessError(f"measure_in_fresh_process: {dict(case_spec)} failed: {payload}")
    return payload  # type: ignore[no-any-return]
