"""Sweep one size of ``C = A @ B`` and record, per strategy, predicted and measured memory.

A sweep walks the values of one parameter -- ``n`` (rows of ``A``), ``nnz`` or
``density`` (its stored entries) or ``p`` (columns of ``B``) -- holding the others at
``base``. At every point and for every implementation it

1. predicts the peak extra memory of ``C = f(A, B); C.backward(G)`` with
   :func:`~sparsegrad_lab.memory_model.predict_peak_bytes`;
2. passes that prediction to the memory guard, :func:`~sparsegrad_lab.memory_guard.guarded`:
   a point above ``budget`` (or above what is available) is recorded as refused, with the
   guard's message, and is never built or run -- so a sweep that strays too far cannot
   kill the kernel;
3. otherwise builds seeded inputs (:func:`~sparsegrad_lab.implementations.make_inputs`),
   runs one warm-up step, measures the real peak in this process
   (:func:`~sparsegrad_lab.measurement.measure_peak_bytes`: torch.profiler's allocation
   events on CPU, the caching allocator's peak on CUDA) and times ``repeats`` forward +
   backward steps (:func:`~sparsegrad_lab.timing.time_case`), keeping the median.

:class:`SweepResult` holds the lists and turns them into the ``series``/``model`` dicts
that :func:`sparsegrad_lab.plots.plot_memory_curves` and
:func:`~sparsegrad_lab.plots.plot_timings` draw.

>>> r = sweep("p", [8, 16], base={"n": 500, "nnz_per_row": 4}, measure=False, progress=False)
>>> r.cases[1].label()
'n=500 m=500 nnz=2000 p=16 csr float32'
>>> r.predicted["gather"][1] - r.predicted["gather"][0] > 0      # 3 nnz p e grows with p
True
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from .errors import InputValueError
from .implementations import Case, get_implementation, make_inputs
from .measurement import measure_peak_bytes
from .memory_guard import LAB_BUDGET_BYTES, guarded
from .memory_model import predict_peak_bytes
from .scalar_checks import check_int
from .timing import progress_bar, time_case

__all__ = ["DEFAULT_BASE", "PARAMETERS", "SweepResult", "sweep"]

Parameter = Literal["n", "nnz", "density", "p"]
#: The parameters a sweep can vary.
PARAMETERS: tuple[Parameter, ...] = ("n", "nnz", "density", "p")

#: What a sweep holds fixed unless ``base`` says otherwise: a square CSR ``A`` of
#: ``n = 2000`` rows with 10 stored entries per row on average, ``B`` with 32 columns.
DEFAULT_BASE: dict[str, Any] = {
    "n": 2000,
    "nnz_per_row": 10,
    "p": 32,
    "layout": "csr",
    "dtype": "float32",
    "seed": 0,
}

# Exactly one of these sets the number of stored entries of A.
_SPARSITY_KEYS = ("nnz", "density", "nnz_per_row")
_BASE_KEYS = frozenset({"n", "m", "p", "layout", "dtype", "seed", *_SPARSITY_KEYS})
_XLABELS = {
    "n": "n (rows of A)",
    "nnz": "nnz (stored entries of A)",
    "density": "density nnz / (n m)",
    "p": "p (columns of B)",
}
_UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}


@dataclass
class SweepResult:
    """Per-implementation lists, one entry per swept value, from :func:`sweep`.

    Attributes
    ----------
    parameter : {"n", "nnz", "density", "p"}
        What was swept.
    values : list of int or float
        The swept values, in order.
    cases : list of Case
        The full case at each value.
    impls : tuple of str
        The implementations compared (keys of the dicts below).
    predicted : dict of str to list of int
        Model's peak extra bytes.
    measured : dict of str to list of int or None
        Measured peak extra bytes; ``None`` where refused or not measured.
    time_s : dict of str to list of float or None
        Median seconds of one forward + backward; ``None`` where refused or not measured.
    refused : dict of str to list of bool
        True where the memory guard refused the point (it never ran).
    messages : dict of str to list of str
        The guard's refusal message, or ``""`` where the point was allowed.
    device : str
    budget : int
        The guard's budget in bytes (the limit is the smaller of it and what is available).
    repeats : int
        Timed steps per point (the median is kept).
    """

    parameter: Parameter
    values: list[int | float]
    cases: list[Case]
    impls: tuple[str, ...]
    predicted: dict[str, list[int]]
    measured: dict[str, list[int | None]]
    time_s: dict[str, list[float | None]]
    refused: dict[str, list[bool]]
    messages: dict[str, list[str]]
    device: str
    budget: int
    repeats: int

    def memory_curves(self, unit: str = "MiB") -> dict[str, Any]:
        """Keyword arguments for :func:`~sparsegrad_lab.plots.plot_memory_curves`.

        ``x`` (the swept values), ``series`` (measured, ``None`` -> a gap), ``model``
        (predicted), both in ``unit``, and axis labels.

        >>> r = sweep("n", [100, 200], impls=["sddmm"], measure=False, progress=False)
        >>> kw = r.memory_curves()
        >>> sorted(kw), kw["series"], kw["ylabel"]
        (['model', 'series', 'x', 'xlabel', 'ylabel'], {'sddmm': [None, None]}, \
'peak extra memory (MiB)')
        """
        scale = _unit(unit)
        return {
            "x": list(self.values),
            "series": {k: [_scaled(v, scale) for v in self.measured[k]] for k in self.impls},
            "model": {k: [v / scale for v in self.predicted[k]] for k in self.impls},
            "xlabel": _XLABELS[self.parameter],
            "ylabel": f"peak extra memory ({unit})",
        }

    def time_curves(self) -> dict[str, Any]:
        """Keyword arguments for :func:`~sparsegrad_lab.plots.plot_timings` (milliseconds).

        >>> r = sweep("n", [100], impls=["dense"], measure=False, progress=False)
        >>> r.time_curves()["series"]
        {'dense': [None]}
        """
        return {
            "x": list(self.values),
            "series": {k: [_scaled(t, 1e-3) for t in self.time_s[k]] for k in self.impls},
            "xlabel": _XLABELS[self.parameter],
            "ylabel": f"forward + backward, median of {self.repeats} (ms)",
        }

    def relative_error(self) -> dict[str, list[float | None]]:
        """``measured / predicted - 1`` at every measured point (``None`` elsewhere).

        >>> r = sweep("n", [100], impls=["sddmm"], measure=False, progress=False)
        >>> r.relative_error()
        {'sddmm': [None]}
        """
        return {
            k: [
                None if got is None else got / want - 1
                for got, want in zip(self.measured[k], self.predicted[k], strict=True)
            ]
            for k in self.impls
        }

    def refusals(self) -> list[str]:
        """The guard's messages for every refused point, in sweep order.

        >>> r = sweep("n", [100, 20_000], impls=["dense"], measure=False, progress=False,
        ...           budget=2**20)
        >>> r.refused["dense"], len(r.refusals())
        ([False, True], 1)
        """
        return [
            message
            for i in range(len(self.values))
            for k in self.impls
            if (message := self.messages[k][i])
        ]

    def format_table(self, *, measured: bool = True) -> str:
        """A plain-text table: one row per value, predicted (and measured) MiB per impl.

        With ``measured=False`` only the model's numbers appear, so the text is the same on
        every run; refused points show ``refused``.

        >>> r = sweep("n", [1000], impls=["sddmm", "dense"], measure=False, progress=False,
        ...           budget=2**21)
        >>> print(r.format_table(measured=False))
               n      nnz | sddmm MiB dense MiB
            1000    10000 |      1.58   refused
        """
        width = 22 if measured else 9
        other_name = "n" if self.parameter == "nnz" else "nnz"
        lines = [
            f"{self.parameter:>8s} {other_name:>8s} |"
            + "".join(f" {k + ' MiB':>{width}s}" for k in self.impls)
        ]
        for i, value in enumerate(self.values):
            row = f"{_short(value):>8s} {getattr(self.cases[i], other_name):>8d} |"
            for k in self.impls:
                got = self.measured[k][i]
                if self.refused[k][i]:
                    text = "refused"
                elif measured and got is not None:
                    text = f"{self.predicted[k][i] / 2**20:.2f} (meas {got / 2**20:.2f})"
                else:
                    text = f"{self.predicted[k][i] / 2**20:.2f}"
                row += f" {text:>{width}s}"
            lines.append(row)
        return "\n".join(lines)


def _unit(unit: str) -> int:
    if unit not in _UNITS:
        raise InputValueError(f"unit must be one of {sorted(_UNITS)}, got {unit!r}")
    return _UNITS[unit]


def _scaled(value: float | None, scale: float) -> float | None:
    return None if value is None else value / scale


def _short(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# ----------------------------------------------------------------------------- cases


def _check_density(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise InputValueError(f"sweep: {name} must be a number in (0, 1], got {value!r}")
    return float(value)


def _merge_base(base: Mapping[str, Any] | None) -> dict[str, Any]:
    """``DEFAULT_BASE`` overridden by ``base``; a sparsity key there replaces the default's."""
    given = dict(base or {})
    if unknown := set(given) - _BASE_KEYS:
        raise InputValueError(
            f"sweep: base: unknown keys {sorted(unknown)}; expected some of {sorted(_BASE_KEYS)}"
        )
    if len([k for k in _SPARSITY_KEYS if k in given]) > 1:
        raise InputValueError(
            f"sweep: base: give at most one of {_SPARSITY_KEYS}, got "
            f"{ {k: given[k] for k in _SPARSITY_KEYS if k in given} }"
        )
    merged = dict(DEFAULT_BASE)
    if any(k in given for k in _SPARSITY_KEYS):
        for k in _SPARSITY_KEYS:
            merged.pop(k, None)
    merged.update(given)
    return merged


def _nnz(parameter: str, value: int | float, base: Mapping[str, Any], n: int, m: int) -> int:
    """Stored entries at one point: swept, or from ``base``'s nnz, density or nnz per row."""
    if parameter == "nnz":
        return check_int(value, "values (nnz)", "sweep", minimum=0)
    if parameter == "density":
        return max(1, round(_check_density("values (density)", value) * n * m))
    if "nnz" in base:
        return check_int(base["nnz"], "base['nnz']", "sweep", minimum=0)
    if "density" in base:
        return max(1, round(_check_density("base['density']", base["density"]) * n * m))
    per_row = base["nnz_per_row"]
    if isinstance(per_row, bool) or not isinstance(per_row, int | float) or per_row <= 0:
        raise InputValueError(f"sweep: base['nnz_per_row'] must be a number > 0, got {per_row!r}")
    return max(1, round(per_row * n))


def _case(parameter: str, value: int | float, base: Mapping[str, Any], device: str) -> Case:
    """The case at one point: ``m`` follows ``n`` unless ``base`` fixes it."""
    n = check_int(
        value if parameter == "n" else base["n"],
        "values (n)" if parameter == "n" else "base['n']",
        "sweep",
        minimum=1,
    )
    m = check_int(base["m"], "base['m']", "sweep", minimum=1) if "m" in base else n
    p = check_int(
        value if parameter == "p" else base["p"],
        "values (p)" if parameter == "p" else "base['p']",
        "sweep",
        minimum=1,
    )
    nnz = _nnz(parameter, value, base, n, m)
    if nnz > n * m:
        raise InputValueError(
            f"sweep: {parameter}={value!r}: nnz={nnz} does not fit in an {n} x {m} matrix "
            f"({n * m} positions)"
        )
    return Case(
        n=n,
        m=m,
        nnz=nnz,
        p=p,
        layout=base["layout"],
        dtype=base["dtype"],
        device=device,
        seed=base["seed"],
    )


# ----------------------------------------------------------------------------- the sweep


def _measure_point(impl: str, case: Case, repeats: int) -> tuple[int, float]:
    """Peak extra bytes of one step and median seconds of ``repeats`` steps."""
    A, B, G = make_inputs(case)
    fn = get_implementation(impl).matmul()
    # Warm-up: kernels, thread pools and the pattern's lazily built state are not the
    # step's memory, and the first run is the slowest.
    fn(A, B).backward(G)
    A.grad = B.grad = None
    peak = measure_peak_bytes(lambda: fn(A, B).backward(G), case.device)
    A.grad = B.grad = None
    times = time_case(fn, A, B, G, repeats=repeats, warmup=0)["fwdbwd"]
    return peak, statistics.median(times)


def sweep(
    parameter: str,
    values: Sequence[int | float],
    *,
    base: Mapping[str, Any] | None = None,
    impls: Sequence[str] = ("sddmm", "gather", "dense"),
    measure: bool = True,
    repeats: int = 3,
    budget: int = LAB_BUDGET_BYTES,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> SweepResult:
    r"""Predict, guard, and measure each implementation at each value of ``parameter``.

    ``A`` is ``n x m`` with ``nnz`` uniformly random entries (seeded), ``B`` is ``m x p``;
    ``m = n`` unless ``base`` fixes ``m``. The number of entries comes from one of
    ``base``'s ``nnz`` (fixed), ``density`` (:math:`\mathrm{round}(\rho\, n m)`) or
    ``nnz_per_row`` (:math:`\mathrm{round}(d\, n)`, the mean degree of a graph: the
    default, 10), unless the sweep itself varies ``nnz`` or ``density``.

    Parameters
    ----------
    parameter : {"n", "nnz", "density", "p"}
        The quantity swept.
    values : sequence of int or float
        Its values (ints, except densities in ``(0, 1]``).
    base : dict, optional
        The fixed sizes, over :data:`DEFAULT_BASE`: ``n``, ``m``, one of ``nnz`` /
        ``density`` / ``nnz_per_row``, ``p``, ``layout`` ("csr"), ``dtype`` ("float32"),
        ``seed`` (0).
    impls : sequence of str, default ("sddmm", "gather", "dense")
        Any of :data:`sparsegrad_lab.implementations.IMPLEMENTATIONS` that runs on ``layout``.
    measure : bool, default True
        Run the allowed points; with False only the model and the guard are evaluated.
    repeats : int, default 3
        Timed forward + backward steps per point (the median is kept), after one warm-up
        step and one memory measurement.
    budget : int, default :data:`~sparsegrad_lab.memory_guard.LAB_BUDGET_BYTES`
        Points whose predicted peak exceeds it (or what is available) are refused, not run.
    progress : bool, default True
        Show a tqdm progress bar (``tqdm.auto``: a widget in Jupyter), if tqdm is installed.
    device : str or torch.device, default "cpu"
        Where the inputs live and the steps run; the model is asked for this device.

    Returns
    -------
    SweepResult

    Raises
    ------
    InputValueError
        For an unknown parameter, key or implementation, an implementation that cannot run
        on ``layout``, or sizes that do not fit (``nnz > n m``).
    """
    if parameter not in PARAMETERS:
        raise InputValueError(f"sweep: parameter must be one of {PARAMETERS}, got {parameter!r}")
    if isinstance(values, str) or not isinstance(values, Sequence) or not values:
        raise InputValueError(
            f"sweep: values must be a non-empty sequence of numbers, got {values!r}"
        )
    check_int(repeats, "repeats", "sweep", minimum=1)
    check_int(budget, "budget", "sweep", minimum=0)
    merged = _merge_base(base)
    impls = tuple(impls)
    if not impls:
        raise InputValueError("sweep: impls must name at least one implementation, got none")
    dev = str(torch.device(device))
    # Every case is resolved (and checked) before anything runs.
    cases = [_case(parameter, value, merged, dev) for value in values]
    for impl in impls:
        if reason := get_implementation(impl).unsupported_reason(cases[0]):
            raise InputValueError(f"sweep: impls: {reason}")

    result = SweepResult(
        parameter=parameter,  # type: ignore[arg-type]
        values=list(values),
        cases=cases,
        impls=impls,
        predicted={k: [] for k in impls},
        measured={k: [] for k in impls},
        time_s={k: [] for k in impls},
        refused={k: [] for k in impls},
        messages={k: [] for k in impls},
        device=dev,
        budget=budget,
        repeats=repeats,
    )
    bar = progress_bar(len(cases) * len(impls), progress, f"sweep {parameter}", unit="case")
    try:
        for case in cases:
            for impl in impls:
                bar.set_postfix_str(f"{impl} n={case.n} nnz={case.nnz} p={case.p}")
                predicted = predict_peak_bytes(impl, case)

                def run(impl: str = impl, case: Case = case) -> tuple[int, float] | None:
                    return _measure_point(impl, case, repeats) if measure else None

                outcome = guarded(
                    run,
                    predicted_bytes=predicted,
                    what=case.describe(impl),
                    budget=budget,
                    device=dev,
                )
                peak, seconds = outcome.value if outcome.value is not None else (None, None)
                result.predicted[impl].append(predicted)
                result.measured[impl].append(peak)
                result.time_s[impl].append(seconds)
                result.refused[impl].append(outcome.refused)
                result.messages[impl].append(outcome.message)
                bar.update(1)
    finally:
        bar.close()
    return result
