"""What the benchmark reports: the headline ratios and aims, the tables, and the JSON file.

:func:`headline` turns a list of :class:`~sparsegrad_lab.benchmark.Result` into ratios of
one implementation to every other, per case, and judges each against the :data:`AIMS`
set for that size; :func:`format_table` and :func:`format_headline` print them;
:func:`write_json` and :func:`load_results` keep them (lesson 03 reads the committed files
in ``benchmarks/results/``). The plot is :func:`sparsegrad_lab.plots.plot_benchmark`.

>>> from sparsegrad_lab.benchmark import make_cases, run_benchmark
>>> results = run_benchmark(make_cases([(300, 1000, 8, 1)], layouts=["csr"]),
...                         impls=["sddmm", "gather"], repeats=1, warmup=0,
...                         fresh_process=False, progress=False)
>>> [row["reference"] for row in headline(results)]
['gather', 'outputs']
"""

from __future__ import annotations

import datetime as _dt
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

from .benchmark import SIZE_PRESETS, Result
from .implementations import IMPLEMENTATIONS, Case

__all__ = [
    "AIMS",
    "Aim",
    "default_output_stem",
    "device_tag",
    "format_headline",
    "format_table",
    "headline",
    "headlines",
    "load_results",
    "machine_info",
    "write_json",
]


@dataclass(frozen=True)
class Aim:
    """A bound on ``ours / reference`` for one metric at one size, e.g. "at most 0.3x".

    ``reference`` may be ``"outputs"``: the bytes of ``C``, ``∇A``'s values and ``∇B``.
    ``metric`` is ``"bwd_ms"``, ``"fwdbwd_ms"`` or ``"peak_extra_bytes"``.
    """

    device: str
    n: int
    nnz: int
    p: int
    ours: str
    reference: str
    metric: str
    bound: float
    label: str

    def applies(self, case: Case, ours: str, reference: str) -> bool:
        """Whether this aim judges ``ours`` against ``reference`` on ``case`` (2-D only)."""
        at = (case.device.split(":")[0], case.n, case.nnz, case.p, case.batch)
        return (ours, reference) == (self.ours, self.reference) and at == (
            self.device,
            self.n,
            self.nnz,
            self.p,
            1,
        )


_REFERENCE_CPU = ("cpu", 100_000, 1_000_000, 64)
_REFERENCE_CUDA = ("cuda", 1_000_000, 10_000_000, 64)

#: The aims the project set: a *target* must hold, a *stretch aim* is what a faster
#: backward would reach, a *tightened target* the GPU bound once the target was met. The
#: aims of a training loop that keeps the pattern (``"sddmm_kept"``) are reported next to
#: the per-call numbers, never instead of them.
AIMS: list[Aim] = [
    Aim(*_REFERENCE_CPU, "sddmm", "gather", "bwd_ms", 0.3, "target"),
    Aim(*_REFERENCE_CPU, "sddmm", "gather", "peak_extra_bytes", 0.25, "target"),
    Aim(*_REFERENCE_CPU, "sddmm", "torch_csr", "bwd_ms", 1.0, "target"),
    Aim(*_REFERENCE_CPU, "sddmm", "tsgu", "bwd_ms", 0.15, "stretch aim"),
    Aim(*_REFERENCE_CPU, "sddmm", "torch_csr", "bwd_ms", 0.5, "stretch aim"),
    Aim(*_REFERENCE_CPU, "sddmm", "tsgu", "peak_extra_bytes", 0.15, "stretch aim"),
    Aim(*_REFERENCE_CUDA, "sddmm", "torch_csr", "fwdbwd_ms", 1.0, "target"),
    Aim(*_REFERENCE_CUDA, "sddmm", "outputs", "peak_extra_bytes", 1.1, "target"),
    Aim(*_REFERENCE_CUDA, "sddmm", "torch_csr", "fwdbwd_ms", 0.6, "tightened target"),
    Aim(*_REFERENCE_CUDA, "sddmm", "outputs", "peak_extra_bytes", 1.1, "tightened target"),
    Aim(*_REFERENCE_CPU, "sddmm_kept", "tsgu", "bwd_ms", 0.15, "stretch aim, pattern kept"),
    Aim(*_REFERENCE_CPU, "sddmm_kept", "torch_csr", "bwd_ms", 0.5, "stretch aim, pattern kept"),
    Aim(
        *_REFERENCE_CPU,
        "sddmm_kept",
        "tsgu",
        "peak_extra_bytes",
        0.15,
        "stretch aim, pattern kept",
    ),
    Aim(
        *_REFERENCE_CUDA,
        "sddmm_kept",
        "torch_csr",
        "fwdbwd_ms",
        0.6,
        "tightened target, pattern kept",
    ),
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


def _ratio_row(ours: Result, ref: Result) -> dict[str, Any]:
    row: dict[str, Any] = {
        "ours": ours.impl,
        "case": ours.case.label(),
        "layout": ours.case.layout,
        "reference": ref.impl,
    }
    for metric in _RATIO_METRICS:
        a, b = getattr(ours, metric), getattr(ref, metric)
        row[metric] = a / b if a is not None and b else None
    for phase in ("bwd", "fwdbwd"):
        # Paired: the median over rounds of this round's ratio. Both ran in the same
        # round, so a busy spell on the machine cancels out of the ratio.
        mine, theirs = ours.times_ms.get(phase, []), ref.times_ms.get(phase, [])
        if mine and len(mine) == len(theirs):
            row[f"{phase}_paired"] = statistics.median(
                x / y for x, y in zip(mine, theirs, strict=True)
            )
    return row


def _judge(row: dict[str, Any], case: Case) -> None:
    """Add to ``row`` every aim that applies, with its value and whether it holds."""
    for aim in AIMS:
        if not aim.applies(case, row["ours"], row["reference"]):
            continue
        # Times are judged on the paired ratio when there is one (the robust estimate of
        # the same ratio of times), memory on the measured bytes.
        judged = aim.metric.replace("_ms", "_paired")
        judged = judged if row.get(judged) is not None else aim.metric
        if row.get(judged) is not None:
            row.setdefault("targets", []).append(
                {
                    "metric": judged,
                    "value": row[judged],
                    "bound": aim.bound,
                    "source": aim.label,
                    "holds": bool(row[judged] <= aim.bound),
                }
            )


def headline(results: Sequence[Result], ours: str = "sddmm") -> list[dict[str, Any]]:
    """Ratios of ``ours`` to every other implementation, per case, and the aims.

    Each row: ``ours``, the case label, the reference implementation (``"outputs"`` is the
    bytes of ``C``, ``∇A`` values and ``∇B``), and ``ours / reference`` for bwd time,
    fwd+bwd time (ratio of medians, of fastest runs, and ``*_paired``: the median of the
    per-round ratios, the most robust on a shared machine) and peak extra memory. Rows at
    an :data:`AIMS` size carry, under ``"targets"``, each bound and whether it holds (times
    judged on the paired ratio when both ran in the same rounds).
    """
    rows: list[dict[str, Any]] = []
    for r in results:
        if r.impl != ours or r.status != "ok":
            continue
        refs = (_lookup(results, r.case, name) for name in IMPLEMENTATIONS if name != ours)
        case_rows = [_ratio_row(r, ref) for ref in refs if ref is not None]
        case_rows.append(
            {
                "ours": ours,
                "case": r.case.label(),
                "layout": r.case.layout,
                "reference": "outputs",
                "peak_extra_bytes": (r.peak_extra_bytes or 0) / (r.output_bytes or 1),
            }
        )
        for row in case_rows:
            _judge(row, r.case)
        rows += case_rows
    return rows


def headlines(results: Sequence[Result]) -> list[dict[str, Any]]:
    """:func:`headline` rows of the default ``"sddmm"``, then of ``"sddmm_kept"``."""
    return headline(results, "sddmm") + headline(results, "sddmm_kept")


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
                f"{ours + ' / reference':<24}bwd: median  paired  fastest | f+b: median | "
                "peak memory"
            )
            lines.append(row["case"])
            last = (ours, row["case"])
        lines.append(
            f"  {row['reference']:10s}        {_fmt(row.get('bwd_ms'), '6.2f')}  "
            f"{_fmt(row.get('bwd_paired'), '6.2f')}  {_fmt(row.get('bwd_min_ms'), '7.2f')} |"
            f"      {_fmt(row.get('fwdbwd_ms'), '6.2f')} |      "
            f"{_fmt(row.get('peak_extra_bytes'), '6.2f')}"
        )
        for t in row.get("targets", []):
            verdict = "holds" if t["holds"] else "MISSED"
            lines.append(
                f"      {t['source']}: {t['metric']} {t['value']:.2f} <= {t['bound']}x: {verdict}"
            )
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
    from . import __version__

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


def default_output_stem(
    out_dir: str | os.PathLike[str], device: Any = "cpu", sizes: str = "small"
) -> Path:
    """``out_dir/<device tag>-<YYYY-MM-DD>`` for the default grid (add ``.json``/``.png``).

    Another preset is appended (``...-reference``), explicit sizes as ``-custom``, so runs
    of different grids on one day do not overwrite each other.

    >>> default_output_stem("results", "cpu", "reference").name.endswith("-reference")
    True
    """
    stem = f"{device_tag(device)}-{_dt.date.today().isoformat()}"
    if sizes != "small":
        stem += f"-{sizes if sizes in SIZE_PRESETS else 'custom'}"
    return Path(out_dir) / stem


def write_json(
    results: Sequence[Result], path: str | os.PathLike[str], meta: dict[str, Any]
) -> Path:
    """Write ``{"meta", "results", "headline"}`` to ``path`` (folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "meta": meta,
        "results": [r.to_dict() for r in results],
        "headline": headlines(results),
    }
    path.write_text(json.dumps(doc, indent=1) + "\n")
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
