"""The lessons as files: where they are, copying them out, and the student edition.

The repository's ``notebooks/`` folder is the instructor edition and the source of truth. A
wheel carries a copy of it, with the committed benchmark results that lesson 03 draws, as
package data under ``sparsegrad_lab/_course/`` (``setup.py`` copies them there at build
time). :func:`course_root` finds whichever applies, so the same call works

* from a checkout or an editable install (the package sits next to ``notebooks/`` and
  ``benchmarks/`` in a repository: those are read, never a copy that may be stale), and
* from a wheel install (the package's own ``_course/`` copy).

:func:`copy_lessons` writes the lessons into a folder of the user's; with ``student=True``
each exercise's solution is replaced by a stub (:func:`student_notebook`):

* a code cell tagged ``solution`` keeps its position and cell id, but its source becomes a
  comment naming what the exercise must define, then ``raise NotImplementedError``; its
  outputs, execution count and hidden-source flag go;
* the check cell right after it keeps its source but loses its outputs (they were printed
  from the model answer);
* markdown ``<details>`` blocks whose summary names a solution or an answer are replaced by a
  prompt, and sentences that tell the reader solutions are collapsed are rewritten
  (:func:`student_markdown`).

>>> sorted(p.name for p in lesson_paths())[:1]
['00_start_here.ipynb']
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import re
import sys
import tempfile
from collections.abc import Iterable
from importlib.resources import files
from pathlib import Path
from typing import Any

from .errors import InputValueError, SparseGradLabError

__all__ = [
    "EXERCISE_TAG",
    "SOLUTION_TAG",
    "StudentEditionError",
    "benchmark_results_dir",
    "copy_lessons",
    "course_root",
    "exercise_names",
    "exercise_titles",
    "lesson_paths",
    "stub_source",
    "student_markdown",
    "student_notebook",
]

#: The cell tag that marks an exercise's model solution in the instructor edition.
SOLUTION_TAG = "solution"
#: The tag a stub carries in the student edition instead (the solution tag would be a lie).
EXERCISE_TAG = "exercise"
# The folder inside the installed package that holds the wheel's copy (see setup.py).
_PACKAGED = "_course"
_PROJECT_NAME = "sparsegrad-lab"


class StudentEditionError(SparseGradLabError, ValueError):
    """A lesson cannot be turned into a student edition without leaving an answer in it."""


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


# --------------------------------------------------------------------------- student edition


def _code(source: str) -> str:
    """Cell source with IPython-only lines (magics, shell escapes) blanked, for ``ast``."""
    return "\n".join(
        "" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()
    )


def _assigned(statements: list[ast.stmt], names: list[str] | None = None) -> list[str]:
    """Names a cell binds outside any function or class body, in order of first binding.

    Loops, conditionals, ``with`` and ``try`` blocks run at the cell's level, so what they
    bind counts; a function's locals do not.
    """
    names = [] if names is None else names
    for node in statements:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            targets: list[ast.AST] = [ast.Name(node.name)]
        elif isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AugAssign | ast.AnnAssign | ast.For | ast.AsyncFor):
            targets = [node.target]
        elif isinstance(node, ast.With | ast.AsyncWith):
            targets = [item.optional_vars for item in node.items if item.optional_vars]
        else:
            targets = []
        for target in targets:
            for sub in ast.walk(target):
                if isinstance(sub, ast.Name) and sub.id not in names:
                    names.append(sub.id)
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            for field in ("body", "orelse", "finalbody"):
                _assigned(getattr(node, field, []), names)
            for handler in getattr(node, "handlers", []):
                _assigned(handler.body, names)
    return names


def exercise_names(solution: str, check: str = "") -> list[str]:
    """What an exercise must define: names the solution binds and the check cell reads.

    All names the solution binds at top level when the check reads none of them (or there
    is no check cell); ``[]`` when the solution binds nothing (it only acts, e.g. calls
    ``backward()``).

    >>> exercise_names("def f(n):\\n    return n\\n\\nn_max = f(3)", "assert n_max > 2")
    ['n_max']
    >>> exercise_names("x, y = 1, 2", "print('no names used')")
    ['x', 'y']
    """
    try:
        bound = _assigned(ast.parse(_code(solution)).body)
    except SyntaxError:
        return []
    try:
        read = {
            node.id
            for node in ast.walk(ast.parse(_code(check)))
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)
        }
    except SyntaxError:
        read = set()
    used = [name for name in bound if name in read]
    return used or bound


def exercise_titles(notebook: dict[str, Any]) -> list[str]:
    """The title of each exercise of a lesson (nbformat 4 JSON as a dict), in lesson order.

    An exercise is a cell tagged :data:`SOLUTION_TAG`; its title is the last markdown heading
    of level 2 to 4 above it (``"exercise N"`` when there is none). The lessons' website
    lists them on the tutors' page.

    >>> exercise_titles({"cells": [
    ...     {"cell_type": "markdown", "source": "## Exercises\\n\\n### 1. Count the bytes"},
    ...     {"cell_type": "code", "source": "n = 1", "metadata": {"tags": ["solution"]}},
    ...     {"cell_type": "code", "source": "assert n == 1", "metadata": {}}]})
    ['1. Count the bytes']
    """
    titles: list[str] = []
    heading = ""
    for cell in notebook["cells"]:
        if cell["cell_type"] == "markdown":
            found = re.findall(r"^#{2,4}\s+(.+)$", _text(cell["source"]), re.M)
            heading = found[-1].strip() if found else heading
        elif SOLUTION_TAG in _tags(cell):
            titles.append(heading or f"exercise {len(titles) + 1}")
    return titles


def stub_source(names: Iterable[str]) -> str:
    """The source that replaces a solution: what to define, then ``NotImplementedError``.

    >>> print(stub_source(["n_max"]))
    # Your turn: write code that defines `n_max` (the next cell checks it), then run it.
    raise NotImplementedError("exercise not done yet: replace this cell with your solution")
    """
    names = list(names)
    if names:
        listed = ", ".join(f"`{name}`" for name in names)
        them = "it" if len(names) == 1 else "them"
        what = f"write code that defines {listed} (the next cell checks {them})"
    else:
        what = "write the code this exercise asks for (the next cell checks it)"
    return (
        f"# Your turn: {what}, then run it.\n"
        'raise NotImplementedError("exercise not done yet: replace this cell with your solution")'
    )


# Markdown: a <details> block whose summary names a solution or an answer holds one.
_DETAILS = re.compile(
    r"<details\b[^>]*>\s*<summary\b[^>]*>(?P<summary>.*?)</summary>.*?</details>",
    re.S | re.I,
)
_NAMES_SOLUTION = re.compile(r"\b(solutions?|answers?|model answer)\b", re.I)
_HIDING_WORD = re.compile(r"\b(hidden|hide|collapsed?|click\w*|expand\w*|reveal\w*)\b", re.I)
# Rewrites of prose that speaks of collapsed solutions, tried in order on each sentence.
_PROSE_RULES: list[tuple[re.Pattern[str], str]] = [
    # "(click it to expand)", "(click the collapsed cell to reveal one)"
    (re.compile(r"\s*\([^()]*\b(click|expand|reveal|collapsed)\w*\b[^()]*\)", re.I), ""),
    # "exercises whose solutions are hidden" -> "exercises for you to solve"
    (
        re.compile(r"\b(exercises?) whose solutions? (?:is|are) (?:hidden|collapsed)", re.I),
        r"\1 for you to solve",
    ),
    # "Each solution is in a collapsed cell" -> where to write it instead
    (
        re.compile(r"\beach solution is (?:in )?an? (?:collapsed|hidden) cell", re.I),
        "Write each solution in the cell that raises `NotImplementedError`",
    ),
]
# "Try first, then compare." -- with the solution, which the edition no longer has.
_COMPARE_WITH_SOLUTION = (
    re.compile(r"\bTry (?:it )?first, then compare\b", re.I),
    "Try each one yourself before running its check",
)
_SENTENCE = re.compile(r"(?<=[.!?;:])\s+")
# "(solutions hidden: click a collapsed cell to reveal it)", dropped as a whole.
_HIDDEN_ASIDE = re.compile(r"\s*\(solutions? (?:are )?(?:hidden|collapsed)\b[^()]*\)", re.I)


def _speaks_of_hidden_solutions(text: str) -> bool:
    return bool(_NAMES_SOLUTION.search(text) and _HIDING_WORD.search(text))


def student_markdown(text: str, where: str = "a markdown cell") -> str:
    """Markdown for the student edition: no model answers, no talk of collapsed solutions.

    ``<details>`` blocks whose summary names a solution or answer become a prompt; sentences
    that say solutions are collapsed or hidden are rewritten by a small rule table. A
    sentence that still speaks of them raises :class:`StudentEditionError` naming ``where``,
    so a new wording gets a rule instead of slipping through.

    >>> print(student_markdown("Each solution is in a collapsed cell (click it to expand); "
    ...                        "the cell after it checks it."))
    Write each solution in the cell that raises `NotImplementedError`; the cell after it checks it.
    >>> student_markdown("<details><summary>Model answer</summary>Because.</details>")
    '*Write your answer here.*'
    >>> student_markdown("9. summary · exercises (solutions hidden: click a collapsed cell to "
    ...                  "reveal it).")
    '9. summary · exercises.'
    """
    text = _DETAILS.sub(
        lambda m: "*Write your answer here.*" if _NAMES_SOLUTION.search(m["summary"]) else m[0],
        text,
    )
    # A parenthesis can hold a sentence break of its own: "(solutions hidden: click ...)".
    text = _HIDDEN_ASIDE.sub("", text)
    pieces = _SENTENCE.split(text)
    separators = _SENTENCE.findall(text)
    out = []
    for sentence in pieces:
        if _speaks_of_hidden_solutions(sentence):
            for pattern, replacement in _PROSE_RULES:
                sentence = pattern.sub(replacement, sentence)
            if _speaks_of_hidden_solutions(sentence):
                raise StudentEditionError(
                    f"student edition: {where} says solutions are hidden in a way no rule "
                    f"rewrites: {sentence.strip()!r}; add a rule to lessons._PROSE_RULES"
                )
        out.append(_COMPARE_WITH_SOLUTION[0].sub(_COMPARE_WITH_SOLUTION[1], sentence))
    return "".join(part + sep for part, sep in zip(out, [*separators, ""], strict=True))


def _tags(cell: dict[str, Any]) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def student_notebook(notebook: dict[str, Any], name: str = "the notebook") -> dict[str, Any]:
    """The student edition of one notebook (nbformat 4 JSON as a dict); the input is unchanged.

    Raises :class:`StudentEditionError` when a solution cell is not code or is the last
    cell (its check cell would be missing), or for prose :func:`student_markdown` cannot fix.

    >>> nb = {"cells": [
    ...     {"cell_type": "code", "id": "a1", "source": "x = 6 * 7\\nprint(x)",
    ...      "metadata": {"tags": ["solution"], "jupyter": {"source_hidden": True}},
    ...      "outputs": [{"output_type": "stream", "name": "stdout", "text": "42\\n"}],
    ...      "execution_count": 3},
    ...     {"cell_type": "code", "id": "b2", "source": "assert x == 42", "metadata": {},
    ...      "outputs": [], "execution_count": 4}],
    ...     "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    >>> stub = student_notebook(nb)["cells"][0]
    >>> stub["id"], stub["outputs"], stub["execution_count"], stub["metadata"]
    ('a1', [], None, {'tags': ['exercise']})
    >>> print(stub["source"][0], end="")
    # Your turn: write code that defines `x` (the next cell checks it), then run it.
    """
    edition = copy.deepcopy(notebook)
    cells = edition["cells"]
    for index, cell in enumerate(cells):
        where = f"{name}, cell {index + 1}"
        if SOLUTION_TAG in _tags(cell) and cell["cell_type"] != "code":
            raise StudentEditionError(
                f"student edition: {where} is tagged {SOLUTION_TAG!r} but is a "
                f"{cell['cell_type']} cell; only code cells can hold a solution"
            )
        if cell["cell_type"] == "markdown":
            text = _text(cell["source"])
            rewritten = student_markdown(text, where)
            if rewritten != text:
                cell["source"] = rewritten.splitlines(keepends=True)
            continue
        if SOLUTION_TAG not in _tags(cell):
            continue
        if index + 1 == len(cells) or cells[index + 1]["cell_type"] != "code":
            raise StudentEditionError(
                f"student edition: {where} is a solution with no check cell after it; "
                "every exercise is one solution cell followed by one code cell that checks it"
            )
        check = cells[index + 1]
        stub = stub_source(exercise_names(_text(cell["source"]), _text(check["source"])))
        # Lines, as nbformat stores sources on disk.
        cell["source"] = stub.splitlines(keepends=True)
        metadata = cell.setdefault("metadata", {})
        metadata["tags"] = [EXERCISE_TAG if tag == SOLUTION_TAG else tag for tag in _tags(cell)]
        jupyter = metadata.get("jupyter", {})
        jupyter.pop("source_hidden", None)
        if not jupyter:
            metadata.pop("jupyter", None)
        # The check cell's saved output came from the model answer, so it goes too.
        for cleared in (cell, check):
            cleared["outputs"] = []
            cleared["execution_count"] = None
    return edition


def _text(source: str | list[str]) -> str:
    return source if isinstance(source, str) else "".join(source)


def copy_lessons(dest: str | Path, student: bool = False, overwrite: bool = False) -> list[Path]:
    """Write every lesson into ``dest`` (created if needed); returns the written paths.

    ``student=False`` copies the instructor edition byte for byte; ``student=True`` writes
    :func:`student_notebook` of each. The lessons read nothing beside themselves but the
    installed package, so ``dest`` can be any folder. An existing lesson file is refused
    unless ``overwrite=True``; so is, before anything is written, a ``dest`` that is a
    file, lies under one, cannot be created or cannot be written in, or is an empty name
    (:class:`~sparsegrad_lab.errors.InputValueError`).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     written = copy_lessons(tmp, student=True)
    ...     (Path(tmp) / "00_start_here.ipynb") in written
    True
    """
    where = f"copy_lessons(dest={str(dest)!r})"
    if not str(dest).strip():  # Path("") is the working folder: an unset variable, surely
        raise InputValueError(f"{where}: expected a folder, got an empty name")
    dest = Path(dest)
    _check_folder(dest, where)
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
            edition = student_notebook(notebook, name=path.name)
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


def add_lessons_command(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Add ``lessons DEST [--student] [--force]`` to ``python -m sparsegrad_lab``."""
    command = subparsers.add_parser(
        "lessons",
        help="copy the lessons (notebooks) into a folder",
        description="Copy every lesson into DEST: the instructor edition, or with --student "
        "each exercise's solution replaced by a stub and the answers' outputs cleared.",
    )
    command.add_argument(
        "dest",
        metavar="DEST",
        type=_folder_name,
        help="folder to write the lessons to (created if needed)",
    )
    command.add_argument("--student", action="store_true", help="write the student edition")
    command.add_argument("--force", action="store_true", help="overwrite lessons already there")


def run_lessons_command(args: argparse.Namespace) -> int:
    """Run ``lessons``; returns the exit status.

    0 when written; 2 on a refusal (a ``DEST`` that is a file, lies under one or cannot be
    written, lessons already there without ``--force``), checked before anything is
    written; 1 when writing fails midway (a full disk). The reason is one line on stderr.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     run_lessons_command(argparse.Namespace(dest=tmp, student=False, force=False))
    ... # doctest: +ELLIPSIS
    wrote the instructor edition of ... lessons to ...
    0
    """
    error = "python -m sparsegrad_lab lessons: error:"
    try:
        written = copy_lessons(args.dest, student=args.student, overwrite=args.force)
    except SparseGradLabError as err:
        print(f"{error} {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"{error} writing the lessons to {str(args.dest)!r} failed: {err}", file=sys.stderr)
        return 1
    edition = "student" if args.student else "instructor"
    print(f"wrote the {edition} edition of {len(written)} lessons to {args.dest}")
    return 0
