"""One benchmark case, and the implementations of ``C = A @ B`` compared on it.

A :class:`Case` says everything a measurement needs to rebuild its inputs: sizes, layout,
dtypes, device and seed (plain strings and ints, so it pickles into a child process and
reads back from JSON). :func:`make_inputs` builds its seeded ``A``, ``B`` and upstream
gradient ``G``.

:data:`REGISTRY` is the one list of implementations: each :class:`Implementation` says how
to run it, on which cases it runs, what it needs installed and its memory model. The model,
the measurement, the sweep and the benchmark all read it, so adding an implementation means
adding one entry here (and its model, beside the others).

>>> case = Case(n=4, m=5, nnz=6, p=2, layout="coo")
>>> case.describe("sddmm")
'sddmm: A 4 x 5 (coo, nnz=6), p=2, float32'
>>> [name for name in IMPLEMENTATIONS if get_implementation(name).unsupported_reason(case)]
['torch_csr']
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import torch
from torch import Tensor

from .batching import stack_csr
from .csr_from_values import csr_tensor
from .errors import InputTypeError, InputValueError
from .example_matrices import uniform_random
from .footprint import Dims, Stages, sparse_mm_stages
from .ops import sparse_mm, sparsity_pattern
from .pattern import SparsityPattern, coalesced
from .pattern_op import PatternIndices, pattern_mm
from .scalar_checks import check_int, dtype_from, layout_name, parse_layout
from .third_party import torch_coo_stages, torch_csr_stages, tsgu_matmul, tsgu_stages

__all__ = [
    "IMPLEMENTATIONS",
    "REGISTRY",
    "Case",
    "Implementation",
    "MatMul",
    "Model",
    "as_case",
    "describe_case",
    "get_implementation",
    "make_inputs",
]

#: An implementation's product: ``C = f(A, B)`` for sparse ``A`` and dense ``B``.
MatMul = Callable[[Tensor, Tensor], Tensor]

#: An implementation's memory model: the stages of one call (:mod:`sparsegrad_lab.footprint`).
Model = Callable[[Dims], Stages]


# ---------------------------------------------------------------------------- the case


@dataclass(frozen=True)
class Case:
    """One input of ``C = A @ B``: ``A`` is ``(batch,) n x m`` with ``nnz`` entries per item.

    ``B`` is ``(batch,) m x p``. ``layout``, ``dtype`` and ``index_dtype`` (of a CSR ``A``;
    COO indices are always int64) are stored as names, and may be given as torch objects.
    The positions of item ``t`` are drawn with seed ``seed + t``.

    >>> Case(n=10, m=10, nnz=20, p=4, dtype=torch.float64).label()
    'n=10 m=10 nnz=20 p=4 csr float64'
    >>> Case(n=3, m=3, nnz=10, p=1)
    Traceback (most recent call last):
    ...
    sparsegrad_lab.errors.InputValueError: Case: nnz=10 does not fit in a 3 x 3 matrix \
(9 positions)
    """

    n: int
    m: int
    nnz: int
    p: int
    batch: int = 1
    layout: str = "csr"
    dtype: str = "float32"
    index_dtype: str = "int64"
    device: str = "cpu"
    seed: int = 0

    def __post_init__(self) -> None:
        for name, low in (("n", 1), ("m", 1), ("nnz", 0), ("p", 1), ("batch", 1), ("seed", 0)):
            check_int(getattr(self, name), name, "Case", minimum=low)
        if self.nnz > self.n * self.m:
            raise InputValueError(
                f"Case: nnz={self.nnz} does not fit in a {self.n} x {self.m} matrix "
                f"({self.n * self.m} positions)"
            )
        dtype = dtype_from(self.dtype)
        if not (dtype.is_floating_point or dtype.is_complex):
            raise InputValueError(f"Case: dtype must be floating-point or complex, got {dtype}")
        index_dtype = dtype_from(self.index_dtype, "index_dtype")
        if index_dtype not in (torch.int32, torch.int64):
            raise InputValueError(
                f"Case: index_dtype must be torch.int32 or torch.int64, got {index_dtype}"
            )
        # Normalised to names, so that equal cases compare (and serialise) equal.
        object.__setattr__(self, "layout", layout_name(self.layout, "Case"))
        object.__setattr__(self, "dtype", str(dtype).removeprefix("torch."))
        object.__setattr__(self, "index_dtype", str(index_dtype).removeprefix("torch."))
        object.__setattr__(self, "device", str(torch.device(self.device)))

    @property
    def torch_dtype(self) -> torch.dtype:
        """The dtype of the values, as a ``torch.dtype``.

        >>> Case(n=2, m=2, nnz=1, p=1, dtype="complex64").torch_dtype
        torch.complex64
        """
        dtype: torch.dtype = getattr(torch, self.dtype)
        return dtype

    @property
    def torch_index_dtype(self) -> torch.dtype:
        """The dtype of ``A``'s indices: ``index_dtype`` for CSR, int64 for COO (torch's).

        >>> Case(n=2, m=2, nnz=1, p=1, layout="coo", index_dtype="int32").torch_index_dtype
        torch.int64
        """
        if self.layout == "coo":
            return torch.int64
        dtype: torch.dtype = getattr(torch, self.index_dtype)
        return dtype

    def dims(self) -> Dims:
        """The sizes a memory model reads (:class:`~sparsegrad_lab.footprint.Dims`).

        >>> Case(n=10, m=20, nnz=30, p=4, batch=2).dims().Z
        60
        """
        return Dims(
            b=self.batch,
            n=self.n,
            m=self.m,
            Z=self.batch * self.nnz,
            p=self.p,
            dtype=self.torch_dtype,
            idx=self.torch_index_dtype.itemsize,
            layout=self.layout,
            cpu=torch.device(self.device).type == "cpu",
            batched=self.batch > 1,  # make_inputs builds a 2-D A for a batch of one
        )

    def label(self) -> str:
        """Short human-readable name (the benchmark's tables and headlines)."""
        b = f"b={self.batch} " if self.batch != 1 else ""
        return f"{b}n={self.n} m={self.m} nnz={self.nnz} p={self.p} {self.layout} {self.dtype}"

    def describe(self, impl: str) -> str:
        """A one-line name for ``impl`` run on this case, used in refusals and tables.

        >>> Case(n=100, m=200, nnz=1000, p=8).describe("gather")
        'gather: A 100 x 200 (csr, nnz=1000), p=8, float32'
        """
        shape = f"{self.batch} x {self.n} x {self.m}" if self.batch != 1 else f"{self.n} x {self.m}"
        per = " per item" if self.batch != 1 else ""
        return f"{impl}: A {shape} ({self.layout}, nnz={self.nnz}{per}), p={self.p}, {self.dtype}"


def as_case(case: Case | None, sizes: Mapping[str, Any], where: str) -> Case:
    """``case``, or the :class:`Case` the keyword ``sizes`` describe (exactly one of them).

    The keyword form keeps the lessons' calls short: ``predict_peak_bytes("sddmm", n=...,
    m=..., nnz=..., p=...)``.

    >>> as_case(None, {"n": 2, "m": 3, "nnz": 1, "p": 4}, "f").label()
    'n=2 m=3 nnz=1 p=4 csr float32'
    """
    if case is None:
        try:
            return Case(**sizes)
        except TypeError as wrong:  # a missing or unknown keyword
            raise InputValueError(f"{where}: {wrong}".replace("__init__()", "Case")) from None
    if not isinstance(case, Case):
        raise InputTypeError(f"{where}: case must be a Case, got {type(case).__name__}")
    if sizes:
        raise InputValueError(
            f"{where}: give a Case or its fields as keywords, not both; got {sorted(sizes)} "
            "besides the case"
        )
    return case


def describe_case(impl: str, case: Case | None = None, **sizes: Any) -> str:
    """:meth:`Case.describe`, with the case given as keywords if preferred.

    >>> describe_case("gather", n=100, m=200, nnz=1000, p=8)
    'gather: A 100 x 200 (csr, nnz=1000), p=8, float32'
    """
    return as_case(case, sizes, "describe_case").describe(impl)


def make_inputs(case: Case) -> tuple[Tensor, Tensor, Tensor]:
    """Seeded inputs ``A`` (sparse, requires grad), ``B`` (requires grad) and ``G``.

    ``A`` has exactly ``nnz`` uniformly random distinct positions per batch item
    (:func:`~sparsegrad_lab.example_matrices.uniform_random` with seeds ``seed, seed + 1,
    ...``; a CSR batch stacked by :func:`~sparsegrad_lab.stack_csr`); ``B`` and the upstream
    gradient ``G`` are standard normal.

    >>> A, B, G = make_inputs(Case(n=4, m=5, nnz=6, p=2, layout="coo"))
    >>> A.layout, A._nnz(), tuple(B.shape), tuple(G.shape)
    (torch.sparse_coo, 6, (5, 2), (4, 2))
    """
    dtype, b, layout = case.torch_dtype, case.batch, parse_layout(case.layout)
    items = [
        uniform_random(case.n, case.m, nnz=case.nnz, seed=case.seed + t, dtype=dtype, layout=layout)
        for t in range(b)
    ]
    if case.layout == "csr":
        index_dtype = case.torch_index_dtype
        items = [
            csr_tensor(
                M.crow_indices().to(index_dtype),
                M.col_indices().to(index_dtype),
                M.values(),
                (case.n, case.m),
            )
            for M in items
        ]
        A = stack_csr(items) if b > 1 else items[0]
    else:
        A = torch.stack(items).coalesce() if b > 1 else items[0]
    gen = torch.Generator().manual_seed(case.seed + 10_007)
    lead = (b,) if b > 1 else ()
    B = torch.randn(*lead, case.m, case.p, generator=gen, dtype=dtype)
    G = torch.randn(*lead, case.n, case.p, generator=gen, dtype=dtype)
    device = torch.device(case.device)
    return A.to(device).requires_grad_(), B.to(device).requires_grad_(), G.to(device)


# ---------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Implementation:
    """One implementation of ``C = A @ B`` with autograd, as the lab compares them.

    Attributes
    ----------
    name : str
        Its key in :data:`REGISTRY`.
    runs : str
        What it calls, for messages and ``--help``.
    make : callable
        ``make()`` returns a fresh ``(A, B) -> C`` (one per measured pair: ``"sddmm_kept"``
        keeps the pattern of its first call).
    model : callable
        Its memory model: the stages of one call (:mod:`sparsegrad_lab.memory_model`).
    layouts : tuple of str
        The layouts of ``A`` it runs on.
    batched : bool
        Whether it takes a batched 3-D ``A``.
    requires, install : str
        A module it imports (``""`` if none), and how to install it.
    first_call : str
        The implementation whose call its first call is (``""``: its own).
    """

    name: str
    runs: str
    make: Callable[[], MatMul]
    model: Model
    layouts: tuple[str, ...] = ("coo", "csr")
    batched: bool = True
    requires: str = ""
    install: str = ""
    first_call: str = ""

    def unsupported_reason(self, case: Case) -> str | None:
        """Why it cannot run on ``case``'s kind of input, or ``None`` if it can.

        >>> get_implementation("torch_coo").unsupported_reason(Case(n=2, m=2, nnz=1, p=1))
        'torch_coo runs torch.sparse.mm on a COO A; this case has a CSR A'
        """
        if case.layout not in self.layouts:
            own = " or ".join(layout.upper() for layout in self.layouts)
            return (
                f"{self.name} runs {self.runs} on a {own} A; this case has a "
                f"{case.layout.upper()} A"
            )
        if case.batch != 1 and not self.batched:
            return f"{self.name}: {self.runs} multiplies 2-D matrices only (batch={case.batch})"
        return None

    def missing_reason(self) -> str | None:
        """Why it cannot run on this machine (a module not installed), or ``None``.

        >>> get_implementation("sddmm").missing_reason() is None
        True
        """
        if not self.requires or importlib.util.find_spec(self.requires) is not None:
            return None
        return f"{self.name} needs {self.requires}, which is not installed ({self.install})"

    def matmul(self) -> MatMul:
        """A fresh ``(A, B) -> C``; ``ModuleNotFoundError`` saying what to install if needed.

        >>> get_implementation("sddmm").matmul()(torch.eye(2).to_sparse(), torch.ones(2, 3)).shape
        torch.Size([2, 3])
        """
        missing = self.missing_reason()
        if missing is not None:
            raise ModuleNotFoundError(missing)
        return self.make()


def _sparse_mm_with(strategy: str) -> MatMul:
    return partial(sparse_mm, backward=strategy)  # type: ignore[arg-type]


def _sparse_mm_keeping_the_pattern() -> MatMul:
    """``sparse_mm`` with the pattern of the first ``A`` it is given, kept for later calls.

    Each call still checks ``A`` against the kept pattern, so a later ``A`` with other
    indices is refused rather than multiplied wrongly.
    """
    kept: list[SparsityPattern] = []

    def with_kept_pattern(A: Tensor, B: Tensor) -> Tensor:
        if not kept:
            kept.append(sparsity_pattern(A))
        return sparse_mm(A, B, pattern=kept[0])

    return with_kept_pattern


class _PatternMMOnDenseValues:
    """``pattern_mm(values, B, kept)``: ``A``'s values as a dense leaf, the pattern kept.

    How a training loop whose sparse weights are a dense ``nn.Parameter`` runs (a
    :class:`~sparsegrad_lab.SparseLinear`, say): the first call keeps ``A``'s pattern
    (``sparsity_pattern``, its transpose sorted then) and takes ``values``, a view of
    ``A``'s own values storage detached from ``A``, as the leaf; every call multiplies those
    values, whatever they hold then, through the registered op. No check per call: the
    pattern was checked once, as a layer checks it at construction. The dense gradient is
    handed to ``A.grad`` as it is accumulated -- a sparse tensor on ``A``'s own indices around
    it, no copy -- so that the benchmark reads and clears it as it does every other's.
    """

    def __init__(self) -> None:
        self.pattern: SparsityPattern | None = None
        self.values: Tensor | None = None
        self.A: Tensor | None = None

    def __call__(self, A: Tensor, B: Tensor) -> Tensor:
        if self.pattern is None or self.values is None:
            self.pattern = sparsity_pattern(A)
            PatternIndices.of_kept(self.pattern)  # the transpose, sorted once
            self.values = coalesced(A.detach()).values().reshape(-1).requires_grad_()
            self.values.register_post_accumulate_grad_hook(self._hand_to_A)
        self.A = A
        return pattern_mm(self.values, B, self.pattern)

    def _hand_to_A(self, values: Tensor) -> None:
        A, grad = self.A, values.grad
        values.grad = None
        if A is None or grad is None or not A.requires_grad:
            return
        A = coalesced(A)
        if A.layout == torch.sparse_coo:
            A.grad = torch.sparse_coo_tensor(
                A.indices(), grad, A.shape, is_coalesced=True, check_invariants=False
            )
        else:
            A.grad = torch.sparse_csr_tensor(
                A.crow_indices(),
                A.col_indices(),
                grad.view(A.values().shape),
                A.shape,
                check_invariants=False,
            )


def _dense_values_stages(d: Dims) -> Stages:
    """``"pattern_mm"``'s memory: the kept ``sparse_mm``'s stages, but no sparse ``A.grad``
    clone: the gradient is the sampled product's own values, wrapped without a copy."""
    stages, alive = sparse_mm_stages(d, strategy="sddmm", kept=True)
    clone = ("A.grad values", "A.grad indices")
    kept = [
        replace(stage, terms={k: v for k, v in stage.terms.items() if k not in clone})
        for stage in stages
    ]
    return kept, alive


def _ours(strategy: str) -> Implementation:
    return Implementation(
        strategy,
        f"sparse_mm(backward={strategy!r})",
        partial(_sparse_mm_with, strategy),
        partial(sparse_mm_stages, strategy=strategy),
    )


#: Every implementation by name: ``sparse_mm``'s three backward strategies, torch's own
#: autograd with a COO and a CSR ``A``, torchsparsegradutils, ``sparse_mm`` called the way a
#: training loop over a fixed pattern calls it (``pattern=`` kept from its first call), and
#: that loop with the values as a dense tensor through the registered op (``pattern_mm``).
REGISTRY: dict[str, Implementation] = {
    impl.name: impl
    for impl in (
        _ours("sddmm"),
        _ours("gather"),
        _ours("dense"),
        Implementation(
            "torch_coo",
            "torch.sparse.mm",
            lambda: torch.sparse.mm,
            torch_coo_stages,
            layouts=("coo",),
            batched=False,
        ),
        Implementation(
            "torch_csr",
            "torch.sparse.mm",
            lambda: torch.sparse.mm,
            torch_csr_stages,
            layouts=("csr",),
            batched=False,
        ),
        Implementation(
            "tsgu",
            "torchsparsegradutils.sparse_mm",
            tsgu_matmul,
            tsgu_stages,
            requires="torchsparsegradutils",
            install="pip install torchsparsegradutils==0.2.7, or the package's [bench] extra",
        ),
        Implementation(
            "sddmm_kept",
            "sparse_mm(pattern=kept)",
            _sparse_mm_keeping_the_pattern,
            partial(sparse_mm_stages, strategy="sddmm", kept=True),
            first_call="sddmm",
        ),
        Implementation(
            "pattern_mm",
            "pattern_mm(values, B, kept)",
            _PatternMMOnDenseValues,
            _dense_values_stages,
            first_call="sddmm",
        ),
    )
}

#: The names of :data:`REGISTRY`, in the order tables list them.
IMPLEMENTATIONS: tuple[str, ...] = tuple(REGISTRY)


def get_implementation(name: Any) -> Implementation:
    """The :class:`Implementation` called ``name``; the one place a name is checked.

    >>> get_implementation("magic")
    Traceback (most recent call last):
    ...
    sparsegrad_lab.errors.InputValueError: impl must be one of ('sddmm', 'gather', 'dense', \
'torch_coo', 'torch_csr', 'tsgu', 'sddmm_kept', 'pattern_mm'), got 'magic'
    """
    if not isinstance(name, str) or name not in REGISTRY:
        raise InputValueError(f"impl must be one of {IMPLEMENTATIONS}, got {name!r}")
    return REGISTRY[name]
