"""Tests of the seeded test-matrix generators and their registry, MATRIX_KINDS."""

import math
import warnings

import pytest
import torch

from sparsegrad_lab import example_matrices, memory_guard
from sparsegrad_lab.errors import InputTypeError, InputValueError, MemoryBudgetError
from sparsegrad_lab.example_matrices import (
    MATRIX_KINDS,
    banded,
    grid_laplacian,
    karate_club,
    les_miserables,
    make_matrix,
    power_law_graph,
    random_block_diagonal,
    uniform_random,
)

# One small call per generator, for the properties every generator must have.
GENERATORS = {
    "uniform_random": lambda **kw: uniform_random(17, 23, nnz=40, **kw),
    "banded": lambda **kw: banded(19, bandwidth=3, **kw),
    "random_block_diagonal": lambda **kw: random_block_diagonal(
        22, block_size=5, density=0.6, **kw
    ),
    "power_law_graph": lambda **kw: power_law_graph(50, avg_degree=4, **kw),
}
DETERMINISTIC = {
    "grid_laplacian": lambda **kw: grid_laplacian(4, 5, **kw),
    "karate_club": lambda **kw: karate_club(**kw),
    "les_miserables": lambda **kw: les_miserables(**kw),
}
ALL = {**GENERATORS, **DETERMINISTIC}


def assert_canonical_coo(A: torch.Tensor) -> None:
    """Coalesced flag set, and the indices really are row-major sorted and distinct."""
    assert A.layout == torch.sparse_coo
    assert A.is_coalesced()
    rows, cols = A.indices()
    keys = rows * A.shape[1] + cols
    assert torch.all(keys[1:] > keys[:-1]), "indices not strictly increasing in row-major order"
    assert torch.equal(A.indices(), A.coalesce().indices())


def stored_mask(A: torch.Tensor) -> torch.Tensor:
    mask = torch.zeros(A.shape, dtype=torch.bool)
    if A.layout == torch.sparse_csr:
        A = A.to_sparse_coo()
    mask[tuple(A.indices())] = True
    return mask


# --------------------------------------------------------------------------- common properties


@pytest.mark.parametrize("name", sorted(ALL))
def test_every_generator_returns_canonical_coo_by_default(name):
    A = ALL[name]()
    assert_canonical_coo(A)
    assert A.dtype == torch.float32


@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize("layout", [torch.sparse_csr, "csr"])
def test_csr_layout_holds_the_same_matrix_as_coo(name, layout):
    kw = {"seed": 3} if name in GENERATORS else {}
    coo = ALL[name](**kw)
    csr = ALL[name](layout=layout, **kw)
    assert csr.layout == torch.sparse_csr
    assert csr.crow_indices().dtype == torch.int64
    assert csr._nnz() == coo._nnz()
    assert torch.equal(csr.to_dense(), coo.to_dense())


@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex64])
def test_dtype_argument(name, dtype):
    A = ALL[name](dtype=dtype)
    assert A.dtype == dtype
    assert A.values().dtype == dtype


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_same_seed_same_matrix_other_seed_other_values(name):
    first, again, other = (GENERATORS[name](seed=s) for s in (5, 5, 6))
    assert torch.equal(first.indices(), again.indices())
    assert torch.equal(first.values(), again.values())
    assert not torch.equal(first.values(), other.values())


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_values_ones_gives_a_pure_pattern(name):
    A = GENERATORS[name](values="ones")
    assert torch.equal(A.values(), torch.ones(A._nnz()))


@pytest.mark.parametrize("name", sorted(ALL))
def test_no_warning_outside_torch_invariant_checks(name):
    # A notebook runs without invariant checks; nbval compares stderr, so nothing may warn.
    with torch.sparse.check_sparse_tensor_invariants(enable=False), warnings.catch_warnings():
        warnings.simplefilter("error")
        ALL[name]()
        ALL[name](layout="csr")


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"layout": torch.strided}, InputValueError, "layout"),
        ({"layout": "bsr"}, InputValueError, "layout"),
        ({"dtype": torch.int64}, InputTypeError, "dtype"),
        ({"dtype": "float32"}, InputTypeError, "dtype"),
    ],
)
@pytest.mark.parametrize("name", sorted(ALL))
def test_layout_and_dtype_errors_name_the_argument(name, kwargs, error, words):
    with pytest.raises(error, match=words):
        ALL[name](**kwargs)


@pytest.mark.parametrize("name", sorted(GENERATORS))
@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"seed": -1}, InputValueError, "seed must be >= 0, got -1"),
        ({"seed": 1.5}, InputTypeError, "seed must be an int, got float"),
        ({"values": "uniform"}, InputValueError, "values must be 'normal' or 'ones'"),
        ({"budget": -1}, InputValueError, "budget must be >= 0"),
    ],
)
def test_seed_values_and_budget_errors(name, kwargs, error, words):
    with pytest.raises(error, match=words):
        GENERATORS[name](**kwargs)


# --------------------------------------------------------------------------- uniform_random


@pytest.mark.parametrize(("n", "m", "nnz"), [(1, 1, 0), (1, 1, 1), (7, 3, 21), (30, 40, 600)])
def test_uniform_random_nnz_is_exact_even_when_dense(n, m, nnz):
    A = uniform_random(n, m, nnz=nnz, seed=1)
    assert A.shape == (n, m)
    assert A._nnz() == nnz
    assert_canonical_coo(A)


def test_uniform_random_density_rounds_to_an_exact_count():
    A = uniform_random(100, 30, density=0.0123, seed=0)
    assert A._nnz() == round(0.0123 * 3000) == 37


def test_uniform_random_never_allocates_n_times_m():
    # 10^12 positions: an n x m allocation (mask, dense, permutation) would fail outright.
    A = uniform_random(10**6, 10**6, nnz=20_000, seed=0)
    assert A._nnz() == 20_000
    assert_canonical_coo(A)
    assert int(A.indices().max()) > 10**5  # positions spread over the whole range


@pytest.mark.parametrize(("side", "nnz"), [(10, 20), (6, 24)])
def test_uniform_random_picks_every_position_equally_often(side, nnz):
    # Rejection regime (under half full) and permutation regime (2/3 full): each position
    # must be chosen with probability nnz / side^2 over many seeds.
    draws = 150
    counts = torch.zeros(side, side)
    # torch's invariant check runs a parallel kernel per tensor, which costs milliseconds on
    # a busy 2-core machine; the other tests validate the same code path.
    with torch.sparse.check_sparse_tensor_invariants(enable=False):
        for seed in range(draws):
            A = uniform_random(side, side, nnz=nnz, seed=seed, values="ones")
            counts += stored_mask(A)
    p = nnz / side**2
    assert (counts / draws - p).abs().max() < 5 * math.sqrt(p * (1 - p) / draws)


@pytest.mark.parametrize(("n", "nnz"), [(1000, 20_000), (300, 60_000)])
def test_uniform_random_spreads_entries_over_all_rows_and_columns(n, nnz):
    # A trim that kept the smallest flat positions would fill the top rows first.
    A = uniform_random(n, n, nnz=nnz, seed=0)
    expected = nnz / n
    for dim in (0, 1):
        counts = torch.bincount(A.indices()[dim], minlength=n).double()
        assert (counts - expected).abs().max() < 6 * math.sqrt(expected)


# torch's CPU randint reduces a raw draw modulo the range: in torch 2.4 a 32-bit word for any
# range below 2**32, so that at 50_000 x 50_000 positions (lesson 01) 58 % of the draws fell
# in the lower half, and at 1.7e9 positions (below 2**31) 60 %. Later releases take a 64-bit
# word from 2**28 on. A generator must not depend on either: every range it asks randint for
# stays below 2**28, where each torch reduces one 32-bit word, exactly for a power of two.
LARGE_DRAWS = {
    "uniform 50_000 x 50_000 (lesson 01)": lambda: uniform_random(50_000, 50_000, nnz=20_000),
    "uniform 1.7e9 positions": lambda: uniform_random(40_000, 42_950, nnz=20_000),
    "uniform 20_000 x 20_000 (lesson 03)": lambda: uniform_random(20_000, 20_000, nnz=2_000),
    "uniform, one row of 3 * 2**31": lambda: uniform_random(1, 3 * 2**31, nnz=1_000),
    "uniform 2**61 positions": lambda: uniform_random(2**30, 2**31, nnz=1_000),
    "block diagonal, 10**11 positions": lambda: random_block_diagonal(
        10**6, block_size=10**5, density=1e-7
    ),
    "power law, 10**5 nodes": lambda: power_law_graph(10**5, avg_degree=0.2),
}


REAL_RANDINT = torch.randint


def emulated_torch_2_4_randint(*args, generator=None, **kwargs):
    """torch 2.4's CPU randint: a uniform 32-bit word modulo a range below 2**32."""
    high, size = args if len(args) == 2 else (args[1] - args[0], args[2])
    assert len(args) == 2 or args[0] == 0, "only randint(high, size) is emulated"
    if high >= 2**32:
        return REAL_RANDINT(high, size, generator=generator, **kwargs)
    return REAL_RANDINT(2**32, size, generator=generator, **kwargs) % high


@pytest.mark.parametrize("name", list(LARGE_DRAWS))
def test_no_randint_range_reaches_2_to_the_28(name, monkeypatch):
    ranges = []

    def recording_randint(*args, **kwargs):
        ranges.append(args[0] if len(args) == 2 else args[1] - args[0])
        return REAL_RANDINT(*args, **kwargs)

    monkeypatch.setattr(torch, "randint", recording_randint)
    with torch.sparse.check_sparse_tensor_invariants(enable=False):
        LARGE_DRAWS[name]()
    assert max(ranges, default=0) < 2**28, f"randint ranges up to {max(ranges)}"
    assert max(ranges, default=0) <= 2**31  # the bound the issue named, implied


@pytest.mark.parametrize("randint", ["torch", "torch-2.4-like"])
@pytest.mark.parametrize(("n", "m"), [(50_000, 50_000), (40_000, 42_950), (7, 10**9)])
def test_uniform_random_rows_and_columns_are_uniform_beyond_2_to_the_28(randint, n, m, monkeypatch):
    # On torch 2.4 the lesson-02 draw used to put 58 % of the entries in the first half of
    # the rows. Ten bins per axis with 20_000 entries: 2_000 expected per bin (sd 42), so
    # 10 % off is about five standard deviations; the seed is fixed, the counts deterministic.
    if randint == "torch-2.4-like":
        monkeypatch.setattr(torch, "randint", emulated_torch_2_4_randint)
    nnz = 20_000
    A = uniform_random(n, m, nnz=nnz, seed=0, values="ones")
    assert A._nnz() == nnz
    assert_canonical_coo(A)
    for axis, size in ((0, n), (1, m)):
        bins = min(10, size)  # 7 rows: a bin per row
        counts = torch.bincount(A.indices()[axis] * bins // size, minlength=bins).double()
        assert (counts / (nnz / bins) - 1).abs().max() < 0.1, (axis, counts.tolist())


def test_chunked_draw_is_exactly_uniform_even_with_a_biased_randint(monkeypatch):
    # The construction beyond one randint, shrunk to see every value: 11 values from
    # 2-bit chunks (16 candidates, 11 kept). A randint that reduces modulo its range is
    # exact for the power-of-two ranges used, so even emulated torch 2.4 gives uniform counts.
    monkeypatch.setattr(example_matrices, "_ONE_DRAW_MAX", 1)
    monkeypatch.setattr(example_matrices, "_CHUNK_BITS", 2)
    monkeypatch.setattr(torch, "randint", emulated_torch_2_4_randint)
    gen = torch.Generator().manual_seed(0)
    x = example_matrices._uniform_below(11, 110_000, gen)
    assert 100_000 < x.numel() < 120_000  # about the count asked for
    counts = torch.bincount(x, minlength=11).double()
    assert counts.numel() == 11  # nothing at or above 11
    assert (counts / (x.numel() / 11) - 1).abs().max() < 0.06  # 6 sd of a count of 10_000


@pytest.mark.parametrize(
    ("n", "m", "nnz", "seed", "flat_sum", "first"),
    [
        (10_000, 10_000, 100_000, 0, 4997369403200, [205, 377, 1636]),  # lesson 00
        (4_000, 4_000, 40_000, 0, 320776258525, [192, 532, 1261]),  # lesson 03
        (16_000, 16_000, 1_000, 5, 127849978480, [79754, 656054, 931982]),  # just below 2**28
    ],
)
def test_draws_within_one_randint_are_unchanged(n, m, nnz, seed, flat_sum, first):
    # Up to 2**28 positions one randint draws them, as before the large-range fix: the
    # lessons' matrices (and their committed outputs) stay what they were.
    A = uniform_random(n, m, nnz=nnz, seed=seed)
    flat = A.indices()[0] * m + A.indices()[1]
    assert int(flat.sum()) == flat_sum
    assert flat[:3].tolist() == first


def test_large_draws_are_deterministic_per_seed():
    first, again, other = (uniform_random(50_000, 50_000, nnz=1_000, seed=s) for s in (3, 3, 4))
    assert torch.equal(first.indices(), again.indices())
    assert torch.equal(first.values(), again.values())
    assert not torch.equal(first.indices(), other.indices())


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({}, InputValueError, "exactly one of density and nnz"),
        ({"density": 0.1, "nnz": 3}, InputValueError, "exactly one of density and nnz"),
        ({"nnz": 13}, InputValueError, r"nnz must be at most n \* m = 12"),
        ({"nnz": -1}, InputValueError, "nnz must be >= 0"),
        ({"density": 1.5}, InputValueError, r"density must lie in \[0.0, 1.0\], got 1.5"),
        ({"density": float("nan")}, InputValueError, "density"),
        ({"density": "0.1"}, InputTypeError, "density must be a real number, got str"),
    ],
)
def test_uniform_random_argument_errors(kwargs, error, words):
    with pytest.raises(error, match=words):
        uniform_random(3, 4, **kwargs)


@pytest.mark.parametrize(
    ("n", "m", "error", "words"),
    [
        (0, 4, InputValueError, "n must be >= 1, got 0"),
        (3, 2.0, InputTypeError, "m must be an int, got float"),
        (True, 4, InputTypeError, "n must be an int, got bool"),
        (2**31, 2**31, InputValueError, "below 2\\*\\*62"),
    ],
)
def test_uniform_random_shape_errors(n, m, error, words):
    with pytest.raises(error, match=words):
        uniform_random(n, m, nnz=1)


# --------------------------------------------------------------------------- memory guard


def test_guard_refuses_before_allocating_with_the_predicted_bytes():
    with pytest.raises(MemoryBudgetError, match="above what is available on cpu") as caught:
        uniform_random(10**7, 10**7, nnz=2 * 10**11)  # 4 TB of COO: refused, not attempted
    assert caught.value.needed_bytes == 4 * 2 * 10**11 * (8 + 8 + 4)  # peak: 4x the storage
    assert "uniform_random: a 10000000 x 10000000 torch.sparse_coo matrix" in str(caught.value)
    assert isinstance(caught.value, MemoryError)


def test_guard_limit_is_what_is_available_unless_a_budget_is_smaller(monkeypatch):
    needed = 4 * 10 * (16 + 4)  # 10 float32 COO entries, four times over while generating
    monkeypatch.setattr(memory_guard, "available_bytes", lambda device="cpu": needed)
    assert uniform_random(5, 9, nnz=10)._nnz() == 10
    with pytest.raises(MemoryBudgetError, match="available") as caught:
        uniform_random(5, 9, nnz=11)
    assert caught.value.budget_bytes == needed
    with pytest.raises(MemoryBudgetError, match="the budget of") as caught:
        uniform_random(5, 9, nnz=10, budget=needed - 1)
    assert caught.value.budget_bytes == needed - 1


@pytest.mark.parametrize(
    ("layout", "dtype", "needed"),
    [
        (torch.sparse_coo, torch.float32, 10 * (16 + 4)),
        (torch.sparse_coo, torch.complex128, 10 * (16 + 16)),
        (torch.sparse_csr, torch.float64, 6 * 8 + 10 * (8 + 8)),
    ],
)
def test_guard_threshold_is_the_generation_peak(layout, dtype, needed):
    needed *= 4  # generating peaks at about four times the result's storage
    make = dict(nnz=10, layout=layout, dtype=dtype)
    A = uniform_random(5, 9, budget=needed, **make)  # exactly at the budget: allowed
    assert A._nnz() == 10
    with pytest.raises(MemoryBudgetError) as caught:
        uniform_random(5, 9, budget=needed - 1, **make)
    assert caught.value.needed_bytes == needed


@pytest.mark.parametrize(
    "call",
    [
        lambda: banded(10**10, bandwidth=50),
        lambda: random_block_diagonal(10**10, block_size=1000, density=0.5),
        lambda: power_law_graph(10**11, avg_degree=10),
        lambda: grid_laplacian(10**6, 10**6),
    ],
)
def test_guard_protects_every_sized_generator(call):
    with pytest.raises(MemoryBudgetError):
        call()


# --------------------------------------------------------------------------- banded


@pytest.mark.parametrize(("n", "w"), [(1, 0), (6, 0), (9, 2), (5, 4), (5, 10)])
def test_banded_matches_the_band_mask(n, w):
    A = banded(n, bandwidth=w, seed=2)
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    assert torch.equal(stored_mask(A), (i - j).abs() <= w)
    wf = min(w, n - 1)
    assert A._nnz() == n * (2 * wf + 1) - wf * (wf + 1)


def test_banded_rejects_negative_bandwidth():
    with pytest.raises(InputValueError, match="bandwidth must be >= 0, got -1"):
        banded(5, bandwidth=-1)


# --------------------------------------------------------------------------- random_block_diagonal


@pytest.mark.parametrize(("n", "size"), [(12, 4), (14, 4), (5, 9), (7, 1)])
def test_random_block_diagonal_full_blocks_match_torch_block_diag(n, size):
    A = random_block_diagonal(n, block_size=size, density=1.0, seed=0)
    sizes = [size] * (n // size) + ([n % size] if n % size else [])
    sizes = [min(s, n) for s in sizes]
    reference = torch.block_diag(*[torch.ones(s, s, dtype=torch.bool) for s in sizes])
    assert torch.equal(stored_mask(A), reference)


def test_random_block_diagonal_partial_fill_stays_inside_blocks_with_exact_count():
    n, size, density = 23, 5, 0.37  # four 5x5 blocks and a 3x3 one: 109 positions
    A = random_block_diagonal(n, block_size=size, density=density, seed=4)
    blocks = torch.block_diag(*[torch.ones(s, s) for s in (5, 5, 5, 5, 3)]).bool()
    mask = stored_mask(A)
    assert not (mask & ~blocks).any()
    assert A._nnz() == round(density * 109) == 40
    assert mask[20:, 20:].any()  # the short last block is reachable


def test_random_block_diagonal_errors():
    with pytest.raises(InputValueError, match="block_size must be >= 1"):
        random_block_diagonal(5, block_size=0, density=0.5)
    with pytest.raises(InputValueError, match="density must lie"):
        random_block_diagonal(5, block_size=2, density=-0.1)


# --------------------------------------------------------------------------- power_law_graph


@pytest.mark.parametrize(("n", "degree", "gamma"), [(60, 3.0, 2.5), (200, 7.5, 2.1), (30, 29, 3)])
def test_power_law_graph_is_symmetric_loopless_with_exact_edge_count(n, degree, gamma):
    A = power_law_graph(n, avg_degree=degree, exponent=gamma, seed=1)
    dense = A.to_dense()
    assert torch.equal(dense, dense.T)  # values mirrored too
    assert not stored_mask(A).diagonal().any()
    assert A._nnz() == 2 * round(n * degree / 2)
    assert_canonical_coo(A)


def test_power_law_graph_degrees_are_skewed_towards_low_indices():
    A = power_law_graph(2000, avg_degree=10, exponent=2.5, seed=0)
    degree = stored_mask(A).sum(1).double()
    assert degree.mean() == pytest.approx(10.0)
    # Expected degree ~ (i + 3/2)^(-2/3): the first 20 nodes average ~40x the last 1000.
    assert degree[:20].mean() > 10 * degree[1000:].mean()
    assert degree.max() > 8 * degree.median()


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"n": 1, "avg_degree": 0}, InputValueError, "n must be >= 2"),
        ({"n": 10, "avg_degree": 9.5}, InputValueError, r"avg_degree must lie in \[0.0, 9.0\]"),
        ({"n": 10, "avg_degree": 2, "exponent": 1.0}, InputValueError, "exponent must be > 1"),
        ({"n": 10, "avg_degree": 2, "exponent": math.inf}, InputValueError, "exponent"),
    ],
)
def test_power_law_graph_errors(kwargs, error, words):
    with pytest.raises(error, match=words):
        power_law_graph(**kwargs)


# --------------------------------------------------------------------------- grid_laplacian


def dense_laplacian(rows: int, cols: int) -> torch.Tensor:
    """I ⊗ T_cols + T_rows ⊗ I, with T = tridiag(-1, 2, -1): built without index tricks."""

    def second_difference(k: int) -> torch.Tensor:
        off = torch.ones(k - 1, dtype=torch.float64)
        return 2 * torch.eye(k, dtype=torch.float64) - torch.diag(off, 1) - torch.diag(off, -1)

    eye_r, eye_c = torch.eye(rows, dtype=torch.float64), torch.eye(cols, dtype=torch.float64)
    return torch.kron(eye_r, second_difference(cols)) + torch.kron(second_difference(rows), eye_c)


@pytest.mark.parametrize(("rows", "cols"), [(1, 1), (1, 5), (4, 1), (3, 3), (4, 7)])
def test_grid_laplacian_matches_the_kronecker_reference(rows, cols):
    L = grid_laplacian(rows, cols, dtype=torch.float64)
    assert L.shape == (rows * cols, rows * cols)
    assert torch.equal(L.to_dense(), dense_laplacian(rows, cols))
    assert L._nnz() == 5 * rows * cols - 2 * rows - 2 * cols
    assert set(L.values().tolist()) <= {4.0, -1.0}


def test_grid_laplacian_row_sums_vanish_inside_and_count_missing_neighbours_on_the_edge():
    rows, cols = 5, 6
    sums = grid_laplacian(rows, cols).to_dense().sum(1).reshape(rows, cols)
    assert torch.equal(sums[1:-1, 1:-1], torch.zeros(rows - 2, cols - 2))
    assert torch.equal(sums[0, 1:-1], torch.ones(cols - 2))
    assert torch.equal(sums[1:-1, 0], torch.ones(rows - 2))
    assert sums[0, 0] == sums[-1, -1] == 2.0


# --------------------------------------------------------------------------- real graphs


@pytest.mark.parametrize(
    ("make", "graph_name", "nodes", "edges"),
    [(karate_club, "karate_club_graph", 34, 78), (les_miserables, "les_miserables_graph", 77, 254)],
)
@pytest.mark.parametrize("weighted", [True, False])
def test_real_graphs_match_networkx_adjacency(make, graph_name, nodes, edges, weighted):
    nx = pytest.importorskip("networkx")
    graph = getattr(nx, graph_name)()
    reference = torch.tensor(nx.to_numpy_array(graph, weight="weight" if weighted else None))
    A = make(weighted=weighted, dtype=torch.float64)
    assert A.shape == (nodes, nodes)
    assert A._nnz() == 2 * edges
    assert torch.equal(A.to_dense(), reference)
    if weighted:
        assert A.values().max() > 1  # weights, not just the pattern


def test_real_graph_weighted_must_be_bool():
    with pytest.raises(InputTypeError, match="weighted must be a bool"):
        karate_club(weighted="yes")


# --------------------------------------------------------------------------- registry


def test_matrix_kinds():
    assert set(MATRIX_KINDS) == {
        "uniform",
        "banded",
        "block_diagonal",
        "power_law",
        "grid_laplacian",
        "karate_club",
        "les_miserables",
    }


@pytest.mark.parametrize("name", sorted(MATRIX_KINDS))
@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_make_matrix_gives_square_matrices_in_the_layout_asked(name, layout):
    A = make_matrix(name, 64, 0.05, seed=2, layout=layout)
    assert A.layout == {"coo": torch.sparse_coo, "csr": torch.sparse_csr}[layout]
    assert A.dim() == 2
    assert A.shape[0] == A.shape[1]
    again = make_matrix(name, 64, 0.05, seed=2, layout=layout)
    assert torch.equal(A.to_dense(), again.to_dense())


@pytest.mark.parametrize("name", ["uniform", "banded", "block_diagonal", "power_law"])
@pytest.mark.parametrize("density", [0.0, 0.02, 0.3, 1.0])
def test_make_matrix_honours_density(name, density):
    n = 120
    A = make_matrix(name, n, density, seed=0)
    assert A.shape == (n, n)
    # Structure rounds the count: a band or a block holds whole diagonals or blocks.
    assert A._nnz() / n**2 == pytest.approx(density, abs=0.012)


def test_make_matrix_fixed_shapes():
    assert make_matrix("grid_laplacian", 50, 0.5).shape == (49, 49)
    assert make_matrix("karate_club", 500, 0.5).shape == (34, 34)
    assert make_matrix("les_miserables", 5, 0.5).shape == (77, 77)


def test_make_matrix_passes_the_budget_on():
    with pytest.raises(MemoryBudgetError, match="the budget of 1000 B"):
        make_matrix("uniform", 1000, 0.5, budget=1000)


@pytest.mark.parametrize(
    ("args", "error", "words"),
    [
        (("spiral", 10, 0.1), InputValueError, "kind must be one of .*'banded'.*got 'spiral'"),
        (("uniform", 1, 0.1), InputValueError, "n must be >= 2"),
        (("banded", 10, 2.0), InputValueError, "density must lie in"),
        (("uniform", 10, 0.1, 0, "dense"), InputValueError, "layout"),
    ],
)
def test_make_matrix_errors(args, error, words):
    with pytest.raises(error, match=words):
        make_matrix(*args)
