"""Each lesson stays under 1.5 GiB of memory: measured while nbval executes it.

nbval runs a notebook's cells as test items in one kernel, a child process of pytest. This
plugin (loaded by the root ``conftest.py``) starts a memory sampler (and a clock) when the
notebook's first cell is set up -- which is when nbval starts the kernel -- samples the
resident memory of pytest's whole child process tree (the kernel and whatever it starts, such
as a fresh-process measurement) every 50 ms, and after the notebook's last cell checks the
lesson's memory budget. A lesson over budget fails its last cell with the numbers, before it
fails a learner on Binder (2 GiB in all). So ``make test`` executes each lesson once for nbval
and its budget instead of twice. Under pytest-xdist a lesson's cells all run in one worker
(``--dist loadscope``), which measures them; the numbers reach the summary on the last cell's
report.

Memory is a bound on work: the same lesson needs the same memory on a busy machine. Time is
not, so it fails nothing here: the summary lists what each lesson took, for information, and
the lessons' time budget is a benchmark of its own, run on a quiet machine (``make
lesson-times``, ``benchmarks/lesson_times.py``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

MEMORY_BUDGET_BYTES = int(1.5 * 2**30)
# Below this, the sampler cannot have seen a kernel with torch loaded: the measurement broke.
_LEAST_KERNEL_BYTES = 100 * 2**20
_SAMPLE_EVERY_S = 0.05


def tree_rss(root: psutil.Process) -> int:
    """Resident bytes of the children of ``root``, recursively (``root`` itself excluded)."""
    total = 0
    for proc in root.children(recursive=True):
        try:
            total += proc.memory_info().rss
        except psutil.Error:  # a process that just exited
            continue
    return total


class PeakSampler:
    """Samples :func:`tree_rss` of this process in a thread until stopped; keeps the peak."""

    def __init__(self, every_s: float = _SAMPLE_EVERY_S) -> None:
        self.peak = 0
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(me))
            self._stop.wait(self._every_s)

    def start(self) -> PeakSampler:
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def over_budget(name: str, peak_bytes: int) -> str | None:
    """Why a lesson whose processes peaked at ``peak_bytes`` fails, or ``None``.

    How long it took is no reason: that depends on the machine and what else runs on it.
    """
    if peak_bytes >= MEMORY_BUDGET_BYTES:
        return f"{name} peaked at {peak_bytes / 2**30:.2f} GiB of resident memory (budget 1.5 GiB)"
    if peak_bytes < _LEAST_KERNEL_BYTES:
        return f"{name}: the sampler saw {peak_bytes / 2**20:.0f} MiB, no kernel: it is broken"
    return None


@dataclass
class _Run:
    sampler: PeakSampler
    start: float = field(default_factory=time.perf_counter)


_last_cell: dict[Path, str] = {}
_running: dict[Path, _Run] = {}
_measured: dict[str, tuple[float, int]] = {}
_BUDGET_PROPERTY = "lesson_time_s_and_peak_bytes"


def _is_cell(item: pytest.Item) -> bool:
    return item.path.suffix == ".ipynb"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _is_cell(item):
            _last_cell[item.path] = item.nodeid


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, Any, Any]:
    if _is_cell(item) and item.path not in _running:
        _running[item.path] = _Run(PeakSampler().start())
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    result = yield
    run = _running.get(item.path) if _is_cell(item) else None
    if run is not None and _last_cell.get(item.path) == item.nodeid:
        del _running[item.path]
        elapsed, peak = time.perf_counter() - run.start, run.sampler.stop()
        # Kept on the report, so the summary sees it under pytest-xdist too (the cells ran in
        # a worker, the summary is written by the controller).
        item.user_properties.append((_BUDGET_PROPERTY, (item.path.name, elapsed, peak)))
        problem = over_budget(item.path.name, peak)
        if problem is not None:
            raise AssertionError(problem)
    return result


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for key, value in report.user_properties:
        if key == _BUDGET_PROPERTY and report.when == "call":
            name, elapsed, peak = value
            _measured[name] = (elapsed, peak)


def pytest_sessionfinish() -> None:
    for run in _running.values():  # a notebook stopped early (-x, a failing cell)
        run.sampler.stop()
    _running.clear()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _measured:
        return
    terminalreporter.section("lessons: memory (kernel and its children), and time taken here")
    for name, (elapsed, peak) in sorted(_measured.items()):
        terminalreporter.write_line(f"{name}: peak {peak / 2**20:.0f} MiB, {elapsed:.1f} s")
    terminalreporter.write_line(
        "(the time is this run's, on this machine, and judged by no test: `make lesson-times` "
        "checks the lessons' time budget)"
    )
