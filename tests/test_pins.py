"""Every install path agrees with requirements.lock, the project's single source of versions.

The files checked: ``requirements.lock`` (pip, ``make lab``/``make test``), ``pyproject.toml``
(ranges of the core and the extras), ``environment.yml`` (conda users) and
``binder/environment.yml`` (Binder). Names are compared after PEP 503 normalisation and a small
conda-forge -> PyPI name map; versions after dropping local labels (``2.13.0+cpu`` -> ``2.13.0``).
The parsers take paths, so the tests at the bottom run the same checker on broken copies and
assert that it reports the file, the package and both versions.
"""

from __future__ import annotations

import json
import re
import shutil
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parent.parent
LOCK = "requirements.lock"
PYPROJECT = "pyproject.toml"
ENV_FILE = "environment.yml"
BINDER_ENV_FILE = "binder/environment.yml"

# conda-forge names whose PyPI name differs. Only names used in this project's env files.
CONDA_TO_PYPI = {
    "pytorch-cpu": "torch",
    "pytorch": "torch",
    "pytorch-gpu": "torch",
    "matplotlib-base": "matplotlib",
    "nbconvert-core": "nbconvert",
    "python-build": "build",
}
# Listed in env files, absent from the lock on purpose: the interpreter and pip itself
# (`pip freeze` leaves pip out). Add a conda-only package here with a comment saying why.
NOT_IN_LOCK = frozenset({"python", "pip"})
# The conda spellings of torch allowed: conda-forge's CPU-only metapackage, or `pytorch` with
# a CPU build string (`pytorch==2.13.0=cpu_generic*`: CPU, without MKL).
CPU_TORCH_CONDA_NAME = "pytorch-cpu"
CPU_TORCH_BUILD_PREFIX = "cpu"
# What repo2docker's base environment provides as a set that fits together (its notebook 7.4
# requires jupyterlab < 4.5): binder/environment.yml must not pin them, or the solver
# replaces the base image's Jupyter with an untested combination.
BINDER_BASE_PROVIDES = frozenset({"jupyterlab", "notebook", "jupyter-server"})
PYTHON_MINOR = "3.11"
# pyproject sections that users install into environments of their own: floors only, no cap
# (see _cap_problems). The test and docs extras are contributors' tools and stay capped.
UNCAPPED_SECTIONS = frozenset({"dependencies", "extra lab", "extra bench"})
# Exact pins allowed there: the benchmark compares against this one release (third_party.py).
EXACT_ALLOWED = frozenset({("extra bench", "torchsparsegradutils")})


class PinFileError(ValueError):
    """A pin file that cannot be read as the format it claims to be."""


@dataclass(frozen=True)
class Pin:
    """One requirement line of one file, in PyPI terms.

    ``file`` and ``section`` say where it was found, ``raw_name`` how that file spells the
    package, ``name`` the normalised PyPI name, ``spec`` the versions it admits and ``exact``
    the single version it pins (None for a range or no version).
    """

    file: str
    section: str
    raw_name: str
    name: str
    spec: SpecifierSet
    exact: Version | None
    build: str | None = None

    @property
    def label(self) -> str:
        alias = f" ({self.name} on PyPI)" if _pep503(self.raw_name) != self.name else ""
        return f"{self.file} [{self.section}]: {self.raw_name}{alias}"


@dataclass(frozen=True)
class CondaEnv:
    """What a conda environment file asks for."""

    file: str
    channels: list[str]
    conda: list[Pin]
    pip: list[Pin]
    pip_options: list[str]
    python: str | None


def _pep503(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def normalize_name(name: str) -> str:
    """PEP 503 name, after mapping a conda-forge name to its PyPI one."""
    return CONDA_TO_PYPI.get(_pep503(name), _pep503(name))


def normalize_version(version: str | Version) -> Version:
    """The public part of a PEP 440 version: ``2.13.0+cpu`` and ``2.13.0`` are the same pin."""
    return Version(Version(str(version)).public)


def _exact(spec: SpecifierSet) -> Version | None:
    specs = list(spec)
    if len(specs) == 1 and specs[0].operator in ("==", "===") and "*" not in specs[0].version:
        return normalize_version(specs[0].version)
    return None


def read_lock(path: Path) -> dict[str, str]:
    """Map normalised name -> version string as written (local label kept) for every line.

    Raises PinFileError for a line that is not ``name==version`` or a name given twice.
    """
    pins: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*(\S+)", line)
        if match is None:
            raise PinFileError(f"{path.name}:{number}: expected 'name==version', got {line!r}")
        name = normalize_name(match[1])
        if name in pins:
            raise PinFileError(f"{path.name}:{number}: {match[1]} is pinned twice")
        try:
            Version(match[2])
        except InvalidVersion:
            raise PinFileError(f"{path.name}:{number}: {match[2]!r} is not a version") from None
        pins[name] = match[2]
    return pins


def _requirement_pin(text: str, file: str, section: str) -> Pin:
    try:
        req = Requirement(text)
    except InvalidRequirement as exc:
        raise PinFileError(f"{file} [{section}]: cannot read {text!r}: {exc}") from None
    return Pin(
        file, section, req.name, normalize_name(req.name), req.specifier, _exact(req.specifier)
    )


def read_pyproject(path: Path, file: str = PYPROJECT) -> tuple[list[Pin], SpecifierSet]:
    """The core and every extra's requirements, and ``requires-python``."""
    project = tomllib.loads(path.read_text())["project"]
    pins = [_requirement_pin(r, file, "dependencies") for r in project.get("dependencies", [])]
    for extra, reqs in project.get("optional-dependencies", {}).items():
        pins += [_requirement_pin(r, file, f"extra {extra}") for r in reqs]
    return pins, SpecifierSet(project.get("requires-python", ""))


def _conda_pin(text: str, file: str) -> Pin:
    # MatchSpec forms used in environment files: name, name==1.2, name=1.2 (means 1.2.*),
    # name>=1,<2, channel::name==1.2, and a build string after an exact version
    # (name==1.2=cpu_generic*).
    match = re.fullmatch(
        r"(?:[\w.-]+::)?([A-Za-z0-9][A-Za-z0-9._-]*)\s*(==|=|>=|<=|>|<|!=)?(.*)", text
    )
    if match is None or bool(match[2]) != bool(match[3].strip()):
        raise PinFileError(f"{file} [conda]: cannot read the conda spec {text!r}")
    name, op, version = match[1], match[2], match[3].strip()
    build = None
    if op == "==" and version.count("=") == 1:
        version, build = version.split("=")
        if not re.fullmatch(r"[\w.*]+", build):
            raise PinFileError(f"{file} [conda]: cannot read the build string of {text!r}")
    if op in ("=", "==") and re.search(r"[=\s,<>!]", version):
        raise PinFileError(f"{file} [conda]: cannot read the conda spec {text!r}")
    try:
        if op is None:
            spec = SpecifierSet()
        elif op == "=":
            # conda's single '=' is a prefix match: 2.4.6 admits 2.4.6.1, so it is no exact pin.
            spec = SpecifierSet(f"=={version.removesuffix('*').rstrip('.')}.*")
        else:
            spec = SpecifierSet(f"{op}{version}")
    except InvalidSpecifier:
        raise PinFileError(f"{file} [conda]: cannot read the conda spec {text!r}") from None
    return Pin(file, "conda", name, normalize_name(name), spec, _exact(spec), build)


def read_conda_env(path: Path, file: str) -> CondaEnv:
    """Channels, conda specs, pip requirements, pip options and the python spec of a file."""
    data = yaml.safe_load(path.read_text()) or {}
    conda: list[Pin] = []
    pip: list[Pin] = []
    options: list[str] = []
    python = None
    for item in data.get("dependencies", []):
        if isinstance(item, dict) and set(item) == {"pip"}:
            for line in item["pip"]:
                line = str(line).strip()
                if line.startswith("-"):
                    options.append(" ".join(line.split()))
                else:
                    pip.append(_requirement_pin(line, file, "pip"))
        elif isinstance(item, str):
            pin = _conda_pin(item.strip(), file)
            if pin.name == "python":
                python = re.sub(r"\s+", "", item)
            conda.append(pin)
        else:
            raise PinFileError(f"{file}: cannot read the dependency {item!r}")
    return CondaEnv(file, list(data.get("channels", [])), conda, pip, options, python)


def _lock_problems(lock: dict[str, str]) -> list[str]:
    return [
        f"{LOCK}: {name}=={version} carries a local label; pin the plain {Version(version).public}"
        " (PyPI serves no local versions)"
        for name, version in lock.items()
        if Version(version).local is not None
    ]


def _pin_problems(pins: list[Pin], lock: dict[str, str]) -> list[str]:
    """Exact pins equal the lock's version; ranges admit it; every package is in the lock."""
    problems = []
    for pin in pins:
        if pin.name in NOT_IN_LOCK:
            continue
        if pin.name not in lock:
            problems.append(f"{pin.label} is not in {LOCK}; add it there first")
            continue
        locked = normalize_version(lock[pin.name])
        if pin.exact is not None and pin.exact != locked:
            problems.append(f"{pin.label} is pinned to {pin.exact} but {LOCK} has {locked}")
        elif not pin.spec.contains(locked, prereleases=True):
            problems.append(f"{pin.label}{pin.spec} does not admit {LOCK}'s version {locked}")
    return problems


def _newer_than(version: Version) -> list[Version]:
    major, minor, micro = (*version.release, 0, 0)[:3]
    return [
        Version(f"{major}.{minor}.{micro + 1}"),
        Version(f"{major}.{minor + 1}.0"),
        Version(f"{major}.{minor + 1}.0rc1"),
        Version(f"{major + 1}.0.0"),
        Version(f"{version.public}.post1"),
        Version("9999"),
    ]


def _cap_problems(pins: list[Pin], lock: dict[str, str]) -> list[str]:
    """The core and the user-facing extras admit every release newer than the lock's.

    They are installed into environments that already hold torch, numpy, matplotlib...
    (Colab, a user's CUDA torch): a range that stops at our locked version would make pip
    replace a newer one there -- for torch, with several GB of CUDA wheels from PyPI.
    """
    problems = []
    for pin in pins:
        if pin.section not in UNCAPPED_SECTIONS or pin.name not in lock:
            continue
        if (pin.section, pin.name) in EXACT_ALLOWED and pin.exact is not None:
            continue
        locked = normalize_version(lock[pin.name])
        refused = [v for v in _newer_than(locked) if not pin.spec.contains(v, prereleases=True)]
        if refused:
            problems.append(
                f"{pin.label}{pin.spec} refuses {pin.name} {refused[0]}, newer than {LOCK}'s "
                f"{locked}: installing the package would downgrade it in a user's environment; "
                "declare a floor only (the lock pins our own installs)"
            )
    return problems


def _env_problems(
    env: CondaEnv,
    must_install: set[str],
    editable_allowed: bool,
    must_not_pin: frozenset[str] = frozenset(),
) -> list[str]:
    """Conda-forge only, exact pins, CPU torch from conda, and every needed package present.

    ``must_not_pin``: packages the environment must leave to its base image.
    """
    problems = [
        f"{pin.label}: do not list it here; the base image provides it (notebook, jupyterlab "
        "and jupyter_server come as a set that fits together)"
        for pin in env.conda + env.pip
        if pin.name in must_not_pin
    ]
    if [c for c in env.channels if c != "nodefaults"] != ["conda-forge"]:
        problems.append(f"{env.file}: channels are {env.channels}, expected conda-forge only")
    if env.python != f"python={PYTHON_MINOR}":
        problems.append(f"{env.file}: python is {env.python!r}, expected 'python={PYTHON_MINOR}'")
    for pin in env.conda + env.pip:
        if pin.name not in NOT_IN_LOCK and pin.exact is None:
            prefix = pin.section == "conda" and str(pin.spec).endswith(".*")
            hint = " (conda's '=' is a prefix match: use '==')" if prefix else ""
            problems.append(f"{pin.label}{pin.spec} is not an exact pin{hint}")
        cpu_build = (pin.build or "").startswith(CPU_TORCH_BUILD_PREFIX)
        if pin.name == "torch" and not (
            pin.raw_name == CPU_TORCH_CONDA_NAME or (pin.raw_name == "pytorch" and cpu_build)
        ):
            problems.append(
                f"{pin.label}: torch must come from conda-forge as {CPU_TORCH_CONDA_NAME} or "
                f"as pytorch with a {CPU_TORCH_BUILD_PREFIX}* build string (another name, "
                "another build or pip may install a CUDA build)"
            )
    listed = {pin.name for pin in env.conda + env.pip}
    for name in sorted(must_install - listed):
        problems.append(f"{env.file}: does not install {name}, which pyproject.toml requires")
    allowed_options = {"-e ."} if editable_allowed else set()
    for option in env.pip_options:
        if option not in allowed_options:
            why = "binder/postBuild installs the package" if option == "-e ." else "not needed"
            problems.append(f"{env.file} [pip]: unexpected option {option!r} ({why})")
    if editable_allowed and "-e ." in env.pip_options and env.pip_options[-1:] != ["-e ."]:
        problems.append(f"{env.file} [pip]: '-e .' must be the last pip line")
    return problems


def find_pin_problems(root: Path) -> list[str]:
    """Every disagreement between the lock and the other install files under ``root``."""
    lock = read_lock(root / LOCK)
    pyproject, requires_python = read_pyproject(root / PYPROJECT)
    env = read_conda_env(root / ENV_FILE, ENV_FILE)
    binder = read_conda_env(root / BINDER_ENV_FILE, BINDER_ENV_FILE)

    problems = _lock_problems(lock)
    if not requires_python.contains(PYTHON_MINOR):
        problems.append(f"{PYPROJECT}: requires-python {requires_python} excludes {PYTHON_MINOR}")
    problems += _pin_problems(pyproject, lock)
    problems += _cap_problems(pyproject, lock)
    for conda_env in (env, binder):
        problems += _pin_problems(conda_env.conda + conda_env.pip, lock)
    # environment.yml installs everything; Binder only what the lessons import.
    problems += _env_problems(env, {p.name for p in pyproject}, editable_allowed=True)
    lesson_needs = {p.name for p in pyproject if p.section in ("dependencies", "extra lab")}
    problems += _env_problems(
        binder,
        lesson_needs - BINDER_BASE_PROVIDES,
        editable_allowed=False,
        must_not_pin=BINDER_BASE_PROVIDES,
    )
    return problems


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
