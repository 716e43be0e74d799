"""Each lesson runs in under 2 minutes and 1.5 GiB on this 2-core machine: measured here.

Every notebook is executed top to bottom in a fresh kernel (nbclient, the same engine
nbconvert uses) while a thread samples the resident memory of the kernel process and its
children. The wall time and the peak are checked against the issue's budget; a notebook
that grows past it fails here before it fails a learner on Binder (2 GiB in all).
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import nbformat
import psutil
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
TIME_BUDGET_S = 120.0
MEMORY_BUDGET_BYTES = int(1.5 * 2**30)


class _PeakRss:
    """Samples the resident memory of a process tree every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self._root = psutil.Process(pid)
        self._interval = interval
        self._stop = threading.Event()
        self.peak = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tree_rss(self) -> int:
        total = 0
        for proc in [self._root, *self._root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):  # a child that just exited
                total += proc.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self._tree_rss())
            except psutil.Error:
                return
            time.sleep(self._interval)

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_fits_its_time_and_memory_budget(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook, timeout=int(TIME_BUDGET_S) * 2, resources={"metadata": {"path": path.parent}}
    )
    with client.setup_kernel():
        pid = client.km.provisioner.pid  # type: ignore[union-attr]
        start = time.perf_counter()
        with _PeakRss(pid) as sampler:
            for index, cell in enumerate(notebook.cells):
                client.execute_cell(cell, index)
        elapsed = time.perf_counter() - start
    print(f"{path.name}: {elapsed:.1f} s, peak {sampler.peak / 2**20:.0f} MiB")
    assert elapsed < TIME_BUDGET_S, f"{path.name} took {elapsed:.0f} s (budget 120 s)"
    assert sampler.peak < MEMORY_BUDGET_BYTES, (
        f"{path.name} peaked at {sampler.peak / 2**30:.2f} GiB of resident memory (budget 1.5 GiB)"
    )
    assert sampler.peak > 50 * 2**20, "the sampler saw no kernel: the measurement is broken"
