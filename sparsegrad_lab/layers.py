"""``SparseLinear``: ``nn.Linear`` with a fixed sparsity pattern and learned stored values.

The weight :math:`W \\in \\mathbb{F}^{\\text{out} \\times \\text{in}}` stores ``nnz`` values
:math:`v_k` at fixed positions :math:`(r_k, c_k)`; like :class:`torch.nn.Linear`,

.. math::

    y = x W^{\\mathsf T} + b, \\qquad
    \\nabla_{v_k} L = \\sum_j G_{j r_k} \\, \\overline{x_{j c_k}}, \\qquad
    \\nabla_x L = G \\, \\overline{W}, \\qquad \\nabla_b L = \\textstyle\\sum_j G_j,

with :math:`G` = ``y.grad`` (torch's convention: :math:`2\\, \\partial L / \\partial \\bar y` for
complex ``y``), computed as :math:`y^{\\mathsf T} = W x^{\\mathsf T}` through
:func:`~sparsegrad_lab.pattern_op.pattern_mm_2d` (the registered op
``sparsegrad_lab::pattern_mm`` when compiled or exported). ``values`` is a plain dense
``nn.Parameter`` of shape ``(nnz,)``, so AdamW with weight decay, ``clip_grad_norm_``,
``GradScaler``, DDP, ``state_dict``, ``torch.compile(fullgraph=True)`` and ``torch.export``
treat it as any other weight; the pattern lives in index buffers built and checked once,
at construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .errors import InputTypeError, InputValueError
from .pattern import SparsityPattern
from .pattern_op import INDEX_NAMES, PatternIndices, pattern_mm_2d

__all__ = ["SparseLinear"]

#: The index buffers. ``crow`` and ``col`` say which pattern a checkpoint belongs to and are
#: saved with it (and compared on loading); the transpose's indices and the permutations
#: derive from them and are rebuilt at construction, never read from a file.
_SAVED = INDEX_NAMES[:2]


class SparseLinear(nn.Module):
    """``y = x Wᵀ + b`` with a sparse ``W`` of fixed pattern whose stored values are learned.

    Parameters
    ----------
    weight : Tensor, SparsityPattern or PatternIndices
        The pattern of ``W``, shape ``(out_features, in_features)``, or
        ``(b, out_features, in_features)`` for ``b`` independent layers applied to ``b``
        inputs at once. A sparse COO or CSR tensor gives the initial values too (an
        uncoalesced COO is coalesced: duplicates summed); a
        :class:`~sparsegrad_lab.SparsityPattern` or a
        :class:`~sparsegrad_lab.pattern_op.PatternIndices` gets values like ``nn.Linear``'s
        (see :meth:`reset_parameters`). For an edge list, use :meth:`from_edges`.
    bias : bool, default True
        Learn an additive bias of shape ``(out_features,)`` (``(b, out_features)``).
    device, dtype : optional
        Of the parameters and buffers; default the tensor's device and (floating or
        complex) dtype, else the pattern's device and torch's default dtype.

    Attributes
    ----------
    values : nn.Parameter
        ``(nnz,)``, the stored entries of ``W`` in row-major order (a batch's items one
        after another; ``values.view(b, -1)`` when every item stores as many).
    bias : nn.Parameter or None
    crow, col, crow_t, col_t, perm, perm_t : Tensor
        Index buffers (:class:`~sparsegrad_lab.pattern_op.PatternIndices`). ``crow`` and
        ``col`` go into the ``state_dict``; loading one saved from another pattern is
        refused. Under DDP, pass ``broadcast_buffers=False`` to skip re-sending them each
        step (they never change).

    Raises
    ------
    InputTypeError, InputValueError
        For a weight that is not a sparse matrix or pattern, or whose indices are invalid
        (checked once, here; the message names the entry).

    Examples
    --------
    >>> W = torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, 3.0]]).to_sparse()
    >>> layer = SparseLinear(W, bias=False)
    >>> layer
    SparseLinear(in_features=3, out_features=2, nnz=3, bias=False)
    >>> y = layer(torch.ones(4, 3))
    >>> y.shape, y[0].tolist()
    (torch.Size([4, 2]), [2.0, 4.0])
    >>> y.sum().backward()
    >>> layer.values.grad                   # one per stored entry, a plain dense gradient
    tensor([4., 4., 4.])
    """

    values: Tensor
    bias: Tensor | None
    crow: Tensor
    col: Tensor
    crow_t: Tensor
    col_t: Tensor
    perm: Tensor
    perm_t: Tensor

    def __init__(
        self,
        weight: Tensor | SparsityPattern | PatternIndices,
        bias: bool = True,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        initial = None
        if isinstance(weight, Tensor):
            indices, initial = PatternIndices.with_values(weight, "SparseLinear")
            if dtype is None and (initial.is_floating_point() or initial.is_complex()):
                dtype = initial.dtype
        elif isinstance(weight, SparsityPattern):
            indices = PatternIndices.from_pattern(weight)
        elif isinstance(weight, PatternIndices):
            indices = weight
        else:
            raise InputTypeError(
                "SparseLinear: weight must be a sparse COO or CSR tensor, a SparsityPattern or "
                f"PatternIndices, got an object of type {type(weight).__name__}; for an edge "
                "list use SparseLinear.from_edges(rows, cols, (out_features, in_features))"
            )
        device = torch.device(device) if device is not None else indices.col.device
        dtype = dtype if dtype is not None else torch.get_default_dtype()
        self.size = indices.size
        *lead, self.out_features, self.in_features = indices.size
        self.batch: int | None = lead[0] if lead else None
        for name, index in zip(INDEX_NAMES, indices.tensors, strict=True):
            self.register_buffer(name, index.to(device), persistent=name in _SAVED)
        self.values = nn.Parameter(torch.empty(indices.nnz, device=device, dtype=dtype))
        bias_shape = (*lead, self.out_features)
        self.bias = (
            nn.Parameter(torch.empty(bias_shape, device=device, dtype=dtype)) if bias else None
        )
        self.reset_parameters()
        if initial is not None:
            with torch.no_grad():
                self.values.copy_(initial)
        self.register_load_state_dict_pre_hook(_refuse_other_pattern)

    @classmethod
    def from_edges(
        cls,
        rows: Tensor | Sequence[int],
        cols: Tensor | Sequence[int],
        shape: Sequence[int],
        bias: bool = True,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> SparseLinear:
        """The layer whose ``W`` stores the edges ``(rows[k], cols[k])`` of an ``(out, in)`` shape.

        Duplicated edges are one entry; ``values`` follows row-major order, not the edge
        list's (:meth:`weight_indices` gives each value's position).

        >>> layer = SparseLinear.from_edges([0, 1, 1], [2, 0, 1], (2, 3))
        >>> layer
        SparseLinear(in_features=3, out_features=2, nnz=3, bias=True)
        """
        indices = PatternIndices.from_edges(rows, cols, shape, "SparseLinear.from_edges")
        return cls(indices, bias, device=device, dtype=dtype)

    @property
    def indices(self) -> PatternIndices:
        """The pattern's :class:`~sparsegrad_lab.pattern_op.PatternIndices` (the buffers)."""
        crow, col, crow_t, col_t, perm, perm_t = self._index_tensors()
        return PatternIndices(crow, col, crow_t, col_t, perm, perm_t, self.size)

    def _index_tensors(self) -> tuple[Tensor, ...]:
        """The index buffers in the ops' order (:attr:`PatternIndices.tensors`)."""
        return tuple(getattr(self, name) for name in INDEX_NAMES)

    @property
    def nnz(self) -> int:
        """Number of stored entries of ``W`` (of the whole batch)."""
        return int(self.col.shape[0])

    def weight_indices(self) -> Tensor:
        """Position of each value: ``(2, nnz)`` rows and columns, ``(3, nnz)`` for a batch.

        >>> SparseLinear.from_edges([1, 0], [0, 2], (2, 3)).weight_indices().tolist()
        [[0, 1], [2, 0]]
        """
        return self.indices.to_sparse(self.values.detach()).indices()

    def sparse_weight(self) -> Tensor:
        """``W`` as a sparse COO tensor (detached: for inspection, not for training).

        >>> SparseLinear(torch.eye(2).to_sparse(), bias=False).sparse_weight().to_dense()
        tensor([[1., 0.],
                [0., 1.]])
        """
        return self.indices.to_sparse(self.values.detach())

    def reset_parameters(self) -> None:
        """Draw ``values`` and ``bias`` as ``nn.Linear`` does, per row of ``W``.

        ``nn.Linear`` draws from :math:`U(-1/\\sqrt{\\text{in}}, 1/\\sqrt{\\text{in}})`,
        ``in`` being each output's fan-in; here row ``i``'s fan-in is the number of entries
        it stores, :math:`d_i`, so its values and its bias are drawn from
        :math:`U(-1/\\sqrt{d_i}, 1/\\sqrt{d_i})` (a row with no entries gets a zero bias).
        """
        fan_in = self.crow.diff().to(torch.float64)
        bound = torch.where(fan_in > 0, fan_in.clamp(min=1).rsqrt(), torch.zeros_like(fan_in))
        row_bound = bound.repeat_interleave(self.crow.diff().long(), output_size=self.nnz)
        with torch.no_grad():
            self.values.uniform_(-1.0, 1.0).mul_(row_bound.to(self.values.real.dtype))
            if self.bias is not None:
                self.bias.uniform_(-1.0, 1.0).mul_(
                    bound.view(self.bias.shape).to(self.bias.real.dtype)
                )

    def forward(self, x: Tensor) -> Tensor:
        """``y = x Wᵀ + b`` for ``x`` of shape ``(*, in_features)`` (``(b, *, in_features)``).

        Returns ``(*, out_features)`` (``(b, *, out_features)``); differentiable in ``x``,
        ``values`` and ``bias``, to any order. ``x`` must have the values' dtype, except
        under autocast, where it is converted to it (and so is the result).
        """
        if x.dtype != self.values.dtype:
            if not torch.is_autocast_enabled(x.device.type):
                raise InputTypeError(
                    f"SparseLinear: x has dtype {x.dtype}, but the layer's values are "
                    f"{self.values.dtype}; convert one of them (x.to(...), or layer.to(...))"
                )
            # Under autocast, in the values' dtype: torch's CPU CSR kernel has no half types.
            x = x.to(self.values.dtype)
        lead = x.shape[:-1]
        n_in, n_out = self.in_features, self.out_features
        indices = self._index_tensors()
        if self.batch is None:
            if x.dim() < 1 or x.shape[-1] != n_in:
                raise InputValueError(
                    f"SparseLinear: x must have shape (*, {n_in}) (in_features last), got "
                    f"{tuple(x.shape)}"
                )
            # flatten, not reshape(-1, n): -1 is ambiguous for an empty x
            X = x.flatten(0, -2) if x.dim() > 1 else x.unsqueeze(0)
            # yᵀ = W xᵀ, xᵀ made row-major once: torch's CSR kernel would copy a column-major
            # xᵀ itself, and the backward's sampled product again (a no-op when x is the
            # transposed output of another layer).
            y = pattern_mm_2d(self.values, X.mT.contiguous(), *indices).mT
            if self.bias is not None:
                y = y + self.bias
            return y.reshape(*lead, n_out)
        b = self.batch
        if x.dim() < 2 or x.shape[0] != b or x.shape[-1] != n_in:
            raise InputValueError(
                f"SparseLinear: x must have shape ({b}, *, {n_in}) for a batch of {b} layers, "
                f"got {tuple(x.shape)}"
            )
        X = x.flatten(1, -2) if x.dim() > 2 else x.unsqueeze(1)
        k = X.shape[1]
        # The block-diagonal W times the items' xᵀ stacked: (b in, k) -> (b out, k).
        Y = pattern_mm_2d(self.values, X.mT.reshape(b * n_in, k), *indices)
        y = Y.view(b, n_out, k).mT
        if self.bias is not None:
            y = y + self.bias.unsqueeze(1)
        return y.reshape(*lead, n_out)

    def extra_repr(self) -> str:
        batch = f"batch={self.batch}, " if self.batch is not None else ""
        return (
            f"{batch}in_features={self.in_features}, out_features={self.out_features}, "
            f"nnz={self.nnz}, bias={self.bias is not None}"
        )


def _refuse_other_pattern(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any
) -> None:
    """``load_state_dict`` pre-hook: a checkpoint of another pattern would misplace values."""
    for name in _SAVED:
        saved = state_dict.get(prefix + name)
        mine: Tensor = getattr(module, name)
        if saved is None:
            continue  # strict loading reports the missing key itself
        if saved.shape != mine.shape or not torch.equal(saved.to(mine), mine):
            raise InputValueError(
                f"SparseLinear.load_state_dict: the checkpoint's {prefix + name} "
                f"(shape {tuple(saved.shape)}) is not this layer's {name} (shape "
                f"{tuple(mine.shape)}): it was saved from a layer of another sparsity pattern; "
                "build the layer from the same pattern before loading"
            )
