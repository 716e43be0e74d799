"""DistributedDataParallel over two gloo CPU processes learns the same weights as one process."""

import pytest
import torch

from sparsegrad_lab.distributed_demo import (
    EdgeWeightProblem,
    EdgeWeights,
    train_distributed,
    train_single,
)
from sparsegrad_lab.errors import InputValueError

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="this torch build has no torch.distributed"
)


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


@pytest.mark.timeout(120)
def test_a_run_past_its_deadline_is_stopped_and_says_where_it_was():
    """No process outlives the call: one left behind would keep pytest or a kernel alive."""
    import multiprocessing

    problem = EdgeWeightProblem(n=60, nnz=300, p=8, seed=3)
    with pytest.raises(TimeoutError, match=r"within 3 s \(still running: rank 0: .*\)"):
        train_distributed(problem, world_size=2, steps=10**9, deadline_s=3)
    assert multiprocessing.active_children() == []
