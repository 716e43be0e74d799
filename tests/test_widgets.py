"""The explorers: each control drives the pure function behind it, and the guard holds."""

import contextlib
import io
import time

import ipywidgets
import matplotlib
import pytest
import torch

from sparsegrad_lab import widgets
from sparsegrad_lab.errors import format_bytes

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
    with pytest.raises(ValueError, match=r"\(i, j\) must lie in 2 x 2, got \(2, 0\)"):
        widgets.gradient_entry_report(A, torch.ones(2, 1), torch.ones(2, 1), 2, 0)


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


# The threshold for a control that updates while dragged is about 0.2 s per callback;
# the bound here is generous because two cores are shared with other work during the tests.
CONTINUOUS_BOUND_S = 1.0


def lesson_explorers():
    """Every explorer, built as the lessons build it (01: 8 x 8, p = 4; 02, 03: defaults)."""
    A = (torch.rand(8, 8, generator=torch.Generator().manual_seed(0)) < 0.4).double().to_sparse()
    return {
        "gradient_entry": widgets.gradient_entry_explorer(
            A, torch.randn(8, 4, dtype=torch.float64), torch.randn(8, 4, dtype=torch.float64)
        ),
        "pattern": widgets.pattern_explorer(),
        "memory": widgets.memory_explorer(),
    }


def test_every_continuous_slider_answers_quickly_at_its_extremes():
    """A slider either acts on release (or behind a button) or its callback is fast.

    Each continuous slider is moved to its minimum, then its maximum (where it stays, so the
    next slider is timed with the earlier ones at their maxima), and the time of the callback,
    with the figure it draws rendered to PNG as a front end would, is bounded.
    """
    explorers = quietly(lesson_explorers)
    timed = []
    for name, explorer in explorers.items():
        for slider in explorer.kwargs_widgets:
            if not hasattr(slider, "min") or not slider.continuous_update:
                continue
            extremes = (slider.min, slider.max)
            if isinstance(slider, ipywidgets.FloatLogSlider):
                extremes = (slider.base**slider.min, slider.base**slider.max)
            for value in extremes:
                start = time.perf_counter()
                quietly(lambda slider=slider, value=value: setattr(slider, "value", value))
                figure = getattr(explorer.result, "figure", None)
                if figure is not None:
                    figure.savefig(io.BytesIO(), format="png")
                seconds = time.perf_counter() - start
                assert seconds < CONTINUOUS_BOUND_S, f"{name}.{slider.description}={value}"
                timed.append((name, slider.description))
    # What stays continuous: the cheap callbacks. What must not: anything that measures.
    assert {name for name, _ in timed} == {"gradient_entry", "memory"}
    assert not any(s.continuous_update for s in explorers["pattern"].kwargs_widgets[1:])
    assert hasattr(explorers["memory"], "manual_button")
