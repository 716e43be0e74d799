"""Tests of the sampled dense-dense product: ``sampled_product`` and its workspace estimate."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from testing import (
    DEVICE_PARAMS,
    DTYPES,
    HALF_DTYPES,
    LAYOUT_IDS,
    LAYOUTS,
    STRATEGIES,
    Problem,
    assert_close,
    assert_same_pattern,
    dense_reference,
    make_generator,
    random_dense,
    random_sparse,
    reference_dtype,
)
from testing import problems as problem_strategy
from torch import Tensor

import sparsegrad_lab.routes as routes
import sparsegrad_lab.sddmm as sddmm
from sparsegrad_lab import BackwardStrategy, sparse_mm
from sparsegrad_lab.autograd import SparseMatMul
from sparsegrad_lab.pattern import SparsityPattern, pattern_and_values
from sparsegrad_lab.sddmm import sampled_product, sampled_product_workspace_bytes

# Tiny tensors: one intra-op thread (see tests/conftest.py).
pytestmark = pytest.mark.usefixtures("torch_single_thread")


def _expected(pattern: SparsityPattern, G: Tensor, B: Tensor) -> Tensor:
    """``(G Bᴴ)[r_k, c_k]`` in double precision, straight from the definition."""
    ref = reference_dtype(G.dtype)
    full = G.detach().cpu().to(ref) @ B.detach().cpu().to(ref).mH
    return full[pattern.row.long().cpu(), pattern.col.long().cpu()]


def _operands(
    problem: Problem, layout: torch.layout, dtype: torch.dtype, device: torch.device | str
) -> tuple[SparsityPattern, Tensor, Tensor]:
    """Pattern of a random ``A`` and block-stacked ``G (b n, p)``, ``B (b m, p)``."""
    A, B, G = problem.build(layout=layout, dtype=dtype, device=device)
    pattern, _values = pattern_and_values(A)
    return pattern, G.reshape(-1, problem.p), B.reshape(-1, problem.p)


def test_hand_worked_example() -> None:
    # Pattern {(0, 1), (1, 0)}: s = [G[0]·B[1], G[1]·B[0]] = [1*7 + 2*8, 3*5 + 4*6] = [23, 39].
    A = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64).to_sparse()
    pattern, _ = pattern_and_values(A)
    G = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    B = torch.tensor([[5.0, 6.0], [7.0, 8.0]], dtype=torch.float64)
    for strategy in STRATEGIES:
        out = sampled_product(pattern, G, B, strategy)
        assert torch.equal(out, torch.tensor([23.0, 39.0], dtype=torch.float64)), strategy


def test_complex_example_conjugates_B() -> None:
    # One entry: s = G[0]·conj(B[0]) = i * conj(1 + i) = i (1 - i) = 1 + i.
    A = torch.tensor([[1.0]], dtype=torch.complex128).to_sparse()
    pattern, _ = pattern_and_values(A)
    G = torch.tensor([[1j]], dtype=torch.complex128)
    B = torch.tensor([[1 + 1j]], dtype=torch.complex128)
    for strategy in STRATEGIES:
        out = sampled_product(pattern, G, B, strategy)
        assert torch.equal(out, torch.tensor([1 + 1j], dtype=torch.complex128)), strategy


@pytest.mark.parametrize("device", DEVICE_PARAMS)
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS, ids=LAYOUT_IDS.get)
@given(problem=problem_strategy())
def test_matches_definition(
    layout: torch.layout,
    dtype: torch.dtype,
    strategy: BackwardStrategy,
    device: torch.device,
    problem: Problem,
) -> None:
    pattern, G, B = _operands(problem, layout, dtype, device)
    out = sampled_product(pattern, G, B, strategy)
    assert out.shape == (pattern.nnz,) and out.dtype == dtype and out.device.type == device.type
    assert_close(out, _expected(pattern, G, B))


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=str)
def test_half_precision_on_cpu(dtype: torch.dtype, strategy: BackwardStrategy) -> None:
    """The product itself runs in half precision on CPU (only sparse_mm's forward cannot)."""
    problem = Problem(batch=2, n=4, m=5, p=3, density=0.5, seed=1)
    pattern, G, B = _operands(problem, torch.sparse_coo, dtype, "cpu")
    out = sampled_product(pattern, G, B, strategy)
    assert out.dtype == dtype
    assert_close(out, _expected(pattern, G, B))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_no_stored_entries(strategy: BackwardStrategy) -> None:
    problem = Problem(batch=2, n=3, m=4, p=2, density=0.0, seed=2)
    pattern, G, B = _operands(problem, torch.sparse_csr, torch.complex64, "cpu")
    out = sampled_product(pattern, G, B, strategy)
    assert out.shape == (0,) and out.dtype == torch.complex64


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_non_contiguous_operands(strategy: BackwardStrategy) -> None:
    problem = Problem(batch=None, n=5, m=6, p=3, density=0.5, seed=3)
    pattern, G, B = _operands(problem, torch.sparse_coo, torch.float64, "cpu")
    Gt, Bt = G.T.contiguous().T, B.T.contiguous().T
    assert not Gt.is_contiguous() and not Bt.is_contiguous()
    out = sampled_product(pattern, Gt, Bt, strategy)
    assert_close(out, _expected(pattern, G, B))


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64], ids=str)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_int32_indices(index_dtype: torch.dtype, strategy: BackwardStrategy) -> None:
    gen = make_generator(4)
    A = random_sparse(
        (3, 4, 5), layout=torch.sparse_csr, generator=gen, index_dtype=index_dtype, density=0.5
    )
    pattern, _ = pattern_and_values(A)
    assert pattern.col.dtype == index_dtype
    G, B = random_dense((12, 2), generator=gen), random_dense((15, 2), generator=gen)
    assert_close(sampled_product(pattern, G, B, strategy), _expected(pattern, G, B))


# --------------------------------------------------------------------------------------------
# the chunked fallback of "sddmm" (used where torch's sampled_addmm lacks the dtype)
# --------------------------------------------------------------------------------------------


def _count_chunks(monkeypatch: pytest.MonkeyPatch, chunk_bytes: int) -> list[int]:
    """Route "sddmm" through the chunked gather with ``CHUNK_BYTES = chunk_bytes``.

    Returns a list that records the size of every chunk the gather processes.
    """
    monkeypatch.setattr(sddmm, "_SAMPLED_ADDMM_DTYPES", ())
    monkeypatch.setattr(sddmm, "CHUNK_BYTES", chunk_bytes)
    sizes: list[int] = []
    gather = sddmm._gather_rows

    def counting(pattern: SparsityPattern, G: Tensor, B: Tensor, start: int, stop: int) -> Tensor:
        sizes.append(stop - start)
        return gather(pattern, G, B, start, stop)

    monkeypatch.setattr(sddmm, "_gather_rows", counting)
    return sizes


def _force_chunks(monkeypatch: pytest.MonkeyPatch, p: int, elem: int, chunk: int) -> list[int]:
    """:func:`_count_chunks` with exactly ``chunk`` entries of ``p`` columns per chunk."""
    return _count_chunks(monkeypatch, 3 * p * elem * chunk)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS, ids=LAYOUT_IDS.get)
def test_chunked_fallback_matches_definition(
    layout: torch.layout, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    problem = Problem(batch=2, n=6, m=7, p=3, density=0.6, seed=5)
    pattern, G, B = _operands(problem, layout, dtype, "cpu")
    sizes = _force_chunks(monkeypatch, p=3, elem=G.element_size(), chunk=4)
    out = sampled_product(pattern, G, B, "sddmm")
    assert pattern.nnz > 8
    assert sizes == [4] * (pattern.nnz // 4) + ([pattern.nnz % 4] if pattern.nnz % 4 else [])
    assert_close(out, _expected(pattern, G, B))


@pytest.mark.parametrize("layout", LAYOUTS, ids=LAYOUT_IDS.get)
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128], ids=str)
def test_chunked_fallback_inside_sparse_mm(
    layout: torch.layout, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end: the chunked path gives sparse_mm's reference gradients, double backward too."""
    problem = Problem(batch=2, n=3, m=4, p=2, density=0.6, seed=6)
    A, B, G = problem.build(layout=layout, dtype=dtype, device="cpu")
    sizes = _force_chunks(monkeypatch, p=2, elem=B.element_size(), chunk=3)
    # A graph this small would take the small-graph path, which shares one gather between
    # both gradients instead of calling the sampled product: a bound as small as the chunk
    # sends it through the sampled product (and the transposed pattern).
    monkeypatch.setattr(routes, "SCATTER_MAX_BYTES", sddmm.CHUNK_BYTES)
    A, B = A.requires_grad_(), B.requires_grad_()
    C = sparse_mm(A, B, backward="sddmm")
    C.backward(G)
    assert len(sizes) >= 3  # several chunks really ran
    ref = dense_reference(A, B, G)
    assert A.grad is not None and B.grad is not None
    assert_same_pattern(A.grad, A)
    assert_close(A.grad, ref.grad_A)
    assert_close(B.grad, ref.grad_B)
    pattern, values = pattern_and_values(A.detach())
    v = values.clone().requires_grad_()
    B2 = B.detach().reshape(-1, 2).clone().requires_grad_()
    assert torch.autograd.gradgradcheck(
        lambda v, B: SparseMatMul.apply(v, B, pattern, "sddmm"), (v, B2)
    )


def test_chunk_size_bounds_the_working_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the real CHUNK_BYTES, a chunk's three (chunk, p) blocks fit in CHUNK_BYTES."""
    problem = Problem(batch=None, n=40, m=40, p=5, density=0.9, seed=7)
    pattern, G, B = _operands(problem, torch.sparse_coo, torch.float64, "cpu")
    sizes = _count_chunks(monkeypatch, 3 * 5 * 8 * 100 + 7)  # 100 entries per chunk
    out = sampled_product(pattern, G, B, "sddmm")
    assert max(sizes) == 100 and sum(sizes) == pattern.nnz
    assert all(3 * size * 5 * 8 <= sddmm.CHUNK_BYTES for size in sizes)
    assert_close(out, _expected(pattern, G, B))


# --------------------------------------------------------------------------------------------
# sampled_product_workspace_bytes
# --------------------------------------------------------------------------------------------


def _workspace(
    strategy: BackwardStrategy,
    *,
    nnz: int,
    p: int,
    dtype: torch.dtype,
    batch: int = 1,
    block_shape: tuple[int, int] = (10, 20),
) -> int:
    return sampled_product_workspace_bytes(
        strategy, batch=batch, block_shape=block_shape, nnz=nnz, p=p, dtype=dtype
    )


@pytest.mark.parametrize("dtype", [*DTYPES, *HALF_DTYPES], ids=str)
def test_workspace_formulas(dtype: torch.dtype) -> None:
    elem = torch.empty(0, dtype=dtype).element_size()
    kw = {"batch": 3, "block_shape": (10, 20), "nnz": 50, "p": 8, "dtype": dtype}
    # batched: an int64 flat index and the entries' batch items
    assert _workspace("dense", **kw) == 3 * 10 * 20 * elem + 2 * 50 * 8  # type: ignore[arg-type]
    assert _workspace("gather", **kw) == 3 * 50 * 8 * elem  # type: ignore[arg-type]
    sddmm_bytes = _workspace("sddmm", **kw)  # type: ignore[arg-type]
    if dtype in HALF_DTYPES:  # chunked gather: the whole of nnz fits in one chunk here
        assert sddmm_bytes == 3 * 50 * 8 * elem
    else:  # torch's sampled_addmm writes straight into the output
        assert sddmm_bytes == 0


def test_workspace_of_sddmm_is_bounded_independently_of_nnz() -> None:
    """The chunked path's estimate stops growing with nnz at CHUNK_BYTES; gather's does not."""
    big = (10**6, 10**6)
    small = _workspace("sddmm", nnz=10, p=64, dtype=torch.float16, block_shape=big)
    huge = _workspace("sddmm", nnz=10**9, p=64, dtype=torch.float16, block_shape=big)
    assert small < huge <= sddmm.CHUNK_BYTES
    gather = _workspace("gather", nnz=10**9, p=64, dtype=torch.float16, block_shape=big)
    assert gather > 100 * sddmm.CHUNK_BYTES


def test_workspace_follows_a_patched_chunk_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sddmm, "_SAMPLED_ADDMM_DTYPES", ())
    monkeypatch.setattr(sddmm, "CHUNK_BYTES", 3 * 4 * 8 * 5)  # 5 entries of p=4 float64
    assert _workspace("sddmm", nnz=3, p=4, dtype=torch.float64) == 3 * 3 * 4 * 8
    assert _workspace("sddmm", nnz=50, p=4, dtype=torch.float64) == 3 * 5 * 4 * 8


def test_workspace_ordering_on_a_large_sparse_problem() -> None:
    """At the issue's CPU benchmark size: sddmm < gather < dense, by orders of magnitude."""
    shape = (100_000, 100_000)
    sizes = {
        s: _workspace(s, nnz=1_000_000, p=64, dtype=torch.float32, block_shape=shape)
        for s in STRATEGIES
    }
    assert sizes["sddmm"] < sizes["gather"] < sizes["dense"]
    assert sizes["gather"] == 3 * 1_000_000 * 64 * 4
    assert sizes["dense"] == 10**10 * 4 + 8 * 10**6
