"""Tests of the benchmark's report (:mod:`sparsegrad_lab.benchmark_report`) on made-up results.

Every :class:`~sparsegrad_lab.benchmark.Result` here is written by hand and never run, so each
ratio, verdict and line of text is checked against numbers worked out in the test. The runs
themselves are tested in ``test_benchmark.py``; the ``bench`` command's file handling (default
names, numbered reruns, no overwrite) in ``test_main.py``.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import sparsegrad_lab
from sparsegrad_lab import benchmark as bench
from sparsegrad_lab import benchmark_report as report
from sparsegrad_lab.benchmark_report import AIMS, PEERS, Aim, OutputExistsError
from sparsegrad_lab.errors import SparseGradLabError
from sparsegrad_lab.implementations import IMPLEMENTATIONS, Case

#: A small 2-D CPU case no aim of a named reference covers (those are set at the reference size).
SMALL = Case(n=100, m=100, nnz=500, p=8)


# ------------------------------------------------------- the headline against made-up results


def test_json_round_trip_and_aims_at_the_reference_size(tmp_path: Path) -> None:
    # Results at the reference size, made up to exercise the judging; never run.
    reference = Case(n=100_000, m=100_000, nnz=1_000_000, p=64)
    ours = bench.Result(reference, "sddmm", bwd_ms=3.0, fwdbwd_ms=5.0, times_ms={"bwd": [3.0]})
    ours.peak_extra_bytes, ours.output_bytes = 100, 80
    gather = bench.Result(
        reference, "gather", bwd_ms=20.0, fwdbwd_ms=25.0, times_ms={"bwd": [20.0]}
    )
    gather.peak_extra_bytes = 1000
    rows = report.headline([ours, gather])
    vs_gather = next(row for row in rows if row["reference"] == "gather")
    judged = {(t["metric"], t["source"]): t["holds"] for t in vs_gather["targets"]}
    assert judged == {("bwd_paired", "target"): True, ("peak_extra_bytes", "target"): True}
    assert "target: bwd_paired 0.15 <= 0.3x: holds" in report.format_headline(rows)
    path = report.write_json([ours, gather], tmp_path / "r.json", {"sizes": "reference"})
    loaded, meta = report.load_results(path)
    assert loaded == [ours, gather] and meta == {"sizes": "reference"}


def test_headline_is_each_metric_over_each_reference_that_ran() -> None:
    ours = bench.Result(
        SMALL,
        "sddmm",
        bwd_ms=2.0,
        fwdbwd_ms=3.0,
        bwd_min_ms=1.5,
        fwdbwd_min_ms=2.5,
        times_ms={"bwd": [2.0, 1.0, 4.0], "fwdbwd": [3.0, 3.0, 3.0]},
        peak_extra_bytes=600,
        output_bytes=400,
        threads=1,
    )
    gather = bench.Result(
        SMALL,
        "gather",
        bwd_ms=8.0,
        fwdbwd_ms=6.0,
        bwd_min_ms=3.0,
        fwdbwd_min_ms=None,  # not measured: no ratio, not a wrong one
        times_ms={"bwd": [4.0, 4.0, 2.0], "fwdbwd": [6.0, 6.0, 6.0]},
        peak_extra_bytes=1200,
    )
    refused = bench.Result(SMALL, "dense", status="would_need", reason="too big")
    elsewhere = replace(gather, case=replace(SMALL, n=200))  # another case: not a reference
    rows = report.headline([ours, gather, refused, elsewhere])
    assert [row["reference"] for row in rows] == ["gather", "outputs"]  # no peer ran
    vs_gather, outputs = rows
    assert vs_gather["ours"] == "sddmm" and vs_gather["case"] == SMALL.label()
    assert vs_gather["bwd_ms"] == pytest.approx(2.0 / 8.0)
    assert vs_gather["fwdbwd_ms"] == pytest.approx(3.0 / 6.0)
    assert vs_gather["bwd_min_ms"] == pytest.approx(1.5 / 3.0)
    assert vs_gather["fwdbwd_min_ms"] is None
    assert vs_gather["peak_extra_bytes"] == pytest.approx(600 / 1200)
    # The median of the rounds' ratios 2/4, 1/4, 4/2, not the ratio of the medians (0.25).
    assert vs_gather["bwd_paired"] == pytest.approx(0.5)
    assert vs_gather["fwdbwd_paired"] == pytest.approx(0.5)
    assert outputs["peak_extra_bytes"] == pytest.approx(600 / 400)
    assert "targets" not in vs_gather and "targets" not in outputs  # no aim covers SMALL
    # Rounds that do not pair up give no paired ratio.
    (unpaired, _) = report.headline([ours, replace(gather, times_ms={"bwd": [4.0]})])
    assert "bwd_paired" not in unpaired and unpaired["bwd_ms"] == pytest.approx(0.25)
    # Read the other way round; a failed run of ours has no row.
    (back, _) = report.headline([ours, gather], ours="gather")
    assert back["reference"] == "sddmm" and back["bwd_ms"] == pytest.approx(4.0)
    assert report.headline([replace(ours, status="error"), gather]) == []
    text = report.format_headline(rows)
    assert text.splitlines()[1] == SMALL.label()
    assert "  gather" in text and "0.25    0.50" in text
    assert text.splitlines()[-1].split() == ["outputs", "-", "-", "-", "|", "-", "-", "|", "1.50"]


@pytest.mark.parametrize(
    ("change", "applies"),
    [
        ({}, True),
        ({"nnz": 20}, True),  # both ends of the range are in it
        ({"nnz": 9}, False),
        ({"nnz": 21}, False),
        ({"n": 101}, False),
        ({"p": 16}, False),
        ({"batch": 2}, False),  # aims judge 2-D cases only
        ({"device": "cuda:1"}, False),
    ],
)
def test_an_aim_covers_only_its_own_cases(change: dict[str, object], applies: bool) -> None:
    aim = Aim(
        "sddmm", "gather", "bwd_ms", 0.3, "t", device="cpu", nnz_min=10, nnz_max=20, n=100, p=8
    )
    case = replace(Case(n=100, m=50, nnz=10, p=8), **change)  # type: ignore[arg-type]
    assert aim.applies(case, "sddmm", "gather") is applies


def test_an_aim_matches_its_pair_its_device_type_and_an_open_range() -> None:
    aim = Aim("sddmm", "torch_csr", "fwdbwd_ms", 1.0, "t", device="cuda", nnz_min=10, nnz_max=None)
    case = Case(n=1000, m=1000, nnz=10**5, p=4, device="cuda:1")  # any CUDA device, any n, p
    assert aim.applies(case, "sddmm", "torch_csr")
    assert not aim.applies(case, "sddmm", "gather")
    assert not aim.applies(case, "sddmm_kept", "torch_csr")
    assert not aim.applies(replace(case, device="cpu"), "sddmm", "torch_csr")


def test_every_aim_names_what_the_headline_computes() -> None:
    references = set(IMPLEMENTATIONS) | {"outputs", "fastest_peer"}
    for aim in AIMS:
        assert aim.ours in IMPLEMENTATIONS and aim.reference in references, aim
        assert aim.metric in ("bwd_ms", "fwdbwd_ms", "peak_extra_bytes"), aim
        assert aim.bound > 0 and aim.device in ("cpu", "cuda"), aim
        assert aim.nnz_max is None or aim.nnz_min <= aim.nnz_max, aim
        # "outputs" is memory only: a time aim against it could never be judged.
        assert aim.reference != "outputs" or aim.metric == "peak_extra_bytes", aim
    assert set(PEERS) <= set(IMPLEMENTATIONS) and "sddmm" not in PEERS


# --------------------------------------------------------------------------- the fastest peer


def _timed(case: Case, impl: str, fwdbwd: list[float], threads: int | None = 1) -> bench.Result:
    """A made-up result with these forward + backward times per round (never run)."""
    return bench.Result(
        case,
        impl,
        fwdbwd_ms=sorted(fwdbwd)[len(fwdbwd) // 2],
        times_ms={"fwdbwd": fwdbwd},
        threads=threads,
        peak_extra_bytes=1000,
    )


def _peer_row(rows: list[dict[str, object]], ours: str = "sddmm") -> dict[str, object]:
    return next(r for r in rows if r["reference"] == "fastest_peer" and r["ours"] == ours)


def test_fastest_peer_takes_the_faster_peer_of_each_round() -> None:
    case = Case(n=100, m=100, nnz=500, p=8)
    ours = _timed(case, "sddmm", [3.0, 3.0, 3.0])
    torch_csr = _timed(case, "torch_csr", [2.0, 4.0, 6.0])
    tsgu = _timed(case, "tsgu", [4.0, 2.5, 1.0])
    row = _peer_row(report.headline([ours, torch_csr, tsgu]))
    # Rounds: 3/2, 3/2.5, 3/1. Not the ratio to the faster median (3/2.5 = 1.2), nor to
    # either peer alone (0.75 and 1.2).
    assert row["fwdbwd_paired"] == pytest.approx(1.5)
    assert row["fwdbwd_ms"] == pytest.approx(3.0 / 2.5)
    assert row["peers"] == ["torch_csr", "tsgu"] and row["missing_peers"] == []
    (target,) = row["targets"]  # type: ignore[misc]
    assert target["source"].startswith("small-graph target") and target["bound"] == 1.5
    assert target["metric"] == "fwdbwd_paired" and target["holds"] is True
    slower = _timed(case, "sddmm", [3.2, 3.2, 3.2])
    (missed,) = _peer_row(report.headline([slower, torch_csr, tsgu]))["targets"]  # type: ignore[misc]
    assert missed["holds"] is False and missed["value"] == pytest.approx(1.6)
    assert "fwdbwd_paired 1.60 <= 1.5x: MISSED" in report.format_headline(
        report.headline([slower, torch_csr, tsgu])
    )


def test_a_coo_case_is_compared_with_torch_on_its_csr_twin() -> None:
    coo = Case(n=1000, m=1000, nnz=10_000, p=16, layout="coo")
    csr = Case(n=1000, m=1000, nnz=10_000, p=16, layout="csr")
    results = [
        _timed(coo, "sddmm", [1.0, 1.0, 1.0]),
        _timed(csr, "torch_csr", [1.25, 1.25, 1.25]),
        _timed(coo, "tsgu", [2.0, 2.0, 2.0]),
        _timed(csr, "tsgu", [0.5, 0.5, 0.5]),  # another layout: not this case's peer
    ]
    row = _peer_row(report.headline(results))
    assert row["layout"] == "coo" and row["fwdbwd_paired"] == pytest.approx(0.8)
    (target,) = row["targets"]  # type: ignore[misc]
    assert target["bound"] == 1.0 and target["source"].startswith("target from nnz = 10^4")
    assert target["holds"] is True


@pytest.mark.parametrize(
    ("nnz", "bound"),
    [(200, 1.5), (1000, 1.5), (5000, None), (10_000, 1.0), (10_556, 1.0), (1_000_000, 1.0)],
)
def test_the_small_graph_aims_cover_their_nnz_ranges(nnz: int, bound: float | None) -> None:
    case = Case(n=5000, m=5000, nnz=nnz, p=16)
    row = _peer_row(
        report.headline(
            [
                _timed(case, "sddmm", [1.0]),
                _timed(case, "torch_csr", [1.0]),
                _timed(case, "tsgu", [1.0]),
            ]
        )
    )
    bounds = [t["bound"] for t in row.get("targets", [])]  # type: ignore[attr-defined]
    assert bounds == ([] if bound is None else [bound])


def test_the_fastest_peer_aims_are_not_judged_on_other_runs() -> None:
    case = Case(n=100, m=100, nnz=500, p=8)
    peers = [_timed(case, "torch_csr", [2.0]), _timed(case, "tsgu", [2.0])]
    (two_threads,) = _peer_row(report.headline([_timed(case, "sddmm", [1.0], 2), *peers]))[
        "targets"
    ]  # type: ignore[misc]
    assert two_threads["holds"] is None
    assert two_threads["note"] == "stated for 1 thread(s), run with 2"
    # Without tsgu the fastest peer could only look slower: reported, not judged.
    row = _peer_row(report.headline([_timed(case, "sddmm", [1.0]), peers[0]]))
    assert row["peers"] == ["torch_csr"] and row["missing_peers"] == ["tsgu"]
    assert row["targets"][0]["holds"] is None  # type: ignore[index]
    text = report.format_headline(report.headline([_timed(case, "sddmm", [1.0]), peers[0]]))
    assert "not judged: tsgu did not run" in text and "torch_csr only" in text
    # A batch has no peer (torch_csr is 2-D only) and no aim; the kept pattern no aim.
    batched = Case(n=100, m=100, nnz=500, p=8, batch=4)
    rows = report.headline([_timed(batched, "sddmm", [1.0]), _timed(batched, "tsgu", [1.0])])
    assert "targets" not in _peer_row(rows)
    kept = report.headlines([_timed(case, "sddmm_kept", [9.0]), *peers])
    assert _peer_row(kept, "sddmm_kept")["fwdbwd_paired"] == 4.5
    assert "targets" not in _peer_row(kept, "sddmm_kept")


# ------------------------------------------------------------------------ the validation cost


def test_validation_share_is_paired_round_by_round() -> None:
    case = Case(n=10, m=10, nnz=20, p=4)
    r = bench.Result(
        case,
        "sddmm",
        check_ms=1.0,
        fwdbwd_ms=10.0,
        times_ms={"check": [1.0, 1.0, 3.0], "fwdbwd": [10.0, 2.0, 30.0]},
    )
    (row,) = report.validation_costs([r])
    assert row["share"] == pytest.approx(0.1)  # rounds: 0.1, 0.5, 0.1
    assert report.validation_costs([replace(r, impl="gather")]) == []
    assert "not timed" in report.format_validation([])


def test_validation_costs_count_every_item_and_say_when_rounds_do_not_pair() -> None:
    case = Case(n=10, m=10, nnz=20, p=4, batch=3)
    r = bench.Result(
        case, "sddmm", check_ms=0.5, fwdbwd_ms=4.0, times_ms={"check": [0.5], "fwdbwd": [4.0, 2.0]}
    )
    (row,) = report.validation_costs([r, replace(r, status="error"), replace(r, check_ms=None)])
    assert row["nnz"] == 60 and row["layout"] == "csr" and row["share"] is None
    line = report.format_validation([row]).splitlines()[1]
    assert line == f"  {case.label()}: 0.500 ms, - of sparse_mm's forward + backward (4.00 ms)"


# ------------------------------------------------------------------------------ the table


def test_format_table_has_a_block_per_case_and_a_dash_for_what_was_not_measured() -> None:
    other = replace(SMALL, layout="coo")
    ran = bench.Result(
        SMALL,
        "sddmm",
        fwd_ms=1.234,
        bwd_ms=2.0,
        bwd_min_ms=1.5,
        fwdbwd_ms=3.25,
        peak_extra_bytes=3 * 2**20,
        predicted_bytes=5 * 2**19,
        allocator_bytes=None,
        time_over_floor=12.0,
        gflops=0.5,
    )
    skipped = bench.Result(SMALL, "torch_coo", status="skipped", reason="needs a COO A")
    lines = report.format_table([ran, skipped, replace(ran, case=other)]).splitlines()
    assert lines[0] == SMALL.label() and lines[1].split()[:3] == ["impl", "fwd", "ms"]
    assert set(lines[2]) == {"-"} and len(lines[2]) == len(lines[1])
    assert lines[3].split() == [
        "sddmm",
        "1.23",
        "2.00",
        "1.50",
        "3.25",
        "3.0",
        "2.5",
        "-",
        "12.0",
        "0.50",
    ]
    assert lines[4].split()[:10] == ["torch_coo"] + ["-"] * 9
    assert lines[4].endswith("  skipped: needs a COO A")
    assert lines[5] == "" and lines[6] == other.label() and len(lines) == 10


# -------------------------------------------------------------------------------------- files


def test_device_tag_and_output_name() -> None:
    assert report.device_tag("cpu") == f"cpu-{torch.get_num_threads()}threads"
    stem = report.default_output_stem("out", "cpu")
    assert stem.parent.name == "out" and stem.name.startswith("cpu-")


def test_committed_results_load_and_name_no_issue_numbers() -> None:
    paths = sorted((Path(__file__).parents[1] / "benchmarks" / "results").glob("*.json"))
    assert paths, "no committed benchmark results"
    for path in paths:
        results, meta = report.load_results(path)
        assert results and meta["sizes"] in bench.SIZE_PRESETS
        assert "issue" not in path.read_text(), path.name


def test_machine_info_records_what_the_results_depend_on() -> None:
    info = report.machine_info("cpu", bandwidth=12.5e9)
    assert info["device"] == "cpu" and info["device_name"]
    assert (
        info["torch"] == torch.__version__ and info["sparsegrad_lab"] == sparsegrad_lab.__version__
    )
    assert info["threads"] == torch.get_num_threads() and info["copy_bandwidth_GBps"] == 12.5
    try:
        tsgu: str | None = importlib.metadata.version("torchsparsegradutils")
    except importlib.metadata.PackageNotFoundError:
        tsgu = None
    assert info["torchsparsegradutils"] == tsgu
    date = datetime.datetime.fromisoformat(info["date"])
    assert date.utcoffset() == datetime.timedelta(0)  # UTC, stated in the string
    assert report.machine_info("cpu")["copy_bandwidth_GBps"] is None
    assert json.loads(json.dumps(info)) == info  # it goes into the JSON file as it is


def test_write_json_derives_the_headline_and_refuses_to_replace_a_file(tmp_path: Path) -> None:
    ours = bench.Result(
        SMALL, "sddmm", check_ms=1.0, fwdbwd_ms=4.0, times_ms={"check": [1.0], "fwdbwd": [4.0]}
    )
    skipped = bench.Result(SMALL, "torch_coo", status="skipped", reason="needs a COO A")
    path = tmp_path / "new" / "folder" / "r.json"  # folders created
    assert report.write_json([ours, skipped], path, {"sizes": "small"}) == path
    doc = json.loads(path.read_text())
    assert doc["headline"] == report.headlines([ours, skipped])
    assert doc["validation"] == report.validation_costs([ours])
    assert report.load_results(path) == ([ours, skipped], {"sizes": "small"})
    with pytest.raises(OutputExistsError, match="overwrite=True") as info:
        report.write_json([], path, {})
    assert isinstance(info.value, FileExistsError) and isinstance(info.value, SparseGradLabError)
    assert report.load_results(path)[0] == [ours, skipped]  # untouched


def test_free_stem_looks_only_at_the_suffixes_it_is_given(tmp_path: Path) -> None:
    stem = tmp_path / "cpu-1threads-2026-01-01"
    stem.with_suffix(".txt").write_text("notes\n")
    assert report.free_stem(stem) == stem  # .json and .png are free
    assert report.free_stem(stem, (".txt",)) == tmp_path / f"{stem.name}-run2"
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{stem.name}.txt"]  # creates nothing


# ---- output names (moved from test_main.py)


def test_default_names_differ_between_grids_and_read_as_sizes() -> None:
    one = report.default_output_stem("r", "cpu", "300:1500:8")
    other = report.default_output_stem("r", "cpu", "200:800:4")
    assert one != other and one.name.endswith("-n300-nnz1500-p8")
    # The same grid written another way is the same name; round numbers stay short.
    same = report.default_output_stem("r", "cpu", " 3e2:1_500:8 ")
    assert same == one
    assert report.default_output_stem("r", "cpu", "2e4:2e5:32").name.endswith("-n2e4-nnz2e5-p32")
    # A long list of sizes: how many, and a stable hash of them, not a name too long to write.
    many = ",".join(f"{n}:{n}:8" for n in range(100, 140))
    name = report.default_output_stem("r", "cpu", many).name
    assert "-40sizes-" in name and len(name) < 80
    assert name == report.default_output_stem("r", "cpu", many).name
    today = f"{report.device_tag('cpu')}-{datetime.date.today().isoformat()}"
    assert report.default_output_stem("r", "cpu", "small").name == today


def test_free_stem_numbers_runs_whose_name_is_taken(tmp_path: Path) -> None:
    stem = tmp_path / "cpu-2threads-2026-12-03-reference"
    assert report.free_stem(stem) == stem
    stem.with_suffix(".png").write_text("")  # a plot alone takes the name too
    assert report.free_stem(stem) == tmp_path / f"{stem.name}-run2"
    (tmp_path / f"{stem.name}-run2.json").write_text("{}")
    assert report.free_stem(stem) == tmp_path / f"{stem.name}-run3"


def test_write_json_never_overwrites_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text("earlier results\n")
    with pytest.raises(FileExistsError, match=r"r\.json"):
        report.write_json([], path, {"sizes": "small"})
    assert path.read_text() == "earlier results\n"
    report.write_json([], path, {"sizes": "small"}, overwrite=True)
    assert json.loads(path.read_text())["meta"] == {"sizes": "small"}


def test_the_operator_aims_judge_pattern_mm_where_the_issue_set_them() -> None:
    def judged(case: Case, reference: str) -> list[str]:
        return [aim.label for aim in AIMS if aim.applies(case, "pattern_mm", reference)]

    small = Case(n=100, m=100, nnz=500, p=8)
    assert judged(small, "fastest_peer") == ["operator target, n = 100 (one thread)"]
    assert judged(replace(small, p=16), "fastest_peer") == []  # stated for n = 100, p = 8 only
    reference = Case(n=100_000, m=100_000, nnz=1_000_000, p=64)
    assert judged(reference, "sddmm") == ["operator target"]
    ours = {impl: [2.0, 2.0] for impl in ("pattern_mm", "torch_csr", "tsgu")}
    results = [_timed(small, impl, times) for impl, times in ours.items()]
    rows = [r for r in report.headlines(results) if r["ours"] == "pattern_mm"]
    peer = next(r for r in rows if r["reference"] == "fastest_peer")
    assert peer["targets"][0]["holds"] is True and peer["targets"][0]["value"] == 1.0
