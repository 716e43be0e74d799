"""Binder builds what binder/ asks for: repo2docker's generated Dockerfile, without Docker.

``repo2docker --no-build`` reads a repository's configuration and prints the Dockerfile it
would build, without needing Docker. Run on a fresh ``git clone`` of this repository (only
committed files, as mybinder.org sees them), it must pick the conda buildpack, install
``binder/environment.yml`` into the base environment, and then run ``binder/postBuild``.
The packages binder/environment.yml leaves to the base image (tests/test_pins.py) must be in
repo2docker's frozen base environment for the Python version the file pins.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import repo2docker  # only to find its frozen base environment
from support.pins import BINDER_BASE_PROVIDES, PYTHON_MINOR, normalize_name

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dockerfile(tmp_path_factory: pytest.TempPathFactory) -> str:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout to clone")
    clone = tmp_path_factory.mktemp("binder") / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=120)
    result = subprocess.run(
        [
            *(sys.executable, "-m", "repo2docker"),
            *("--no-build", "--user-id", "1000", "--user-name", "jovyan", str(clone)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=clone,
    )
    assert result.returncode == 0, f"repo2docker --no-build failed:\n{result.stderr[-3000:]}"
    # stdout is the Dockerfile; stderr says which environment the buildpack builds.
    return result.stderr + result.stdout


@pytest.mark.slow
def test_conda_buildpack_installs_the_environment_then_runs_post_build(dockerfile: str) -> None:
    # The conda buildpack's own scripts are copied in under their escaped source path.
    assert "buildpacks-2fconda-2finstall-2dbase-2denv" in dockerfile, "not the conda buildpack"
    assert f"Building conda environment for python={PYTHON_MINOR}" in dockerfile
    install = re.search(
        r'env update -p \$\{NB_PYTHON_PREFIX\} --file "binder/environment\.yml"', dockerfile
    )
    assert install, "the Dockerfile does not install binder/environment.yml"
    post_build = dockerfile.find("RUN ./binder/postBuild")
    assert post_build > install.start(), "binder/postBuild does not run after the environment"
    # Only binder/ is read once it exists: the top-level environment.yml (tests, benchmarks,
    # docs) must not end up in the image.
    assert '--file "environment.yml"' not in dockerfile


def test_the_base_image_provides_what_binder_leaves_out() -> None:
    lock = Path(repo2docker.__file__).parent / "buildpacks" / "conda"
    lock_file = lock / f"environment.py-{PYTHON_MINOR}-linux-64.lock"
    package = re.compile(r"/noarch/([A-Za-z0-9_.-]+?)-\d[^/]*\.conda")
    names = {normalize_name(match[1]) for match in package.finditer(lock_file.read_text())}
    missing = sorted(BINDER_BASE_PROVIDES - names)
    assert not missing, f"repo2docker's base environment ({lock_file.name}) lacks {missing}"
