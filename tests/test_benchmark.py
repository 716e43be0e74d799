"""Tests of the benchmark: cases, floors, timing, the refusal of oversized cases, the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

from sparsegrad_lab import bench
from sparsegrad_lab.__main__ import main
from sparsegrad_lab.memory_model import IMPLEMENTATIONS, predict_peak_bytes

TINY = [(300, 1500, 8, 1)]


def test_parse_sizes_reads_presets_and_lists() -> None:
    assert bench.parse_sizes("issue") == [(100_000, 1_000_000, 64, 1)]
    assert bench.parse_sizes(" 1e3:5_000:16 ,20:30:2") == [(1000, 5000, 16, 1), (20, 30, 2, 1)]
    for bad in ("huge", "10:20", "10:x:3", "10:200:3", ""):
        with pytest.raises(ValueError, match="--sizes"):
            bench.parse_sizes(bad)


def test_make_cases_crosses_sizes_layouts_and_batches() -> None:
    cases = bench.make_cases(TINY, layouts=["coo", "csr"], batches=[1, 4], dtype="float64")
    assert [(c.batch, c.layout) for c in cases] == [(1, "coo"), (1, "csr"), (4, "coo"), (4, "csr")]
    assert all(
        c.dtype == "float64" and (c.n, c.m, c.nnz, c.p) == (300, 300, 1500, 8) for c in cases
    )


def test_floor_counts_each_tensor_once() -> None:
    f = bench.floor(bench.Case(n=10, m=20, nnz=30, p=4, layout="csr"))
    a = 30 * (4 + 8) + 11 * 8  # values + columns + row pointers
    assert f["bytes_fwd"] == a + 20 * 4 * 4 + 10 * 4 * 4  # A, B read; C written
    assert f["bytes_bwd"] == 10 * 4 * 4 + 20 * 4 * 4 + a + 30 * 4 + 20 * 4 * 4
    assert f["flops_fwdbwd"] == 6 * 30 * 4
    coo = bench.floor(bench.Case(n=10, m=20, nnz=30, p=4, layout="coo"))
    assert coo["bytes_fwd"] == 30 * (4 + 16) + 20 * 4 * 4 + 10 * 4 * 4


def test_time_case_times_every_phase_without_accumulating() -> None:
    A = torch.eye(50).to_sparse_csr().requires_grad_()
    B = torch.ones(50, 3, requires_grad=True)
    t = bench.time_case(torch.sparse.mm, A, B, torch.ones(50, 3), repeats=3, warmup=1)
    assert {k: len(v) for k, v in t.items()} == {"fwd": 3, "bwd": 3, "fwdbwd": 3}
    assert all(
        f + b == pytest.approx(fb) for f, b, fb in zip(t["fwd"], t["bwd"], t["fwdbwd"], strict=True)
    )
    assert A.grad is None and B.grad is None


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
    stated = float(refused.reason.split()[2])  # "would need X GiB (...)"
    assert refused.reason.startswith("would need ") and stated >= need / 2**30
    assert "n=30000" not in refused.reason and "A 30000 x 30000" in refused.reason
    assert refused.fwd_ms is None and refused.peak_extra_bytes is None  # never ran
    table = bench.format_table(results)
    assert "would_need: would need" in table and "skipped:" in table
    rows = bench.headline(results)
    ref = next(r for r in rows if r["reference"] == "torch_csr" and r["case"] == ok.case.label())
    assert ref["bwd_ms"] == pytest.approx(ok.bwd_ms / by[(300, "torch_csr")].bwd_ms)
    pairs = zip(ok.times_ms["bwd"], by[(300, "torch_csr")].times_ms["bwd"], strict=True)
    assert min(x / y for x, y in pairs) <= ref["bwd_paired"]  # a median of per-round ratios
    text = bench.format_headline(rows)
    assert ok.case.label() in text and "  torch_csr " in text


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
    ):
        assert option in text
    assert "would need X GiB" in text and "median" in text


def test_cli_rejects_unknown_implementations(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--impls", "sddmm,magic", "--no-progress"]) == 2
    assert "magic" in capsys.readouterr().err


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
    stem = bench.default_output_stem(str(tmp_path), "cpu", "300:1500:8")
    assert stem.name.endswith("-custom")
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


def test_device_tag_and_output_name() -> None:
    assert bench.device_tag("cpu") == f"cpu-{torch.get_num_threads()}threads"
    stem = bench.default_output_stem("out", "cpu")
    assert stem.parent.name == "out" and stem.name.startswith("cpu-")


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
    rows = bench.headlines(results)
    assert {row["ours"] for row in rows} == {"sddmm", "sddmm_kept"}
    text = bench.format_headline(rows)
    assert "sddmm / reference" in text and "sddmm_kept / reference" in text
