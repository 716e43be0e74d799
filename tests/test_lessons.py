"""The lessons as nbgrader source notebooks, and the student edition nbgrader releases.

The instructor edition (``notebooks/``) is read generically, lesson by lesson:

* metadata: nbgrader's validator accepts every lesson; every cell is an answer, a test or
  read-only; every answer region, hidden test and rubric sits where nbgrader looks for it;
* tests that cannot be gamed from the notebook: the visible part of a test cell defines no
  helper a student's code could call, and a hidden-tests region leaves no name behind;
* the student edition (:func:`student_notebook`, ``copy_lessons(student=True)``): no line of a
  solution, of a hidden test, of a model answer or rubric, and no output of an answer or test
  cell survives anywhere in it; its stubs raise ``NotImplementedError``; its launch badges
  open the tutor's repository or are gone; nothing speaks of a model answer it does not hold.

Executing the student edition is the term's job (``tests/test_course.py``: the untouched
release, autograded, scores zero and the grader finishes).
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from sparsegrad_lab.errors import InputValueError
from sparsegrad_lab.lessons import (
    SOLUTION_TAG,
    copy_lessons,
    course_source,
    exercise_titles,
    graded_cells,
    launch_badges,
    lesson_paths,
    student_notebook,
)
from sparsegrad_lab.notebook import BINDER_REPO, binder_url, colab_url

LESSONS = lesson_paths()
# Lines shorter than this (``)``, ``else:``, ``return x``) say nothing about an answer.
MIN_LINE = 12
REGION = re.compile(
    r"^[ \t]*#+ BEGIN (?P<kind>SOLUTION|HIDDEN TESTS)[ \t]*\n(?P<body>.*?)^[ \t]*#+ END (?P=kind)",
    re.M | re.S,
)


def _text(source: str | list[str]) -> str:
    return source if isinstance(source, str) else "".join(source)


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _nbgrader(cell: dict[str, Any]) -> dict[str, Any]:
    return dict(cell["metadata"].get("nbgrader", {}))


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


def _significant(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if len(line.strip()) >= MIN_LINE]


def _secrets(notebook: dict[str, Any]) -> tuple[list[str], str]:
    """The lines only the instructor may see, and everything else the lesson shows.

    Secret: the lines of every solution and hidden-test region, and the outputs of answer and
    test cells (printed by the instructor's solutions). A line the lesson also shows outside
    them (a comment, a set-up call) gives nothing away.
    """
    secret, shown = [], []
    for cell in notebook["cells"]:
        source = _text(cell["source"])
        secret += [m["body"] for m in REGION.finditer(source)]
        shown.append(REGION.sub("", source))
        meta = _nbgrader(cell)
        (secret if meta.get("grade") or meta.get("solution") else shown).append(_output_text(cell))
    visible = "\n".join(shown)
    return [line for line in _significant("\n".join(secret)) if line not in visible], visible


@pytest.fixture(scope="module")
def editions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("student")
    written = copy_lessons(folder, student=True)
    assert [p.name for p in written] == [p.name for p in LESSONS]
    return {p.name: _load(p) for p in written}


# ------------------------------------------------------------------- the nbgrader sources


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_every_cell_is_an_answer_a_test_or_read_only(lesson: Path) -> None:
    from nbgrader.nbgraderformat import MetadataValidator

    notebook = nbformat.read(lesson, as_version=4)
    MetadataValidator().validate_nb(notebook)  # nbgrader's own check: ids, points, schema
    kinds = {"answer": 0, "test": 0, "written": 0}
    for index, cell in enumerate(notebook.cells):
        meta, where = _nbgrader(cell), f"{lesson.name}, cell {index + 1}"
        source = cell.source
        assert meta, f"{where} has no nbgrader metadata"
        if meta["solution"] and not meta["grade"]:  # code a student writes
            kinds["answer"] += 1
            assert cell.cell_type == "code" and "### BEGIN SOLUTION" in source, where
            assert SOLUTION_TAG in cell.metadata.get("tags", []), f"{where}: the site folds it"
            assert not meta["locked"], where
        elif meta["solution"]:  # a written answer, graded by hand: the model answer and rubric
            kinds["written"] += 1
            assert cell.cell_type == "markdown" and meta["points"] > 0, where
            assert re.fullmatch(r"### BEGIN SOLUTION\n.+\n### END SOLUTION", source, re.S), where
            assert "**Model answer.**" in source and "**Rubric" in source, where
        elif meta["grade"]:  # an autograded test
            kinds["test"] += 1
            assert cell.cell_type == "code" and meta["points"] > 0 and meta["locked"], where
            assert "### BEGIN HIDDEN TESTS" in source, f"{where}: no hidden tests"
        else:
            assert meta["locked"], f"{where} is neither an answer nor a test: read-only"
        assert "source_hidden" not in cell.metadata.get("jupyter", {}), where
    assert kinds["answer"] == kinds["test"] >= 3 and kinds["written"] >= 1, (lesson.name, kinds)


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_no_check_leaves_a_name_a_student_could_call(lesson: Path) -> None:
    """A helper of a visible check, or anything a hidden test computes, could be read back.

    The visible part of a test cell defines no function; a hidden-tests region is exactly a
    function ``_hidden_tests``, its call and its deletion, so its references stay local.
    """
    for index, cell in enumerate(_load(lesson)["cells"]):
        if not (_nbgrader(cell).get("grade") and cell["cell_type"] == "code"):
            continue
        where = f"{lesson.name}, cell {index + 1}"
        source = _text(cell["source"])
        visible, hidden = source.split("### BEGIN HIDDEN TESTS\n")
        tree = ast.parse(visible)
        assert not [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)], where
        body = ast.parse(hidden.split("### END HIDDEN TESTS")[0]).body
        assert [type(n) for n in body] == [ast.FunctionDef, ast.Expr, ast.Delete], where
        assert ast.unparse(body[1]) == "_hidden_tests()" and ast.unparse(body[2]) == (
            "del _hidden_tests"
        ), where


def test_points_and_titles_are_read_from_the_metadata() -> None:
    for lesson in LESSONS:
        notebook = _load(lesson)
        graded = graded_cells(notebook)
        assert len({c.grade_id for c in graded}) == len(graded)
        titles = exercise_titles(notebook)
        assert titles and all("BEGIN" not in t and "END" not in t for t in titles), lesson.name
        # Each heading states its points: the sum of its graded cells'.
        for title in titles:
            stated = re.search(r"\((\d+) points?\)$", title)
            assert stated, f"{lesson.name}: {title!r} does not state its points"
            points = sum(c.points for c in graded if c.title == title)
            assert int(stated[1]) == points, f"{lesson.name}: {title!r}"


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_the_first_cell_states_the_time_and_points(lesson: Path) -> None:
    notebook = _load(lesson)
    first = _text(notebook["cells"][0]["source"])
    total = sum(c.points for c in graded_cells(notebook))
    assert re.search(
        r"\*\*Time\*\*: about [\d.]+ (hours|minutes) in all: \d+ minutes to read", first
    )
    assert f"({total} points)" in first, lesson.name


# ------------------------------------------------------------------- the student edition


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_nothing_of_a_solution_survives(lesson: Path, editions: dict[str, Any]) -> None:
    secret, _ = _secrets(_load(lesson))
    assert secret, f"{lesson.name}: no solution found to look for"
    edition = editions[lesson.name]
    everything = "\n".join(_strings(edition))
    leaks = [line for line in secret if line in everything]
    assert not leaks, f"{lesson.name} leaks:\n" + "\n".join(leaks)
    for marker in ("BEGIN SOLUTION", "HIDDEN TESTS", "Model answer", "Rubric", "model answer"):
        assert marker not in everything, f"{lesson.name}: {marker!r}"
    assert all(not c.get("outputs") for c in edition["cells"]), "nbgrader clears every output"


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_stubs_replace_answers_in_place(lesson: Path, editions: dict[str, Any]) -> None:
    original, edition = _load(lesson), editions[lesson.name]
    nbformat.validate(nbformat.reads(json.dumps(edition), as_version=4))
    assert [(c["cell_type"], c.get("id")) for c in edition["cells"]] == [
        (c["cell_type"], c.get("id")) for c in original["cells"]
    ], f"{lesson.name}: cells moved, vanished or changed id"
    for before, after in zip(original["cells"], edition["cells"], strict=True):
        meta, source = _nbgrader(before), _text(after["source"])
        if meta["solution"] and before["cell_type"] == "code":
            assert "# YOUR CODE HERE\n" in source and "raise NotImplementedError()" in source
            # What the student must define stays: the signature above the stub.
            kept = _text(before["source"]).split("### BEGIN SOLUTION")[0].strip()
            assert source.startswith(kept.split("\n")[0])
            assert SOLUTION_TAG not in after["metadata"].get("tags", [])
        elif meta["solution"]:
            assert source == "YOUR ANSWER HERE"
        elif meta["grade"]:
            visible = _text(before["source"]).split("### BEGIN HIDDEN TESTS")[0]
            assert source.rstrip() == visible.rstrip()
        else:
            assert after["metadata"].get("editable") is False, "read-only cells are locked"


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_a_site_edition_keeps_the_lesson_s_outputs_only(lesson: Path) -> None:
    original = _load(lesson)
    site = student_notebook(original, keep_outputs=True, name=lesson.name)
    secret, _ = _secrets(original)
    everything = "\n".join(_strings(site))
    assert not [line for line in secret if line in everything], lesson.name
    for before, after in zip(original["cells"], site["cells"], strict=True):
        meta = _nbgrader(before)
        if before["cell_type"] != "code":
            continue
        if meta["solution"] or meta["grade"]:
            assert after["outputs"] == [], lesson.name
        else:
            assert after["outputs"] == before["outputs"], lesson.name


def test_no_lesson_speaks_of_what_the_student_edition_lacks() -> None:
    for lesson in LESSONS:
        for index, cell in enumerate(_load(lesson)["cells"]):
            if cell["cell_type"] != "markdown" or _nbgrader(cell).get("solution"):
                continue
            text = _text(cell["source"]).lower()
            for wording in (
                "model answer",
                "collapsed",
                "click",
                "then compare",
                "solutions hidden",
            ):
                assert wording not in text, f"{lesson.name}, cell {index + 1}: {wording!r}"


# ------------------------------------------------------------------------ launch badges


def test_badges_are_gone_by_default_and_never_open_the_instructor_edition(
    editions: dict[str, Any],
) -> None:
    for name, edition in editions.items():
        text = json.dumps(edition)
        assert "mybinder.org/v2" not in text and "colab.research.google.com/github" not in text
        assert BINDER_REPO not in text.replace(f"git+https://github.com/{BINDER_REPO}", ""), name


def test_badges_open_the_repository_the_tutor_names(tmp_path: Path) -> None:
    copy_lessons(tmp_path, student=True, repo="tutor/sparse-course", branch="spring")
    first = _text(_load(tmp_path / "00_start_here.ipynb")["cells"][0]["source"])
    assert (
        "(https://mybinder.org/v2/gh/tutor/sparse-course/spring?urlpath=lab/tree/"
        "00_start_here.ipynb)" in first
    )
    assert (
        "(https://colab.research.google.com/github/tutor/sparse-course/blob/spring/"
        "00_start_here.ipynb)" in first
    )


@pytest.mark.parametrize(
    ("repo", "branch", "message"),
    [
        (BINDER_REPO, "main", "instructor edition"),
        ("not a repo", "main", "OWNER/NAME"),
        ("tutor/course", "", "branch"),
        ("tutor/course", "a b", "branch"),
    ],
)
def test_bad_badge_settings_are_refused(repo: str, branch: str, message: str) -> None:
    with pytest.raises(InputValueError, match=message):
        launch_badges("", repo, branch)


def test_launch_badges_touch_only_the_instructor_edition_s_links() -> None:
    lesson = "01_sparsity_patterns.ipynb"
    text = (
        f"# 02\n\n[![Open in Binder](b.svg)]({binder_url(lesson)})\n"
        f"[![Open in Colab](c.svg)]({colab_url(lesson)})\n\n"
        "Text with [![other](o.svg)](https://example.org/x) kept."
    )
    assert launch_badges(text) == "# 02\n\nText with [![other](o.svg)](https://example.org/x) kept."
    moved = launch_badges(text, "t/c", "b", "lessons")
    assert (
        "https://mybinder.org/v2/gh/t/c/b?urlpath=lab/tree/lessons/01_sparsity_patterns.ipynb"
        in moved
    )
    assert "https://example.org/x" in moved


def test_course_source_is_the_instructor_edition_less_badges_and_site_tags() -> None:
    for lesson in LESSONS:
        original = _load(lesson)
        source = course_source(original)
        assert json.dumps(source).count("BEGIN SOLUTION") == json.dumps(original).count(
            "BEGIN SOLUTION"
        )
        assert not any(SOLUTION_TAG in c["metadata"].get("tags", []) for c in source["cells"])
        assert _load(lesson) == original, "the input is unchanged"


def test_lessons_command_refuses_badges_without_student(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sparsegrad_lab.__main__ import main

    assert main(["lessons", str(tmp_path / "a"), "--repo", "tutor/course"]) == 2
    assert main(["lessons", str(tmp_path / "b"), "--student", "--branch", "x"]) == 2
    err = capsys.readouterr().err
    assert "--student" in err and "--branch needs --repo" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
