"""The lessons as an nbgrader course: ``python -m sparsegrad_lab course DEST``.

:func:`write_course` writes a course directory that nbgrader's commands use unchanged, run from
inside it::

    DEST/nbgrader_config.py                   the course's id and the autograder's settings
    DEST/source/<lesson>/<lesson>.ipynb       each lesson as nbgrader's source notebook

Each lesson is one assignment of one notebook, named after the lesson (``00_start_here``...).
The source notebooks are the instructor edition (:func:`sparsegrad_lab.lessons.course_source`:
solutions, hidden tests, model answers and rubrics), with the students' launch badges set to
the repository the tutor names, or removed. The lessons read no file beside themselves: what
they load (lesson 03's benchmark results) comes with the installed package, so nothing else
is copied. From DEST, ``nbgrader generate_assignment``, ``autograde``, ``generate_feedback``
and ``export`` do the rest (the tutors' page, docs/tutors.md, lists them in order).

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as tmp:
...     written = write_course(tmp)
...     sorted(str(p.relative_to(tmp)) for p in written)[:2]
['nbgrader_config.py', 'source/00_start_here/00_start_here.ipynb']
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from .errors import InputValueError, SparseGradLabError
from .lessons import (
    _check_folder,
    _folder_name,
    _make_writable_folder,
    add_badge_options,
    badge_settings,
    course_source,
    launch_badges,
    lesson_paths,
)

__all__ = [
    "CELL_TIMEOUT_S",
    "DEFAULT_COURSE_ID",
    "add_course_command",
    "nbgrader_config",
    "run_course_command",
    "write_course",
]

#: The course id nbgrader records in the gradebook unless the tutor names another.
DEFAULT_COURSE_ID = "sparsegrad-lab"
#: The autograder's limit for one cell, in seconds. nbgrader's default (30 s) is below what
#: the lessons' longest cells (the memory sweeps) take on a busy 2-core machine.
CELL_TIMEOUT_S = 600
_COURSE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def nbgrader_config(course_id: str = DEFAULT_COURSE_ID) -> str:
    """The text of the course's ``nbgrader_config.py``.

    >>> "c.CourseDirectory.course_id = 'sparsegrad-lab'" in nbgrader_config()
    True
    """
    return f'''"""nbgrader's configuration of this course (python -m sparsegrad_lab course).

Run every nbgrader command from this folder. Assignments are the lessons, one notebook each:
nbgrader generate_assignment 00_start_here --force, ... (docs/tutors.md of sparsegrad_lab).
"""

c = get_config()  # noqa: F821 - nbgrader defines it when it reads this file

c.CourseDirectory.course_id = {course_id!r}
# Each assignment is one lesson notebook of the same name.
c.CourseDirectory.source_directory = "source"
# The autograder runs every cell of a lesson, the lesson's own measurements included: a cell
# may take up to {CELL_TIMEOUT_S} s on a busy machine (nbgrader's default is 30 s).
c.Execute.timeout = {CELL_TIMEOUT_S}
# Tracebacks of one line (the exception and its message): a full traceback would quote the
# hidden tests' source around the line that failed, in the feedback a student gets back.
c.Execute.extra_arguments = [
    "--HistoryManager.hist_file=:memory:",
    "--InteractiveShell.xmode=Minimal",
]
# Feedback shows each student's graded notebook, without the hidden tests' source.
from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor  # noqa: E402
from nbgrader.preprocessors import ClearHiddenTests, GetGrades  # noqa: E402

c.GenerateFeedback.preprocessors = [GetGrades, ClearHiddenTests, CSSHTMLHeaderPreprocessor]
'''


def write_course(
    dest: str | Path,
    *,
    course_id: str = DEFAULT_COURSE_ID,
    repo: str | None = None,
    branch: str = "main",
    folder: str = "",
    overwrite: bool = False,
) -> list[Path]:
    """Write the nbgrader course directory of every lesson into ``dest``; returns the paths.

    ``repo``, ``branch`` and ``folder`` set the students' Binder and Colab badges
    (:func:`sparsegrad_lab.lessons.launch_badges`: the repository, branch and folder of
    their copies; no badges without ``repo``). A ``dest`` that is a file, lies under one or
    cannot be written, a bad ``course_id`` or ``repo``, and a ``dest`` that already holds a
    course (unless ``overwrite=True``) are refused before anything is written
    (:class:`~sparsegrad_lab.errors.InputValueError`). Students' submissions, the gradebook
    and nbgrader's other folders are never touched.
    """
    where = f"write_course(dest={str(dest)!r})"
    if not str(dest).strip():
        raise InputValueError(f"{where}: expected a folder, got an empty name")
    if not _COURSE_ID.match(course_id):
        raise InputValueError(
            f"{where}: course_id={course_id!r}; expected letters, digits, '.', '_' or '-'"
        )
    dest = Path(dest)
    _check_folder(dest, where)
    launch_badges("", repo, branch, folder)  # refuses a bad repository before any work
    lessons = lesson_paths()
    targets = [dest / "nbgrader_config.py"] + [
        dest / "source" / path.stem / path.name for path in lessons
    ]
    clashes = [target for target in targets if target.exists()]
    if clashes and not overwrite:
        raise InputValueError(
            f"{where}: {clashes[0].relative_to(dest)} already exists there ({len(clashes)} "
            "course file(s) would be overwritten); choose an empty folder or pass "
            "overwrite=True (--force on the command line)"
        )
    _make_writable_folder(dest, where)
    targets[0].write_text(nbgrader_config(course_id), encoding="utf-8")
    for path, target in zip(lessons, targets[1:], strict=True):
        notebook = json.loads(path.read_text(encoding="utf-8"))
        source = course_source(notebook, repo, branch, folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(source, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return targets


# ------------------------------------------------------------------------------ command line


def add_course_command(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Add ``course DEST [--course-id ID] [--repo OWNER/NAME ...] [--force]``."""
    command = subparsers.add_parser(
        "course",
        help="write the lessons as an nbgrader course directory",
        description="Write an nbgrader course directory into DEST: nbgrader_config.py and "
        "source/<lesson>/<lesson>.ipynb for every lesson. Then, from DEST: nbgrader "
        "generate_assignment, autograde, generate_feedback and export.",
    )
    command.add_argument(
        "dest",
        metavar="DEST",
        type=_folder_name,
        help="the course directory (created if needed)",
    )
    command.add_argument(
        "--course-id",
        default=DEFAULT_COURSE_ID,
        help=f"the course id nbgrader records (default: {DEFAULT_COURSE_ID})",
    )
    command.add_argument(
        "--force", action="store_true", help="overwrite the course files already there"
    )
    add_badge_options(command)


def run_course_command(args: argparse.Namespace) -> int:
    """Run ``course``; returns the exit status.

    0 when written; 2 on a refusal, checked before anything is written; 1 when writing fails
    midway. The reason is one line on stderr.
    """
    error = "python -m sparsegrad_lab course: error:"
    try:
        written = write_course(
            args.dest, course_id=args.course_id, overwrite=args.force, **badge_settings(args)
        )
    except SparseGradLabError as err:
        print(f"{error} {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"{error} writing the course to {str(args.dest)!r} failed: {err}", file=sys.stderr)
        return 1
    print(
        f"wrote an nbgrader course of {len(written) - 1} lessons to {args.dest}; "
        f"next: cd {args.dest} && nbgrader generate_assignment 00_start_here --force"
    )
    return 0
