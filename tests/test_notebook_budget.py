"""Each lesson runs in under 2 minutes and 1.5 GiB on this 2-core machine: measured here.

Every notebook is executed top to bottom by ``jupyter nbconvert --execute`` in a child
process (a fresh kernel, the same engine nbval uses), writing to a temporary copy, while
this process samples the resident memory of the whole process tree -- nbconvert plus the
kernel, so the figure is an upper bound on the kernel's own. The wall time and the peak are
checked against the issue's budget: a notebook that grows past it fails here before it
fails a learner on Binder (2 GiB in all).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
TIME_BUDGET_S = 120.0
MEMORY_BUDGET_BYTES = int(1.5 * 2**30)


def _tree_rss(root: psutil.Process) -> int:
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except psutil.Error:  # a process that just exited
            continue
    return total


@pytest.mark.slow
@pytest.mark.timeout(int(TIME_BUDGET_S) * 3)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_fits_its_time_and_memory_budget(path: Path, tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "jupyter",
        "nbconvert",
        "--to=notebook",
        "--execute",
        f"--ExecutePreprocessor.timeout={int(TIME_BUDGET_S)}",
        f"--output-dir={tmp_path}",
        str(path),
    ]
    start = time.perf_counter()
    child = subprocess.Popen(
        command, cwd=path.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    tree = psutil.Process(child.pid)
    peak = 0
    try:
        while child.poll() is None:
            peak = max(peak, _tree_rss(tree))
            if time.perf_counter() - start > 2 * TIME_BUDGET_S:
                pytest.fail(f"{path.name} still running after {2 * TIME_BUDGET_S:.0f} s")
            time.sleep(0.05)
    finally:
        if child.poll() is None:  # only after a failure above: stop nbconvert and its kernel
            with contextlib.suppress(psutil.Error):
                for proc in [*tree.children(recursive=True), tree]:
                    proc.kill()
        output = child.communicate()[0].decode(errors="replace")
    elapsed = time.perf_counter() - start
    print(f"{path.name}: {elapsed:.1f} s, peak {peak / 2**20:.0f} MiB (nbconvert + kernel)")
    assert child.returncode == 0, f"{path.name} failed to execute:\n{output[-3000:]}"
    assert elapsed < TIME_BUDGET_S, f"{path.name} took {elapsed:.0f} s (budget 120 s)"
    assert peak < MEMORY_BUDGET_BYTES, (
        f"{path.name} peaked at {peak / 2**30:.2f} GiB of resident memory (budget 1.5 GiB)"
    )
    assert peak > 100 * 2**20, "the sampler saw no kernel: the measurement is broken"
