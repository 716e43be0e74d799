"""Which kernels a call takes: each bound of :mod:`sparsegrad_lab.routes`, on both sides."""

from __future__ import annotations

import pytest
import torch

from sparsegrad_lab import sparsity_pattern
from sparsegrad_lab.pattern import pattern_of
from sparsegrad_lab.routes import (
    COO_PRODUCT_MAX_NNZ,
    SCATTER_MAX_BYTES,
    SHARED_GATHER_MAX_NNZ,
    backward_route,
    coo_product,
    coo_product_for,
    first_order_route,
)

SMALL_COO = dict(layout="coo", batched=False, device="cpu", nnz=COO_PRODUCT_MAX_NNZ, kept=False)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({}, True),
        ({"nnz": COO_PRODUCT_MAX_NNZ + 1}, False),
        ({"layout": "csr"}, False),
        ({"batched": True}, False),
        ({"device": "cuda"}, False),
        ({"kept": True}, False),
    ],
)
def test_coo_product_only_for_a_small_2d_cpu_coo_a(change: dict, expected: bool) -> None:
    assert coo_product(**{**SMALL_COO, **change}) is expected  # type: ignore[arg-type]


def test_coo_product_for_a_tensor_needs_it_coalesced() -> None:
    A = torch.sparse_coo_tensor(torch.tensor([[0, 0], [1, 1]]), torch.ones(2), (2, 2))
    assert not coo_product_for(A, kept=False)  # checked in full, coalesced, then CSR
    assert coo_product_for(A.coalesce(), kept=False)
    assert not coo_product_for(A.coalesce(), kept=True)
    assert not coo_product_for(A.coalesce().to_sparse_csr(), kept=False)


@pytest.mark.parametrize("elem", [4, 16])
def test_first_order_route_turns_at_its_bounds(elem: int) -> None:
    p = 8
    largest = SCATTER_MAX_BYTES // (p * elem)  # the most entries a scatter takes
    route = first_order_route
    few = min(largest, SHARED_GATHER_MAX_NNZ)
    assert route("sddmm", nnz=few, p=p, elem=elem, kept=False) == "shared gather"
    assert route("sddmm", nnz=few, p=p, elem=elem, kept=False, both=False) == "scatter"
    assert route("gather", nnz=few, p=p, elem=elem, kept=False) == "scatter"
    assert route("sddmm", nnz=SHARED_GATHER_MAX_NNZ + 1, p=1, elem=elem, kept=False) == "scatter"
    assert route("dense", nnz=largest, p=p, elem=elem, kept=False) == "scatter"
    assert route("dense", nnz=largest + 1, p=p, elem=elem, kept=False) == "transpose"
    assert route("sddmm", nnz=1, p=p, elem=elem, kept=True) == "transpose"  # sorts once


def test_backward_route_reads_the_pattern_and_the_grad_mode() -> None:
    A = torch.eye(4).to_sparse()
    G = torch.ones(4, 3)
    with torch.no_grad():  # a first-order backward
        assert backward_route(pattern_of(A), G, "sddmm", both=True) == "shared gather"
        assert backward_route(pattern_of(A), G, "sddmm", both=False) == "scatter"
        assert backward_route(sparsity_pattern(A), G, "sddmm", both=True) == "transpose"
    with torch.enable_grad():  # create_graph: only the transposed product differentiates
        assert backward_route(pattern_of(A), G, "sddmm", both=True) == "transpose"
