"""Figures for the lessons and the benchmark: spy plots, storage diagrams, memory and timing
curves, the memory explorer's bars and the benchmark's summary.

The only module of the package that imports matplotlib. Every function draws into the
``ax`` it is given and returns that Axes, or makes a new figure and returns the
:class:`~matplotlib.figure.Figure`; none calls ``plt.show()``, so a notebook decides when
to display and a test can close what it made. Figures come from ``pyplot`` so that
Jupyter's inline backend shows them at the end of a cell.

>>> import matplotlib
>>> matplotlib.use("Agg")
>>> import matplotlib.pyplot as plt
>>> fig = spy(torch.eye(4).to_sparse())
>>> fig.axes[0].get_xlabel(), fig.axes[0].get_ylabel()
('column j', 'row i')
>>> plt.close(fig)
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import numbers
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor

from .errors import InputTypeError, InputValueError
from .implementations import IMPLEMENTATIONS
from .memory_model import storage_bytes
from .ops import sparsity_pattern
from .pattern import SparsityPattern
from .scalar_checks import check_int, check_real

if TYPE_CHECKING:
    from .benchmark import Result

__all__ = [
    "close_figure",
    "draw_attention",
    "draw_batched_product",
    "draw_storage",
    "figures_outside_pyplot",
    "graph_layout",
    "plot_benchmark",
    "plot_gradient_entry",
    "plot_memory_curves",
    "plot_memory_points",
    "plot_recovery",
    "plot_timings",
    "spy",
    "use_lesson_style",
]

#: Above this many stored entries :func:`spy` bins the matrix into an image instead of
#: drawing one marker per entry (a million markers take seconds and megabytes of output).
MAX_MARKERS = 200_000
_SPY_BINS = 400  # raster resolution of a binned spy plot, per axis


# --------------------------------------------------------------------------- helpers


_OUTSIDE_PYPLOT: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "sparsegrad_lab_figures_outside_pyplot", default=False
)


@contextlib.contextmanager
def figures_outside_pyplot() -> Iterator[None]:
    """Within the block, new figures are plain :class:`~matplotlib.figure.Figure` objects
    that pyplot never holds, so nothing but their caller can show or flush them.

    The explorers' callbacks draw inside it: with ipykernel 7 a callback runs on a subshell
    while the inline backend may flush pyplot's open figures, which could show a figure half
    drawn (a blank image). A figure made here is shown by whoever asked for it, once.

    >>> with figures_outside_pyplot():
    ...     fig = spy(torch.eye(3).to_sparse())
    >>> fig.canvas.manager is None  # no pyplot manager: pyplot never holds it
    True
    """
    token = _OUTSIDE_PYPLOT.set(True)
    try:
        yield
    finally:
        _OUTSIDE_PYPLOT.reset(token)


def _canvas(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure | None, Axes]:
    if ax is None:
        if _OUTSIDE_PYPLOT.get():
            fig = Figure(figsize=figsize, layout="constrained")
            return fig, fig.add_subplot()
        fig, new_ax = plt.subplots(figsize=figsize, layout="constrained")
        return fig, new_ax
    if not isinstance(ax, Axes):
        raise InputTypeError(f"ax must be a matplotlib Axes or None, got {type(ax).__name__}")
    return None, ax


def use_lesson_style() -> None:
    """Give every figure made from now on the lessons' size, resolution and font size.

    Called by :func:`sparsegrad_lab.notebook.setup`, so the five lessons look alike.
    """
    plt.rcParams.update({"figure.figsize": (6.4, 4.0), "figure.dpi": 80, "font.size": 10})


def close_figure(fig: Figure) -> None:
    """Release a figure made here (pyplot keeps every figure it made until closed).

    Only a :class:`~matplotlib.figure.Figure`: ``plt.close`` would also take ``"all"`` or a
    number, and close figures this call was never given.

    >>> import matplotlib; matplotlib.use("Agg")
    >>> close_figure("all")
    Traceback (most recent call last):
    ...
    sparsegrad_lab.errors.InputTypeError: close_figure: fig must be a matplotlib Figure, got str
    """
    if not isinstance(fig, Figure):
        raise InputTypeError(
            f"close_figure: fig must be a matplotlib Figure, got {type(fig).__name__}"
        )
    plt.close(fig)


def _colour(k: int) -> str:
    """The ``k``-th colour of the property cycle (as ``"C0"``, ``"C1"``, ... wrapping)."""
    return f"C{k % len(plt.rcParams['axes.prop_cycle'])}"


def _entries(func: str, A: Any) -> tuple[SparsityPattern, Tensor]:
    """Positions (block-diagonal view, CSR order) and values of ``A``'s stored entries."""
    if not isinstance(A, Tensor):
        raise InputTypeError(f"{func}: A must be a torch.Tensor, got {type(A).__name__}")
    if A.dim() not in (2, 3):
        raise InputValueError(
            f"{func}: A must be 2-D (n, m) or batched 3-D (b, n, m), got shape {tuple(A.shape)}"
        )
    A = A.detach()
    if A.layout == torch.strided:
        A = A.to_sparse()
    elif A.layout not in (torch.sparse_coo, torch.sparse_csr):
        raise InputTypeError(f"{func}: A must be strided, sparse COO or sparse CSR, got {A.layout}")
    if A.dense_dim() != 0:
        raise InputValueError(f"{func}: A must have scalar values, got dense_dim={A.dense_dim()}")
    # The public pattern (its indices checked); the values of a coalesced COO or a CSR A
    # come in the same order as the pattern's entries.
    pattern = sparsity_pattern(A)
    if A.layout == torch.sparse_coo:
        A = A.coalesce()
    return pattern, A.values().reshape(-1)


def _as_coo(A: Tensor) -> Tensor:
    if A.layout == torch.sparse_csr:
        return A.to_sparse_coo()
    return A.to_sparse() if A.layout == torch.strided else A


def _label(ax: Axes, x: float, y: float, text: str, **style: Any) -> None:
    ax.text(x, y, text, **{"ha": "center", "va": "center", "fontsize": 9, **style})


def _coordinates(pattern: SparsityPattern) -> tuple[Tensor, Tensor, int, tuple[int, int]]:
    """Rows and columns (int64) of the stored entries, the batch size and the item shape."""
    return pattern.row.long(), pattern.col.long(), pattern.batch, pattern.block_shape


def _stats(nnz: int, batch: int, block_shape: tuple[int, int]) -> str:
    n, m = block_shape
    positions = batch * n * m
    if positions == 0:  # a zero dimension: no position to store, no density to give
        return f"nnz = {nnz:,}, no positions"
    return f"nnz = {nnz:,}, density = {nnz / positions:.3g}"


def _matrix_limits(ax: Axes, N: int, M: int) -> None:
    """Limits of an ``N x M`` matrix drawn one unit per cell, row 0 at the top.

    An empty dimension keeps one cell's span without ticks: matplotlib cannot show a span of
    zero (it warns and widens it), and a tick would name a row or column that does not exist.
    """
    ax.set_xlim(-0.5, max(M, 1) - 0.5)
    ax.set_ylim(max(N, 1) - 0.5, -0.5)
    if M == 0:
        ax.set_xticks([])
    if N == 0:
        ax.set_yticks([])


# --------------------------------------------------------------------------- spy plots


def spy(
    A: Tensor,
    ax: Axes | None = None,
    title: str | None = None,
    markersize: float | None = None,
    *,
    max_markers: int = MAX_MARKERS,
) -> Figure | Axes:
    """Draw where ``A`` stores entries: one square marker per stored position.

    Row ``i`` runs down and column ``j`` across, as in the matrix. A batch ``(b, n, m)`` is
    drawn as the ``(b n) x (b m)`` block-diagonal matrix it stands for, with each item's
    block outlined. Above ``max_markers`` entries the matrix is binned into a
    ``400 x 400`` image whose grey level is the fraction of stored positions per bin. A
    matrix with a zero dimension -- ``(0, m)``, ``(n, 0)``, an empty batch ``(0, n, m)`` --
    stores nothing: its plot is empty, titled with its shape, and the empty axis spans one
    cell without ticks.

    Parameters
    ----------
    A : Tensor
        Sparse COO or CSR (or dense: its nonzeros), ``(n, m)`` or ``(b, n, m)``.
    ax : Axes, optional
        Where to draw; a new figure when omitted.
    title : str, optional
        First title line; the second always gives nnz and density.
    markersize : float, optional
        Marker size in points; by default about one matrix cell.
    max_markers : int, default 200_000
        Above this many stored entries the plot is binned; ``>= 0``.

    Returns
    -------
    Figure or Axes
        The new figure, or ``ax`` when one was given.

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> fig, ax = plt.subplots()
    >>> spy(torch.eye(5).to_sparse(), ax=ax) is ax, ax.get_title()
    (True, 'nnz = 5, density = 0.2')
    >>> ax.clear()
    >>> spy(torch.zeros(0, 5).to_sparse(), ax=ax).get_title()
    '0 x 5: nnz = 0, no positions'
    >>> plt.close(fig)
    """
    max_markers = check_int(max_markers, "max_markers", "spy", minimum=0)
    if markersize is not None:
        markersize = check_real(markersize, "markersize", "spy", low=0.0, high=sys.float_info.max)
    pattern, _ = _entries("spy", A)
    row, col, batch, (n, m) = _coordinates(pattern)
    fig, ax = _canvas(ax, (5.0, 5.0))
    N, M = batch * n, batch * m
    nnz, binned = int(row.numel()), ""
    if nnz > max_markers:
        bins_r, bins_c = min(N, _SPY_BINS), min(M, _SPY_BINS)
        cell = (row * bins_r // N) * bins_c + col * bins_c // M
        counts = torch.bincount(cell, minlength=bins_r * bins_c).reshape(bins_r, bins_c)
        fill = counts.double() / ((N / bins_r) * (M / bins_c))
        extent = (-0.5, M - 0.5, N - 0.5, -0.5)
        ax.imshow(fill.numpy(), cmap="Greys", vmin=0.0, extent=extent, interpolation="nearest")
        binned = f", binned {bins_r} x {bins_c}"
    else:
        if markersize is None:
            # About one cell of a 5-inch (360-point) axes, never below half a point.
            markersize = min(6.0, max(0.5, 300.0 / max(N, M, 1)))
        ax.plot(
            col.numpy(),
            row.numpy(),
            linestyle="none",
            marker="s",
            markersize=markersize,
            markeredgewidth=0,
            color=_colour(0),
        )
    if batch > 1 and n * m > 0:  # an empty item has no block to outline
        for t in range(batch):
            ax.add_patch(
                Rectangle(
                    (t * m - 0.5, t * n - 0.5),
                    m,
                    n,
                    fill=False,
                    linestyle="--",
                    linewidth=0.8,
                    edgecolor="0.5",
                )
            )
    _matrix_limits(ax, N, M)
    ax.set_aspect("equal" if max(N, M) <= 20 * min(N, M) else "auto")
    ax.set_xlabel("column j")
    ax.set_ylabel("row i")
    stats = _stats(nnz, batch, (n, m)) + binned
    if batch != 1:
        stats = f"{batch} blocks of {n} x {m}: {stats}"
    elif n * m == 0:
        stats = f"{n} x {m}: {stats}"
    ax.set_title(stats if title is None else f"{title}\n{stats}")
    return ax if fig is None else fig


def draw_batched_product(As: Tensor | Sequence[Tensor], ax: Axes | None = None) -> Figure | Axes:
    """Draw the batching trick: ``diag(A_1, ..., A_b) @ vstack(B_t) = vstack(A_t B_t)``.

    A batch of ``b`` matrices ``A_t`` (``n x m``) multiplies a batch ``B_t`` (``m x p``) as
    one ``(b n) x (b m)`` block-diagonal sparse matrix times the ``(b m) x p`` stack of the
    ``B_t``: block row ``t`` of the product only meets block ``t`` of the stack. Each item's
    entries get their own colour, and the stacked ``B`` and ``C`` are drawn to the right.

    Parameters
    ----------
    As : Tensor or sequence of Tensor
        A batched ``(b, n, m)`` tensor (sparse or dense), or ``b`` matrices of one shape;
        at least one item, of at least one row and one column (:func:`spy` draws an empty
        matrix).
    ax : Axes, optional

    Returns
    -------
    Figure or Axes

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> fig = draw_batched_product([torch.eye(3), torch.ones(3, 3)])
    >>> len(fig.axes[0].lines), len(fig.axes[0].patches)
    (2, 6)
    >>> plt.close(fig)
    """
    if isinstance(As, Tensor):
        if As.dim() != 3:
            raise InputValueError(
                f"draw_batched_product: As must be 3-D (b, n, m), got shape {tuple(As.shape)}"
            )
        batched = As
    elif isinstance(As, Sequence) and len(As) > 0 and all(isinstance(a, Tensor) for a in As):
        shapes = {tuple(a.shape) for a in As}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise InputValueError(
                f"draw_batched_product: the matrices must be 2-D and of one shape, got {shapes}"
            )
        # Stacked as COO, not dense: an explicitly stored zero is still an entry to draw.
        batched = torch.stack([_as_coo(a.detach()) for a in As])
    else:
        raise InputTypeError(
            "draw_batched_product: As must be a (b, n, m) tensor or a non-empty sequence of "
            f"2-D tensors, got {type(As).__name__}"
        )
    if 0 in batched.shape:
        # The diagram's blocks, labels and stacks are sized by b, n and m: with one of them 0
        # there is no block to draw and no product to show.
        raise InputValueError(
            "draw_batched_product: As needs at least one item of at least one row and one "
            f"column, got shape {tuple(batched.shape)}; spy(As) draws an empty matrix"
        )
    pattern, _ = _entries("draw_batched_product", batched)
    row, col, batch, (n, m) = _coordinates(pattern)
    fig, ax = _canvas(ax, (7.0, 5.0))
    N, M = batch * n, batch * m
    gap, width = max(1.0, 0.08 * M), max(1.0, 0.15 * M)
    b_left = M - 0.5 + gap
    c_left = b_left + width + gap
    item = row // n
    size = min(6.0, max(0.5, 300.0 / max(N, M)))
    for t in range(batch):
        colour, mine = _colour(t), item == t
        ax.plot(
            col[mine].numpy(),
            row[mine].numpy(),
            linestyle="none",
            marker="s",
            markersize=size,
            markeredgewidth=0,
            color=colour,
        )
        ax.add_patch(Rectangle((t * m - 0.5, t * n - 0.5), m, n, fill=False, edgecolor=colour))
        # Top-right corner of the block: off the diagonal, where entries are rarest.
        _label(
            ax,
            t * m + m - 0.7,
            t * n - 0.3,
            f"$A_{{{t + 1}}}$",
            ha="right",
            va="top",
            bbox={"facecolor": "white", "alpha": 0.8, "linewidth": 0},
        )
        ax.add_patch(Rectangle((b_left, t * m - 0.5), width, m, color=colour, alpha=0.3))
        _label(ax, b_left + width / 2, t * m + m / 2 - 0.5, f"$B_{{{t + 1}}}$")
        ax.add_patch(Rectangle((c_left, t * n - 0.5), width, n, color=colour, alpha=0.3))
        _label(ax, c_left + width / 2, t * n + n / 2 - 0.5, f"$A_{{{t + 1}}} B_{{{t + 1}}}$")
    ax.text(b_left - gap / 2, N / 2, "@", ha="center", va="center", fontsize=14)
    ax.text(c_left - gap / 2, N / 2, "=", ha="center", va="center", fontsize=14)
    ax.set_xlim(-0.5, c_left + width + 0.5)
    ax.set_ylim(max(N, M) - 0.5, -0.5)
    ax.set_aspect("equal")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # matrix columns are whole numbers
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xticks([tick for tick in ax.get_xticks() if 0 <= tick <= M - 1])
    ax.set_xlabel(f"column j of the {N} x {M} block-diagonal matrix")
    ax.set_ylabel("row i")
    stats = _stats(int(row.numel()), batch, (n, m))
    ax.set_title(f"{batch} items as one {N} x {M} product, no loop over the batch\n{stats}")
    return ax if fig is None else fig


# --------------------------------------------------------------------------- storage diagram

_STORAGE_COLOURS = {"row": "#c6dbef", "col": "#fdd0a2", "values": "#c7e9c0", "crow": "#dadaeb"}
_MAX_STORAGE_ENTRIES = 30


def _format_value(v: complex | float) -> str:
    if isinstance(v, complex):
        return f"{v.real:.2g}{v.imag:+.2g}j"
    return f"{v:.3g}"


def draw_storage(A: Tensor, ax: Axes | None = None) -> Figure | Axes:
    """Draw a small matrix and the arrays its COO and CSR forms store, with their bytes.

    COO keeps three arrays of length nnz (``row``, ``col``, ``values``); CSR replaces
    ``row`` by ``crow`` of length :math:`n + 1`, where row ``i`` owns the entries
    ``crow[i]`` to ``crow[i+1] - 1``. Indices are int64 (8 bytes), as torch builds them.
    The title compares the totals with the dense array (see
    :func:`sparsegrad_lab.memory_model.storage_bytes`).

    Parameters
    ----------
    A : Tensor
        2-D, sparse COO or CSR (or dense), at most 30 rows, 30 columns and 30 entries.
    ax : Axes, optional

    Returns
    -------
    Figure or Axes

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> fig = draw_storage(torch.tensor([[0.0, 2.0], [3.0, 0.0]]).to_sparse())
    >>> fig.axes[0].get_title()
    'COO 40 B · CSR 48 B · dense 16 B'
    >>> plt.close(fig)
    """
    pattern, values = _entries("draw_storage", A)
    row, col, batch, (n, m) = _coordinates(pattern)
    if batch != 1 or max(n, m, row.numel()) > _MAX_STORAGE_ENTRIES:
        raise InputValueError(
            f"draw_storage: A must be 2-D with at most {_MAX_STORAGE_ENTRIES} rows, columns "
            f"and stored entries, got shape {tuple(A.shape)} with {row.numel()} entries"
        )
    crow = pattern.crow.long()
    value_bytes = A.element_size()
    arrays = [
        ("COO", "row", row.tolist(), 8),
        ("COO", "col", col.tolist(), 8),
        ("COO", "values", values.tolist(), value_bytes),
        ("CSR", "crow", crow.tolist(), 8),
        ("CSR", "col", col.tolist(), 8),
        ("CSR", "values", values.tolist(), value_bytes),
    ]
    width = max(m, n + 1, row.numel(), 1)
    height = n + 1 + len(arrays) + 2  # matrix, a blank line, arrays with a header gap
    fig, ax = _canvas(ax, (min(14.0, 2.8 + 0.45 * width), min(10.0, 0.8 + 0.45 * height)))

    dense = A.detach().to_dense()
    stored = set(zip(row.tolist(), col.tolist(), strict=True))
    for i in range(n):
        for j in range(m):
            on = (i, j) in stored
            ax.add_patch(
                Rectangle(
                    (j, i),
                    0.95,
                    0.95,
                    facecolor="#fee391" if on else "white",
                    edgecolor="0.4",
                    linewidth=0.8,
                )
            )
            text = _format_value(dense[i, j].item()) if on else "0"
            ax.text(
                j + 0.475,
                i + 0.5,
                text,
                ha="center",
                va="center",
                fontsize=8,
                color="black" if on else "0.6",
            )
    ax.text(-0.3, n / 2, f"A ({n} x {m})", ha="right", va="center", fontsize=9)

    y = n + 1.0
    previous = None
    for form, name, entries, item_bytes in arrays:
        if form != previous:
            y += 0.3
            previous = form
        for k, entry in enumerate(entries):
            ax.add_patch(
                Rectangle(
                    (k, y),
                    0.95,
                    0.95,
                    facecolor=_STORAGE_COLOURS[name],
                    edgecolor="0.4",
                    linewidth=0.8,
                )
            )
            ax.text(k + 0.475, y + 0.5, _format_value(entry), ha="center", va="center", fontsize=8)
        ax.text(-0.3, y + 0.5, f"{form} {name}", ha="right", va="center", fontsize=9)
        ax.text(
            width + 0.3,
            y + 0.5,
            f"{len(entries)} x {item_bytes} B = {len(entries) * item_bytes} B",
            ha="left",
            va="center",
            fontsize=8,
        )
        y += 1.0

    ax.set_xlim(-3.5, width + 4.0)
    ax.set_ylim(y + 0.2, -0.2)
    ax.set_aspect("equal")
    ax.axis("off")
    totals = storage_bytes(A)
    ax.set_title(f"COO {totals['coo']} B · CSR {totals['csr']} B · dense {totals['dense']} B")
    return ax if fig is None else fig


# --------------------------------------------------------------------------- curves


def _floats(
    func: str, name: str, values: Any, length: int | None, *, spread: bool = False
) -> list[float]:
    """``values`` as floats (``None`` -> NaN, a gap), checked to have ``length`` of them.

    ``spread``: the values are error-bar half-widths, which matplotlib refuses negative.
    """
    if isinstance(values, Tensor) and values.dim() == 1:
        values = values.tolist()
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise InputTypeError(
            f"{func}: {name} must be a sequence of numbers, got {type(values).__name__}"
        )
    out = []
    for k, v in enumerate(values):
        if v is None:
            out.append(math.nan)
        elif isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise InputTypeError(
                f"{func}: {name} must hold numbers (None for a gap), got "
                f"{type(v).__name__} at position {k}"
            )
        elif spread and v < 0:
            raise InputValueError(
                f"{func}: {name} must be >= 0 (a spread), got {v} at position {k}"
            )
        else:
            out.append(float(v))
    if length is not None and len(out) != length:
        raise InputValueError(f"{func}: {name} has {len(out)} values, but x has {length}")
    return out


def _curves(
    func: str,
    x: Sequence[float],
    series: Mapping[str, Sequence[float | None]],
    model: Mapping[str, Sequence[float | None]] | None,
    *,
    xlabel: str,
    ylabel: str,
    ax: Axes | None,
    logx: bool,
    logy: bool,
    title: str | None,
    errors: Mapping[str, Sequence[float]] | None = None,
) -> Figure | Axes:
    xs = _floats(func, "x", x, None)
    if not isinstance(series, Mapping) or not series:
        raise InputTypeError(f"{func}: series must be a non-empty dict name -> values")
    for kind, curves in (("model", model), ("errors", errors)):
        if curves is not None and not isinstance(curves, Mapping):
            raise InputTypeError(
                f"{func}: {kind} must be a dict name -> values or None, got {type(curves).__name__}"
            )
    # Everything is checked before a figure exists, so a refused call leaves none open.
    given = {"series": series, "model": model or {}, "errors": errors or {}}
    if unknown := set(given["errors"]) - set(series):
        raise InputValueError(f"{func}: errors name series {sorted(unknown)} that are not drawn")
    ys = {
        (kind, name): _floats(func, f"{kind}[{name!r}]", values, len(xs), spread=kind == "errors")
        for kind, curves in given.items()
        for name, values in curves.items()
    }
    fig, ax = _canvas(ax, (6.0, 4.0))
    names = list(series) + [name for name in given["model"] if name not in series]
    for k, name in enumerate(names):
        colour = _colour(k)
        if ("series", name) in ys:
            measured = ys["series", name]
            ax.plot(
                xs, measured, linestyle="none", marker="o", color=colour, label=f"{name} (measured)"
            )
            if ("errors", name) in ys:
                ax.errorbar(xs, measured, yerr=ys["errors", name], fmt="none", ecolor=colour)
        if ("model", name) in ys:
            ax.plot(xs, ys["model", name], linestyle="-", color=colour, label=f"{name} (model)")
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return ax if fig is None else fig


def plot_memory_curves(
    x: Sequence[float],
    series: Mapping[str, Sequence[float | None]],
    model: Mapping[str, Sequence[float | None]] | None = None,
    *,
    xlabel: str,
    ylabel: str = "peak extra memory (MiB)",
    ax: Axes | None = None,
    logx: bool = True,
    logy: bool = True,
    title: str | None = None,
) -> Figure | Axes:
    """Measured peak memory as markers, the analytic model as lines of the same colour.

    Parameters
    ----------
    x : sequence of float
        The swept quantity (n, density, p, ...), named with its unit by ``xlabel``.
    series : dict of str to sequence of float
        Measurements per strategy, one per ``x``; ``None`` or NaN for a case not run
        (refused by the memory guard), which leaves a gap.
    model : dict of str to sequence of float, optional
        The analytic prediction at the same ``x``; a key shared with ``series`` shares its
        colour.
    xlabel, ylabel : str
        Axis labels, with units.
    ax : Axes, optional
    logx, logy : bool, default True
        Log axes; a zero or negative value cannot appear on a log axis and is left out.
    title : str, optional

    Returns
    -------
    Figure or Axes

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> fig = plot_memory_curves([1e3, 1e4], {"dense": [4.0, 390.0]}, {"dense": [3.8, 381.5]},
    ...                          xlabel="n (rows of A)")
    >>> [line.get_label() for line in fig.axes[0].lines]
    ['dense (measured)', 'dense (model)']
    >>> plt.close(fig)
    """
    return _curves(
        "plot_memory_curves",
        x,
        series,
        model,
        xlabel=xlabel,
        ylabel=ylabel,
        ax=ax,
        logx=logx,
        logy=logy,
        title=title,
    )


def plot_timings(
    x: Sequence[float],
    series: Mapping[str, Sequence[float | None]],
    model: Mapping[str, Sequence[float | None]] | None = None,
    *,
    xlabel: str,
    ylabel: str = "time per step (ms)",
    errors: Mapping[str, Sequence[float]] | None = None,
    ax: Axes | None = None,
    logx: bool = True,
    logy: bool = True,
    title: str | None = None,
) -> Figure | Axes:
    """Measured times as markers (with optional error bars), a model as lines.

    As :func:`plot_memory_curves`; ``errors`` maps a series name to a symmetric spread per
    point (for example half the inter-quartile range), drawn as vertical bars.

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> fig = plot_timings([10, 100], {"sddmm": [0.2, 1.9]}, xlabel="p (columns of B)",
    ...                    errors={"sddmm": [0.01, 0.1]})
    >>> fig.axes[0].get_ylabel(), len(fig.axes[0].containers)
    ('time per step (ms)', 1)
    >>> plt.close(fig)
    """
    return _curves(
        "plot_timings",
        x,
        series,
        model,
        xlabel=xlabel,
        ylabel=ylabel,
        ax=ax,
        logx=logx,
        logy=logy,
        title=title,
        errors=errors,
    )


# --------------------------------------------------------------------------- one gradient entry


def plot_gradient_entry(
    G: Tensor, B: Tensor, i: int, j: int, ax: Axes | None = None
) -> Figure | Axes:
    """Show the two rows whose dot product is :math:`\\partial L / \\partial A_{ij}`.

    For :math:`C = A B` with upstream gradient :math:`G = \\partial L / \\partial C`
    (``n x p``) and ``B`` (``m x p``),

    .. math::

        \\frac{\\partial L}{\\partial A_{ij}} = \\sum_{l} G_{il} \\, \\overline{B_{jl}}
        = G_{i,:} \\cdot \\overline{B_{j,:}},

    one row of ``G`` against one row of ``B``: ``p`` multiplications per stored entry,
    never the ``n x m`` product. ``G`` and ``B`` are drawn side by side (real parts for
    complex input) with row ``i`` and row ``j`` framed; the title gives the value.

    Parameters
    ----------
    G : Tensor
        Dense ``(n, p)``, ``n >= 1``, ``p >= 1``.
    B : Tensor
        Dense ``(m, p)``, ``m >= 1``.
    i, j : int
        The entry of ``A``: ``0 <= i < n``, ``0 <= j < m``.
    ax : Axes, optional

    Returns
    -------
    Figure or Axes

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> fig = plot_gradient_entry(torch.ones(3, 2), torch.arange(8.0).reshape(4, 2), 0, 3)
    >>> fig.axes[0].get_title()
    '$\\\\partial L / \\\\partial A_{0,3}$ = G[0, :] · B[3, :] = 13'
    >>> plt.close(fig)
    """
    func = "plot_gradient_entry"
    for name, T in (("G", G), ("B", B)):
        if not isinstance(T, Tensor) or T.layout != torch.strided or T.dim() != 2:
            raise InputTypeError(f"{func}: {name} must be a dense 2-D tensor, got {T!r:.60}")
    if G.shape[1] != B.shape[1]:
        raise InputValueError(
            f"{func}: G {tuple(G.shape)} and B {tuple(B.shape)} must have the same number of "
            "columns p"
        )
    (n, p), m = G.shape, B.shape[0]
    if 0 in (n, m, p):
        raise InputValueError(
            f"{func}: G {tuple(G.shape)} and B {tuple(B.shape)} must each have at least one "
            "row, and p >= 1 columns: the figure frames a row of each"
        )
    i = check_int(i, "i", func, minimum=0, below=n)
    j = check_int(j, "j", func, minimum=0, below=m)
    G64 = G.detach().to(torch.complex128 if G.is_complex() or B.is_complex() else torch.float64)
    B64 = B.detach().to(G64.dtype)
    value = (G64[i] * B64[j].conj()).sum().item()
    row_j = f"conj(B[{j}, :])" if G64.is_complex() else f"B[{j}, :]"

    fig, ax = _canvas(ax, (6.0, 4.0))
    gap = max(1.0, 0.3 * p)
    shown_G, shown_B = G64.real.cpu().numpy(), B64.real.cpu().numpy()
    bound_ = max(float(abs(shown_G).max(initial=0.0)), float(abs(shown_B).max(initial=0.0)), 1e-12)
    style: dict[str, Any] = {
        "cmap": "RdBu_r",
        "vmin": -bound_,
        "vmax": bound_,
        "interpolation": "nearest",
    }
    image = ax.imshow(shown_G, extent=(-0.5, p - 0.5, n - 0.5, -0.5), **style)
    ax.imshow(shown_B, extent=(p - 0.5 + gap, 2 * p - 0.5 + gap, m - 0.5, -0.5), **style)
    # Both matrices share one colour scale (same vmin/vmax), so one bar reads for both.
    label = "entry value (real part)" if G64.is_complex() else "entry value"
    ax.figure.colorbar(image, ax=ax, label=label)
    ax.add_patch(Rectangle((-0.5, i - 0.5), p, 1, fill=False, edgecolor="black", linewidth=2.5))
    ax.add_patch(
        Rectangle((p - 0.5 + gap, j - 0.5), p, 1, fill=False, edgecolor="black", linewidth=2.5)
    )
    ax.set_xlim(-0.5, 2 * p - 0.5 + gap)
    ax.set_ylim(max(n, m) - 0.5, -0.5)
    # The matrices are named under their columns, where tick labels would otherwise be.
    ax.set_xticks(
        [p / 2 - 0.5, p * 1.5 - 0.5 + gap],
        [f"G ({n} x {p}), row i = {i}", f"B ({m} x {p}), row j = {j}"],
    )
    ax.set_xlabel(f"l = 0 … {p - 1} across each matrix (the summed index)")
    ax.set_ylabel("row of G (left) / row of B (right)")
    ax.set_title(f"$\\partial L / \\partial A_{{{i},{j}}}$ = G[{i}, :] · {row_j} = {value:.4g}")
    return ax if fig is None else fig


# --------------------------------------------------------------------------- memory bars


def plot_memory_points(
    predicted: Mapping[str, int],
    measured: Mapping[str, int | None],
    *,
    title: str | None = None,
    ax: Axes | None = None,
) -> Figure | Axes:
    """Predicted and measured peak extra memory of each strategy, as points on a log axis.

    One row per strategy: a hollow circle for the model, a filled one for the measurement
    (none when the case was refused or not measured, or measured 0 B, which a log axis
    cannot show: the row's label says which). Points,
    not bars: the strategies differ by orders of magnitude, which needs a log axis, and a
    bar's length on a log axis depends on where the axis happens to start.

    Parameters
    ----------
    predicted : dict of str to int
        Bytes per strategy from the model, each ``> 0``.
    measured : dict of str to int or None
        Bytes per strategy as measured (``>= 0``), for the same names; ``None`` (refused or
        not measured) draws no point.
    title : str, optional
    ax : Axes, optional

    Returns
    -------
    Figure or Axes

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> fig = plot_memory_points({"sddmm": 2**20, "dense": 2**24},
    ...                          {"sddmm": 2**20, "dense": None})
    >>> [line.get_xdata().tolist() for line in fig.axes[0].lines]
    [[1.0, 16.0], [1.0]]
    >>> [label.get_text() for label in fig.axes[0].get_yticklabels()]
    ['sddmm', 'dense (not run)']
    >>> close_figure(fig)
    """
    func = "plot_memory_points"
    if not isinstance(predicted, Mapping) or not predicted:
        raise InputTypeError(f"{func}: predicted must be a non-empty dict name -> bytes")
    if not isinstance(measured, Mapping):
        raise InputTypeError(
            f"{func}: measured must be a dict name -> bytes or None, got {type(measured).__name__}"
        )
    if set(measured) != set(predicted):
        raise InputValueError(
            f"{func}: measured names {sorted(measured)}, predicted {sorted(predicted)}"
        )
    # The model's bytes go on a log axis, which has no place for 0 or less.
    model = {s: _bytes(func, f"predicted[{s!r}]", v, positive=True) for s, v in predicted.items()}
    found = {
        s: None if v is None else _bytes(func, f"measured[{s!r}]", v, positive=False)
        for s, v in measured.items()
    }
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    names = list(predicted)
    fig, ax = _canvas(ax, (6.0, 0.9 + 0.45 * len(names)))
    rows = range(len(names))
    # A large ring for the model, a small dot drawn over it for the measurement: where the
    # two agree, both stay visible (two markers of one size would hide the model).
    model_mib = [model[s] / 2**20 for s in names]
    ax.plot(model_mib, list(rows), "o", ms=12, mfc="none", mew=1.5, zorder=2, label="model")
    ran = [k for k, s in enumerate(names) if found[s]]  # neither None nor 0 B
    measured_mib = [found[names[k]] / 2**20 for k in ran]  # type: ignore[operator]
    ax.plot(measured_mib, ran, "o", ms=5, zorder=3, label="measured")

    def label(s: str) -> str:
        if found[s] is None:
            return f"{s} (not run)"
        return f"{s} (measured 0 B)" if found[s] == 0 else s

    ax.set_yticks(list(rows), [label(s) for s in names])
    ax.set_ylim(len(names) - 0.5, -0.5)  # first strategy on top
    ax.set_xscale("log")
    # Labels as plain numbers at 1, 2 and 5 times each power of ten (each power alone over
    # more than two decades), none on the minor ticks: matplotlib's default labels minor
    # ticks too when the axis spans little more than a decade, and they overlap.
    decades = math.log10(max(model_mib + measured_mib) / min(model_mib + measured_mib))
    subs = (1.0, 2.0, 5.0) if decades <= 2 else (1.0,)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("peak extra memory (MiB, log scale)")
    ax.grid(axis="x", which="both", alpha=0.3)
    if title is not None:
        ax.set_title(title)
    ax.legend()
    return ax if fig is None else fig


def _bytes(func: str, name: str, value: Any, *, positive: bool) -> float:
    """A byte count as a float: a finite real number, ``> 0`` or (not ``positive``) ``>= 0``."""
    number = check_real(value, name, func, low=-math.inf, high=math.inf)  # a number, not NaN
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        bound = "> 0" if positive else ">= 0"
        raise InputValueError(f"{func}: {name} must be a finite byte count {bound}, got {value!r}")
    return number


# --------------------------------------------------------------------------- benchmark


def plot_benchmark(results: Sequence[Result], path: str | os.PathLike[str] | None = None) -> Figure:
    """Time (fwd + bwd) and peak extra memory against nnz, one line per implementation.

    Draws on a :class:`matplotlib.figure.Figure` made without pyplot, so the command line
    switches no backend and a notebook shows it with ``display``. A line per implementation
    and layout (solid CSR, dashed COO) and per ``(p, batch)``, whose marker shape the title
    explains. Saved to ``path`` if given; the figure is returned.

    >>> from sparsegrad_lab.benchmark import make_cases, run_benchmark
    >>> results = run_benchmark(make_cases([(300, 1000, 8, 1)], layouts=["csr"]),
    ...     impls=["sddmm"], repeats=1, warmup=0, fresh_process=False, progress=False)
    >>> [line.get_label() for line in plot_benchmark(results).axes[0].lines]
    ['sddmm (csr)']
    """
    if isinstance(results, str) or not isinstance(results, Sequence):
        raise InputTypeError(
            "plot_benchmark: results must be a sequence of benchmark Results (from "
            f"run_benchmark), got {type(results).__name__}"
        )
    for k, r in enumerate(results):
        # Duck-typed: importing the benchmark here would load its measuring machinery with
        # every figure.
        if not all(hasattr(r, a) for a in ("status", "impl", "case", "fwdbwd_ms")):
            raise InputTypeError(
                f"plot_benchmark: results[{k}] must be a benchmark Result (from run_benchmark), "
                f"got {type(r).__name__}"
            )
    if path is not None and not isinstance(path, str | os.PathLike):
        raise InputTypeError(
            f"plot_benchmark: path must be a str, a path or None, got {type(path).__name__}"
        )
    groups: dict[tuple[str, str, int, int], list[Result]] = {}
    for r in results:
        if r.status == "ok":
            groups.setdefault((r.impl, r.case.layout, r.case.p, r.case.batch), []).append(r)
    shapes = sorted({(k[2], k[3]) for k in groups})
    markers = dict(zip(shapes, "osD^vP*X", strict=False))
    fig = Figure(figsize=(12, 4.4), layout="constrained")
    ax_t, ax_m = fig.subplots(1, 2)
    colours = {impl: f"C{k}" for k, impl in enumerate(IMPLEMENTATIONS)}
    labelled: set[tuple[str, str]] = set()
    for (impl, layout, p, batch), rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: r.case.batch * r.case.nnz)
        x = [r.case.batch * r.case.nnz for r in rs]
        # One legend entry per implementation and layout; the marker tells p and batch.
        label = f"{impl} ({layout})" if (impl, layout) not in labelled else None
        labelled.add((impl, layout))
        style = {
            "color": colours[impl],
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


# --------------------------------------------------------------------------- attention on a graph


def _graph_entries(func: str, A: Any, name: str) -> tuple[int, Tensor, Tensor, Tensor]:
    """``n`` and the rows, columns and values (row-major, coalesced) of a square sparse ``A``."""
    if not isinstance(A, Tensor) or A.layout not in (torch.sparse_coo, torch.sparse_csr):
        kind = f"layout {A.layout}" if isinstance(A, Tensor) else type(A).__name__
        raise InputTypeError(f"{func}: {name} must be a sparse COO or CSR tensor, got {kind}")
    if A.dim() != 2 or A.shape[0] != A.shape[1] or A.shape[0] == 0 or A.dense_dim() != 0:
        raise InputValueError(
            f"{func}: {name} must be a square 2-D matrix (n, n) with n >= 1 and scalar values, "
            f"got shape {tuple(A.shape)}"
        )
    coo = (A.detach().to_sparse_coo() if A.layout == torch.sparse_csr else A.detach()).coalesce()
    rows, cols = coo.indices().cpu()
    return A.shape[0], rows, cols, coo.values().cpu()


def graph_layout(A: Tensor, seed: int = 0) -> Tensor:
    """Positions for drawing the graph whose adjacency pattern is ``A``: an ``(n, 2)`` tensor.

    A force-directed layout (``networkx.spring_layout``, seeded, so the same graph is drawn
    the same way each time): linked nodes pull together, all nodes push apart. Only the
    pattern counts; the stored values and the diagonal (self-loops) are ignored.

    Parameters
    ----------
    A : Tensor
        Sparse COO or CSR, square ``(n, n)``, ``n >= 1``.
    seed : int, default 0

    Returns
    -------
    Tensor
        float64 ``(n, 2)``, coordinates in about ``[-1, 1]``.

    >>> graph_layout(torch.ones(3, 3).to_sparse()).shape
    torch.Size([3, 2])
    """
    func = "graph_layout"
    n, rows, cols, _ = _graph_entries(func, A, "A")
    seed = check_int(seed, "seed", func, minimum=0)
    try:
        import networkx
    except ModuleNotFoundError as error:  # the optional "lab" extra
        raise ModuleNotFoundError(
            f"{func} needs networkx: pip install 'sparsegrad-lab[lab]'"
        ) from error
    graph = networkx.Graph()
    graph.add_nodes_from(range(n))
    edges = zip(rows.tolist(), cols.tolist(), strict=True)
    graph.add_edges_from((r, c) for r, c in edges if r != c)
    placed = networkx.spring_layout(graph, seed=seed)
    return torch.tensor([[float(v) for v in placed[k]] for k in range(n)], dtype=torch.float64)


def _node_positions(func: str, positions: Any, n: int) -> Tensor:
    if not isinstance(positions, Tensor) or positions.layout != torch.strided:
        raise InputTypeError(
            f"{func}: positions must be a dense tensor (n, 2), got {type(positions).__name__}"
        )
    if tuple(positions.shape) != (n, 2) or positions.is_complex() or positions.dtype == torch.bool:
        raise InputValueError(
            f"{func}: positions must be real, shape (n, 2) = ({n}, 2) for this graph; got "
            f"{positions.dtype} of shape {tuple(positions.shape)}"
        )
    xy = positions.detach().cpu().double()
    if not bool(torch.isfinite(xy).all()):
        raise InputValueError(f"{func}: positions must be finite, got a NaN or infinity")
    return xy


def _node_colours(func: str, groups: Any, n: int) -> list[str]:
    """One colour per node: its group's colour from the property cycle, or all the first."""
    if groups is None:
        return [_colour(0)] * n
    if not isinstance(groups, Tensor) or groups.layout != torch.strided:
        raise InputTypeError(
            f"{func}: groups must be a dense integer tensor (n,) or None, got "
            f"{type(groups).__name__}"
        )
    if groups.dtype.is_floating_point or groups.is_complex() or groups.dtype == torch.bool:
        raise InputTypeError(f"{func}: groups must hold integers, got {groups.dtype}")
    if tuple(groups.shape) != (n,) or bool((groups < 0).any()):
        raise InputValueError(
            f"{func}: groups must be (n,) = ({n},) integers >= 0, one group per node; got shape "
            f"{tuple(groups.shape)}"
        )
    return [_colour(int(g)) for g in groups.tolist()]


#: How many of a node's largest attention weights :func:`draw_attention` writes on the figure.
_LABELLED_WEIGHTS = 6


def draw_attention(
    weights: Tensor,
    node: int,
    positions: Tensor,
    *,
    groups: Tensor | None = None,
    title: str | None = None,
    ax: Axes | None = None,
) -> Figure | Axes:
    """Draw one node's attention weights on its graph: whom it listens to, and how much.

    ``weights`` holds :math:`\\alpha_{ij}`, the attention node :math:`i` pays neighbour
    :math:`j`, on the graph's pattern (a row softmax makes each row sum to 1). Every edge of
    the graph is drawn thin and grey; the edges of ``node`` are drawn over them, wider and
    darker as :math:`\\alpha_{\\text{node},j}` grows, the six largest labelled with their
    value. The weight a node pays itself (a stored diagonal entry) is a ring around it,
    labelled below it.
    Nodes are coloured by ``groups`` if given. Without an ``ax``, it draws on a
    :class:`~matplotlib.figure.Figure` made without pyplot: a widget's callback can draw it
    while Jupyter flushes pyplot's figures from another thread.

    Parameters
    ----------
    weights : Tensor
        Sparse COO or CSR, real, ``(n, n)``, values finite and ``>= 0``.
    node : int
        ``0 <= node < n``: the row drawn.
    positions : Tensor
        Dense real ``(n, 2)``, finite: where each node is drawn (:func:`graph_layout`).
    groups : Tensor, optional
        Dense integers ``(n,)``, ``>= 0``: a group per node (a faction, a class), one colour
        each.
    title : str, optional
        Default: which node, and how many entries its row stores.
    ax : Axes, optional

    Returns
    -------
    Figure or Axes

    Examples
    --------
    >>> A = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [0.0, 1.0, 0.0]]).to_sparse()
    >>> fig = draw_attention(A, 1, torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]]))
    >>> fig.axes[0].get_title()
    'node 1: 3 weights, itself included'
    >>> sorted(t.get_text() for t in fig.axes[0].texts if "." in t.get_text())
    ['0.20', '0.30', '0.50']
    """
    import matplotlib
    from matplotlib.collections import LineCollection
    from matplotlib.colors import ListedColormap, Normalize

    func = "draw_attention"
    n, rows, cols, alpha = _graph_entries(func, weights, "weights")
    if alpha.is_complex() or not alpha.dtype.is_floating_point:
        raise InputTypeError(f"{func}: weights must be real floating point, got {alpha.dtype}")
    alpha = alpha.double()
    if not bool(torch.isfinite(alpha).all()) or bool((alpha < 0).any()):
        raise InputValueError(f"{func}: weights must be finite and >= 0 (attention weights)")
    node = check_int(node, "node", func, minimum=0, below=n)
    xy = _node_positions(func, positions, n).numpy()
    colours = _node_colours(func, groups, n)
    if title is not None and not isinstance(title, str):
        raise InputTypeError(f"{func}: title must be a str or None, got {type(title).__name__}")

    fig: Figure | None = None
    if ax is None:
        fig = Figure(figsize=(6.4, 5.0), layout="constrained")
        ax = fig.subplots()
    elif not isinstance(ax, Axes):
        raise InputTypeError(f"ax must be a matplotlib Axes or None, got {type(ax).__name__}")
    edges = [(r, c) for r, c in zip(rows.tolist(), cols.tolist(), strict=True) if r != c]
    ax.add_collection(
        LineCollection([[xy[r], xy[c]] for r, c in edges], colors="0.85", linewidths=0.8, zorder=1)
    )
    mine = rows == node
    row_cols, row_alpha = cols[mine].tolist(), alpha[mine].tolist()
    # viridis reversed, its palest fifth left out: a small weight stays visible on white.
    cmap = ListedColormap(matplotlib.colormaps["viridis_r"](torch.linspace(0.2, 1.0, 128).numpy()))
    norm = Normalize(vmin=0.0, vmax=max([*row_alpha, 1e-12]))
    linked = [(j, a) for j, a in zip(row_cols, row_alpha, strict=True) if j != node]
    lines = LineCollection(
        [[xy[node], xy[j]] for j, _ in linked],
        cmap=cmap,
        norm=norm,
        linewidths=[1.0 + 9.0 * float(norm(a)) for _, a in linked],
        zorder=2,
    )
    lines.set_array([a for _, a in linked])
    ax.add_collection(lines)
    ax.scatter(xy[:, 0], xy[:, 1], s=170, c=colours, edgecolors="0.3", linewidths=0.8, zorder=3)
    for k in range(n):
        ax.text(xy[k, 0], xy[k, 1], str(k), ha="center", va="center", fontsize=7, zorder=5)
    box = {"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8}
    # The largest few weights labelled (a hub's dozens of labels would hide one another), at
    # two thirds of the way along: near the neighbour, off the node itself.
    for j, a in sorted(linked, key=lambda item: (-item[1], item[0]))[:_LABELLED_WEIGHTS]:
        x, y = xy[node] + 0.68 * (xy[j] - xy[node])
        ax.text(x, y, f"{a:.2f}", fontsize=8, ha="center", va="center", zorder=6, bbox=box)
    x0, y0 = float(xy[node, 0]), float(xy[node, 1])
    for j, a in zip(row_cols, row_alpha, strict=True):
        if j == node:  # the weight it pays itself: a ring sized and coloured by it
            ax.scatter(
                x0,
                y0,
                s=420 + 1200 * float(norm(a)),
                facecolors="none",
                edgecolors=[cmap(norm(a))],
                linewidths=3.0,
                zorder=4,
            )
            ax.annotate(
                f"{a:.2f}",
                (x0, y0),
                xytext=(0, -16),
                textcoords="offset points",
                ha="center",
                va="top",
                fontsize=8,
                zorder=6,
                bbox=box,
            )
    ax.scatter(x0, y0, s=300, facecolors="none", edgecolors="black", linewidths=2.0, zorder=4)
    colorbar = (fig or ax.figure).colorbar(lines, ax=ax)
    colorbar.set_label(f"attention weight α[{node}, j] (its row sums to 1)")
    ax.margins(0.08)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("force layout: positions have no units, only the links matter")
    itself = ", itself included" if node in row_cols else ""
    default = f"node {node}: {len(row_cols)} weights{itself}"
    ax.set_title(title if title is not None else default)
    return ax if fig is None else fig


# --------------------------------------------------------------------------- weights recovered


def plot_recovery(
    signals: Sequence[int],
    loss: Sequence[float],
    error: Sequence[float],
    *,
    floor: Sequence[float],
    expected_error: Sequence[float],
    noise_variance: float,
    chosen: tuple[int, float, float],
    error_limits: tuple[float, float] | None = None,
) -> Figure:
    """Minimum loss and error of the recovered weights against the number of signals ``p``.

    Two panels over the same ``p`` axis (log scale). Left, the loss of the least-squares
    weights of one draw of signals as markers, the noise floor
    :math:`\\sigma^2 (1 - \\mathrm{nnz}/(n p))` as a line and the noise variance
    :math:`\\sigma^2` dotted: the fit absorbs part of the noise, less of it as ``p`` grows.
    Right, the relative error :math:`\\lVert w - w^* \\rVert / \\lVert w^* \\rVert` of the
    same weights as markers and its model as a line (log scale). The ``chosen`` setting is
    ringed on both. Drawn on a :class:`~matplotlib.figure.Figure` that pyplot does not
    track, so a widget's callback can show it with ``display`` while pyplot's own figures
    are flushed elsewhere.

    Parameters
    ----------
    signals : sequence of int
        The numbers of signals ``p`` of the markers, each ``>= 1``.
    loss, error : sequence of float
        Per ``p``: the minimum loss (``>= 0``) and the relative error (``> 0``).
    floor, expected_error : sequence of float
        Per ``p``: the noise floor (``>= 0``) and the model of the error (``> 0``), drawn as
        lines through the same ``p``.
    noise_variance : float
        :math:`\\sigma^2`, ``> 0``.
    chosen : (int, float, float)
        ``(p, loss, error)`` of the setting to ring.
    error_limits : (float, float), optional
        The error axis's limits, ``0 < low < high``; fixed by a caller whose curves move
        (the explorer keeps them across every noise level it offers).

    Returns
    -------
    Figure

    Examples
    --------
    >>> fig = plot_recovery([40, 80], [0.8, 0.9], [0.04, 0.02], floor=[0.83, 0.91],
    ...     expected_error=[0.035, 0.021], noise_variance=1.0, chosen=(80, 0.9, 0.02))
    >>> [ax.get_xlabel() for ax in fig.axes]
    ['signals p (log scale)', 'signals p (log scale)']
    >>> fig.axes[1].get_yscale()
    'log'
    """
    func = "plot_recovery"
    if isinstance(signals, str) or not isinstance(signals, Sequence) or not signals:
        raise InputTypeError(f"{func}: signals must be a non-empty sequence of ints")
    p_values = [check_int(p, f"signals[{k}]", func, minimum=1) for k, p in enumerate(signals)]
    length = len(p_values)
    curves = {
        "loss": _floats(func, "loss", loss, length),
        "error": _floats(func, "error", error, length),
        "floor": _floats(func, "floor", floor, length),
        "expected_error": _floats(func, "expected_error", expected_error, length),
    }
    for name, values in curves.items():
        positive = name in ("error", "expected_error")  # drawn on a log axis
        for k, v in enumerate(values):
            if not math.isfinite(v) or v < 0 or (positive and v == 0):
                bound = "> 0" if positive else ">= 0"
                raise InputValueError(
                    f"{func}: {name}[{k}] must be a finite number {bound}, got {v}"
                )
    variance = check_real(noise_variance, "noise_variance", func, low=0.0, high=math.inf)
    if variance == 0:
        raise InputValueError(f"{func}: noise_variance must be > 0, got {noise_variance}")
    if not isinstance(chosen, Sequence) or len(chosen) != 3:
        raise InputTypeError(f"{func}: chosen must be a tuple (p, loss, error), got {chosen!r}")
    chosen_p = check_int(chosen[0], "chosen p", func, minimum=1)
    chosen_loss = check_real(chosen[1], "chosen loss", func, low=0.0, high=math.inf)
    chosen_error = check_real(chosen[2], "chosen error", func, low=0.0, high=math.inf)
    if chosen_error == 0:
        raise InputValueError(f"{func}: the chosen error must be > 0 (a log axis), got 0")
    if error_limits is not None:
        if not isinstance(error_limits, Sequence) or len(error_limits) != 2:
            raise InputTypeError(f"{func}: error_limits must be a pair (low, high)")
        low = check_real(error_limits[0], "error_limits[0]", func, low=0.0, high=math.inf)
        high = check_real(error_limits[1], "error_limits[1]", func, low=0.0, high=math.inf)
        if not 0 < low < high:
            raise InputValueError(f"{func}: error_limits must satisfy 0 < low < high")

    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig = Figure(figsize=(10.5, 3.9), layout="constrained")
    ax_loss, ax_error = fig.subplots(1, 2)
    ax_loss.plot(p_values, curves["floor"], "-", color="C3", label="noise floor σ²(1 − nnz/(np))")
    ax_loss.axhline(variance, color="0.5", linestyle=":", label="noise variance σ²")
    ax_loss.plot(p_values, curves["loss"], "o", ms=4, color="C0", label="least squares, this draw")
    ax_loss.set_ylabel("minimum loss L (signal units²)")
    ax_loss.set_title("the fit absorbs nnz/(np) of the noise")
    ax_error.plot(
        p_values,
        curves["expected_error"],
        "-",
        color="C3",
        label="model σ √(Σᵢ dᵢ / (p − dᵢ − 1)) / ‖w*‖",
    )
    ax_error.plot(
        p_values, curves["error"], "o", ms=4, color="C0", label="least squares, this draw"
    )
    ax_error.set_yscale("log")
    ax_error.set_ylabel("relative error ‖w − w*‖ / ‖w*‖")
    ax_error.set_title("error of the recovered weights")
    if error_limits is not None:
        ax_error.set_ylim(low, high)
    for ax, y in ((ax_loss, chosen_loss), (ax_error, chosen_error)):
        ax.plot(
            [chosen_p], [y], "o", ms=11, mfc="none", mew=1.8, color="k", label=f"p = {chosen_p}"
        )
        ax.set_xscale("log")
        # Plain numbers at 1, 2 and 5 times each power of ten, none on the minor ticks
        # (matplotlib's own labels them too on an axis of about a decade, and they overlap).
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("signals p (log scale)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    return fig
