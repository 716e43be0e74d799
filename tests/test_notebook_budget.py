"""Tests of the lessons' budget plugin (``notebook_budget.py``), without running a lesson."""

from __future__ import annotations

import subprocess
import sys

from notebook_budget import MEMORY_BUDGET_BYTES, TIME_BUDGET_S, PeakSampler, over_budget


def test_sampler_sees_a_child_process_memory() -> None:
    sampler = PeakSampler(every_s=0.01).start()
    # A child that holds 300 MiB, touched, for half a second.
    code = "b = bytearray(300 * 2**20); import time; time.sleep(0.5)"
    subprocess.run([sys.executable, "-c", code], check=True)
    peak = sampler.stop()
    assert peak >= 300 * 2**20


def test_budgets_name_the_lesson_and_the_number() -> None:
    assert over_budget("00.ipynb", 10.0, 500 * 2**20) is None
    slow = over_budget("00.ipynb", TIME_BUDGET_S + 1, 500 * 2**20)
    assert slow == "00.ipynb took 121 s (budget 120 s)"
    big = over_budget("03.ipynb", 10.0, MEMORY_BUDGET_BYTES)
    assert big == "03.ipynb peaked at 1.50 GiB of resident memory (budget 1.5 GiB)"
    blind = over_budget("04.ipynb", 10.0, 0)
    assert blind is not None and "no kernel" in blind
