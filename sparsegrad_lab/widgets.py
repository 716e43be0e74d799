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

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor

from . import ops
from .errors import InputTypeError, InputValueError, MemoryBudgetError, format_bytes
from .example_matrices import MATRIX_KINDS, make_matrix
from .memory_guard import LAB_BUDGET_BYTES, check_fits, limit_bytes
from .memory_model import predict_peak_bytes, storage_bytes
from .operand_checks import check_sparse_layout, check_sparse_matrix
from .plots import (
    close_figure,
    draw_attention,
    figures_outside_pyplot,
    graph_layout,
    plot_gradient_entry,
    plot_memory_points,
    plot_recovery,
    spy,
)
from .scalar_checks import check_int, check_real
from .strategies import BACKWARD_STRATEGIES
from .sweep import sweep

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "AttentionReport",
    "EntryReport",
    "MemoryReport",
    "PatternReport",
    "RecoveryReport",
    "attention_explorer",
    "attention_report",
    "gradient_entry_explorer",
    "gradient_entry_report",
    "memory_explorer",
    "memory_preview",
    "memory_report",
    "pattern_explorer",
    "pattern_report",
    "recovery_explorer",
    "recovery_report",
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
    """Display a figure in the widget's output area once, then release it.

    A figure made without pyplot (``plots.draw_attention``'s) is sent as a PNG image: IPython
    gets its formatter for figures only once pyplot has shown one, and an explorer may run
    before any cell of its lesson has.
    """
    from IPython.display import Image, display

    if getattr(fig.canvas, "manager", None) is None:  # not pyplot's
        display(Image(_png(fig)))
    else:
        display(fig)
    close_figure(fig)


def _png(fig: Any) -> bytes:
    """The figure rendered as PNG bytes, at its own size and resolution."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _interactive(show: Callable[..., Any], *options: dict[str, Any], **controls: Any) -> Any:
    """``ipywidgets.interactive(show, *options, **controls)`` whose first view, drawn while
    its cell runs, is written straight into its output area's ``outputs``.

    A tool that runs a notebook without a browser -- nbclient, and so nbgrader's autograder
    and ``jupyter nbconvert --execute`` -- stands in for the browser's output widget: what a
    cell prints inside one is sent back to the kernel on the shell socket, while the tool
    waits on that same socket for the cell's reply. That send can swallow the reply's
    wake-up, and the tool then waits out its whole cell timeout before it reads the reply
    and goes on, the results intact (jupyter/nbclient#312; here seen as one lesson's
    autograding stalled for exactly ``Execute.timeout``, at this explorer's cell, in every
    run on a loaded machine). Captured in the kernel and put into ``outputs``, the first
    view leaves the tool nothing to send. Later views (a control moved in a browser) go
    through the output area as usual; outside IPython nothing is captured.
    """
    return _explorer_class()(show, *options, **controls)


@cache
def _explorer_class() -> type:
    """``ipywidgets.interactive`` with the first view of :func:`_interactive` (built once)."""
    import ipywidgets as w
    from IPython import get_ipython
    from IPython.utils.capture import capture_output

    class Explorer(w.interactive):  # type: ignore[misc]
        _shown = False

        def update(self, *args: Any) -> None:
            if self._shown or get_ipython() is None:
                super().update(*args)
                return
            self._shown = True
            # interactive.update's work for a first view, with no output area to clear and
            # its output captured instead of shown (an error propagates: the explorers check
            # their arguments first, so a failing first view is a bug to see).
            self.kwargs = {c._kwarg: c.get_interact_value() for c in self.kwargs_widgets}
            with capture_output() as captured:
                self.result = self.f(**self.kwargs)
            outputs: list[dict[str, Any]] = [
                {"output_type": "stream", "name": name, "text": text}
                for name, text in (("stdout", captured.stdout), ("stderr", captured.stderr))
                if text
            ]
            outputs += [
                {"output_type": "display_data", "data": shown.data, "metadata": shown.metadata}
                for shown in captured.outputs
            ]
            self.out.outputs = tuple(outputs)

    return Explorer


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
        with figures_outside_pyplot():
            report = gradient_entry_report(A, G, B, i, j, item=item)
        print(report.text)
        _show_and_close(report.figure)
        return report

    # A 2-D A has no item: ``fixed`` passes None without drawing a control for it.
    item = w.fixed(None) if b is None else w.IntSlider(min=0, max=b - 1, description="item t")
    return _interactive(
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
        with figures_outside_pyplot():
            report = pattern_report(name, n, density)
        print(report.text)
        if report.figure is not None:
            _show_and_close(report.figure)
        return report

    return _interactive(
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
        with figures_outside_pyplot():
            report = memory_report(n, density, p)
        print(report.text)
        _show_and_close(report.figure)
        return report

    explorer = _interactive(
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


# ---------------------------------------------------------------------- attention explorer


@dataclass
class AttentionReport:
    """One node's row of attention weights, listed and drawn on the graph.

    Attributes
    ----------
    node : int
    layer : str or None
        The name of the weights shown (a layer of the model), if they have one.
    neighbours : list of int
        The columns ``j`` the row stores, largest weight first (ties: smaller ``j`` first).
    weights : list of float
        :math:`\\alpha_{\\text{node}, j}` for those columns, in the same order.
    text : str
    figure : matplotlib Figure
    """

    node: int
    layer: str | None
    neighbours: list[int]
    weights: list[float] = field(repr=False)
    text: str
    figure: Any = field(repr=False)

    def _repr_png_(self) -> bytes:
        """Jupyter shows a report as its figure (drawn without pyplot, so it needs this)."""
        return _png(self.figure)


#: How many of a row's weights the report's text lists (the figure draws them all).
_LISTED_WEIGHTS = 8


def _check_attention_weights(where: str, weights: Any, name: str = "weights") -> int:
    """``n`` of a square 2-D sparse real matrix of finite weights ``>= 0``, or an error."""
    if not isinstance(weights, Tensor) or weights.layout not in (
        torch.sparse_coo,
        torch.sparse_csr,
    ):
        kind = f"layout {weights.layout}" if isinstance(weights, Tensor) else type(weights).__name__
        raise InputTypeError(f"{where}: {name} must be a sparse COO or CSR tensor, got {kind}")
    if weights.dim() != 2 or weights.shape[0] != weights.shape[1] or weights.shape[0] == 0:
        raise InputValueError(
            f"{where}: {name} must be a square matrix (n, n) with n >= 1, got shape "
            f"{tuple(weights.shape)}"
        )
    if not weights.dtype.is_floating_point:
        raise InputTypeError(f"{where}: {name} must be real floating point, got {weights.dtype}")
    values = weights.detach()
    values = (values.coalesce() if values.layout == torch.sparse_coo else values).values()
    if not bool(torch.isfinite(values).all()) or bool((values < 0).any()):
        raise InputValueError(f"{where}: {name} must be finite and >= 0 (attention weights)")
    return int(weights.shape[0])


def _check_layout_and_groups(where: str, n: int, positions: Any, groups: Any) -> None:
    """``positions`` None or dense real ``(n, 2)``; ``groups`` None or dense integers ``(n,)``."""
    if positions is not None and (
        not isinstance(positions, Tensor)
        or positions.layout != torch.strided
        or not positions.dtype.is_floating_point
        or tuple(positions.shape) != (n, 2)
    ):
        raise InputValueError(
            f"{where}: positions must be None or a dense real tensor (n, 2) = ({n}, 2), got "
            f"{positions!r:.60}"
        )
    if groups is not None and (
        not isinstance(groups, Tensor)
        or groups.layout != torch.strided
        or groups.dtype.is_floating_point
        or groups.is_complex()
        or groups.dtype == torch.bool
        or tuple(groups.shape) != (n,)
    ):
        raise InputValueError(
            f"{where}: groups must be None or a dense integer tensor (n,) = ({n},), got "
            f"{groups!r:.60}"
        )


def attention_report(
    weights: Tensor,
    node: int,
    positions: Tensor | None = None,
    *,
    groups: Tensor | None = None,
    layer: str | None = None,
) -> AttentionReport:
    """Whom ``node`` attends to: its row of attention weights, listed and drawn on the graph.

    ``weights`` holds :math:`\\alpha_{ij}` on the graph's pattern (the edge softmax of a graph
    attention layer, each row summing to 1). The text lists the row's largest weights,
    compares them with a uniform mix (:math:`1/\\deg`, what plain neighbour averaging would
    use) and, given ``groups``, says what share of the row goes to the node's own group; the
    figure (:func:`~sparsegrad_lab.plots.draw_attention`) shows where on the graph the
    attention goes. Every argument is checked before anything is drawn.

    Parameters
    ----------
    weights : Tensor
        Sparse COO or CSR ``(n, n)``, real, finite, ``>= 0``.
    node : int
        ``0 <= node < n``.
    positions : Tensor, optional
        Dense real ``(n, 2)``; default :func:`~sparsegrad_lab.plots.graph_layout` of ``weights``.
    groups : Tensor, optional
        Dense integers ``(n,)``, ``>= 0``: each node's group.
    layer : str, optional
        A name for these weights, shown in the text and the title.

    Returns
    -------
    AttentionReport

    Examples
    --------
    >>> rows = [[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [0.0, 1.0, 0.0]]
    >>> alpha = torch.tensor(rows, dtype=torch.float64).to_sparse()
    >>> report = attention_report(alpha, 1, groups=torch.tensor([0, 0, 1]))
    >>> report.neighbours, report.weights
    ([2, 1, 0], [0.5, 0.3, 0.2])
    >>> print(report.text)
    node 1 (group 0): 3 weights, itself included; largest first: 2: 0.50, 1: 0.30, 0: 0.20
    a uniform mix over its row would give each 0.33; its own group (0) gets 50%
    """
    where = "attention_report"
    n = _check_attention_weights(where, weights)
    node = check_int(node, "node", where, minimum=0, below=n)
    _check_layout_and_groups(where, n, positions, groups)
    if layer is not None and not isinstance(layer, str):
        raise InputTypeError(f"{where}: layer must be a str or None, got {type(layer).__name__}")
    if groups is not None and bool((groups < 0).any()):
        raise InputValueError(f"{where}: groups must be >= 0, one group id per node")

    coo = weights.detach()
    coo = (coo.to_sparse_coo() if coo.layout == torch.sparse_csr else coo).coalesce().cpu()
    mine = coo.indices()[0] == node
    row = sorted(
        zip(coo.indices()[1][mine].tolist(), coo.values()[mine].double().tolist(), strict=True),
        key=lambda entry: (-entry[1], entry[0]),
    )
    neighbours, alphas = [j for j, _ in row], [a for _, a in row]
    name = "" if layer is None else f"{layer}, "
    group = "" if groups is None else f" (group {int(groups[node])})"
    itself = ", itself included" if node in neighbours else ""
    listed = ", ".join(f"{j}: {a:.2f}" for j, a in row[:_LISTED_WEIGHTS])
    more = f" and {len(row) - _LISTED_WEIGHTS} more" if len(row) > _LISTED_WEIGHTS else ""
    if row:
        lines = [
            f"{name}node {node}{group}: {len(row)} weights{itself}; largest first: {listed}{more}"
        ]
        second = f"a uniform mix over its row would give each {1 / len(row):.2f}"
        if groups is not None:
            own = sum(a for j, a in row if int(groups[j]) == int(groups[node]))
            share = own / sum(alphas) if sum(alphas) > 0 else 0.0
            second += f"; its own group ({int(groups[node])}) gets {share:.0%}"
        lines.append(second)
    else:
        lines = [f"{name}node {node}{group}: its row stores no weight: it attends to nothing"]
    if positions is None:
        positions = graph_layout(coo)
    title = f"{name}node {node}: {len(row)} weights{itself}"
    figure = cast("Figure", draw_attention(coo, node, positions, groups=groups, title=title))
    return AttentionReport(node, layer, neighbours, alphas, "\n".join(lines), figure)


def attention_explorer(
    weights: Tensor | Mapping[str, Tensor],
    node: int = 0,
    *,
    positions: Tensor | None = None,
    groups: Tensor | None = None,
) -> Any:
    """A slider over the nodes (and a dropdown over layers) for :func:`attention_report`.

    ``weights`` is one matrix of attention weights, or a dict ``name -> matrix`` (one per
    layer of a model, each ``(n, n)`` on the same nodes), which adds a dropdown. The graph is
    laid out once (:func:`~sparsegrad_lab.plots.graph_layout` of the first matrix, unless
    ``positions`` is given), so a node stays where it is as the slider moves. Drawing the
    figure takes a few tenths of a second, so the slider acts on release. Every argument is
    checked before a control is built.

    >>> alpha = torch.tensor([[0.5, 0.5], [0.1, 0.9]]).to_sparse()
    >>> import contextlib, io
    >>> with contextlib.redirect_stdout(io.StringIO()):     # the callback prints and draws
    ...     explorer = attention_explorer({"layer 1": alpha, "layer 2": alpha.t()})
    ...     explorer.children[0].value = 1
    ...     explorer.children[1].value = "layer 2"
    >>> explorer.result.node, explorer.result.layer, explorer.result.neighbours
    (1, 'layer 2', [1, 0])
    """
    import ipywidgets as w

    where = "attention_explorer"
    if isinstance(weights, Mapping):
        if not weights or not all(isinstance(k, str) for k in weights):
            raise InputValueError(
                f"{where}: weights must be a matrix or a non-empty dict of str -> matrix, got "
                f"keys {list(weights)!r:.60}"
            )
        layers = dict(weights)
    else:
        layers = {"": weights}
    sizes = {
        name: _check_attention_weights(where, A, f"weights[{name!r}]" if name else "weights")
        for name, A in layers.items()
    }
    n = next(iter(sizes.values()))
    if len(set(sizes.values())) > 1:
        raise InputValueError(
            f"{where}: every layer's weights must be (n, n) on the same nodes, got sizes {sizes}"
        )
    node = check_int(node, "node", where, minimum=0, below=n)
    _check_layout_and_groups(where, n, positions, groups)
    if groups is not None and bool((groups < 0).any()):
        raise InputValueError(f"{where}: groups must be >= 0, one group id per node")
    if positions is None:
        positions = graph_layout(next(iter(layers.values())))

    def show(node: int, layer: str) -> AttentionReport:
        report = attention_report(
            layers[layer], node, positions, groups=groups, layer=layer or None
        )
        print(report.text)
        _show_and_close(report.figure)
        return report

    names = list(layers)
    choice = (
        w.fixed(names[0])
        if len(names) == 1
        else w.Dropdown(options=names, value=names[0], description="weights of")
    )
    return _interactive(
        show,
        # On release: drawing the graph takes a few tenths of a second on two cores.
        node=w.IntSlider(value=node, min=0, max=n - 1, description="node", continuous_update=False),
        layer=choice,
    )


# ----------------------------------------------------------------------- recovery explorer

#: The recovery explorer's noise slider (exponents of 10) and how many values of ``p`` its
#: curves show; :func:`recovery_report` accepts the noise levels the slider offers.
_RECOVERY_SIGMA_EXPONENT: dict[str, float] = {"min": -3, "max": 0}
_RECOVERY_CURVE_POINTS = 16


@dataclass
class RecoveryReport:
    """How well least squares recovers a sparse matrix's stored values from noisy signals.

    Attributes
    ----------
    p : int
        The number of signals.
    sigma : float
        The noise level :math:`\\sigma`.
    loss : float
        The least-squares minimum of :math:`L = \\lVert W X - Y \\rVert_F^2 / (n p)`.
    floor : float
        Its expectation, :math:`\\sigma^2 (1 - \\mathrm{nnz} / (n p))`.
    error : float
        :math:`\\lVert w - w^* \\rVert / \\lVert w^* \\rVert` of the least-squares weights.
    expected_error : float
        Its model, :math:`\\sigma \\sqrt{\\sum_i d_i / (p - d_i - 1)} / \\lVert w^* \\rVert`.
    signals : list of int
        The values of ``p`` of the figure's curves (the same draw, its first ``p`` columns).
    text : str
    figure : matplotlib Figure
    """

    p: int
    sigma: float
    loss: float
    floor: float
    error: float
    expected_error: float
    signals: list[int]
    text: str
    figure: Any = field(repr=False)


def _recovery_setup(where: str, W: Any, max_signals: Any) -> tuple[Tensor, Tensor, int, int]:
    """``W`` coalesced in float64, its row degrees, and the range ``[p_min, max_signals]``.

    ``p_min = max(deg) + 2``: every row then has more equations than unknowns, and the
    error's model (which needs :math:`p > d_i + 1`) is finite.
    """
    if not isinstance(W, Tensor):
        raise InputTypeError(f"{where}: W must be a sparse torch.Tensor, got {type(W).__name__}")
    check_sparse_layout(W, where, "W")
    if W.dim() != 2 or W.dense_dim() != 0:
        raise InputValueError(
            f"{where}: W must be one 2-D matrix (n, m) of scalar values, got shape "
            f"{tuple(W.shape)} (dense_dim {W.dense_dim()})"
        )
    if not W.dtype.is_floating_point:
        raise InputTypeError(
            f"{where}: W must hold real floating-point weights, got dtype {W.dtype}"
        )
    coo = (W.detach().to_sparse_coo() if W.layout == torch.sparse_csr else W.detach()).coalesce()
    coo = coo.to(device="cpu", dtype=torch.float64)
    n = coo.shape[0]
    if coo._nnz() == 0 or not bool(coo.values().any()):
        raise InputValueError(
            f"{where}: W {tuple(W.shape)} must store at least one nonzero weight to recover"
        )
    degree = torch.bincount(coo.indices()[0], minlength=n)
    p_min = int(degree.max()) + 2
    if max_signals is None:
        return coo, degree, p_min, max(512, 4 * p_min)
    return coo, degree, p_min, check_int(max_signals, "max_signals", where, minimum=p_min)


def _check_recovery_fits(where: str, W: Tensor, p_min: int, max_signals: int, budget: int) -> None:
    """Refuse a graph whose signals and per-row systems would exceed ``budget``."""
    (n, m), d = W.shape, p_min - 2
    # float64: the gathered rows (n, d, P) and their slice's products, X, E and Y, the
    # per-row Gram matrices (n, d, d) a few times over.
    needed = 8 * (2 * n * d * max_signals + (m + 1 + 3 * n) * max_signals + 4 * n * d * d)
    check_fits(
        needed,
        what=f"{where} on W {n} x {m} (largest row degree {d}) with up to {max_signals} signals",
        budget=budget,
        advice="use a smaller graph or fewer signals (max_signals)",
    )


@dataclass
class _RecoveryDraw:
    """One draw of signals and noise for ``W``, and the curves it gives (at ``sigma = 1``).

    What every setting of the explorer shares: ``w - w* = sigma * delta``, with ``delta`` the
    least-squares fit of the noise alone, so the curves scale with ``sigma`` and are computed
    once per draw.
    """

    W: Tensor  # coalesced COO, float64, on the CPU
    rows: Tensor
    slot: Tensor  # entry k's position among its row's entries
    X: Tensor  # (m, max_signals)
    E: Tensor  # (n, max_signals)
    neighbour_signals: Tensor  # (n, d, max_signals): row i's neighbours' signals, zero-padded
    padding: Tensor  # (n, d, d): 1 on the diagonal of the unused slots
    degree: Tensor
    signals: list[int]
    unit_loss: list[float]
    unit_error: list[float]
    unit_model: list[float]


def _expected_error(degree: Tensor, w_norm: float, p: int) -> float:
    """:math:`\\sqrt{\\sum_i d_i / (p - d_i - 1)} / \\lVert w^* \\rVert`, the error at σ = 1."""
    return math.sqrt(float((degree / (p - degree - 1)).sum())) / w_norm


def _draw_signals(
    coo: Tensor, degree: Tensor, p_min: int, max_signals: int, seed: int
) -> _RecoveryDraw:
    (n, m), nnz = coo.shape, coo._nnz()
    rows, cols = coo.indices()
    d = p_min - 2
    # Row i's neighbours in its first d_i slots, the rest pointing at an extra zero row of X:
    # every row becomes a d x d system, solved for all rows at once.
    starts = torch.cumsum(degree, 0) - degree
    slot = torch.arange(nnz) - starts[rows]
    neighbours = torch.full((n, d), m, dtype=torch.long)
    neighbours[rows, slot] = cols
    padding = torch.diag_embed((neighbours == m).to(torch.float64))
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(m, max_signals, generator=gen, dtype=torch.float64)
    E = torch.randn(n, max_signals, generator=gen, dtype=torch.float64)
    neighbour_signals = torch.cat([X, X.new_zeros(1, max_signals)])[neighbours]

    # The curves: p signals are the first p columns, so each p of the grid adds a slice to
    # the Gram matrices of the one before, and costs one batched solve.
    w_norm = float(coo.values().norm())
    grid = torch.logspace(math.log10(p_min), math.log10(max_signals), _RECOVERY_CURVE_POINTS)
    signals = sorted({int(q) for q in grid.round().long().tolist()} | {p_min, max_signals})
    gram, rhs = padding.clone(), torch.zeros(n, d, dtype=torch.float64)
    noise_energy, done = torch.zeros(n, dtype=torch.float64), 0
    unit_loss, unit_error = [], []
    for q in signals:
        A_q, E_q = neighbour_signals[:, :, done:q], E[:, done:q]
        gram += A_q @ A_q.mT
        rhs += (A_q @ E_q.unsqueeze(-1)).squeeze(-1)
        noise_energy += (E_q * E_q).sum(1)
        done = q
        delta = torch.linalg.solve(gram, rhs)
        # The residual of a least-squares fit: what it leaves of the noise's energy.
        unit_loss.append(float((noise_energy - (delta * rhs).sum(1)).sum()) / (n * q))
        unit_error.append(float(delta.norm()) / w_norm)
    unit_model = [_expected_error(degree, w_norm, q) for q in signals]
    curves = (signals, unit_loss, unit_error, unit_model)
    return _RecoveryDraw(coo, rows, slot, X, E, neighbour_signals, padding, degree, *curves)


def _recovery_at(draw: _RecoveryDraw, p: int, sigma: float) -> RecoveryReport:
    """The report of one setting of a checked draw: ``p`` signals, noise ``sigma``."""
    (n, _), nnz = draw.W.shape, draw.W._nnz()
    w_true = draw.W.values()
    # The setting itself, recovered from Y as training would see it.
    A = draw.neighbour_signals[:, :, :p]
    Y = torch.sparse.mm(draw.W, draw.X[:, :p]) + sigma * draw.E[:, :p]
    w_rows = torch.linalg.solve(A @ A.mT + draw.padding, (A @ Y.unsqueeze(-1)).squeeze(-1))
    loss = float((((w_rows.unsqueeze(-1) * A).sum(1) - Y) ** 2).mean())
    error = float((w_rows[draw.rows, draw.slot] - w_true).norm() / w_true.norm())
    floor = sigma**2 * (1 - nnz / (n * p))
    expected_error = sigma * _expected_error(draw.degree, float(w_true.norm()), p)
    # The error axis spans every noise level offered: a change of sigma moves the curve.
    at_one = [*draw.unit_error, *draw.unit_model, error / sigma]
    low, high = 10 ** _RECOVERY_SIGMA_EXPONENT["min"], 10 ** _RECOVERY_SIGMA_EXPONENT["max"]
    figure = plot_recovery(
        draw.signals,
        [sigma**2 * v for v in draw.unit_loss],
        [sigma * v for v in draw.unit_error],
        floor=[sigma**2 * (1 - nnz / (n * q)) for q in draw.signals],
        expected_error=[sigma * v for v in draw.unit_model],
        noise_variance=sigma**2,
        chosen=(p, loss, error),
        error_limits=(0.5 * low * min(at_one), 2.0 * high * max(at_one)),
    )
    text = (
        f"p = {p} signals, σ = {sigma:.3g}: least-squares loss {loss:.3g}, noise floor "
        f"σ²(1 − nnz/(np)) = {floor:.3g}; relative error of the recovered weights "
        f"{error:.3g} (model {expected_error:.3g})"
    )
    return RecoveryReport(p, sigma, loss, floor, error, expected_error, draw.signals, text, figure)


def recovery_report(
    W: Tensor,
    p: int,
    sigma: float,
    *,
    seed: int = 0,
    max_signals: int | None = None,
    budget: int = LAB_BUDGET_BYTES,
) -> RecoveryReport:
    """Recover ``W``'s stored values from ``p`` noisy signals by least squares, and judge them.

    ``W`` (``n x m``, ``nnz`` stored entries :math:`w^*`, row ``i`` storing :math:`d_i`)
    makes the data :math:`Y = W X + \\sigma E`, with ``X`` (``m x p``) and ``E``
    (``n x p``) standard normal, drawn with ``seed`` (``p`` signals are the first ``p``
    columns of one draw of ``max_signals``). Row ``i``'s weights minimise
    :math:`\\lVert X_{\\mathcal N(i)}^{\\mathsf T} v - y_i \\rVert^2`, what training on
    :math:`L = \\lVert W X - Y \\rVert_F^2 / (n p)` converges to. Then

    .. math::

        \\mathbb E[L_{\\min}] = \\sigma^2 \\Big(1 - \\frac{\\mathrm{nnz}}{n p}\\Big), \\qquad
        \\mathbb E \\lVert w - w^* \\rVert^2 = \\sigma^2 \\sum_i \\frac{d_i}{p - d_i - 1},

    the first because a fit of :math:`d_i` parameters to ``p`` observations absorbs
    :math:`d_i` of their ``p`` noise dimensions, the second because
    :math:`w_i - w^*_i = \\sigma (X_{\\mathcal N(i)} X_{\\mathcal N(i)}^{\\mathsf T})^{-1}
    X_{\\mathcal N(i)} e_i` and the mean of an inverse Wishart matrix is
    :math:`I / (p - d_i - 1)`. The figure (:func:`~sparsegrad_lab.plots.plot_recovery`)
    draws both against ``p``, for this draw and as the model; its error axis spans every
    noise level in ``[1e-3, 1]``, so a change of ``sigma`` moves the curve, not the axis.

    Parameters
    ----------
    W : Tensor
        Sparse COO or CSR, 2-D, real floating point: the true weights.
    p : int
        Signals, ``max(d_i) + 2 <= p <= max_signals``.
    sigma : float
        Noise level, ``1e-3 <= sigma <= 1``.
    seed : int, default 0
    max_signals : int, optional
        The most signals drawn; default ``max(512, 4 (max(d_i) + 2))``.
    budget : int
        The memory guard's budget for the draw and the per-row systems.

    Returns
    -------
    RecoveryReport

    Examples
    --------
    >>> from sparsegrad_lab.example_matrices import karate_club
    >>> W = karate_club()                          # row degrees up to 17
    >>> report = recovery_report(W, 64, 0.1)
    >>> report.signals[0], round(report.floor, 6)
    (19, 0.009283)
    >>> 0.5 < report.error / report.expected_error < 2
    True
    """
    where = "recovery_report"
    coo, degree, p_min, max_signals = _recovery_setup(where, W, max_signals)
    p = check_int(p, "p", where)
    if not p_min <= p <= max_signals:
        raise InputValueError(
            f"{where}: p must lie in [{p_min}, {max_signals}] (at least the largest row degree "
            f"+ 2 = {p_min}, so that every row has more equations than unknowns), got {p}"
        )
    sigma = _slider_log(where, "sigma", sigma, _RECOVERY_SIGMA_EXPONENT)
    seed = check_int(seed, "seed", where, minimum=0)
    check_int(budget, "budget", where, minimum=0)
    _check_recovery_fits(where, coo, p_min, max_signals, budget)

    return _recovery_at(_draw_signals(coo, degree, p_min, max_signals, seed), p, sigma)


def recovery_explorer(W: Tensor, p: int = 64, sigma: float = 0.02, *, seed: int = 0) -> Any:
    """Sliders for the number of signals ``p`` and the noise ``sigma`` over :func:`recovery_report`.

    ``p`` runs from the largest row degree + 2 to ``max(512, 4 (max(d_i) + 2))``, ``sigma``
    from ``1e-3`` to ``1`` (log scale); the starting values must lie there, and ``W`` is
    checked (and its draw checked against the memory guard) before any slider is built.
    The signals and the curves are drawn once, when the explorer is built; a setting then
    costs one least-squares solve per row and a two-panel figure, a few tenths of a second
    on two cores, so both sliders act on release.

    >>> from sparsegrad_lab.example_matrices import karate_club
    >>> import contextlib, io
    >>> with contextlib.redirect_stdout(io.StringIO()):     # the callback prints and plots
    ...     explorer = recovery_explorer(karate_club(), p=32)
    ...     explorer.children[0].value = 128
    >>> explorer.result.p, explorer.result.error < 0.1
    (128, True)
    """
    where = "recovery_explorer"
    coo, degree, p_min, max_signals = _recovery_setup(where, W, None)
    p = _slider_int(where, "p", p, {"min": p_min, "max": max_signals})
    sigma = _slider_log(where, "sigma", sigma, _RECOVERY_SIGMA_EXPONENT)
    seed = check_int(seed, "seed", where, minimum=0)
    _check_recovery_fits(where, coo, p_min, max_signals, LAB_BUDGET_BYTES)
    draw = _draw_signals(coo, degree, p_min, max_signals, seed)  # once: every setting's curves
    import ipywidgets as w

    def show(p: int, sigma: float) -> RecoveryReport:
        report = _recovery_at(draw, p, sigma)
        print(report.text)
        _show_and_close(report.figure)
        return report

    return _interactive(
        show,
        p=w.IntSlider(
            value=p, min=p_min, max=max_signals, description="signals p", continuous_update=False
        ),
        sigma=w.FloatLogSlider(
            value=sigma,
            base=10,
            **_RECOVERY_SIGMA_EXPONENT,
            description="noise σ",
            continuous_update=False,
        ),
    )
