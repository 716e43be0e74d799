"""Tests of the seeded pattern generators, the registry and the storage-cost helper."""

import math
import warnings

import pytest
import torch

from sparsegrad_lab.errors import InputTypeError, InputValueError, MemoryBudgetError
from sparsegrad_lab.patterns import (
    DEFAULT_MAX_BYTES,
    PATTERNS,
    banded,
    block_diagonal,
    grid_laplacian,
    karate_club,
    les_miserables,
    make_pattern,
    power_law_graph,
    storage_bytes,
    uniform_random,
)

# One small call per generator, for the properties every generator must have.
GENERATORS = {
    "uniform_random": lambda **kw: uniform_random(17, 23, nnz=40, **kw),
    "banded": lambda **kw: banded(19, bandwidth=3, **kw),
    "block_diagonal": lambda **kw: block_diagonal(22, block_size=5, density=0.6, **kw),
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
        ({"max_bytes": -1}, InputValueError, "max_bytes"),
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
    with pytest.raises(MemoryBudgetError, match=r"above max_bytes=1\.00 GiB") as caught:
        uniform_random(10**6, 10**6, nnz=2 * 10**8)  # 4 GB of COO: refused, not attempted
    assert caught.value.needed_bytes == 4 * 2 * 10**8 * (8 + 8 + 4)  # peak: 4x the storage
    assert caught.value.budget_bytes == DEFAULT_MAX_BYTES == 2**30
    assert isinstance(caught.value, MemoryError)


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
    A = uniform_random(5, 9, max_bytes=needed, **make)  # exactly at the budget: allowed
    assert A._nnz() == 10
    with pytest.raises(MemoryBudgetError) as caught:
        uniform_random(5, 9, max_bytes=needed - 1, **make)
    assert caught.value.needed_bytes == needed


@pytest.mark.parametrize(
    "call",
    [
        lambda: banded(10**7, bandwidth=50),
        lambda: block_diagonal(10**7, block_size=1000, density=0.5),
        lambda: power_law_graph(10**8, avg_degree=10),
        lambda: grid_laplacian(10**5, 10**5),
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


# --------------------------------------------------------------------------- block_diagonal


@pytest.mark.parametrize(("n", "size"), [(12, 4), (14, 4), (5, 9), (7, 1)])
def test_block_diagonal_full_blocks_match_torch_block_diag(n, size):
    A = block_diagonal(n, block_size=size, density=1.0, seed=0)
    sizes = [size] * (n // size) + ([n % size] if n % size else [])
    sizes = [min(s, n) for s in sizes]
    reference = torch.block_diag(*[torch.ones(s, s, dtype=torch.bool) for s in sizes])
    assert torch.equal(stored_mask(A), reference)


def test_block_diagonal_partial_fill_stays_inside_blocks_with_exact_count():
    n, size, density = 23, 5, 0.37  # four 5x5 blocks and a 3x3 one: 109 positions
    A = block_diagonal(n, block_size=size, density=density, seed=4)
    blocks = torch.block_diag(*[torch.ones(s, s) for s in (5, 5, 5, 5, 3)]).bool()
    mask = stored_mask(A)
    assert not (mask & ~blocks).any()
    assert A._nnz() == round(density * 109) == 40
    assert mask[20:, 20:].any()  # the short last block is reachable


def test_block_diagonal_errors():
    with pytest.raises(InputValueError, match="block_size must be >= 1"):
        block_diagonal(5, block_size=0, density=0.5)
    with pytest.raises(InputValueError, match="density must lie"):
        block_diagonal(5, block_size=2, density=-0.1)


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


def test_registry_names():
    assert set(PATTERNS) == {
        "uniform",
        "banded",
        "block_diagonal",
        "power_law",
        "grid_laplacian",
        "karate_club",
        "les_miserables",
    }


@pytest.mark.parametrize("name", sorted(PATTERNS))
@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_make_pattern_gives_square_matrices_in_the_layout_asked(name, layout):
    A = make_pattern(name, 64, 0.05, seed=2, layout=layout)
    assert A.layout == {"coo": torch.sparse_coo, "csr": torch.sparse_csr}[layout]
    assert A.dim() == 2
    assert A.shape[0] == A.shape[1]
    again = make_pattern(name, 64, 0.05, seed=2, layout=layout)
    assert torch.equal(A.to_dense(), again.to_dense())


@pytest.mark.parametrize("name", ["uniform", "banded", "block_diagonal", "power_law"])
@pytest.mark.parametrize("density", [0.0, 0.02, 0.3, 1.0])
def test_make_pattern_honours_density(name, density):
    n = 120
    A = make_pattern(name, n, density, seed=0)
    assert A.shape == (n, n)
    # Structure rounds the count: a band or a block holds whole diagonals or blocks.
    assert A._nnz() / n**2 == pytest.approx(density, abs=0.012)


def test_make_pattern_fixed_shapes():
    assert make_pattern("grid_laplacian", 50, 0.5).shape == (49, 49)
    assert make_pattern("karate_club", 500, 0.5).shape == (34, 34)
    assert make_pattern("les_miserables", 5, 0.5).shape == (77, 77)


def test_make_pattern_passes_the_budget_on():
    with pytest.raises(MemoryBudgetError):
        make_pattern("uniform", 1000, 0.5, max_bytes=1000)


@pytest.mark.parametrize(
    ("args", "error", "words"),
    [
        (("spiral", 10, 0.1), InputValueError, "name must be one of .*'banded'.*got 'spiral'"),
        (("uniform", 1, 0.1), InputValueError, "n must be >= 2"),
        (("banded", 10, 2.0), InputValueError, "density must lie in"),
        (("uniform", 10, 0.1, 0, "dense"), InputValueError, "layout"),
    ],
)
def test_make_pattern_errors(args, error, words):
    with pytest.raises(error, match=words):
        make_pattern(*args)


# --------------------------------------------------------------------------- storage_bytes


def test_storage_bytes_hand_example():
    # 3 x 4 float32 with 5 entries: COO 5 (2*8 + 4), CSR 4*8 + 5 (8 + 4), dense 12 * 4.
    A = torch.tensor([[1.0, 0, 2, 0], [0, 0, 0, 3], [4, 5, 0, 0]])
    expected = {"coo": 100, "csr": 92, "dense": 48}
    assert storage_bytes(A) == expected
    assert storage_bytes(A.to_sparse()) == expected
    assert storage_bytes(A.to_sparse_csr()) == expected
    assert storage_bytes(A.to_sparse(), index_dtype=torch.int32) == {
        "coo": 60,
        "csr": 56,
        "dense": 48,
    }


def test_storage_bytes_counts_distinct_positions_of_uncoalesced_coo():
    A = torch.sparse_coo_tensor(torch.tensor([[0, 0], [1, 1]]), torch.ones(2), (2, 2))
    assert storage_bytes(A)["coo"] == 1 * (16 + 4)


def test_storage_bytes_batched():
    A = torch.stack([torch.eye(3, dtype=torch.float64)] * 2)  # b=2, 6 entries
    expected = {"coo": 6 * (3 * 8 + 8), "csr": 2 * 4 * 8 + 6 * 16, "dense": 18 * 8}
    assert storage_bytes(A.to_sparse()) == expected
    assert storage_bytes(A.to_sparse_csr()) == expected


def test_storage_bytes_agrees_with_the_real_arrays():
    A = uniform_random(40, 50, nnz=123, seed=0, dtype=torch.float64)
    csr = A.to_sparse_csr()
    real_coo = sum(t.numel() * t.element_size() for t in (A.indices(), A.values()))
    parts = (csr.crow_indices(), csr.col_indices(), csr.values())
    real_csr = sum(t.numel() * t.element_size() for t in parts)
    assert storage_bytes(A) == {"coo": real_coo, "csr": real_csr, "dense": 40 * 50 * 8}


@pytest.mark.parametrize(
    ("A", "kwargs", "error", "words"),
    [
        ([[1.0]], {}, InputTypeError, "A must be a torch.Tensor, got list"),
        (torch.ones(3), {}, InputValueError, "2-D"),
        (torch.eye(2), {"index_dtype": torch.int16}, InputTypeError, "index_dtype"),
    ],
)
def test_storage_bytes_errors(A, kwargs, error, words):
    with pytest.raises(error, match=words):
        storage_bytes(A, **kwargs)
