"""``torch.compile`` of a function that calls ``sparse_mm`` or ``sampled_mm``.

torch.compile traces with "fake" tensors, which have no sparse CSR support and lose COO
indices; ``sparse_mm`` and ``sampled_mm`` therefore run eagerly inside a compiled function
(a graph break), while the dense work around them is compiled. Every backend must give the
eager results, forward and gradients. The inductor backend compiles C++ on CPU, so it needs
a C compiler; without one the inductor cases are skipped, saying so.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable

import pytest
import torch
from testing import assert_close, make_generator, random_dense, random_sparse
from torch import Tensor

from sparsegrad_lab import sampled_mm, sparse_mm

# Compiling (inductor builds C++) takes seconds a case.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("torch_single_thread")]

_NO_CC = shutil.which("cc") is None and shutil.which("gcc") is None
BACKENDS = [
    pytest.param("eager"),
    pytest.param("aot_eager"),
    pytest.param(
        "inductor",
        marks=pytest.mark.skipif(_NO_CC, reason="inductor compiles C++ on CPU: no C compiler"),
    ),
]
LAYOUTS = [pytest.param(torch.sparse_coo, id="coo"), pytest.param(torch.sparse_csr, id="csr")]


def _graph_layer(A: Tensor, X: Tensor, W: Tensor) -> Tensor:
    """A small graph layer: attention scores on A's edges, then aggregation, then dense ops."""
    scores = sampled_mm(A, X, X.T)
    hidden = sparse_mm(A, X @ W) + sparse_mm(scores, X)
    return torch.tanh(hidden).square().sum()


def _gradients(fn: Callable[..., Tensor], A: Tensor, X: Tensor, W: Tensor) -> list[Tensor]:
    A, X, W = (t.detach().clone().requires_grad_() for t in (A, X, W))
    loss = fn(A, X, W)
    loss.backward()
    assert A.grad is not None and X.grad is not None and W.grad is not None
    return [loss.detach(), A.grad.to_dense(), X.grad, W.grad]


@pytest.mark.parametrize("dynamic", [None, False], ids=["dynamic-default", "dynamic-False"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_compiled_function_matches_eager(
    layout: torch.layout, backend: str, dynamic: bool | None
) -> None:
    torch._dynamo.reset()
    gen = make_generator(31)
    A = random_sparse((6, 6), layout=layout, density=0.4, generator=gen)
    X = random_dense((6, 3), generator=gen)
    W = random_dense((3, 3), generator=gen)
    compiled = torch.compile(_graph_layer, backend=backend, dynamic=dynamic)
    expected = _gradients(_graph_layer, A, X, W)
    for got, want in zip(_gradients(compiled, A, X, W), expected, strict=True):
        assert_close(got, want)
