"""Run a snippet in a child process that may crash, without paying for ``import torch`` each time.

Tests of malformed input must run where a segfault or an abort kills only the child. A fresh
``python -c`` per case costs about two seconds (importing torch); here a multiprocessing
*forkserver* imports torch and sparsegrad_lab once, and each case is a fork of it: a process
of its own, in torch's default state (sparse invariant checks off, as in a user's session;
this pytest process's settings do not reach it), started in milliseconds.

>>> run_in_child("print(1 + 1)")
(0, '2\\n')
>>> run_in_child("import os; os.abort()")[0]  # a crash is an exit status, not a dead pytest
-6
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import sys
import tempfile

_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["torch", "sparsegrad_lab", __name__])


def _execute(code: str, output_path: str) -> None:
    """In the child: send stdout and stderr (file descriptors too) to a file, run ``code``.

    A crash is expected here: it leaves no core file behind.
    """
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    file = os.open(output_path, os.O_WRONLY | os.O_TRUNC)
    os.dup2(file, 1)
    os.dup2(file, 2)
    exec(compile(code, "<child>", "exec"), {"__name__": "__child__"})
    sys.stdout.flush()


def run_in_child(code: str, timeout_s: float = 120.0) -> tuple[int | None, str]:
    """Run ``code`` in a forked child; return its exit status and everything it printed.

    The status is 0 when ``code`` ends (or calls ``sys.exit(0)``), the ``sys.exit`` code it
    passes otherwise, minus the signal's number when a signal killed it, and ``None`` when it
    was still running after ``timeout_s`` seconds (it is then killed).
    """
    with tempfile.NamedTemporaryFile("r", suffix=".out") as output:
        child = _CONTEXT.Process(target=_execute, args=(code, output.name))
        child.start()
        child.join(timeout_s)
        if child.is_alive():
            child.kill()
            child.join()
            return None, output.read()
        return child.exitcode, output.read()
