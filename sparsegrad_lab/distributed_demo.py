r"""Learning edge weights with ``DistributedDataParallel``: several CPU processes, one answer.

Lesson 05 (part 5) trains lesson 04's model -- the stored values :math:`w` of a sparse
:math:`W` with a fixed pattern, fitted so that :math:`W X \approx Y` -- in several processes.
This module holds what the processes run, because ``torch.multiprocessing.spawn`` starts
fresh interpreters that must import the worker function by name (a function defined in a
notebook cannot be found there).

Data parallelism. Each of the :math:`P` processes keeps a full copy of :math:`w` and sees
one shard of the signals: the columns :math:`S_r` of :math:`X` and :math:`Y`, all of the same
size :math:`p / P`. Process :math:`r` computes the mean squared error on its shard,

.. math::

    L_r(w) = \frac{1}{n\,|S_r|} \sum_{k \in S_r} \lVert W x_k - y_k \rVert^2,
    \qquad L(w) = \frac{1}{n p} \sum_{k} \lVert W x_k - y_k \rVert^2 = \frac{1}{P} \sum_r L_r(w),

and ``DistributedDataParallel`` all-reduces the gradients after each backward and divides by
:math:`P`: every process then holds :math:`\frac1P \sum_r \nabla L_r = \nabla L`, the
gradient of the loss over all signals, and takes the same optimizer step a single process
would take on all the data. So after any number of steps the weights agree with
:func:`train_single` up to rounding (the all-reduce adds in another order). The gradient
:math:`\nabla L_r` itself is ``sparse_mm``'s sampled product on the pattern; what crosses
between processes is the dense vector of its ``nnz`` values.

The processes talk through torch's ``gloo`` backend over TCP on the loopback interface: CPU
only, no GPU or MPI needed.

>>> problem = EdgeWeightProblem(n=40, nnz=160, p=8)
>>> w = train_single(problem, steps=3)  # one value per stored entry (duplicates merged)
>>> w.shape[0] <= 160, w.dtype
(True, torch.float64)
"""

from __future__ import annotations

import datetime
import math
import os
import socket
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .errors import InputTypeError, InputValueError
from .ops import sparse_mm
from .scalar_checks import check_int, check_real

__all__ = ["EdgeWeightProblem", "EdgeWeights", "train_distributed", "train_single"]


@dataclass(frozen=True)
class EdgeWeightProblem:
    """A seeded edge-weight regression: ``Y = W* X + sigma E`` on a random sparse pattern.

    ``W*`` is ``n x n`` with about ``nnz`` stored entries at random positions (duplicates
    merged), positive, each row summing to 1; ``X`` holds ``p`` random signals. Everything is
    float64 and rebuilt from these numbers alone, so each process of a distributed run makes
    the same problem without receiving any tensor. The numbers are checked when the problem
    is made (``n``, ``nnz``, ``p`` ints ``>= 1``, ``seed`` an int ``>= 0``, ``sigma`` finite
    and ``>= 0``), so a wrong one is refused before any process starts.

    >>> problem = EdgeWeightProblem(n=30, nnz=90, p=4)
    >>> indices, w_true, X, Y = problem.tensors()
    >>> indices.shape[0], X.shape, Y.shape
    (2, torch.Size([30, 4]), torch.Size([30, 4]))
    >>> EdgeWeightProblem(p=2.0)
    Traceback (most recent call last):
    ...
    sparsegrad_lab.errors.InputTypeError: EdgeWeightProblem: p must be an int, got float
    """

    n: int = 200
    nnz: int = 1200
    p: int = 32
    sigma: float = 0.02
    seed: int = 0

    def __post_init__(self) -> None:
        where = "EdgeWeightProblem"
        # Stored as plain Python numbers: asdict() hands them to freshly spawned processes.
        for name in ("n", "nnz", "p"):
            object.__setattr__(self, name, check_int(getattr(self, name), name, where, minimum=1))
        object.__setattr__(self, "seed", check_int(self.seed, "seed", where, minimum=0))
        object.__setattr__(self, "sigma", _finite(self.sigma, "sigma", where, positive=False))

    def tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(indices, w_true, X, Y)``: the pattern (2 x nnz, coalesced), true values, data."""
        gen = torch.Generator().manual_seed(self.seed)
        positions = torch.randint(0, self.n, (2, self.nnz), generator=gen)
        pattern = torch.sparse_coo_tensor(
            positions, torch.ones(self.nnz, dtype=torch.float64), (self.n, self.n)
        ).coalesce()
        indices = pattern.indices()
        rows = indices[0]
        raw = torch.rand(indices.shape[1], generator=gen, dtype=torch.float64) + 0.1
        row_sums = torch.zeros(self.n, dtype=torch.float64).index_add_(0, rows, raw)
        w_true = raw / row_sums[rows]
        X = torch.randn(self.n, self.p, generator=gen, dtype=torch.float64)
        W_true = torch.sparse_coo_tensor(indices, w_true, (self.n, self.n), is_coalesced=True)
        noise = torch.randn(self.n, self.p, generator=gen, dtype=torch.float64)
        Y = sparse_mm(W_true, X) + self.sigma * noise
        return indices, w_true, X, Y


class EdgeWeights(nn.Module):
    """``X -> W X`` where ``W`` has a fixed pattern and learned values, one per stored entry.

    The values start at ``1 / deg(i)`` for every entry of row ``i`` (all neighbours equal).

    >>> indices = torch.tensor([[0, 0, 1], [0, 1, 1]])
    >>> EdgeWeights(indices, 2).values.tolist()
    [0.5, 0.5, 1.0]
    """

    indices: Tensor  # a buffer: DDP broadcasts it from rank 0 with the module's state

    def __init__(self, indices: Tensor, n: int) -> None:
        super().__init__()
        n = check_int(n, "n", "EdgeWeights", minimum=1)
        _check_indices(indices, n)
        rows = indices[0]
        degree = torch.bincount(rows, minlength=n).to(torch.float64)
        self.n = n
        self.register_buffer("indices", indices)
        self.values = nn.Parameter(1.0 / degree[rows])

    def forward(self, X: Tensor) -> Tensor:
        W = torch.sparse_coo_tensor(self.indices, self.values, (self.n, self.n), is_coalesced=True)
        return sparse_mm(W, X)


def _check_indices(indices: Any, n: int) -> None:
    """Refuse anything but a ``(2, nnz)`` integer tensor of positions in an ``n x n`` matrix."""
    where = "EdgeWeights"
    if not isinstance(indices, Tensor) or indices.dtype != torch.int64:
        got = f"dtype {indices.dtype}" if isinstance(indices, Tensor) else type(indices).__name__
        raise InputTypeError(f"{where}: indices must be an int64 tensor (2, nnz), got {got}")
    if indices.dim() != 2 or indices.shape[0] != 2:
        raise InputValueError(
            f"{where}: indices must have shape (2, nnz), got {tuple(indices.shape)}"
        )
    if indices.numel() and not 0 <= int(indices.min()) <= int(indices.max()) < n:
        raise InputValueError(
            f"{where}: indices must lie in [0, {n}) (W is {n} x {n}), got values from "
            f"{int(indices.min())} to {int(indices.max())}"
        )


def _finite(value: Any, name: str, where: str, *, positive: bool) -> float:
    """``value`` as a finite float, ``> 0`` if ``positive``, else ``>= 0``."""
    number = check_real(value, name, where, low=0.0, high=math.inf)  # a number, >= 0, not NaN
    if math.isinf(number) or (positive and number == 0):
        bound = "> 0" if positive else ">= 0"
        raise InputValueError(f"{where}: {name} must be finite and {bound}, got {value!r}")
    return number


def _check_run(where: str, problem: Any, steps: Any, lr: Any) -> tuple[int, float]:
    """The checked ``steps`` and ``lr`` of a training run, after checking ``problem``."""
    if not isinstance(problem, EdgeWeightProblem):
        raise InputTypeError(
            f"{where}: problem must be an EdgeWeightProblem, got {type(problem).__name__}"
        )
    return check_int(steps, "steps", where, minimum=0), _finite(lr, "lr", where, positive=True)


def _train(model: nn.Module, X: Tensor, Y: Tensor, steps: int, lr: float) -> None:
    """Adam on the mean squared error of ``model(X)`` against ``Y``: the loop both paths run."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        ((model(X) - Y) ** 2).mean().backward()
        optimizer.step()


def train_single(problem: EdgeWeightProblem, steps: int = 50, lr: float = 0.01) -> Tensor:
    """Train on all ``p`` signals in this process; returns the learned values.

    ``steps`` (an int ``>= 0``) steps of Adam at learning rate ``lr`` (finite, ``> 0``).

    >>> train_single(EdgeWeightProblem(n=20, nnz=40, p=4), steps=True)
    Traceback (most recent call last):
    ...
    sparsegrad_lab.errors.InputTypeError: train_single: steps must be an int, got bool
    """
    steps, lr = _check_run("train_single", problem, steps, lr)
    indices, _, X, Y = problem.tensors()
    model = EdgeWeights(indices, problem.n)
    _train(model, X, Y, steps, lr)
    return model.values.detach().clone()


def _shard(problem: EdgeWeightProblem, world_size: int) -> int:
    """Columns per process; the shards must be equal for the averaged gradient to be exact."""
    if world_size < 1 or problem.p % world_size:
        raise InputValueError(
            f"train_distributed: world_size must be >= 1 and divide the number of signals "
            f"p = {problem.p} (equal shards), got world_size={world_size}"
        )
    return problem.p // world_size


def _worker(
    rank: int,
    world_size: int,
    rendezvous: str,
    problem_fields: dict[str, float],
    steps: int,
    lr: float,
    folder: str,
) -> None:
    """One process: join the group, train its shard under DDP, rank 0 saves the values.

    Each step it reaches is written to ``folder/rank<r>.step``, so a run that overruns its
    deadline can say where each process was.
    """
    step = Path(folder) / f"rank{rank}.step"
    step.write_text("joining the process group")
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    # Two processes on a 2-core machine: one thread each, or they fight over the cores.
    torch.set_num_threads(1)
    # A fresh interpreter: opt out of torch's sparse invariant checks explicitly, as the
    # lessons' setup() does, so torch does not warn on stderr that they are off by default.
    torch.sparse.check_sparse_tensor_invariants.disable()
    # Every process is on this machine: gloo talks over loopback, instead of the address
    # the host name resolves to (a lookup that can stall, or an interface that is filtered).
    loopback = _loopback_interface()
    if loopback is not None:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", loopback)
    dist.init_process_group(
        "gloo", init_method=rendezvous, rank=rank, world_size=world_size, timeout=_TIMEOUT
    )
    try:
        step.write_text("training")
        problem = EdgeWeightProblem(**problem_fields)  # type: ignore[arg-type]
        width = _shard(problem, world_size)
        indices, _, X, Y = problem.tensors()
        columns = slice(rank * width, (rank + 1) * width)
        model = DistributedDataParallel(EdgeWeights(indices, problem.n))
        _train(model, X[:, columns], Y[:, columns], steps, lr)
        if rank == 0:
            torch.save(model.module.values.detach().clone(), Path(folder) / "values.pt")
        step.write_text("leaving the process group")
    finally:
        dist.destroy_process_group()
    step.write_text("done")


#: How long a process waits for the others (to join, or in a collective) before it gives up
#: with an error: torch's default, 30 minutes, would look like a frozen lesson.
_TIMEOUT = datetime.timedelta(seconds=60)
#: How long the parent waits for the whole run (start-up included; a run takes a few seconds)
#: before it kills every process it started and reports where each one was.
DEADLINE_S = 120.0


def _run_processes(
    world_size: int, args: tuple[object, ...], folder: Path, deadline_s: float
) -> None:
    """Start ``world_size`` workers and wait for all of them, at most ``deadline_s`` seconds.

    The workers are daemonic and killed at the deadline, so nothing outlives this call: a
    process left behind would keep a notebook's kernel, or pytest, from ever exiting.
    """
    import torch.multiprocessing as mp

    context = mp.start_processes(
        _worker, args=args, nprocs=world_size, join=False, daemon=True, start_method="spawn"
    )
    give_up = time.monotonic() + deadline_s
    try:
        while not context.join(timeout=0.5):  # raises if a worker failed
            if time.monotonic() > give_up:
                where = ", ".join(
                    f"rank {rank}: {_step(folder, rank)}"
                    for rank, process in enumerate(context.processes)
                    if process.is_alive()
                )
                raise TimeoutError(
                    f"train_distributed: the processes did not finish within {deadline_s:.0f} s "
                    f"(still running: {where}); they were stopped"
                )
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
            process.join()


def _loopback_interface() -> str | None:
    """The loopback interface's name (``lo`` on Linux, ``lo0`` on macOS), if there is one."""
    try:
        names = {name for _, name in socket.if_nameindex()}
    except OSError:
        return None
    return next((name for name in ("lo", "lo0") if name in names), None)


def _step(folder: Path, rank: int) -> str:
    path = folder / f"rank{rank}.step"
    return path.read_text() if path.exists() else "starting Python"


def train_distributed(
    problem: EdgeWeightProblem,
    world_size: int = 2,
    steps: int = 50,
    lr: float = 0.01,
    deadline_s: float = DEADLINE_S,
) -> Tensor:
    """Train with ``world_size`` CPU processes under ``DistributedDataParallel`` (gloo).

    Each process trains on ``p / world_size`` of the signals; returns rank 0's learned values,
    which equal :func:`train_single`'s up to rounding (see the module docstring). The
    processes meet through a file in a temporary folder (no port to pick, so none to lose
    to another program) and talk over loopback.

    Every argument is checked before a process starts: ``world_size`` an int ``>= 1`` that
    divides ``problem.p``, ``steps`` an int ``>= 0``, ``lr`` and ``deadline_s`` finite and
    ``> 0``.

    Raises
    ------
    InputTypeError
        If an argument has the wrong type (a bool or a float where an int is expected).
    InputValueError
        If ``world_size`` does not divide ``problem.p``, or a number is out of range.
    TimeoutError
        If the processes have not finished after ``deadline_s`` seconds; they are stopped
        first, and the message says what each was doing.

    Examples
    --------
    >>> train_distributed(EdgeWeightProblem(p=8), world_size=2.0)
    Traceback (most recent call last):
    ...
    sparsegrad_lab.errors.InputTypeError: train_distributed: world_size must be an int, got float
    """
    where = "train_distributed"
    steps, lr = _check_run(where, problem, steps, lr)
    world_size = check_int(world_size, "world_size", where, minimum=1)
    deadline_s = _finite(deadline_s, "deadline_s", where, positive=True)
    _shard(problem, world_size)
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        rendezvous = (folder / "rendezvous").as_uri()
        args = (world_size, rendezvous, asdict(problem), steps, lr, str(folder))
        _run_processes(world_size, args, folder, deadline_s)
        values: Tensor = torch.load(folder / "values.pt")
    return values
