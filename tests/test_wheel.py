"""The lessons after ``pip install``: build the sdist and wheel, install, copy, execute.

What a user does, without a repository checkout: the sdist and wheel are built from a copy of
this repository's files (``python -m build --no-isolation``: no download), the wheel is
installed with ``--no-deps`` into a fresh virtual environment, ``python -m sparsegrad_lab
lessons DEST`` copies the lessons into an empty folder outside the repository, and every
lesson is executed there by a kernel of that environment.

The fresh environment has no pip and no packages of its own: a ``.pth`` file puts this
environment's site-packages (torch, Jupyter, ...) after its own, so torch is not installed
again. A ``.pth`` line that is a plain path adds that folder without running the ``.pth``
files inside it, so the editable install of the checkout living there is never activated;
the tests also check that ``sparsegrad_lab`` is imported from the fresh environment.

An editable install is checked too: it must copy the checkout's current lessons, not a copy
made at install time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted((ROOT / "notebooks").glob("*.ipynb"))
RESULTS = sorted((ROOT / "benchmarks" / "results").glob("*.json"))

pytestmark = pytest.mark.slow


def _repository_files() -> list[str]:
    """Tracked and untracked-but-not-ignored files: what a clean checkout would hold."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [name for name in listed.split("\0") if name and (ROOT / name).is_file()]


def _copy_repository(target: Path) -> Path:
    for name in _repository_files():
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes((ROOT / name).read_bytes())
    return target


def _clean_env(**extra: str) -> dict[str, str]:
    """No PYTHONPATH (it would import the checkout), nothing borrowed from the caller's venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.pop("MPLBACKEND", None)
    env.update(extra)
    return env


def _fresh_venv(path: Path) -> Path:
    """A venv without pip whose packages, beyond its own, are this environment's."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    shared = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(purelib) / "_shared_environment.pth").write_text("\n".join(sorted(shared)) + "\n")
    return python


def _run(python: Path, *args: str, cwd: Path, **kwargs: object) -> str:
    result = subprocess.run(
        [str(python), *args], cwd=cwd, env=_clean_env(), capture_output=True, text=True
    )
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    source = _copy_repository(tmp_path_factory.mktemp("source") / "sparsegrad_lab")
    out = tmp_path_factory.mktemp("dist")
    # build makes the sdist, then the wheel from the unpacked sdist: a wheel that has the
    # lessons proves the sdist carries them too.
    result = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"python -m build failed:\n{result.stderr[-3000:]}"
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return {"wheel": wheel, "sdist": sdist, "source": source}


@pytest.fixture(scope="module")
def installed(dists: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    python = _fresh_venv(tmp_path_factory.mktemp("venv") / "fresh")
    _run(python, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet",
         str(dists["wheel"]), cwd=dists["wheel"].parent)  # fmt: skip
    return python


def test_sdist_holds_the_lessons_results_and_licences(dists: dict[str, Path]) -> None:
    with tarfile.open(dists["sdist"]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    expected = {f"notebooks/{p.name}" for p in LESSONS} | {
        f"benchmarks/results/{p.name}" for p in RESULTS
    }
    expected |= {"LICENSE", "LICENSE-lessons.md", "CITATION.cff", "setup.py", "pyproject.toml"}
    assert expected <= names, f"missing from the sdist: {sorted(expected - names)}"
    assert not [n for n in names if n.startswith(("tests/", "node_modules/", "_build/"))]


def test_wheel_holds_the_lessons_byte_for_byte(dists: dict[str, Path]) -> None:
    with zipfile.ZipFile(dists["wheel"]) as wheel:
        names = set(wheel.namelist())
        for lesson in LESSONS:
            packaged = f"sparsegrad_lab/_course/notebooks/{lesson.name}"
            assert packaged in names, f"the wheel lacks {packaged}"
            assert wheel.read(packaged) == lesson.read_bytes(), f"{packaged} differs"
        for result in RESULTS:
            assert f"sparsegrad_lab/_course/benchmarks/results/{result.name}" in names
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        text = wheel.read(metadata).decode()
    assert "License-Expression: MIT" in text
    assert any(n.endswith(".dist-info/licenses/LICENSE-lessons.md") for n in names)


def test_installed_package_finds_its_own_lessons(installed: Path, tmp_path: Path) -> None:
    probe = (
        "import json, sparsegrad_lab\n"
        "from sparsegrad_lab.lessons import benchmark_results_dir, course_root, lesson_paths\n"
        "print(json.dumps({'package': sparsegrad_lab.__file__, 'root': str(course_root()),\n"
        "    'lessons': [p.name for p in lesson_paths()],\n"
        "    'results': sorted(p.name for p in benchmark_results_dir().glob('*.json'))}))"
    )
    found = json.loads(_run(installed, "-c", probe, cwd=tmp_path))
    venv = installed.parent.parent
    assert Path(found["package"]).is_relative_to(venv), f"imported {found['package']}"
    assert Path(found["root"]).is_relative_to(venv)
    assert found["lessons"] == [p.name for p in LESSONS]
    assert found["results"] == [p.name for p in RESULTS]


@pytest.fixture(scope="module")
def copied(installed: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("user")
    out = _run(installed, "-m", "sparsegrad_lab", "lessons", "lessons", cwd=workdir)
    assert "instructor edition" in out
    return workdir / "lessons"


def test_lessons_command_copies_the_instructor_edition(copied: Path) -> None:
    assert sorted(p.name for p in copied.iterdir()) == [p.name for p in LESSONS]
    for lesson in LESSONS:
        assert (copied / lesson.name).read_bytes() == lesson.read_bytes()


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_lesson_runs_from_the_installed_package(
    installed: Path, copied: Path, lesson: Path, tmp_path: Path
) -> None:
    # A kernel spec of our own, so the kernel is this venv's python whatever else is installed.
    kernels = tmp_path / "jupyter" / "kernels" / "fresh"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [str(installed), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "fresh venv",
                "language": "python",
            }
        )
    )
    notebook = nbformat.read(copied / lesson.name, as_version=4)
    # One more cell, in memory only: where the kernel imported the package from.
    probe = "import sparsegrad_lab\nsparsegrad_lab.__file__"
    notebook.cells.append(nbformat.v4.new_code_cell(probe))
    client = NotebookClient(
        notebook,
        timeout=300,
        kernel_name="fresh",
        resources={"metadata": {"path": str(copied)}},
    )
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(_clean_env(JUPYTER_PATH=str(tmp_path / "jupyter")))
    try:
        client.execute(cwd=str(copied))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    imported = notebook.cells[-1].outputs[0]["data"]["text/plain"].strip("'")
    assert Path(imported).is_relative_to(installed.parent.parent), f"kernel imported {imported}"


def test_editable_install_reads_the_checkout_not_a_stale_copy(
    dists: dict[str, Path], tmp_path: Path
) -> None:
    source = dists["source"]
    python = _fresh_venv(tmp_path / "editable")
    _run(python, "-m", "pip", "install", "--no-deps", "--no-index", "--no-build-isolation",
         "--quiet", "-e", str(source), cwd=tmp_path)  # fmt: skip
    # Changed after the install: an editable install must see the change.
    changed = source / "notebooks" / LESSONS[0].name
    changed.write_bytes(changed.read_bytes().replace(b'"cells"', b'"cells" ', 1))
    _run(python, "-m", "sparsegrad_lab", "lessons", "out", cwd=tmp_path)
    assert (tmp_path / "out" / LESSONS[0].name).read_bytes() == changed.read_bytes()
