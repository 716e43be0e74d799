"""Tests of the models of the implementations the benchmark compares with
(:mod:`sparsegrad_lab.third_party`): ``torch.sparse.mm`` on COO and CSR, torchsparsegradutils.

Each model is counted by hand on a 3 x 4 ``A`` with 5 stored entries, ``p = 2``, float32
(``e = 4`` bytes per value), every term from the model's docstring; the models' agreement with
what torch allocates on larger cases is checked in ``test_memory_model.py``.
"""

from __future__ import annotations

import pytest
import torch

from sparsegrad_lab.footprint import Dims, MemoryBreakdown, Stages, peak_of
from sparsegrad_lab.third_party import torch_coo_stages, torch_csr_stages, tsgu_matmul, tsgu_stages

MODELS = {"torch_coo": torch_coo_stages, "torch_csr": torch_csr_stages, "tsgu": tsgu_stages}


def _dims(layout: str, *, idx: int = 8, cpu: bool = True, b: int = 1) -> Dims:
    """N = 3 b rows, M = 4 b, Z = 5 b entries, p = 2, float32."""
    return Dims(
        b=b,
        n=3,
        m=4,
        Z=5 * b,
        p=2,
        dtype=torch.float32,
        idx=idx,
        layout=layout,
        cpu=cpu,
        batched=b > 1,
    )


def _bytes(model: Stages) -> dict[str, int]:
    stages, _alive = model
    return {stage.stage: stage.peak_bytes for stage in stages}


def test_torch_coo_by_hand() -> None:
    # C = N p e = 24; CPU spmm writes a temporary of C's size. A.grad: values Z e = 20 and
    # indices 2 Z 8 = 80. The dense G Bᴴ is N M e = 48, sparse_mask's temporaries
    # 2 Z e + 2 Z 8 = 120. Aᵀ copies A (Z e + 16 Z = 100), its transpose temporary Z 8 = 40.
    # ∇B = M p e = 32, with its CPU temporary of the same size.
    model = torch_coo_stages(_dims("coo"))
    assert _bytes(model) == {
        "forward spmm": 24 + 24,
        "dense G Bᴴ, then mask": 24 + 48 + 120,
        "transpose": 24 + 100 + 100 + 40,
        "grad B spmm": 24 + 100 + 100 + 32 + 32,
    }
    assert model[1] == {"C": 24}  # what the forward leaves for the backward
    assert peak_of(model).stage == "grad B spmm" and peak_of(model).peak_bytes == 288
    assert peak_of(model, "bwd").peak_bytes == 288 - 24  # C existed before the backward
    # On CUDA the kernels write in place: no temporaries of C's or ∇B's size.
    cuda = _bytes(torch_coo_stages(_dims("coo", cpu=False)))
    assert cuda["forward spmm"] == 24 and cuda["grad B spmm"] == 24 + 100 + 100 + 32


def test_torch_csr_by_hand_with_int32_indices() -> None:
    # i = 4 bytes per index, so MKL reads the indices as they are (no int32 copy).
    # A.grad is int64 CSR: (N+1) 8 + Z 8 + Z e = 32 + 40 + 20 = 92; the clone of A that
    # sampled_addmm writes into: Z e + Z i + (N+1) i = 20 + 20 + 16 = 56.
    # Aᵀ to CSR: row pointers (N+1) i = 16 and COO indices 2 Z i = 40 throughout; at the sort
    # 4 Z 8 = 160 of int64 keys, values, perm, iota; at the gather 2 Z 8 = 80 of perm and iota,
    # 2 Z i + Z e = 60 gathered, 3 (M+1) i = 60 of row pointers. The CSR of Aᵀ:
    # 2 Z i + Z e + (M+1) i = 80. ∇B = 32 and its CPU temporary 32; A.grad's clone 92.
    model = torch_csr_stages(_dims("csr", idx=4))
    assert _bytes(model) == {
        "forward spmm": 24 + 24,
        "sampled_addmm": 24 + 56 + 92,
        "Aᵀ to CSR: sort": 24 + 92 + 16 + 40 + 160,
        "Aᵀ to CSR: gather": 24 + 92 + 16 + 40 + 80 + 60 + 60,
        "grad B spmm": 24 + 92 + 80 + 32 + 32,
        "A.grad accumulated": 24 + 92 + 32 + 92,
    }
    assert peak_of(model).stage == "Aᵀ to CSR: gather" and peak_of(model).peak_bytes == 372


def test_torch_csr_int64_indices_are_copied_to_int32_for_mkl() -> None:
    # int64 indices: MKL gets an int32 copy of the row pointers and columns, 4 (N+1) + 4 Z.
    fwd = _bytes(torch_csr_stages(_dims("csr", idx=8)))["forward spmm"]
    assert fwd == 24 + 24 + (4 * 4 + 4 * 5)
    assert _bytes(torch_csr_stages(_dims("csr", idx=8, cpu=False)))["forward spmm"] == 24


def test_tsgu_coo_by_hand() -> None:
    # One item: no block-diagonal copy. The gather backward: the gathered rows of G and of B
    # and their product, Z p e = 40 each, and ∇A's values Z e = 20. Then ∇B = 32 (+ 32 CPU
    # temporary) beside the sparse ∇A that copies A's indices: Z e + 16 Z = 100.
    model = tsgu_stages(_dims("coo"))
    assert _bytes(model) == {
        "block-diagonal assembly": 24,
        "forward spmm": 24 + 24,
        "gather": 24 + 3 * 40 + 20,
        "grad B spmm": 24 + 2 * 40 + 20 + 100 + 32 + 32,
    }
    assert peak_of(model).peak_bytes == 288


def test_tsgu_keeps_a_batch_as_one_block_diagonal_copy() -> None:
    # Two items: Z = 10 entries, copied into one COO block-diagonal matrix (int64 indices and
    # values, Z (16 + e) = 200) that the forward saves for the backward.
    stages, alive = tsgu_stages(_dims("coo", b=2))
    assert alive == {"C": 6 * 2 * 4, "block-diagonal copy of A": 200}
    assert stages[0].terms == {
        **alive,
        "per-item copies": 200,
        "shifted, coalesced, stacked": 48 * 10,
    }


@pytest.mark.parametrize(
    ("name", "dims"),
    [
        ("torch_coo", _dims("coo")),
        ("torch_csr", _dims("csr", idx=4)),
        ("torch_csr", _dims("csr", cpu=False)),
        ("tsgu", _dims("coo", b=2)),
        ("tsgu", _dims("csr")),
        ("tsgu", _dims("csr", b=3)),
    ],
    ids=[
        "torch_coo",
        "torch_csr-int32",
        "torch_csr-cuda",
        "tsgu-coo-b2",
        "tsgu-csr",
        "tsgu-csr-b3",
    ],
)
def test_what_the_forward_leaves_is_alive_at_every_stage(name: str, dims: Dims) -> None:
    stages, alive = MODELS[name](dims)
    assert alive and stages
    for stage in stages:
        assert isinstance(stage, MemoryBreakdown)
        assert all(stage.terms.get(term) == nbytes for term, nbytes in alive.items()), stage.stage
        assert all(nbytes >= 0 for nbytes in stage.terms.values()), stage.stage


def test_tsgu_matmul_is_torchsparsegradutils_product() -> None:
    pytest.importorskip("torchsparsegradutils")
    dense = torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, 3.0]], dtype=torch.float64)
    A = dense.to_sparse().requires_grad_()
    B = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]], dtype=torch.float64, requires_grad=True)
    C = tsgu_matmul()(A, B)
    assert torch.equal(C.detach(), torch.tensor([[4.0, 6.0], [12.0, 16.0]], dtype=torch.float64))
    C.backward(torch.ones_like(C))
    assert B.grad is not None and torch.equal(
        B.grad, dense.T @ torch.ones(2, 2, dtype=torch.float64)
    )
    assert A.grad is not None
    assert torch.equal(
        A.grad.to_dense(), (torch.ones(2, 2, dtype=torch.float64) @ B.detach().T) * (dense != 0)
    )
