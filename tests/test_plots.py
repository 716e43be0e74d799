"""Tests of the plotting helpers: what is drawn, where, labelled how, and nothing left open."""

import io
import math
import re
import warnings

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display on a test machine

import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.patches import Rectangle

from sparsegrad_lab.errors import InputTypeError, InputValueError
from sparsegrad_lab.example_matrices import banded, uniform_random
from sparsegrad_lab.memory_model import storage_bytes
from sparsegrad_lab.plots import (
    close_figure,
    draw_attention,
    draw_batched_product,
    draw_storage,
    graph_layout,
    plot_benchmark,
    plot_gradient_entry,
    plot_memory_curves,
    plot_memory_points,
    plot_recovery,
    plot_timings,
    spy,
)

pytestmark = pytest.mark.filterwarnings("error")  # a missing glyph or a bad kwarg warns


@pytest.fixture(autouse=True)
def _no_figure_leaks():
    before = set(plt.get_fignums())
    yield
    opened = set(plt.get_fignums()) - before
    plt.close("all")
    assert not opened, f"figures left open: {sorted(opened)}"


@pytest.fixture
def own_axes():
    """An Axes the test made; closed afterwards, so the leak check sees only the function."""
    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


def drawn(fig_or_ax):
    """The Axes a function drew into, closing its figure if it made one."""
    if isinstance(fig_or_ax, Figure):
        main = [ax for ax in fig_or_ax.axes if ax.get_label() != "<colorbar>"]
        assert len(main) == 1
        plt.close(fig_or_ax)
        return main[0]
    return fig_or_ax


def marker_points(ax):
    """Every (row, col) drawn as a marker, from all Line2D with no connecting line."""
    points = []
    for line in ax.lines:
        if line.get_linestyle() == "None":
            points += zip(line.get_ydata().tolist(), line.get_xdata().tolist(), strict=True)
    return points


def rectangles(ax):
    return [p for p in ax.patches if isinstance(p, Rectangle)]


# --------------------------------------------------------------------------- spy


SMALL = torch.tensor([[0.0, 1.5, 0.0, 0.0], [2.0, 0.0, 0.0, -1.0], [0.0, 0.0, 3.0, 0.0]])


def to_csr(A):
    with warnings.catch_warnings():  # torch's one-time beta notice is not ours to test
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return A.to_sparse_csr()


@pytest.mark.parametrize("make", [lambda: SMALL.to_sparse(), lambda: to_csr(SMALL), lambda: SMALL])
def test_spy_draws_one_marker_per_stored_entry(make):
    ax = drawn(spy(make()))
    assert sorted(marker_points(ax)) == [(0, 1), (1, 0), (1, 3), (2, 2)]
    assert len(ax.lines) == 1
    assert ax.get_xlabel() == "column j"
    assert ax.get_ylabel() == "row i"
    assert ax.get_title() == "nnz = 4, density = 0.333"
    assert ax.get_ylim() == (2.5, -0.5)  # row 0 at the top, as in the matrix


def test_spy_title_line_and_explicit_markersize():
    ax = drawn(spy(SMALL.to_sparse(), title="my matrix", markersize=7.5))
    assert ax.get_title() == "my matrix\nnnz = 4, density = 0.333"
    assert ax.lines[0].get_markersize() == 7.5


def test_spy_counts_explicit_zeros_it_stores():
    A = torch.sparse_coo_tensor(torch.tensor([[0, 1], [1, 0]]), torch.tensor([0.0, 5.0]), (2, 2))
    assert len(marker_points(drawn(spy(A)))) == 2


def test_spy_of_a_batch_draws_the_block_diagonal_matrix():
    items = [banded(6, bandwidth=1, seed=t) for t in range(3)]
    A = torch.stack(items)  # (3, 6, 6) COO
    ax = drawn(spy(A))
    expected = sorted(
        (t * 6 + i, t * 6 + j) for t, item in enumerate(items) for i, j in item.indices().T.tolist()
    )
    assert sorted(marker_points(ax)) == expected
    outlines = rectangles(ax)
    assert len(outlines) == 3
    assert [r.get_xy() for r in outlines] == [(-0.5, -0.5), (5.5, 5.5), (11.5, 11.5)]
    assert ax.get_title().startswith("3 blocks of 6 x 6: nnz = 48,")
    assert ax.get_xlim() == (-0.5, 17.5)


def test_spy_of_a_batched_csr():
    A = to_csr(torch.stack([torch.eye(3), torch.eye(3).flip(1)]))  # torch: equal nnz per item
    assert sorted(marker_points(drawn(spy(A)))) == [(0, 0), (1, 1), (2, 2), (3, 5), (4, 4), (5, 3)]


def test_spy_bins_a_large_matrix_into_an_image():
    A = uniform_random(500, 300, nnz=2000, seed=0)
    ax = drawn(spy(A, max_markers=1000))
    assert len(ax.lines) == 0
    (image,) = ax.images
    grid = image.get_array()
    assert grid.shape == (400, 300)
    # Each bin shows the fraction of its positions stored: they add back up to nnz.
    assert float(grid.sum()) * (500 / 400) * (300 / 300) == pytest.approx(2000)
    assert "binned 400 x 300" in ax.get_title()


def test_spy_into_a_given_axes_returns_it(own_axes):
    assert spy(SMALL.to_sparse(), ax=own_axes) is own_axes
    assert len(own_axes.lines) == 1


@pytest.mark.parametrize(
    ("A", "error", "words"),
    [
        ([[1.0]], InputTypeError, "spy: A must be a torch.Tensor, got list"),
        (torch.ones(3), InputValueError, r"2-D \(n, m\) or batched 3-D"),
    ],
)
def test_spy_errors(A, error, words):
    with pytest.raises(error, match=words):
        spy(A)


@pytest.mark.parametrize(
    ("shape", "title", "xlim", "ylim", "tickless"),
    [
        ((0, 5), "0 x 5: nnz = 0, no positions", (-0.5, 4.5), (0.5, -0.5), "y"),
        ((5, 0), "5 x 0: nnz = 0, no positions", (-0.5, 0.5), (4.5, -0.5), "x"),
        ((0, 0), "0 x 0: nnz = 0, no positions", (-0.5, 0.5), (0.5, -0.5), "xy"),
        ((0, 3, 4), "0 blocks of 3 x 4: nnz = 0, no positions", (-0.5, 0.5), (0.5, -0.5), "xy"),
        ((2, 0, 3), "2 blocks of 0 x 3: nnz = 0, no positions", (-0.5, 5.5), (0.5, -0.5), "y"),
    ],
)
@pytest.mark.parametrize("layout", ["coo", "dense"])
def test_spy_of_a_matrix_with_a_zero_dimension_is_an_empty_labelled_plot(
    shape, title, xlim, ylim, tickless, layout
):
    # Used to divide by zero (the density, the default marker size). A warning fails too:
    # matplotlib warns about a span of zero, which the empty axis must not have.
    A = torch.zeros(shape)
    ax = drawn(spy(A.to_sparse() if layout == "coo" else A))
    assert marker_points(ax) == []
    assert ax.get_title() == title
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("column j", "row i")
    assert ax.get_xlim() == xlim and ax.get_ylim() == ylim
    # An empty dimension has no ticks: any would name a row or column that does not exist.
    assert (len(ax.get_xticks()) == 0, len(ax.get_yticks()) == 0) == (
        "x" in tickless,
        "y" in tickless,
    )
    assert not rectangles(ax)  # no outline of an empty block


def test_spy_of_an_empty_csr_matrix():
    ax = drawn(spy(to_csr(torch.zeros(3, 0))))
    assert ax.get_title() == "3 x 0: nnz = 0, no positions"


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"max_markers": -1}, InputValueError, "spy: max_markers must be >= 0, got -1"),
        ({"max_markers": 2.5}, InputTypeError, "spy: max_markers must be an int, got float"),
        ({"markersize": "big"}, InputTypeError, "spy: markersize must be a real number"),
        ({"markersize": -1.0}, InputValueError, "spy: markersize must lie in"),
        ({"markersize": math.nan}, InputValueError, "spy: markersize must lie in"),
    ],
)
def test_spy_checks_its_options_before_drawing(options, error, words):
    # The leak check (autouse fixture) also asserts that no figure was opened.
    with pytest.raises(error, match=re.escape(words)):
        spy(torch.zeros(0, 5).to_sparse(), **options)


def test_spy_rejects_a_foreign_axes_argument():
    with pytest.raises(InputTypeError, match="ax must be a matplotlib Axes"):
        spy(SMALL.to_sparse(), ax="left")


@pytest.mark.parametrize("make", [lambda: SMALL, lambda: SMALL.to_sparse(), lambda: to_csr(SMALL)])
def test_drawing_is_silent_without_torch_invariant_checks(make):
    # Notebooks run without the checks the test suite turns on; nbval compares stderr.
    A = make()
    with torch.sparse.check_sparse_tensor_invariants(enable=False), warnings.catch_warnings():
        warnings.simplefilter("error")
        for fig in (spy(A), draw_storage(A), draw_batched_product([A, A])):
            plt.close(fig)


# --------------------------------------------------------------------------- draw_storage


def box_texts(ax):
    return [t.get_text() for t in ax.texts]


def array_row(ax, label):
    """The boxed entries and the byte count drawn on the same line as ``label``."""
    (anchor,) = [t for t in ax.texts if t.get_text() == label]
    y = anchor.get_position()[1]
    same_line = sorted(
        (t.get_position()[0], t.get_text()) for t in ax.texts if t.get_position()[1] == y
    )
    *entries, size = [text for x, text in same_line if x >= 0]
    return entries, size


def test_draw_storage_draws_every_array_with_its_bytes():
    A = SMALL.to_sparse()  # 3 x 4, nnz 4, float32
    ax = drawn(draw_storage(A))
    n, m, nnz = 3, 4, 4
    # matrix cells + COO row/col/values + CSR crow/col/values
    assert len(rectangles(ax)) == n * m + 3 * nnz + (n + 1) + 2 * nnz
    # [[0, 1.5, 0, 0], [2, 0, 0, -1], [0, 0, 3, 0]]: entries (0,1) (1,0) (1,3) (2,2).
    assert array_row(ax, "COO row") == (["0", "1", "1", "2"], "4 x 8 B = 32 B")
    assert array_row(ax, "COO col") == (["1", "0", "3", "2"], "4 x 8 B = 32 B")
    assert array_row(ax, "COO values") == (["1.5", "2", "-1", "3"], "4 x 4 B = 16 B")
    assert array_row(ax, "CSR crow") == (["0", "1", "3", "4"], "4 x 8 B = 32 B")
    assert array_row(ax, "CSR col") == (["1", "0", "3", "2"], "4 x 8 B = 32 B")
    assert array_row(ax, "CSR values") == (["1.5", "2", "-1", "3"], "4 x 4 B = 16 B")
    assert "A (3 x 4)" in box_texts(ax)
    totals = storage_bytes(A)
    assert ax.get_title() == (
        f"COO {totals['coo']} B · CSR {totals['csr']} B · dense {totals['dense']} B"
    )


def test_draw_storage_of_csr_and_float64_counts_8_byte_values():
    ax = drawn(draw_storage(to_csr(torch.eye(3, dtype=torch.float64))))
    assert array_row(ax, "CSR values") == (["1", "1", "1"], "3 x 8 B = 24 B")
    assert array_row(ax, "CSR crow") == (["0", "1", "2", "3"], "4 x 8 B = 32 B")
    # The matrix: stored cells show their value, the others a grey 0.
    cells = box_texts(ax)[:9]
    assert cells == ["1", "0", "0", "0", "1", "0", "0", "0", "1"]


def test_draw_storage_into_a_given_axes(own_axes):
    assert draw_storage(torch.eye(2).to_sparse(), ax=own_axes) is own_axes


@pytest.mark.parametrize(
    "A",
    [
        torch.eye(31).to_sparse(),
        uniform_random(10, 10, nnz=31),
        torch.stack([torch.eye(2)] * 2).to_sparse(),
    ],
)
def test_draw_storage_refuses_what_would_not_be_readable(A):
    with pytest.raises(InputValueError, match="draw_storage: A must be 2-D with at most 30"):
        draw_storage(A)


# --------------------------------------------------------------------------- draw_batched_product


@pytest.mark.parametrize("as_tensor", [False, True])
def test_draw_batched_product_colours_each_item(as_tensor):
    items = [torch.eye(3), torch.ones(3, 3), torch.tensor([[0, 0, 1.0], [0, 0, 0], [0, 0, 0]])]
    As = torch.stack(items).to_sparse() if as_tensor else items
    ax = drawn(draw_batched_product(As))
    assert len(ax.lines) == 3  # one marker set per item
    for t, (line, item) in enumerate(zip(ax.lines, items, strict=True)):
        rows, cols = item.nonzero().T.tolist()
        expected = sorted(zip([3 * t + r for r in rows], [3 * t + c for c in cols], strict=True))
        got = sorted(zip(line.get_ydata().tolist(), line.get_xdata().tolist(), strict=True))
        assert got == expected
        assert to_rgba(line.get_color()) == to_rgba(f"C{t}")
    assert len(rectangles(ax)) == 3 * 3  # outline, B block, C block per item
    texts = box_texts(ax)
    assert {"$A_{1}$", "$B_{3}$", "$A_{2} B_{2}$", "@", "="} <= set(texts)
    assert ax.get_xlabel() == "column j of the 9 x 9 block-diagonal matrix"
    assert ax.get_ylabel() == "row i"


def test_draw_batched_product_keeps_explicit_zeros_and_mixed_layouts():
    stored_zero = torch.sparse_coo_tensor(
        torch.tensor([[0, 1], [1, 0]]), torch.tensor([0.0, 5.0]), (2, 2)
    )
    ax = drawn(draw_batched_product([stored_zero, to_csr(torch.eye(2)), torch.ones(2, 2)]))
    assert [len(line.get_xdata()) for line in ax.lines] == [2, 2, 4]


def test_draw_batched_product_into_a_given_axes(own_axes):
    assert draw_batched_product([torch.eye(2)] * 2, ax=own_axes) is own_axes


@pytest.mark.parametrize(
    ("As", "error", "words"),
    [
        ([], InputTypeError, "non-empty sequence"),
        ("abc", InputTypeError, "non-empty sequence"),
        ([torch.eye(2), torch.eye(3)], InputValueError, "2-D and of one shape"),
        (torch.eye(3), InputValueError, r"must be 3-D \(b, n, m\)"),
    ],
)
def test_draw_batched_product_errors(As, error, words):
    with pytest.raises(error, match=words):
        draw_batched_product(As)


@pytest.mark.parametrize(
    "As",
    [
        torch.zeros(0, 3, 3),
        torch.zeros(0, 3, 3).to_sparse(),
        [torch.zeros(0, 3)] * 2,
        [torch.zeros(3, 0).to_sparse()] * 2,
        [torch.zeros(0, 0)],
    ],
    ids=["empty-batch", "empty-batch-coo", "no-rows", "no-columns", "0x0"],
)
def test_draw_batched_product_refuses_zero_sizes_and_points_to_spy(As):
    # Used to divide by zero; a diagram of blocks with no block to draw makes no sense.
    with pytest.raises(InputValueError, match=r"at least one item of at least one row .*spy"):
        draw_batched_product(As)


# --------------------------------------------------------------------------- curves


X = [1e3, 1e4, 1e5]
SERIES = {"dense": [4.0, 380.0, None], "sddmm": [0.5, 1.0, 2.0]}
MODEL = {"dense": [3.8, 381.0, 38147.0], "gather": [1.0, 10.0, 100.0]}


def test_memory_curves_markers_for_measurements_lines_for_the_model():
    ax = drawn(plot_memory_curves(X, SERIES, MODEL, xlabel="n (rows of A)"))
    by_label = {line.get_label(): line for line in ax.lines}
    assert set(by_label) == {
        "dense (measured)",
        "sddmm (measured)",
        "dense (model)",
        "gather (model)",
    }
    for name in ("dense (measured)", "sddmm (measured)"):
        assert by_label[name].get_linestyle() == "None"
        assert by_label[name].get_marker() == "o"
    for name in ("dense (model)", "gather (model)"):
        assert by_label[name].get_linestyle() == "-"
    # A model shares the colour of the measurement it predicts.
    assert by_label["dense (model)"].get_color() == by_label["dense (measured)"].get_color()
    assert by_label["gather (model)"].get_color() != by_label["sddmm (measured)"].get_color()
    measured = by_label["dense (measured)"].get_ydata()
    assert measured[:2].tolist() == [4.0, 380.0] and math.isnan(measured[2])  # None: a gap
    assert ax.get_xlabel() == "n (rows of A)"
    assert ax.get_ylabel() == "peak extra memory (MiB)"
    assert ax.get_xscale() == ax.get_yscale() == "log"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert sorted(legend) == sorted(by_label)


def test_memory_curves_without_model_linear_axes_and_title(own_axes):
    result = plot_memory_curves(
        [0.1, 0.2],
        {"gather": [1, 2]},
        xlabel="density",
        ax=own_axes,
        logx=False,
        logy=False,
        title="sweep",
    )
    assert result is own_axes
    assert len(own_axes.lines) == 1
    assert own_axes.get_xscale() == own_axes.get_yscale() == "linear"
    assert own_axes.get_title() == "sweep"


@pytest.mark.parametrize(
    ("x", "series", "model", "error", "words"),
    [
        (X, {"dense": [1.0, 2.0]}, None, InputValueError, r"series\['dense'\] has 2 values"),
        (X, SERIES, {"dense": [1.0]}, InputValueError, r"model\['dense'\] has 1 values"),
        (X, {}, None, InputTypeError, "series must be a non-empty dict"),
        ("abc", SERIES, None, InputTypeError, "x must be a sequence of numbers"),
        (X, {"dense": 3.0}, None, InputTypeError, "must be a sequence of numbers"),
    ],
)
def test_memory_curves_errors(x, series, model, error, words):
    with pytest.raises(error, match=words):
        plot_memory_curves(x, series, model, xlabel="n")


def test_timings_defaults_and_error_bars():
    ax = drawn(
        plot_timings(
            [10, 100, 1000],
            {"sddmm": [0.2, 1.9, 20.0], "dense": [0.1, 5.0, 400.0]},
            {"sddmm": [0.2, 2.0, 20.0]},
            xlabel="p (columns of B)",
            errors={"sddmm": [0.01, 0.1, 1.0]},
        )
    )
    assert ax.get_ylabel() == "time per step (ms)"
    assert ax.get_xlabel() == "p (columns of B)"
    assert len(ax.containers) == 1  # error bars for sddmm only
    (bars,) = ax.containers[0].lines[2]
    heights = [seg[1, 1] - seg[0, 1] for seg in bars.get_segments()]
    assert heights == pytest.approx([0.02, 0.2, 2.0])
    labels = sorted(line.get_label() for line in ax.lines if not line.get_label().startswith("_"))
    assert labels == ["dense (measured)", "sddmm (measured)", "sddmm (model)"]


@pytest.mark.parametrize(
    ("series", "model", "errors", "error", "words"),
    [
        (
            {"a": ["x"]},
            None,
            None,
            InputTypeError,
            r"series\['a'\] must hold numbers .* str at position 0",
        ),
        ({"a": [True]}, None, None, InputTypeError, "got bool at position 0"),
        ({"a": [1.0]}, {"b": [object()]}, None, InputTypeError, r"model\['b'\] must hold numbers"),
        ({"a": [1.0]}, [1.0], None, InputTypeError, "model must be a dict name -> values or None"),
        ({"a": [1.0]}, None, [0.1], InputTypeError, "errors must be a dict name -> values or None"),
        ({"a": [1.0]}, None, {"a": [-0.1]}, InputValueError, r"errors\['a'\] must be >= 0"),
    ],
)
def test_curves_check_every_value_before_drawing(series, model, errors, error, words):
    # Used to surface as float()'s ValueError, or matplotlib's, after the figure existed.
    with pytest.raises(error, match=words):
        plot_timings([1.0], series, model, xlabel="n", errors=errors)


def test_curves_take_a_1d_tensor_as_values():
    ax = drawn(
        plot_memory_curves(torch.tensor([1.0, 2.0]), {"a": torch.tensor([3.0, 4.0])}, xlabel="n")
    )
    assert ax.lines[0].get_ydata().tolist() == [3.0, 4.0]


def test_timings_errors_must_name_a_series():
    with pytest.raises(InputValueError, match=r"errors name series \['gather'\]"):
        plot_timings([1], {"sddmm": [1.0]}, xlabel="n", errors={"gather": [0.1]})


# --------------------------------------------------------------------------- gradient entry


def title_value(ax) -> complex:
    return complex(ax.get_title().rsplit("= ", 1)[1].replace("(", "").replace(")", ""))


@pytest.mark.parametrize(("i", "j"), [(0, 0), (2, 5), (5, 7)])
def test_gradient_entry_value_is_dL_dA_ij_from_dense_autograd(i, j):
    gen = torch.Generator().manual_seed(0)
    G, B = torch.randn(6, 4, generator=gen), torch.randn(8, 4, generator=gen)
    # Reference: L = <G, A B> in float64, differentiated by autograd with respect to dense A.
    A = torch.zeros(6, 8, dtype=torch.float64, requires_grad=True)
    (G.double() * (A @ B.double())).sum().backward()
    ax = drawn(plot_gradient_entry(G, B, i, j))
    assert title_value(ax).real == pytest.approx(A.grad[i, j].item(), rel=1e-3, abs=1e-4)
    assert f"G[{i}, :] · B[{j}, :]" in ax.get_title()
    frames = rectangles(ax)
    assert len(frames) == 2
    assert [f.get_y() for f in frames] == [i - 0.5, j - 0.5]  # row i of G, row j of B
    assert frames[1].get_x() > frames[0].get_x() + 4  # B is drawn right of G
    images = [im for im in ax.images if isinstance(im, AxesImage)]
    assert [im.get_array().shape for im in images] == [(6, 4), (8, 4)]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == [f"G (6 x 4), row i = {i}", f"B (8 x 4), row j = {j}"]


def test_gradient_entry_complex_uses_the_conjugate():
    G = torch.tensor([[1 + 1j, 2.0 + 0j]], dtype=torch.complex64)
    B = torch.tensor([[1j, 1.0 + 0j]], dtype=torch.complex64)
    ax = drawn(plot_gradient_entry(G, B, 0, 0))
    # (1+i) * conj(i) + 2 * 1 = (1+i)(-i) + 2 = 3 - i
    assert title_value(ax) == pytest.approx(3 - 1j)
    assert "conj(B[0, :])" in ax.get_title()


def test_gradient_entry_has_a_labelled_colour_bar():
    fig = plot_gradient_entry(torch.ones(3, 2), torch.arange(8.0).reshape(4, 2), 0, 3)
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    plt.close(fig)
    assert len(bars) == 1
    assert bars[0].get_ylabel() == "entry value"


def test_gradient_entry_into_a_given_axes(own_axes):
    assert plot_gradient_entry(torch.ones(2, 2), torch.ones(3, 2), 1, 2, ax=own_axes) is own_axes


@pytest.mark.parametrize(
    ("G", "B", "i", "j", "error", "words"),
    [
        (torch.ones(3, 2), torch.ones(4, 3), 0, 0, InputValueError, "same number of columns"),
        (torch.ones(3, 2), torch.ones(4, 2), 3, 0, InputValueError, r"i must lie in \[0, 3\)"),
        (torch.ones(3, 2), torch.ones(4, 2), 0, -1, InputValueError, r"j must lie in \[0, 4\)"),
        (torch.ones(3, 2), torch.ones(4, 2), 0.0, 0, InputTypeError, "i must be an int"),
        (torch.ones(3), torch.ones(4, 2), 0, 0, InputTypeError, "G must be a dense 2-D"),
        (torch.ones(3, 2), torch.eye(2).to_sparse(), 0, 0, InputTypeError, "B must be a dense"),
        # Zero sizes: no row to frame, or nothing to sum over (p = 0 used to draw
        # zero-width images and warn).
        (torch.ones(3, 0), torch.ones(4, 0), 0, 0, InputValueError, r"p >= 1 columns"),
        (torch.ones(0, 2), torch.ones(4, 2), 0, 0, InputValueError, r"at least one\s+row"),
        (torch.ones(3, 2), torch.ones(0, 2), 0, 0, InputValueError, r"at least one\s+row"),
    ],
)
def test_gradient_entry_errors(G, B, i, j, error, words):
    with pytest.raises(error, match=re.compile(words)):
        plot_gradient_entry(G, B, i, j)


# --------------------------------------------------------------------------- memory points


def test_memory_points_pair_model_and_measurement_per_strategy(own_axes):
    predicted = {"sddmm": 3 * 2**20, "gather": 9 * 2**20}
    measured = {"sddmm": 2 * 2**20, "gather": None}  # gather refused: no measured point
    assert plot_memory_points(predicted, measured, title="case", ax=own_axes) is own_axes
    model, measurement = own_axes.lines
    assert model.get_xdata().tolist() == [3.0, 9.0] and model.get_ydata().tolist() == [0, 1]
    assert measurement.get_xdata().tolist() == [2.0] and measurement.get_ydata().tolist() == [0]
    labels = [t.get_text() for t in own_axes.get_yticklabels()]
    assert labels == ["sddmm", "gather (not run)"]
    assert own_axes.get_title() == "case" and own_axes.get_xscale() == "log"
    assert not own_axes.patches  # no bars on the log axis


@pytest.mark.parametrize(
    "predicted",
    [
        {"sddmm": 2.70 * 2**20, "gather": 15.59 * 2**20, "dense": 62.29 * 2**20},  # lesson 03
        {"sddmm": 2**20, "dense": 2**40},  # six decades
    ],
)
def test_memory_points_labels_do_not_overlap_and_the_model_stays_visible(own_axes, predicted):
    plot_memory_points(predicted, dict(predicted), ax=own_axes)  # measured == model
    model, measurement = own_axes.lines
    # The measured dot is smaller than the model's ring and drawn over it.
    assert measurement.get_markersize() < model.get_markersize()
    assert measurement.get_zorder() > model.get_zorder() and model.get_markerfacecolor() == "none"
    own_axes.figure.canvas.draw()
    renderer = own_axes.figure.canvas.get_renderer()
    low, high = own_axes.get_xlim()
    labels = [
        t
        for t in own_axes.get_xticklabels(which="both")
        if t.get_text() and low <= t.get_position()[0] <= high
    ]
    assert len(labels) >= 2, [t.get_text() for t in labels]  # a scale to read
    boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.x0)
    for k in range(1, len(boxes)):
        assert boxes[k - 1].x1 <= boxes[k].x0, "tick labels overlap"


@pytest.mark.parametrize(
    ("predicted", "measured", "error", "words"),
    [
        ({}, {}, InputTypeError, "predicted must be a non-empty dict"),
        ({"sddmm": 1}, {"dense": 1}, InputValueError, "measured names"),
    ],
)
def test_memory_points_errors(predicted, measured, error, words):
    with pytest.raises(error, match=words):
        plot_memory_points(predicted, measured)


@pytest.mark.parametrize(
    ("predicted", "measured", "error", "words"),
    [
        # A list of the right names used to pass as "measured" and fail at drawing.
        ({"sddmm": 1}, ["sddmm"], InputTypeError, "measured must be a dict name -> bytes"),
        ({"sddmm": "1"}, {"sddmm": None}, InputTypeError, r"predicted\['sddmm'\] must be a real"),
        ({"sddmm": 1}, {"sddmm": "1"}, InputTypeError, r"measured\['sddmm'\] must be a real"),
        ({"sddmm": 0}, {"sddmm": None}, InputValueError, r"byte count > 0, got 0"),
        ({"sddmm": 1}, {"sddmm": -5}, InputValueError, r"byte count >= 0, got -5"),
        ({"sddmm": math.inf}, {"sddmm": 1}, InputValueError, r"byte count > 0, got inf"),
    ],
)
def test_memory_points_check_the_byte_counts(predicted, measured, error, words):
    with pytest.raises(error, match=words):
        plot_memory_points(predicted, measured)


def test_memory_points_label_a_measurement_of_zero_bytes(own_axes):
    plot_memory_points({"sddmm": 2**20, "dense": 2**22}, {"sddmm": 0, "dense": 2**22}, ax=own_axes)
    labels = [t.get_text() for t in own_axes.get_yticklabels()]
    assert labels == ["sddmm (measured 0 B)", "dense"]
    assert own_axes.lines[1].get_xdata().tolist() == [4.0]  # no point for 0 on a log axis


# --------------------------------------------------------------------------- benchmark


@pytest.mark.parametrize(
    ("results", "path", "words"),
    [
        (3, None, "results must be a sequence of benchmark Results"),
        ("ok", None, "results must be a sequence of benchmark Results"),
        ([{"status": "ok"}], None, r"results\[0\] must be a benchmark Result .* got dict"),
        ([], 3, "path must be a str, a path or None, got int"),
    ],
)
def test_plot_benchmark_checks_its_arguments(results, path, words):
    with pytest.raises(InputTypeError, match=words):
        plot_benchmark(results, path)


def test_plot_benchmark_of_no_results_is_an_empty_figure():
    fig = plot_benchmark([])
    assert [ax.get_xlabel() for ax in fig.axes] == ["stored entries nnz (all batch items)"] * 2
    assert not any(ax.lines for ax in fig.axes)


def test_close_figure_closes_only_a_figure_it_is_given():
    fig, _ = plt.subplots()
    with pytest.raises(InputTypeError, match="close_figure: fig must be a matplotlib Figure"):
        close_figure("all")  # plt.close("all") would close every figure, the caller's too
    assert plt.fignum_exists(fig.number)
    close_figure(fig)
    assert not plt.fignum_exists(fig.number)


# --------------------------------------------------------------------------- weights recovered

_RECOVERY = {
    "signals": [40, 80, 160],
    "loss": [0.8, 0.9, 0.95],
    "error": [0.04, 0.02, 0.01],
    "floor": [0.83, 0.91, 0.96],
    "expected_error": [0.035, 0.021, 0.011],
}


def _recovery_figure(**changes):
    arguments = {**_RECOVERY, "noise_variance": 1.0, "chosen": (80, 0.9, 0.02), **changes}
    signals, loss, error = (arguments.pop(k) for k in ("signals", "loss", "error"))
    return plot_recovery(signals, loss, error, **arguments)


def test_plot_recovery_draws_each_curve_where_it_is_given():
    before = set(plt.get_fignums())
    fig = _recovery_figure(error_limits=(1e-3, 1.0))
    assert set(plt.get_fignums()) == before  # a Figure pyplot does not track
    fig.savefig(io.BytesIO(), format="png")  # every glyph drawn (a missing one warns: error)
    ax_loss, ax_error = fig.axes
    lines = {(ax is ax_error, line.get_label()): line for ax in fig.axes for line in ax.lines}
    assert lines[False, "least squares, this draw"].get_ydata().tolist() == _RECOVERY["loss"]
    assert lines[True, "least squares, this draw"].get_ydata().tolist() == _RECOVERY["error"]
    floor = lines[False, "noise floor σ²(1 − nnz/(np))"]
    assert floor.get_xdata().tolist() == _RECOVERY["signals"]
    assert floor.get_ydata().tolist() == _RECOVERY["floor"]
    model = next(line for (right, _), line in lines.items() if right and "model" in _)
    assert model.get_ydata().tolist() == _RECOVERY["expected_error"]
    assert list(lines[False, "noise variance σ²"].get_ydata()) == [1.0, 1.0]
    for ax, y in ((ax_loss, 0.9), (ax_error, 0.02)):  # the chosen setting, ringed on both
        ring = lines[ax is ax_error, "p = 80"]
        assert ring.get_xdata().tolist() == [80] and ring.get_ydata().tolist() == [y]
        assert ax.get_xscale() == "log" and ax.get_xlabel() == "signals p (log scale)"
    assert ax_loss.get_ylabel() == "minimum loss L (signal units²)"
    assert ax_error.get_yscale() == "log" and ax_error.get_ylim() == pytest.approx((1e-3, 1.0))


@pytest.mark.parametrize(
    ("changes", "error", "words"),
    [
        ({"signals": []}, InputTypeError, "signals must be a non-empty sequence"),
        ({"signals": [40, 0, 160]}, InputValueError, r"signals\[1\] must be >= 1"),
        ({"loss": [0.8, 0.9]}, InputValueError, "loss has 2 values, but x has 3"),
        ({"error": [0.04, 0.0, 0.01]}, InputValueError, r"error\[1\] must be a finite number > 0"),
        ({"floor": [0.8, math.nan, 0.9]}, InputValueError, r"floor\[1\] must be a finite"),
        ({"noise_variance": 0.0}, InputValueError, "noise_variance must be > 0"),
        ({"chosen": (80, 0.9)}, InputTypeError, r"chosen must be a tuple \(p, loss, error\)"),
        ({"chosen": (80, 0.9, 0.0)}, InputValueError, "the chosen error must be > 0"),
        ({"error_limits": (1.0, 0.1)}, InputValueError, "error_limits must satisfy 0 < low"),
    ],
)
def test_plot_recovery_checks_its_arguments(changes, error, words):
    with pytest.raises(error, match=f"plot_recovery: {words}"):
        _recovery_figure(**changes)


# --------------------------------------------------------------------------- draw_attention

# Four nodes: 0 attends to 1, 2, 3 and itself; a square-ish layout.
ATTENTION = torch.tensor(
    [
        [0.1, 0.6, 0.2, 0.1],
        [0.5, 0.5, 0.0, 0.0],
        [0.5, 0.0, 0.5, 0.0],
        [1.0, 0.0, 0.0, 0.0],
    ],
    dtype=torch.float64,
).to_sparse()
SQUARE = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])


def test_draw_attention_draws_the_row_wider_where_the_weight_is_larger(own_axes):
    draw_attention(ATTENTION, 0, SQUARE, groups=torch.tensor([0, 0, 1, 1]), ax=own_axes)
    graph, row = own_axes.collections[:2]
    assert len(graph.get_segments()) == 6  # every stored off-diagonal entry, grey
    segments, widths = row.get_segments(), row.get_linewidths()
    assert [s[1].tolist() for s in segments] == [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
    assert widths[0] > widths[1] > widths[2]  # 0.6 > 0.2 > 0.1
    labels = sorted(t.get_text() for t in own_axes.texts if "." in t.get_text())
    assert labels == ["0.10", "0.10", "0.20", "0.60"]  # three links and the self-loop
    assert own_axes.get_title() == "node 0: 4 weights, itself included"
    colours = own_axes.collections[2].get_facecolors()  # the nodes, by group
    assert (colours[0] == colours[1]).all() and not (colours[1] == colours[2]).all()


def test_draw_attention_without_an_axes_makes_a_figure_pyplot_does_not_hold():
    before = plt.get_fignums()
    fig = draw_attention(ATTENTION, 3, SQUARE, title="node 3")
    assert isinstance(fig, Figure) and fig.canvas.manager is None
    assert plt.get_fignums() == before  # nothing for Jupyter's pyplot flush to blank
    assert fig.axes[0].get_title() == "node 3"
    assert fig.axes[1].get_ylabel() == "attention weight α[3, j] (its row sums to 1)"
    fig.savefig(io.BytesIO(), format="png")


@pytest.mark.parametrize(
    ("changes", "error", "words"),
    [
        ({"weights": ATTENTION.to_dense()}, InputTypeError, "weights must be a sparse COO or CSR"),
        ({"weights": -ATTENTION}, InputValueError, "weights must be finite and >= 0"),
        ({"weights": torch.ones(2, 3).to_sparse()}, InputValueError, "weights must be a square"),
        ({"node": 4}, InputValueError, r"node must lie in \[0, 4\), got 4"),
        ({"positions": SQUARE[:3]}, InputValueError, r"positions must be real, shape \(n, 2\)"),
        ({"groups": torch.tensor([0.0, 1.0, 0.0, 1.0])}, InputTypeError, "groups must hold int"),
        ({"groups": torch.tensor([0, 1, -1, 1])}, InputValueError, "groups must be"),
    ],
)
def test_draw_attention_checks_its_arguments(changes, error, words):
    arguments = {"weights": ATTENTION, "node": 0, "positions": SQUARE, **changes}
    with pytest.raises(error, match=f"draw_attention: {words}"):
        draw_attention(**arguments)


def test_graph_layout_is_the_same_each_time_and_ignores_the_values():
    first = graph_layout(ATTENTION)
    assert first.shape == (4, 2) and first.dtype == torch.float64
    torch.testing.assert_close(graph_layout(ATTENTION * 7), first, rtol=0, atol=0)
    assert not torch.equal(graph_layout(ATTENTION, seed=1), first)  # the seed places it
    with pytest.raises(InputValueError, match="graph_layout: A must be a square 2-D matrix"):
        graph_layout(torch.ones(1, 2, 2).to_sparse())
