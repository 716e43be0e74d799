"""Small torch helpers that several modules need: one home for each.

``import sparsegrad_lab`` builds one empty CSR tensor here, inside a warnings filter, so that
torch's one-time notice "Sparse CSR tensor support is in beta state" (a ``TORCH_WARN_ONCE``)
is spent where nobody sees it. Every later CSR tensor -- ours or the caller's -- is then
built without a ``warnings.catch_warnings`` block, which costs microseconds per call on the
small graphs of the lessons.

The same filter takes torch 2.11's one-time "Sparse invariant checks are implicitly disabled":
that release warns even for a constructor given ``check_invariants=False`` explicitly, so the
import itself would show it (and the test suite, which turns our warnings into errors, could
not start). torch 2.13 and 2.15 warn only for a constructor that leaves the checks implicit,
which this one does not, so there the notice stays for the caller's own code, as torch means
it to. The invariant-check setting itself is never switched: that is the caller's choice.
"""

from __future__ import annotations

import warnings

import torch

__all__ = ["CSR_BETA_NOTICE", "INVARIANTS_NOTICE", "element_size", "spend_csr_beta_notice"]

#: The start of torch's one-time notice, for filters that still want to name it.
CSR_BETA_NOTICE = "Sparse CSR tensor support is in beta"

#: The start of torch's one-time notice about unchecked sparse tensors (``Context.cpp``).
INVARIANTS_NOTICE = "Sparse invariant checks are implicitly disabled"


def element_size(dtype: torch.dtype) -> int:
    """Bytes per element of ``dtype``.

    >>> element_size(torch.complex64)
    8
    """
    return dtype.itemsize


def spend_csr_beta_notice() -> None:
    """Trigger torch's one-time CSR beta notice with the notice filtered out.

    torch prints it once per process, so afterwards no CSR constructor needs a filter. Under
    torch 2.11 the same constructor also spends the invariant-check notice (see the module
    docstring); the invariant-check setting is left as it was.

    >>> before = torch.sparse.check_sparse_tensor_invariants.is_enabled()
    >>> spend_csr_beta_notice()  # idempotent
    >>> torch.sparse.check_sparse_tensor_invariants.is_enabled() == before
    True
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=CSR_BETA_NOTICE)
        warnings.filterwarnings("ignore", message=INVARIANTS_NOTICE)
        empty = torch.zeros(1, dtype=torch.int64)
        torch.sparse_csr_tensor(empty, empty[:0], torch.zeros(0), (0, 0), check_invariants=False)
