"""Every install path agrees with requirements.lock (the checker: ``tests/support/pins.py``).

The checker runs on the real files first, then on copies broken one way each, and must name
the file, the package and both versions.
"""

from __future__ import annotations

import json
import re
import shutil
import stat
from pathlib import Path

import pytest
from packaging.version import Version
from support.pins import (
    BINDER_ENV_FILE,
    ENV_FILE,
    LOCK,
    PYPROJECT,
    ROOT,
    PinFileError,
    find_pin_problems,
    normalize_name,
    normalize_version,
    read_lock,
)

# --- the real files -----------------------------------------------------------------------


def test_lock_pyproject_and_environment_files_agree() -> None:
    problems = find_pin_problems(ROOT)
    assert not problems, "\n".join(problems)


def test_lock_pins_torch() -> None:
    # The rule: an unpinned torch pulls several GB of CUDA wheels.
    assert "torch" in read_lock(ROOT / LOCK), f"{LOCK} does not pin torch"


def test_binder_post_build_installs_the_package_without_deps() -> None:
    post_build = ROOT / "binder" / "postBuild"
    assert post_build.stat().st_mode & stat.S_IXUSR, "binder/postBuild is not executable"
    lines = [ln.strip() for ln in post_build.read_text().splitlines()]
    assert "set -e" in lines, "binder/postBuild must stop at the first failing command"
    install = "python -m pip install --no-deps -e ."
    assert install in lines, f"binder/postBuild does not run {install!r}"
    assert lines.index("set -e") < lines.index(install), "set -e must come before the install"


def test_binder_turns_jupyterlab_news_and_update_checks_off() -> None:
    # postBuild copies binder/overrides.json to where JupyterLab reads its default settings.
    post_build = (ROOT / "binder" / "postBuild").read_text()
    target = "${NB_PYTHON_PREFIX}/share/jupyter/lab/settings/overrides.json"
    assert f'cp binder/overrides.json "{target}"' in post_build
    overrides = json.loads((ROOT / "binder" / "overrides.json").read_text())
    notification = overrides["@jupyterlab/apputils-extension:notification"]
    assert notification == {"checkForUpdates": False, "fetchNews": "false"}


def _runs_make_test(script: str) -> bool:
    for line in script.splitlines():
        code = line.split("#", 1)[0]
        # `make test`, `make -k test`, `make PYTHON=python3 test`, `if ! make test; then` ...
        if re.search(r"(?:^|[\s;&|!(])make(?:\s+(?:-\S+|\w+=\S*))*\s+test(?:$|[\s;&|)])", code):
            return True
    return False


def test_ci_runs_make_test() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    assert _runs_make_test(script), ".ci/run does not call `make test`"


def test_readme_shows_the_two_commands() -> None:
    readme = ROOT / "README.md"
    if not readme.exists():
        pytest.skip("README.md does not exist yet")
    text = readme.read_text()
    for command in ("make test", "make lab"):
        assert command in text, f"README.md does not mention `{command}`"


# --- the checker can fail -----------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the four files the checker reads, to break on purpose."""
    for name in (LOCK, PYPROJECT, ENV_FILE, BINDER_ENV_FILE):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / name, tmp_path / name)
    return tmp_path


def _edit(root: Path, name: str, old: str, new: str) -> None:
    path = root / name
    text = path.read_text()
    assert old in text, f"{name} no longer contains {old!r}: update this test"
    path.write_text(text.replace(old, new, 1))


def test_copy_is_clean(tree: Path) -> None:
    assert find_pin_problems(tree) == []


@pytest.mark.parametrize(
    ("name", "old", "new", "expected"),
    [
        # a wrong exact pin in each file: file, package and both versions are named
        (ENV_FILE, "numpy==2.4.6", "numpy==2.4.5", [ENV_FILE, "numpy", "2.4.5", "2.4.6"]),
        (
            BINDER_ENV_FILE,
            "ipywidgets==8.1.9",
            "ipywidgets==8.1.8",
            [BINDER_ENV_FILE, "ipywidgets", "8.1.8", "8.1.9"],
        ),
        (
            ENV_FILE,
            "torchsparsegradutils==0.2.7",
            "torchsparsegradutils==0.2.6",
            [ENV_FILE, "[pip]", "torchsparsegradutils", "0.2.6", "0.2.7"],
        ),
        (
            ENV_FILE,
            "pytorch-cpu==2.13.0",
            "pytorch-cpu==2.12.0",
            [ENV_FILE, "pytorch-cpu (torch on PyPI)", "2.12.0", "2.13.0"],
        ),
        (
            PYPROJECT,
            '"torchsparsegradutils==0.2.7"',
            '"torchsparsegradutils==0.2.6"',
            [PYPROJECT, "extra bench", "torchsparsegradutils", "0.2.6", "0.2.7"],
        ),
        # a pyproject range that excludes the locked version
        (
            PYPROJECT,
            '"matplotlib>=3.8"',
            '"matplotlib>=3.12"',
            [PYPROJECT, "extra lab", "matplotlib", ">=3.12", "3.11.2"],
        ),
        # the lock moves and the other files do not follow
        (LOCK, "scipy==1.17.1", "scipy==1.17.2", [ENV_FILE, "scipy", "1.17.1", "1.17.2"]),
        (LOCK, "pytest==9.2.0", "pytest==9.3.0", [PYPROJECT, "pytest", "<=9.2.0", "9.3.0"]),
        # a cap in the core or a user-facing extra: pip would downgrade a user's newer release
        (PYPROJECT, '"torch>=2.5"', '"torch>=2.5,<=2.13.0"', ["torch", "2.13.1", "downgrade"]),
        (PYPROJECT, '"torch>=2.5"', '"torch>=2.5,<2.14"', ["torch", "2.14.0", "downgrade"]),
        (PYPROJECT, '"torch>=2.5"', '"torch==2.13.0"', ["torch", "2.13.1", "floor only"]),
        (
            PYPROJECT,
            '"numpy>=1.26"',
            '"numpy>=1.26,<=2.4.6"',
            [PYPROJECT, "extra lab", "numpy", "2.4.7", "downgrade"],
        ),
        (
            PYPROJECT,
            '"scipy>=1.11"',
            '"scipy>=1.11,<1.18"',
            [PYPROJECT, "extra bench", "scipy", "1.18.0", "downgrade"],
        ),
        # packages absent from the lock
        (
            ENV_FILE,
            "  - scipy==1.17.1\n",
            "  - scipy==1.17.1\n  - pandas==2.2.3\n",
            [ENV_FILE, "pandas", "not in"],
        ),
        (
            PYPROJECT,
            '"ruff>=0.6,<=0.17.6",',
            '"ruff>=0.6,<=0.17.6",\n    "colorama>=0.4",',
            [PYPROJECT, "extra test", "colorama", "not in"],
        ),
        # an env file that stops installing something pyproject needs
        (ENV_FILE, "  - hypothesis==6.170.17\n", "", [ENV_FILE, "does not install hypothesis"]),
        (BINDER_ENV_FILE, "  - tqdm==4.70.1\n", "", [BINDER_ENV_FILE, "does not install tqdm"]),
        # loose pins, CUDA torch, foreign channels, wrong python
        (ENV_FILE, "numpy==2.4.6", "numpy>=2.4", [ENV_FILE, "numpy", "not an exact pin"]),
        (ENV_FILE, "numpy==2.4.6", "numpy=2.4.6", [ENV_FILE, "numpy", "prefix match"]),
        (BINDER_ENV_FILE, "=cpu_generic*", "", [BINDER_ENV_FILE, "pytorch", "cpu* build"]),
        (
            BINDER_ENV_FILE,
            "=cpu_generic*",
            "=cuda126_generic*",
            [BINDER_ENV_FILE, "pytorch", "cpu* build"],
        ),
        (ENV_FILE, "pytorch-cpu==", "pytorch==", [ENV_FILE, "pytorch-cpu"]),
        # the base image's Jupyter pinned in Binder's file
        (
            BINDER_ENV_FILE,
            "  - ipywidgets==8.1.9\n",
            "  - ipywidgets==8.1.9\n  - jupyterlab==4.6.6\n",
            [BINDER_ENV_FILE, "jupyterlab", "base image provides"],
        ),
        (
            ENV_FILE,
            "      - playwright==1.65.2\n",
            "      - playwright==1.65.2\n      - torch==2.13.0\n",
            [ENV_FILE, "[pip]", "torch", "pytorch-cpu"],
        ),
        (ENV_FILE, "  - nodefaults\n", "  - defaults\n", [ENV_FILE, "channels", "defaults"]),
        (BINDER_ENV_FILE, "python=3.11", "python=3.10", [BINDER_ENV_FILE, "python", "3.10"]),
        (
            BINDER_ENV_FILE,
            "  - psutil==7.2.2\n",
            "  - psutil==7.2.2\n  - pip:\n      - -e .\n",
            [BINDER_ENV_FILE, "-e ."],
        ),
        # a local label in the lock (what `pip freeze` writes for the CPU wheel)
        (
            LOCK,
            "\ntorch==2.13.0\n",
            "\ntorch==2.13.0+cpu\n",
            [LOCK, "torch", "local label", "2.13.0"],
        ),
    ],
)
def test_checker_reports_a_broken_copy(
    tree: Path, name: str, old: str, new: str, expected: list[str]
) -> None:
    _edit(tree, name, old, new)
    problems = find_pin_problems(tree)
    assert any(all(part in p for part in expected) for p in problems), (
        f"no problem names all of {expected}; got:\n" + "\n".join(problems)
    )


def test_local_labels_are_ignored_when_comparing(tree: Path) -> None:
    # 2.13.0+cpu in the lock is one problem (the label), not a mismatch in every other file.
    _edit(tree, LOCK, "\ntorch==2.13.0\n", "\ntorch==2.13.0+cpu\n")
    problems = find_pin_problems(tree)
    assert len(problems) == 1 and "local label" in problems[0], "\n".join(problems)
    assert normalize_version("2.13.0+cpu") == Version("2.13.0")


@pytest.mark.parametrize(
    ("line", "message"),
    [("numpy>=2", "expected 'name==version'"), ("numpy==2.4.6\nnumpy==2.4.6", "pinned twice")],
)
def test_lock_reader_rejects_bad_lines(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / LOCK
    path.write_text(f"# header\n{line}\n")
    with pytest.raises(PinFileError, match=message):
        read_lock(path)


def test_names_are_normalised() -> None:
    assert normalize_name("PyYAML") == normalize_name("pyyaml") == "pyyaml"
    assert normalize_name("jupyter_server") == normalize_name("Jupyter.Server") == "jupyter-server"
    assert normalize_name("pytorch-cpu") == "torch"
    assert normalize_name("matplotlib-base") == "matplotlib"


@pytest.mark.parametrize(
    ("script", "runs"),
    [
        ("set -e\nmake test\n", True),
        ("make -k PYTHON=python3 test\n", True),
        ("if ! make test; then exit 1; fi\n", True),
        ("# make test\nmake lint\n", False),
        ("make testing\n", False),
        ("echo make lab\n", False),
    ],
)
def test_make_test_detection(script: str, runs: bool) -> None:
    assert _runs_make_test(script) is runs
