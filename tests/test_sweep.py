"""Tests of :mod:`sparsegrad_lab.sweep`: small sweeps, the guard's refusals, the progress bar.

Every measured sweep here is a few MiB per point, so the whole module runs in seconds.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from testing import CUDA_DEVICE_PARAMS

from sparsegrad_lab import MemoryBudgetError
from sparsegrad_lab import memory_model as model
from sparsegrad_lab import sweep as sweep_module
from sparsegrad_lab.errors import InputTypeError, InputValueError
from sparsegrad_lab.implementations import Case, make_inputs
from sparsegrad_lab.memory_guard import check_fits
from sparsegrad_lab.sweep import SweepResult, sweep

#: The model's promised agreement with the in-process measurement (``predict_peak_bytes``).
MODEL_RTOL = 0.10

# Peaks of about 1-25 MiB: where predict_peak_bytes states its 10 % tolerance.
BASE = {"n": 2000, "m": 3000, "nnz": 30_000}

pytestmark = pytest.mark.usefixtures("torch_single_thread")


@pytest.fixture
def ordinary_runs() -> Iterator[None]:
    # The suite turns torch's sparse invariant checks on; they allocate, and the model
    # describes ordinary runs (the lessons switch them off in setup()).
    with torch.sparse.check_sparse_tensor_invariants(enable=False):
        yield


@pytest.mark.usefixtures("ordinary_runs")
def test_measured_sweep_agrees_with_the_model() -> None:
    r = sweep("p", [8, 32], base=BASE, repeats=1, progress=False)
    assert r.impls == ("sddmm", "gather", "dense")
    assert [c.p for c in r.cases] == [8, 32]
    for impl in r.impls:
        assert r.refused[impl] == [False, False]
        assert r.messages[impl] == ["", ""]
        for case, predicted, measured, seconds in zip(
            r.cases, r.predicted[impl], r.measured[impl], r.time_s[impl], strict=True
        ):
            assert predicted == model.predict_peak_bytes(impl, case)
            assert measured is not None and seconds is not None and seconds > 0
            assert abs(measured - predicted) <= MODEL_RTOL * measured, (
                f"{impl} at {case}: measured {measured} B, model {predicted} B"
            )
        errors = r.relative_error()[impl]
        assert all(e is not None and abs(e) <= MODEL_RTOL for e in errors), errors
    # The strategies' order the lessons teach, measured: sddmm < gather < dense at p = 32.
    at_32 = {impl: r.measured[impl][1] or 0 for impl in r.impls}
    assert at_32["sddmm"] < at_32["gather"] < at_32["dense"]


@pytest.mark.usefixtures("ordinary_runs")
def test_point_above_the_budget_is_refused_and_never_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[tuple[str, int]] = []

    def recording(case: Case) -> Any:
        built.append(case.n)
        return make_inputs(case)

    monkeypatch.setattr(sweep_module, "make_inputs", recording)
    small, big = 300, 3000
    sizes = {"m": 300, "nnz": 3000, "p": 8}
    dense_big = model.predict_peak_bytes("dense", n=big, **sizes)
    budget = dense_big - 1  # everything fits except dense at n = 3000
    assert model.predict_peak_bytes("dense", n=small, **sizes) <= budget
    r = sweep(
        "n",
        [small, big],
        base=sizes,
        impls=["sddmm", "dense"],
        repeats=1,
        budget=budget,
        progress=False,
    )
    assert r.refused == {"sddmm": [False, False], "dense": [False, True]}
    assert r.measured["dense"][1] is None and r.time_s["dense"][1] is None
    assert r.measured["dense"][0] is not None and r.measured["sddmm"][1] is not None
    assert built == [small, small, big]  # sddmm and dense at n = 300, sddmm at n = 3000
    what = Case(n=big, **sizes).describe("dense")
    [message] = r.refusals()
    assert message == r.messages["dense"][1]
    assert message.startswith(f"{what} would need ")
    assert "refused before running" in message
    # The message is the guard's own: check_fits raises the same text.
    with pytest.raises(MemoryBudgetError) as refusal:
        check_fits(dense_big, budget=budget, what=what)
    assert str(refusal.value) == message
    curves = r.memory_curves()
    assert curves["series"]["dense"][1] is None  # a gap in the plot
    assert curves["model"]["dense"][1] == pytest.approx(dense_big / 2**20)


@pytest.mark.usefixtures("ordinary_runs")
def test_progress_bar_does_not_change_results(capsys: pytest.CaptureFixture[str]) -> None:
    kwargs: dict[str, Any] = {"base": {"n": 400, "nnz_per_row": 5, "p": 8}, "repeats": 1}
    quiet = sweep("n", [200, 400], progress=False, **kwargs)
    assert capsys.readouterr().err == ""
    shown = sweep("n", [200, 400], progress=True, **kwargs)
    err = capsys.readouterr().err
    assert "sweep n" in err and "6/6" in err
    for field in ("values", "cases", "predicted", "measured", "refused", "messages"):
        assert getattr(shown, field) == getattr(quiet, field), field
    assert all(t is not None for impl in shown.impls for t in shown.time_s[impl])


def test_cases_follow_the_base_and_the_swept_parameter() -> None:
    def cases(parameter: str, values: list[Any], **base: Any) -> list[tuple[int, ...]]:
        r = sweep(parameter, values, base=base, measure=False, progress=False)
        assert r.measured == {k: [None] * len(values) for k in r.impls}
        return [(c.n, c.m, c.nnz, c.p) for c in r.cases]

    # m follows n unless fixed; the default sparsity is 10 entries per row, p = 32.
    assert cases("n", [100, 200]) == [(100, 100, 1000, 32), (200, 200, 2000, 32)]
    assert cases("n", [100, 200], m=50) == [(100, 50, 1000, 32), (200, 50, 2000, 32)]
    assert cases("n", [100, 200], density=0.1) == [(100, 100, 1000, 32), (200, 200, 4000, 32)]
    assert cases("n", [100, 200], nnz=500) == [(100, 100, 500, 32), (200, 200, 500, 32)]
    assert cases("density", [0.01, 0.5], n=100, p=4) == [(100, 100, 100, 4), (100, 100, 5000, 4)]
    assert cases("nnz", [7], n=10, m=20, density=0.5) == [(10, 20, 7, 32)]
    assert cases("p", [1, 64], n=50, nnz_per_row=2) == [(50, 50, 100, 1), (50, 50, 100, 64)]


def test_model_only_sweep_matches_predict_peak_bytes_and_feeds_the_plots() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sparsegrad_lab.plots import plot_memory_curves, plot_timings

    r = sweep("density", [1e-3, 1e-2], base={"n": 1000, "p": 16}, measure=False, progress=False)
    assert isinstance(r, SweepResult) and r.parameter == "density"
    for impl in r.impls:
        assert r.predicted[impl] == [model.predict_peak_bytes(impl, case) for case in r.cases]
    kw = r.memory_curves(unit="KiB")
    assert kw["model"]["gather"] == [b / 1024 for b in r.predicted["gather"]]
    assert kw["ylabel"] == "peak extra memory (KiB)" and kw["xlabel"].startswith("density")
    fig = plot_memory_curves(**kw)
    labels = [line.get_label() for line in fig.axes[0].lines]
    assert labels == [f"{k} ({kind})" for k in r.impls for kind in ("measured", "model")]
    plt.close(fig)
    fig = plot_timings(**r.time_curves())
    assert fig.axes[0].get_ylabel().endswith("(ms)")
    plt.close(fig)
    with pytest.raises(InputValueError, match="unit must be one of"):
        r.memory_curves(unit="MB")


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("m", [10]), {}, r"parameter must be one of \('n', 'nnz', 'density', 'p'\), got 'm'"),
        (("n", []), {}, "values must be a non-empty sequence"),
        (("n", [10]), {"base": {"rows": 3}}, r"base: unknown keys \['rows'\]"),
        (("n", [10]), {"base": {"nnz": 3, "density": 0.1}}, "give at most one of"),
        (("n", [10]), {"impls": ["magic"]}, "impl must be one of .* got 'magic'"),
        (("n", [10]), {"impls": ["torch_coo"]}, "torch_coo runs torch.sparse.mm on a COO A"),
        (("nnz", [500]), {"base": {"n": 10}}, "nnz=500 does not fit in an 10 x 10 matrix"),
        (("density", [1.5]), {}, r"values \(density\) must be a number in \(0, 1\], got 1.5"),
        (("n", [0]), {}, r"sweep: values \(n\) must be >= 1, got 0"),
        (("n", [10]), {"repeats": 0}, "sweep: repeats must be >= 1, got 0"),
    ],
)
def test_bad_arguments_are_refused_with_a_clear_message(
    args: tuple[Any, ...], kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(InputValueError, match=match):
        sweep(*args, measure=False, progress=False, **kwargs)


def test_a_size_that_is_not_an_int_is_a_type_error() -> None:
    with pytest.raises(InputTypeError, match=r"sweep: values \(p\) must be an int, got float"):
        sweep("p", [2.5], measure=False, progress=False)


def test_sweep_runs_without_tqdm(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # tqdm is optional (imported only when a bar is asked for): without it, no bar.
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    r = sweep("n", [100], impls=["sddmm"], measure=False, progress=True)
    assert r.refused == {"sddmm": [False]}
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("device", CUDA_DEVICE_PARAMS)
def test_sweep_on_cuda_measures_the_allocator(device: torch.device) -> None:
    r = sweep(
        "p", [8], base={"n": 2000, "nnz_per_row": 10}, repeats=1, progress=False, device=device
    )
    assert r.device.startswith("cuda")
    for impl in r.impls:
        measured = r.measured[impl][0]
        assert measured is not None and measured > 0
        assert r.predicted[impl][0] == model.predict_peak_bytes(impl, r.cases[0])
        assert r.cases[0].device == str(device)
    # The dense strategy's n x m product is allocated on the GPU, whatever else is.
    assert (r.measured["dense"][0] or 0) >= 2000 * 2000 * 4
