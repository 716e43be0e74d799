"""Small graphs: ``sparse_mm`` against its peers, forward + backward, one thread, paired.

For each size, layout and implementation, one step is ``C = f(A, B)`` then
``C.backward(G)`` with ``A`` (its values) and ``B`` both requiring grad. The peers are
``torch.sparse.mm`` on a CSR ``A`` and torchsparsegradutils' ``sparse_mm`` on ``A``'s own
layout. Timing is paired: every round times each implementation once, in a rotating
order, and the ratio ours / fastest peer is taken per round; the report gives the median
of those ratios (robust to a busy machine, which slows a whole round, not one entry).

Run from the repository root::

    OMP_NUM_THREADS=1 python benchmarks/small_graphs.py [--rounds 200]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor

from sparsegrad_lab import sparse_mm
from sparsegrad_lab.patterns import uniform_random

#: (name, n, nnz, p): a lesson-sized graph, and two graphs of about 10⁴ edges (Cora's size).
SIZES = [
    ("n=100 nnz=500 p=8", 100, 500, 8),
    ("n=1000 nnz=1e4 p=16", 1000, 10_000, 16),
    ("n=2708 nnz=1e4 p=16", 2708, 10_556, 16),
]


def _step(f: Callable[[Tensor, Tensor], Tensor], A: Tensor, B: Tensor, G: Tensor) -> float:
    A, B = A.detach().requires_grad_(), B.detach().requires_grad_()
    start = time.perf_counter()
    f(A, B).backward(G)
    return time.perf_counter() - start


def _implementations(layout: str) -> dict[str, tuple[Callable[[Tensor, Tensor], Tensor], str]]:
    """name -> (function, layout of the A it takes)."""
    import torchsparsegradutils

    return {
        "sparse_mm": (sparse_mm, layout),
        "torch.sparse.mm (csr)": (torch.sparse.mm, "csr"),
        f"tsgu ({layout})": (torchsparsegradutils.sparse_mm, layout),
    }


def run(rounds: int) -> list[tuple[str, str, float, dict[str, float]]]:
    """``(size, layout, median ratio to the fastest peer, median seconds per implementation)``."""
    torch.set_num_threads(1)
    rows = []
    for size, n, nnz, p in SIZES:
        for layout in ("coo", "csr"):
            impls = _implementations(layout)
            A = {lay: uniform_random(n, n, nnz=nnz, seed=0, layout=lay) for lay in ("coo", "csr")}
            gen = torch.Generator().manual_seed(1)
            B = torch.randn(n, p, generator=gen)
            G = torch.randn(n, p, generator=gen)
            names = list(impls)
            times: dict[str, list[float]] = {name: [] for name in names}
            for r in range(rounds + 10):  # the first 10 rounds warm up
                order = names[r % len(names) :] + names[: r % len(names)]
                for name in order:
                    f, lay = impls[name]
                    elapsed = _step(f, A[lay], B, G)
                    if r >= 10:
                        times[name].append(elapsed)
            peers = [name for name in names if name != "sparse_mm"]
            ratios = [
                ours / min(times[peer][i] for peer in peers)
                for i, ours in enumerate(times["sparse_mm"])
            ]
            medians = {name: statistics.median(t) for name, t in times.items()}
            rows.append((size, layout, statistics.median(ratios), medians))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    for size, layout, ratio, medians in run(args.rounds):
        times = ", ".join(f"{name} {1e6 * t:.0f} us" for name, t in medians.items())
        print(f"{size:<22} {layout}: {ratio:.2f}x the fastest peer  ({times})")


if __name__ == "__main__":
    main()
