"""Tests of the small torch helpers (:mod:`sparsegrad_lab._torch_util`).

``element_size`` is torch's own byte count for every dtype. ``spend_csr_beta_notice`` (run by
``import sparsegrad_lab``) spends torch's one-time CSR notice unseen and leaves everything else
as it was: the warnings filters, the invariant-check setting, and the invariant-check notice a
caller's own code would get from torch. Its effect shows only once per process, so the
notices are checked in fresh interpreters, beside one without the package as the control.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

from sparsegrad_lab._torch_util import (
    CSR_BETA_NOTICE,
    INVARIANTS_NOTICE,
    element_size,
    spend_csr_beta_notice,
)

ALL_DTYPES = sorted(
    {value for value in vars(torch).values() if isinstance(value, torch.dtype)}, key=str
)


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_element_size_is_torchs_for_every_dtype(dtype: torch.dtype) -> None:
    with warnings.catch_warnings():
        # torch warns on creating complex32 and quantized tensors; the size is what counts.
        warnings.simplefilter("ignore")
        expected = torch.empty(0, dtype=dtype).element_size()
    assert element_size(dtype) == expected


def test_the_dtype_list_is_the_whole_of_torchs() -> None:
    # The sweep above would pass vacuously on an empty list.
    assert {torch.float32, torch.bfloat16, torch.complex32, torch.bool, torch.uint8} <= set(
        ALL_DTYPES
    )


def test_spending_the_notice_leaves_the_warnings_filters_as_they_were() -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="a filter of the caller's")
        before = list(warnings.filters)
        spend_csr_beta_notice()
        assert warnings.filters == before


@pytest.mark.parametrize("enabled", [False, True], ids=["checks-off", "checks-on"])
def test_spending_the_notice_leaves_the_invariant_checks_as_they_were(enabled: bool) -> None:
    checks = torch.sparse.check_sparse_tensor_invariants
    was = checks.is_enabled()
    try:
        (checks.enable if enabled else checks.disable)()
        spend_csr_beta_notice()
        assert checks.is_enabled() is enabled
    finally:
        (checks.enable if was else checks.disable)()


_SCRIPT = textwrap.dedent(
    """
    import json, sys, warnings

    import torch

    before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        if sys.argv[1] == "package":
            import sparsegrad_lab  # spends the notice
        elif sys.argv[1] == "explicit":
            # What the package's constructor is, without the package: checks set explicitly.
            e = torch.zeros(1, dtype=torch.int64)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.sparse_csr_tensor(e, e[:0], torch.zeros(0), (0, 0), check_invariants=False)
        mark = len(seen)
        # The caller's own code: a CSR tensor, checks left implicit.
        e = torch.zeros(1, dtype=torch.int64)
        torch.sparse_csr_tensor(e, e[:0], torch.zeros(0), (0, 0))
    print(json.dumps({
        "on_import": [str(w.message) for w in seen[:mark]],
        "caller": [str(w.message) for w in seen[mark:]],
        "filters_kept": warnings.filters == before,
    }))
    """
)


@functools.cache  # one interpreter per mode, shared by the tests
def _notices(mode: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, mode],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def _says(messages: object, notice: str) -> bool:
    assert isinstance(messages, list)
    return any(message.startswith(notice) for message in messages)


@pytest.mark.slow
def test_in_a_fresh_process_the_import_spends_the_notice_unseen() -> None:
    plain, package = _notices("plain"), _notices("package")
    if not _says(plain["caller"], CSR_BETA_NOTICE):
        pytest.skip(f"torch {torch.__version__} shows no CSR beta notice: nothing to spend")
    assert package["on_import"] == []  # the import shows nothing
    assert not _says(package["caller"], CSR_BETA_NOTICE)  # and the caller sees it no more
    assert package["filters_kept"] is True


@pytest.mark.slow
def test_the_caller_keeps_the_invariant_notice_torch_would_give_it() -> None:
    """The package hides the invariant-check notice only where torch itself would have spent
    it on the package's own constructor (torch 2.11); elsewhere the caller still sees it."""
    explicit, package = _notices("explicit"), _notices("package")
    assert _says(package["caller"], INVARIANTS_NOTICE) == _says(
        explicit["caller"], INVARIANTS_NOTICE
    )
