r"""Benchmark runner: ``sparse_mm``'s strategies against torch and torchsparsegradutils.

For every case (sizes, layout, dtype, device) and every implementation of
:data:`~sparsegrad_lab.implementations.IMPLEMENTATIONS` it measures, on the same inputs, in
three separate steps:

1. **plan** (:func:`plan`): one :class:`Result` per (case, implementation), in order, with
   the model's prediction and the floor; an implementation that cannot run on the case or
   is not installed is ``"skipped"``, a case whose predicted peak does not fit (the memory
   guard, :func:`~sparsegrad_lab.memory_guard.check_fits`) is ``"would_need"``;
2. **time**: forward, backward and forward + backward, each the median of ``repeats`` runs
   after ``warmup`` runs. The runs of all implementations (and of the COO and CSR variants
   of a size) take turns, each round starting one later, so a machine that is slower for a
   while slows them all alike. The index validation that ``sparse_mm`` runs on every call
   (``check_indices``; for a small 2-D CPU COO ``A`` the order only, since torch's COO
   product checks the ranges as it multiplies) takes its own turn in each round, on the
   same ``A``: its median is the ``check_ms`` of the default ``"sddmm"``'s result;
3. **measure** (unless ``memory=False``): peak extra memory, on CPU in a fresh child
   process per case and implementation
   (:func:`~sparsegrad_lab.measurement.measure_in_fresh_process`), on CUDA the allocator's
   peak; plus the in-process allocator peak.

``"sddmm_kept"`` keeps the pattern its first call builds (a warm-up run, unless
``warmup=0``), as a training loop over a fixed pattern would. The headline, tables and JSON
are in :mod:`sparsegrad_lab.benchmark_report`; ``python -m sparsegrad_lab bench --help``
runs it all from the command line.

>>> cases = make_cases([(300, 1000, 8, 1)], layouts=["csr"])
>>> results = run_benchmark(cases, impls=["sddmm"], repeats=1, warmup=0, fresh_process=False,
...                         progress=False)
>>> results[0].status, results[0].impl, results[0].fwdbwd_ms > 0
('ok', 'sddmm', True)
>>> results[0].check_ms > 0  # the index validation sparse_mm runs in this call
True
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal, InvalidOperation
from functools import partial
from typing import Any

import torch
from torch import Tensor

from .errors import InputValueError, MemoryBudgetError
from .footprint import sparse_storage_bytes
from .implementations import IMPLEMENTATIONS, Case, MatMul, get_implementation, make_inputs
from .index_checks import check_indices
from .measurement import measure_in_fresh_process, measure_peak_bytes
from .memory_guard import PLANNING_FRACTION, available_bytes, check_fits
from .memory_model import output_bytes, predict_peak_bytes
from .routes import coo_product_for
from .scalar_checks import check_int
from .timing import measure_copy_bandwidth, progress_bar, time_call, time_step

__all__ = [
    "SIZE_PRESETS",
    "VALIDATED",
    "Result",
    "floor",
    "make_cases",
    "parse_batches",
    "parse_sizes",
    "plan",
    "run_benchmark",
]

#: Named size grids, each a list of ``(n, nnz, p, batch)`` with ``m = n`` and ``nnz`` per item.
#: ``small`` finishes in a few minutes on 2 CPU cores; ``small-graphs`` is where lessons,
#: course exercises and most teaching graphs live (a toy graph, a graph of 1,000 nodes, and
#: Cora's size: 2,708 nodes, 10,556 directed edges), the sizes the small-graph aims are set
#: at; ``reference`` is the size the CPU targets are set at; ``large`` the largest case
#: alone (n = 10⁶, nnz = 10⁷), to time one implementation or the index validation there
#: (``--impls sddmm --no-memory``); ``full`` adds larger, smaller and batched cases (for a
#: GPU or a patient CPU).
SIZE_PRESETS: dict[str, list[tuple[int, int, int, int]]] = {
    "small": [
        (2_000, 20_000, 32, 1),
        (8_000, 80_000, 32, 1),
        (20_000, 200_000, 32, 1),
        (2_000, 20_000, 32, 8),
    ],
    "small-graphs": [
        (100, 500, 8, 1),
        (1_000, 10_000, 16, 1),
        (2_708, 10_556, 16, 1),
    ],
    "reference": [(100_000, 1_000_000, 64, 1)],
    "large": [(1_000_000, 10_000_000, 64, 1)],
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

#: The implementation whose results carry the cost of the index validation
#: (``check_indices``) that ``sparse_mm`` runs on every call: the default, per call.
VALIDATED = "sddmm"


#: The largest count a size may have: torch holds indices and sizes as int64.
_LARGEST_COUNT = 2**63 - 1


def _whole_number(text: str, what: str, prefix: str) -> int:
    """``text`` as an int: digits (underscores allowed) or ``e`` notation of a whole number.

    Read as a decimal, exactly: ``1e400`` is too large rather than infinite, ``100.5`` is not
    truncated to 100, and ``nan`` or ``inf`` are not numbers of things.
    """
    try:
        value = Decimal(text.strip().replace("_", ""))
    except InvalidOperation:
        value = Decimal("nan")
    # copy_abs and the comparison are exact; abs() and rounding overflow at 1e999999999.
    if value.is_finite() and value.copy_abs() > _LARGEST_COUNT:
        raise InputValueError(
            f"{prefix}{what} = {text.strip()!r} is beyond 2**63 - 1, the largest size torch holds"
        )
    if not value.is_finite() or value != value.to_integral_value():
        raise InputValueError(f"{prefix}{what} = {text.strip()!r} is not a whole number")
    return int(value)


def parse_sizes(text: str, where: str | None = "parse_sizes") -> list[tuple[int, int, int, int]]:
    """Sizes from a preset name or a comma-separated list of ``n:nnz:p``.

    Each explicit size is a square ``A`` (``m = n``) with ``batch=1`` (``--batch``
    changes it). Underscores and ``e`` notation are allowed in the numbers, which must be
    whole, with ``n, p >= 1`` and ``0 <= nnz <= n*n``; a size listed twice is refused.
    ``where`` names the caller in the message (``None``: no name, for ``--sizes``).

    >>> parse_sizes("1000:5e3:16,2_000:10000:8")
    [(1000, 5000, 16, 1), (2000, 10000, 8, 1)]
    >>> parse_sizes("reference")
    [(100000, 1000000, 64, 1)]
    >>> parse_sizes("100:1e2.5:8")
    Traceback (most recent call last):
    ...
    sparsegrad_lab.errors.InputValueError: parse_sizes: nnz = '1e2.5' is not a whole number
    """
    prefix = f"{where}: " if where else ""
    text = text.strip()
    if text in SIZE_PRESETS:
        return list(SIZE_PRESETS[text])
    sizes: list[tuple[int, int, int, int]] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        fields = item.split(":")
        if len(fields) != 3:
            raise InputValueError(
                f"{prefix}expected a preset ({', '.join(SIZE_PRESETS)}) or a comma-separated "
                f"list of n:nnz:p, got {item!r}"
            )
        n, nnz, p = (
            _whole_number(field, name, prefix)
            for field, name in zip(fields, ("n", "nnz", "p"), strict=True)
        )
        if n < 1 or p < 1 or not 0 <= nnz <= n * n:
            raise InputValueError(f"{prefix}{item!r} needs n, p >= 1 and 0 <= nnz <= n*n")
        if (n, nnz, p, 1) in sizes:
            raise InputValueError(f"{prefix}{item!r} is listed twice (as n:nnz:p = {n}:{nnz}:{p})")
        sizes.append((n, nnz, p, 1))
    if not sizes:
        raise InputValueError(f"{prefix}no sizes in {text!r}: expected a preset or n:nnz:p")
    return sizes


def parse_batches(text: str, where: str | None = "parse_batches") -> list[int]:
    """Batch sizes from a comma-separated list of whole numbers >= 1, each listed once.

    ``where`` names the caller in the message (``None``: no name, for ``--batch``).

    >>> parse_batches("1, 8,1e2")
    [1, 8, 100]
    >>> parse_batches("0")
    Traceback (most recent call last):
    ...
    sparsegrad_lab.errors.InputValueError: parse_batches: batch sizes must be >= 1, got 0
    """
    prefix = f"{where}: " if where else ""
    batches: list[int] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        batch = _whole_number(item, "batch size", prefix)
        if batch < 1:
            raise InputValueError(f"{prefix}batch sizes must be >= 1, got {batch}")
        if batch in batches:
            raise InputValueError(f"{prefix}batch size {batch} is listed twice")
        batches.append(batch)
    if not batches:
        raise InputValueError(f"{prefix}no batch sizes in {text!r}: expected e.g. 1,8")
    return batches


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
    return [
        Case(n, n, nnz, p, b, layout, dtype, index_dtype, device)
        for n, nnz, p, batch in sizes
        for b in (batches or [batch])
        for layout in layouts
    ]


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
    dtype = case.torch_dtype
    e, i = dtype.itemsize, case.torch_index_dtype.itemsize
    b = case.batch
    N, M, Z, p = b * case.n, b * case.m, b * case.nnz, case.p
    # A as the block-diagonal matrix it is multiplied as: N rows, two indices per COO entry.
    a_bytes = sparse_storage_bytes(case.layout, rows=N, nnz=Z, value_bytes=e, index_bytes=i)
    fwd = a_bytes + M * p * e + N * p * e
    bwd = N * p * e + M * p * e + a_bytes + Z * e + M * p * e
    mult = 4 if dtype.is_complex else 1
    return {
        "bytes_fwd": float(fwd),
        "bytes_bwd": float(bwd),
        "bytes_fwdbwd": float(fwd + bwd),
        "flops_fwd": float(2 * Z * p * mult),
        "flops_bwd": float(4 * Z * p * mult),
        "flops_fwdbwd": float(6 * Z * p * mult),
    }


@dataclass
class Result:
    """One (case, implementation) measurement; ``status`` says whether it ran.

    ``status`` is ``"ok"``, ``"skipped"`` (not applicable or not installed: see
    ``reason``), ``"would_need"`` (predicted not to fit: ``reason`` says how much) or
    ``"error"``. Times are medians in milliseconds (``*_min_ms``: the fastest run, the
    least disturbed by other work on a shared machine); memory in bytes. ``peak_extra_bytes``
    is the headline measurement (CPU: fresh process; CUDA: allocator), ``allocator_bytes``
    the in-process allocator peak, ``predicted_bytes`` the analytic model. ``check_ms``
    (on the :data:`VALIDATED` implementation's results only) is the median time of the
    index validation ``sparse_mm`` runs on this case's ``A`` in every call, its runs in
    ``times_ms["check"]``. ``threads`` is torch's intra-op thread count during the timing.
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
    check_ms: float | None = None
    threads: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (the case flattened in)."""
        d = asdict(self)
        d.update(d.pop("case"))
        return d


# ----------------------------------------------------------------------------- 1. plan


def _input_bytes(case: Case) -> int:
    """``A`` (the larger of its COO and CSR forms), ``B`` and ``G``: what the benchmark holds."""
    e, b = case.torch_dtype.itemsize, case.batch
    a = max(
        sparse_storage_bytes(layout, rows=case.n, nnz=b * case.nnz, value_bytes=e, batch=b)
        for layout in ("coo", "csr")
    )
    return a + b * (case.m + case.n) * case.p * e


def plan(
    cases: Sequence[Case],
    impls: Sequence[str] = IMPLEMENTATIONS,
    memory_limit_bytes: int | None = None,
) -> list[Result]:
    """One :class:`Result` per (case, implementation), in that order, not yet run.

    Each has the prediction, the outputs' bytes and the floor filled in; its ``status`` is
    ``"ok"`` (to run), ``"skipped"`` or ``"would_need"``. A case must fit, with its inputs
    and the peak of its first call, into
    :data:`~sparsegrad_lab.memory_guard.PLANNING_FRACTION` of the device's available
    memory, and into ``memory_limit_bytes`` when given.

    >>> cases = make_cases([(10, 20, 4, 1)], layouts=["csr"])
    >>> [r.status for r in plan(cases, ["sddmm", "torch_coo"])]
    ['ok', 'skipped']
    """
    planning_limit: dict[str, int] = {}
    results = []
    for case in cases:
        if case.device not in planning_limit:
            planning_limit[case.device] = int(PLANNING_FRACTION * available_bytes(case.device))
        for impl in impls:
            results.append(_plan_one(case, impl, memory_limit_bytes, planning_limit[case.device]))
    return results


def _plan_one(case: Case, impl: str, budget: int | None, available: int) -> Result:
    implementation = get_implementation(impl)
    result = Result(case, impl)
    reason = implementation.unsupported_reason(case) or implementation.missing_reason()
    if reason:
        result.status, result.reason = "skipped", reason
        return result
    result.predicted_bytes = predict_peak_bytes(impl, case)
    result.output_bytes = output_bytes(case)
    result.floor = floor(case)
    # "sddmm_kept"'s first call builds the pattern it keeps: it is "sddmm"'s call.
    first = predict_peak_bytes(implementation.first_call or impl, case)
    try:
        check_fits(
            first + _input_bytes(case),
            what=f"{case.describe(impl)}, with its inputs,",
            budget=budget,
            device=case.device,
            available=available,
            advice="shrink the case or run it on a larger machine",
        )
    except MemoryBudgetError as refusal:
        result.status, result.reason = "would_need", str(refusal)
    return result


# ----------------------------------------------------------------------------- 2. time


def _layout_groups(results: Sequence[Result]) -> list[list[int]]:
    """Positions of the results whose cases differ at most in layout (timed together)."""
    groups: dict[Case, list[int]] = {}
    for k, result in enumerate(results):
        groups.setdefault(replace(result.case, layout="csr"), []).append(k)
    return list(groups.values())


def _time_round_robin(
    results: Sequence[Result],
    runnable: Sequence[int],
    fns: dict[int, MatMul],
    inputs: dict[Case, tuple[Tensor, Tensor, Tensor]],
    repeats: int,
    warmup: int,
    bar: Any,
) -> None:
    """Time every runnable result, run ``k`` of each before run ``k + 1`` of any.

    A machine that slows down for a while (other jobs, thermal limits) then slows every
    implementation alike, and the ratios between them stay fair. Each round starts one
    pair later: a run right after a large one (whose freed memory the next allocations
    must fault in again) costs a little more, and rotating spreads that over all pairs.
    The index validation of a :data:`VALIDATED` result's ``A`` takes a turn of its own, so
    it is timed in the same rounds as the call it is a share of.
    """
    turns = [(k, "step") for k in runnable]
    turns += [(k, "check") for k in runnable if results[k].impl == VALIDATED]
    for run in range(-warmup, repeats):  # negative: warm-up runs, not recorded
        shift = (run + warmup) % len(turns)
        for position, kind in [*turns[shift:], *turns[:shift]]:
            result = results[position]
            if result.status != "ok":
                continue
            step = f"warm-up {run + warmup + 1}/{warmup}" if run < 0 else f"run {run + 1}"
            bar.set_postfix_str(f"{step} {result.impl} {result.case.label()}")
            A, B, G = inputs[result.case]
            try:
                if kind == "check":
                    # What sparse_mm checks itself (the ranges of a small COO A: its kernel).
                    ranges = not coo_product_for(A, kept=False)
                    check = partial(check_indices, A, "sparse_mm", ranges=ranges)
                    times = {"check": time_call(check, B.device)}
                else:
                    fwd, bwd = time_step(fns[position], A, B, G)
                    times = {"fwd": fwd, "bwd": bwd, "fwdbwd": fwd + bwd}
            except Exception as exc:  # keep the other pairs' results
                result.status, result.reason = "error", f"{type(exc).__name__}: {exc}"
                continue
            if run >= 0:
                for phase, t in times.items():
                    result.times_ms.setdefault(phase, []).append(t * 1e3)
                if kind == "step":
                    bar.update(1)


def _summarise_times(result: Result, bandwidth: float) -> None:
    """Medians, fastest runs and the ratios to the floor, from ``result.times_ms``."""
    times = result.times_ms
    result.fwd_ms = statistics.median(times["fwd"])
    result.bwd_ms = statistics.median(times["bwd"])
    result.fwdbwd_ms = statistics.median(times["fwdbwd"])
    if "check" in times:
        result.check_ms = statistics.median(times["check"])
    # The best run is the least disturbed by other work on a shared machine.
    result.bwd_min_ms = min(times["bwd"])
    result.fwdbwd_min_ms = min(times["fwdbwd"])
    result.time_over_floor = result.fwdbwd_ms / 1e3 / (result.floor["bytes_fwdbwd"] / bandwidth)
    result.gflops = result.floor["flops_fwdbwd"] / (result.fwdbwd_ms / 1e3) / 1e9


# -------------------------------------------------------------------------- 3. measure


def _measure_memory(
    result: Result,
    fn: MatMul,
    inputs: tuple[Tensor, Tensor, Tensor],
    threads: int,
    fresh_process: bool,
) -> None:
    """Fill in the allocator peak and the headline peak (a fresh process on CPU)."""
    A, B, G = inputs
    device = torch.device(result.case.device)
    result.allocator_bytes = measure_peak_bytes(lambda: fn(A, B).backward(G), device)
    A.grad = B.grad = None
    if device.type == "cpu" and fresh_process:
        fresh = measure_in_fresh_process(result.impl, result.case, threads=threads)
        result.peak_extra_bytes = fresh.peak_extra_bytes
        result.peak_method = f"fresh process: {fresh.method}"
    else:
        result.peak_extra_bytes = result.allocator_bytes
        result.peak_method = (
            "CUDA allocator peak" if device.type == "cuda" else "torch.profiler memory events"
        )


# ------------------------------------------------------------------------------ all three


def run_benchmark(
    cases: Sequence[Case],
    *,
    impls: Sequence[str] = IMPLEMENTATIONS,
    repeats: int = 5,
    warmup: int = 1,
    threads: int | None = None,
    memory: bool = True,
    fresh_process: bool = True,
    memory_limit_bytes: int | None = None,
    bandwidth: float | None = None,
    progress: bool = True,
) -> list[Result]:
    """Plan, time and measure every implementation on every case (see the module docstring).

    Parameters
    ----------
    cases : sequence of Case
    impls : sequence of str, default all of :data:`~sparsegrad_lab.implementations.IMPLEMENTATIONS`
    repeats, warmup : int
        Timed runs (the median is reported) and untimed runs before them.
    threads : int, optional
        ``torch.set_num_threads`` here and in the child processes (default: torch's
        current count). Each result records the count it was timed with.
    memory : bool, default True
        Measure peak memory after the timing. ``False`` times only: the memory fields stay
        ``None`` (quick at large sizes, e.g. for the validation cost at nnz = 10⁷).
    fresh_process : bool, default True
        CPU only: measure peak memory in a child process per case and implementation
        (slower, and sees memory outside torch's allocator). Otherwise the in-process
        allocator peak is the headline.
    memory_limit_bytes : int, optional
        A budget besides what is available: cases predicted to need more are not run.
    bandwidth : float, optional
        Bytes/s for the time floor; measured with
        :func:`~sparsegrad_lab.timing.measure_copy_bandwidth` if absent.
    progress : bool, default True
        Show a tqdm progress bar (if tqdm is installed).

    Returns
    -------
    list of Result
        One per (case, impl), in order.
    """
    for impl in impls:
        get_implementation(impl)
    if threads is not None:
        torch.set_num_threads(check_int(threads, "threads", "run_benchmark", minimum=1))
    # The child processes that measure memory run with the same count as the timing.
    threads = torch.get_num_threads()
    results = plan(cases, impls, memory_limit_bytes)
    for result in results:
        result.threads = threads
    bar = progress_bar(len(results) * (repeats + 1), progress)
    bandwidths: dict[str, float] = {}
    try:
        for group in _layout_groups(results):
            runnable = [k for k in group if results[k].status == "ok"]
            bar.update((len(group) - len(runnable)) * (repeats + 1))
            if not runnable:
                continue
            device = results[runnable[0]].case.device
            if bandwidth is None and device not in bandwidths:
                bandwidths[device] = measure_copy_bandwidth(device)
            inputs = {results[k].case: make_inputs(results[k].case) for k in runnable}
            # One function per pair, kept for all its runs: "sddmm_kept" holds its pattern.
            fns = {k: get_implementation(results[k].impl).matmul() for k in runnable}
            _time_round_robin(results, runnable, fns, inputs, repeats, warmup, bar)
            for k in runnable:
                result = results[k]
                bar.set_postfix_str(f"memory {result.impl} {result.case.label()}")
                bar.update(1)
                if result.status != "ok":
                    continue
                try:
                    _summarise_times(result, bandwidth or bandwidths[device])
                    if memory:
                        _measure_memory(result, fns[k], inputs[result.case], threads, fresh_process)
                except Exception as exc:  # one failing case must not lose the others' results
                    result.status, result.reason = "error", f"{type(exc).__name__}: {exc}"
            del inputs, fns
    finally:
        bar.close()
    return results
