"""The explorers: each control drives the pure function behind it, and the guard holds."""

import contextlib
import io
import math

import matplotlib
import pytest
import torch

import sparsegrad_lab.ops
from benchmarks.widget_callbacks import (
    continuous_moves,
    lesson_explorers,
    move_slider,
    release_explorers,
    release_moves,
)
from sparsegrad_lab import widgets
from sparsegrad_lab.errors import InputTypeError, InputValueError, MemoryBudgetError, format_bytes
from sparsegrad_lab.example_matrices import MATRIX_KINDS, les_miserables

matplotlib.use("Agg")


def quietly(action):
    """Run a widget action, swallowing what its callback prints and displays."""
    with contextlib.redirect_stdout(io.StringIO()):
        return action()


def test_gradient_entry_report_matches_dense_gradient_for_complex():
    torch.manual_seed(0)
    dense = torch.randn(4, 5, dtype=torch.complex128) * (torch.rand(4, 5) < 0.5)
    dense[1, 2] = 1 + 1j  # make sure (1, 2) is stored
    A = dense.to_sparse()
    G = torch.randn(4, 3, dtype=torch.complex128)
    B = torch.randn(5, 3, dtype=torch.complex128)
    report = widgets.gradient_entry_report(A, G, B, 1, 2)
    expected = (G @ B.mH)[1, 2].item()
    assert report.stored
    assert report.grad == pytest.approx(expected)
    assert report.dot == pytest.approx(expected)


def test_gradient_entry_report_explains_unstored_entry():
    A = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).to_sparse()
    report = widgets.gradient_entry_report(A, torch.ones(2, 2), torch.ones(2, 2), 0, 1)
    assert not report.stored and report.grad is None
    assert "does not store (0, 1)" in report.text


def test_gradient_entry_report_rejects_out_of_range():
    A = torch.eye(2).to_sparse()
    with pytest.raises(InputValueError, match=r"i must lie in \[0, 2\), got 2"):
        widgets.gradient_entry_report(A, torch.ones(2, 1), torch.ones(2, 1), 2, 0)


@pytest.fixture
def no_backward(monkeypatch):
    """Fail the test if ``sparse_mm`` runs: a refused argument must cost no work."""

    def ran(*args, **kwargs):
        raise AssertionError("sparse_mm ran before the arguments were checked")

    monkeypatch.setattr(sparsegrad_lab.ops, "sparse_mm", ran)


EYE = torch.eye(2).to_sparse()
BATCH = torch.stack([torch.eye(2), torch.ones(2, 2)]).to_sparse()


@pytest.mark.parametrize(
    ("A", "G", "B", "index", "error", "words"),
    [
        # A float index used to reach the dot product after the backward: an IndexError.
        (
            EYE,
            torch.ones(2, 1),
            torch.ones(2, 1),
            (0.0, 1),
            InputTypeError,
            "i must be an int, got float",
        ),
        (
            EYE,
            torch.ones(2, 1),
            torch.ones(2, 1),
            (0, True),
            InputTypeError,
            "j must be an int, got bool",
        ),
        (
            EYE,
            torch.ones(2, 1),
            torch.ones(2, 1),
            (0, -1),
            InputValueError,
            r"j must lie in \[0, 2\)",
        ),
        # A batch used to fail with "too many values to unpack".
        (
            BATCH,
            torch.ones(2, 2, 1),
            torch.ones(2, 2, 1),
            (0, 1),
            InputValueError,
            r"A is a batch \(2, 2, 2\); name its item with item=t, 0 <= t < 2",
        ),
        (
            EYE,
            torch.ones(3, 1),
            torch.ones(2, 1),
            (0, 0),
            InputValueError,
            r"G must be \(n, p\) with n = 2; got G of shape \(3, 1\)",
        ),
        (
            EYE,
            torch.ones(2, 1),
            torch.ones(2, 2, 1),
            (0, 0),
            InputValueError,
            r"B must be \(m, p\)",
        ),
        (
            BATCH,
            torch.ones(2, 2, 1),
            torch.ones(3, 2, 1),
            (0, 0),
            InputValueError,
            r"B must be \(b, m, p\) with b = 2, m = 2",
        ),
        (
            EYE,
            torch.ones(2, 1),
            torch.ones(2, 2),
            (0, 0),
            InputValueError,
            "same number of columns p",
        ),
        (
            EYE,
            torch.ones(2, 1),
            torch.ones(2, 1, dtype=torch.float64),
            (0, 0),
            InputTypeError,
            "G and B must have the same dtype",
        ),
        (EYE, torch.ones(2, 1), EYE, (0, 0), InputTypeError, "B must be a dense tensor"),
        (
            torch.eye(2),
            torch.ones(2, 1),
            torch.ones(2, 1),
            (0, 0),
            InputTypeError,
            "A must be sparse",
        ),
        (
            [[1.0]],
            torch.ones(1, 1),
            torch.ones(1, 1),
            (0, 0),
            InputTypeError,
            "A must be a sparse torch.Tensor",
        ),
        # Zero sizes: no entry to explain, or no column to sum over.
        (
            torch.zeros(0, 2).to_sparse(),
            torch.ones(0, 1),
            torch.ones(2, 1),
            (0, 0),
            InputValueError,
            r"A \(0, 2\) has no entry",
        ),
        (EYE, torch.ones(2, 0), torch.ones(2, 0), (0, 0), InputValueError, r"p = 0"),
    ],
)
def test_gradient_entry_report_checks_every_argument_before_the_backward(
    A, G, B, index, error, words, no_backward
):
    with pytest.raises(error, match=f"^gradient_entry_report: .*{words}"):
        widgets.gradient_entry_report(A, G, B, *index)


def test_gradient_entry_report_refuses_an_item_for_a_2d_matrix(no_backward):
    with pytest.raises(InputValueError, match="item names a batch item, but A is 2-D"):
        widgets.gradient_entry_report(EYE, torch.ones(2, 1), torch.ones(2, 1), 0, 0, item=0)
    with pytest.raises(InputValueError, match=r"item must lie in \[0, 2\), got 2"):
        widgets.gradient_entry_report(BATCH, torch.ones(2, 2, 1), torch.ones(2, 2, 1), 0, 0, item=2)


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_gradient_entry_report_of_a_batch_explains_the_named_item(layout):
    gen = torch.Generator().manual_seed(1)
    # One pattern for every item: torch builds a batched CSR only with equal nnz per item.
    pattern = torch.rand(4, 5, generator=gen) < 0.6
    pattern[1, 3], pattern[0, 4] = True, False  # (t, 1, 3) stored, (t, 0, 4) not
    dense = torch.randn(3, 4, 5, generator=gen, dtype=torch.float64) * pattern
    A = dense.to_sparse() if layout == "coo" else dense.to_sparse_csr()
    G = torch.randn(3, 4, 2, generator=gen, dtype=torch.float64)
    B = torch.randn(3, 5, 2, generator=gen, dtype=torch.float64)
    expected = G @ B.mT  # the dense gradient of <G, A B> with respect to A, item by item
    report = widgets.gradient_entry_report(A, G, B, 1, 3, item=2)
    assert (report.item, report.i, report.j, report.stored) == (2, 1, 3, True)
    assert report.grad == pytest.approx(expected[2, 1, 3].item(), abs=1e-12)
    assert report.dot == pytest.approx(expected[2, 1, 3].item(), abs=1e-12)
    assert report.text.startswith("dL/dA[2, 1, 3] = G[2, 1, :] · B[2, 3, :] = ")
    title = report.figure.axes[0].get_title()
    matplotlib.pyplot.close(report.figure)
    assert title.startswith("item 2: ")
    unstored = widgets.gradient_entry_report(A, G, B, 0, 4, item=2)
    matplotlib.pyplot.close(unstored.figure)
    assert not unstored.stored and unstored.grad is None
    assert unstored.text.startswith("A does not store (2, 0, 4)")
    assert unstored.dot == pytest.approx(expected[2, 0, 4].item(), abs=1e-12)


def test_gradient_entry_explorer_refuses_a_matrix_without_rows(no_backward):
    # Used to fail building the slider: TraitError "setting max < min".
    with pytest.raises(InputValueError, match=r"gradient_entry_explorer: A \(0, 3\) has no entry"):
        widgets.gradient_entry_explorer(
            torch.zeros(0, 3).to_sparse(), torch.ones(0, 2), torch.ones(3, 2)
        )


def test_gradient_entry_explorer_of_a_batch_has_an_item_slider():
    A = torch.stack([torch.eye(3), torch.ones(3, 3)]).to_sparse()
    G, B = torch.ones(2, 3, 2), torch.ones(2, 3, 2)
    explorer = quietly(lambda: widgets.gradient_entry_explorer(A, G, B))
    _, j_slider, item_slider = explorer.kwargs_widgets
    assert (item_slider.min, item_slider.max, item_slider.description) == (0, 1, "item t")
    quietly(lambda: setattr(j_slider, "value", 2))
    assert (explorer.result.item, explorer.result.stored) == (0, False)  # eye: (0, 2) empty
    quietly(lambda: setattr(item_slider, "value", 1))
    assert (explorer.result.item, explorer.result.stored) == (1, True)  # ones: all stored


def test_gradient_entry_explorer_sliders_drive_the_report():
    A = torch.eye(3).to_sparse()
    explorer = quietly(
        lambda: widgets.gradient_entry_explorer(A, torch.ones(3, 2), torch.ones(3, 2))
    )
    i_slider, j_slider = explorer.children[:2]
    assert (explorer.result.i, explorer.result.j) == (0, 0)
    quietly(lambda: setattr(j_slider, "value", 2))
    assert (explorer.result.j, explorer.result.stored) == (2, False)
    quietly(lambda: setattr(i_slider, "value", 2))
    assert explorer.result.stored and explorer.result.grad == pytest.approx(2.0)


def test_pattern_explorer_controls_change_the_pattern():
    explorer = quietly(lambda: widgets.pattern_explorer(n=200, density=0.01))
    first = explorer.result
    quietly(lambda: setattr(explorer.children[0], "value", "banded"))
    assert explorer.result.name == "banded" and explorer.result.text != first.text
    quietly(lambda: setattr(explorer.children[1], "value", 400))
    assert explorer.result.shape == (400, 400)


def test_pattern_explorer_refuses_an_unknown_name_and_lists_the_known_ones():
    # Used to fail inside the dropdown: TraitError "Invalid selection: value not found".
    with pytest.raises(InputValueError) as refused:
        widgets.pattern_explorer(name="bogus")
    message = str(refused.value)
    assert message.startswith("pattern_explorer: name must be one of ")
    assert all(repr(kind) in message for kind in MATRIX_KINDS) and "got 'bogus'" in message


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        # Off the slider, a value used to be clamped silently to its end.
        ({"n": 10**6}, InputValueError, r"pattern_explorer: n must lie in \[20, 5001\)"),
        ({"n": 500.0}, InputTypeError, "pattern_explorer: n must be an int, got float"),
        ({"density": 0.9}, InputValueError, r"pattern_explorer: density must lie in \[0.0001, "),
        ({"name": ["uniform"]}, InputValueError, "pattern_explorer: name must be one of"),
    ],
)
def test_pattern_explorer_checks_its_starting_values(options, error, words):
    with pytest.raises(error, match=words):
        widgets.pattern_explorer(**options)


def test_pattern_report_names_itself_when_refusing_a_name_or_seed():
    with pytest.raises(InputValueError, match=r"^pattern_report: name must be one of"):
        widgets.pattern_report("bogus", 100, 0.01)
    with pytest.raises(InputTypeError, match=r"^pattern_report: seed must be an int"):
        widgets.pattern_report("karate_club", 100, 0.01, seed=0.5)  # ignored, still checked


def test_pattern_report_refuses_over_budget():
    report = widgets.pattern_report("uniform", 1000, 0.5, budget=1000)
    assert report.figure is None and report.text.startswith("refused")


def test_memory_report_orders_strategies_and_measures_them():
    report = widgets.memory_report(400, 0.02, 16)
    assert set(report.measured) == {"sddmm", "gather", "dense"}
    assert all(v is not None and v > 0 for v in report.measured.values())
    assert report.measured["dense"] > report.measured["sddmm"]
    model, measurement = report.figure.axes[0].lines
    assert (model.get_xdata() * 2**20).tolist() == pytest.approx(list(report.predicted.values()))
    drawn = (measurement.get_xdata() * 2**20).tolist()
    assert drawn == pytest.approx(list(report.measured.values()))


def test_memory_report_guard_refuses_instead_of_running():
    report = widgets.memory_report(400, 0.02, 16, budget=64 * 1024)
    assert report.measured["dense"] is None
    assert "refused" in report.text


def test_memory_explorer_slider_previews_and_button_measures():
    explorer = quietly(lambda: widgets.memory_explorer(n=200, density=0.01, p=4))
    measured_first = explorer.result
    assert measured_first.case == {"n": 200, "nnz": 400, "p": 4}
    shown = io.StringIO()
    with contextlib.redirect_stdout(shown):
        explorer.kwargs_widgets[2].value = 8
    assert explorer.result is measured_first  # moving a slider measures nothing
    # (without a front end, clearing the output area prints terminal escapes first)
    assert shown.getvalue().endswith(widgets.memory_preview(200, 0.01, 8) + "\n")
    quietly(explorer.manual_button.click)
    assert explorer.result.case["p"] == 8 and explorer.result.measured["sddmm"] is not None


@pytest.mark.parametrize(
    ("args", "options", "error", "words"),
    [
        # A negative density used to be previewed as one stored entry.
        ((1000, -1.0, 8), {}, InputValueError, r"density must lie in \[0.0, 1.0\]"),
        ((1000, 0.0, 8), {}, InputValueError, r"density must lie in \(0, 1\]"),
        ((1000, 0.01, 8.0), {}, InputTypeError, "p must be an int, got float"),
        ((0, 0.01, 8), {}, InputValueError, "n must be >= 1, got 0"),
        ((1000, 0.01, 8), {"budget": -1}, InputValueError, "budget must be >= 0"),
    ],
)
@pytest.mark.parametrize("func", ["memory_preview", "memory_report"])
def test_memory_preview_and_report_check_the_setting(func, args, options, error, words):
    with pytest.raises(error, match=f"^{func}: {words}"):
        getattr(widgets, func)(*args, **options)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"n": 0}, r"n must lie in \[100, 20001\), got 0"),
        ({"n": 10**6}, r"n must lie in \[100, 20001\)"),
        ({"density": 0.5}, "density must lie in"),
        ({"p": 1000}, r"p must lie in \[1, 257\)"),
    ],
)
def test_memory_explorer_checks_its_starting_values(options, words):
    # Off the slider, a value used to be clamped silently -- and then measured.
    with pytest.raises(InputValueError, match=f"^memory_explorer: {words}"):
        widgets.memory_explorer(**options)


def test_memory_preview_predicts_what_the_report_then_runs():
    budget = 4 * 2**20
    preview = widgets.memory_preview(1000, 0.02, 16, budget=budget)
    report = widgets.memory_report(1000, 0.02, 16, budget=budget)
    assert f"nnz = {report.case['nnz']}" in preview
    refused = 0
    for strategy, nbytes in report.predicted.items():
        line = next(x for x in preview.splitlines() if x.startswith(f"{strategy:>6}:"))
        assert format_bytes(nbytes) in line
        assert ("will be refused" in line) == (report.measured[strategy] is None)
        refused += report.measured[strategy] is None
    assert refused == 1  # dense only: the case straddles the budget


def test_every_continuous_slider_runs_one_bounded_callback_at_its_extremes(monkeypatch):
    """A slider that updates while dragged runs a callback that costs little work.

    Each continuous slider of the lessons' explorers goes to each end of its range (and stays at
    its maximum, so the next slider moves with the earlier ones at theirs): the callback must
    run for that value, run at most one forward and backward (the gradient explorer's), measure
    nothing (the memory explorer only previews the model's prediction; its button measures) and
    leave no figure open. How long the callbacks take is a benchmark, not a test (the machines
    that run the tests are shared): ``make widget-times`` (benchmarks/widget_callbacks.py).
    """
    explorers = lesson_explorers()  # measures the memory explorer's starting setting, once
    products, measurements = [], []
    sparse_mm = sparsegrad_lab.ops.sparse_mm

    def counted_sparse_mm(*args, **kwargs):
        products.append(args)
        return sparse_mm(*args, **kwargs)

    def refused_sweep(*args, **kwargs):
        measurements.append(args)  # recorded: interactive swallows a callback's exception
        raise AssertionError("a slider's callback measured")

    monkeypatch.setattr(sparsegrad_lab.ops, "sparse_mm", counted_sparse_mm)
    monkeypatch.setattr(widgets, "sweep", refused_sweep)
    moved = set()
    for move in continuous_moves(explorers):
        products.clear()
        figures = set(matplotlib.pyplot.get_fignums())
        before = move.explorer.result
        printed = move_slider(move)
        result = move.explorer.result
        assert set(matplotlib.pyplot.get_fignums()) == figures, f"{move.name} left a figure open"
        assert len(products) <= 1, f"{move.name} ran sparse_mm {len(products)} times"
        assert measurements == [], f"{move.name} measured"
        if hasattr(move.explorer, "manual_button"):
            # A preview of this setting, printed, and the last measurement left as it was.
            values = [control.value for control in move.explorer.kwargs_widgets]
            assert printed.endswith(widgets.memory_preview(*values) + "\n"), move.name
            assert result is before, move.name
        else:
            # A new report, for the sliders' values: the callback ran and did not raise.
            assert result is not before, f"{move.name}: the callback did not run"
            for name, value in move.explorer.kwargs.items():
                assert getattr(result, name, value) == value, f"{move.name}: {name}"
        moved.add(move.explorer_name)
    # What stays continuous: the cheap callbacks. What must not: anything that measures.
    assert moved == {"gradient_entry", "memory"}
    assert not any(s.continuous_update for s in explorers["pattern"].kwargs_widgets[1:])
    assert hasattr(explorers["memory"], "manual_button")


# ----------------------------------------------------------------------- recovery explorer


def _true_weights():
    """Les Misérables' row-normalised weights, as lesson 04 hides them (float64)."""
    graph = les_miserables(dtype=torch.float64)
    rows, magnitudes = graph.indices()[0], graph.values().abs()
    sums = torch.zeros(graph.shape[0], dtype=torch.float64).index_add_(0, rows, magnitudes)
    return torch.sparse_coo_tensor(
        graph.indices(), magnitudes / sums[rows], graph.shape, check_invariants=True
    ).coalesce()


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_recovery_report_is_each_row_least_squares_fit(layout):
    W = _true_weights()
    p, sigma, seed = 50, 0.05, 3
    report = widgets.recovery_report(
        W if layout == "coo" else W.to_sparse_csr(), p, sigma, seed=seed
    )
    # The same draw, solved row by row with lstsq (exercise 1's reference) and judged here.
    n = W.shape[0]
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 512, generator=gen, dtype=torch.float64)[:, :p]
    E = torch.randn(n, 512, generator=gen, dtype=torch.float64)[:, :p]
    Y = W.to_dense() @ X + sigma * E
    rows, cols = W.indices()
    w = torch.cat(
        [
            torch.linalg.lstsq(X[cols[rows == i]].T, Y[i].unsqueeze(1)).solution.squeeze(1)
            for i in range(n)
        ]
    )
    fitted = torch.sparse_coo_tensor(W.indices(), w, W.shape).to_dense() @ X
    assert report.loss == pytest.approx(((fitted - Y) ** 2).mean().item(), rel=1e-9)
    error = ((w - W.values()).norm() / W.values().norm()).item()
    assert report.error == pytest.approx(error, rel=1e-9)
    assert report.floor == pytest.approx(sigma**2 * (1 - W._nnz() / (n * p)), rel=1e-12)
    assert f"{report.error:.3g}" in report.text and f"{report.floor:.3g}" in report.text
    matplotlib.pyplot.close(report.figure)


def test_recovery_report_curves_are_the_same_draw_as_the_chosen_setting():
    W = _true_weights()
    first = widgets.recovery_report(W, 64, 0.02)
    q = first.signals[5]
    again = widgets.recovery_report(W, q, 0.3)  # another noise level: everything scales
    ax_loss, ax_error = first.figure.axes
    draw = {
        ax: next(line for line in ax.lines if line.get_label() == "least squares, this draw")
        for ax in (ax_loss, ax_error)
    }
    k = draw[ax_error].get_xdata().tolist().index(q)
    # On the curves of sigma = 0.02, the fit of the same draw at p = q, solved directly.
    assert draw[ax_error].get_ydata()[k] * 0.3 / 0.02 == pytest.approx(again.error, rel=1e-8)
    assert draw[ax_loss].get_ydata()[k] * (0.3 / 0.02) ** 2 == pytest.approx(again.loss, rel=1e-8)
    # The error axis does not follow the noise level: it spans every level offered.
    assert again.figure.axes[1].get_ylim() == pytest.approx(ax_error.get_ylim())
    for report in (first, again):
        matplotlib.pyplot.close(report.figure)


def test_recovery_report_meets_its_models_on_average():
    """Over 8 draws the mean minimum loss is the noise floor and the error meets its model.

    One draw's loss lies within about 2 % of the floor and its error within 10 % of the model
    (here); the floor without its correction, sigma^2, is 8 % above.
    """
    W = _true_weights()
    reports = [widgets.recovery_report(W, 80, 0.1, seed=seed) for seed in range(8)]
    mean_loss = sum(r.loss for r in reports) / len(reports)
    mean_squared_error = sum(r.error**2 for r in reports) / len(reports)
    assert mean_loss == pytest.approx(reports[0].floor, rel=0.02)
    assert math.sqrt(mean_squared_error) == pytest.approx(reports[0].expected_error, rel=0.1)
    for report in reports:
        matplotlib.pyplot.close(report.figure)


_EYE = torch.eye(3).to_sparse()


@pytest.mark.parametrize(
    ("W", "p", "sigma", "error", "words"),
    [
        (torch.eye(3), 8, 0.1, InputTypeError, "W must be sparse"),
        (_EYE.to(torch.complex64), 8, 0.1, InputTypeError, "W must hold real floating-point"),
        (torch.stack([_EYE] * 2), 8, 0.1, InputValueError, "W must be one 2-D matrix"),
        (0 * _EYE, 8, 0.1, InputValueError, r"W \(3, 3\) must store at least one nonzero"),
        (_EYE, 2, 0.1, InputValueError, r"p must lie in \[3, 512\]"),
        (_EYE, 513, 0.1, InputValueError, r"p must lie in \[3, 512\]"),
        (_EYE, 8.0, 0.1, InputTypeError, "p must be an int"),
        (_EYE, 8, 0.0, InputValueError, "sigma must lie in"),
        (_EYE, 8, 2.0, InputValueError, "sigma must lie in"),
    ],
)
def test_recovery_report_checks_its_arguments(W, p, sigma, error, words):
    with pytest.raises(error, match=f"recovery_report: {words}"):
        widgets.recovery_report(W, p, sigma)


def test_recovery_report_and_explorer_refuse_a_draw_over_the_budget(monkeypatch):
    def drew(*args, **kwargs):
        raise AssertionError("the signals were drawn before the budget was checked")

    monkeypatch.setattr(widgets.torch, "randn", drew)
    with pytest.raises(MemoryBudgetError, match="recovery_report on W 77 x 77"):
        widgets.recovery_report(_true_weights(), 64, 0.02, budget=2**20)
    monkeypatch.setattr(widgets, "LAB_BUDGET_BYTES", 2**20)
    with pytest.raises(MemoryBudgetError, match="recovery_explorer on W 77 x 77"):
        widgets.recovery_explorer(_true_weights())


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"p": 37}, r"p must lie in \[38, 513\)"),
        ({"sigma": 0.0}, "sigma must lie in"),
        ({"seed": -1}, "seed must be >= 0"),
    ],
)
def test_recovery_explorer_checks_its_starting_values(options, words):
    with pytest.raises(InputValueError, match=f"recovery_explorer: {words}"):
        widgets.recovery_explorer(_true_weights(), **options)


def test_recovery_explorer_sliders_act_on_release_and_drive_the_report():
    W = _true_weights()
    figures = set(matplotlib.pyplot.get_fignums())
    explorer = quietly(lambda: widgets.recovery_explorer(W))
    p_slider, sigma_slider = explorer.kwargs_widgets
    assert not p_slider.continuous_update and not sigma_slider.continuous_update
    assert (p_slider.min, p_slider.max) == (38, 512)  # largest degree 36, + 2
    assert explorer.result.p == 64
    quietly(lambda: setattr(p_slider, "value", 200))
    quietly(lambda: setattr(sigma_slider, "value", 0.1))
    assert (explorer.result.p, explorer.result.sigma) == (200, pytest.approx(0.1))
    assert explorer.result.error < widgets.recovery_report(W, 64, 0.1).error
    assert set(matplotlib.pyplot.get_fignums()) == figures  # nothing left open


def test_every_slider_on_release_runs_its_callback_at_its_extremes(monkeypatch):
    """The benchmark's moves of the sliders that act on release: each runs one callback.

    ``make widget-times`` times them (against a budget of their own); here each move must give
    a report for the slider's value, measure nothing and leave no figure open.
    """
    explorers = release_explorers()
    monkeypatch.setattr(widgets, "sweep", lambda *a, **k: pytest.fail("a callback measured"))
    moved = []
    for move in release_moves(explorers):
        figures = set(matplotlib.pyplot.get_fignums())
        before = move.explorer.result
        move_slider(move)
        result = move.explorer.result
        assert result is not before, f"{move.name}: the callback did not run"
        assert set(matplotlib.pyplot.get_fignums()) == figures, f"{move.name} left a figure open"
        for name, value in move.explorer.kwargs.items():
            assert getattr(result, name) == pytest.approx(value), f"{move.name}: {name}"
        moved.append(move.name)
    assert {name.split(":")[0] for name in moved} == {"recovery", "attention"}
    # recovery: two sliders, each to its minimum and back to its maximum; attention: its node
    # slider starts at its minimum, so to its maximum, back, and to its maximum again.
    assert len(moved) == 4 + 3


# ---------------------------------------------------------------------- attention explorer


def _karate_attention():
    from benchmarks.widget_callbacks import karate_attention_weights

    return karate_attention_weights()


def test_attention_report_lists_the_row_largest_first_and_the_share_of_the_own_group():
    alpha = _karate_attention()["layer 1"]
    groups = torch.arange(34) % 2
    report = widgets.attention_report(alpha, 33, groups=groups, layer="layer 1")
    row = alpha.to_dense()[33]
    stored = alpha.coalesce().indices()[1][alpha.coalesce().indices()[0] == 33]
    assert sorted(report.neighbours) == sorted(stored.tolist())
    assert report.weights == sorted(report.weights, reverse=True)
    assert report.weights == [row[j].item() for j in report.neighbours]
    own = sum(a for j, a in zip(report.neighbours, report.weights, strict=True) if j % 2 == 1)
    assert report.text.endswith(f"its own group (1) gets {own:.0%}")
    assert report.text.startswith(f"layer 1, node 33 (group 1): {len(stored)} weights")
    assert f"each {1 / len(stored):.2f}" in report.text
    assert report.figure.canvas.manager is None  # drawn without pyplot
    assert report._repr_png_().startswith(b"\x89PNG")


def test_attention_explorer_slider_and_dropdown_drive_the_report(monkeypatch):
    before = matplotlib.pyplot.get_fignums()
    explorer = quietly(lambda: widgets.attention_explorer(_karate_attention()))
    node, layer = explorer.kwargs_widgets
    assert not node.continuous_update  # drawing takes tenths of a second: on release
    layouts = []
    monkeypatch.setattr(widgets, "graph_layout", lambda *a, **k: layouts.append(a))
    quietly(lambda: setattr(node, "value", 5))
    assert (explorer.result.node, explorer.result.layer) == (5, "layer 1")
    quietly(lambda: setattr(layer, "value", "layer 2"))
    assert (explorer.result.node, explorer.result.layer) == (5, "layer 2")
    assert layouts == []  # laid out once, when built: a node stays where it is
    assert matplotlib.pyplot.get_fignums() == before  # no figure left for pyplot to flush


def test_attention_explorer_shows_the_figure_as_an_image(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj, **k: shown.append(obj))
    quietly(lambda: widgets.attention_explorer(_karate_attention()["layer 2"], node=3))
    (image,) = shown
    assert type(image).__name__ == "Image" and image.data.startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("weights", "options", "error", "words"),
    [
        (torch.eye(3), {}, InputTypeError, "weights must be a sparse COO or CSR"),
        ({}, {}, InputValueError, "weights must be a matrix or a non-empty dict"),
        (
            {"a": torch.eye(3).to_sparse(), "b": torch.eye(4).to_sparse()},
            {},
            InputValueError,
            "every layer's weights must be",
        ),
        (torch.eye(3).to_sparse(), {"node": 3}, InputValueError, r"node must lie in \[0, 3\)"),
        (-torch.eye(3).to_sparse(), {}, InputValueError, "weights must be finite and >= 0"),
        (torch.eye(3).to_sparse(), {"groups": torch.ones(3)}, InputValueError, "groups must be"),
        (
            torch.eye(3).to_sparse(),
            {"positions": torch.ones(2, 2)},
            InputValueError,
            r"positions must be None or a dense real tensor \(n, 2\) = \(3, 2\)",
        ),
    ],
)
def test_attention_explorer_checks_its_arguments_before_building(weights, options, error, words):
    with pytest.raises(error, match=f"attention_explorer: {words}"):
        widgets.attention_explorer(weights, **options)


def test_no_callback_draws_through_pyplot(monkeypatch):
    """Every explorer's callback draws on a figure pyplot never holds.

    With ipykernel 7 a widget callback runs on a subshell while the inline backend may flush
    pyplot's open figures, which shows a figure half drawn: a blank image. A figure pyplot does
    not know of is shown once, by the callback, when it is complete.
    """
    explorers = {**lesson_explorers(), **release_explorers()}
    made_by_pyplot = []
    pyplot_figure = matplotlib.pyplot.figure

    def recorded_figure(*args, **kwargs):
        made_by_pyplot.append(args)
        return pyplot_figure(*args, **kwargs)

    monkeypatch.setattr(matplotlib.pyplot, "figure", recorded_figure)
    moves = [*continuous_moves(explorers), *release_moves(explorers)]
    assert {move.explorer_name for move in moves} == set(explorers)
    for move in moves:
        move_slider(move)
        assert made_by_pyplot == [], f"{move.name} drew through pyplot"
        figure = move.explorer.result.figure  # the pattern explorer draws none past a limit
        assert figure is None or figure.canvas.manager is None, move.name


_TWO_EXPLORERS = """\
import torch
from sparsegrad_lab.example_matrices import uniform_random
from sparsegrad_lab.widgets import gradient_entry_explorer, pattern_explorer

A = uniform_random(6, 8, nnz=14, seed=4, dtype=torch.float64)
G, B = torch.ones(6, 5, dtype=torch.float64), torch.ones(8, 5, dtype=torch.float64)
display(gradient_entry_explorer(A, G, B))
display(pattern_explorer("banded", 200, 0.05))
"""


@pytest.mark.slow
def test_a_notebook_runner_has_nothing_to_send_back_for_a_first_view(monkeypatch, tmp_path):
    """nbclient (nbgrader's autograder, ``nbconvert --execute``) stands in for the browser's
    output area: what a cell shows inside one is sent back to the kernel on the shell socket,
    which can stall the runner for its whole cell timeout (jupyter/nbclient#312). An
    explorer's first view goes into the area's ``outputs`` instead: nothing is sent back, and
    the executed notebook holds the view (its text and its image)."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from nbclient.output_widget import OutputWidget

    sent = []
    monkeypatch.setattr(OutputWidget, "send", lambda self, *args, **kwargs: sent.append(args))
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(_TWO_EXPLORERS)])
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    )
    client.execute()
    assert not sent
    states = notebook.metadata.widgets["application/vnd.jupyter.widget-state+json"]["state"]
    views = [s["state"]["outputs"] for s in states.values() if s["model_name"] == "OutputModel"]
    assert len(views) == 2
    for view in views:
        assert [output["output_type"] for output in view] == ["stream", "display_data"]
        assert "image/png" in view[1]["data"]
    assert "a dense gradient would hold" in "".join(view[0]["text"] for view in views)
