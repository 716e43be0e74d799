"""Interactive explorers for the lessons: thin ipywidgets shells over pure functions.

Each explorer is ``ipywidgets.interactive`` around a pure function that returns a report
(a small dataclass holding a figure and the numbers it shows). The notebooks call the
pure function once for a static figure -- what a reader without a kernel sees -- and
then show the explorer. Tests set a control's ``.value`` and read ``explorer.result``.

Every callback stays inside the memory guard (:mod:`sparsegrad_lab.memory_guard`), with
the lab's budget :data:`~sparsegrad_lab.memory_guard.LAB_BUDGET_BYTES`: a setting whose
predicted peak exceeds it is reported, not run, so no slider can kill the kernel.
ipywidgets is imported here only; the figures come from :mod:`sparsegrad_lab.plots`.

Responsiveness on a 2-core Binder session: a slider that updates while dragged queues one
callback per step of the drag. So a control whose callback takes more than about 0.2 s does
not update continuously: the pattern explorer's sliders act on release, and the memory
explorer measures only when its button is pressed, showing the model's predicted cost (cheap)
as soon as a slider moves. ``tests/test_widgets.py`` times the callbacks that stay continuous.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor

from . import ops
from .errors import InputTypeError, InputValueError, MemoryBudgetError, format_bytes
from .example_matrices import MATRIX_KINDS, make_matrix
from .memory_guard import LAB_BUDGET_BYTES, limit_bytes
from .memory_model import predict_peak_bytes, storage_bytes
from .operand_checks import check_sparse_matrix
from .plots import close_figure, plot_gradient_entry, plot_memory_points, spy
from .scalar_checks import check_int, check_real
from .strategies import BACKWARD_STRATEGIES
from .sweep import sweep

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "EntryReport",
    "MemoryReport",
    "PatternReport",
    "gradient_entry_explorer",
    "gradient_entry_report",
    "memory_explorer",
    "memory_preview",
    "memory_report",
    "pattern_explorer",
    "pattern_report",
]


# The explorers' slider ranges: one home for each slider and the check of its starting value
# (a slider silently clamps a value outside its range). Log sliders give exponents of 10.
_PATTERN_N = {"min": 20, "max": 5000, "step": 20}
_PATTERN_DENSITY_EXPONENT: dict[str, float] = {"min": -4, "max": -0.5}
_MEMORY_N = {"min": 100, "max": 20_000, "step": 100}
_MEMORY_DENSITY_EXPONENT: dict[str, float] = {"min": -5, "max": -1}
_MEMORY_P = {"min": 1, "max": 256}


def _slider_int(where: str, name: str, value: Any, bounds: dict[str, int]) -> int:
    """``value`` checked to lie on the integer slider ``bounds`` (``min <= value <= max``)."""
    return check_int(value, name, where, minimum=bounds["min"], below=bounds["max"] + 1)


def _slider_log(where: str, name: str, value: Any, exponents: dict[str, float]) -> float:
    """``value`` checked to lie on the log slider of ``exponents`` (``10**min .. 10**max``)."""
    return check_real(value, name, where, low=10 ** exponents["min"], high=10 ** exponents["max"])


def _show_and_close(fig: Any) -> None:
    """Display a figure in the widget's output area once, then release it."""
    from IPython.display import display

    display(fig)
    close_figure(fig)


# ------------------------------------------------------------------ gradient of one entry


@dataclass
class EntryReport:
    """What :func:`gradient_entry_report` found for entry ``(i, j)`` of ``A``.

    Attributes
    ----------
    i, j : int
    stored : bool
        Whether ``A`` stores ``(i, j)``; only stored entries have a gradient.
    dot : complex or float
        :math:`G_{i,:} \\cdot \\overline{B_{j,:}}`, the would-be gradient at ``(i, j)``.
    grad : complex, float or None
        ``A.grad`` at ``(i, j)`` as ``sparse_mm``'s backward computed it (None if not stored).
    text : str
    figure : matplotlib Figure
    item : int or None
        The batch item ``t`` of a batched ``A``, ``None`` for a 2-D one.
    """

    i: int
    j: int
    stored: bool
    dot: complex | float
    grad: complex | float | None
    text: str
    figure: Any = field(repr=False)
    item: int | None = None


def _entry_shape(where: str, A: Any, G: Any, B: Any) -> tuple[int | None, int, int]:
    """``(b, n, m)`` of checked inputs to :func:`gradient_entry_report` (``b`` None if 2-D).

    Everything is checked before the backward runs, so a wrong argument costs no work and
    its message names it instead of an index deep inside autograd.
    """
    check_sparse_matrix(A, where)
    *lead, n, m = A.shape
    b = lead[0] if lead else None
    batch = "b, " if lead else ""
    for name, M, rows, size in (("G", G, "n", n), ("B", B, "m", m)):
        expected = f"({batch}{rows}, p)"
        if not isinstance(M, Tensor) or M.layout != torch.strided:
            kind = f"layout {M.layout}" if isinstance(M, Tensor) else type(M).__name__
            raise InputTypeError(f"{where}: {name} must be a dense tensor {expected}, got {kind}")
        if M.dim() != A.dim() or tuple(M.shape[:-1]) != (*lead, size):
            known = f"b = {b}, {rows} = {size}" if lead else f"{rows} = {size}"
            raise InputValueError(
                f"{where}: A is {tuple(A.shape)}, so {name} must be {expected} with {known}; "
                f"got {name} of shape {tuple(M.shape)}"
            )
    if G.shape[-1] != B.shape[-1]:
        raise InputValueError(
            f"{where}: G {tuple(G.shape)} and B {tuple(B.shape)} must have the same number of "
            "columns p"
        )
    if G.dtype != B.dtype:
        raise InputTypeError(
            f"{where}: G and B must have the same dtype, got G {G.dtype} and B {B.dtype}"
        )
    if 0 in A.shape or B.shape[-1] == 0:
        raise InputValueError(
            f"{where}: A {tuple(A.shape)} has no entry (i, j) to explain, or G and B no "
            f"column to sum over (p = {B.shape[-1]}); every dimension must be >= 1"
        )
    return b, n, m


def gradient_entry_report(
    A: Tensor, G: Tensor, B: Tensor, i: int, j: int, *, item: int | None = None
) -> EntryReport:
    """Explain :math:`\\partial L / \\partial A_{ij} = G_{i,:} \\cdot \\overline{B_{j,:}}`.

    Runs ``sparse_mm(A, B).backward(G)`` and compares ``A.grad`` at ``(i, j)`` with the
    dot product of row ``i`` of ``G`` and row ``j`` of ``B``. If ``A`` does not store
    ``(i, j)`` the dot product is still shown -- it is what the dense gradient would hold
    there, and exactly the number a sparse backward never computes. Every argument is
    checked before the backward runs.

    Parameters
    ----------
    A : Tensor
        Sparse COO or CSR, ``(n, m)``, or a batch ``(b, n, m)``; no dimension 0.
    G : Tensor
        Dense upstream gradient ``(n, p)`` (``(b, n, p)``), ``p >= 1``.
    B : Tensor
        Dense ``(m, p)`` (``(b, m, p)``), of ``G``'s dtype.
    i, j : int
        The entry: ``0 <= i < n``, ``0 <= j < m``.
    item : int, optional
        For a batched ``A``, which item ``t`` (``0 <= t < b``): its entry ``(t, i, j)`` is
        explained. Required for a batch, refused for a 2-D ``A``.

    Returns
    -------
    EntryReport

    Examples
    --------
    >>> A = torch.tensor([[0.0, 2.0], [1.0, 0.0]]).to_sparse()
    >>> G, B = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> report = gradient_entry_report(A, G, B, 0, 1)
    >>> report.stored, report.dot, report.grad
    (True, 2.0, 2.0)
    >>> gradient_entry_report(A, G, B, 0, 0).text
    'A does not store (0, 0): a dense gradient would hold 1 there; sparse_mm never computes it.'
    >>> batch = torch.stack([A, A])
    >>> gradient_entry_report(batch, torch.stack([G, G]), torch.stack([B, B]), 1, 0, item=1).text
    "dL/dA[1, 1, 0] = G[1, 1, :] · B[1, 0, :] = 3; sparse_mm's A.grad holds 3."
    """
    where = "gradient_entry_report"
    b, n, m = _entry_shape(where, A, G, B)
    if b is None and item is not None:
        raise InputValueError(
            f"{where}: item names a batch item, but A is 2-D {tuple(A.shape)}; leave it out"
        )
    if b is not None:
        if item is None:
            raise InputValueError(
                f"{where}: A is a batch {tuple(A.shape)}; name its item with item=t, 0 <= t < {b}"
            )
        item = check_int(item, "item", where, minimum=0, below=b)
    i = check_int(i, "i", where, minimum=0, below=n)
    j = check_int(j, "j", where, minimum=0, below=m)

    leaf = A.detach().requires_grad_()
    ops.sparse_mm(leaf, B.detach()).backward(G)  # looked up per call: a test may count them
    assert leaf.grad is not None  # backward always reaches a leaf that requires grad
    grad = (leaf.grad if leaf.grad.layout == torch.sparse_coo else leaf.grad.to_sparse()).coalesce()
    position = (i, j) if item is None else (item, i, j)
    here = torch.ones(grad.indices().shape[1], dtype=torch.bool, device=grad.device)
    for axis, index in enumerate(position):
        here &= grad.indices()[axis] == index
    stored = bool(here.any())
    G_t, B_t = (G, B) if item is None else (G[item], B[item])
    dot = (G_t[i] * B_t[j].conj()).sum().item()
    value = grad.values()[here][0].item() if stored else None
    at = "" if item is None else f"{item}, "
    row_of_b = f"conj(B[{at}{j}, :])" if B.is_complex() else f"B[{at}{j}, :]"
    if stored:
        text = (
            f"dL/dA[{at}{i}, {j}] = G[{at}{i}, :] · {row_of_b} = {dot:.4g}; "
            f"sparse_mm's A.grad holds {value:.4g}."
        )
    else:
        text = (
            f"A does not store ({at}{i}, {j}): a dense gradient would hold {dot:.4g} there; "
            "sparse_mm never computes it."
        )
    # Given no Axes, the plot makes (and returns) a Figure of its own.
    figure = cast("Figure", plot_gradient_entry(G_t, B_t, i, j))
    if item is not None:  # the plot shows item t's G and B: its title says which item
        axes = figure.axes[0]
        axes.set_title(f"item {item}: {axes.get_title()}")
    return EntryReport(i, j, stored, dot, value, text, figure, item)


def gradient_entry_explorer(A: Tensor, G: Tensor, B: Tensor) -> Any:
    """Sliders for ``i`` and ``j`` (and a batch's item ``t``) over :func:`gradient_entry_report`.

    The inputs are checked as the report checks them, before any slider is built: a matrix
    with no row or no column has no entry to slide over.

    >>> A = torch.eye(3).to_sparse()
    >>> import contextlib, io
    >>> with contextlib.redirect_stdout(io.StringIO()):     # the callback prints and plots
    ...     explorer = gradient_entry_explorer(A, torch.ones(3, 2), torch.ones(3, 2))
    ...     explorer.children[0].value = 2
    >>> explorer.result.i
    2
    """
    import ipywidgets as w

    b, n, m = _entry_shape("gradient_entry_explorer", A, G, B)

    def show(i: int, j: int, item: int | None) -> EntryReport:
        report = gradient_entry_report(A, G, B, i, j, item=item)
        print(report.text)
        _show_and_close(report.figure)
        return report

    # A 2-D A has no item: ``fixed`` passes None without drawing a control for it.
    item = w.fixed(None) if b is None else w.IntSlider(min=0, max=b - 1, description="item t")
    return w.interactive(
        show,
        i=w.IntSlider(value=0, min=0, max=n - 1, description="row i"),
        j=w.IntSlider(value=0, min=0, max=m - 1, description="column j"),
        item=item,
    )


# ------------------------------------------------------------------------ pattern explorer


@dataclass
class PatternReport:
    """A generated pattern's spy plot and storage cost.

    Attributes
    ----------
    name : str
    shape : tuple of int
    nnz : int
    bytes : dict
        ``{"coo": ..., "csr": ..., "dense": ...}``, from
        :func:`~sparsegrad_lab.memory_model.storage_bytes`.
    text : str
    figure : matplotlib Figure or None
        None when the pattern was refused by the memory guard.
    """

    name: str
    shape: tuple[int, ...]
    nnz: int
    bytes: dict[str, int]
    text: str
    figure: Any = field(repr=False)


def pattern_report(
    name: str, n: int, density: float, seed: int = 0, *, budget: int = LAB_BUDGET_BYTES
) -> PatternReport:
    """Generate a matrix of kind ``name`` (about ``n x n`` at ``density``), describe its storage.

    One whose generation would exceed ``budget`` is refused, and the report says so.
    ``name`` is one of :data:`~sparsegrad_lab.example_matrices.MATRIX_KINDS`; ``n`` and
    ``density`` are checked by :func:`~sparsegrad_lab.example_matrices.make_matrix`.

    >>> report = pattern_report("banded", 200, 0.02)
    >>> report.nnz, report.bytes["csr"] < report.bytes["coo"] < report.bytes["dense"]
    (994, True)
    """
    _check_kind("pattern_report", name)
    seed = check_int(seed, "seed", "pattern_report", minimum=0)  # fixed graphs ignore it
    try:
        A = make_matrix(name, n, density, seed, budget=budget)
    except MemoryBudgetError as refusal:
        return PatternReport(name, (n, n), 0, {}, f"refused: {refusal}", None)
    cost = storage_bytes(A)
    rows, cols = A.shape
    text = (
        f"{name}: {rows} x {cols}, nnz = {A._nnz()} ({A._nnz() / (rows * cols):.2%}); "
        f"COO {format_bytes(cost['coo'])}, CSR {format_bytes(cost['csr'])}, "
        f"dense {format_bytes(cost['dense'])}"
    )
    return PatternReport(name, tuple(A.shape), A._nnz(), cost, text, spy(A, title=name))


def _check_kind(where: str, name: Any) -> str:
    if not isinstance(name, str) or name not in MATRIX_KINDS:
        raise InputValueError(f"{where}: name must be one of {sorted(MATRIX_KINDS)}, got {name!r}")
    return name


def pattern_explorer(name: str = "uniform", n: int = 500, density: float = 0.01) -> Any:
    """Dropdown of patterns, sliders for size and density, over :func:`pattern_report`.

    The starting values must lie on the controls: ``name`` one of
    :data:`~sparsegrad_lab.example_matrices.MATRIX_KINDS`, ``20 <= n <= 5000``,
    ``1e-4 <= density <= 10**-0.5``.

    >>> pattern_explorer(name="bogus")
    Traceback (most recent call last):
    ...
    sparsegrad_lab.errors.InputValueError: pattern_explorer: name must be one of ['banded', \
'block_diagonal', 'grid_laplacian', 'karate_club', 'les_miserables', 'power_law', 'uniform'], \
got 'bogus'
    >>> import contextlib, io
    >>> with contextlib.redirect_stdout(io.StringIO()):     # the callback prints and plots
    ...     explorer = pattern_explorer()
    ...     explorer.children[0].value = "banded"
    >>> explorer.result.name
    'banded'
    """
    where = "pattern_explorer"
    _check_kind(where, name)
    n = _slider_int(where, "n", n, _PATTERN_N)
    density = _slider_log(where, "density", density, _PATTERN_DENSITY_EXPONENT)
    import ipywidgets as w

    def show(name: str, n: int, density: float) -> PatternReport:
        report = pattern_report(name, n, density)
        print(report.text)
        if report.figure is not None:
            _show_and_close(report.figure)
        return report

    return w.interactive(
        show,
        name=w.Dropdown(options=sorted(MATRIX_KINDS), value=name, description="pattern"),
        # On release: generating and drawing a pattern near the top of these ranges takes ~1 s.
        n=w.IntSlider(value=n, **_PATTERN_N, description="size n", continuous_update=False),
        density=w.FloatLogSlider(
            value=density,
            base=10,
            **_PATTERN_DENSITY_EXPONENT,
            description="density",
            continuous_update=False,
        ),
    )


# ------------------------------------------------------------------------- memory explorer


@dataclass
class MemoryReport:
    """Predicted (and, where it fits, measured) peak extra memory of each strategy.

    Attributes
    ----------
    case : dict
        ``n``, ``nnz``, ``p`` of the case.
    predicted : dict
        Bytes per strategy from the analytic model.
    measured : dict
        Bytes per strategy measured by running it; None where the guard refused it.
    text : str
    figure : matplotlib Figure
    """

    case: dict[str, int]
    predicted: dict[str, int]
    measured: dict[str, int | None]
    text: str
    figure: Any = field(repr=False)


def memory_report(
    n: int, density: float, p: int, *, budget: int = LAB_BUDGET_BYTES, measure: bool = True
) -> MemoryReport:
    """Peak extra memory of ``sparse_mm`` forward + backward for each backward strategy.

    ``A`` is ``n x n`` uniformly random with ``round(density n^2)`` entries, ``B`` is
    ``n x p``. Each strategy is predicted by the analytic model and, if the prediction fits
    ``budget``, measured (:func:`~sparsegrad_lab.measurement.measure_peak_bytes`).

    >>> report = memory_report(300, 0.01, 16)
    >>> sorted(report.predicted) == sorted(report.measured)
    True
    >>> report.predicted["dense"] > report.predicted["gather"] > report.predicted["sddmm"]
    True
    """
    _check_setting("memory_report", n, density, p, budget)
    # One point of the lessons' sweep: the same predict, guard and measure path (warm-up
    # included) that the sweeps in 03_memory_savings use.
    point = sweep(
        "n",
        [n],
        base={"density": density, "p": p, "layout": "csr"},
        impls=BACKWARD_STRATEGIES,
        measure=measure,
        repeats=1,
        budget=budget,
        progress=False,
    )
    nnz = point.cases[0].nnz
    predicted: dict[str, int] = {s: point.predicted[s][0] for s in BACKWARD_STRATEGIES}
    measured: dict[str, int | None] = {s: point.measured[s][0] for s in BACKWARD_STRATEGIES}
    lines = []
    for s in BACKWARD_STRATEGIES:
        shown = "refused by the guard" if point.refused[s][0] else "not measured"
        value = measured[s]
        if value is not None:
            shown = f"measured {format_bytes(value)}"
        lines.append(f"{s:>6}: predicted {format_bytes(predicted[s])}, {shown}")

    fig = plot_memory_points(predicted, measured, title=f"n = {n}, nnz = {nnz}, p = {p}")
    return MemoryReport({"n": n, "nnz": nnz, "p": p}, predicted, measured, "\n".join(lines), fig)


def _check_setting(where: str, n: Any, density: Any, p: Any, budget: Any) -> None:
    """Refuse a setting the memory sweep would refuse, naming the explorer's function."""
    check_int(n, "n", where, minimum=1)
    check_real(density, "density", where, low=0.0, high=1.0)
    if density == 0:  # the sweep draws round(density n^2) entries, at least one
        raise InputValueError(f"{where}: density must lie in (0, 1], got {density}")
    check_int(p, "p", where, minimum=1)
    check_int(budget, "budget", where, minimum=0)


def memory_preview(n: int, density: float, p: int, *, budget: int = LAB_BUDGET_BYTES) -> str:
    """The model's predicted cost of :func:`memory_report` at one setting, without running it.

    One line per strategy: the predicted peak extra memory, and whether the guard would
    measure it or refuse it (against :func:`~sparsegrad_lab.memory_guard.limit_bytes`,
    the limit the guard applies: the budget, or less if less is available); then the
    multiply-adds of the sampled product (``dense`` forms
    the whole :math:`n \\times n` product, :math:`n^2 p`; the others :math:`\\mathrm{nnz}\\,p`).
    Costs microseconds, so the memory explorer shows it while a slider moves.

    >>> print(memory_preview(1000, 0.01, 8, budget=4 * 2**20))
    n = 1000, nnz = 10000, p = 8 -- predicted before measuring:
     sddmm: 492.19 KiB, will be measured
    gather: 1.06 MiB, will be measured
     dense: 4.04 MiB, over the budget (4.00 MiB): will be refused
    sampled product: dense 8.00e+06 multiply-adds, sddmm and gather 8.00e+04
    Press "Measure" to run it.
    """
    _check_setting("memory_preview", n, density, p, budget)
    nnz = max(1, round(density * n * n))  # as the sweep behind memory_report counts it
    lines = [f"n = {n}, nnz = {nnz}, p = {p} -- predicted before measuring:"]
    limit = limit_bytes(budget)  # the guard's limit, read once for the three lines
    over = "the budget" if limit == budget else "what is available"
    for s in BACKWARD_STRATEGIES:
        nbytes = predict_peak_bytes(s, n=n, m=n, nnz=nnz, p=p, layout="csr")
        verdict = (
            "will be measured"
            if nbytes <= limit
            else f"over {over} ({format_bytes(limit)}): will be refused"
        )
        lines.append(f"{s:>6}: {format_bytes(nbytes)}, {verdict}")
    lines.append(
        f"sampled product: dense {n * n * p:.2e} multiply-adds, sddmm and gather {nnz * p:.2e}"
    )
    lines.append('Press "Measure" to run it.')
    return "\n".join(lines)


def memory_explorer(n: int = 2000, density: float = 0.001, p: int = 32) -> Any:
    """Sliders for ``n``, density and ``p`` and a "Measure" button over :func:`memory_report`.

    One measurement takes seconds on two cores, so moving a slider only replaces the output
    with :func:`memory_preview` (the model's prediction); the button runs the measurement.
    The explorer measures its starting setting once when built; it must lie on the sliders:
    ``100 <= n <= 20_000``, ``1e-5 <= density <= 0.1``, ``1 <= p <= 256``.

    >>> import contextlib, io
    >>> with contextlib.redirect_stdout(io.StringIO()):     # the callbacks print and plot
    ...     explorer = memory_explorer(n=200, density=0.01, p=4)
    ...     explorer.children[2].value = 8          # a preview only: nothing is measured
    ...     before = explorer.result.case["p"]
    ...     explorer.manual_button.click()          # now it measures
    >>> before, explorer.result.case["p"]
    (4, 8)
    """
    where = "memory_explorer"
    n = _slider_int(where, "n", n, _MEMORY_N)
    density = _slider_log(where, "density", density, _MEMORY_DENSITY_EXPONENT)
    p = _slider_int(where, "p", p, _MEMORY_P)
    import ipywidgets as w

    def show(n: int, density: float, p: int) -> MemoryReport:
        report = memory_report(n, density, p)
        print(report.text)
        _show_and_close(report.figure)
        return report

    explorer = w.interactive(
        show,
        {"manual": True, "manual_name": "Measure"},
        n=w.IntSlider(value=n, **_MEMORY_N, description="size n"),
        density=w.FloatLogSlider(
            value=density, base=10, **_MEMORY_DENSITY_EXPONENT, description="density"
        ),
        p=w.IntSlider(value=p, **_MEMORY_P, description="columns p"),
    )

    def preview(_change: Any) -> None:
        explorer.out.clear_output(wait=True)
        with explorer.out:
            print(memory_preview(*(control.value for control in explorer.kwargs_widgets)))

    for control in explorer.kwargs_widgets:
        control.observe(preview, names="value")
    explorer.update()  # manual mode would otherwise show nothing until the first press
    return explorer
