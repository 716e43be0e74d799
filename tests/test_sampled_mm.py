"""Tests of ``sampled_mm(A, X, Y)``: ``X @ Y`` at ``A``'s stored positions, as a sparse tensor.

Three layers, as for ``sparse_mm``: a hand-worked example checked exactly; every layout x
rank x dtype x strategy against the dense float64 reference ``P_A ⊙ (X Y)`` with the
gradients ``∇X = (P_A ⊙ G) Yᴴ`` and ``∇Y = Xᴴ (P_A ⊙ G)``; gradcheck and gradgradcheck.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
import torch
from testing import (
    DTYPES,
    LAYOUT_INDEX,
    RANKS,
    STRATEGIES,
    assert_close,
    assert_same_pattern,
    make_generator,
    pattern_mask,
    random_dense,
    random_sparse,
    reference_dtype,
)
from torch import Tensor

import sparsegrad_lab.memory_guard as memory_guard
from sparsegrad_lab import (
    BackwardStrategy,
    InputTypeError,
    InputValueError,
    MemoryBudgetError,
    sampled_mm,
    sparse_mm,
    sparsity_pattern,
)
from sparsegrad_lab.csr_from_values import DifferentiableCsr

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def _problem(
    layout: torch.layout,
    index_dtype: torch.dtype,
    batched: bool,
    dtype: torch.dtype,
    *,
    seed: int = 0,
    n: int = 4,
    m: int = 5,
    d: int = 3,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(A, X, Y, G)``: A's values are float32 on purpose (only its pattern counts)."""
    gen = make_generator(seed)
    lead = (2,) if batched else ()
    A = random_sparse(
        (*lead, n, m), layout=layout, index_dtype=index_dtype, density=0.5, generator=gen
    ).to(torch.float32)
    X = random_dense((*lead, n, d), dtype=dtype, generator=gen)
    Y = random_dense((*lead, d, m), dtype=dtype, generator=gen)
    G = random_dense((*lead, n, m), dtype=dtype, generator=gen)
    return A, X, Y, G


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr], ids=["coo", "csr"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_hand_worked_example(layout: torch.layout, strategy: BackwardStrategy) -> None:
    # A stores (0, 1), (1, 0), (1, 1).  X = [[1, 2], [3, 4]], Y = [[5, 6], [7, 8]]:
    # X Y = [[19, 22], [43, 50]]  ->  s = [22, 43, 50].
    # With upstream ones on the three entries, S_G = [[0, 1], [1, 1]]:
    # ∇X = S_G Yᵀ = [[6, 8], [11, 15]];  ∇Y = Xᵀ S_G = [[3, 4], [4, 6]].
    mask = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    A = mask.to_sparse() if layout == torch.sparse_coo else mask.to_sparse_csr()
    X = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64, requires_grad=True)
    Y = torch.tensor([[5.0, 6.0], [7.0, 8.0]], dtype=torch.float64, requires_grad=True)
    S = sampled_mm(A, X, Y, backward=strategy)
    assert S.layout == layout and S.dtype == torch.float64
    assert torch.equal(S.detach().to_dense(), torch.tensor([[0.0, 22.0], [43.0, 50.0]]).double())
    S.to_dense().backward(mask.double())
    assert X.grad is not None and Y.grad is not None
    assert torch.equal(X.grad, torch.tensor([[6.0, 8.0], [11.0, 15.0]]).double())
    assert torch.equal(Y.grad, torch.tensor([[3.0, 4.0], [4.0, 6.0]]).double())


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("batched", RANKS)
@pytest.mark.parametrize(("layout", "index_dtype"), LAYOUT_INDEX)
def test_matches_dense_reference(
    layout: torch.layout,
    index_dtype: torch.dtype,
    batched: bool,
    dtype: torch.dtype,
    strategy: BackwardStrategy,
) -> None:
    A, X, Y, G = _problem(layout, index_dtype, batched, dtype, seed=3)
    X, Y = X.requires_grad_(), Y.requires_grad_()
    S = sampled_mm(A, X, Y, backward=strategy)
    assert_same_pattern(S, A)
    assert S.dtype == dtype
    mask = pattern_mask(A)
    # Through values(): torch cannot differentiate to_dense() of a batched CSR tensor.
    S.values().backward(G[mask].reshape(S.values().shape))

    ref = reference_dtype(dtype)
    X64, Y64, G64 = X.detach().to(ref), Y.detach().to(ref), G.to(ref) * mask
    assert_close(S, (X64 @ Y64) * mask, dtype=dtype)
    assert X.grad is not None and Y.grad is not None
    assert_close(X.grad, G64 @ Y64.mH)
    assert_close(Y.grad, X64.mH @ G64)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128], ids=str)
@pytest.mark.parametrize("batched", RANKS)
@pytest.mark.parametrize(("layout", "index_dtype"), LAYOUT_INDEX)
def test_gradcheck_and_gradgradcheck(
    layout: torch.layout,
    index_dtype: torch.dtype,
    batched: bool,
    dtype: torch.dtype,
    strategy: BackwardStrategy,
) -> None:
    """Through the use the scores are made for: ``sparse_mm(sampled_mm(A, X, Y), W)``.

    (``sparse_mm`` reads the values through :func:`~sparsegrad_lab.pattern.values_of`; the
    documented ``S.values()`` is checked below.)
    """
    A, X, Y, _G = _problem(layout, index_dtype, batched, dtype, n=3, m=4, d=2)
    X, Y = X.requires_grad_(), Y.requires_grad_()
    W = random_dense((*A.shape[:-2], 4, 2), dtype=dtype, generator=make_generator(4))

    def fn(X: Tensor, Y: Tensor) -> Tensor:
        return sparse_mm(sampled_mm(A, X, Y, backward=strategy), W, backward=strategy)

    assert torch.autograd.gradcheck(fn, (X, Y))
    assert torch.autograd.gradgradcheck(fn, (X, Y))


@pytest.mark.parametrize("batched", RANKS)
@pytest.mark.parametrize(("layout", "index_dtype"), LAYOUT_INDEX)
def test_gradgradcheck_through_values(
    layout: torch.layout, index_dtype: torch.dtype, batched: bool
) -> None:
    """The scores read as the README and the docstring say: ``S.values()``.

    torch's own ``values()`` of a CSR tensor wraps the upstream gradient in a CSR tensor
    outside autograd; the result's ``values()`` must not (gradgradcheck failed with it).
    """
    A, X, Y, _G = _problem(layout, index_dtype, batched, torch.float64, n=3, m=4, d=2)
    X, Y = X.requires_grad_(), Y.requires_grad_()

    def fn(X: Tensor, Y: Tensor) -> Tensor:
        return sampled_mm(A, X, Y).values()

    assert torch.autograd.gradcheck(fn, (X, Y))
    assert torch.autograd.gradgradcheck(fn, (X, Y))


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("batched", RANKS)
@pytest.mark.parametrize(("layout", "index_dtype"), LAYOUT_INDEX)
def test_second_derivatives_through_values_match_the_dense_reference(
    layout: torch.layout, index_dtype: torch.dtype, batched: bool, strategy: BackwardStrategy
) -> None:
    """``L = Σ w_k s_k²`` of ``s = S.values()``; ``∇X``, ``∇Y`` with create_graph, then the
    gradient of ``⟨U, ∇X⟩ + ⟨V, ∇Y⟩``: every term against the dense float64 product.

    The upstream gradient of ``s`` (``2 w s``) depends on ``X`` and ``Y``: the term that
    torch's CSR ``values()`` backward drops (it was off by about 1e4 on a larger graph).
    """
    A, X, Y, _G = _problem(layout, index_dtype, batched, torch.float64, seed=5)
    mask = pattern_mask(A)
    gen = make_generator(6)
    w = random_dense((int(mask.sum()),), generator=gen)
    U, V = random_dense(X.shape, generator=gen), random_dense(Y.shape, generator=gen)

    def gradients(scores: Callable[[Tensor, Tensor], Tensor]) -> list[Tensor]:
        X_, Y_ = X.clone().requires_grad_(), Y.clone().requires_grad_()
        s = scores(X_, Y_)  # flat, in row-major order of the stored positions
        grad_X, grad_Y = torch.autograd.grad((w * s.square()).sum(), (X_, Y_), create_graph=True)
        second = torch.autograd.grad((U * grad_X).sum() + (V * grad_Y).sum(), (X_, Y_))
        return [grad_X.detach(), grad_Y.detach(), *second]

    got = gradients(lambda X, Y: sampled_mm(A, X, Y, backward=strategy).values().reshape(-1))
    expected = gradients(lambda X, Y: (X @ Y)[mask])
    for actual, reference in zip(got, expected, strict=True):
        assert_close(actual, reference)


def test_values_of_a_csr_result_are_differentiable_twice_and_nothing_else_changes() -> None:
    A = torch.tensor([[0.0, 1.0], [1.0, 1.0]]).to_sparse_csr()
    X = torch.ones(2, 2, dtype=torch.float64, requires_grad=True)
    S = sampled_mm(A, X, torch.ones(2, 2, dtype=torch.float64))
    assert isinstance(S, DifferentiableCsr) and S.layout == torch.sparse_csr
    assert S.values().grad_fn is not None and S.values().shape == (3,)
    for other in (S.detach(), S.to_dense(), S * 2):  # every other result is plain
        assert type(other) is Tensor
    with torch.no_grad():
        assert type(sampled_mm(A, X, X)) is Tensor  # no gradient: a plain CSR tensor
    buffer = io.BytesIO()
    torch.save(S, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer)  # weights_only: admits no classes of the package
    assert type(loaded) is Tensor and torch.equal(loaded.detach().to_dense(), S.detach().to_dense())


@pytest.mark.parametrize("inside", [False, True], ids=["backward-outside", "backward-inside"])
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize(("layout", "index_dtype"), LAYOUT_INDEX)
def test_cpu_bfloat16_autocast_computes_in_the_inputs_dtype(
    layout: torch.layout, index_dtype: torch.dtype, strategy: BackwardStrategy, inside: bool
) -> None:
    """``"dense"`` returned bfloat16, and its backward hit torch's MKL CSR product for it."""
    A, X, Y, G = _problem(layout, index_dtype, False, torch.float32, seed=8)
    X, Y = X.requires_grad_(), Y.requires_grad_()
    mask = pattern_mask(A)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        S = sampled_mm(A, X, Y, backward=strategy)
        assert S.dtype == torch.float32
        if inside:
            S.values().backward(G[mask])
    if not inside:
        S.values().backward(G[mask])
    X64, Y64, G64 = X.detach().double(), Y.detach().double(), G.double() * mask
    assert_close(S, (X64 @ Y64) * mask)
    assert X.grad is not None and Y.grad is not None
    assert X.grad.dtype == Y.grad.dtype == torch.float32
    assert_close(X.grad, G64 @ Y64.T)
    assert_close(Y.grad, X64.T @ G64)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("batched", RANKS)
@pytest.mark.parametrize(("layout", "index_dtype"), LAYOUT_INDEX)
def test_expanded_X_and_Y_give_the_dense_result(
    layout: torch.layout, index_dtype: torch.dtype, batched: bool, strategy: BackwardStrategy
) -> None:
    """Stride-0 operands (``expand``) are copied, counted, and give the right numbers."""
    A, _X, _Y, G = _problem(layout, index_dtype, batched, torch.float64, seed=10)
    lead = A.shape[:-2]
    gen = make_generator(11)
    x = random_dense((*lead, 1, 3), generator=gen).requires_grad_()  # one row of X
    y = random_dense((*lead, 3, 1), generator=gen).requires_grad_()  # one column of Y
    X, Y = x.expand(*lead, A.shape[-2], 3), y.expand(*lead, 3, A.shape[-1])
    S = sampled_mm(A, X, Y, backward=strategy)
    mask = pattern_mask(A)
    S.values().backward(G[mask].reshape(S.values().shape))
    x64, y64, G64 = x.detach(), y.detach(), G * mask
    assert_close(S, (x64 @ y64).expand_as(G64) * mask)
    assert x.grad is not None and y.grad is not None
    assert_close(x.grad, (G64 @ y64.expand(*lead, 3, A.shape[-1]).mT).sum(-2, keepdim=True))
    assert_close(y.grad, (x64.expand(*lead, A.shape[-2], 3).mT @ G64).sum(-1, keepdim=True))


HUGE = 2**61


def _huge_expanded(which: str, layout: torch.layout) -> tuple[Tensor, Tensor, Tensor]:
    """``(A, X, Y)``: a few bytes of memory, but a contiguous copy of 2⁶² elements.

    ``"Y"`` is the report's case, ``Y`` of 2⁶¹ columns; ``"X"``, X and Y with d = 2⁶¹.
    """
    if which == "Y":
        A = torch.sparse_coo_tensor(torch.tensor([[0, 1], [0, 5]]), torch.ones(2), (2, HUGE))
        X, Y = torch.ones(2, 3), torch.ones(3, 1).expand(3, HUGE)
    else:
        A = torch.tensor([[1.0, 0.0], [1.0, 1.0]]).to_sparse()
        X, Y = torch.ones(1, 1).expand(2, HUGE), torch.ones(1, 1).expand(HUGE, 2)
    return (A if layout == torch.sparse_coo else A.to_sparse_csr()), X, Y


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr], ids=["coo", "csr"])
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("which", ["X", "Y"])
def test_expanded_X_or_Y_of_huge_logical_size_is_refused(
    layout: torch.layout, strategy: BackwardStrategy, which: str
) -> None:
    """A huge expanded operand is refused: its copy is counted before it is made.

    torch failed with "Storage size calculation overflowed" (``"sddmm"``, ``"gather"``).
    """
    A, X, Y = _huge_expanded(which, layout)
    with pytest.raises(MemoryBudgetError) as info:
        sampled_mm(A, X, Y, backward=strategy)
    message = str(info.value)
    assert message.startswith("sampled_mm: ")
    copied = X if which == "X" else Y
    assert f"contiguous copy of {which} (shape {tuple(copied.shape)}, strides" in message
    assert "copied in full" in message
    assert info.value.needed_bytes >= 2 * HUGE * 4  # at least the copy itself


def test_values_of_A_are_ignored_and_get_no_gradient() -> None:
    A, X, Y, _G = _problem(torch.sparse_coo, torch.int64, False, torch.float64)
    A = A.requires_grad_()
    S = sampled_mm(A, X.requires_grad_(), Y)
    zeros = torch.sparse_coo_tensor(A.detach().indices(), torch.zeros(A._nnz()), A.shape)
    assert torch.equal(S.detach().to_dense(), sampled_mm(zeros, X, Y).detach().to_dense())
    S.to_dense().sum().backward()
    assert A.grad is None and X.grad is not None


def test_uncoalesced_coo_gives_the_coalesced_pattern() -> None:
    indices = torch.tensor([[1, 0, 1], [0, 2, 0]])  # (1, 0) twice
    A = torch.sparse_coo_tensor(indices, torch.ones(3), (2, 3))
    X, Y = torch.arange(4.0).reshape(2, 2), torch.arange(6.0).reshape(2, 3)
    S = sampled_mm(A, X, Y)
    assert S.is_coalesced()
    assert S.indices().tolist() == [[0, 1], [2, 0]]
    assert S.values().tolist() == [(X @ Y)[0, 2].item(), (X @ Y)[1, 0].item()]


@pytest.mark.parametrize(("layout", "index_dtype"), LAYOUT_INDEX)
def test_kept_pattern_gives_the_same_result(layout: torch.layout, index_dtype: torch.dtype) -> None:
    A, X, Y, _G = _problem(layout, index_dtype, True, torch.float64)
    kept = sparsity_pattern(A)
    expected = sampled_mm(A, X, Y).to_dense()
    assert torch.equal(sampled_mm(A, X, Y, pattern=kept).to_dense(), expected)
    other = _problem(layout, index_dtype, True, torch.float64, seed=9)[0]
    with pytest.raises(InputValueError, match="sampled_mm: pattern does not belong to A"):
        sampled_mm(other, X, Y, pattern=kept)


@pytest.mark.parametrize(
    ("make", "error", "words"),
    [
        (lambda: (torch.eye(2), torch.ones(2, 1), torch.ones(1, 2)), InputTypeError, "A must be"),
        (
            lambda: (torch.eye(2).to_sparse(), torch.ones(2, 3), torch.ones(2, 2)),
            InputValueError,
            "X's columns to match Y's rows",
        ),
        (
            lambda: (torch.eye(2).to_sparse(), torch.ones(3, 1), torch.ones(1, 2)),
            InputValueError,
            "must have A's shape (2, 2)",
        ),
        (
            lambda: (torch.eye(2).to_sparse(), torch.ones(2, 1), torch.ones(1, 2).double()),
            InputTypeError,
            "X and Y must have the same dtype",
        ),
        (
            lambda: (torch.eye(2).to_sparse(), torch.ones(2, 1), torch.ones(1, 2).to_sparse()),
            InputTypeError,
            "Y must be a dense (strided) tensor",
        ),
        (
            lambda: (torch.eye(2).to_sparse(), torch.ones(1, 2, 1), torch.ones(1, 1, 2)),
            InputValueError,
            "so X must be 2-D (n, d)",
        ),
        (
            lambda: (torch.ones(2, 2, 2).to_sparse(), torch.ones(2, 2, 1), torch.ones(3, 1, 2)),
            InputValueError,
            "batch sizes differ",
        ),
    ],
    ids=["dense-A", "inner", "outer", "dtype", "sparse-Y", "rank", "batch"],
)
def test_errors_name_the_argument(make, error, words) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=r"^sampled_mm: ") as info:
        sampled_mm(*make())
    assert words in str(info.value)


def test_memory_guard_refuses_values_that_cannot_fit(tiny_memory: Callable[[int], None]) -> None:
    tiny_memory(100)
    A = torch.ones(10, 10).to_sparse()  # 100 entries of 4 bytes, plus 11 row pointers
    K = torch.ones(10, 2)  # Y = K.T: Yᴴ's rows are K's, read without a copy
    with pytest.raises(
        MemoryBudgetError,
        match="sampled_mm: the values and backward='sddmm' "
        r"temporaries for A of 1 x 10 x 10 with 100 stored entries and d=2 "
        "would need 488 B",
    ):
        sampled_mm(A, torch.ones(10, 2), K.T)


def test_memory_guard_refuses_a_backward_that_cannot_fit(
    tiny_memory: Callable[[int], None],
) -> None:
    A = torch.eye(10).to_sparse_csr()
    X, Y = torch.ones(10, 8, requires_grad=True), torch.ones(8, 10)
    # Forward: 10 values (40 bytes), no workspace (sampled_addmm); backward: 640 bytes of
    # gradients plus the transpose's 11 row pointers and 3 x 10 index entries.
    tiny_memory(500)
    with pytest.raises(MemoryBudgetError, match=r"the backward \(∇X, ∇Y and the transpose"):
        sampled_mm(A, X, Y)
    with torch.no_grad():
        assert sampled_mm(A, X, Y).values().tolist() == [8.0] * 10


def test_memory_is_not_read_for_a_negligible_case(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(device: object) -> int:
        raise AssertionError("available_bytes was read for a case of a few hundred bytes")

    monkeypatch.setattr(memory_guard, "available_bytes", refuse)
    A = torch.eye(10).to_sparse_csr()
    X = torch.ones(10, 8, requires_grad=True)
    sampled_mm(A, X, torch.ones(8, 10)).values().sum().backward()
    assert X.grad is not None
