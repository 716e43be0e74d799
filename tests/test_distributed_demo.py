"""DistributedDataParallel over two gloo CPU processes learns the same weights as one process."""

import math

import numpy as np
import pytest
import torch

from sparsegrad_lab import distributed_demo
from sparsegrad_lab.distributed_demo import (
    EdgeWeightProblem,
    EdgeWeights,
    train_distributed,
    train_single,
)
from sparsegrad_lab.errors import InputTypeError, InputValueError

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="this torch build has no torch.distributed"
)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_processes_learn_the_weights_one_process_learns():
    problem = EdgeWeightProblem(n=60, nnz=300, p=8, seed=3)
    steps = 20
    single = train_single(problem, steps=steps)
    distributed = train_distributed(problem, world_size=2, steps=steps)
    start = EdgeWeights(problem.tensors()[0], problem.n).values.detach()
    assert (single - start).abs().max() > 1e-3  # training moved the weights ...
    # ... and both runs moved them identically: only the all-reduce's order of addition differs.
    torch.testing.assert_close(distributed, single, rtol=1e-12, atol=1e-12)


def test_one_shard_alone_would_learn_other_weights():
    """The equality above needs the gradient averaged over shards: one shard differs."""
    problem = EdgeWeightProblem(n=60, nnz=300, p=8, seed=3)
    indices, _, X, Y = problem.tensors()
    model = EdgeWeights(indices, problem.n)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(20):
        optimizer.zero_grad()
        ((model(X[:, :4]) - Y[:, :4]) ** 2).mean().backward()  # rank 0's shard only
        optimizer.step()
    assert not torch.allclose(model.values.detach(), train_single(problem, steps=20), atol=1e-6)


def test_world_size_must_split_the_signals_evenly():
    with pytest.raises(InputValueError, match=r"divide the number of signals p = 8.*world_size=3"):
        train_distributed(EdgeWeightProblem(n=20, nnz=40, p=8), world_size=3, steps=1)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_run_past_its_deadline_is_stopped_and_says_where_it_was():
    """No process outlives the call: one left behind would keep pytest or a kernel alive."""
    import multiprocessing

    problem = EdgeWeightProblem(n=60, nnz=300, p=8, seed=3)
    with pytest.raises(TimeoutError, match=r"within 3 s \(still running: rank 0: .*\)"):
        train_distributed(problem, world_size=2, steps=10**9, deadline_s=3)
    assert multiprocessing.active_children() == []


@pytest.fixture
def no_processes(monkeypatch):
    """Fail the test if a process is started: a refused argument must be refused first."""

    def started(*args, **kwargs):
        raise AssertionError("a process was started before the arguments were checked")

    monkeypatch.setattr(distributed_demo, "_run_processes", started)


SMALL = EdgeWeightProblem(n=20, nnz=40, p=8)


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        # 2.0 used to pass the shard check (8 % 2.0 == 0) and fail in a worker; True used
        # to start one process that died.
        ({"world_size": 2.0}, InputTypeError, "world_size must be an int, got float"),
        ({"world_size": True}, InputTypeError, "world_size must be an int, got bool"),
        ({"world_size": "2"}, InputTypeError, "world_size must be an int, got str"),
        ({"world_size": 0}, InputValueError, "world_size must be >= 1, got 0"),
        ({"steps": 2.5}, InputTypeError, "steps must be an int, got float"),
        ({"steps": True}, InputTypeError, "steps must be an int, got bool"),
        ({"steps": -1}, InputValueError, "steps must be >= 0, got -1"),
        ({"lr": 0.0}, InputValueError, "lr must be finite and > 0, got 0.0"),
        ({"lr": -0.1}, InputValueError, r"lr must lie in \[0.0, inf\], got -0.1"),
        ({"lr": math.nan}, InputValueError, "lr must lie in"),
        ({"lr": math.inf}, InputValueError, "lr must be finite and > 0, got inf"),
        ({"lr": "0.01"}, InputTypeError, "lr must be a real number, got str"),
        ({"deadline_s": 0}, InputValueError, "deadline_s must be finite and > 0"),
    ],
)
def test_train_distributed_checks_every_argument_before_starting_a_process(
    options, error, words, no_processes
):
    with pytest.raises(error, match=f"^train_distributed: {words}"):
        train_distributed(SMALL, **{"world_size": 2, "steps": 1, **options})


def test_train_distributed_needs_a_problem(no_processes):
    with pytest.raises(InputTypeError, match="problem must be an EdgeWeightProblem, got dict"):
        train_distributed({"n": 20, "nnz": 40, "p": 8}, world_size=2)


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"steps": 1.0}, InputTypeError, "steps must be an int, got float"),
        ({"lr": -1.0}, InputValueError, "lr must lie in"),
        ({"lr": True}, InputTypeError, "lr must be a real number, got bool"),
    ],
)
def test_train_single_checks_its_arguments(options, error, words):
    with pytest.raises(error, match=f"^train_single: {words}"):
        train_single(SMALL, **options)


def test_train_single_takes_numpy_integers_and_zero_steps():
    start = EdgeWeights(SMALL.tensors()[0], SMALL.n).values.detach()
    torch.testing.assert_close(train_single(SMALL, steps=np.int64(0)), start, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("fields", "error", "words"),
    [
        ({"n": 20.0}, InputTypeError, "n must be an int, got float"),
        ({"nnz": True}, InputTypeError, "nnz must be an int, got bool"),
        ({"p": 0}, InputValueError, "p must be >= 1, got 0"),
        ({"seed": -1}, InputValueError, "seed must be >= 0, got -1"),
        ({"sigma": -0.1}, InputValueError, "sigma must lie in"),
        ({"sigma": math.inf}, InputValueError, "sigma must be finite and >= 0"),
    ],
)
def test_problem_checks_its_numbers_when_made(fields, error, words):
    with pytest.raises(error, match=f"^EdgeWeightProblem: {words}"):
        EdgeWeightProblem(**fields)


def test_problem_stores_plain_python_numbers():
    # They travel to the spawned processes through asdict(); a numpy scalar becomes an int.
    problem = EdgeWeightProblem(n=np.int64(20), nnz=40, p=8)
    assert type(problem.n) is int and problem == EdgeWeightProblem(n=20, nnz=40, p=8)


@pytest.mark.parametrize(
    ("indices", "n", "error", "words"),
    [
        (torch.tensor([[0, 1], [1, 0]]), 2.0, InputTypeError, "n must be an int, got float"),
        (
            torch.tensor([[0.0, 1.0], [1.0, 0.0]]),
            2,
            InputTypeError,
            "indices must be an int64 tensor",
        ),
        ([[0, 1], [1, 0]], 2, InputTypeError, "indices must be an int64 tensor .* got list"),
        (
            torch.tensor([0, 1]),
            2,
            InputValueError,
            r"indices must have shape \(2, nnz\), got \(2,\)",
        ),
        (
            torch.tensor([[0, 2], [1, 0]]),
            2,
            InputValueError,
            r"indices must lie in \[0, 2\) \(W is 2 x 2\), got values from 0 to 2",
        ),
    ],
)
def test_edge_weights_check_their_pattern(indices, n, error, words):
    with pytest.raises(error, match=f"^EdgeWeights: {words}"):
        EdgeWeights(indices, n)
