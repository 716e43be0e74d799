"""What the benchmark reports: the headline ratios and aims, the tables, and the JSON file.

:func:`headline` turns a list of :class:`~sparsegrad_lab.benchmark.Result` into ratios of
one implementation to every other and to the fastest of its :data:`PEERS`, per case, and
judges each against the :data:`AIMS` that cover that case; :func:`validation_costs` says
what the index validation in every ``sparse_mm`` call costs; :func:`format_table`,
:func:`format_headline` and :func:`format_validation` print them; :func:`write_json` and
:func:`load_results` keep them (lesson 03 reads the committed files in
``benchmarks/results/``). The plot is :func:`sparsegrad_lab.plots.plot_benchmark`.

>>> from sparsegrad_lab.benchmark import make_cases, run_benchmark
>>> results = run_benchmark(make_cases([(300, 1000, 8, 1)], layouts=["csr"]),
...                         impls=["sddmm", "gather"], repeats=1, warmup=0,
...                         fresh_process=False, progress=False)
>>> [row["reference"] for row in headline(results)]
['gather', 'outputs']
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .benchmark import SIZE_PRESETS, VALIDATED, Result, parse_sizes
from .errors import SparseGradLabError
from .implementations import IMPLEMENTATIONS, Case

__all__ = [
    "AIMS",
    "PEERS",
    "Aim",
    "OutputExistsError",
    "default_output_stem",
    "device_tag",
    "format_headline",
    "format_table",
    "format_validation",
    "free_stem",
    "headline",
    "headlines",
    "load_results",
    "machine_info",
    "validation_costs",
    "write_json",
]


@dataclass(frozen=True)
class Aim:
    """A bound on ``ours / reference`` for one metric on the cases it covers: "at most 0.3x".

    ``reference`` is an implementation, ``"outputs"`` (the bytes of ``C``, ``∇A``'s values
    and ``∇B``) or ``"fastest_peer"`` (see :func:`headline`). ``metric`` is ``"bwd_ms"``,
    ``"fwdbwd_ms"`` or ``"peak_extra_bytes"``. It covers the 2-D cases on ``device`` with
    ``nnz_min <= nnz <= nnz_max`` (``None``: no upper end) and, when given, that ``n`` and
    ``p``. An aim stated for a number of ``threads`` judges only runs with that many; others
    are reported, not judged.

    >>> aim = Aim("sddmm", "fastest_peer", "fwdbwd_ms", 1.0, "target", "cpu", 10_000, None)
    >>> aim.applies(Case(n=5_000, m=5_000, nnz=20_000, p=8), "sddmm", "fastest_peer")
    True
    """

    ours: str
    reference: str
    metric: str
    bound: float
    label: str
    device: str
    nnz_min: int
    nnz_max: int | None
    n: int | None = None
    p: int | None = None
    threads: int | None = None

    def applies(self, case: Case, ours: str, reference: str) -> bool:
        """Whether this aim judges ``ours`` against ``reference`` on ``case`` (2-D only)."""
        return (
            (ours, reference) == (self.ours, self.reference)
            and case.device.split(":")[0] == self.device
            and case.batch == 1
            and self.nnz_min <= case.nnz <= (case.nnz if self.nnz_max is None else self.nnz_max)
            and self.n in (None, case.n)
            and self.p in (None, case.p)
        )


def _at(device: str, n: int, nnz: int, p: int) -> dict[str, Any]:
    """The fields of an aim set at one size."""
    return {"device": device, "n": n, "nnz_min": nnz, "nnz_max": nnz, "p": p}


_REFERENCE_CPU = _at("cpu", 100_000, 1_000_000, 64)
_REFERENCE_CUDA = _at("cuda", 1_000_000, 10_000_000, 64)

#: The implementations the ``"fastest_peer"`` reference takes the faster of, round by round.
PEERS = ("torch_csr", "tsgu")

#: The aims the project set: a *target* must hold, a *stretch aim* is what a faster
#: backward would reach, a *tightened target* the GPU bound once the target was met. The
#: aims of a training loop that keeps the pattern (``"sddmm_kept"``) are reported next to
#: the per-call numbers, never instead of them. The small-graph aims bound the default's
#: forward + backward against the fastest peer, on one thread, at any ``n`` and ``p``.
AIMS: list[Aim] = [
    Aim("sddmm", "gather", "bwd_ms", 0.3, "target", **_REFERENCE_CPU),
    Aim("sddmm", "gather", "peak_extra_bytes", 0.25, "target", **_REFERENCE_CPU),
    Aim("sddmm", "torch_csr", "bwd_ms", 1.0, "target", **_REFERENCE_CPU),
    Aim("sddmm", "tsgu", "bwd_ms", 0.15, "stretch aim", **_REFERENCE_CPU),
    Aim("sddmm", "torch_csr", "bwd_ms", 0.5, "stretch aim", **_REFERENCE_CPU),
    Aim("sddmm", "tsgu", "peak_extra_bytes", 0.15, "stretch aim", **_REFERENCE_CPU),
    Aim("sddmm", "torch_csr", "fwdbwd_ms", 1.0, "target", **_REFERENCE_CUDA),
    Aim("sddmm", "outputs", "peak_extra_bytes", 1.1, "target", **_REFERENCE_CUDA),
    Aim("sddmm", "torch_csr", "fwdbwd_ms", 0.6, "tightened target", **_REFERENCE_CUDA),
    Aim("sddmm", "outputs", "peak_extra_bytes", 1.1, "tightened target", **_REFERENCE_CUDA),
    Aim("sddmm_kept", "tsgu", "bwd_ms", 0.15, "stretch aim, pattern kept", **_REFERENCE_CPU),
    Aim("sddmm_kept", "torch_csr", "bwd_ms", 0.5, "stretch aim, pattern kept", **_REFERENCE_CPU),
    Aim(
        "sddmm_kept",
        "tsgu",
        "peak_extra_bytes",
        0.15,
        "stretch aim, pattern kept",
        **_REFERENCE_CPU,
    ),
    Aim(
        "sddmm_kept",
        "torch_csr",
        "fwdbwd_ms",
        0.6,
        "tightened target, pattern kept",
        **_REFERENCE_CUDA,
    ),
    Aim(
        "sddmm",
        "fastest_peer",
        "fwdbwd_ms",
        1.5,
        "small-graph target (nnz <= 1,000, one thread)",
        device="cpu",
        nnz_min=0,
        nnz_max=1_000,
        threads=1,
    ),
    Aim(
        "sddmm",
        "fastest_peer",
        "fwdbwd_ms",
        1.0,
        "target from nnz = 10^4 (one thread)",
        device="cpu",
        nnz_min=10_000,
        nnz_max=None,
        threads=1,
    ),
    # Issue #23: learned values as a dense tensor through the registered operator
    # (``"pattern_mm"``), against the fastest peer on the smallest graph, and no slower than
    # the default ``sparse_mm`` at the reference size.
    Aim(
        "pattern_mm",
        "fastest_peer",
        "fwdbwd_ms",
        1.0,
        "operator target, n = 100 (one thread)",
        device="cpu",
        nnz_min=500,
        nnz_max=500,
        n=100,
        p=8,
        threads=1,
    ),
    Aim("pattern_mm", "sddmm", "fwdbwd_ms", 1.0, "operator target", **_REFERENCE_CPU),
]

_RATIO_METRICS = ("bwd_ms", "fwdbwd_ms", "bwd_min_ms", "fwdbwd_min_ms", "peak_extra_bytes")


# ----------------------------------------------------------------------------- headline


def _lookup(results: Sequence[Result], case: Case, impl: str) -> Result | None:
    # torch_csr runs on CSR inputs only: a COO case is compared with its CSR twin.
    layout = "csr" if impl == "torch_csr" else "coo" if impl == "torch_coo" else case.layout
    twin = replace(case, layout=layout)
    for r in results:
        if r.impl == impl and r.status == "ok" and r.case == twin:
            return r
    return None


def _ratio_row(ours: Result, refs: Sequence[Result], reference: str) -> dict[str, Any]:
    """``ours`` over the fastest of ``refs`` (one implementation, or the peers), per metric."""
    row: dict[str, Any] = {
        "ours": ours.impl,
        "case": ours.case.label(),
        "layout": ours.case.layout,
        "reference": reference,
    }
    for metric in _RATIO_METRICS:
        mine, theirs = getattr(ours, metric), [getattr(ref, metric) for ref in refs]
        known = mine is not None and None not in theirs and min(theirs) > 0
        row[metric] = mine / min(theirs) if known else None
    for phase in ("bwd", "fwdbwd"):
        # Paired: the median over rounds of this round's ratio to the fastest reference of
        # that round. All ran in the same round, so a busy spell on the machine cancels out.
        mine = ours.times_ms.get(phase, [])
        theirs = [ref.times_ms.get(phase, []) for ref in refs]
        if mine and all(len(runs) == len(mine) for runs in theirs):
            fastest = [min(round_times) for round_times in zip(*theirs, strict=True)]
            row[f"{phase}_paired"] = statistics.median(
                x / y for x, y in zip(mine, fastest, strict=True)
            )
    return row


def _fastest_peer_row(results: Sequence[Result], ours: Result) -> dict[str, Any] | None:
    """``ours`` over the fastest of :data:`PEERS` that ran on its case; ``None`` if none ran."""
    found = {name: _lookup(results, ours.case, name) for name in PEERS}
    peers = [ref for ref in found.values() if ref is not None]
    if not peers:
        return None
    row = _ratio_row(ours, peers, "fastest_peer")
    row["peers"] = [ref.impl for ref in peers]
    row["missing_peers"] = [name for name, ref in found.items() if ref is None]
    return row


def _judge(row: dict[str, Any], case: Case, threads: int | None) -> None:
    """Add to ``row`` every aim that applies, with its value and whether it holds.

    ``holds`` is ``None`` (with a ``note`` saying why) when the run cannot judge the aim: it
    ran with another thread count than the aim's, or a peer of ``"fastest_peer"`` did not run
    (the fastest of fewer peers can only be slower, so the ratio would flatter us).
    """
    for aim in AIMS:
        if not aim.applies(case, row["ours"], row["reference"]):
            continue
        # Times are judged on the paired ratio when there is one (the robust estimate of
        # the same ratio of times), memory on the measured bytes.
        judged = aim.metric.replace("_ms", "_paired")
        judged = judged if row.get(judged) is not None else aim.metric
        if row.get(judged) is None:
            continue
        note = ""
        if aim.threads is not None and threads != aim.threads:
            note = f"stated for {aim.threads} thread(s), run with {threads}"
        elif row.get("missing_peers"):
            note = f"{', '.join(row['missing_peers'])} did not run"
        row.setdefault("targets", []).append(
            {
                "metric": judged,
                "value": row[judged],
                "bound": aim.bound,
                "source": aim.label,
                "holds": None if note else bool(row[judged] <= aim.bound),
                "note": note,
            }
        )


def headline(results: Sequence[Result], ours: str = "sddmm") -> list[dict[str, Any]]:
    """Ratios of ``ours`` to every other implementation and to the fastest peer, per case.

    Each row: ``ours``, the case label, the reference, and ``ours / reference`` for bwd
    time, fwd+bwd time (ratio of medians, of fastest runs, and ``*_paired``: the median of
    the per-round ratios, the most robust on a shared machine) and peak extra memory. The
    references: every other implementation that ran on the case (``torch_csr`` on the CSR
    twin of a COO case); ``"fastest_peer"``, the faster of :data:`PEERS` in each round (times;
    the leaner one for memory), with ``peers`` and ``missing_peers`` listed; and
    ``"outputs"``, the bytes of ``C``, ``∇A`` values and ``∇B`` (memory only). Rows an
    :data:`AIMS` entry covers carry, under ``"targets"``, each bound and whether it holds
    (times judged on the paired ratio when all ran in the same rounds).

    >>> from sparsegrad_lab.benchmark import Result
    >>> case = Case(n=100, m=100, nnz=500, p=8)
    >>> ours = Result(case, "sddmm", threads=1, times_ms={"fwdbwd": [3.0, 3.0]})
    >>> csr = Result(case, "torch_csr", times_ms={"fwdbwd": [2.0, 4.0]})
    >>> tsgu = Result(case, "tsgu", times_ms={"fwdbwd": [4.0, 2.5]})
    >>> row = next(r for r in headline([ours, csr, tsgu]) if r["reference"] == "fastest_peer")
    >>> row["fwdbwd_paired"], row["targets"][0]["holds"]  # median of 3/2 and 3/2.5
    (1.35, True)
    """
    rows: list[dict[str, Any]] = []
    for r in results:
        if r.impl != ours or r.status != "ok":
            continue
        refs = (_lookup(results, r.case, name) for name in IMPLEMENTATIONS if name != ours)
        case_rows = [_ratio_row(r, [ref], ref.impl) for ref in refs if ref is not None]
        peer_row = _fastest_peer_row(results, r)
        if peer_row is not None:
            case_rows.append(peer_row)
        case_rows.append(
            {
                "ours": ours,
                "case": r.case.label(),
                "layout": r.case.layout,
                "reference": "outputs",
                "peak_extra_bytes": (
                    None
                    if r.peak_extra_bytes is None or not r.output_bytes
                    else r.peak_extra_bytes / r.output_bytes
                ),
            }
        )
        for row in case_rows:
            _judge(row, r.case, r.threads)
        rows += case_rows
    return rows


def headlines(results: Sequence[Result]) -> list[dict[str, Any]]:
    """:func:`headline` rows of the default ``"sddmm"``, then of ``"sddmm_kept"``, then of
    the registered operator on dense values, ``"pattern_mm"``."""
    return (
        headline(results, "sddmm")
        + headline(results, "sddmm_kept")
        + headline(results, "pattern_mm")
    )


# ------------------------------------------------------------------------------- text


def _fmt(value: float | None, spec: str) -> str:
    if value is None:
        return "-".rjust(int(spec.split(".")[0]))
    return format(value, spec)


def format_table(results: Sequence[Result]) -> str:
    """A plain-text table, one block per case, one row per implementation."""
    lines = []
    header = (
        f"{'impl':10s} {'fwd ms':>9s} {'bwd ms':>9s} {'(min)':>8s} {'f+b ms':>9s} {'peak MiB':>9s} "
        f"{'model':>9s} {'alloc':>9s} {'xfloor':>7s} {'GF/s':>6s}  note"
    )
    last = None
    mib = 2**20
    for r in results:
        key = r.case.label()
        if key != last:
            lines += ["", key, header, "-" * len(header)]
            last = key
        note = "" if r.status == "ok" else f"{r.status}: {r.reason}"
        lines.append(
            f"{r.impl:10s} {_fmt(r.fwd_ms, '9.2f')} {_fmt(r.bwd_ms, '9.2f')} "
            f"{_fmt(r.bwd_min_ms, '8.2f')} "
            f"{_fmt(r.fwdbwd_ms, '9.2f')} "
            f"{_fmt(None if r.peak_extra_bytes is None else r.peak_extra_bytes / mib, '9.1f')} "
            f"{_fmt(None if r.predicted_bytes is None else r.predicted_bytes / mib, '9.1f')} "
            f"{_fmt(None if r.allocator_bytes is None else r.allocator_bytes / mib, '9.1f')} "
            f"{_fmt(r.time_over_floor, '7.1f')} {_fmt(r.gflops, '6.2f')}  {note}"
        )
    return "\n".join(lines).lstrip("\n")


def format_headline(rows: Sequence[dict[str, Any]]) -> str:
    """The :func:`headline` ratios as text, with each aim marked as holding or not."""
    lines: list[str] = []
    last = None
    for row in rows:
        ours = row.get("ours", "sddmm")
        if (ours, row["case"]) != last:
            lines.append(
                f"{ours + ' / reference':<24}bwd: median  paired  fastest | "
                "f+b: median  paired | peak memory"
            )
            lines.append(row["case"])
            last = (ours, row["case"])
        lines.append(
            f"  {row['reference']:12s}      {_fmt(row.get('bwd_ms'), '6.2f')}  "
            f"{_fmt(row.get('bwd_paired'), '6.2f')}  {_fmt(row.get('bwd_min_ms'), '7.2f')} |"
            f"      {_fmt(row.get('fwdbwd_ms'), '6.2f')}  {_fmt(row.get('fwdbwd_paired'), '6.2f')}"
            f" |      {_fmt(row.get('peak_extra_bytes'), '6.2f')}"
        )
        if row.get("missing_peers"):
            lines.append(
                f"      {' and '.join(row['peers'])} only: "
                f"{' and '.join(row['missing_peers'])} did not run"
            )
        elif row.get("peers"):
            lines.append(f"      the faster of {' and '.join(row['peers'])} in each round")
        for t in row.get("targets", []):
            verdict = {True: "holds", False: "MISSED", None: f"not judged: {t.get('note')}"}
            lines.append(
                f"      {t['source']}: {t['metric']} {t['value']:.2f} <= {t['bound']}x: "
                f"{verdict[t['holds']]}"
            )
    return "\n".join(lines)


def validation_costs(results: Sequence[Result]) -> list[dict[str, Any]]:
    """The index validation's time per case, and its share of the default's call.

    One row per :data:`~sparsegrad_lab.benchmark.VALIDATED` result with a ``check_ms``: the
    case, the median time of ``check_indices`` on its ``A`` (``check_ms``), the median
    forward + backward of ``sparse_mm`` (which includes that check, ``fwdbwd_ms``), and
    ``share``: the median over rounds of ``check / (forward + backward)``, both timed in the
    same round.

    >>> from sparsegrad_lab.benchmark import Result
    >>> r = Result(Case(n=10, m=10, nnz=20, p=4), "sddmm", check_ms=0.5, fwdbwd_ms=4.0,
    ...            times_ms={"check": [0.5, 0.4], "fwdbwd": [4.0, 2.0]})
    >>> validation_costs([r])[0]["share"]  # median of 0.125 and 0.2
    0.1625
    """
    rows = []
    for r in results:
        if r.impl != VALIDATED or r.status != "ok" or r.check_ms is None:
            continue
        checks, calls = r.times_ms.get("check", []), r.times_ms.get("fwdbwd", [])
        share = (
            statistics.median(c / t for c, t in zip(checks, calls, strict=True))
            if checks and len(checks) == len(calls)
            else None
        )
        rows.append(
            {
                "case": r.case.label(),
                "layout": r.case.layout,
                "nnz": r.case.nnz * r.case.batch,
                "check_ms": r.check_ms,
                "fwdbwd_ms": r.fwdbwd_ms,
                "share": share,
            }
        )
    return rows


def format_validation(rows: Sequence[dict[str, Any]]) -> str:
    """The :func:`validation_costs` as text: ms per call and share of the call.

    >>> print(format_validation([{"case": "n=10 ...", "check_ms": 0.5, "fwdbwd_ms": 4.0,
    ...                           "share": 0.1625}]))
    index validation in every sparse_mm call (check_indices), median per call:
      n=10 ...: 0.500 ms, 16.2 % of sparse_mm's forward + backward (4.00 ms)
    """
    lines = ["index validation in every sparse_mm call (check_indices), median per call:"]
    for row in rows:
        share = "-" if row["share"] is None else f"{100 * row['share']:.1f} %"
        lines.append(
            f"  {row['case']}: {row['check_ms']:.3f} ms, {share} of sparse_mm's forward + "
            f"backward ({row['fwdbwd_ms']:.2f} ms)"
        )
    if not rows:
        lines.append(f"  not timed: it is timed beside {VALIDATED!r}, which did not run")
    return "\n".join(lines)


# ------------------------------------------------------------------------------- files


def machine_info(device: Any = "cpu", *, bandwidth: float | None = None) -> dict[str, Any]:
    """What the results depend on: device name, versions, date, threads, bandwidth."""
    dev = torch.device(device)
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
    else:
        name = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as cpuinfo:
                for line in cpuinfo:
                    if line.startswith("model name"):
                        name = line.split(":", 1)[1].strip()
                        break
        except OSError:
            pass
    try:
        tsgu_version: str | None = importlib.metadata.version("torchsparsegradutils")
    except importlib.metadata.PackageNotFoundError:
        tsgu_version = None
    return {
        "device": dev.type,
        "device_name": name,
        "torch": torch.__version__,
        "sparsegrad_lab": __version__,
        "torchsparsegradutils": tsgu_version,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "copy_bandwidth_GBps": None if bandwidth is None else bandwidth / 1e9,
    }


def device_tag(device: Any = "cpu") -> str:
    """``cpu-<threads>threads`` or the CUDA device name slugified.

    >>> device_tag("cpu") == f"cpu-{torch.get_num_threads()}threads"
    True
    """
    dev = torch.device(device)
    if dev.type == "cuda":
        return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(dev).lower()).strip("-")
    return f"cpu-{torch.get_num_threads()}threads"


class OutputExistsError(SparseGradLabError, FileExistsError):
    """A results file is already there, and replacing it was not asked for."""


#: A grid of explicit sizes longer than this is named by its count and a hash of the sizes.
_LONGEST_GRID_NAME = 40


def _short(number: int) -> str:
    """``number`` with three or more trailing zeros in ``e`` notation: 20000 -> ``2e4``."""
    digits = str(number)
    zeros = len(digits) - len(digits.rstrip("0"))
    return f"{digits[:-zeros]}e{zeros}" if zeros >= 3 and number else digits


def _grid_name(sizes: str) -> str:
    """What names a grid in a file name: ``""`` for small, the preset, or the sizes read back.

    Explicit sizes are named by their values as parsed, so ``1e3:5000:16`` and
    ``1000:5e3:16`` share a name and ``300:1500:8`` is ``n300-nnz1500-p8``; a long list
    becomes ``<count>sizes-<hash>``, a name that stays short and stable.
    """
    sizes = sizes.strip()
    if sizes == "small":
        return ""
    if sizes in SIZE_PRESETS:
        return sizes
    grid = parse_sizes(sizes, "default_output_stem")
    name = "_".join(f"n{_short(n)}-nnz{_short(nnz)}-p{_short(p)}" for n, nnz, p, _ in grid)
    if len(name) > _LONGEST_GRID_NAME:
        name = f"{len(grid)}sizes-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return name


def default_output_stem(
    out_dir: str | os.PathLike[str], device: Any = "cpu", sizes: str = "small"
) -> Path:
    """``out_dir/<device tag>-<YYYY-MM-DD>[-<grid>]``, the name of a run's files (add ``.json``).

    The default grid (``small``) adds nothing, another preset its name (``...-reference``),
    explicit sizes their values (``...-n300-nnz1500-p8``; a long list, their count and a
    short hash), so runs of different grids on one day have names of their own. Two runs of
    one grid share this name: :func:`free_stem` numbers the later one.

    >>> default_output_stem("results", "cpu", "reference").name.endswith("-reference")
    True
    >>> default_output_stem("results", "cpu", "20000:2e5:32").name.endswith("-n2e4-nnz2e5-p32")
    True
    """
    grid = _grid_name(sizes)
    stem = f"{device_tag(device)}-{_dt.date.today().isoformat()}"
    return Path(out_dir) / (f"{stem}-{grid}" if grid else stem)


def free_stem(stem: str | os.PathLike[str], suffixes: Sequence[str] = (".json", ".png")) -> Path:
    """``stem`` if no file of it exists with any of ``suffixes``, else ``stem-run2``, ``-run3``...

    A run never takes the name of an earlier run's results, nor of a plot left alone.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = (Path(tmp) / "cpu-2026-12-03.json").write_text("{}")
    ...     free_stem(Path(tmp) / "cpu-2026-12-03").name
    'cpu-2026-12-03-run2'
    """
    stem = Path(stem)
    candidate, run = stem, 1
    while any(candidate.with_name(candidate.name + suffix).exists() for suffix in suffixes):
        run += 1
        candidate = stem.with_name(f"{stem.name}-run{run}")
    return candidate


def write_json(
    results: Sequence[Result],
    path: str | os.PathLike[str],
    meta: dict[str, Any],
    *,
    overwrite: bool = False,
) -> Path:
    """Write ``{"meta", "results", "headline", "validation"}`` to ``path`` (folders created).

    ``headline`` is :func:`headlines`, ``validation`` is :func:`validation_costs`; both are
    derived from ``results``, which is all :func:`load_results` reads back. An existing
    ``path`` raises :class:`OutputExistsError` unless ``overwrite=True``: the file is created
    exclusively, so results are never replaced by accident, even by a run started meanwhile.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "meta": meta,
        "results": [r.to_dict() for r in results],
        "headline": headlines(results),
        "validation": validation_costs(results),
    }
    text = json.dumps(doc, indent=1) + "\n"
    try:
        with open(path, "w" if overwrite else "x", encoding="utf-8") as file:
            file.write(text)
    except FileExistsError:
        raise OutputExistsError(
            f"write_json(path={str(path)!r}): the file exists; choose another path (see "
            "free_stem) or pass overwrite=True to replace it"
        ) from None
    return path


def load_results(path: str | os.PathLike[str]) -> tuple[list[Result], dict[str, Any]]:
    """Read a file written by :func:`write_json`: the results and the ``meta`` dict.

    Lets a notebook draw results measured elsewhere (for example on a GPU).
    """
    doc = json.loads(Path(path).read_text())
    case_fields = {f.name for f in fields(Case)}
    results = []
    for row in doc["results"]:
        case = Case(**{k: v for k, v in row.items() if k in case_fields})
        rest = {k: v for k, v in row.items() if k not in case_fields}
        results.append(Result(case=case, **rest))
    return results, doc["meta"]
