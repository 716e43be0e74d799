"""The memory guard under a real limit: ``RLIMIT_AS`` set in a child process.

A container's cgroup limit cannot be created from a test, but an address-space limit can,
and :func:`sparsegrad_lab.memory_guard.available_bytes` takes the smallest of all limits.
With 512 MiB of headroom, ``sparse_mm`` must refuse a result of several GiB -- and a COO
``A`` with 10¹² rows, whose row pointers alone would need 8 TB -- with
``MemoryBudgetError`` before allocating, where the allocator would otherwise fail. (The
other checks of the guard, with the available memory pretended, are in ``test_ops.py``,
``test_sampled_mm.py`` and ``test_footprint.py``.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sparsegrad_lab.memory_guard import PLANNING_FRACTION, check_fits, limit_bytes

ROOT = Path(__file__).resolve().parents[1]

_CHILD = """
import resource, sys
import torch
from sparsegrad_lab import MemoryBudgetError, sparse_mm
from sparsegrad_lab.memory_guard import available_bytes

def mapped_bytes():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024

limit = mapped_bytes() + 512 * 2**20
resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))
headroom = available_bytes("cpu")
assert headroom <= 512 * 2**20, headroom
print("headroom", headroom)
{case}
"""

CASES = {
    "result-of-several-GiB": (
        "A = torch.sparse_coo_tensor(torch.zeros(2, 0, dtype=torch.int64), torch.zeros(0),"
        " (2**22, 8))\n"
        "try:\n"
        "    sparse_mm(A, torch.ones(8, 256))  # C: 2**22 x 256 float32, 4 GiB\n"
        "except MemoryBudgetError as refusal:\n"
        "    print(refusal); sys.exit(0)\n"
        "sys.exit(2)",
        "the result C of 4194304 x 256",
    ),
    # Too many entries for torch's COO product: the CSR product, on the pattern's row
    # pointers (8 TB) and MKL's int32 copy of them (4 TB). C is empty.
    "coo-with-1e12-rows": (
        "i = torch.arange(1025)\n"
        "A = torch.sparse_coo_tensor(torch.stack([i, i % 2]), torch.ones(1025), (10**12, 2))\n"
        "try:\n"
        "    sparse_mm(A.coalesce(), torch.zeros(2, 0))\n"
        "except MemoryBudgetError as refusal:\n"
        "    print(refusal); sys.exit(0)\n"
        "sys.exit(2)",
        "would need 10.91 TiB",
    ),
}


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("name", list(CASES))
def test_refused_under_an_address_space_limit(name: str) -> None:
    case, expected = CASES[name]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    child = subprocess.run(
        [sys.executable, "-c", _CHILD.format(case=case)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    output = child.stdout + child.stderr
    assert child.returncode == 0, f"exit status {child.returncode}:\n{output}"
    assert expected in child.stdout


# ------------------------------------------------------------- the policy, without a child


def test_the_limit_is_the_smaller_of_budget_and_available() -> None:
    assert limit_bytes(100, available=1000) == 100
    assert limit_bytes(1000, available=100) == 100
    assert limit_bytes(None, available=100) == 100
    # check_fits applies that limit and says which one it was.
    check_fits(100, what="x", budget=100, available=1000)
    with pytest.raises(MemoryError, match="above the budget of 100 B"):
        check_fits(101, what="x", budget=100, available=1000)
    with pytest.raises(MemoryError, match="above what is available on cpu, 100 B"):
        check_fits(101, what="x", budget=1000, available=100)
    assert 0 < PLANNING_FRACTION < 1
