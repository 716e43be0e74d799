"""The student edition: every solution replaced in place by a stub, no answer left anywhere.

Built from the repository's lessons with ``copy_lessons(..., student=True)``, the code path of
``python -m sparsegrad_lab lessons DEST --student``. The checks read the notebooks generically
(any lesson, any number of exercises): a cell tagged ``solution`` followed by its check cell.

* structure: same cells, ids and positions; stubs in place of solutions, their outputs and
  the check cells' outputs cleared, no hidden-source flag;
* leaks: no line of a solution's source, no line of its saved output and no string literal of
  it survives anywhere in the edition (check cells, other cells, outputs, metadata);
* prose: no sentence still tells the reader that solutions are collapsed;
* execution (slow): run with errors allowed, errors occur only in the stubs and the check
  cells right after them, and every stub raises ``NotImplementedError``.
"""

from __future__ import annotations

import ast
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from sparsegrad_lab.lessons import (
    SOLUTION_TAG,
    StudentEditionError,
    copy_lessons,
    exercise_names,
    lesson_paths,
    stub_source,
    student_markdown,
    student_notebook,
)

LESSONS = lesson_paths()
# Lines shorter than this (``)``, ``else:``, ``return x``) say nothing about an answer.
MIN_LINE = 12


def _text(source: str | list[str]) -> str:
    return source if isinstance(source, str) else "".join(source)


def _exercises(notebook: dict[str, Any]) -> list[tuple[int, dict[str, Any], dict[str, Any]]]:
    cells = notebook["cells"]
    return [
        (i, cell, cells[i + 1])
        for i, cell in enumerate(cells)
        if SOLUTION_TAG in cell.get("metadata", {}).get("tags", [])
    ]


def _strings(node: Any) -> Iterator[str]:
    """Every string anywhere in a JSON document (sources, outputs, metadata, widget state)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        # nbformat splits sources and stream texts into lines: join them back first.
        if node and all(isinstance(item, str) for item in node):
            yield "".join(node)
        else:
            for item in node:
                yield from _strings(item)


def _output_text(cell: dict[str, Any]) -> str:
    parts = []
    for output in cell.get("outputs", []):
        parts.append(_text(output.get("text", "")))
        for mime, value in output.get("data", {}).items():
            if mime.startswith("text/") and isinstance(value, str | list):
                parts.append(_text(value))
        parts.append(output.get("evalue", ""))
    return "\n".join(parts)


def _significant_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if len(line.strip()) >= MIN_LINE]


def _answer_literals(source: str) -> list[str]:
    """Strings a solution assigns outright (``answer = "G Bᴴ"``): a typed-in answer.

    String arguments of library calls (``"dense"``, ``layout="coo"``) are not answers.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    values = [node.value for node in ast.walk(tree) if isinstance(node, ast.Assign)]
    return [
        const.value
        for value in values
        for const in ([value] if isinstance(value, ast.Constant) else getattr(value, "elts", []))
        if isinstance(const, ast.Constant) and isinstance(const.value, str)
    ]


@pytest.fixture(scope="module")
def editions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("student")
    written = copy_lessons(folder, student=True)
    assert [p.name for p in written] == [p.name for p in LESSONS]
    return {p.name: json.loads(p.read_text()) for p in written}


def test_every_lesson_has_exercises() -> None:
    for path in LESSONS:
        assert _exercises(json.loads(path.read_text())), f"{path.name} has no solution cell"


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_stubs_replace_solutions_in_place(lesson: Path, editions: dict[str, Any]) -> None:
    original = json.loads(lesson.read_text())
    edition = editions[lesson.name]
    nbformat.validate(nbformat.reads(json.dumps(edition), as_version=4))
    assert [(c["cell_type"], c.get("id")) for c in edition["cells"]] == [
        (c["cell_type"], c.get("id")) for c in original["cells"]
    ], f"{lesson.name}: cells moved, vanished or changed id"
    for index, solution, check in _exercises(original):
        stub, stub_check = edition["cells"][index], edition["cells"][index + 1]
        where = f"{lesson.name}, cell {index + 1}"
        assert (
            _text(stub["source"])
            .rstrip()
            .endswith(
                "raise NotImplementedError("
                + ('"exercise not done yet: replace this cell with your solution")')
            )
        ), where
        names = exercise_names(_text(solution["source"]), _text(check["source"]))
        assert _text(stub["source"]) == stub_source(names), where
        assert stub["outputs"] == [] and stub["execution_count"] is None, where
        assert "source_hidden" not in stub["metadata"].get("jupyter", {}), where
        assert SOLUTION_TAG not in stub["metadata"].get("tags", []), where
        assert _text(stub_check["source"]) == _text(check["source"]), f"{where}: check changed"
        assert stub_check["outputs"] == [] and stub_check["execution_count"] is None, where
    # Everything else is untouched.
    changed = {i for i, _, _ in _exercises(original)} | {i + 1 for i, _, _ in _exercises(original)}
    for index, (before, after) in enumerate(zip(original["cells"], edition["cells"], strict=True)):
        if index not in changed and before["cell_type"] == "code":
            assert before == after, f"{lesson.name}: cell {index + 1} changed"


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_no_solution_survives_anywhere(lesson: Path, editions: dict[str, Any]) -> None:
    original = json.loads(lesson.read_text())
    everything = "\n".join(_strings(editions[lesson.name]))
    exercises = _exercises(original)
    # A line the lesson also shows outside its exercises (a marker comment, a set-up call) is
    # not the solution's: it leaks nothing when it stays there.
    in_exercises = {i for i, _, _ in exercises} | {i + 1 for i, _, _ in exercises}
    shown = "\n".join(
        _text(cell["source"]) for i, cell in enumerate(original["cells"]) if i not in in_exercises
    )
    leaks = []
    for index, solution, check in exercises:
        source = _text(solution["source"])
        where = f"{lesson.name}, exercise at cell {index + 1}"
        leaks += [
            f"{where}: source line {line!r}"
            for line in _significant_lines(source)
            if line in everything and line not in shown
        ]
        leaks += [
            f"{where}: output line {line!r}"
            for line in _significant_lines(_output_text(solution))
            if line in everything
        ]
        # An answer typed into the check (`assert answer == "G Bᴴ"`) gives it away too.
        check_source = _text(check["source"])
        leaks += [
            f"{where}: the check cell contains the solution's literal {literal!r}"
            for literal in _answer_literals(source)
            if literal in check_source
        ]
    assert not leaks, "\n".join(leaks)


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_prose_no_longer_speaks_of_collapsed_solutions(
    lesson: Path, editions: dict[str, Any]
) -> None:
    for index, cell in enumerate(editions[lesson.name]["cells"]):
        if cell["cell_type"] == "markdown":
            text = _text(cell["source"])
            # Rewriting the rewritten text changes nothing: no sentence left to fix.
            assert student_markdown(text) == text, f"{lesson.name}, cell {index + 1}"
            assert "collapsed cell" not in text.lower(), f"{lesson.name}, cell {index + 1}"
            # nothing to compare with: the solutions are gone
            assert "then compare" not in text.lower(), f"{lesson.name}, cell {index + 1}"


# ------------------------------------------------------------------- the pure functions


@pytest.mark.parametrize(
    ("solution", "check", "names"),
    [
        ("n_max = 3", "assert n_max == 3", ["n_max"]),
        # helpers the check does not read are not asked for
        ("def f(x):\n    return x\n\nn_max = f(2)", "print(n_max)", ["n_max"]),
        ("a, (b, c) = 1, (2, 3)", "assert c", ["c"]),
        # nothing read: everything bound is named
        ("x = 1\ny = 2", "print('ok')", ["x", "y"]),
        ("for k in range(3):\n    total = k", "", ["k", "total"]),
        ("class Net:\n    pass", "Net()", ["Net"]),
        # acts only: no name to ask for
        ("loss.backward()", "assert w.grad is not None", []),
        # IPython lines do not stop the parse
        ("%time y = 2\nz = 3", "z", ["z"]),
    ],
)
def test_exercise_names(solution: str, check: str, names: list[str]) -> None:
    assert exercise_names(solution, check) == names


def test_stub_without_names_still_says_what_to_do() -> None:
    stub = stub_source([])
    assert stub.startswith("# Your turn:") and "raise NotImplementedError" in stub


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "and ends with exercises whose solutions are hidden (click the collapsed cell to "
            "reveal one).",
            "and ends with exercises for you to solve.",
        ),
        (
            "Each solution is in a collapsed cell (click it to expand); the cell after it "
            "checks the answer\nwith an `assert`.",
            "Write each solution in the cell that raises `NotImplementedError`; the cell after "
            "it checks the answer\nwith an `assert`.",
        ),
        (
            "Before.\n<details>\n<summary>Show the answer</summary>\n\nBecause $n m$.\n"
            "</details>\nAfter.",
            "Before.\n*Write your answer here.*\nAfter.",
        ),
        (
            "Try first, then compare. Exercise 3 is harder.",
            "Try each one yourself before running its check. Exercise 3 is harder.",
        ),
        # other hidden things and other details blocks are left alone
        ("For the hidden true weights we take shares.", None),
        ("<details><summary>More about CSR</summary>Row pointers.</details>", None),
    ],
)
def test_student_markdown(text: str, expected: str | None) -> None:
    assert student_markdown(text) == (text if expected is None else expected)


def test_unknown_wording_about_hidden_solutions_is_refused() -> None:
    with pytest.raises(StudentEditionError, match=r"lesson X, cell 3.*no rule rewrites"):
        student_markdown("Solutions are hidden behind a fold.", where="lesson X, cell 3")


def _code_cell(source: str, tags: list[str] | None = None) -> dict[str, Any]:
    return {
        "cell_type": "code",
        "id": f"c{abs(hash(source)) % 10**6}",
        "source": source,
        "metadata": {"tags": tags or []},
        "outputs": [],
        "execution_count": None,
    }


def test_solution_without_a_check_cell_is_refused() -> None:
    notebook = {"cells": [_code_cell("x = 1", [SOLUTION_TAG])], "metadata": {}}
    with pytest.raises(StudentEditionError, match="no check cell"):
        student_notebook(notebook, name="n.ipynb")


def test_markdown_solution_is_refused() -> None:
    cell = {"cell_type": "markdown", "id": "m", "source": "x", "metadata": {"tags": ["solution"]}}
    notebook = {"cells": [cell, _code_cell("x")], "metadata": {}}
    with pytest.raises(StudentEditionError, match="markdown cell"):
        student_notebook(notebook)


def test_the_leak_checks_can_fail() -> None:
    # A check cell that repeats the answer, as the old lessons did, is caught.
    solution = _code_cell('answer = "G Bᴴ"\nsampled_values = compute()', [SOLUTION_TAG])
    check = _code_cell('assert answer == "G Bᴴ"')
    edition = student_notebook({"cells": [solution, check], "metadata": {}})
    assert _answer_literals(_text(solution["source"])) == ["G Bᴴ"]
    assert "G Bᴴ" in "\n".join(_strings(edition))


# ------------------------------------------------------------------------- execution


@pytest.mark.slow
@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_errors_only_in_stubs_and_their_checks(
    lesson: Path, editions: dict[str, Any], tmp_path: Path
) -> None:
    original = json.loads(lesson.read_text())
    stubs = {i for i, _, _ in _exercises(original)}
    allowed = stubs | {i + 1 for i in stubs}
    notebook = nbformat.reads(json.dumps(editions[lesson.name]), as_version=4)
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env.setdefault("OMP_NUM_THREADS", "2")
    client = NotebookClient(
        notebook,
        timeout=300,
        allow_errors=True,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute(cwd=str(tmp_path), env=env)  # the kernel's environment
    errors = {
        i: output
        for i, cell in enumerate(notebook.cells)
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "error"
    }
    unexpected = {i: f"{o.ename}: {o.evalue}" for i, o in errors.items() if i not in allowed}
    assert not unexpected, f"{lesson.name}: errors outside the exercises (cell index): {unexpected}"
    for index in stubs:
        assert index in errors and errors[index].ename == "NotImplementedError", (
            f"{lesson.name}: the stub at cell {index + 1} did not raise NotImplementedError"
        )
