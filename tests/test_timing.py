"""Tests of the timing helpers the benchmark and the sweeps share."""

from __future__ import annotations

import time

import torch

from sparsegrad_lab.timing import time_call, time_case, time_step


def test_time_case_times_every_phase_without_accumulating() -> None:
    A = torch.eye(50).to_sparse_csr().requires_grad_()
    B = torch.ones(50, 3, requires_grad=True)
    t = time_case(torch.sparse.mm, A, B, torch.ones(50, 3), repeats=3, warmup=1)
    assert {k: len(v) for k, v in t.items()} == {"fwd": 3, "bwd": 3, "fwdbwd": 3}
    assert A.grad is None and B.grad is None


def test_time_step_runs_forward_then_backward_once() -> None:
    calls: list[str] = []
    A = torch.eye(4).to_sparse().requires_grad_()
    B = torch.ones(4, 2, requires_grad=True)

    def counted(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        calls.append("fwd")
        return torch.sparse.mm(A, B)

    fwd, bwd = time_step(counted, A, B, torch.ones(4, 2))
    assert calls == ["fwd"] and fwd > 0 and bwd > 0


def test_time_call_runs_once_and_measures_the_call() -> None:
    calls: list[int] = []

    def slow() -> None:
        calls.append(1)
        time.sleep(0.02)

    # The measured time includes the sleep and lies within an outer clock's reading of the
    # same call: no bound on how long a busy machine may take.
    outer_start = time.perf_counter()
    seconds = time_call(slow)
    outer = time.perf_counter() - outer_start
    assert calls == [1] and 0.02 <= seconds <= outer
