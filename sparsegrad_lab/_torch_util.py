"""Small torch helpers that several modules need: one home for each.

``import sparsegrad_lab`` builds one empty CSR tensor here, inside a warnings filter, so that
torch's one-time notice "Sparse CSR tensor support is in beta state" (a ``TORCH_WARN_ONCE``)
is spent where nobody sees it. Every later CSR tensor -- ours or the caller's -- is then
built without a ``warnings.catch_warnings`` block, which costs microseconds per call on the
small graphs of the lessons.
"""

from __future__ import annotations

import warnings

import torch

__all__ = ["CSR_BETA_NOTICE", "element_size", "spend_csr_beta_notice"]

#: The start of torch's one-time notice, for filters that still want to name it.
CSR_BETA_NOTICE = "Sparse CSR tensor support is in beta"


def element_size(dtype: torch.dtype) -> int:
    """Bytes per element of ``dtype``.

    >>> element_size(torch.complex64)
    8
    """
    return dtype.itemsize


def spend_csr_beta_notice() -> None:
    """Trigger torch's one-time CSR beta notice with the notice filtered out.

    torch prints it once per process, so afterwards no CSR constructor needs a filter.

    >>> spend_csr_beta_notice()  # idempotent
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=CSR_BETA_NOTICE)
        empty = torch.zeros(1, dtype=torch.int64)
        torch.sparse_csr_tensor(empty, empty[:0], torch.zeros(0), (0, 0), check_invariants=False)
