"""The memory guard under a real limit: ``RLIMIT_AS`` set in a child process.

A container's cgroup limit cannot be created from a test, but an address-space limit can,
and :func:`sparsegrad_lab.memory_guard.available_bytes` takes the smallest of all limits.
With 512 MiB of headroom, ``sparse_mm`` must refuse a result of several GiB -- and a COO
``A`` with 10¹² rows, whose row pointers alone would need 8 TB -- with
``MemoryBudgetError`` before allocating, where the allocator would otherwise fail.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
    "coo-with-1e12-rows": (
        "A = torch.sparse_coo_tensor(torch.zeros(2, 0, dtype=torch.int64), torch.zeros(0),"
        " (10**12, 2))\n"
        "try:\n"
        "    sparse_mm(A, torch.zeros(2, 0))  # C is empty: only the row pointers count\n"
        "except MemoryBudgetError as refusal:\n"
        "    print(refusal); sys.exit(0)\n"
        "sys.exit(2)",
        "would need 7.28 TiB",
    ),
}


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
