"""Tests of :func:`sparsegrad_lab.allocations.largest_allocations`.

The sizes make the dense form dominate: ``n = m = 2000`` float32 is 16 MB, while the
operands of the product (``n x p`` with ``p = 8``) are 64 KB and the stored entries a few
KB, so a flag (or its absence) is decided by orders of magnitude, never by a margin.
"""

from __future__ import annotations

import pytest
import torch
from testing import CUDA_DEVICE_PARAMS, DEVICE_PARAMS
from torch import Tensor

import sparsegrad_lab as sgl
from sparsegrad_lab import InputTypeError, InputValueError
from sparsegrad_lab.allocations import Allocation, largest_allocations

N = M = 2000
P = 8
NNZ = 400
DENSE_BYTES = N * M * 4  # the dense form of A, float32


def _parts(device: torch.device | str = "cpu") -> tuple[Tensor, Tensor, Tensor]:
    """Row pointers, column indices and float32 values of a random ``N x M`` pattern."""
    g = torch.Generator().manual_seed(0)
    flat = torch.randperm(N * M, generator=g)[:NNZ].sort().values
    rows, cols = flat // M, flat % M
    crow = torch.zeros(N + 1, dtype=torch.int64)
    crow[1:] = torch.bincount(rows, minlength=N).cumsum(0)
    values = torch.randn(NNZ, generator=g)
    return crow.to(device), cols.to(device), values.to(device)


def _coo(device: torch.device | str = "cpu") -> Tensor:
    crow, cols, values = _parts(device)
    rows = torch.repeat_interleave(torch.arange(N, device=device), crow.diff())
    A = torch.sparse_coo_tensor(
        torch.stack([rows, cols]), values, (N, M), check_invariants=True
    ).coalesce()
    return A.requires_grad_()


def _B(device: torch.device | str = "cpu") -> Tensor:
    return torch.randn(M, P, generator=torch.Generator().manual_seed(1)).to(device)


def _dense_sized(allocation: Allocation) -> bool:
    return allocation.nbytes >= DENSE_BYTES


@pytest.mark.parametrize("device", DEVICE_PARAMS)
def test_torch_sparse_mm_on_coo_is_flagged_at_its_dense_gradient(device: torch.device) -> None:
    A, B = _coo(device), _B(device).requires_grad_()
    report = largest_allocations(lambda: torch.sparse.mm(A, B).sum().backward())
    assert [f.shape for f in report.dense_forms] == [(N, M)]
    (flagged,) = report.flagged
    assert flagged.nbytes >= DENSE_BYTES  # the CUDA caching allocator may round up
    assert flagged.phase == "backward"
    assert flagged.node == "SparseAddmmBackward0"
    assert flagged.operator == "aten::mm"
    assert flagged.input_shapes == (f"{N}x{P}", f"{P}x{M}")  # G @ B^T, the dense n x m
    assert flagged.device.startswith(device.type)
    assert report.allocations[0] == flagged  # the largest block of the step


def test_torch_csr_constructor_is_flagged_in_its_backward() -> None:
    crow, cols, values = _parts()
    values.requires_grad_()
    B = _B()

    def step() -> None:
        A = torch.sparse_csr_tensor(crow, cols, values, (N, M), check_invariants=True)
        sgl.sparse_mm(A, B).sum().backward()

    report = largest_allocations(step)
    assert report.flagged, str(report)
    assert {a.node for a in report.flagged} == {"SparseCompressedTensorBackward0"}
    assert {a.phase for a in report.flagged} == {"backward"}
    # The dense gradient and masks of the pattern, all n x m: a bool mask (torch 2.13), an
    # int64 copy of a mask too (torch 2.5).
    assert report.flagged[0].nbytes >= DENSE_BYTES
    assert all(a.nbytes % (N * M) == 0 for a in report.flagged)
    assert any("aten::to_dense" in a.stack for a in report.flagged)


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr], ids=["coo", "csr"])
def test_sparse_mm_allocates_nothing_dense_sized(layout: torch.layout) -> None:
    A = _coo().detach()
    A = (A if layout == torch.sparse_coo else A.to_sparse_csr()).requires_grad_()
    B = _B().requires_grad_()
    report = largest_allocations(lambda: sgl.sparse_mm(A, B).sum().backward())
    # The sparse input was seen, so the absence of a flag is a finding, not a blind spot.
    assert [f.shape for f in report.dense_forms] == [(N, M)]
    assert report.flagged == ()
    assert report.allocations[0].nbytes < DENSE_BYTES / 100
    assert A.grad is not None and B.grad is not None


def test_csr_tensor_from_learned_values_allocates_nothing_dense_sized() -> None:
    crow, cols, values = _parts()
    values.requires_grad_()
    B = _B()

    def step() -> None:
        sgl.sparse_mm(sgl.csr_tensor(crow, cols, values, (N, M)), B).sum().backward()

    report = largest_allocations(step)
    assert [f.shape for f in report.dense_forms] == [(N, M)]
    assert report.flagged == ()
    assert values.grad is not None


def test_a_densified_input_is_flagged_in_the_forward_and_the_backward() -> None:
    A, B = _coo(), _B()
    report = largest_allocations(lambda: (A.to_dense() @ B).sum().backward(), top=3)
    forward, backward = sorted(report.flagged, key=lambda a: a.phase != "forward")
    assert (forward.phase, backward.phase) == ("forward", "backward"), str(report)
    assert "aten::to_dense" in forward.stack and forward.node is None
    assert forward.input_shapes == (f"coo {N}x{M}",)
    # The product's backward makes the dense n x m gradient of A.to_dense().
    assert (backward.node, backward.operator) == ("MmBackward0", "aten::mm")


def test_given_sparse_inputs_set_the_flag_and_top_bounds_the_list() -> None:
    A, B = _coo(), _B()
    small = torch.eye(20).to_sparse()  # dense form 1600 bytes
    report = largest_allocations(
        lambda: torch.sparse.mm(A, B).sum().backward(), sparse_inputs=[small], top=2
    )
    assert [(f.shape, f.layout, f.nbytes) for f in report.dense_forms] == [((20, 20), "coo", 1600)]
    assert len(report.allocations) == 2
    # Every block of at least 1600 bytes is flagged, beyond the two listed too.
    assert len(report.flagged) > 2
    assert all(a.nbytes >= 1600 for a in report.flagged)
    assert report.count > len(report.flagged)
    assert "not shown" in str(report)


def test_counts_and_peak_of_a_step_without_sparse_tensors() -> None:
    def temporaries() -> None:
        a = torch.empty(250_000)  # 1 MB
        b = torch.empty(500_000)  # 2 MB, while a is alive
        del a, b
        c = torch.empty(500_000)  # 2 MB, after both were freed
        del c

    report = largest_allocations(temporaries)
    assert [a.nbytes for a in report.allocations] == [2_000_000, 2_000_000, 1_000_000]
    assert {a.phase for a in report.allocations} == {"forward"}
    assert report.count == 3 and report.total_bytes == 5_000_000
    assert dict(report.peak_bytes) == {"cpu": 3_000_000}
    assert report.dense_forms == () and report.flagged == ()
    assert "nothing to flag" in str(report)


def test_an_optimizer_step_is_its_own_phase() -> None:
    layer = torch.nn.Linear(300, 300)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(4, 300)

    def step() -> None:
        opt.zero_grad()
        layer(x).sum().backward()
        opt.step()  # the first step clones each gradient into its momentum buffer

    report = largest_allocations(step, top=2)
    assert sorted(a.phase for a in report.allocations) == ["backward", "optimizer"]
    assert all(a.nbytes == 300 * 300 * 4 for a in report.allocations)


def test_the_table_names_what_it_found() -> None:
    A, B = _coo(), _B().requires_grad_()
    text = str(largest_allocations(lambda: torch.sparse.mm(A, B).sum().backward(), top=3))
    lines = text.splitlines()
    assert lines[0].startswith("3 largest of ")
    assert lines[1].split() == ["bytes", "phase", "operator", "autograd", "node", "inputs"]
    assert lines[2].split() == [
        "15.26",
        "MiB",
        "backward",
        "aten::mm",
        "SparseAddmmBackward0",
        f"{N}x{P},",
        f"{P}x{M}",
        "<<",
    ]
    assert f"coo {N}x{M} float32, 15.26 MiB" in text
    assert lines[-1] == "Flagged (<<): 1 allocation at least as large as that."
    assert len(lines) == 7  # title, header, three rows, two lines of flags


def test_the_profiler_is_stopped_when_the_step_raises() -> None:
    def broken() -> None:
        torch.empty(10)
        raise KeyError("inside the step")

    with pytest.raises(KeyError, match="inside the step"):
        largest_allocations(broken)
    assert not torch.autograd.profiler._is_profiler_enabled
    assert largest_allocations(lambda: torch.empty(10)).count == 1  # a new profile starts


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"step": None}, InputTypeError, "step must be a callable taking no arguments"),
        ({"top": 0}, InputValueError, "top must be >= 1, got 0"),
        ({"top": 2.0}, InputTypeError, "top must be an int, got float"),
        ({"sparse_inputs": torch.ones(2, 2)}, InputTypeError, r"sparse_inputs\[0\] must be a"),
        ({"sparse_inputs": [torch.eye(2).to_sparse(), 3]}, InputTypeError, r"sparse_inputs\[1\]"),
        ({"sparse_inputs": []}, InputTypeError, "sparse_inputs is empty; pass None"),
        ({"sparse_inputs": "A"}, InputTypeError, "got an object of type str"),
    ],
)
def test_arguments_are_checked_before_anything_runs(kwargs, error, words) -> None:
    ran = []
    arguments = {"step": lambda: ran.append(1), **kwargs}
    with pytest.raises(error, match=f"^largest_allocations: .*{words}"):
        largest_allocations(**arguments)
    assert ran == []


@pytest.mark.parametrize("device", CUDA_DEVICE_PARAMS)
def test_cuda_blocks_carry_their_device(device: torch.device) -> None:
    A, B = _coo(device), _B(device)
    report = largest_allocations(lambda: torch.sparse.mm(A, B).sum().backward())
    (flagged,) = report.flagged
    assert flagged.device.startswith("cuda") and flagged.phase == "backward"
    assert report.peak_bytes[flagged.device] >= DENSE_BYTES
