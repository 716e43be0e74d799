"""Peak memory of one sparse matmul step, measured two ways.

* :func:`measure_peak_bytes` in this process: the CUDA caching allocator's peak, or on CPU
  the running sum of torch.profiler's allocation events;
* :func:`measure_in_fresh_process`: the resident-set high-water mark of a child process,
  which also sees what MKL and OpenMP allocate outside torch.

The analytic model they are checked against is :mod:`sparsegrad_lab.memory_model`; the
guard that keeps a measurement from exhausting memory is :mod:`sparsegrad_lab.memory_guard`.

>>> measure_peak_bytes(lambda: torch.ones(1000, 1000))      # 10⁶ float32
4000000
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
from typing import Any

import torch

from ._torch_util import INVARIANTS_NOTICE
from .implementations import Case, get_implementation, make_inputs
from .memory_guard import proc_field_kib

__all__ = [
    "FreshMeasurement",
    "measure_in_fresh_process",
    "measure_peak_bytes",
    "quiet_native_stderr",
    "silence_torch_sparse_notices",
]


def silence_torch_sparse_notices() -> None:
    """Filter torch's invariant-check notice, for processes that only measure or benchmark.

    torchsparsegradutils builds sparse tensors without saying whether to check their
    invariants, which makes torch warn. (The CSR beta notice is spent by ``import
    sparsegrad_lab``, see ``_torch_util``.)
    """
    warnings.filterwarnings("ignore", message=INVARIANTS_NOTICE)


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Silence file descriptor 2 while the block runs, then restore it.

    Kineto, torch's profiler backend, writes a line to file descriptor 2 from C++ whenever a
    profile starts or stops, which a terminal would show and nbval would compare; Python's
    ``sys.stderr`` in a notebook kernel is not file descriptor 2 and is left alone.

    >>> with quiet_native_stderr():
    ...     _ = os.write(2, b"not shown")
    """
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

    >>> measure_peak_bytes(lambda: torch.empty(1000, dtype=torch.float64))
    8000
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
    with quiet_native_stderr():
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


def _status_bytes(key: str) -> int | None:
    kib = proc_field_kib(key)
    return None if kib is None else kib * 1024


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


def _measure_here(impl: str, case: Case, threads: int | None) -> FreshMeasurement:
    # This process exists only to measure: torch's notices would just clutter the output.
    silence_torch_sparse_notices()
    libc = _tune_malloc()
    if threads:
        torch.set_num_threads(threads)
    A, B, G = make_inputs(case)
    fn = get_implementation(impl).matmul()
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
        before = _status_bytes("VmRSS") or 0
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
        hwm = _status_bytes("VmHWM")
        peak = hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return FreshMeasurement(max(0, int(peak - before)), int(before), t1 - t0, t2 - t1, method)


def _child(impl: str, case: Case, threads: int | None, conn: Any) -> None:
    try:
        conn.send(("ok", _measure_here(impl, case, threads)))
    except BaseException as exc:  # the parent re-raises with the case named
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def measure_in_fresh_process(
    impl: str, case: Case, *, threads: int | None = None, timeout_s: float = 600.0
) -> FreshMeasurement:
    """Measure the peak extra memory of ``impl`` on ``case`` in a new Python process.

    The child is started with the ``spawn`` method (a fresh interpreter: no memory, heap
    fragments or thread pools inherited), builds the inputs with
    :func:`~sparsegrad_lab.implementations.make_inputs`, runs the case once to warm up,
    then measures one ``C = f(A, B); C.backward(G)``. See :class:`FreshMeasurement` for
    what is reported. The child holds a second copy of torch (about 250 MiB) besides the
    case itself.

    Parameters
    ----------
    impl : str
        A name of :data:`~sparsegrad_lab.implementations.IMPLEMENTATIONS`.
    case : Case
    threads : int, optional
        ``torch.set_num_threads`` in the child (unchanged when absent).
    timeout_s : float, default 600
        The child is killed after this long.

    Raises
    ------
    ChildProcessError
        If the child fails, dies (for example killed for memory) or times out.
    """
    get_implementation(impl)
    named = case.describe(impl)
    ctx = multiprocessing.get_context("spawn")
    parent, child_end = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(impl, case, threads, child_end), daemon=True)
    proc.start()
    child_end.close()
    try:
        if not parent.poll(timeout_s):
            raise ChildProcessError(
                f"measure_in_fresh_process: {named} gave no answer in {timeout_s} s"
            )
        status, payload = parent.recv()
    except EOFError:
        proc.join(5)
        raise ChildProcessError(
            f"measure_in_fresh_process: the child for {named} died with exit code "
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
        raise ChildProcessError(f"measure_in_fresh_process: {named} failed: {payload}")
    return payload  # type: ignore[no-any-return]
