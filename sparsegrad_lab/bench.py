"""Benchmark: ``sparse_mm``'s strategies against torch and torchsparsegradutils, side by side.

For every case (sizes, layout, dtype, device) and every implementation of
:data:`sparsegrad_lab.memory_model.IMPLEMENTATIONS` it measures, on the same inputs:

* time: forward, backward and forward + backward, each the median of ``repeats`` runs
  after ``warmup`` runs (on CUDA bracketed by ``torch.cuda.Event`` s and synchronised).
  The runs of all implementations (and of the COO and CSR variants of a size) take
  turns (each round starting one later), so a machine that is slower for a while slows
  them all alike;
* peak extra memory: on CPU in a fresh child process per case and implementation
  (:func:`~sparsegrad_lab.memory.measure_in_fresh_process`), on CUDA the allocator's peak;
  plus the in-process allocator peak and the analytic prediction next to it;
* the ratio to a floor, from :func:`floor`: the bytes that must move at least and the
  flops, turned into a time floor with this machine's measured copy bandwidth.

``"sddmm_kept"`` keeps the pattern its first call builds (a warm-up run, unless
``warmup=0``), as a training loop over a fixed pattern would.

A case whose predicted peak does not fit in the machine's free memory is reported as
"would need X GiB" and not run. ``python -m sparsegrad_lab bench --help`` runs it from
the command line; :func:`run_benchmark` from Python.

>>> cases = make_cases([(300, 1000, 8, 1)], layouts=["csr"])
>>> results = run_benchmark(cases, impls=["sddmm"], repeats=1, warmup=0, fresh_process=False,
...                         progress=False)
>>> results[0].status, results[0].impl, results[0].fwdbwd_ms > 0
('ok', 'sddmm', True)
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .errors import InputValueError, format_bytes
from .memory import (
    CaseSpec,
    implementation,
    make_case_inputs,
    measure_in_fresh_process,
    measure_peak_bytes,
)
from .memory_guard import available_bytes
from .memory_model import (
    IMPLEMENTATIONS,
    describe_case,
    output_bytes,
    predict_peak_bytes,
    unsupported_reason,
)

__all__ = [
    "DEFAULT_IMPLS",
    "SIZE_PRESETS",
    "TARGETS",
    "Case",
    "Result",
    "default_output_stem",
    "device_tag",
    "floor",
    "format_headline",
    "format_table",
    "headline",
    "headlines",
    "impl_unavailable_reason",
    "load_results",
    "machine_info",
    "make_cases",
    "measure_copy_bandwidth",
    "parse_sizes",
    "plot_results",
    "run_benchmark",
    "time_case",
    "write_json",
]

DEFAULT_IMPLS: tuple[str, ...] = IMPLEMENTATIONS

#: Named size grids, each a list of ``(n, nnz, p, batch)`` with ``m = n`` and ``nnz`` per item.
#: ``small`` finishes in a few minutes on 2 CPU cores; ``issue`` is the size the CPU targets
#: are set at; ``full`` is issue 4's grid (for a GPU or a patient CPU).
SIZE_PRESETS: dict[str, list[tuple[int, int, int, int]]] = {
    "small": [
        (2_000, 20_000, 32, 1),
        (8_000, 80_000, 32, 1),
        (20_000, 200_000, 32, 1),
        (2_000, 20_000, 32, 8),
    ],
    "issue": [(100_000, 1_000_000, 64, 1)],
    "full": [
        (10_000, 100_000, 64, 1),
        (100_000, 1_000_000, 16, 1),
        (100_000, 1_000_000, 64, 1),
        (100_000, 1_000_000, 128, 1),
        (1_000_000, 10_000_000, 64, 1),
        (10_000, 100_000, 64, 8),
        (1_000, 10_000, 32, 128),
    ],
}


@dataclass(frozen=True)
class Case:
    """One benchmark input: ``A`` is ``(batch,) n x m`` with ``nnz`` entries per item.

    ``dtype`` and ``index_dtype`` are names (``"float32"``, ``"int64"``) so that a case
    is plain JSON and picklable for the child process.

    >>> Case(n=10, m=10, nnz=20, p=4).label()
    'n=10 m=10 nnz=20 p=4 csr float32'
    """

    n: int
    m: int
    nnz: int
    p: int
    batch: int = 1
    layout: str = "csr"
    dtype: str = "float32"
    device: str = "cpu"
    index_dtype: str = "int64"
    seed: int = 0

    def spec(self, impl: str, threads: int | None = None) -> CaseSpec:
        """The :class:`~sparsegrad_lab.memory.CaseSpec` of this case run by ``impl``."""
        spec = CaseSpec(
            impl=impl,
            n=self.n,
            m=self.m,
            nnz=self.nnz,
            p=self.p,
            batch=self.batch,
            layout=self.layout,
            dtype=self.dtype,
            index_dtype=self.index_dtype,
            device=self.device,
            seed=self.seed,
        )
        if threads:
            spec["threads"] = threads
        return spec

    def label(self) -> str:
        """Short human-readable name."""
        b = f"b={self.batch} " if self.batch != 1 else ""
        return f"{b}n={self.n} m={self.m} nnz={self.nnz} p={self.p} {self.layout} {self.dtype}"

    def sizes(self) -> dict[str, Any]:
        """Keyword arguments for the memory model."""
        return {
            "n": self.n,
            "m": self.m,
            "nnz": self.nnz,
            "p": self.p,
            "batch": self.batch,
            "dtype": self.dtype,
            "layout": self.layout,
        }


def parse_sizes(text: str) -> list[tuple[int, int, int, int]]:
    """Sizes from a preset name or a comma-separated list of ``n:nnz:p``.

    Each explicit size is a square ``A`` (``m = n``) with ``batch=1`` (``--batch``
    changes it). Underscores and ``e`` notation are allowed in the numbers.

    >>> parse_sizes("1000:5e3:16,2_000:10000:8")
    [(1000, 5000, 16, 1), (2000, 10000, 8, 1)]
    >>> parse_sizes("issue")
    [(100000, 1000000, 64, 1)]
    """
    text = text.strip()
    if text in SIZE_PRESETS:
        return list(SIZE_PRESETS[text])
    sizes = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        fields = item.split(":")
        if len(fields) != 3:
            raise InputValueError(
                f"--sizes: expected a preset ({', '.join(SIZE_PRESETS)}) or entries n:nnz:p, "
                f"got {item!r}"
            )
        try:
            n, nnz, p = (int(float(f.replace("_", ""))) for f in fields)
        except ValueError:
            raise InputValueError(f"--sizes: {item!r} is not three numbers n:nnz:p") from None
        if n < 1 or p < 1 or not 0 <= nnz <= n * n:
            raise InputValueError(f"--sizes: {item!r} needs n, p >= 1 and 0 <= nnz <= n*n")
        sizes.append((n, nnz, p, 1))
    if not sizes:
        raise InputValueError(f"--sizes: no sizes in {text!r}")
    return sizes


def make_cases(
    sizes: Iterable[tuple[int, int, int, int]],
    *,
    layouts: Sequence[str] = ("coo", "csr"),
    batches: Sequence[int] | None = None,
    dtype: str = "float32",
    device: str = "cpu",
    index_dtype: str = "int64",
) -> list[Case]:
    """The grid: every size (square ``A``) in every layout, and in every batch size if given.

    >>> [c.label() for c in make_cases([(10, 20, 4, 1)], layouts=["coo"], batches=[1, 2])]
    ['n=10 m=10 nnz=20 p=4 coo float32', 'b=2 n=10 m=10 nnz=20 p=4 coo float32']
    """
    cases = []
    for n, nnz, p, batch in sizes:
        for b in batches if batches else [batch]:
            for layout in layouts:
                cases.append(Case(n, n, nnz, p, b, layout, dtype, device, index_dtype))
    return cases


# ------------------------------------------------------------------------------- floors


def floor(case: Case) -> dict[str, float]:
    r"""The least work any implementation must do, per phase: bytes moved and flops.

    With ``Z`` stored entries in all, ``e`` bytes per value and ``i`` per index (8 for
    COO, whose row and column indices both count), every input is read once and every
    output written once:

    .. math::

        \text{fwd: } Z(e + i_A) + (N{+}1)\,i + M p e + N p e, \qquad
        \text{bwd: } N p e + M p e + Z(e + i_A) + (N{+}1)\,i + Z e + M p e,

    (``G`` and ``B`` read, ``A``'s pattern and values read, ``∇A`` values and ``∇B``
    written), where ``i_A`` is ``i`` for CSR and ``2 i`` for COO. Flops: a multiply-add
    per stored entry and column of ``B`` -- ``2 Z p`` for the forward, ``4 Z p`` for the
    backward (``∇A`` and ``∇B``), four times that for complex. Real runs move more: rows
    of ``B`` and ``G`` are gathered once per entry unless caches catch the reuse.

    >>> floor(Case(n=10, m=10, nnz=20, p=4))["flops_fwd"]
    160.0
    """
    e = torch.empty(0, dtype=getattr(torch, case.dtype)).element_size()
    i = 8 if case.layout == "coo" else getattr(torch, case.index_dtype).itemsize
    b = case.batch
    N, M, Z, p = b * case.n, b * case.m, b * case.nnz, case.p
    a_bytes = Z * (e + (2 * i if case.layout == "coo" else i)) + (
        0 if case.layout == "coo" else (N + 1) * i
    )
    fwd = a_bytes + M * p * e + N * p * e
    bwd = N * p * e + M * p * e + a_bytes + Z * e + M * p * e
    mult = 4 if getattr(torch, case.dtype).is_complex else 1
    return {
        "bytes_fwd": float(fwd),
        "bytes_bwd": float(bwd),
        "bytes_fwdbwd": float(fwd + bwd),
        "flops_fwd": float(2 * Z * p * mult),
        "flops_bwd": float(4 * Z * p * mult),
        "flops_fwdbwd": float(6 * Z * p * mult),
    }


def measure_copy_bandwidth(device: Any = "cpu", nbytes: int = 256 * 2**20) -> float:
    """This machine's memory bandwidth in bytes/s, from the median of five tensor copies.

    A copy reads and writes ``nbytes`` each, so it moves ``2 * nbytes``; this is the rate
    the time floor assumes.

    >>> measure_copy_bandwidth(nbytes=2**20) > 1e8
    True
    """
    dev = torch.device(device)
    src = torch.ones(nbytes // 4, device=dev)
    dst = torch.empty_like(src)
    times = []
    for _ in range(6):
        _sync(dev)
        start = time.perf_counter()
        dst.copy_(src)
        _sync(dev)
        times.append(time.perf_counter() - start)
    return 2 * nbytes / statistics.median(times[1:])


# ------------------------------------------------------------------------------ timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_case(
    fn: Callable[[Tensor, Tensor], Tensor],
    A: Tensor,
    B: Tensor,
    G: Tensor,
    *,
    repeats: int = 5,
    warmup: int = 1,
) -> dict[str, list[float]]:
    """Seconds of each forward, backward and forward + backward, over ``repeats`` runs.

    Each run starts with no gradients accumulated (``A.grad = B.grad = None``), so every
    run does the same work. On CUDA the three times come from ``torch.cuda.Event`` s
    recorded around the calls and read after one synchronisation; on CPU from
    ``time.perf_counter``.

    >>> A = torch.eye(3).to_sparse_csr().requires_grad_()
    >>> B = torch.ones(3, 2, requires_grad=True)
    >>> t = time_case(torch.sparse.mm, A, B, torch.ones(3, 2), repeats=2, warmup=0)
    >>> sorted(t), len(t["bwd"])
    (['bwd', 'fwd', 'fwdbwd'], 2)
    """
    out: dict[str, list[float]] = {"fwd": [], "bwd": [], "fwdbwd": []}
    for run in range(warmup + repeats):
        fwd, bwd = _time_once(fn, A, B, G)
        if run >= warmup:
            out["fwd"].append(fwd)
            out["bwd"].append(bwd)
            out["fwdbwd"].append(fwd + bwd)
    return out


def _time_once(
    fn: Callable[[Tensor, Tensor], Tensor], A: Tensor, B: Tensor, G: Tensor
) -> tuple[float, float]:
    """Seconds of one forward and one backward, starting with no gradients."""
    device = B.device
    A.grad = B.grad = None
    if device.type == "cuda":
        start, mid, end = (torch.cuda.Event(enable_timing=True) for _ in range(3))
        torch.cuda.synchronize(device)
        start.record()
        C = fn(A, B)
        mid.record()
        C.backward(G)
        end.record()
        torch.cuda.synchronize(device)
        fwd, bwd = start.elapsed_time(mid) / 1e3, mid.elapsed_time(end) / 1e3
    else:
        t0 = time.perf_counter()
        C = fn(A, B)
        t1 = time.perf_counter()
        C.backward(G)
        t2 = time.perf_counter()
        fwd, bwd = t1 - t0, t2 - t1
    del C
    A.grad = B.grad = None
    return fwd, bwd


# ----------------------------------------------------------------------------- results


@dataclass
class Result:
    """One (case, implementation) measurement; ``status`` says whether it ran.

    ``status`` is ``"ok"``, ``"skipped"`` (not applicable or not installed: see
    ``reason``), ``"would_need"`` (predicted not to fit: ``reason`` says how much) or
    ``"error"``. Times are medians in milliseconds (``*_min_ms``: the fastest run, the
    least disturbed by other work on a shared machine); memory in bytes. ``peak_extra_bytes``
    is the headline measurement (CPU: fresh process; CUDA: allocator), ``allocator_bytes``
    the in-process allocator peak, ``predicted_bytes`` the analytic model.
    """

    case: Case
    impl: str
    status: str = "ok"
    reason: str = ""
    fwd_ms: float | None = None
    bwd_ms: float | None = None
    fwdbwd_ms: float | None = None
    bwd_min_ms: float | None = None
    fwdbwd_min_ms: float | None = None
    times_ms: dict[str, list[float]] = field(default_factory=dict)
    peak_extra_bytes: int | None = None
    peak_method: str = ""
    allocator_bytes: int | None = None
    predicted_bytes: int | None = None
    output_bytes: int | None = None
    floor: dict[str, float] = field(default_factory=dict)
    time_over_floor: float | None = None
    gflops: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (the case flattened in)."""
        d = asdict(self)
        d.update(d.pop("case"))
        return d


def impl_unavailable_reason(impl: str) -> str | None:
    """Why ``impl`` cannot run on this machine (``tsgu`` not installed), or ``None``.

    >>> impl_unavailable_reason("sddmm") is None
    True
    """
    if impl == "tsgu":
        try:
            import torchsparsegradutils  # noqa: F401
        except ModuleNotFoundError:
            return "torchsparsegradutils is not installed (pip install torchsparsegradutils==0.2.7)"
    return None


def _input_bytes(case: Case) -> int:
    e = torch.empty(0, dtype=getattr(torch, case.dtype)).element_size()
    b = case.batch
    a = b * case.nnz * (e + 16) + b * (case.n + 1) * 8
    return a + b * (case.m + case.n) * case.p * e


def run_benchmark(
    cases: Sequence[Case],
    *,
    impls: Sequence[str] = DEFAULT_IMPLS,
    repeats: int = 5,
    warmup: int = 1,
    threads: int | None = None,
    fresh_process: bool = True,
    memory_limit_bytes: int | None = None,
    bandwidth: float | None = None,
    progress: bool = True,
) -> list[Result]:
    """Measure every implementation on every case; see the module docstring.

    Parameters
    ----------
    cases : sequence of Case
    impls : sequence of str, default all of :data:`~sparsegrad_lab.memory_model.IMPLEMENTATIONS`
    repeats, warmup : int
        Timed runs (the median is reported) and untimed runs before them.
    threads : int, optional
        ``torch.set_num_threads`` here and in the child processes.
    fresh_process : bool, default True
        CPU only: measure peak memory in a child process per case and implementation
        (slower, and sees memory outside torch's allocator). Otherwise the in-process
        allocator peak is the headline.
    memory_limit_bytes : int, optional
        Cases whose predicted peak plus inputs exceed it are not run. Default: 80 % of the
        device's available memory.
    bandwidth : float, optional
        Bytes/s for the time floor; measured with :func:`measure_copy_bandwidth` if absent.
    progress : bool, default True
        Show a tqdm progress bar (if tqdm is installed).

    Returns
    -------
    list of Result
        One per (case, impl), in order.
    """
    for impl in impls:
        if impl not in IMPLEMENTATIONS:
            raise InputValueError(f"impls: unknown {impl!r}; expected some of {IMPLEMENTATIONS}")
    if threads:
        torch.set_num_threads(threads)
    # Cases that differ only in layout are timed together, round-robin: run k of every
    # (case, impl) pair happens before run k + 1 of any, so a machine that slows down
    # for a while (other jobs, thermal limits) slows every implementation alike and the
    # ratios between them stay fair.
    groups: dict[tuple[Any, ...], list[Case]] = {}
    for case in cases:
        key = (case.n, case.m, case.nnz, case.p, case.batch, case.dtype, case.device, case.seed)
        groups.setdefault(key, []).append(case)
    bar = progress_bar(len(cases) * len(impls) * (repeats + 1), progress)
    results: dict[tuple[int, str], Result] = {}
    bw_by_device: dict[str, float] = {}
    try:
        for group in groups.values():
            device = torch.device(group[0].device)
            if bandwidth is None and group[0].device not in bw_by_device:
                bw_by_device[group[0].device] = measure_copy_bandwidth(device)
            bw = bandwidth or bw_by_device[group[0].device]
            limit = memory_limit_bytes or int(0.8 * available_bytes(device))
            runnable: list[tuple[Case, str, Result]] = []
            for case in group:
                for impl in impls:
                    result = _plan(case, impl, limit)
                    results[(id(case), impl)] = result
                    if result.status == "ok":
                        runnable.append((case, impl, result))
                    else:
                        bar.update(repeats + 1)
            inputs = {
                id(case): make_case_inputs(case.spec("sddmm"))
                for case in {id(c): c for c, _, _ in runnable}.values()
            }
            # One function per pair, kept for all its runs: "sddmm_kept" holds its pattern.
            fns = {(id(case), impl): implementation(impl) for case, impl, _ in runnable}
            for k in range(-warmup, repeats):  # negative k: warm-up runs, not recorded
                # Each round starts one pair later: a run right after a large one (whose
                # freed memory the next allocations must fault in again) costs a little
                # more, and rotating spreads that over all pairs alike.
                shift = (k + warmup) % max(1, len(runnable))
                for case, impl, result in runnable[shift:] + runnable[:shift]:
                    if result.status != "ok":
                        continue
                    step = f"warm-up {k + warmup + 1}/{warmup}" if k < 0 else f"run {k + 1}"
                    bar.set_postfix_str(f"{step} {impl} {case.label()}")
                    try:
                        fwd, bwd = _time_once(fns[(id(case), impl)], *inputs[id(case)])
                    except Exception as exc:  # keep the other pairs' results
                        result.status, result.reason = "error", f"{type(exc).__name__}: {exc}"
                        bar.update(repeats + 1)
                        continue
                    if k >= 0:
                        for phase, t in (("fwd", fwd), ("bwd", bwd), ("fwdbwd", fwd + bwd)):
                            result.times_ms.setdefault(phase, []).append(t * 1e3)
                        bar.update(1)
            for case, impl, result in runnable:
                if result.status != "ok":
                    continue
                bar.set_postfix_str(f"memory {impl} {case.label()}")
                fn = fns[(id(case), impl)]
                _measure_memory(result, fn, inputs[id(case)], bw, threads, fresh_process)
                bar.update(1)
            del inputs, fns
    finally:
        bar.close()
    return [results[(id(case), impl)] for case in cases for impl in impls]


def _plan(case: Case, impl: str, limit: int) -> Result:
    """A Result with the predictions filled in; status says whether it will run."""
    result = Result(case, impl)
    reason = unsupported_reason(impl, layout=case.layout, batch=case.batch)
    reason = reason or impl_unavailable_reason(impl)
    if reason:
        result.status, result.reason = "skipped", reason
        return result
    sizes = case.sizes()
    result.predicted_bytes = predict_peak_bytes(impl, **sizes, device=case.device)
    result.output_bytes = output_bytes(
        n=case.n, m=case.m, nnz=case.nnz, p=case.p, batch=case.batch, dtype=case.dtype
    )
    result.floor = floor(case)
    # "sddmm_kept"'s first call builds the pattern it keeps: it is "sddmm"'s call.
    need = result.predicted_bytes
    if impl == "sddmm_kept":
        need = predict_peak_bytes("sddmm", **sizes, device=case.device)
    need += _input_bytes(case)
    if need > limit:
        result.status = "would_need"
        result.reason = (
            f"would need {need / 2**30:.2f} GiB ({describe_case(impl, **sizes)}), "
            f"above the limit of {format_bytes(limit)}"
        )
    return result


def _measure_memory(
    result: Result,
    fn: Callable[[Tensor, Tensor], Tensor],
    inputs: tuple[Tensor, Tensor, Tensor],
    bandwidth: float,
    threads: int | None,
    fresh_process: bool,
) -> None:
    """Fill in the medians, the floor ratios and the memory measurements of ``result``."""
    case, impl = result.case, result.impl
    try:
        result.fwd_ms = statistics.median(result.times_ms["fwd"])
        result.bwd_ms = statistics.median(result.times_ms["bwd"])
        result.fwdbwd_ms = statistics.median(result.times_ms["fwdbwd"])
        # The best run is the least disturbed by other work on a shared machine.
        result.bwd_min_ms = min(result.times_ms["bwd"])
        result.fwdbwd_min_ms = min(result.times_ms["fwdbwd"])
        result.time_over_floor = result.fwdbwd_ms / 1e3 / (result.floor["bytes_fwdbwd"] / bandwidth)
        result.gflops = result.floor["flops_fwdbwd"] / (result.fwdbwd_ms / 1e3) / 1e9
        A, B, G = inputs
        device = torch.device(case.device)

        def step() -> None:
            fn(A, B).backward(G)

        result.allocator_bytes = measure_peak_bytes(step, device)
        A.grad = B.grad = None
        if device.type == "cpu" and fresh_process:
            fresh = measure_in_fresh_process(case.spec(impl, threads))
            result.peak_extra_bytes = fresh.peak_extra_bytes
            result.peak_method = f"fresh process: {fresh.method}"
        else:
            result.peak_extra_bytes = result.allocator_bytes
            result.peak_method = (
                "CUDA allocator peak" if device.type == "cuda" else "torch.profiler memory events"
            )
    except Exception as exc:  # one failing case must not lose the others' results
        result.status, result.reason = "error", f"{type(exc).__name__}: {exc}"


class _NoBar:
    """Stands in for a tqdm bar when none is wanted (or tqdm is not installed)."""

    def update(self, n: int) -> None:
        pass

    def set_postfix_str(self, s: str, refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, enabled: bool, desc: str = "bench", unit: str = "run") -> Any:
    """A tqdm bar of ``total`` steps, or a silent stand-in when disabled or unavailable.

    tqdm is imported only here, when a bar is asked for.

    >>> bar = progress_bar(3, enabled=False)
    >>> bar.update(1); bar.close()
    """
    if not enabled:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ModuleNotFoundError:
        return _NoBar()
    return tqdm(total=total, desc=desc, unit=unit, leave=True)


# -------------------------------------------------------------------------- reporting

_KEPT_AIM = "issue 4 (aim), pattern kept"
_KEPT = "issue 4, pattern kept"

#: The targets the issues set, as ``(device type, n, nnz, p, numerator, reference, metric,
#: bound, source)``; ``metric`` is ``"bwd_ms"``, ``"fwdbwd_ms"`` or ``"peak_extra_bytes"``.
TARGETS: list[tuple[str, int, int, int, str, str, str, float, str]] = [
    ("cpu", 100_000, 1_000_000, 64, "sddmm", "gather", "bwd_ms", 0.3, "issue 2"),
    ("cpu", 100_000, 1_000_000, 64, "sddmm", "gather", "peak_extra_bytes", 0.25, "issue 2"),
    ("cpu", 100_000, 1_000_000, 64, "sddmm", "torch_csr", "bwd_ms", 1.0, "issue 2"),
    ("cpu", 100_000, 1_000_000, 64, "sddmm", "tsgu", "bwd_ms", 0.15, "issue 4 (aim)"),
    ("cpu", 100_000, 1_000_000, 64, "sddmm", "torch_csr", "bwd_ms", 0.5, "issue 4 (aim)"),
    ("cpu", 100_000, 1_000_000, 64, "sddmm", "tsgu", "peak_extra_bytes", 0.15, "issue 4 (aim)"),
    ("cuda", 1_000_000, 10_000_000, 64, "sddmm", "torch_csr", "fwdbwd_ms", 1.0, "issue 2"),
    ("cuda", 1_000_000, 10_000_000, 64, "sddmm", "outputs", "peak_extra_bytes", 1.1, "issue 2"),
    ("cuda", 1_000_000, 10_000_000, 64, "sddmm", "torch_csr", "fwdbwd_ms", 0.6, "issue 4"),
    ("cuda", 1_000_000, 10_000_000, 64, "sddmm", "outputs", "peak_extra_bytes", 1.1, "issue 4"),
    # The same aims for a training loop that keeps the pattern (sparsity_pattern(A)):
    # reported next to the per-call numbers, never instead of them.
    ("cpu", 100_000, 1_000_000, 64, "sddmm_kept", "tsgu", "bwd_ms", 0.15, _KEPT_AIM),
    ("cpu", 100_000, 1_000_000, 64, "sddmm_kept", "torch_csr", "bwd_ms", 0.5, _KEPT_AIM),
    ("cpu", 100_000, 1_000_000, 64, "sddmm_kept", "tsgu", "peak_extra_bytes", 0.15, _KEPT_AIM),
    ("cuda", 1_000_000, 10_000_000, 64, "sddmm_kept", "torch_csr", "fwdbwd_ms", 0.6, _KEPT),
]


def _lookup(results: Sequence[Result], case: Case, impl: str) -> Result | None:
    # torch_csr runs on CSR inputs only: a COO case is compared with its CSR twin.
    layout = "csr" if impl == "torch_csr" else "coo" if impl == "torch_coo" else case.layout
    for r in results:
        c = r.case
        if (
            r.impl == impl
            and r.status == "ok"
            and (c.n, c.m, c.nnz, c.p, c.batch, c.dtype, c.device)
            == (case.n, case.m, case.nnz, case.p, case.batch, case.dtype, case.device)
            and c.layout == layout
        ):
            return r
    return None


def headline(results: Sequence[Result], ours: str = "sddmm") -> list[dict[str, Any]]:
    """Ratios of ``ours`` to every other implementation, per case, and the issues' targets.

    Each row: ``ours``, the case label, the reference implementation (``"outputs"`` is the bytes
    of ``C``, ``∇A`` values and ``∇B``), and ``ours / reference`` for bwd time,
    fwd+bwd time (ratio of medians, of fastest runs, and ``*_paired``: the median of the
    per-round ratios, the most robust on a shared machine) and peak extra memory. Rows of
    :data:`TARGETS` sizes carry the bound and whether it holds (times judged on the
    paired ratio when both ran in the same rounds).
    """
    rows: list[dict[str, Any]] = []
    for r in results:
        if r.impl != ours or r.status != "ok":
            continue
        c = r.case
        case_rows: list[dict[str, Any]] = []
        for name in IMPLEMENTATIONS:
            ref = None if name == ours else _lookup(results, c, name)
            if ref is None:
                continue
            row: dict[str, Any] = {
                "ours": ours,
                "case": c.label(),
                "layout": c.layout,
                "reference": name,
            }
            for metric in (
                "bwd_ms",
                "fwdbwd_ms",
                "bwd_min_ms",
                "fwdbwd_min_ms",
                "peak_extra_bytes",
            ):
                a, b = getattr(r, metric), getattr(ref, metric)
                row[metric] = a / b if a is not None and b else None
            for phase in ("bwd", "fwdbwd"):
                # Paired: the median over rounds of this round's ratio. Both ran in the
                # same round, so a busy spell on the machine cancels out of the ratio.
                mine, theirs = r.times_ms.get(phase, []), ref.times_ms.get(phase, [])
                if mine and len(mine) == len(theirs):
                    row[f"{phase}_paired"] = statistics.median(
                        x / y for x, y in zip(mine, theirs, strict=True)
                    )
            case_rows.append(row)
        case_rows.append(
            {
                "ours": ours,
                "case": c.label(),
                "layout": c.layout,
                "reference": "outputs",
                "peak_extra_bytes": (r.peak_extra_bytes or 0) / (r.output_bytes or 1),
            }
        )
        at = (c.device.split(":")[0], c.n, c.nnz, c.p, c.batch)
        for row in case_rows:
            for dev, n, nnz, p, who, ref_name, metric, bound, source in TARGETS:
                if who != ours or at != (dev, n, nnz, p, 1) or row["reference"] != ref_name:
                    continue
                # Times are judged on the paired ratio when there is one (the robust
                # estimate of the same ratio of times), memory on the measured bytes.
                judged = metric.replace("_ms", "_paired")
                judged = judged if row.get(judged) is not None else metric
                if row.get(judged) is not None:
                    row.setdefault("targets", []).append(
                        {
                            "metric": judged,
                            "value": row[judged],
                            "bound": bound,
                            "source": source,
                            "holds": bool(row[judged] <= bound),
                        }
                    )
        rows += case_rows
    return rows


def _fmt(value: float | None, spec: str) -> str:
    if value is None:
        return "-".rjust(int(spec.split(".")[0]))
    return format(value, spec)


def format_table(results: Sequence[Result]) -> str:
    """A plain-text table, one block per case, one row per implementation."""
    lines = []
    header = (
        f"{'impl':10s} {'fwd ms':>9s} {'bwd ms':>9s} {'(min)':>8s} {'f+b ms':>9s} {'peak MiB':>9s} "
        f"{'model':>9s} {'alloc':>9s} {'xfloor':>7s} {'GF/s':>6s}  note"
    )
    last = None
    for r in results:
        key = r.case.label()
        if key != last:
            lines += ["", key, header, "-" * len(header)]
            last = key
        mib = 2**20
        note = "" if r.status == "ok" else f"{r.status}: {r.reason}"
        lines.append(
            f"{r.impl:10s} {_fmt(r.fwd_ms, '9.2f')} {_fmt(r.bwd_ms, '9.2f')} "
            f"{_fmt(r.bwd_min_ms, '8.2f')} "
            f"{_fmt(r.fwdbwd_ms, '9.2f')} "
            f"{_fmt(None if r.peak_extra_bytes is None else r.peak_extra_bytes / mib, '9.1f')} "
            f"{_fmt(None if r.predicted_bytes is None else r.predicted_bytes / mib, '9.1f')} "
            f"{_fmt(None if r.allocator_bytes is None else r.allocator_bytes / mib, '9.1f')} "
            f"{_fmt(r.time_over_floor, '7.1f')} {_fmt(r.gflops, '6.2f')}  {note}"
        )
    return "\n".join(lines).lstrip("\n")


def headlines(results: Sequence[Result]) -> list[dict[str, Any]]:
    """:func:`headline` rows of the default ``"sddmm"``, then of ``"sddmm_kept"``."""
    return headline(results, "sddmm") + headline(results, "sddmm_kept")


def format_headline(rows: Sequence[dict[str, Any]]) -> str:
    """The :func:`headline` ratios as text, with each target marked as holding or not."""
    lines: list[str] = []
    last = None
    for row in rows:
        if (row.get("ours", "sddmm"), row["case"]) != last:
            ours = row.get("ours", "sddmm")
            lines.append(
                f"{ours + ' / reference':<24}bwd: median  paired  fastest | f+b: median | "
                "peak memory"
            )
            lines.append(row["case"])
            last = (ours, row["case"])
        lines.append(
            f"  {row['reference']:10s}        {_fmt(row.get('bwd_ms'), '6.2f')}  "
            f"{_fmt(row.get('bwd_paired'), '6.2f')}  {_fmt(row.get('bwd_min_ms'), '7.2f')} |"
            f"      {_fmt(row.get('fwdbwd_ms'), '6.2f')} |      "
            f"{_fmt(row.get('peak_extra_bytes'), '6.2f')}"
        )
        for t in row.get("targets", []):
            verdict = "holds" if t["holds"] else "MISSED"
            lines.append(
                f"      target ({t['source']}): {t['metric']} {t['value']:.2f} <= "
                f"{t['bound']}x: {verdict}"
            )
    return "\n".join(lines)


def machine_info(device: Any = "cpu", *, bandwidth: float | None = None) -> dict[str, Any]:
    """What the results depend on: device name, versions, date, threads, bandwidth."""
    dev = torch.device(device)
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
    else:
        name = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as cpuinfo:
                for line in cpuinfo:
                    if line.startswith("model name"):
                        name = line.split(":", 1)[1].strip()
                        break
        except OSError:
            pass
    try:
        tsgu_version: str | None = importlib.metadata.version("torchsparsegradutils")
    except importlib.metadata.PackageNotFoundError:
        tsgu_version = None
    from . import __version__

    return {
        "device": dev.type,
        "device_name": name,
        "torch": torch.__version__,
        "sparsegrad_lab": __version__,
        "torchsparsegradutils": tsgu_version,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "copy_bandwidth_GBps": None if bandwidth is None else bandwidth / 1e9,
    }


def device_tag(device: Any = "cpu") -> str:
    """``cpu-<threads>threads`` or the CUDA device name slugified.

    >>> device_tag("cpu") == f"cpu-{torch.get_num_threads()}threads"
    True
    """
    dev = torch.device(device)
    if dev.type == "cuda":
        return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(dev).lower()).strip("-")
    return f"cpu-{torch.get_num_threads()}threads"


def default_output_stem(
    out_dir: str | os.PathLike[str], device: Any = "cpu", sizes: str = "small"
) -> Path:
    """``out_dir/<device tag>-<YYYY-MM-DD>`` for the default grid (add ``.json``/``.png``).

    Another preset is appended (``...-issue``), explicit sizes as ``-custom``, so runs of
    different grids on one day do not overwrite each other.

    >>> default_output_stem("results", "cpu", "issue").name.endswith("-issue")
    True
    """
    stem = f"{device_tag(device)}-{_dt.date.today().isoformat()}"
    if sizes != "small":
        stem += f"-{sizes if sizes in SIZE_PRESETS else 'custom'}"
    return Path(out_dir) / stem


def write_json(
    results: Sequence[Result], path: str | os.PathLike[str], meta: dict[str, Any]
) -> Path:
    """Write ``{"meta", "results", "headline"}`` to ``path`` (folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "meta": meta,
        "results": [r.to_dict() for r in results],
        "headline": headlines(results),
    }
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def load_results(path: str | os.PathLike[str]) -> tuple[list[Result], dict[str, Any]]:
    """Read a file written by :func:`write_json`: the results and the ``meta`` dict.

    Lets a notebook draw results measured elsewhere (for example on a GPU).
    """
    doc = json.loads(Path(path).read_text())
    case_fields = set(Case.__dataclass_fields__)
    results = []
    for row in doc["results"]:
        case = Case(**{k: v for k, v in row.items() if k in case_fields})
        rest = {k: v for k, v in row.items() if k not in case_fields}
        results.append(Result(case=case, **rest))
    return results, doc["meta"]


def plot_results(results: Sequence[Result], path: str | os.PathLike[str] | None = None) -> Any:
    """Time (fwd + bwd) and peak extra memory against nnz, one line per implementation.

    Imports matplotlib here (the package does not need it) and draws on a
    :class:`matplotlib.figure.Figure` without pyplot, so no backend is switched. A line
    per implementation and layout (solid CSR, dashed COO) and per ``(p, batch)``, whose
    marker shape the title explains. Saved to ``path`` if given; the figure is returned.
    """
    from matplotlib.figure import Figure

    groups: dict[tuple[str, str, int, int], list[Result]] = {}
    for r in results:
        if r.status == "ok":
            groups.setdefault((r.impl, r.case.layout, r.case.p, r.case.batch), []).append(r)
    shapes = sorted({(k[2], k[3]) for k in groups})
    markers = dict(zip(shapes, "osD^vP*X", strict=False))
    fig = Figure(figsize=(12, 4.4), layout="constrained")
    ax_t, ax_m = fig.subplots(1, 2)
    colors: dict[str, str] = {impl: f"C{k}" for k, impl in enumerate(IMPLEMENTATIONS)}
    labelled: set[tuple[str, str]] = set()
    for (impl, layout, p, batch), rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: r.case.batch * r.case.nnz)
        x = [r.case.batch * r.case.nnz for r in rs]
        # One legend entry per implementation and layout; the marker tells p and batch.
        label = f"{impl} ({layout})" if (impl, layout) not in labelled else None
        labelled.add((impl, layout))
        style = {
            "color": colors[impl],
            "ls": "-" if layout == "csr" else "--",
            "marker": markers.get((p, batch), "o"),
        }
        ax_t.plot(x, [r.fwdbwd_ms for r in rs], label=label, **style)
        ax_m.plot(x, [(r.peak_extra_bytes or 0) / 2**20 for r in rs], **style)
    for ax, ylabel in ((ax_t, "forward + backward time (ms)"), (ax_m, "peak extra memory (MiB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("stored entries nnz (all batch items)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    ax_t.set_title("time: median after warm-up")
    ax_m.set_title("memory above the inputs")
    if groups:
        key = "; ".join(f"{markers[s]}: p={s[0]}, b={s[1]}" for s in shapes)
        fig.legend(loc="outside right upper", fontsize="small", title="solid CSR, dashed COO")
        fig.suptitle(f"markers: {key}", fontsize="small")
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    return fig
