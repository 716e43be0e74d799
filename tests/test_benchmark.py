"""Tests of the benchmark (:mod:`sparsegrad_lab.benchmark`): grids, floors, the plan, the runner
and the ``bench`` command that drives them.

What the report makes of results -- the headline ratios and aims, the tables, the JSON file --
is tested on made-up results in ``test_benchmark_report.py``.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from sparsegrad_lab import benchmark as bench
from sparsegrad_lab import benchmark_report as report
from sparsegrad_lab.__main__ import main
from sparsegrad_lab.errors import InputTypeError, InputValueError
from sparsegrad_lab.implementations import IMPLEMENTATIONS, Case
from sparsegrad_lab.memory_guard import PLANNING_FRACTION
from sparsegrad_lab.memory_model import predict_peak_bytes

TINY = [(300, 1500, 8, 1)]


@pytest.fixture
def restore_threads() -> object:
    """``--threads`` sets torch's global thread count: put it back after the test."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_parse_sizes_reads_presets_and_lists() -> None:
    assert bench.parse_sizes("reference") == [(100_000, 1_000_000, 64, 1)]
    assert bench.parse_sizes(" 1e3:5_000:16 ,20:30:2") == [(1000, 5000, 16, 1), (20, 30, 2, 1)]
    for bad in ("huge", "10:20", "10:x:3", "10:200:3", "", "1e400:5:8", "10:inf:3", "10.5:5:3"):
        with pytest.raises(InputValueError, match=r"^parse_sizes: "):
            bench.parse_sizes(bad)
    with pytest.raises(InputValueError, match=r"^nnz = 'inf' is not a whole number"):
        bench.parse_sizes("10:inf:3", where=None)  # the command line's --sizes adds its name


def test_parse_batches_reads_whole_numbers_once() -> None:
    assert bench.parse_batches(" 1, 8,1e2") == [1, 8, 100]
    for bad, says in (
        ("0", ">= 1"),
        ("x", "whole"),
        ("1.5", "whole"),
        ("2,2", "twice"),
        (",", "no"),
    ):
        with pytest.raises(InputValueError, match=rf"^parse_batches: .*{says}"):
            bench.parse_batches(bad)


def test_make_cases_crosses_sizes_layouts_and_batches() -> None:
    cases = bench.make_cases(TINY, layouts=["coo", "csr"], batches=[1, 4], dtype="float64")
    assert [(c.batch, c.layout) for c in cases] == [(1, "coo"), (1, "csr"), (4, "coo"), (4, "csr")]
    assert all(
        c.dtype == "float64" and (c.n, c.m, c.nnz, c.p) == (300, 300, 1500, 8) for c in cases
    )


def test_floor_counts_each_tensor_once() -> None:
    f = bench.floor(Case(n=10, m=20, nnz=30, p=4, layout="csr"))
    a = 30 * (4 + 8) + 11 * 8  # values + columns + row pointers
    assert f["bytes_fwd"] == a + 20 * 4 * 4 + 10 * 4 * 4  # A, B read; C written
    assert f["bytes_bwd"] == 10 * 4 * 4 + 20 * 4 * 4 + a + 30 * 4 + 20 * 4 * 4
    assert f["flops_fwdbwd"] == 6 * 30 * 4
    coo = bench.floor(Case(n=10, m=20, nnz=30, p=4, layout="coo"))
    assert coo["bytes_fwd"] == 30 * (4 + 16) + 20 * 4 * 4 + 10 * 4 * 4


def test_plan_refuses_what_does_not_fit_what_is_available(monkeypatch) -> None:
    (case,) = bench.make_cases(TINY, layouts=["csr"])
    need = predict_peak_bytes("sddmm", case) + bench._input_bytes(case)
    available = int(need / PLANNING_FRACTION) + 2  # just enough, after the fraction
    monkeypatch.setattr(bench, "available_bytes", lambda device="cpu": available)
    assert [r.status for r in bench.plan([case], ["sddmm"])] == ["ok"]
    assert [r.status for r in bench.plan([case], ["sddmm"], need - 1)] == ["would_need"]
    monkeypatch.setattr(bench, "available_bytes", lambda device="cpu": available - 4)
    (refused,) = bench.plan([case], ["sddmm"])
    assert refused.status == "would_need" and "what is available on cpu" in refused.reason


def test_run_benchmark_measures_skips_and_refuses() -> None:
    cases = bench.make_cases(TINY, layouts=["csr"])
    # 64 MiB: enough for the tiny case, far below the dense strategy at n = 30000.
    big = bench.make_cases([(30_000, 1000, 8, 1)], layouts=["csr"])
    results = bench.run_benchmark(
        cases + big,
        impls=["sddmm", "torch_coo", "torch_csr", "dense"],
        repeats=2,
        warmup=0,
        fresh_process=False,
        memory_limit_bytes=64 * 2**20,
        bandwidth=1e10,
        progress=False,
    )
    by = {(r.case.n, r.impl): r for r in results}
    ok = by[(300, "sddmm")]
    assert ok.status == "ok" and len(ok.times_ms["bwd"]) == 2
    assert min(ok.times_ms["fwdbwd"]) <= ok.fwdbwd_ms <= max(ok.times_ms["fwdbwd"])
    assert ok.gflops and ok.time_over_floor
    assert ok.peak_extra_bytes and ok.predicted_bytes and ok.allocator_bytes
    assert by[(300, "torch_coo")].status == "skipped"
    assert "COO A" in by[(300, "torch_coo")].reason
    refused = by[(30_000, "dense")]
    need = predict_peak_bytes("dense", n=30_000, m=30_000, nnz=1000, p=8)
    assert refused.status == "would_need"
    assert refused.reason.startswith("dense: A 30000 x 30000 (csr, nnz=1000), p=8, float32")
    stated = float(refused.reason.split("would need ")[1].split()[0])  # "would need X GiB"
    assert stated >= need / 2**30 and "above the budget of 64.00 MiB" in refused.reason
    assert refused.fwd_ms is None and refused.peak_extra_bytes is None  # never ran
    table = report.format_table(results)
    assert "would_need: dense: A 30000 x 30000" in table and "skipped:" in table
    rows = report.headline(results)
    ref = next(r for r in rows if r["reference"] == "torch_csr" and r["case"] == ok.case.label())
    assert ref["bwd_ms"] == pytest.approx(ok.bwd_ms / by[(300, "torch_csr")].bwd_ms)
    pairs = zip(ok.times_ms["bwd"], by[(300, "torch_csr")].times_ms["bwd"], strict=True)
    assert min(x / y for x, y in pairs) <= ref["bwd_paired"]  # a median of per-round ratios
    text = report.format_headline(rows)
    assert ok.case.label() in text and "  torch_csr " in text


@pytest.mark.slow
def test_run_benchmark_uses_a_fresh_process_on_cpu() -> None:
    case = bench.make_cases([(2000, 20_000, 16, 1)], layouts=["csr"])
    (r,) = bench.run_benchmark(
        case, impls=["gather"], repeats=1, warmup=0, bandwidth=1e10, progress=False
    )
    assert r.status == "ok" and r.peak_method.startswith("fresh process")
    assert r.predicted_bytes is not None and r.peak_extra_bytes is not None
    assert math.isclose(r.peak_extra_bytes, r.predicted_bytes, rel_tol=0.25)


def test_cli_help_explains_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "--device",
        "--sizes",
        "--layouts",
        "--batch",
        "--dtype",
        "--repeats",
        "--warmup",
        "--impls",
        "--out",
        "--threads",
        "--memory-limit",
        "--no-memory",
    ):
        assert option in text
    assert "would need X GiB" in text and "median" in text
    assert "small-graphs" in text and "large" in text and "fastest peer" in text
    assert "index validation" in text


def test_cli_rejects_unknown_implementations(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:  # argparse's refusal, before any work
        main(["bench", "--impls", "sddmm,magic", "--no-progress"])
    assert exit_info.value.code == 2
    assert "argument --impls: unknown 'magic'" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_tiny_grid_writes_json_and_plot(
    tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    code = main(
        [
            "bench",
            "--sizes",
            "300:1500:8",
            "--layouts",
            "coo,csr",
            "--impls",
            "sddmm,gather,torch_csr",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--out",
            str(tmp_path),
            "--no-fresh-process",
            "--no-progress",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    stem = report.default_output_stem(str(tmp_path), "cpu", "300:1500:8")
    assert stem.name.endswith("-n300-nnz1500-p8")
    doc = json.loads(stem.with_suffix(".json").read_text())
    assert stem.with_suffix(".png").stat().st_size > 1000
    assert str(stem.with_suffix(".json")) in out
    meta = doc["meta"]
    assert meta["torch"] == torch.__version__ and meta["threads"] == torch.get_num_threads()
    assert meta["device"] == "cpu" and meta["date"] and meta["device_name"]
    assert len(doc["results"]) == 2 * 3
    statuses = {(r["layout"], r["impl"]): r["status"] for r in doc["results"]}
    assert statuses[("coo", "torch_csr")] == "skipped" and statuses[("csr", "sddmm")] == "ok"
    first = next(r for r in doc["results"] if r["status"] == "ok")
    assert first["impl"] in IMPLEMENTATIONS and first["fwd_ms"] > 0 and first["bwd_ms"] > 0
    assert {"n", "m", "nnz", "p", "batch", "layout", "dtype", "device"} <= first.keys()
    assert any(row["reference"] == "gather" for row in doc["headline"])


def test_kept_pattern_is_built_in_the_warm_up_and_reported_beside_the_default() -> None:
    (case,) = bench.make_cases([(2000, 20_000, 16, 1)], layouts=["csr"])
    results = bench.run_benchmark(
        [case],
        impls=["sddmm", "sddmm_kept", "torch_csr"],
        repeats=2,
        warmup=1,
        fresh_process=False,
        bandwidth=1e10,
        progress=False,
    )
    by = {r.impl: r for r in results}
    assert all(r.status == "ok" for r in results), [r.reason for r in results]
    # The kept pattern (and its transpose) exist before the measured step: less extra memory.
    sddmm, kept = by["sddmm"], by["sddmm_kept"]
    assert kept.allocator_bytes is not None and sddmm.allocator_bytes is not None
    assert kept.allocator_bytes <= sddmm.allocator_bytes - 16 * case.nnz
    rows = report.headlines(results)
    assert {row["ours"] for row in rows} == {"sddmm", "sddmm_kept"}
    text = report.format_headline(rows)
    assert "sddmm / reference" in text and "sddmm_kept / reference" in text


# ------------------------------------------------------------------ small graphs, threads


def test_small_graphs_grid_is_the_teaching_sizes_in_both_layouts() -> None:
    sizes = bench.parse_sizes("small-graphs")
    assert sizes == [(100, 500, 8, 1), (1000, 10_000, 16, 1), (2708, 10_556, 16, 1)]
    cases = bench.make_cases(sizes)
    assert [(c.n, c.nnz, c.p, c.layout) for c in cases[:2]] == [
        (100, 500, 8, "coo"),
        (100, 500, 8, "csr"),
    ]
    assert len(cases) == 6 and {c.batch for c in cases} == {1}
    assert report.default_output_stem("out", "cpu", "small-graphs").name.endswith("-small-graphs")
    # The largest case alone: the validation's cost at nnz = 10**7 without the whole grid.
    assert bench.parse_sizes("large") == [(1_000_000, 10_000_000, 64, 1)]
    assert bench.parse_sizes("large")[0] in bench.SIZE_PRESETS["full"]


def test_threads_are_set_recorded_and_checked(restore_threads: object) -> None:
    cases = bench.make_cases([(50, 100, 4, 1)], layouts=["csr"])
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    (r,) = bench.run_benchmark(
        cases,
        impls=["sddmm"],
        repeats=1,
        warmup=0,
        threads=wanted,
        memory=False,
        bandwidth=1e10,
        progress=False,
    )
    assert torch.get_num_threads() == wanted and r.threads == wanted
    for bad in (0, -1):
        with pytest.raises(InputValueError, match="run_benchmark: threads must be >= 1"):
            bench.run_benchmark(cases, impls=["sddmm"], threads=bad, progress=False)
    for bad in (1.5, True):
        with pytest.raises(InputTypeError, match="run_benchmark: threads must be an int"):
            bench.run_benchmark(cases, impls=["sddmm"], threads=bad, progress=False)  # type: ignore[arg-type]
    for bad in ("0", "-2", "two"):
        with pytest.raises(SystemExit) as exit_info:
            main(["bench", "--threads", bad])
        assert exit_info.value.code == 2


# ------------------------------------------------------------------ the validation cost


def test_the_validation_is_timed_on_the_cases_own_a(monkeypatch) -> None:
    seen: list[tuple[torch.Tensor, str, bool]] = []
    original = bench.check_indices

    def recorded(A: torch.Tensor, where: str, *, ranges: bool = True) -> None:
        seen.append((A, where, ranges))
        original(A, where, ranges=ranges)

    monkeypatch.setattr(bench, "check_indices", recorded)
    cases = bench.make_cases([(200, 800, 4, 1)], layouts=["coo", "csr"])
    results = bench.run_benchmark(
        cases,
        impls=["sddmm", "gather"],
        repeats=3,
        warmup=2,
        memory=False,
        bandwidth=1e10,
        progress=False,
    )
    by = {(r.case.layout, r.impl): r for r in results}
    for layout in ("coo", "csr"):
        sddmm = by[(layout, "sddmm")]
        assert len(sddmm.times_ms["check"]) == 3 and sddmm.check_ms is not None
        assert min(sddmm.times_ms["check"]) <= sddmm.check_ms <= max(sddmm.times_ms["check"])
        assert by[(layout, "gather")].check_ms is None  # carried by the default only
    # Checked directly (warm-up and timed turns), not only inside sparse_mm's own calls.
    direct = [(A, ranges) for A, where, ranges in seen if where == "sparse_mm"]
    assert {A.layout for A, _ in direct} == {torch.sparse_coo, torch.sparse_csr}
    assert all(A.requires_grad and A._nnz() == 800 for A, _ in direct)
    # What sparse_mm itself checks: this COO A's ranges are left to torch's COO product.
    assert all(ranges == (A.layout == torch.sparse_csr) for A, ranges in direct)
    rows = report.validation_costs(results)
    assert [row["layout"] for row in rows] == ["coo", "csr"]
    assert all(row["share"] > 0 and row["nnz"] == 800 for row in rows)
    text = report.format_validation(rows)
    assert "check_indices" in text and f"{rows[0]['check_ms']:.3f} ms" in text


def test_no_memory_times_only_and_claims_nothing_about_memory(
    tmp_path, capsys: pytest.CaptureFixture[str], restore_threads: object
) -> None:
    code = main(
        [
            "bench",
            "--sizes",
            "200:800:4",
            "--layouts",
            "csr",
            "--impls",
            "sddmm",
            "--repeats",
            "2",
            "--warmup",
            "1",
            "--no-memory",
            "--threads",
            "1",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "index validation in every sparse_mm call" in out and "no plot" in out
    stem = report.default_output_stem(str(tmp_path), "cpu", "200:800:4")
    assert not stem.with_suffix(".png").exists()
    doc = json.loads(stem.with_suffix(".json").read_text())
    (r,) = doc["results"]
    assert r["fwdbwd_ms"] > 0 and r["peak_extra_bytes"] is None and r["allocator_bytes"] is None
    assert r["check_ms"] > 0 and len(r["times_ms"]["check"]) == 2
    assert doc["validation"][0]["check_ms"] == r["check_ms"]
    assert doc["meta"]["memory_method"] == "not measured (--no-memory)"
    assert doc["meta"]["threads"] == 1 and r["threads"] == 1
    outputs = next(row for row in doc["headline"] if row["reference"] == "outputs")
    assert outputs["peak_extra_bytes"] is None and "targets" not in outputs
