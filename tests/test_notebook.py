"""The lessons' first cell: ``setup`` runs from a plain checkout and on any torch."""

import doctest
import os
import subprocess
import sys
import warnings
from pathlib import Path

import matplotlib
import pytest
import torch

import sparsegrad_lab
from sparsegrad_lab import notebook
from sparsegrad_lab.errors import InputTypeError, InputValueError
from sparsegrad_lab.notebook import LOCKED_TORCH, setup

CHECKOUT = Path(sparsegrad_lab.__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _restore_plot_style():
    # setup() sets the lessons' figure defaults; other tests' figures keep matplotlib's.
    with matplotlib.rc_context():
        yield


@pytest.fixture
def other_torch(monkeypatch):
    """A torch that is not the locked one: the version a student on Colab may have."""
    monkeypatch.setattr(torch, "__version__", "2.12.1+cu126")


# A plain checkout: the package is found on the path, but no distribution named
# sparsegrad-lab is installed, so its metadata cannot be read.
_WITHOUT_METADATA = """
import importlib.metadata

def not_installed(name):
    raise importlib.metadata.PackageNotFoundError(name)

importlib.metadata.version = not_installed
from sparsegrad_lab.notebook import setup
print(setup(0))
"""


@pytest.mark.slow
def test_setup_runs_from_a_plain_checkout_without_package_metadata():
    # Every lesson's first cell used to raise PackageNotFoundError there: setup() read the
    # installed distribution's version instead of the package's own.
    env = {**os.environ, "PYTHONPATH": str(CHECKOUT), "MPLBACKEND": "Agg"}
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_METADATA],
        cwd=CHECKOUT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"sparsegrad_lab {sparsegrad_lab.__version__}, torch ")


def test_setup_line_under_the_locked_torch_is_what_the_lessons_saved(monkeypatch):
    # The committed first-cell output of every lesson (nbval compares it): unchanged.
    monkeypatch.setattr(torch, "__version__", f"{LOCKED_TORCH}+cpu")
    assert setup(0) == f"sparsegrad_lab {sparsegrad_lab.__version__}, torch {LOCKED_TORCH}"


def test_setup_line_says_when_torch_is_not_the_locked_one(other_torch):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said in the printed line, not as a warning
        line = setup(0)
    assert line.startswith(f"sparsegrad_lab {sparsegrad_lab.__version__}, torch 2.12.1 (")
    assert f"saved outputs came from torch {LOCKED_TORCH}" in line


def test_setup_doctest_holds_on_another_torch(other_torch):
    # The suite turns the package's warnings into errors, so the warning setup() used to give
    # on any torch but the locked one failed its doctest there.
    (test,) = [t for t in doctest.DocTestFinder().find(notebook) if t.name.endswith(".setup")]
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = runner.run(test, out=lambda text: None)
    assert (result.attempted, result.failed) == (1, 0)


@pytest.mark.parametrize(
    ("seed", "error", "words"),
    [
        # numpy refuses seeds outside [0, 2**32) after random and torch were seeded.
        (-1, InputValueError, r"setup: seed must lie in \[0, 4294967296\), got -1"),
        (2**32, InputValueError, r"setup: seed must lie in \[0, 4294967296\)"),
        (0.5, InputTypeError, "setup: seed must be an int, got float"),
    ],
)
def test_setup_checks_the_seed_first(seed, error, words):
    state = torch.random.get_rng_state()
    with pytest.raises(error, match=words):
        setup(seed)
    assert torch.equal(torch.random.get_rng_state(), state)  # nothing was seeded


def test_the_package_version_is_the_one_pyproject_declares() -> None:
    # setup() prints sparsegrad_lab.__version__; a release bumps pyproject.toml's version.
    import tomllib
    from pathlib import Path

    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    declared = tomllib.loads(pyproject.read_text())["project"]["version"]
    assert sparsegrad_lab.__version__ == declared
