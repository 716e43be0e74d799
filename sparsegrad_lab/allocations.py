"""Find the allocation that does not scale: the largest allocations of one training step.

:func:`largest_allocations` runs a step -- a callable that does the forward, the loss and
the backward -- once under ``torch.profiler`` with memory profiling on, and reports the
largest blocks allocated, each with the operator that made it, that operator's input
shapes, its size and whether the autograd engine made it (the backward) or not (the
forward, the loss, an optimiser's step). It flags every block at least as large as the
dense form of a sparse tensor of the step,

.. math::

    \\text{flag a block of } b \\text{ bytes} \\iff b \\ge n\\, m\\, e
    \\text{ for some sparse } A \\in \\mathbb{R}^{n \\times m}
    \\text{ of the step, with } e \\text{ bytes per element,}

because a backward that keeps the gradient of ``A`` on its pattern needs O(nnz) bytes for
it, and a block of ``n m e`` bytes is the dense gradient that the lessons teach to avoid
(:mod:`sparsegrad_lab.memory_model` predicts those bytes strategy by strategy).

How it reads the profile: the profiler's event tree (the one ``torch.profiler``'s own
memory timeline reads) holds each allocation as a child of the operator that was running
when it was made. The operator named is the innermost one that is not a mere allocator
(``aten::empty``, ``aten::zeros``, ...) -- ``aten::mm`` rather than the ``aten::empty`` it
called; the block belongs to the backward when one of its enclosing events is the autograd
engine's ``autograd::engine::evaluate_function: <Node>``, and that ``<Node>`` (e.g.
``SparseAddmmBackward0``) is reported. Blocks made by the engine's own threads on CUDA are
found the same way. On CUDA the same events carry the caching allocator's blocks (their
``device`` says ``cuda:0``); only ``ProfilerActivity.CPU`` is recorded, which is what
records allocations, so no CUDA tracer is started.

Nothing is installed at import: the profiler runs only inside the call.

>>> import torch
>>> W, x = torch.randn(300, 300, requires_grad=True), torch.randn(300, 2)
>>> report = largest_allocations(lambda: (W @ x).sum().backward(), top=1)
>>> first = report.allocations[0]                 # the gradient of W, 300 x 300 float32
>>> first.nbytes, first.phase, first.node, first.operator, first.input_shapes
(360000, 'backward', 'MmBackward0', 'aten::mm', ('300x2', '2x300'))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .errors import InputTypeError, format_bytes
from .measurement import quiet_native_stderr
from .scalar_checks import check_int, kind_of

__all__ = [
    "ALLOCATING_HELPERS",
    "Allocation",
    "AllocationReport",
    "DenseForm",
    "largest_allocations",
]

_WHERE = "largest_allocations"

#: Operators that only allocate for their caller: an allocation under them is named after
#: the first enclosing operator not in this set (``aten::mm``, not the ``aten::empty`` it
#: called). When every enclosing operator is one of them (``torch.zeros(n, m)`` in the
#: user's own code), the outermost is named.
ALLOCATING_HELPERS = frozenset(
    {
        "aten::empty",
        "aten::empty_strided",
        "aten::empty_like",
        "aten::new_empty",
        "aten::new_empty_strided",
        "aten::zeros",
        "aten::zeros_like",
        "aten::new_zeros",
        "aten::ones",
        "aten::ones_like",
        "aten::full",
        "aten::full_like",
        "aten::resize_",
        "aten::fill_",
        "aten::zero_",
    }
)

#: How the autograd engine names the event of each node it evaluates (torch 2.5 to 2.15).
_ENGINE_PREFIX = "autograd::engine::evaluate_function: "
#: The ``record_function`` names torch's optimisers give their ``step`` and ``zero_grad``.
_OPTIMIZER_PREFIX = "Optimizer."


@dataclass(frozen=True)
class DenseForm:
    """The dense form of one sparse tensor of the step: the size that is flagged.

    Attributes
    ----------
    shape : tuple of int
        The sparse tensor's shape, e.g. ``(n, m)``.
    dtype : torch.dtype
        Its values' dtype.
    layout : str
        ``"coo"``, ``"csr"``, ... (torch's layout without ``torch.sparse_``).
    nbytes : int
        ``prod(shape)`` times the element size: what the tensor takes once densified.
    """

    shape: tuple[int, ...]
    dtype: torch.dtype
    layout: str
    nbytes: int

    def __str__(self) -> str:
        dtype = str(self.dtype).removeprefix("torch.")
        return f"{self.layout} {_shape(self.shape)} {dtype}, {format_bytes(self.nbytes)}"


@dataclass(frozen=True)
class Allocation:
    """One block allocated during the step.

    Attributes
    ----------
    nbytes : int
        Its size in bytes.
    operator : str
        The innermost enclosing operator that is not a mere allocator (see
        :data:`ALLOCATING_HELPERS`), e.g. ``"aten::mm"``; ``"(no operator)"`` when none.
    input_shapes : tuple of str
        That operator's tensor inputs, e.g. ``("2000x8", "8x2000")``; a sparse input is
        prefixed by its layout (``"coo 2000x2000"``). Empty when the profiler recorded none.
    phase : str
        ``"backward"`` when made by the autograd engine, ``"optimizer"`` under a torch
        optimiser's ``step`` or ``zero_grad``, otherwise ``"forward"`` (the loss included).
    node : str or None
        The autograd node being evaluated (``"SparseAddmmBackward0"``), in the backward.
    device : str
        Where the block lives: ``"cpu"``, ``"cuda:0"``.
    stack : tuple of str
        Every enclosing event's name, outermost first.
    dense_form : DenseForm or None
        The largest dense form of a sparse tensor of the step that this block is at least
        as large as; ``None`` when it is smaller than all of them.
    """

    nbytes: int
    operator: str
    input_shapes: tuple[str, ...]
    phase: str
    node: str | None
    device: str
    stack: tuple[str, ...]
    dense_form: DenseForm | None

    @property
    def flagged(self) -> bool:
        """Whether the block is at least as large as the dense form of a sparse tensor."""
        return self.dense_form is not None


@dataclass(frozen=True)
class AllocationReport:
    """What :func:`largest_allocations` found; ``str()`` prints it as a short table.

    Attributes
    ----------
    allocations : tuple of Allocation
        The ``top`` largest blocks, largest first.
    flagged : tuple of Allocation
        Every block at least as large as a dense form in ``dense_forms``, largest first
        (it may hold more than ``top``).
    dense_forms : tuple of DenseForm
        The sparse tensors whose dense size sets the flag: those given, or those the step's
        operators took as inputs.
    count : int
        How many blocks the step allocated.
    total_bytes : int
        Their total size (allocated, not all alive at once).
    peak_bytes : Mapping of str to int
        Per device, the highest sum of the blocks alive at once, counted from the step's
        start (blocks freed by the step but allocated before it are not counted).
    """

    allocations: tuple[Allocation, ...]
    flagged: tuple[Allocation, ...]
    dense_forms: tuple[DenseForm, ...]
    count: int
    total_bytes: int
    peak_bytes: Mapping[str, int]

    def __str__(self) -> str:
        peaks = ", ".join(f"{format_bytes(b)} on {d}" for d, b in self.peak_bytes.items())
        head = (
            f"{len(self.allocations)} largest of {self.count} allocations "
            f"({format_bytes(self.total_bytes)} in all; peak {peaks or '0 B'})"
        )
        header = ("bytes", "phase", "operator", "autograd node", "inputs", "")
        rows = [
            (
                format_bytes(a.nbytes),
                a.phase,
                _clip(a.operator, 28),
                a.node or "-",
                _clip(", ".join(a.input_shapes) or "-", 36),
                "<<" if a.flagged else "",
            )
            for a in self.allocations
        ]
        widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
        lines = [head]
        for r in (header, *rows):
            lines.append(
                "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
            )
        if not self.dense_forms:
            lines.append("No sparse tensor in the step: nothing to flag.")
        else:
            many = len(self.dense_forms) > 1
            forms = "; ".join(str(f) for f in self.dense_forms)
            more = len(self.flagged) - sum(a.flagged for a in self.allocations)
            lines.append(f"Dense form{'s' * many} of the sparse inputs: {forms}.")
            lines.append(
                f"Flagged (<<): {len(self.flagged)} allocation{'s' * (len(self.flagged) != 1)}"
                f" at least as large as {'one of them' if many else 'that'}"
                + (f", {more} of them not shown." if more else ".")
            )
        return "\n".join(lines)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _shape(sizes: Sequence[int]) -> str:
    return "x".join(str(s) for s in sizes) if len(sizes) else "scalar"


def _layout_name(layout: torch.layout) -> str:
    return str(layout).removeprefix("torch.").removeprefix("sparse_")


def _dense_form(shape: Sequence[int], dtype: torch.dtype, layout: torch.layout) -> DenseForm:
    shape = tuple(int(s) for s in shape)
    return DenseForm(shape, dtype, _layout_name(layout), math.prod(shape) * dtype.itemsize)


def _check_sparse_inputs(sparse_inputs: Any) -> tuple[DenseForm, ...] | None:
    if sparse_inputs is None:
        return None
    tensors = [sparse_inputs] if isinstance(sparse_inputs, Tensor) else sparse_inputs
    if isinstance(tensors, (str, bytes)) or not isinstance(tensors, Sequence):
        raise InputTypeError(
            f"{_WHERE}: sparse_inputs must be None, a sparse tensor or a sequence of them, "
            f"got {kind_of(sparse_inputs)}"
        )
    if not tensors:
        raise InputTypeError(
            f"{_WHERE}: sparse_inputs is empty; pass None to take the sparse tensors the "
            "step's operators receive"
        )
    forms = []
    for i, t in enumerate(tensors):
        if not isinstance(t, Tensor) or t.layout == torch.strided:
            raise InputTypeError(
                f"{_WHERE}: sparse_inputs[{i}] must be a sparse tensor (COO, CSR, ...), got "
                f"{kind_of(t)}"
            )
        forms.append(_dense_form(t.shape, t.dtype, t.layout))
    return tuple(forms)


def _events(roots: Sequence[Any]) -> Iterator[Any]:
    """Every event of the profiler's tree, depth first (iteratively: trees can be deep)."""
    todo = list(reversed(roots))
    while todo:
        event = todo.pop()
        yield event
        todo.extend(reversed(event.children))


def _ancestors(event: Any) -> list[Any]:
    """The enclosing events of ``event``, innermost first."""
    out = []
    parent = event.parent
    while parent is not None:
        out.append(parent)
        parent = parent.parent
    return out


def _tensor_inputs(op: Any) -> Iterator[Any]:
    """The tensor metadata among an operator's recorded inputs, lists flattened."""
    for item in getattr(op.typed[1], "inputs", ()):
        for x in item if isinstance(item, list) else (item,):
            if hasattr(x, "sizes") and hasattr(x, "layout"):
                yield x


def _describe(meta: Any) -> str:
    shape = _shape(meta.sizes)
    return shape if meta.layout == torch.strided else f"{_layout_name(meta.layout)} {shape}"


def _allocation(event: Any, forms: Sequence[DenseForm], torch_op: Any) -> Allocation:
    ancestors = _ancestors(event)
    ops = [a for a in ancestors if a.tag == torch_op]
    named = next((a for a in ops if a.name not in ALLOCATING_HELPERS), ops[-1] if ops else None)
    phase, node = "forward", None
    for a in ancestors:
        if a.name.startswith(_ENGINE_PREFIX):
            phase, node = "backward", a.name[len(_ENGINE_PREFIX) :]
            break
        if a.name.startswith(_OPTIMIZER_PREFIX):
            phase = "optimizer"
    nbytes = int(event.typed[1].alloc_size)
    fitting = [f for f in forms if nbytes >= f.nbytes]
    return Allocation(
        nbytes=nbytes,
        operator=named.name if named is not None else "(no operator)",
        input_shapes=tuple(_describe(t) for t in _tensor_inputs(named)) if named else (),
        phase=phase,
        node=node,
        device=str(event.typed[1].device),
        stack=tuple(a.name for a in reversed(ancestors)),
        dense_form=max(fitting, key=lambda f: f.nbytes) if fitting else None,
    )


def largest_allocations(
    step: Callable[[], object], *, sparse_inputs: Any = None, top: int = 10
) -> AllocationReport:
    """Run ``step()`` once under torch's profiler; report its largest allocations.

    Each block is reported with the operator that made it, that operator's input shapes,
    its size, and whether it was made in the forward or the backward (see the module
    docstring for how each is read). A block of ``b`` bytes is flagged when
    ``b >= n m e`` for a sparse ``n x m`` tensor of the step with ``e`` bytes per element:
    the size of its dense form, which a gradient kept on the pattern never needs.

    Parameters
    ----------
    step : callable
        Called once with no arguments: typically the forward, the loss and
        ``loss.backward()``. What it returns is dropped.
    sparse_inputs : Tensor or sequence of Tensor, optional
        The sparse tensors whose dense size sets the flag. By default, every sparse tensor
        one of the step's operators received (found in the profile's recorded input
        shapes); give them to flag against those alone.
    top : int, default 10
        How many of the largest blocks to list (every flagged one is kept in ``flagged``).

    Returns
    -------
    AllocationReport
        ``print(report)`` shows the table.

    Raises
    ------
    InputTypeError
        ``step`` is not callable, ``top`` not an int, ``sparse_inputs`` not sparse tensors.
    InputValueError
        ``top`` is below 1.

    Examples
    --------
    >>> import torch
    >>> A = torch.eye(500).to_sparse().requires_grad_()
    >>> B = torch.randn(500, 4)
    >>> report = largest_allocations(lambda: torch.sparse.mm(A, B).sum().backward())
    >>> big = report.flagged[0]
    >>> big.nbytes == 500 * 500 * 4, big.phase, big.node
    (True, 'backward', 'SparseAddmmBackward0')
    """
    if not callable(step):
        raise InputTypeError(
            f"{_WHERE}: step must be a callable taking no arguments (the forward, the loss "
            f"and the backward), got {kind_of(step)}"
        )
    top = check_int(top, "top", _WHERE, minimum=1)
    given = _check_sparse_inputs(sparse_inputs)

    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    prof = profile(
        activities=[ProfilerActivity.CPU],
        profile_memory=True,
        record_shapes=True,
        with_stack=False,
    )
    # kineto writes a line on fd 2 as a profile starts and stops (see measurement).
    with quiet_native_stderr(), prof:
        step()
    roots = prof.profiler.kineto_results.experimental_event_tree()  # type: ignore[union-attr]
    events = list(_events(roots))

    if given is None:
        seen: dict[tuple[tuple[int, ...], torch.dtype, torch.layout], None] = {}
        for e in events:
            if e.tag == _EventType.TorchOp:
                for t in _tensor_inputs(e):
                    # torch's kernels pass empty sparse placeholders around: skip them.
                    if t.layout != torch.strided and len(t.sizes) >= 2 and all(t.sizes):
                        seen[(tuple(t.sizes), t.dtype, t.layout)] = None
        forms = tuple(_dense_form(*key) for key in seen)
    else:
        forms = given

    blocks = [e for e in events if e.tag == _EventType.Allocation]
    made = sorted(
        (_allocation(e, forms, _EventType.TorchOp) for e in blocks if e.typed[1].alloc_size > 0),
        key=lambda a: -a.nbytes,
    )
    peaks: dict[str, int] = {}
    current: dict[str, int] = {}
    for e in sorted(blocks, key=lambda e: e.start_time_ns):
        device = str(e.typed[1].device)
        current[device] = current.get(device, 0) + int(e.typed[1].alloc_size)
        peaks[device] = max(peaks.get(device, 0), current[device])
    return AllocationReport(
        allocations=tuple(made[:top]),
        flagged=tuple(a for a in made if a.flagged),
        dense_forms=forms,
        count=len(made),
        total_bytes=sum(a.nbytes for a in made),
        peak_bytes=peaks,
    )
