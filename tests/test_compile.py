"""``torch.compile`` of a function that calls ``sparse_mm``, ``sampled_mm`` or ``pattern_mm``.

Dynamo cannot take a sparse tensor as an input of a graph ("Attempted to wrap sparse
Tensor") nor build one (``torch.sparse_coo_tensor`` is a function it skips), so ``sparse_mm``
and ``sampled_mm``, which take a sparse ``A``, run eagerly inside a compiled function (a
graph break), while the dense work around them is compiled. A training step over a kept
pattern compiles whole instead: ``pattern_mm(values, B, kept)`` takes the values as a dense
tensor and is one registered op (``fullgraph=True`` fails on any graph break). Every
backend must give the eager results, forward and gradients. The inductor backend compiles
C++ on CPU, so it needs a C compiler; without one the inductor cases are skipped, saying so.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable

import pytest
import torch
from testing import assert_close, make_generator, random_dense, random_sparse
from torch import Tensor

from sparsegrad_lab import (
    InputValueError,
    PatternIndices,
    pattern_mm,
    sampled_mm,
    sparse_mm,
    sparsity_pattern,
)

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


def _kept_step(values: Tensor, B: Tensor, W: Tensor, kept: object) -> Tensor:
    """One training step's loss over a kept pattern: the product, then dense layers."""
    hidden = pattern_mm(values, B @ W, kept)  # type: ignore[arg-type]
    return torch.tanh(hidden).square().sum()


@pytest.mark.parametrize("shape", [(6, 5), (2, 6, 5)], ids=["2d", "batched"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_kept_pattern_step_compiles_whole_and_matches_eager(
    layout: torch.layout, backend: str, shape: tuple[int, ...]
) -> None:
    """``fullgraph=True``: no graph break; the step gives what the eager ``sparse_mm`` gives."""
    torch._dynamo.reset()
    gen = make_generator(32)
    A = random_sparse(shape, layout=layout, density=0.4, generator=gen)
    B = random_dense((*shape[:-2], shape[-1], 3), generator=gen)
    W = random_dense((3, 3), generator=gen)
    kept = sparsity_pattern(A)
    PatternIndices.of_kept(kept)  # the transpose, sorted once before tracing
    compiled = torch.compile(_kept_step, backend=backend, fullgraph=True)
    values = A.detach().values().reshape(-1)
    for step in range(2):  # new values each step, as a training loop has
        values = values + 0.5 * step
        v, b, w = (t.detach().clone().requires_grad_() for t in (values, B, W))
        loss = compiled(v, b, w, kept)
        loss.backward()
        # The eager reference: sparse_mm on a sparse A with these values, the same pattern.
        v_ref, b_ref, w_ref = (t.detach().clone().requires_grad_() for t in (values, B, W))
        A_now = _with_values(A, v_ref)
        want = torch.tanh(sparse_mm(A_now, b_ref @ w_ref, pattern=kept)).square().sum()
        want.backward()
        assert_close(loss.detach(), want.detach())
        for got, ref in ((v.grad, v_ref.grad), (b.grad, b_ref.grad), (w.grad, w_ref.grad)):
            assert got is not None and ref is not None
            assert_close(got.reshape(-1), ref.reshape(-1))


def _with_values(A: Tensor, values: Tensor) -> Tensor:
    if A.layout == torch.sparse_coo:
        return torch.sparse_coo_tensor(A.indices(), values, A.shape, is_coalesced=True)
    return torch.sparse_csr_tensor(
        A.crow_indices(), A.col_indices(), values.reshape(A.values().shape), A.shape
    )


def test_compiling_before_the_transpose_is_built_names_the_fix() -> None:
    torch._dynamo.reset()
    kept = sparsity_pattern(torch.eye(3, dtype=torch.float64).to_sparse())
    compiled = torch.compile(_kept_step, backend="eager", fullgraph=True)
    ones = torch.ones(3, 3, dtype=torch.float64)
    with pytest.raises(Exception, match=r"PatternIndices.of_kept\(pattern\) outside") as info:
        compiled(torch.ones(3, dtype=torch.float64), ones, ones, kept)
    assert isinstance(info.value, InputValueError) or "InputValueError" in str(info.value)


def test_sparse_mm_on_a_sparse_tensor_cannot_be_traced_whole() -> None:
    """The limit that the kept pattern's dense values get around: a sparse input is refused."""
    torch._dynamo.reset()
    A = torch.eye(3).to_sparse()
    compiled = torch.compile(lambda A, B: sparse_mm(A, B), backend="eager", fullgraph=True)
    with pytest.raises(torch._dynamo.exc.Unsupported, match=r"sparse Tensor|disable"):
        compiled(A, torch.ones(3, 2))
