"""What checking ``A``'s indices costs, next to the forward + backward it protects.

For ``nnz`` = 10⁶ and 10⁷ (``n = nnz / 10`` rows and columns, ``p = 16``), COO and CSR:
the median time of ``check_indices(A)`` (the one pass ``sparse_mm`` makes over the indices
of every ``A`` it is given without a kept pattern) and of one ``sparse_mm`` forward +
backward, with ``A`` and ``B`` requiring grad. One thread.

Run from the repository root::

    OMP_NUM_THREADS=1 python benchmarks/validation_cost.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sparsegrad_lab import sparse_mm
from sparsegrad_lab._checks import check_indices
from sparsegrad_lab.patterns import uniform_random


def _median_seconds(step: object, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for nnz in (10**6, 10**7):
        n, p = nnz // 10, 16
        for layout in ("coo", "csr"):
            A = uniform_random(n, n, nnz=nnz, seed=0, layout=layout)
            B, G = torch.randn(n, p), torch.randn(n, p)

            def step(A: torch.Tensor = A, B: torch.Tensor = B, G: torch.Tensor = G) -> None:
                sparse_mm(A.detach().requires_grad_(), B.detach().requires_grad_()).backward(G)

            step()  # warm up
            check = _median_seconds(lambda A=A: check_indices(A, "bench"), args.repeats)
            total = _median_seconds(step, args.repeats)
            print(
                f"nnz={nnz:.0e} {layout}: check {1e3 * check:.1f} ms, forward+backward "
                f"{1e3 * total:.1f} ms ({100 * check / total:.1f} % of it)"
            )


if __name__ == "__main__":
    main()
