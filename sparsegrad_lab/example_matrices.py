"""Seeded test matrices for the lessons: synthetic sparse matrices and two small real graphs.

Every generator returns a coalesced COO tensor (rows ascending, columns ascending within a
row, no duplicates) or the CSR tensor with the same entries, chosen by ``layout``. Random
values are standard normal, drawn from a ``torch.Generator`` seeded by ``seed``, so the same
call gives the same matrix on every run. Positions are drawn in O(nnz) memory: no
generator ever allocates the ``n x m`` matrix, so ``uniform_random(10**6, 10**6,
nnz=10**7)`` (191 MiB as COO) peaks at about 640 MiB above the process's baseline, in 5 s.

Before building, each generator predicts its peak and asks the memory guard
(:func:`sparsegrad_lab.memory_guard.check_fits`) whether it fits: the result takes

.. math::

    \\text{COO: } \\mathrm{nnz}\\,(2 \\cdot 8 + s), \\qquad
    \\text{CSR: } (n + 1) \\cdot 8 + \\mathrm{nnz}\\,(8 + s)

(int64 indices, ``s`` bytes per value), and drawing the positions needs a few times that
(four times, in this module's estimate). By default the limit is what the process can still
get; the lessons' widgets pass ``budget=`` :data:`~sparsegrad_lab.memory_guard.LAB_BUDGET_BYTES`.

>>> A = uniform_random(4, 6, nnz=5, seed=1)
>>> A.shape, A._nnz(), A.is_coalesced()
(torch.Size([4, 6]), 5, True)
>>> sorted(MATRIX_KINDS)
['banded', 'block_diagonal', 'grid_laplacian', 'karate_club', 'les_miserables', \
'power_law', 'uniform']
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal, Protocol

import torch
from torch import Tensor

from .csr_from_values import csr_tensor
from .errors import InputTypeError, InputValueError, format_bytes
from .footprint import sparse_storage_bytes
from .memory_guard import check_fits
from .scalar_checks import check_int, check_real, layout_name, parse_layout

if TYPE_CHECKING:
    import networkx

__all__ = [
    "MATRIX_KINDS",
    "LayoutLike",
    "MatrixMaker",
    "ValueKind",
    "banded",
    "grid_laplacian",
    "karate_club",
    "les_miserables",
    "make_matrix",
    "power_law_graph",
    "random_block_diagonal",
    "uniform_random",
]

# Generating peaks at a few times the result's own storage (candidate positions drawn with
# replacement, their sort for de-duplication, the values): measured 3.4x for uniform_random
# and 3.6x for power_law_graph at nnz = 1e7. The guard predicts with this factor.
_GENERATION_PEAK_FACTOR = 4

#: A layout as torch names it, or by its short name.
LayoutLike = torch.layout | Literal["coo", "csr"]
#: How stored values are drawn: standard normal, or all ones.
ValueKind = Literal["normal", "ones"]

# Above this many positions a product n * m no longer fits comfortably in int64 arithmetic.
_MAX_POSITIONS = 2**62
# Rounds of endpoint sampling before power_law_graph gives up on reaching the edge count.
_MAX_ROUNDS = 40
# torch's CPU randint reduces a raw draw modulo the range: a 32-bit word below 2**28 in
# every release, a 64-bit one above -- but only from 2**32 on in releases such as 2.4, where
# a range of 2.5e9 puts 58 % of the draws in its lower half (1.7e9, below 2**31: 60 %).
# Up to 2**28 positions one randint draws them, as it always did here (lesson matrices up
# to 16_000 x 16_000 stay what they were); more are assembled from exact power-of-two draws.
_ONE_DRAW_MAX = 2**28
# Bits per power-of-two draw: 2**27 is below every release's 64-bit switch, so each draw
# is one 32-bit word modulo a power of two -- exact, and reduced alike on every torch.
_CHUNK_BITS = 27


# --------------------------------------------------------------------------- validation


def _check_dtype(func: str, dtype: Any) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not (dtype.is_floating_point or dtype.is_complex):
        raise InputTypeError(
            f"{func}: dtype must be a floating-point or complex torch.dtype (e.g. "
            f"torch.float32), got {dtype!r}"
        )
    return dtype


def _check_values(func: str, values: Any) -> ValueKind:
    if values not in ("normal", "ones"):
        raise InputValueError(f"{func}: values must be 'normal' or 'ones', got {values!r}")
    return values  # type: ignore[no-any-return]


def _predicted_bytes(nnz: int, n_rows: int, layout: torch.layout, dtype: torch.dtype) -> int:
    # torch builds sparse indices as int64 (the default index_bytes)
    return sparse_storage_bytes(
        layout_name(layout), rows=n_rows, nnz=nnz, value_bytes=dtype.itemsize
    )


def _guard(
    func: str,
    nnz: int,
    shape: tuple[int, int],
    layout: torch.layout,
    dtype: torch.dtype,
    budget: Any,
) -> None:
    """Refuse (:class:`MemoryBudgetError`) before generating a matrix that would not fit."""
    if budget is not None:
        check_int(budget, "budget", func, minimum=0)
    stored = _predicted_bytes(nnz, shape[0], layout, dtype)
    check_fits(
        _GENERATION_PEAK_FACTOR * stored,
        what=(
            f"{func}: a {shape[0]} x {shape[1]} {layout} matrix with {nnz} stored {dtype} "
            f"entries ({format_bytes(stored)}, more while generated)"
        ),
        budget=budget,
        advice="ask for fewer entries",
    )


# --------------------------------------------------------------------------- building blocks


def _generator(func: str, seed: Any) -> torch.Generator:
    return torch.Generator().manual_seed(check_int(seed, "seed", func, minimum=0))


def _random_options(
    func: str, layout: Any, dtype: Any, values: Any, seed: Any
) -> tuple[torch.layout, torch.dtype, ValueKind, torch.Generator]:
    """The checked options every random generator takes, in the order they are checked."""
    layout_, dtype_ = parse_layout(layout, func), _check_dtype(func, dtype)
    return layout_, dtype_, _check_values(func, values), _generator(func, seed)


def _random_values(k: int, dtype: torch.dtype, gen: torch.Generator, kind: ValueKind) -> Tensor:
    if kind == "ones":
        return torch.ones(k, dtype=dtype)
    return torch.randn(k, generator=gen, dtype=dtype)


def _sample_distinct(total: int, k: int, gen: torch.Generator) -> Tensor:
    """``k`` distinct integers drawn uniformly from ``[0, total)``, sorted, in O(k) memory.

    Draws with replacement and removes duplicates until ``k`` are found, then keeps a
    uniformly chosen ``k`` of them. The whole process is symmetric under relabelling of
    ``[0, total)``, so every ``k``-subset is equally likely. When ``k`` is at least half of
    ``total`` a permutation of all positions is itself O(k), and cheaper than rejection.
    """
    if k == 0:
        return torch.empty(0, dtype=torch.int64)
    if 2 * k >= total:
        return torch.randperm(total, generator=gen)[:k].sort().values
    found = torch.empty(0, dtype=torch.int64)
    while found.numel() < k:
        need = k - found.numel()
        # A fraction <= k/total <= 1/2 of the draws hits an already-found position.
        draws = math.ceil(1.1 * need / (1.0 - k / total)) + 16
        fresh = _uniform_below(total, draws, gen)
        found = torch.unique(torch.cat([found, fresh]))  # sorted
    if found.numel() > k:
        keep = torch.randperm(found.numel(), generator=gen)[:k]
        found = found[keep].sort().values
    return found


def _uniform_below(total: int, count: int, gen: torch.Generator) -> Tensor:
    """About ``count`` integers drawn uniformly from ``[0, total)``, with replacement.

    Up to :data:`_ONE_DRAW_MAX` exactly ``count``, from one ``torch.randint(total)``.
    Above, with :math:`2^{b-1} < \\mathrm{total} \\le 2^b`: :math:`c = \\lceil \\mathrm{count}
    \\cdot 2^b / \\mathrm{total} \\rceil` integers uniform on :math:`[0, 2^b)`, built from
    :data:`_CHUNK_BITS`-bit draws, of which those below ``total`` are kept -- each value
    with probability :math:`2^{-b}` exactly, whatever torch's ``randint`` does with large
    ranges; more than half of them are kept, ``count`` on average.

    >>> gen = torch.Generator().manual_seed(0)
    >>> x = _uniform_below(3 * 2**40, 1000, gen)
    >>> bool(x.min() >= 0 and x.max() < 3 * 2**40), 900 < x.numel() < 1100
    (True, True)
    """
    if total <= _ONE_DRAW_MAX:
        return torch.randint(total, (count,), generator=gen)
    bits = (total - 1).bit_length()
    draws = math.ceil(count * 2**bits / total)
    x = torch.zeros(draws, dtype=torch.int64)
    for start in range(0, bits, _CHUNK_BITS):  # in place: x and one chunk are all it holds
        width = min(_CHUNK_BITS, bits - start)
        x.mul_(2**width).add_(torch.randint(2**width, (draws,), generator=gen))
    return x[x < total]


def _assemble(
    indices: Tensor,
    values: Tensor,
    shape: tuple[int, int],
    layout: torch.layout,
    device: torch.device | str,
) -> Tensor:
    """Sparse tensor from ``(2, nnz)`` positions already in CSR order (sorted, distinct)."""
    if layout == torch.sparse_coo:
        # Passing the global setting explicitly validates under torch's invariant checks and
        # stays silent otherwise (an implicit choice makes torch warn on stderr).
        checks = torch.sparse.check_sparse_tensor_invariants.is_enabled()
        A = torch.sparse_coo_tensor(
            indices, values, shape, is_coalesced=True, check_invariants=checks
        )
    else:
        crow = torch._convert_indices_from_coo_to_csr(indices[0], shape[0])
        A = csr_tensor(crow, indices[1], values, shape)  # no CSR beta-state notice
    return A.to(device)


def _split_flat(flat: Tensor, m: int) -> Tensor:
    """``(2, k)`` row and column of flat row-major positions, written in place of copies."""
    indices = torch.empty(2, flat.numel(), dtype=torch.int64)
    torch.div(flat, m, rounding_mode="floor", out=indices[0])
    torch.remainder(flat, m, out=indices[1])
    return indices


# --------------------------------------------------------------------------- generators


def uniform_random(
    n: int,
    m: int,
    *,
    density: float | None = None,
    nnz: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    layout: LayoutLike = torch.sparse_coo,
    values: ValueKind = "normal",
    device: torch.device | str = "cpu",
    budget: int | None = None,
) -> Tensor:
    """An ``n x m`` matrix whose stored positions are a uniformly random set.

    Exactly one of ``density`` and ``nnz`` is given; ``density`` asks for
    :math:`\\mathrm{round}(\\rho\\, n m)` entries. The positions are distinct, so ``nnz`` is
    exact, and drawing them costs O(nnz) memory whatever ``n m`` is. They are uniform on
    every torch release, including those whose ``randint`` favours the low end of ranges
    beyond :math:`2^{28}` (see :func:`_uniform_below`).

    Parameters
    ----------
    n, m : int
        Rows and columns (>= 1).
    density : float, optional
        Fraction of the ``n m`` positions stored, in ``[0, 1]``.
    nnz : int, optional
        Number of stored entries, in ``[0, n m]``.
    seed : int, default 0
        Seeds both the positions and the values.
    dtype : torch.dtype, default torch.float32
        Floating-point or complex.
    layout : {torch.sparse_coo, torch.sparse_csr, "coo", "csr"}, default COO
    values : {"normal", "ones"}, default "normal"
        Standard normal values, or all ones (a pure pattern).
    device : torch.device or str, default "cpu"
        Where the result goes (it is drawn on the CPU, so a seed means the same everywhere).
    budget : int, optional
        A cap on the predicted peak while generating, besides what is available (see
        :func:`~sparsegrad_lab.memory_guard.check_fits`); beyond it,
        :class:`~sparsegrad_lab.errors.MemoryBudgetError` is raised before allocating.

    Returns
    -------
    Tensor
        Sparse ``(n, m)``, coalesced.

    Examples
    --------
    >>> A = uniform_random(1000, 2000, density=0.001, seed=0, layout="csr")
    >>> A.layout, A.shape, A._nnz()
    (torch.sparse_csr, torch.Size([1000, 2000]), 2000)
    """
    func = "uniform_random"
    n, m = check_int(n, "n", func, minimum=1), check_int(m, "m", func, minimum=1)
    total = n * m
    if total >= _MAX_POSITIONS:
        raise InputValueError(f"{func}: n * m must be below 2**62, got {n} x {m}")
    if (density is None) == (nnz is None):
        raise InputValueError(
            f"{func}: give exactly one of density and nnz, got density={density!r}, nnz={nnz!r}"
        )
    if density is not None:
        k = round(check_real(density, "density", func, low=0.0, high=1.0) * total)
    else:
        k = check_int(nnz, "nnz", func, minimum=0)
        if k > total:
            raise InputValueError(
                f"{func}: nnz must be at most n * m = {total} for a {n} x {m} matrix, got {k}"
            )
    layout_, dtype_, kind, gen = _random_options(func, layout, dtype, values, seed)
    _guard(func, k, (n, m), layout_, dtype_, budget)
    indices = _split_flat(_sample_distinct(total, k, gen), m)
    return _assemble(indices, _random_values(k, dtype_, gen, kind), (n, m), layout_, device)


def banded(
    n: int,
    *,
    bandwidth: int,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    layout: LayoutLike = torch.sparse_coo,
    values: ValueKind = "normal",
    device: torch.device | str = "cpu",
    budget: int | None = None,
) -> Tensor:
    """An ``n x n`` band matrix: every position with :math:`|i - j| \\le w` is stored.

    With ``w = min(bandwidth, n - 1)``,
    :math:`\\mathrm{nnz} = n (2w + 1) - w (w + 1)`. ``bandwidth=0`` is a diagonal matrix,
    ``bandwidth=1`` a tridiagonal one. Parameters as in :func:`uniform_random`.

    Examples
    --------
    >>> A = banded(5, bandwidth=1, values="ones")
    >>> A._nnz(), A.to_dense()[0].tolist()
    (13, [1.0, 1.0, 0.0, 0.0, 0.0])
    """
    func = "banded"
    n = check_int(n, "n", func, minimum=1)
    w = min(check_int(bandwidth, "bandwidth", func, minimum=0), n - 1)
    layout_, dtype_, kind, gen = _random_options(func, layout, dtype, values, seed)
    nnz = n * (2 * w + 1) - w * (w + 1)
    _guard(func, nnz, (n, n), layout_, dtype_, budget)
    # Offsets ascending within each row keep the entries in CSR order.
    offsets = torch.arange(-w, w + 1)
    row = torch.arange(n).repeat_interleave(2 * w + 1)
    col = row + offsets.repeat(n)
    inside = (col >= 0) & (col < n)
    indices = torch.stack([row[inside], col[inside]])
    return _assemble(indices, _random_values(nnz, dtype_, gen, kind), (n, n), layout_, device)


def random_block_diagonal(
    n: int,
    *,
    block_size: int,
    density: float,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    layout: LayoutLike = torch.sparse_coo,
    values: ValueKind = "normal",
    device: torch.device | str = "cpu",
    budget: int | None = None,
) -> Tensor:
    """An ``n x n`` matrix whose entries all sit in square blocks on the diagonal.

    The blocks are ``block_size x block_size`` (the last one smaller when ``block_size``
    does not divide ``n``). A uniformly random ``density`` fraction of the
    :math:`T = q s^2 + r^2` block positions (``n = q s + r``) is stored, exactly
    :math:`\\mathrm{round}(\\rho T)` entries. Parameters as in :func:`uniform_random`.

    Examples
    --------
    Not to be confused with :func:`~sparsegrad_lab.sparse_block_diag`, which places given
    matrices on the diagonal.

    >>> A = random_block_diagonal(6, block_size=4, density=1.0)
    >>> A._nnz(), A.to_dense()[4:, 4:].count_nonzero().item()
    (20, 4)
    """
    func = "random_block_diagonal"
    n = check_int(n, "n", func, minimum=1)
    size = min(check_int(block_size, "block_size", func, minimum=1), n)
    fraction = check_real(density, "density", func, low=0.0, high=1.0)
    layout_, dtype_, kind, gen = _random_options(func, layout, dtype, values, seed)
    q, r = divmod(n, size)
    full = q * size * size  # positions inside the q full blocks
    k = round(fraction * (full + r * r))
    _guard(func, k, (n, n), layout_, dtype_, budget)
    flat = _sample_distinct(full + r * r, k, gen)
    # Block-major, then row-major inside a block: since blocks own disjoint, increasing row
    # ranges, sorted flat indices are already in CSR order.
    in_full = flat < full
    side = torch.where(in_full, size, max(r, 1))
    offset = torch.where(in_full, flat, flat - full)
    start = torch.where(in_full, (offset // (size * size)) * size, q * size)
    local = torch.where(in_full, offset % (size * size), offset)
    indices = torch.stack([start + local // side, start + local % side])
    return _assemble(indices, _random_values(k, dtype_, gen, kind), (n, n), layout_, device)


def power_law_graph(
    n: int,
    *,
    avg_degree: float,
    exponent: float = 2.5,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    layout: LayoutLike = torch.sparse_coo,
    values: ValueKind = "normal",
    device: torch.device | str = "cpu",
    budget: int | None = None,
) -> Tensor:
    """Symmetric adjacency of a Chung-Lu graph with a power-law degree distribution.

    Node :math:`i` gets the weight :math:`w_i = \\int_{i+1}^{i+2} x^{-1/(\\gamma - 1)}\\,dx
    \\approx (i + 3/2)^{-1/(\\gamma - 1)}`, which makes the expected degrees follow
    :math:`P(d) \\propto d^{-\\gamma}`. Edge endpoints are drawn independently with
    probability :math:`w_i / \\sum w` (the fast Chung-Lu sampler, fully vectorised); self
    loops and repeated edges are dropped, and drawing continues until exactly
    :math:`E = \\mathrm{round}(n \\bar d / 2)` distinct edges exist, so ``nnz == 2 E``.
    Nodes are numbered by decreasing expected degree: the hubs sit in the top-left corner
    of a spy plot. The matrix is symmetric, values included (a ``"normal"`` value is drawn
    once per edge and mirrored), with an empty diagonal.

    Parameters
    ----------
    n : int
        Number of nodes (>= 2).
    avg_degree : float
        Mean degree :math:`\\bar d`, in ``[0, n - 1]``.
    exponent : float, default 2.5
        :math:`\\gamma > 1`; real networks mostly have :math:`2 < \\gamma < 3`.

    Other Parameters
    ----------------
    seed, dtype, layout, values, device, budget
        As in :func:`uniform_random`.

    Raises
    ------
    InputValueError
        If ``avg_degree`` is so close to ``n - 1`` that the skewed sampler cannot find
        ``E`` distinct edges.

    Examples
    --------
    >>> A = power_law_graph(200, avg_degree=4, seed=0)
    >>> A._nnz(), torch.equal(A.to_dense(), A.to_dense().T)
    (800, True)
    """
    func = "power_law_graph"
    n = check_int(n, "n", func, minimum=2)
    degree = check_real(avg_degree, "avg_degree", func, low=0.0, high=n - 1.0)
    gamma = check_real(exponent, "exponent", func, low=-math.inf, high=math.inf)
    if not 1.0 < gamma < math.inf:
        raise InputValueError(f"{func}: exponent must be > 1 (and finite), got {exponent}")
    layout_, dtype_, kind, gen = _random_options(func, layout, dtype, values, seed)
    edges = round(n * degree / 2)
    _guard(func, 2 * edges, (n, n), layout_, dtype_, budget)

    if edges == n * (n - 1) // 2:
        # The complete graph: every pair, which the skewed sampler would find only slowly.
        upper = torch.triu_indices(n, n, offset=1)
        found = upper[0] * n + upper[1]
    else:
        found = _chung_lu_edges(n, edges, gamma, gen)
        if found.numel() < edges:
            raise InputValueError(
                f"{func}: could not draw {edges} distinct edges for n={n}, "
                f"avg_degree={avg_degree}, exponent={exponent} (found {found.numel()}); "
                "ask for a smaller avg_degree or a larger exponent"
            )
    weight = _random_values(edges, dtype_, gen, kind)
    # Both triangles (key u n + v and its mirror v n + u); one sort puts them in CSR order.
    lo, hi = found // n, found % n
    keys, order = torch.sort(torch.cat([found, hi * n + lo]))
    del lo, hi, found
    values_ = weight.repeat(2)[order]
    return _assemble(_split_flat(keys, n), values_, (n, n), layout_, device)


def _power_law_nodes(n: int, gamma: float, count: int, gen: torch.Generator) -> Tensor:
    """``count`` nodes drawn with probability proportional to :math:`w_i`, O(1) each.

    Inverse-transform sampling of the density :math:`\\propto x^{-a}` on :math:`[1, n + 1)`,
    :math:`a = 1/(\\gamma - 1)`, then :math:`i = \\lfloor x \\rfloor - 1`: a binary search in
    a million-entry CDF is an order of magnitude slower for the same draws.
    """
    beta = 1.0 - 1.0 / (gamma - 1.0)
    span = math.log(n + 1)
    u = torch.rand(count, generator=gen, dtype=torch.float64)
    # x = (1 + u ((n+1)^beta - 1))^(1/beta), written to stay accurate for beta near 0;
    # beta = 0 (gamma = 2) is the limit x = (n+1)^u.
    log_x = torch.log1p(u * math.expm1(beta * span)) / beta if beta else u * span
    return (torch.exp(log_x).floor_().long() - 1).clamp_(0, n - 1)


def _chung_lu_edges(n: int, edges: int, gamma: float, gen: torch.Generator) -> Tensor:
    """Up to ``edges`` distinct keys ``u n + v`` (``u < v``), endpoints drawn by weight."""
    found = torch.empty(0, dtype=torch.int64)
    for attempt in range(_MAX_ROUNDS):
        if found.numel() >= edges:
            break
        need = edges - found.numel()
        # Doubling the draws each round copes with dense requests, where the last edges
        # lie between low-weight nodes; the cap keeps one round's memory at O(E).
        draws = min((2 * need + 64) << attempt, 8 * edges + 1024)
        u = _power_law_nodes(n, gamma, draws, gen)
        v = _power_law_nodes(n, gamma, draws, gen)
        lo, hi = torch.minimum(u, v), torch.maximum(u, v)
        found = torch.unique(torch.cat([found, (lo * n + hi)[lo != hi]]))
    if found.numel() > edges:
        # A uniformly chosen subset of the distinct edges found, back in sorted order.
        found = found[torch.randperm(found.numel(), generator=gen)[:edges]].sort().values
    return found


def grid_laplacian(
    rows: int,
    cols: int,
    *,
    dtype: torch.dtype = torch.float32,
    layout: LayoutLike = torch.sparse_coo,
    device: torch.device | str = "cpu",
    budget: int | None = None,
) -> Tensor:
    """The 5-point Laplacian of a ``rows x cols`` grid (Dirichlet boundary).

    Node :math:`(r, c)` is index :math:`r \\cdot \\mathrm{cols} + c`; the matrix is
    :math:`N \\times N` with :math:`N = \\mathrm{rows} \\cdot \\mathrm{cols}`, 4 on the
    diagonal and -1 for each grid neighbour,

    .. math::

        L = I_{\\mathrm{rows}} \\otimes T_{\\mathrm{cols}} + T_{\\mathrm{rows}} \\otimes
        I_{\\mathrm{cols}}, \\qquad T_k = \\mathrm{tridiag}(-1, 2, -1) \\in \\mathbb{R}^{k
        \\times k}.

    Interior rows sum to 0; a boundary node misses a neighbour per edge it touches, so its
    row sums to 1 (edge) or 2 (corner). The values are exact integers; no seed is involved.

    Examples
    --------
    >>> L = grid_laplacian(3, 3)
    >>> L.shape, L._nnz(), L.to_dense().sum(1).tolist()
    (torch.Size([9, 9]), 33, [2.0, 1.0, 2.0, 1.0, 0.0, 1.0, 2.0, 1.0, 2.0])
    """
    func = "grid_laplacian"
    rows, cols = check_int(rows, "rows", func, minimum=1), check_int(cols, "cols", func, minimum=1)
    layout_, dtype_ = parse_layout(layout, func), _check_dtype(func, dtype)
    size = rows * cols
    nnz = 5 * size - 2 * rows - 2 * cols
    _guard(func, nnz, (size, size), layout_, dtype_, budget)
    node = torch.arange(size)
    r, c = node // cols, node % cols
    # Neighbours in increasing column order (up, left, self, right, down): CSR order.
    offsets = torch.tensor([-cols, -1, 0, 1, cols])
    always = torch.ones_like(r, dtype=torch.bool)
    present = torch.stack([r > 0, c > 0, always, c < cols - 1, r < rows - 1], dim=1)
    col = (node.unsqueeze(1) + offsets)[present]
    row = node.repeat_interleave(present.sum(1))
    diagonal = (offsets == 0).expand(size, 5)[present]
    values = torch.where(diagonal, 4.0, -1.0).to(dtype_)
    return _assemble(torch.stack([row, col]), values, (size, size), layout_, device)


def _from_networkx(
    func: str,
    graph: networkx.Graph,
    weighted: bool,
    dtype: Any,
    layout: Any,
    device: torch.device | str,
) -> Tensor:
    layout_, dtype_ = parse_layout(layout, func), _check_dtype(func, dtype)
    if not isinstance(weighted, bool):
        raise InputTypeError(f"{func}: weighted must be a bool, got {type(weighted).__name__}")
    index = {node: k for k, node in enumerate(graph.nodes)}
    n = len(index)
    ends, weights = [], []
    for u, v, w in graph.edges(data="weight", default=1):
        ends.append((index[u], index[v]))
        weights.append(float(w) if weighted else 1.0)
    pairs = torch.tensor(ends, dtype=torch.int64).reshape(-1, 2)
    row, col = torch.cat([pairs[:, 0], pairs[:, 1]]), torch.cat([pairs[:, 1], pairs[:, 0]])
    values = torch.tensor(weights, dtype=torch.float64).repeat(2)
    keys, order = torch.sort(row * n + col)
    return _assemble(_split_flat(keys, n), values[order].to(dtype_), (n, n), layout_, device)


def _networkx() -> Any:
    try:
        import networkx
    except ModuleNotFoundError as error:  # the optional "lab" extra
        raise ModuleNotFoundError(
            "the real graphs need networkx: pip install 'sparsegrad-lab[lab]'"
        ) from error
    return networkx


def karate_club(
    *,
    weighted: bool = True,
    dtype: torch.dtype = torch.float32,
    layout: LayoutLike = torch.sparse_coo,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Zachary's karate club (34 members, 78 friendships) as a symmetric adjacency matrix.

    From ``networkx.karate_club_graph()``; entry ``(u, v)`` is the edge's ``weight``
    (the number of contexts the two members met in), or 1 with ``weighted=False``.

    Examples
    --------
    >>> A = karate_club()
    >>> A.shape, A._nnz()
    (torch.Size([34, 34]), 156)
    """
    graph = _networkx().karate_club_graph()
    return _from_networkx("karate_club", graph, weighted, dtype, layout, device)


def les_miserables(
    *,
    weighted: bool = True,
    dtype: torch.dtype = torch.float32,
    layout: LayoutLike = torch.sparse_coo,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Co-appearances of the 77 characters of *Les Misérables* (254 edges), symmetric.

    From ``networkx.les_miserables_graph()``, nodes in the graph's own order; entry
    ``(u, v)`` is the number of chapters both appear in, or 1 with ``weighted=False``.

    Examples
    --------
    >>> A = les_miserables()
    >>> A.shape, A._nnz()
    (torch.Size([77, 77]), 508)
    """
    graph = _networkx().les_miserables_graph()
    return _from_networkx("les_miserables", graph, weighted, dtype, layout, device)


# --------------------------------------------------------------------------- registry


class MatrixMaker(Protocol):
    """The common signature of the :data:`MATRIX_KINDS` entries.

    ``options`` are ``layout``, ``dtype`` and ``budget``, passed on to the generator.
    """

    def __call__(self, n: int, density: float, seed: int, **options: Any) -> Tensor: ...


def _uniform(n: int, density: float, seed: int, **options: Any) -> Tensor:
    return uniform_random(n, n, density=density, seed=seed, **options)


def _banded(n: int, density: float, seed: int, **options: Any) -> Tensor:
    # The smaller root w of n(2w + 1) - w(w + 1) = density n^2: the band that holds it.
    width = ((2 * n - 1) - math.sqrt(4.0 * n * n * (1.0 - density) + 1.0)) / 2
    return banded(n, bandwidth=max(0, min(n - 1, round(width))), seed=seed, **options)


_BLOCK_FILL = 0.5  # fraction of each diagonal block stored by make_matrix("block_diagonal")


def _half_full_blocks(n: int, density: float, seed: int, **options: Any) -> Tensor:
    # Half-full blocks, as many and as large as the requested overall density needs.
    size = max(1, min(n, math.ceil(density * n / _BLOCK_FILL)))
    q, r = divmod(n, size)
    fill = min(1.0, density * n * n / (q * size * size + r * r))
    return random_block_diagonal(n, block_size=size, density=fill, seed=seed, **options)


def _power_law(n: int, density: float, seed: int, **options: Any) -> Tensor:
    return power_law_graph(n, avg_degree=density * (n - 1), seed=seed, **options)


def _grid(n: int, density: float, seed: int, **options: Any) -> Tensor:
    side = math.isqrt(n)
    return grid_laplacian(side, side, **options)


def _karate(n: int, density: float, seed: int, **options: Any) -> Tensor:
    options.pop("budget", None)  # 156 entries: nothing to guard
    return karate_club(**options)


def _les_miserables(n: int, density: float, seed: int, **options: Any) -> Tensor:
    options.pop("budget", None)  # 508 entries: nothing to guard
    return les_miserables(**options)


#: Kind of matrix -> maker with the common signature ``(n, density, seed, **options)``.
#: ``n`` and ``density`` are honoured where the kind has them: the grid Laplacian is
#: ``isqrt(n)**2`` square with its own density, and the two real graphs ignore ``n``,
#: ``density`` and ``seed``. Read the shape and nnz off the result.
MATRIX_KINDS: dict[str, MatrixMaker] = {
    "uniform": _uniform,
    "banded": _banded,
    "block_diagonal": _half_full_blocks,
    "power_law": _power_law,
    "grid_laplacian": _grid,
    "karate_club": _karate,
    "les_miserables": _les_miserables,
}


def make_matrix(
    kind: str,
    n: int,
    density: float,
    seed: int = 0,
    layout: LayoutLike = torch.sparse_coo,
    *,
    dtype: torch.dtype = torch.float32,
    budget: int | None = None,
) -> Tensor:
    """A test matrix of ``kind`` at size about ``n x n`` and density about ``density``.

    The one signature widgets need. How each kind reads ``density``:

    ``"uniform"``: exactly ``round(density n^2)`` entries; ``"banded"``: the bandwidth
    whose band holds closest to ``density n^2``; ``"block_diagonal"``: half-full blocks
    sized to reach ``density``; ``"power_law"``: ``avg_degree = density (n - 1)``;
    ``"grid_laplacian"``: the ``isqrt(n) x isqrt(n)`` grid, density ignored;
    ``"karate_club"``, ``"les_miserables"``: fixed graphs, ``n``, ``density`` and ``seed``
    ignored.

    Examples
    --------
    >>> A = make_matrix("banded", 100, 0.05, seed=0, layout="csr")
    >>> A.shape, A.layout, A._nnz()
    (torch.Size([100, 100]), torch.sparse_csr, 494)
    """
    if kind not in MATRIX_KINDS:
        raise InputValueError(
            f"make_matrix: kind must be one of {sorted(MATRIX_KINDS)}, got {kind!r}"
        )
    n = check_int(n, "n", "make_matrix", minimum=2)
    check_real(density, "density", "make_matrix", low=0.0, high=1.0)
    return MATRIX_KINDS[kind](n, density, seed, layout=layout, dtype=dtype, budget=budget)
