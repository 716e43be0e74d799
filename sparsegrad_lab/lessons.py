"""The lessons as files: where they are, copying them out, and the student edition.

The repository's ``notebooks/`` folder is the instructor edition and the source of truth. The
lessons are nbgrader *source* notebooks (nbgrader's cell metadata, schema 3):

* each exercise's solution sits between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` in a
  solution cell; code solution cells also carry the :data:`SOLUTION_TAG` tag, which folds them
  on the lessons' website;
* each autograded test cell carries points; what it compares against is computed only
  between ``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS``, on inputs of its own;
* each written question has a manually graded answer cell with points, whose model answer and
  rubric are its solution region;
* every other cell is read-only (``locked``).

A wheel carries a copy of the lessons, with the committed benchmark results that lesson 03
draws, as package data under ``sparsegrad_lab/_course/`` (``setup.py`` copies them there at
build time). :func:`course_root` finds whichever applies, so the same call works

* from a checkout or an editable install (the package sits next to ``notebooks/`` and
  ``benchmarks/`` in a repository: those are read, never a copy that may be stale), and
* from a wheel install (the package's own ``_course/`` copy).

:func:`copy_lessons` writes the lessons into a folder of the user's; with ``student=True`` it
writes the student edition, :func:`student_notebook`: what ``nbgrader generate_assignment``
releases, made by nbgrader's own preprocessors, with launch badges that open the copies in a
repository the tutor names, or none. :mod:`sparsegrad_lab.course` writes a whole nbgrader
course directory.

>>> sorted(p.name for p in lesson_paths())[:1]
['00_start_here.ipynb']
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
import tempfile
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from .errors import InputValueError, SparseGradLabError
from .notebook import BINDER_REPO, binder_url, colab_url

__all__ = [
    "SOLUTION_TAG",
    "GradedCell",
    "StudentEditionError",
    "benchmark_results_dir",
    "copy_lessons",
    "course_root",
    "course_source",
    "exercise_titles",
    "graded_cells",
    "launch_badges",
    "lesson_paths",
    "student_notebook",
]

#: The cell tag of an exercise's code solution in the instructor edition: the lessons'
#: website folds these cells (nbgrader reads its own metadata, not this tag).
SOLUTION_TAG = "solution"
# The folder inside the installed package that holds the wheel's copy (see setup.py).
_PACKAGED = "_course"
_PROJECT_NAME = "sparsegrad-lab"


class StudentEditionError(SparseGradLabError, ValueError):
    """A lesson cannot be turned into a student edition (nbgrader missing or refusing it)."""


def _checkout_root() -> Path | None:
    """The repository this package was imported from, or None for an installed package.

    A checkout (and an editable install, which imports from it) has ``pyproject.toml`` naming
    this project next to the package folder.
    """
    package = files("sparsegrad_lab")
    if not isinstance(package, Path):  # a zip import is never a checkout
        return None
    root = package.parent
    pyproject = root / "pyproject.toml"
    try:
        text = pyproject.read_text(encoding="utf-8")
    except OSError:
        return None
    return root if re.search(rf'^name\s*=\s*"{_PROJECT_NAME}"', text, re.M) else None


def course_root() -> Path:
    """The folder holding ``notebooks/`` and ``benchmarks/results/`` for this install.

    The repository's root when the package is imported from a checkout (plain or editable),
    else the wheel's ``sparsegrad_lab/_course`` folder.

    >>> (course_root() / "notebooks").is_dir()
    True
    """
    checkout = _checkout_root()
    if checkout is not None:
        return checkout
    packaged = files("sparsegrad_lab") / _PACKAGED
    if not isinstance(packaged, Path) or not (packaged / "notebooks").is_dir():
        raise SparseGradLabError(
            "course_root(): this installation of sparsegrad_lab carries no lessons "
            f"(looked for {packaged}/notebooks); install it from a wheel built by "
            "`python -m build`, or run from a checkout of the repository"
        )
    return packaged


def benchmark_results_dir() -> Path:
    """The folder of committed benchmark results (``*.json``, ``*.png``) the lessons read.

    The repository's ``benchmarks/results`` in a checkout, the wheel's copy otherwise; use
    it instead of a relative path so a lesson runs wherever it was copied to (Colab included).

    >>> any(benchmark_results_dir().glob("*.json"))
    True
    """
    return course_root() / "benchmarks" / "results"


def lesson_paths() -> list[Path]:
    """Every lesson notebook of the instructor edition, in lesson order.

    >>> all(path.suffix == ".ipynb" for path in lesson_paths())
    True
    """
    return sorted((course_root() / "notebooks").glob("*.ipynb"))


# ------------------------------------------------------------------------ graded exercises


def _text(source: str | list[str]) -> str:
    return source if isinstance(source, str) else "".join(source)


def _nbgrader(cell: dict[str, Any]) -> dict[str, Any]:
    return dict(cell.get("metadata", {}).get("nbgrader", {}))


# nbgrader's region markers (``### BEGIN SOLUTION``...): headings in markdown, never titles.
_MARKER = re.compile(r"^#+\s*(BEGIN|END) (SOLUTION|HIDDEN TESTS|MARK SCHEME)\s*$")


@dataclass(frozen=True)
class GradedCell:
    """One cell of a lesson that earns points: an autograded test or a written answer.

    ``title`` is the heading of the exercise it belongs to (see :func:`exercise_titles`),
    ``by_hand`` is True for a written answer graded by hand (nbgrader's "manually graded
    answer") and False for a test cell nbgrader's autograder runs.
    """

    grade_id: str
    title: str
    points: float
    by_hand: bool


def graded_cells(notebook: dict[str, Any]) -> list[GradedCell]:
    """Every cell that earns points, in lesson order (nbformat 4 JSON as a dict).

    A graded cell has nbgrader metadata with ``grade: true``; it belongs to the exercise whose
    heading (the last markdown heading of level 2 to 4 above it) comes before it.

    >>> graded_cells({"cells": [
    ...     {"cell_type": "markdown", "source": "### Exercise 1"},
    ...     {"cell_type": "code", "source": "assert n == 1", "metadata": {"nbgrader": {
    ...         "grade": True, "solution": False, "grade_id": "ex1-tests", "points": 2}}}]})
    [GradedCell(grade_id='ex1-tests', title='Exercise 1', points=2, by_hand=False)]
    """
    graded: list[GradedCell] = []
    heading = ""
    for cell in notebook["cells"]:
        if cell["cell_type"] == "markdown":
            found = [
                line.lstrip("#").strip()
                for line in _text(cell["source"]).splitlines()
                if re.match(r"^#{2,4}\s+\S", line) and not _MARKER.match(line.strip())
            ]
            heading = found[-1] if found else heading
        meta = _nbgrader(cell)
        if meta.get("grade"):
            graded.append(
                GradedCell(
                    grade_id=str(meta["grade_id"]),
                    title=heading or f"exercise {len(graded) + 1}",
                    points=meta.get("points", 0),
                    by_hand=bool(meta.get("solution")),
                )
            )
    return graded


def exercise_titles(notebook: dict[str, Any]) -> list[str]:
    """The title of each graded exercise of a lesson (nbformat 4 JSON as a dict), in order.

    The headings of :func:`graded_cells`, each once. The lessons' website lists them on the
    tutors' page.

    >>> exercise_titles({"cells": [
    ...     {"cell_type": "markdown", "source": "## Exercises\\n\\n### 1. Count the bytes"},
    ...     {"cell_type": "code", "source": "n = 1", "metadata": {"nbgrader": {
    ...         "grade": False, "solution": True, "grade_id": "ex1"}}},
    ...     {"cell_type": "code", "source": "assert n == 1", "metadata": {"nbgrader": {
    ...         "grade": True, "solution": False, "grade_id": "ex1-tests", "points": 1}}}]})
    ['1. Count the bytes']
    """
    return list(dict.fromkeys(cell.title for cell in graded_cells(notebook)))


# ------------------------------------------------------------------------ student edition

# The instructor edition's launch badges: an image link whose target is binder_url() or
# colab_url() of a lesson (sparsegrad_lab.notebook), i.e. the public repository.
_BADGE = re.compile(r"\[!\[[^\]]*\]\([^)\s]+\)\]\((?P<link>[^)\s]+)\)")
_REPOSITORY = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$")


def _lesson_of_link(link: str) -> str | None:
    """The lesson a link of the instructor edition opens on Binder or Colab, else None."""
    name = link.rsplit("/", 1)[-1]
    return name if link in (binder_url(name), colab_url(name)) else None


def launch_badges(
    text: str, repo: str | None = None, branch: str = "main", folder: str = ""
) -> str:
    """Markdown whose Binder and Colab badges open the lessons from ``repo``, or have none.

    Only the badges that open a lesson from this project's public repository (the instructor
    edition) are touched. With ``repo`` (``"OWNER/NAME"`` on GitHub) they open the lesson of
    the same name at ``branch``, in ``folder`` of that repository (its root by default;
    ``{lesson}`` in it stands for the lesson's name without ``.ipynb``); without, they are
    removed, with the lines they leave empty.

    >>> text = f"# 00\\n\\n[![Open in Binder](b.svg)]({binder_url('00_start_here.ipynb')})\\n\\nHi."
    >>> launch_badges(text)
    '# 00\\n\\nHi.'
    >>> print(launch_badges(text, "tutor/course", "term1").splitlines()[2])
    [![Open in Binder](b.svg)](https://mybinder.org/v2/gh/tutor/course/term1?urlpath=lab/tree/00_start_here.ipynb)
    """
    if repo is not None and not _REPOSITORY.match(repo):
        raise InputValueError(
            f"launch_badges(repo={repo!r}): expected a GitHub repository as OWNER/NAME"
        )
    if repo is not None and repo.lower() == BINDER_REPO.lower():
        raise InputValueError(
            f"launch_badges(repo={repo!r}): that repository holds the instructor edition, with "
            "every solution; name the repository your students' copies are in"
        )
    if not branch.strip() or any(c.isspace() for c in branch) or "?" in branch:
        raise InputValueError(f"launch_badges(branch={branch!r}): expected a branch name")

    def replace(match: re.Match[str]) -> str:
        link = match["link"]
        lesson = _lesson_of_link(link)
        if lesson is None:
            return match[0]
        if repo is None:
            return ""
        where = folder.format(lesson=lesson.removesuffix(".ipynb")).strip("/")
        path = f"{where}/{lesson}" if where else lesson
        if link == binder_url(lesson):
            target = f"https://mybinder.org/v2/gh/{repo}/{branch}?urlpath=lab/tree/{path}"
        else:
            target = f"https://colab.research.google.com/github/{repo}/blob/{branch}/{path}"
        return match[0].replace(f"]({link})", f"]({target})")

    lines: list[str] = []
    for line in text.split("\n"):
        kept = _BADGE.sub(replace, line)
        if kept != line and not kept.strip():
            continue  # the line held badges only, and they are gone
        lines.append(kept.rstrip() if kept != line else line)
    out = "\n".join(lines)
    # A badge line dropped between two blank lines leaves one blank line, not two.
    return re.sub(r"\n{3,}", "\n\n", out) if out != text else out


def course_source(
    notebook: dict[str, Any], repo: str | None = None, branch: str = "main", folder: str = ""
) -> dict[str, Any]:
    """A lesson as nbgrader's source notebook for a course; the input is unchanged.

    The instructor edition with the launch badges of :func:`launch_badges` (the tutor's
    repository, or none) and without the :data:`SOLUTION_TAG` tags, which only fold solutions
    on the lessons' website (in a course they would fold the students' stubs).
    """
    source = copy.deepcopy(notebook)
    for cell in source["cells"]:
        if cell["cell_type"] == "markdown":
            text = _text(cell["source"])
            rewritten = launch_badges(text, repo, branch, folder)
            if rewritten != text:
                cell["source"] = rewritten
        metadata = cell.get("metadata", {})
        if SOLUTION_TAG in metadata.get("tags", []):
            metadata["tags"] = [tag for tag in metadata["tags"] if tag != SOLUTION_TAG]
            if not metadata["tags"]:
                del metadata["tags"]
    return source


def _release_preprocessors(keep_outputs: bool) -> list[Any]:
    """nbgrader's own preprocessors of ``generate_assignment``, less those that need a course.

    Dropped: the gradebook's (``SaveCells``), and two that change nothing in these lessons
    (no header or footer is configured, no ``AUTOTEST`` line is used). With ``keep_outputs``
    ``ClearOutput`` goes too, and :func:`student_notebook` clears only the answers' outputs.
    """
    try:
        from nbgrader.converters.generate_assignment import GenerateAssignment
        from nbgrader.preprocessors import (
            ClearOutput,
            IncludeHeaderFooter,
            InstantiateTests,
            SaveCells,
        )
    except ImportError as missing:
        raise StudentEditionError(
            f"the student edition is made by nbgrader, which is not installed ({missing}); "
            "pip install 'sparsegrad-lab[course]'"
        ) from None
    dropped = {IncludeHeaderFooter, InstantiateTests, SaveCells}
    if keep_outputs:
        dropped.add(ClearOutput)
    return [cls() for cls in GenerateAssignment().preprocessors if cls not in dropped]


def student_notebook(
    notebook: dict[str, Any],
    *,
    repo: str | None = None,
    branch: str = "main",
    folder: str = "",
    keep_outputs: bool = False,
    name: str = "the notebook",
) -> dict[str, Any]:
    """The student edition of one lesson (nbformat 4 JSON as a dict); the input is unchanged.

    What ``nbgrader generate_assignment`` releases from :func:`course_source`: nbgrader's own
    preprocessors replace each solution region by its stub (``raise NotImplementedError()``
    in code, "YOUR ANSWER HERE" in a written answer), remove the hidden tests, lock the
    read-only cells and clear every output. With ``keep_outputs=True`` (a website of the
    student edition) only the outputs of the answer and test cells are cleared, the rest of
    the lesson keeps its figures. Raises :class:`StudentEditionError` naming ``name`` when
    nbgrader refuses the lesson's metadata.
    """
    import nbformat

    # reads() joins the sources' lines, as nbgrader's preprocessors expect.
    source = nbformat.reads(json.dumps(course_source(notebook, repo, branch, folder)), as_version=4)
    resources: dict[str, Any] = {}
    try:
        for preprocessor in _release_preprocessors(keep_outputs):
            source, resources = preprocessor.preprocess(source, resources)
    except (RuntimeError, ValueError) as refused:
        raise StudentEditionError(
            f"student edition of {name}: nbgrader refused it: {refused}"
        ) from None
    if keep_outputs:
        for cell in source.cells:
            meta = cell.metadata.get("nbgrader", {})
            if cell.cell_type == "code" and (meta.get("solution") or meta.get("grade")):
                cell.outputs, cell.execution_count = [], None
    edition: dict[str, Any] = json.loads(nbformat.writes(source))
    return edition


def copy_lessons(
    dest: str | Path,
    student: bool = False,
    overwrite: bool = False,
    *,
    repo: str | None = None,
    branch: str = "main",
    folder: str = "",
) -> list[Path]:
    """Write every lesson into ``dest`` (created if needed); returns the written paths.

    ``student=False`` copies the instructor edition byte for byte; ``student=True`` writes
    :func:`student_notebook` of each, whose launch badges open the lessons from ``repo``
    (``OWNER/NAME``) at ``branch``, in ``folder`` of it, or which has none when ``repo`` is
    None. The lessons read nothing beside themselves but the installed package, so ``dest``
    can be any folder. An existing lesson file is refused unless ``overwrite=True``; so is,
    before anything is written, a ``dest`` that is a file, lies under one, cannot be created
    or cannot be written in, or is an empty name, and badges for the instructor edition
    (:class:`~sparsegrad_lab.errors.InputValueError`).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     written = copy_lessons(tmp)
    ...     (Path(tmp) / "00_start_here.ipynb") in written
    True
    """
    where = f"copy_lessons(dest={str(dest)!r})"
    if not str(dest).strip():  # Path("") is the working folder: an unset variable, surely
        raise InputValueError(f"{where}: expected a folder, got an empty name")
    dest = Path(dest)
    _check_folder(dest, where)
    if repo is not None and not student:
        raise InputValueError(
            f"{where}: repo= sets the student edition's launch badges; pass student=True"
        )
    if student:
        launch_badges("", repo, branch, folder)  # refuses a bad repository before any work
    sources = lesson_paths()
    clashes = [dest / path.name for path in sources if (dest / path.name).exists()]
    if clashes and not overwrite:
        raise InputValueError(
            f"{where}: {clashes[0].name} already exists there "
            f"({len(clashes)} lesson file(s) would be overwritten); choose an empty folder "
            "or pass overwrite=True (--force on the command line)"
        )
    _make_writable_folder(dest, where)
    written = []
    for path in sources:
        target = dest / path.name
        if student:
            notebook = json.loads(path.read_text(encoding="utf-8"))
            edition = student_notebook(
                notebook, repo=repo, branch=branch, folder=folder, name=path.name
            )
            # The layout nbformat writes (indent 1, a trailing newline), so diffs stay small.
            target.write_text(
                json.dumps(edition, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
            )
        else:
            target.write_bytes(path.read_bytes())
        written.append(target)
    return written


# ------------------------------------------------------------------------------ destinations


def _check_folder(folder: Path, where: str) -> None:
    """Raise :class:`InputValueError` if ``folder`` is a file or lies under one.

    Asks only; creates nothing. The nearest part of the path that exists must be a folder.
    """
    for part in (folder, *folder.parents):
        if part.is_dir():
            return
        if part.exists() or part.is_symlink():
            kind = "a file" if part.exists() else "a broken link"
            what = f"is {kind}" if part == folder else f"lies under {str(part)!r}, {kind}"
            raise InputValueError(
                f"{where}: {str(folder)!r} {what}; expected a folder (one that exists or "
                "can be created)"
            )


def _make_writable_folder(folder: Path, where: str) -> None:
    """Create ``folder`` if needed and write a file in it, or raise :class:`InputValueError`.

    Trying is the only honest test: permission bits do not stop root, while a read-only
    file system, a full disk or ``/proc`` stop everyone. The file written is removed.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputValueError(
            f"{where}: cannot create the folder {str(folder)!r}: {err.strerror or err}"
        ) from None
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as err:
        raise InputValueError(
            f"{where}: cannot write in the folder {str(folder)!r}: {err.strerror or err}"
        ) from None


def _folder_name(text: str) -> Path:
    """A command line's folder: any name but an empty one (``Path("")`` is the working folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a folder, got an empty name")
    return Path(text)


# ------------------------------------------------------------------------------ command line


def _repository(text: str) -> str:
    """``--repo``: a GitHub repository as OWNER/NAME, not the instructor edition's."""
    try:
        launch_badges("", text.strip())
    except InputValueError as err:
        raise argparse.ArgumentTypeError(str(err).split(": ", 1)[1]) from None
    return text.strip()


def _branch(text: str) -> str:
    try:
        launch_badges("", None, text.strip())
    except InputValueError as err:
        raise argparse.ArgumentTypeError(str(err).split(": ", 1)[1]) from None
    return text.strip()


def add_badge_options(command: argparse.ArgumentParser) -> None:
    """``--repo``, ``--branch`` and ``--folder``: where the students' launch badges point."""
    command.add_argument(
        "--repo",
        type=_repository,
        default=None,
        metavar="OWNER/NAME",
        help="the GitHub repository that holds your students' copies: their Binder and Colab "
        "badges open the lessons there (default: the student edition has no badges)",
    )
    command.add_argument(
        "--branch",
        type=_branch,
        default=None,
        help="the branch of --repo the badges open (default: main)",
    )
    command.add_argument(
        "--folder",
        default="",
        help="the folder of --repo that holds the lessons (default: its root); {lesson} in "
        "it stands for the lesson's name, e.g. release/{lesson} for nbgrader's release folder",
    )


def badge_settings(args: argparse.Namespace) -> dict[str, Any]:
    """``repo``, ``branch`` and ``folder`` keyword arguments from the parsed badge options.

    Raises :class:`~sparsegrad_lab.errors.InputValueError` for ``--branch`` or ``--folder``
    without ``--repo`` (they would point nowhere).
    """
    if args.repo is None and (args.branch is not None or args.folder):
        given = "--branch" if args.branch is not None else "--folder"
        raise InputValueError(f"{given} needs --repo OWNER/NAME: it says where in that repository")
    return {"repo": args.repo, "branch": args.branch or "main", "folder": args.folder}


def add_lessons_command(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Add ``lessons DEST [--student [--repo OWNER/NAME ...]] [--force]``."""
    command = subparsers.add_parser(
        "lessons",
        help="copy the lessons (notebooks) into a folder",
        description="Copy every lesson into DEST: the instructor edition (solutions, hidden "
        "tests and model answers included), or with --student the student edition, what "
        "nbgrader releases: stubs in place of solutions, no hidden tests, no model answers, "
        "no outputs, and launch badges only for the repository named by --repo.",
    )
    command.add_argument(
        "dest",
        metavar="DEST",
        type=_folder_name,
        help="folder to write the lessons to (created if needed)",
    )
    command.add_argument("--student", action="store_true", help="write the student edition")
    command.add_argument("--force", action="store_true", help="overwrite lessons already there")
    add_badge_options(command)


def run_lessons_command(args: argparse.Namespace) -> int:
    """Run ``lessons``; returns the exit status.

    0 when written; 2 on a refusal (a ``DEST`` that is a file, lies under one or cannot be
    written, lessons already there without ``--force``, badge options without
    ``--student``), checked before anything is written; 1 when writing fails midway (a
    full disk). The reason is one line on stderr.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     run_lessons_command(argparse.Namespace(
    ...         dest=tmp, student=False, force=False, repo=None, branch=None, folder=""))
    ... # doctest: +ELLIPSIS
    wrote the instructor edition of ... lessons to ...
    0
    """
    error = "python -m sparsegrad_lab lessons: error:"
    try:
        badges = badge_settings(args)
        if not args.student and args.repo is not None:
            raise InputValueError("--repo sets the student edition's badges: add --student")
        written = copy_lessons(
            args.dest,
            student=args.student,
            overwrite=args.force,
            **(badges if args.student else {}),
        )
    except SparseGradLabError as err:
        print(f"{error} {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"{error} writing the lessons to {str(args.dest)!r} failed: {err}", file=sys.stderr)
        return 1
    edition = "student" if args.student else "instructor"
    print(f"wrote the {edition} edition of {len(written)} lessons to {args.dest}")
    return 0
