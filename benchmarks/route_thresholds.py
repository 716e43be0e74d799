"""Time both sides of each size bound that picks a kernel, on this machine.

The bounds in ``sparsegrad_lab/routes.py`` and ``sparsegrad_lab/index_checks.py`` are set
from measurements, not derived; this script repeats them, so that a claim about which side
is faster comes with the means to check it (on another machine, another torch, more
threads). For each bound it runs the same work with the bound forced open and forced shut,
and prints the median time of each and their ratio (forced open / forced shut: below 1, the
route the bound allows is faster there):

``shared gather`` (:data:`~sparsegrad_lab.routes.SHARED_GATHER_MAX_NNZ`)
    a first-order ``"sddmm"`` backward of a 2-D CSR ``A``: one gather of ``G``'s rows for
    both gradients, against torch's sampled kernel and a second gather.
``coo product`` (:data:`~sparsegrad_lab.routes.COO_PRODUCT_MAX_NNZ`)
    a forward and backward of a coalesced 2-D COO ``A``: torch's COO product (which checks
    the index ranges itself), against the CSR product after the full index check.
``few entries`` (:data:`~sparsegrad_lab.index_checks.FEW_ENTRIES`)
    ``check_indices`` of a CPU CSR or COO ``A``: on numpy views of its indices, against
    torch's kernels.

Speed is a benchmark, not a test: run it on an otherwise idle machine::

    .venv/bin/python benchmarks/route_thresholds.py              # one thread
    .venv/bin/python benchmarks/route_thresholds.py --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

import sparsegrad_lab.index_checks as index_checks
import sparsegrad_lab.routes as routes
from sparsegrad_lab import sparse_mm
from sparsegrad_lab.example_matrices import uniform_random

OPEN, SHUT = 2**62, -1  # a bound that lets every size through, and one that lets none


@contextmanager
def bound(module: Any, name: str, value: int) -> Iterator[None]:
    """``module.name`` set to ``value`` for the block (the bound is read at each call)."""
    saved = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, saved)


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs, after two warm-up runs."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def compare(
    label: str, module: Any, name: str, fn: Callable[[], object], repeats: int
) -> tuple[str, float, float]:
    with bound(module, name, OPEN):
        allowed = median_seconds(fn, repeats)
    with bound(module, name, SHUT):
        refused = median_seconds(fn, repeats)
    return label, allowed, refused


def shared_gather(repeats: int) -> Iterator[tuple[str, float, float]]:
    for nnz in (250, 500, 1000, 1500, 3000):
        A = uniform_random(500, 500, nnz=nnz, seed=0, layout="csr").requires_grad_()
        B = torch.randn(500, 16, requires_grad=True)
        G = torch.randn(500, 16)
        C = sparse_mm(A, B)

        def backward(C: torch.Tensor = C, G: torch.Tensor = G) -> None:
            torch.autograd.grad(C, (A, B), G, retain_graph=True)  # noqa: B023

        yield compare(f"nnz={nnz:>5} p=16", routes, "SHARED_GATHER_MAX_NNZ", backward, repeats)


def coo_product(repeats: int) -> Iterator[tuple[str, float, float]]:
    for nnz in (250, 1000, 4000):
        for p in (8, 64, 512):
            A = uniform_random(2000, 2000, nnz=nnz, seed=0, layout="coo").requires_grad_()
            B = torch.randn(2000, p, requires_grad=True)

            def step(A: torch.Tensor = A, B: torch.Tensor = B) -> None:
                sparse_mm(A, B).sum().backward()

            label = f"nnz={nnz:>5} p={p:<4}"
            yield compare(label, routes, "COO_PRODUCT_MAX_NNZ", step, repeats)


def few_entries(repeats: int) -> Iterator[tuple[str, float, float]]:
    for layout in ("csr", "coo"):
        for nnz in (100, 1000, 4096, 10_000, 30_000, 100_000):
            A = uniform_random(5000, 5000, nnz=nnz, seed=0, layout=layout)

            def check(A: torch.Tensor = A) -> None:
                index_checks.check_indices(A, "route_thresholds")

            label = f"{layout} nnz={nnz:>6}"
            yield compare(label, index_checks, "FEW_ENTRIES", check, repeats)


PARTS = {"shared gather": shared_gather, "coo product": coo_product, "few entries": few_entries}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--repeats", type=int, default=50, help="timed runs of each (50)")
    parser.add_argument("--only", choices=list(PARTS), help="one part only")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.sparse.check_sparse_tensor_invariants.disable()  # as in a user's session
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.repeats}")
    for part, rows in PARTS.items():
        if args.only and part != args.only:
            continue
        print(f"\n{part}: bound open (µs)  bound shut (µs)  open / shut")
        for label, allowed, refused in rows(args.repeats):
            print(
                f"  {label}  {allowed * 1e6:10.1f}  {refused * 1e6:10.1f}  {allowed / refused:6.2f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
