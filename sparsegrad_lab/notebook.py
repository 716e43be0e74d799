"""The first cell of every lesson: seeds, a version check, plotting defaults, quiet torch.

Kept in the package so the five notebooks share one set-up instead of five copies, and so
the lessons' outputs stay reproducible (same seeds, same figure size, no stray warnings).
"""

from __future__ import annotations

import math
import os
import random

import numpy
import torch

# The package's own version, not the installed distribution's metadata: a lesson run from a
# plain checkout (no pip install, the package found on the path) has no metadata to read.
from . import __version__
from .scalar_checks import check_int

__all__ = ["BINDER_REPO", "COLAB_BRANCH", "LOCKED_TORCH", "binder_url", "colab_url", "setup"]

#: The GitHub repository Binder builds the lessons from (and Colab opens them from).
BINDER_REPO = "sparsegrad-lab/sparsegrad_lab"

#: The branch Colab opens a lesson from (Colab needs a branch name where Binder takes HEAD).
COLAB_BRANCH = "main"

#: The torch version the committed notebook outputs were produced with (requirements.lock).
LOCKED_TORCH = "2.13.0"


def binder_url(notebook: str) -> str:
    """The mybinder.org link that opens ``notebook`` in JupyterLab.

    >>> binder_url("02_gradient_derivation.ipynb")
    'https://mybinder.org/v2/gh/sparsegrad-lab/sparsegrad_lab/HEAD?urlpath=lab/tree/notebooks/02_gradient_derivation.ipynb'
    """
    return f"https://mybinder.org/v2/gh/{BINDER_REPO}/HEAD?urlpath=lab/tree/notebooks/{notebook}"


def colab_url(notebook: str) -> str:
    """The Colab link that opens ``notebook`` from :data:`BINDER_REPO`, as Binder does.

    >>> colab_url("02_gradient_derivation.ipynb")
    'https://colab.research.google.com/github/sparsegrad-lab/sparsegrad_lab/blob/main/notebooks/02_gradient_derivation.ipynb'
    """
    return (
        f"https://colab.research.google.com/github/{BINDER_REPO}/blob/{COLAB_BRANCH}"
        f"/notebooks/{notebook}"
    )


def _cpu_quota() -> int:
    """CPUs this process may use: the cgroup v2 quota if one is set, else the CPU affinity.

    >>> _cpu_quota() >= 1
    True
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        with open("/sys/fs/cgroup/cpu.max") as limit:
            quota, period = limit.read().split()
        if quota != "max":
            cpus = min(cpus or 1, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus or 1)


def setup(seed: int = 0) -> str:
    """Seed every generator, set plotting defaults, silence torch's sparse notices.

    * ``random``, numpy (if installed) and torch are seeded with ``seed``, an int in
      :math:`[0, 2^{32})` (the range numpy accepts, checked first); torch's threads are
      capped at the container's CPU quota (Binder's cgroup limit), which torch does not
      see: oversubscribed threads made small steps twenty times slower.
    * sparse invariant checks are explicitly switched off, which answers torch's "checks
      are implicitly disabled" warning: the checks allocate and take time on every sparse
      tensor built, which would distort the lessons' memory and time measurements. (torch's
      one-time "Sparse CSR tensor support is in beta state" notice needs no filter here:
      ``import sparsegrad_lab`` has already spent it, see ``_torch_util``.)
    * matplotlib (if installed) gets one figure size, resolution and font size.

    Returns a line naming the versions in use, which the notebooks print:
    ``sparsegrad_lab 0.1.0, torch 2.13.0`` under :data:`LOCKED_TORCH`, the version the
    committed outputs came from; under any other torch the line goes on to say so, as in
    ``..., torch 2.12.0 (the lessons' saved outputs came from torch 2.13.0, see
    requirements.lock: numbers may differ slightly)``.

    >>> print(setup(0))  # doctest: +ELLIPSIS
    sparsegrad_lab ..., torch ...
    """
    seed = check_int(seed, "seed", "setup", minimum=0, below=2**32)
    random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(min(torch.get_num_threads(), _cpu_quota()))
    numpy.random.seed(seed)
    torch.sparse.check_sparse_tensor_invariants.disable()
    try:
        from .plots import use_lesson_style
    except ImportError:  # matplotlib is not installed: nothing to style
        pass
    else:
        use_lesson_style()
    torch_version = torch.__version__.split("+")[0]
    line = f"sparsegrad_lab {__version__}, torch {torch_version}"
    if torch_version != LOCKED_TORCH:
        # Said in the printed line, not as a warning: every lesson prints it in its first
        # cell, where a student reads it, and a warning would fail the doctests and the
        # tests (they turn the package's warnings into errors) on any other torch.
        line += (
            f" (the lessons' saved outputs came from torch {LOCKED_TORCH}, see "
            "requirements.lock: numbers may differ slightly)"
        )
    return line
