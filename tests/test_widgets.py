"""The explorers: each control drives the pure function behind it, and the guard holds."""

import contextlib
import io

import matplotlib
import pytest
import torch

from sparsegrad_lab import widgets

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
    bars = [bar.get_height() * 2**20 for bar in report.figure.axes[0].patches]
    assert bars == pytest.approx([*report.predicted.values(), *report.measured.values()])


def test_memory_report_guard_refuses_instead_of_running():
    report = widgets.memory_report(400, 0.02, 16, budget=64 * 1024)
    assert report.measured["dense"] is None
    assert "refused" in report.text


def test_memory_explorer_slider_changes_the_case():
    explorer = quietly(lambda: widgets.memory_explorer(n=200, density=0.01, p=4))
    quietly(lambda: setattr(explorer.children[2], "value", 8))
    assert explorer.result.case["p"] == 8
