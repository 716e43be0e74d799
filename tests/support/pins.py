"""The pin checker: every install path agrees with ``requirements.lock``, the one version source.

The files checked: ``requirements.lock`` (pip, ``make lab``/``make test``), ``pyproject.toml``
(ranges of the core and the extras), ``environment.yml`` (conda users) and
``binder/environment.yml`` (Binder). Names are compared after PEP 503 normalisation and a small
conda-forge -> PyPI name map; versions after dropping local labels (``2.13.0+cpu`` -> ``2.13.0``).
The parsers take paths, so ``tests/test_pins.py`` runs the same checker on the real files and on
broken copies, and asserts that it reports the file, the package and both versions.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parents[2]
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
