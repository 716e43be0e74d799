"""Time each lesson run from the top in a fresh kernel, against the lessons' time budget.

A learner on a 2-core Binder session runs a lesson's cells while reading it; each lesson is
meant to run in under :data:`TIME_BUDGET_S` (two minutes; the lessons' first cells say "running
every cell takes about a minute" or "one to two minutes"). This executes each notebook in
``notebooks/`` with nbclient, in its own kernel started from this interpreter, with
``notebooks/`` as the working directory (as ``make lab`` and nbval run them), and prints the
wall time of each -- kernel start included -- with its slowest cell, against the budget. The
notebooks on disk are not modified.

It exits with status 1 if a lesson is over the budget or fails. Time is a benchmark, not a
test: ``make test`` runs on shared machines, where seconds say more about the neighbours than
about the lessons. The memory budget, a bound on work, stays in the tests
(``tests/support/notebook_budget.py``), measured while nbval runs the lessons.

Run it on an otherwise idle machine::

    make lesson-times                       # or: .venv/bin/python benchmarks/lesson_times.py
    .venv/bin/python benchmarks/lesson_times.py 03_memory_savings   # some lessons only
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

__all__ = ["NOTEBOOKS", "TIME_BUDGET_S", "LessonTime", "main", "time_lesson"]

#: Longest a lesson may take to run from the top, kernel start included, in seconds.
TIME_BUDGET_S = 120.0
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
# A hang guard per cell, not a budget: far above any lesson's slowest cell.
_CELL_TIMEOUT_S = 900


@dataclass
class LessonTime:
    """One lesson's run: its wall time, its slowest cell, and the error that stopped it."""

    name: str
    seconds: float
    slowest_cell: int | None  # 1-based, as JupyterLab numbers cells
    slowest_cell_s: float
    error: str | None = None

    @property
    def over_budget(self) -> bool:
        return self.seconds > TIME_BUDGET_S


def _cell_seconds(cell: nbformat.NotebookNode) -> float | None:
    """Seconds from a cell's execute_input to its execute_reply (nbclient's record_timing)."""
    timing = cell.get("metadata", {}).get("execution", {})
    start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not start or not end:
        return None
    parse = datetime.fromisoformat
    return (parse(end.replace("Z", "+00:00")) - parse(start.replace("Z", "+00:00"))).total_seconds()


def time_lesson(path: Path) -> LessonTime:
    """Run the notebook at ``path`` from the top in a fresh kernel; how long it took."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=_CELL_TIMEOUT_S,
        kernel_name="python3",  # jupyter_client starts it with this interpreter
        resources={"metadata": {"path": str(path.parent)}},
        record_timing=True,
    )
    error = None
    start = time.perf_counter()
    try:
        client.execute()
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as failure:
        error = str(failure).strip().splitlines()[-1][:300]
    seconds = time.perf_counter() - start
    cells = [
        (number, _cell_seconds(cell))
        for number, cell in enumerate(notebook.cells, start=1)
        if cell.cell_type == "code"
    ]
    timed = [(number, s) for number, s in cells if s is not None]
    slowest, slowest_s = max(timed, key=lambda pair: pair[1], default=(None, 0.0))
    return LessonTime(path.name, seconds, slowest, slowest_s, error)


def _selected(names: list[str]) -> list[Path]:
    lessons = sorted(NOTEBOOKS.glob("*.ipynb"))
    if not names:
        return lessons
    chosen = [p for p in lessons if any(p.stem == n or p.name == n for n in names)]
    unknown = sorted(set(names) - {p.stem for p in chosen} - {p.name for p in chosen})
    if unknown:
        known = ", ".join(p.stem for p in lessons)
        raise SystemExit(f"lesson_times: no lesson named {', '.join(unknown)}; known: {known}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    """Print each lesson's time against the budget; 1 if one is over it or fails."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lessons", nargs="*", help="lesson names (default: every lesson)")
    args = parser.parse_args(argv)
    lessons = _selected(args.lessons)

    print(f"lessons run from the top in a fresh kernel; budget {TIME_BUDGET_S:.0f} s each")
    width = max(len(p.name) for p in lessons)
    results = []
    for path in lessons:
        result = time_lesson(path)
        results.append(result)
        slowest = (
            f"slowest cell {result.slowest_cell} ({result.slowest_cell_s:.1f} s)"
            if result.slowest_cell is not None
            else "no cell timed"
        )
        if result.error:
            verdict = f"FAILED: {result.error}"
        else:
            verdict = "OVER BUDGET" if result.over_budget else "ok"
        print(
            f"  {result.name:<{width}}  {result.seconds:6.1f} s  {slowest:<26}  {verdict}",
            flush=True,
        )
    failed = [r.name for r in results if r.error]
    over = [r.name for r in results if r.over_budget and not r.error]
    if failed:
        print(f"{len(failed)} lesson(s) failed: {', '.join(failed)}")
    if over:
        print(f"{len(over)} lesson(s) over the {TIME_BUDGET_S:.0f} s budget: {', '.join(over)}")
    if failed or over:
        return 1
    print(f"all {len(results)} within the {TIME_BUDGET_S:.0f} s budget")
    return 0


if __name__ == "__main__":
    sys.exit(main())
