"""Timing one forward + backward step, the machine's copy bandwidth, and a progress bar.

Shared by the benchmark (:mod:`sparsegrad_lab.benchmark`) and the lessons' sweeps
(:mod:`sparsegrad_lab.sweep`). On CUDA every time is bracketed by ``torch.cuda.Event`` s
and synchronised; on CPU it is ``time.perf_counter``.

>>> A = torch.eye(3).to_sparse_csr().requires_grad_()
>>> B = torch.ones(3, 2, requires_grad=True)
>>> fwd, bwd = time_step(torch.sparse.mm, A, B, torch.ones(3, 2))
>>> fwd > 0 and bwd > 0 and A.grad is None
True
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

__all__ = ["measure_copy_bandwidth", "progress_bar", "time_call", "time_case", "time_step"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: Any = "cpu") -> float:
    """Seconds of one call ``fn()``, the work queued on ``device`` included (CUDA).

    >>> time_call(lambda: torch.ones(1000).sum()) > 0
    True
    """
    dev = torch.device(device)
    _sync(dev)
    start = time.perf_counter()
    fn()
    _sync(dev)
    return time.perf_counter() - start


def time_step(
    fn: Callable[[Tensor, Tensor], Tensor], A: Tensor, B: Tensor, G: Tensor
) -> tuple[float, float]:
    """Seconds of one forward ``C = fn(A, B)`` and one backward ``C.backward(G)``.

    It starts and ends with no gradients accumulated (``A.grad = B.grad = None``), so every
    run does the same work.
    """
    device = B.device
    A.grad = B.grad = None
    if device.type == "cuda":
        start, mid, end = (torch.cuda.Event(enable_timing=True) for _ in range(3))
        torch.cuda.synchronize(device)
        start.record()
        C = fn(A, B)
        mid.record()
        C.backward(G)
        end.record()
        torch.cuda.synchronize(device)
        fwd, bwd = start.elapsed_time(mid) / 1e3, mid.elapsed_time(end) / 1e3
    else:
        t0 = time.perf_counter()
        C = fn(A, B)
        t1 = time.perf_counter()
        C.backward(G)
        t2 = time.perf_counter()
        fwd, bwd = t1 - t0, t2 - t1
    del C
    A.grad = B.grad = None
    return fwd, bwd


def time_case(
    fn: Callable[[Tensor, Tensor], Tensor],
    A: Tensor,
    B: Tensor,
    G: Tensor,
    *,
    repeats: int = 5,
    warmup: int = 1,
) -> dict[str, list[float]]:
    """Seconds of each forward, backward and forward + backward, over ``repeats`` runs.

    ``warmup`` untimed runs come first; each run is a :func:`time_step`.

    >>> A = torch.eye(3).to_sparse_csr().requires_grad_()
    >>> B = torch.ones(3, 2, requires_grad=True)
    >>> t = time_case(torch.sparse.mm, A, B, torch.ones(3, 2), repeats=2, warmup=0)
    >>> sorted(t), len(t["bwd"])
    (['bwd', 'fwd', 'fwdbwd'], 2)
    """
    out: dict[str, list[float]] = {"fwd": [], "bwd": [], "fwdbwd": []}
    for run in range(warmup + repeats):
        fwd, bwd = time_step(fn, A, B, G)
        if run >= warmup:
            out["fwd"].append(fwd)
            out["bwd"].append(bwd)
            out["fwdbwd"].append(fwd + bwd)
    return out


def measure_copy_bandwidth(device: Any = "cpu", nbytes: int = 256 * 2**20) -> float:
    """This machine's memory bandwidth in bytes/s, from the median of five tensor copies.

    A copy reads and writes ``nbytes`` each, so it moves ``2 * nbytes``; this is the rate
    the benchmark's time floor assumes.

    >>> measure_copy_bandwidth(nbytes=2**20) > 1e8
    True
    """
    dev = torch.device(device)
    src = torch.ones(nbytes // 4, device=dev)
    dst = torch.empty_like(src)
    times = []
    for _ in range(6):  # the first copy faults the pages in: not counted
        _sync(dev)
        start = time.perf_counter()
        dst.copy_(src)
        _sync(dev)
        times.append(time.perf_counter() - start)
    return 2 * nbytes / statistics.median(times[1:])


class _NoBar:
    """Stands in for a tqdm bar when none is wanted (or tqdm is not installed)."""

    def update(self, n: int) -> None:
        pass

    def set_postfix_str(self, s: str, refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, enabled: bool, desc: str = "bench", unit: str = "run") -> Any:
    """A tqdm bar of ``total`` steps, or a silent stand-in when disabled or unavailable.

    tqdm is imported only here, when a bar is asked for (``tqdm.auto``: a widget in Jupyter).

    >>> bar = progress_bar(3, enabled=False)
    >>> bar.update(1); bar.close()
    """
    if not enabled:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ModuleNotFoundError:
        return _NoBar()
    return tqdm(total=total, desc=desc, unit=unit, leave=True)
