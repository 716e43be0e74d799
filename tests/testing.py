"""Shared helpers for the unit tests: dtypes, devices, tolerances, builders, references.

Every parametrised test draws its dtypes and devices from the lists here, so adding a device
(CUDA appears only when ``torch.cuda.is_available()``) or loosening one dtype's tolerance is a
one-line change. Random inputs come from a seeded CPU :class:`torch.Generator` and are moved to
the device afterwards, so a failing case reproduces on any machine from its seed.

The reference is always the dense product in float64 (complex128 for complex inputs):

.. math::

    C = A B, \\qquad
    \\nabla_A = P_A \\odot (G B^{\\mathsf H}), \\qquad
    \\nabla_B = A^{\\mathsf H} G,

with :math:`P_A` the 0/1 mask of the positions ``A`` stores (explicit zeros included).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from torch import Tensor

from sparsegrad_lab import BACKWARD_STRATEGIES, BackwardStrategy, sparse_mm

__all__ = [
    "CUDA_DEVICE_PARAMS",
    "DEVICES",
    "DEVICE_PARAMS",
    "DOUBLE_DTYPES",
    "DTYPES",
    "HALF_DTYPES",
    "LAYOUTS",
    "LAYOUT_IDS",
    "LAYOUT_INDEX",
    "RANKS",
    "STRATEGIES",
    "TOLERANCES",
    "Problem",
    "Reference",
    "Tolerance",
    "assert_close",
    "assert_same_pattern",
    "dense_reference",
    "densities",
    "dims",
    "fixed_problem",
    "load_hypothesis_profile",
    "make_generator",
    "operation_grid",
    "pattern_mask",
    "problems",
    "random_dense",
    "random_sparse",
    "reference_dtype",
    "run_sparse_mm",
    "sparse_from_mask",
    "uncoalesced_coo",
]

# --------------------------------------------------------------------------------------------
# dtypes, devices, tolerances
# --------------------------------------------------------------------------------------------

#: The dtypes ``sparse_mm`` supports on every device.
DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.float64, torch.complex64, torch.complex128)
#: The dtypes ``gradcheck`` and ``gradgradcheck`` run in (finite differences need them).
DOUBLE_DTYPES: tuple[torch.dtype, ...] = (torch.float64, torch.complex128)
#: Supported by ``sparse_mm`` on CUDA only (torch's CPU CSR kernels have no half matmul).
HALF_DTYPES: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16)
LAYOUTS: tuple[torch.layout, ...] = (torch.sparse_coo, torch.sparse_csr)
STRATEGIES = BACKWARD_STRATEGIES
#: (layout, CSR index dtype) for parametrize: COO indices are always int64.
LAYOUT_INDEX = [
    pytest.param(torch.sparse_coo, torch.int64, id="coo"),
    pytest.param(torch.sparse_csr, torch.int64, id="csr-int64"),
    pytest.param(torch.sparse_csr, torch.int32, id="csr-int32"),
]
#: Ids for parametrising over ``LAYOUTS`` alone: ``ids=LAYOUT_IDS.get``.
LAYOUT_IDS = {torch.sparse_coo: "coo", torch.sparse_csr: "csr"}
#: ``batched`` for parametrize: a 2-D ``A`` or a batch of them (3-D).
RANKS = [pytest.param(False, id="2d"), pytest.param(True, id="3d")]

_CUDA = torch.cuda.is_available()
#: CPU always, CUDA only when a GPU is present.
DEVICES: tuple[torch.device, ...] = (torch.device("cpu"),) + (
    (torch.device("cuda"),) if _CUDA else ()
)
#: ``DEVICES`` as pytest params: the CUDA one carries the ``cuda`` marker (``-m cuda``).
DEVICE_PARAMS = [
    pytest.param(d, id=d.type, marks=[pytest.mark.cuda] if d.type == "cuda" else [])
    for d in DEVICES
]
#: For tests that only make sense on a GPU (half precision): skipped, visibly, without one.
CUDA_DEVICE_PARAMS = [
    pytest.param(
        torch.device("cuda"),
        id="cuda",
        marks=[pytest.mark.cuda]
        + ([] if _CUDA else [pytest.mark.skip(reason="needs a CUDA GPU; none is available")]),
    )
]


def operation_grid(
    dtypes: Sequence[torch.dtype], devices: Sequence[Any] = DEVICE_PARAMS
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Parametrise a test over layout x index dtype x rank x ``dtypes`` x strategy x ``devices``.

    The grid every test of the operation against a reference runs over; the test takes
    ``layout, index_dtype, batched, dtype, strategy, device``. Test ids read in that order
    (``[csr-int32-3d-torch.float64-gather-cpu]``).
    """
    marks = [
        pytest.mark.parametrize("device", devices),
        pytest.mark.parametrize("strategy", STRATEGIES),
        pytest.mark.parametrize("dtype", dtypes, ids=str),
        pytest.mark.parametrize("batched", RANKS),
        pytest.mark.parametrize(("layout", "index_dtype"), LAYOUT_INDEX),
    ]

    def parametrise(test: Callable[..., Any]) -> Callable[..., Any]:
        for mark in reversed(marks):  # as if stacked top to bottom above the test
            test = mark(test)
        return test

    return parametrise


class Tolerance(NamedTuple):
    """``rtol`` and ``atol`` for comparing a result of one dtype with the float64 reference."""

    rtol: float
    atol: float


#: Per dtype. Test problems are small (dimensions below ~10, values of order one), so the
#: rounding error of a length-k dot product stays far below these.
TOLERANCES: dict[torch.dtype, Tolerance] = {
    torch.float64: Tolerance(1e-10, 1e-12),
    torch.complex128: Tolerance(1e-10, 1e-12),
    torch.float32: Tolerance(1e-4, 1e-5),
    torch.complex64: Tolerance(1e-4, 1e-5),
    torch.float16: Tolerance(1e-2, 1e-2),
    torch.bfloat16: Tolerance(5e-2, 5e-2),
}


def reference_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 for a real dtype, complex128 for a complex one."""
    return torch.complex128 if dtype.is_complex else torch.float64


def assert_close(actual: Tensor, expected: Tensor, *, dtype: torch.dtype | None = None) -> None:
    """Compare ``actual`` (any device, any layout) with a CPU reference at ``dtype``'s tolerance.

    Sparse ``actual`` is compared through ``to_dense()``; the pattern is checked separately by
    :func:`assert_same_pattern`. ``dtype`` defaults to ``actual.dtype``.
    """
    tol = TOLERANCES[dtype or actual.dtype]
    if actual.layout != torch.strided:
        actual = actual.to_dense()
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {expected.shape}"
    torch.testing.assert_close(
        actual.detach().cpu().to(expected.dtype),
        expected,
        rtol=tol.rtol,
        atol=tol.atol,
    )


# --------------------------------------------------------------------------------------------
# random inputs
# --------------------------------------------------------------------------------------------


def make_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed`` (inputs are drawn on CPU, then moved)."""
    return torch.Generator().manual_seed(seed)


def random_dense(
    shape: tuple[int, ...],
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
    generator: torch.Generator,
    integer_valued: bool = False,
) -> Tensor:
    """Standard normal entries (or small integers, for results that must be exact)."""
    if integer_valued:
        real = torch.randint(-3, 4, shape, generator=generator).to(torch.float64)
        if dtype.is_complex:
            imag = torch.randint(-3, 4, shape, generator=generator).to(torch.float64)
            real = torch.complex(real, imag)
        return real.to(dtype).to(device)
    draw_dtype = dtype if dtype in DTYPES else torch.float32
    return torch.randn(shape, dtype=draw_dtype, generator=generator).to(dtype).to(device)


def _random_mask(
    shape: tuple[int, ...],
    *,
    density: float,
    equal_per_item: bool,
    generator: torch.Generator,
    empty_rows: tuple[int, ...] = (),
    empty_cols: tuple[int, ...] = (),
) -> Tensor:
    allowed = torch.ones(shape, dtype=torch.bool)
    allowed[..., list(empty_rows), :] = False
    allowed[..., :, list(empty_cols)] = False
    if not equal_per_item:
        return allowed & (torch.rand(shape, generator=generator) < density)
    # Batched CSR needs the same nnz in every item (a torch requirement): pick k positions per
    # item among the allowed ones, by taking the k smallest random keys.
    items = allowed.reshape(-1, shape[-2] * shape[-1])
    k = round(density * int(items[0].sum()))
    keys = torch.rand(items.shape, generator=generator).masked_fill(~items, 2.0)
    chosen = torch.zeros_like(items)
    if k:
        chosen.scatter_(1, keys.topk(k, dim=1, largest=False).indices, True)
    return chosen.reshape(shape)


def sparse_from_mask(
    mask: Tensor,
    values: Tensor,
    *,
    layout: torch.layout,
    index_dtype: torch.dtype = torch.int64,
    device: torch.device | str = "cpu",
) -> Tensor:
    """The sparse tensor storing ``values`` (in row-major order) at the ``True`` positions.

    Built from indices rather than from a dense tensor, so a stored value that happens to be 0
    stays stored. COO comes out coalesced; CSR keeps ``index_dtype`` (int32 or int64).
    """
    shape = tuple(mask.shape)
    if layout == torch.sparse_coo:
        indices = mask.nonzero().T  # lexicographic order: already coalesced
        A = torch.sparse_coo_tensor(indices, values, shape, is_coalesced=True)
        return A.to(device)
    if layout != torch.sparse_csr:
        raise ValueError(f"layout must be sparse_coo or sparse_csr, got {layout}")
    template = mask.to(torch.float64).to_sparse_csr()
    crow = template.crow_indices().to(index_dtype)
    col = template.col_indices().to(index_dtype)
    values = values.reshape(template.values().shape)
    return torch.sparse_csr_tensor(crow.to(device), col.to(device), values.to(device), shape)


def random_sparse(
    shape: tuple[int, ...],
    *,
    layout: torch.layout,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
    density: float = 0.4,
    generator: torch.Generator,
    index_dtype: torch.dtype = torch.int64,
    empty_rows: tuple[int, ...] = (),
    empty_cols: tuple[int, ...] = (),
    integer_valued: bool = False,
) -> Tensor:
    """A random sparse ``(n, m)`` or ``(b, n, m)`` matrix of ``layout``, no leaf flags set.

    Each allowed position is stored with probability ``density``; batched CSR instead stores
    ``round(density * allowed)`` positions per item, since torch needs equal nnz per item.
    Rows in ``empty_rows`` and columns in ``empty_cols`` (of every item) store nothing.
    """
    mask = _random_mask(
        shape,
        density=density,
        equal_per_item=layout == torch.sparse_csr and len(shape) == 3,
        generator=generator,
        empty_rows=empty_rows,
        empty_cols=empty_cols,
    )
    nnz = int(mask.sum())
    values = random_dense((nnz,), dtype=dtype, generator=generator, integer_valued=integer_valued)
    return sparse_from_mask(mask, values, layout=layout, index_dtype=index_dtype, device=device)


def uncoalesced_coo(
    shape: tuple[int, ...],
    *,
    nnz: int,
    duplicates: int,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Indices and values of an uncoalesced COO matrix with ``duplicates`` repeated entries.

    Returns ``(indices, values)``: ``nnz`` distinct positions in shuffled order, then
    ``duplicates`` more entries copying some of those positions. Build the tensor with
    ``torch.sparse_coo_tensor(indices, values, shape)`` so ``values`` can be a leaf.
    """
    if duplicates and not nnz:
        raise ValueError("duplicates need at least one distinct entry to copy (nnz >= 1)")
    numel = 1
    for size in shape:
        numel *= size
    flat = torch.randperm(numel, generator=generator)[:nnz]
    repeat = flat[torch.randint(0, max(nnz, 1), (duplicates,), generator=generator)]
    flat = torch.cat([flat, repeat])
    flat = flat[torch.randperm(flat.numel(), generator=generator)]
    indices = torch.stack(torch.unravel_index(flat, shape))
    values = random_dense((flat.numel(),), dtype=dtype, generator=generator)
    return indices.to(device), values.to(device)


# --------------------------------------------------------------------------------------------
# dense reference
# --------------------------------------------------------------------------------------------


def _dense(A: Tensor, values: Tensor | None = None) -> Tensor:
    """``A`` (or ``values`` at ``A``'s positions) as a dense CPU tensor, duplicates summed.

    Rebuilt from contiguous copies of the indices: some of torch's kernels read a strided
    index view (``indices()`` from ``edges.t()``) as if it were contiguous, and the
    reference must not depend on what it checks.
    """
    A = A.detach().cpu()
    if A.layout == torch.sparse_coo:
        values = A._values() if values is None else values
        return torch.sparse_coo_tensor(A._indices().contiguous(), values, A.shape).to_dense()
    crow, col = A.crow_indices().contiguous(), A.col_indices().contiguous()
    values = A.values() if values is None else values
    return torch.sparse_csr_tensor(crow, col, values, A.shape).to_dense()


def pattern_mask(A: Tensor) -> Tensor:
    """Dense bool tensor (on CPU) of the positions ``A`` stores, whatever the values are."""
    shape = (A._nnz(),) if A.layout == torch.sparse_coo else A.values().shape
    return _dense(A, torch.ones(shape, dtype=torch.float64)) != 0


class Reference(NamedTuple):
    """Dense float64/complex128 CPU reference of ``C = A B`` and both gradients under ``G``."""

    C: Tensor
    grad_A: Tensor  # noqa: N815 (the names of the maths)
    grad_B: Tensor  # noqa: N815


def dense_reference(A: Tensor, B: Tensor, G: Tensor) -> Reference:
    """``C = A B``, ``∇A = P_A ⊙ (G Bᴴ)`` and ``∇B = Aᴴ G`` in double precision on CPU.

    ``A`` is sparse (duplicates of uncoalesced COO are summed, as in the product); ``G`` is
    the upstream gradient handed to ``C.backward(G)``.
    """
    ref = reference_dtype(B.dtype)
    D = _dense(A).to(ref)
    B64 = B.detach().cpu().to(ref)
    G64 = G.detach().cpu().to(ref)
    grad_A = (G64 @ B64.mH) * pattern_mask(A)
    return Reference(C=D @ B64, grad_A=grad_A, grad_B=D.mH @ G64)


def assert_same_pattern(grad: Tensor, A: Tensor) -> None:
    """``grad`` has ``A``'s layout and exactly ``A``'s coalesced pattern (and index dtype)."""
    assert grad.layout == A.layout, f"gradient layout {grad.layout}, A has {A.layout}"
    assert grad.shape == A.shape, f"gradient shape {tuple(grad.shape)}, A has {tuple(A.shape)}"
    if A.layout == torch.sparse_coo:
        expected = A.detach().coalesce().indices()
        got = grad.coalesce().indices()
        assert torch.equal(got.cpu(), expected.cpu()), f"indices {got} != {expected}"
        return
    for name in ("crow_indices", "col_indices"):
        got, expected = getattr(grad, name)(), getattr(A, name)()
        assert got.dtype == expected.dtype, f"{name} dtype {got.dtype}, A has {expected.dtype}"
        assert torch.equal(got.cpu(), expected.cpu()), f"{name} {got} != {expected}"


# --------------------------------------------------------------------------------------------
# hypothesis
# --------------------------------------------------------------------------------------------

# No deadlines anywhere: torch's first call of a kernel can take far longer than later ones.
settings.register_profile(
    "ci",
    deadline=None,
    max_examples=15,
    derandomize=True,  # CI runs the same examples every time: a red build is reproducible
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "dev",
    deadline=None,
    max_examples=15,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("thorough", deadline=None, max_examples=300)


def load_hypothesis_profile() -> str:
    """Load ``$HYPOTHESIS_PROFILE``, else ``"ci"`` when ``$CI`` is set, else ``"dev"``."""
    name = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
    settings.load_profile(name)
    return name


#: Matrix dimensions, 1 included (n = 1, m = 1, p = 1 are edge cases of their own).
dims = st.integers(min_value=1, max_value=7)
#: Densities, with the empty and the full matrix drawn often.
densities = st.one_of(
    st.sampled_from([0.0, 1.0]), st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
)


@dataclass(frozen=True)
class Problem:
    """One random ``sparse_mm`` problem: ``A`` is ``(n, m)`` (or ``(b, n, m)``), ``B`` ``(m, p)``.

    ``batch`` is ``None`` for a 2-D problem. ``seed`` fixes every random draw.
    """

    batch: int | None
    n: int
    m: int
    p: int
    density: float
    seed: int

    @property
    def a_shape(self) -> tuple[int, ...]:
        return (self.n, self.m) if self.batch is None else (self.batch, self.n, self.m)

    @property
    def b_shape(self) -> tuple[int, ...]:
        return (self.m, self.p) if self.batch is None else (self.batch, self.m, self.p)

    @property
    def c_shape(self) -> tuple[int, ...]:
        return (self.n, self.p) if self.batch is None else (self.batch, self.n, self.p)

    def build(
        self, *, layout: torch.layout, dtype: torch.dtype, device: torch.device | str, **kw: Any
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(A, B, G)``: sparse ``A``, dense ``B`` and an upstream gradient ``G`` for ``C``."""
        gen = make_generator(self.seed)
        A = random_sparse(
            self.a_shape,
            layout=layout,
            dtype=dtype,
            device=device,
            density=self.density,
            generator=gen,
            **kw,
        )
        B = random_dense(self.b_shape, dtype=dtype, device=device, generator=gen)
        G = random_dense(self.c_shape, dtype=dtype, device=device, generator=gen)
        return A, B, G


@st.composite
def problems(draw: Any, *, batched: bool | None = None, max_batch: int = 3) -> Problem:
    """Random :class:`Problem`; ``batched=None`` draws 2-D and 3-D alike."""
    if batched is None:
        batched = draw(st.booleans())
    batch = draw(st.integers(min_value=1, max_value=max_batch)) if batched else None
    return Problem(
        batch=batch,
        n=draw(dims),
        m=draw(dims),
        p=draw(dims),
        density=draw(densities),
        seed=draw(st.integers(min_value=0, max_value=2**31 - 1)),
    )


def fixed_problem(batched: bool, *, n: int = 3, m: int = 4, p: int = 2, seed: int = 0) -> Problem:
    """A small :class:`Problem` at density 0.5: 2-D, or a batch of two when ``batched``."""
    return Problem(batch=2 if batched else None, n=n, m=m, p=p, density=0.5, seed=seed)


# --------------------------------------------------------------------------------------------
# one call of the operation
# --------------------------------------------------------------------------------------------


def run_sparse_mm(
    A: Tensor,
    B: Tensor,
    G: Tensor,
    strategy: BackwardStrategy,
    *,
    grad_A: bool = True,
    grad_B: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """Fresh leaves, ``C = sparse_mm(A, B)``, ``C.backward(G)``; returns ``(C, A, B)``."""
    A = A.detach().clone().requires_grad_(grad_A)
    B = B.detach().clone().requires_grad_(grad_B)
    C = sparse_mm(A, B, backward=strategy)
    C.backward(G)
    return C, A, B
