"""Tests of the lessons' budget plugin (``support/notebook_budget.py``), running no lesson."""

from __future__ import annotations

import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
from support import notebook_budget
from support.notebook_budget import MEMORY_BUDGET_BYTES, PeakSampler, over_budget

HELD = 300 * 2**20


def test_sampler_sees_a_child_process_memory() -> None:
    sampler = PeakSampler(every_s=0.01).start()
    # A child that holds 300 MiB, touched, until told to exit: it outlives the sampler's first
    # look at it however slow the machine, so the check does not race the child's exit.
    code = "import sys\nb = bytearray(300 * 2**20)\nprint('holding', flush=True)\nsys.stdin.read()"
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "holding\n"
        deadline = time.monotonic() + 120  # a hang guard: the sampler looks every 10 ms
        while sampler.peak < HELD and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        child.communicate(input="")
    peak = sampler.stop()
    assert child.returncode == 0
    assert peak >= HELD


def test_budget_names_the_lesson_and_the_number() -> None:
    assert over_budget("00.ipynb", 500 * 2**20) is None
    big = over_budget("03.ipynb", MEMORY_BUDGET_BYTES)
    assert big == "03.ipynb peaked at 1.50 GiB of resident memory (budget 1.5 GiB)"
    blind = over_budget("04.ipynb", 0)
    assert blind is not None and "no kernel" in blind


class _Sampled:
    """Stands for a PeakSampler that saw ``peak`` bytes."""

    def __init__(self, peak: int) -> None:
        self.peak = peak

    def stop(self) -> int:
        return self.peak


def _finish_lesson(monkeypatch: pytest.MonkeyPatch, peak: int, started_s_ago: float) -> list:
    """Run the plugin's hook for a lesson's last cell; returns what it put on the report."""
    path = Path("notebooks/99_fake.ipynb")
    item = types.SimpleNamespace(path=path, nodeid=f"{path}::Cell 9", user_properties=[])
    monkeypatch.setitem(notebook_budget._last_cell, path, item.nodeid)
    started = time.perf_counter() - started_s_ago
    run = notebook_budget._Run(_Sampled(peak), start=started)
    monkeypatch.setitem(notebook_budget._running, path, run)
    hook = notebook_budget.pytest_runtest_call(item)
    next(hook)
    with pytest.raises(StopIteration):
        hook.send(None)  # the cell itself passed
    return item.user_properties


def test_a_lesson_is_not_failed_for_the_time_it_took(monkeypatch: pytest.MonkeyPatch) -> None:
    # Three hours on a busy machine, within the memory budget: recorded, not failed.
    (prop,) = _finish_lesson(monkeypatch, 500 * 2**20, started_s_ago=3 * 3600)
    name, elapsed, peak = prop[1]
    assert (name, peak) == ("99_fake.ipynb", 500 * 2**20) and elapsed >= 3 * 3600


def test_a_lesson_over_the_memory_budget_fails_its_last_cell(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(AssertionError, match=r"99_fake.ipynb peaked at 1.50 GiB"):
        _finish_lesson(monkeypatch, MEMORY_BUDGET_BYTES, started_s_ago=1.0)
