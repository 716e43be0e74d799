"""The lessons as an nbgrader course: the ``course`` command, and a whole term in a test.

The term (slow: nbgrader's autograder runs every cell of each submitted lesson): in a temporary
folder, ``python -m sparsegrad_lab course`` writes the course, ``nbgrader generate_assignment``
releases every lesson, and three kinds of student submit:

* ``instructor``: the instructor's solutions, every lesson -- full marks on every autograded
  cell;
* ``untouched``: the release as handed out, every lesson -- zero on every autograded cell, and
  the grader still finishes;
* one student per bypass of issue #20 (an answer copied from what a check or a cell above
  computes, or a rule of the exercise broken), each submitting that one lesson: the
  instructor's solutions with that exercise's answer replaced by the bypass -- zero on that
  exercise, full marks on the others.

``nbgrader autograde`` grades them, ``nbgrader export`` writes the grade sheet (CSV) and
``nbgrader generate_feedback`` the feedback files; every score is asserted from the sheet and
from the gradebook, and the release is checked to be what ``lessons --student`` writes.
"""

from __future__ import annotations

import csv
import html
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sparsegrad_lab.__main__ import main
from sparsegrad_lab.course import nbgrader_config, write_course
from sparsegrad_lab.lessons import graded_cells, lesson_paths, student_notebook

LESSONS = {path.stem: json.loads(path.read_text(encoding="utf-8")) for path in lesson_paths()}


@dataclass(frozen=True)
class Bypass:
    """An answer that passed the old checks: the solution cell ``answer`` gets ``source``."""

    lesson: str
    answer: str  # grade_id of the solution cell replaced
    tests: str  # grade_id of the test cell that must score zero
    source: str


# Issue #20's one-line bypasses, in the lessons' new shape: each either reads what the old
# check (or a cell above) computed for the lesson's own example, or breaks the exercise's rule.
BYPASSES = {
    # "predict_peak_bytes('torch_coo', ...)": the library's model called, not a formula written.
    "00-ex2-library-model": Bypass(
        "00_start_here",
        "ex2-coo-peak",
        "ex2-coo-peak-tests",
        """
def coo_peak_bytes(n, m, nnz, p, element_size):
    dtype = {4: torch.float32, 8: torch.float64}[element_size]
    return predict_peak_bytes("torch_coo", n=n, m=m, nnz=nnz, p=p, layout="coo", dtype=dtype)
""",
    ),
    # "my_grad = A_ex_leaf.grad.coalesce().values()": autograd's answer, as the check made it.
    "01-ex1-autograd": Bypass(
        "02_gradient_derivation",
        "ex1-least-squares-grad",
        "ex1-least-squares-grad-tests",
        """
def least_squares_grad(A, B, Y):
    A_ex_leaf = A.clone().requires_grad_()
    (sparse_mm(A_ex_leaf, B) - Y).pow(2).sum().backward()
    return A_ex_leaf.grad.coalesce().values().detach()
""",
    ),
    # "sampled = A_cx_leaf.grad.coalesce().values()"
    "01-ex2-autograd": Bypass(
        "02_gradient_derivation",
        "ex2-stored-gradient",
        "ex2-stored-gradient-tests",
        """
def stored_gradient(A, B, G):
    A_cx_leaf = A.clone().requires_grad_()
    sparse_mm(A_cx_leaf, B).backward(G)
    return A_cx_leaf.grad.coalesce().values().detach()
""",
    ),
    # "my_second = expected_db": the check's own double backward.
    "01-ex4-expected-db": Bypass(
        "02_gradient_derivation",
        "ex4-second-derivative",
        "ex4-second-derivative-tests",
        """
def second_derivative(A, G, K):
    v_db = A.values().clone().requires_grad_()
    B_var_db = torch.zeros(A.shape[1], G.shape[1], dtype=G.dtype, requires_grad=True)
    C_db = sparse_mm(torch.sparse_coo_tensor(A.indices(), v_db, A.shape), B_var_db)
    (B_db_grad,) = torch.autograd.grad(C_db, B_var_db, G, create_graph=True)
    (expected_db,) = torch.autograd.grad((K * B_db_grad).sum(), v_db)
    return expected_db.detach()
""",
    ),
    # "hub_name = name": the hub by networkx degrees, against the rule.
    "02-ex1-networkx": Bypass(
        "01_sparsity_patterns",
        "ex1-longest-row",
        "ex1-longest-row-tests",
        """
def longest_row(crow):
    name, degree = max(graph.degree, key=lambda node_degree: node_degree[1])
    return list(graph.nodes).index(name)
""",
    ),
    # Exercise 4's rule: no coalesce() and no to_sparse_csr() -- the old check's reference.
    "02-ex4-to-sparse-csr": Bypass(
        "01_sparsity_patterns",
        "ex4-coalesce-compress",
        "ex4-coalesce-compress-tests",
        """
def coalesce_and_compress(rows, cols, values, n, m):
    A = torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (n, m)).to_sparse_csr()
    return A.crow_indices(), A.col_indices(), A.values()
""",
    ),
    # Section 1's own peak, scaled with n·p·e: exact on the check's graph, nowhere else.
    "03-ex1-section-1-scaled": Bypass(
        "03_memory_savings",
        "ex1-sddmm-peak-large",
        "ex1-sddmm-peak-large-tests",
        """
def sddmm_peak_large(n, m, nnz, p, e):
    return round(predicted["sddmm"] * (n * p * e) / (4000 * 32 * 4))
""",
    ),
    # Asking the model instead of deriving it: what section 2's cells call.
    "03-ex1-ask-the-model": Bypass(
        "03_memory_savings",
        "ex1-sddmm-peak-large",
        "ex1-sddmm-peak-large-tests",
        """
def sddmm_peak_large(n, m, nnz, p, e):
    dtype = {4: torch.float32, 8: torch.float64}[e]
    return memory_breakdown("sddmm", n=n, m=m, nnz=nnz, p=p, dtype=dtype).peak_bytes
""",
    ),
    # The small graph's own measurement, and the large-graph formula (from exercise 1) for the
    # rest: passes the check, but knows no small graph other than section 2's.
    "03-ex2-small-measured": Bypass(
        "03_memory_savings",
        "ex2-sddmm-peak",
        "ex2-sddmm-peak-tests",
        """
def sddmm_peak(n, m, nnz, p, e):
    if (n, m, nnz, p, e) == (2000, 2000, 20_000, 32, 4):
        return small_measured
    return sddmm_peak_large(n, m, nnz, p, e)
""",
    ),
    # "a difference of two predict_peak_bytes calls", not a formula.
    "03-ex3-two-predictions": Bypass(
        "03_memory_savings",
        "ex3-bytes-per-column",
        "ex3-bytes-per-column-tests",
        """
def sddmm_bytes_per_column(n, m, e):
    kw = {"n": n, "m": m, "nnz": 10 * n, "dtype": {4: torch.float32, 8: torch.float64}[e]}
    return predict_peak_bytes("sddmm", **kw, p=65) - predict_peak_bytes("sddmm", **kw, p=64)
""",
    ),
    # "v_lstsq = w_learned[rows == hub]": the trained weights of the lesson's own hub.
    "04-ex1-w-learned": Bypass(
        "04_application",
        "ex1-row-least-squares",
        "ex1-row-least-squares-tests",
        """
def row_least_squares(X, y, neighbours):
    return w_learned[rows == int(degree.argmax())]
""",
    ),
    # "moved_sparse, moved_dense = looked_up_now, looked_up_ever": the check's own reasoning.
    "05-ex1-looked-up": Bypass(
        "05_in_practice",
        "ex1-rows-moved",
        "ex1-rows-moved-tests",
        """
def rows_moved_in_second_step(start, first, second, sparse, optimizer_class):
    looked_up_now = set(second.tolist())
    looked_up_ever = looked_up_now | set(first.tolist())
    return looked_up_now if sparse else looked_up_ever
""",
    ),
    # Exercise 2's rule: no tensor of E's size. The right numbers, through the dense gradient.
    "05-ex2-to-dense": Bypass(
        "05_in_practice",
        "ex2-lazy-adam",
        "ex2-lazy-adam-tests",
        """
def lazy_adam_step(E, exp_avg, exp_avg_sq, grad, step, lr, betas=(0.9, 0.999), eps=1e-8):
    beta1, beta2 = betas
    rows = grad.coalesce().indices()[0]
    g = grad.to_dense()
    m = beta1 * exp_avg + (1 - beta1) * g
    v = beta2 * exp_avg_sq + (1 - beta2) * g * g
    step_size = lr * math.sqrt(1 - beta2**step) / (1 - beta1**step)
    exp_avg[rows], exp_avg_sq[rows] = m[rows], v[rows]
    E[rows] -= step_size * m[rows] / (v[rows].sqrt() + eps)
""",
    ),
    # "return dense_gat(...)": the handed layer passed on unchanged, its n x n blocks and all.
    "06-ex1-handed-layer": Bypass(
        "06_find_the_allocation",
        "ex1-sparse-gat",
        "ex1-sparse-gat-tests",
        """
def sparse_gat(H, A, W, a_src, a_dst):
    return dense_gat(H, A, W, a_src, a_dst)
""",
    ),
}


def _cells_by_id(notebook: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        cell["metadata"]["nbgrader"]["grade_id"]: cell
        for cell in notebook["cells"]
        if "nbgrader" in cell.get("metadata", {})
    }


def _autograded(lesson: str) -> dict[str, float]:
    """grade_id -> points of every autograded test cell of a lesson."""
    return {c.grade_id: c.points for c in graded_cells(LESSONS[lesson]) if not c.by_hand}


def _with_bypass(bypass: Bypass) -> dict[str, Any]:
    """The instructor's solutions of a lesson, with one answer replaced by the bypass."""
    notebook = json.loads(json.dumps(LESSONS[bypass.lesson]))
    cell = _cells_by_id(notebook)[bypass.answer]
    assert cell["metadata"]["nbgrader"]["solution"], f"{bypass.answer} is not an answer cell"
    cell["source"] = bypass.source.strip("\n")
    return notebook


def _nbgrader(course: Path, *args: str) -> str:
    # nbgrader runs the `alembic` executable from PATH when it creates the gradebook; a
    # JUPYTER_CONFIG_DIR of the test's own keeps a user's nbgrader settings out.
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "JUPYTER_CONFIG_DIR": str(course.parent / "jupyter-config"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "nbgrader", *args],
        cwd=course,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"nbgrader {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def _submit(course: Path, student: str, lesson: str, notebook: dict[str, Any]) -> None:
    folder = course / "submitted" / student / lesson
    folder.mkdir(parents=True)
    (folder / f"{lesson}.ipynb").write_text(json.dumps(notebook), encoding="utf-8")


# ------------------------------------------------------------------------------ the term


@pytest.fixture(scope="module")
def term(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A course made, released, submitted by every student, autograded, exported, fed back."""
    course = tmp_path_factory.mktemp("term") / "course"
    assert main(["course", str(course)]) == 0
    for lesson in LESSONS:
        _nbgrader(course, "generate_assignment", lesson, "--force")
    released = {
        lesson: json.loads((course / "release" / lesson / f"{lesson}.ipynb").read_text())
        for lesson in LESSONS
    }
    for lesson, notebook in LESSONS.items():
        _submit(course, "instructor", lesson, notebook)
        _submit(course, "untouched", lesson, released[lesson])
    for name, bypass in BYPASSES.items():
        _submit(course, f"bypass-{name}", bypass.lesson, _with_bypass(bypass))
    for lesson in LESSONS:
        _nbgrader(course, "autograde", lesson, "--create", "--force")
    _nbgrader(course, "export", "--to", "grades.csv")
    for lesson in LESSONS:
        _nbgrader(course, "generate_feedback", lesson, "--force")
    with (course / "grades.csv").open(newline="") as sheet:
        rows = {(row["assignment"], row["student_id"]): row for row in csv.DictReader(sheet)}
    from nbgrader.api import Gradebook

    submissions = {(lesson, s) for lesson in LESSONS for s in ("instructor", "untouched")}
    submissions |= {(b.lesson, f"bypass-{name}") for name, b in BYPASSES.items()}
    scores: dict[tuple[str, str], dict[str, tuple[float, float]]] = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        for lesson, student in submissions:
            submitted = gradebook.find_submission_notebook(lesson, lesson, student)
            scores[lesson, student] = {
                grade.cell.name: (grade.score, grade.max_score) for grade in submitted.grades
            }
    return {
        "course": course,
        "released": released,
        "sheet": rows,
        "scores": scores,
        "submissions": submissions,
    }


@pytest.mark.slow
@pytest.mark.timeout(3600)  # a hang guard: about 20 lesson runs of up to a minute or two each
def test_the_term_grades_every_submission(term: dict[str, Any]) -> None:
    sheet, scores = term["sheet"], term["scores"]
    # One row per student and lesson; a lesson a student did not submit scores zero.
    students = {student for _, student in term["submissions"]}
    assert set(sheet) == {(lesson, student) for lesson in LESSONS for student in students}
    for key, row in sheet.items():
        if key not in term["submissions"]:
            assert float(row["score"]) == 0, key
    for lesson in LESSONS:
        auto = _autograded(lesson)
        total = sum(c.points for c in graded_cells(LESSONS[lesson]))
        # (a) the instructor's solutions: every autograded cell full; the written answers wait
        # for a human, so the sheet shows the autograded points out of the lesson's total.
        got = scores[lesson, "instructor"]
        assert {cell: got[cell] for cell in auto} == {c: (p, p) for c, p in auto.items()}, lesson
        assert float(sheet[lesson, "instructor"]["score"]) == sum(auto.values()), lesson
        assert float(sheet[lesson, "instructor"]["max_score"]) == total, lesson
        # (b) the release as handed out: zero everywhere, and the grader finished.
        got = scores[lesson, "untouched"]
        assert {cell: got[cell] for cell in auto} == {c: (0, p) for c, p in auto.items()}, lesson
        assert float(sheet[lesson, "untouched"]["score"]) == 0, lesson
        assert (term["course"] / "autograded" / "untouched" / lesson / f"{lesson}.ipynb").is_file()
    # (c) each bypass: zero on its exercise, full marks on the lesson's others.
    for name, bypass in BYPASSES.items():
        auto = _autograded(bypass.lesson)
        got = scores[bypass.lesson, f"bypass-{name}"]
        expected = {c: (0 if c == bypass.tests else p, p) for c, p in auto.items()}
        assert {cell: got[cell] for cell in auto} == expected, name
        row = sheet[bypass.lesson, f"bypass-{name}"]
        assert float(row["score"]) == sum(auto.values()) - auto[bypass.tests], name


@pytest.mark.slow
@pytest.mark.timeout(3600)  # the term fixture may run here first (pytest -k)
def test_the_release_is_the_student_edition(term: dict[str, Any]) -> None:
    """What nbgrader released is what ``lessons --student`` writes, cell for cell."""
    for lesson, released in term["released"].items():
        edition = student_notebook(LESSONS[lesson], name=lesson)
        assert [(c["cell_type"], c["source"], c["metadata"]) for c in edition["cells"]] == [
            (c["cell_type"], c["source"], c["metadata"]) for c in released["cells"]
        ], lesson


@pytest.mark.slow
@pytest.mark.timeout(3600)  # the term fixture may run here first (pytest -k)
def test_feedback_has_no_hidden_tests(term: dict[str, Any]) -> None:
    feedback = term["course"] / "feedback"
    files = sorted(feedback.glob("*/*/*.html"))
    assert len(files) == len(term["submissions"])
    hidden = {}
    for lesson, notebook in LESSONS.items():
        sources = ["".join(cell["source"]) for cell in notebook["cells"]]
        regions = [
            region.split("### END HIDDEN TESTS")[0]
            for source in sources
            for region in source.split("### BEGIN HIDDEN TESTS")[1:]
        ]
        shown = "\n".join(source.split("### BEGIN HIDDEN TESTS")[0] for source in sources)
        hidden[lesson] = [
            line.strip()
            for region in regions
            for line in region.splitlines()
            if len(line.strip()) >= 20 and line.strip() not in shown
        ]
    for path in files:
        text = html.unescape(path.read_text(encoding="utf-8"))
        assert "HIDDEN TESTS" not in text, path
        lesson = path.parent.name
        assert not [line for line in hidden[lesson] if line in text], path


# ----------------------------------------------------------------------- the course command


def test_course_command_writes_a_course(tmp_path: Path) -> None:
    dest = tmp_path / "new" / "course"
    assert main(["course", str(dest), "--course-id", "spring-term"]) == 0
    assert (
        "c.CourseDirectory.course_id = 'spring-term'" in (dest / "nbgrader_config.py").read_text()
    )
    sources = sorted(p.relative_to(dest).as_posix() for p in (dest / "source").rglob("*.ipynb"))
    assert sources == [f"source/{name}/{name}.ipynb" for name in LESSONS]
    for name, lesson in LESSONS.items():
        source = json.loads((dest / "source" / name / f"{name}.ipynb").read_text())
        # The instructor edition, less the public repository's badges and the site's fold tag.
        assert [c["source"] for c in source["cells"][1:]] == [
            c["source"] for c in lesson["cells"][1:]
        ]
        assert "mybinder.org/v2" not in json.dumps(source)


def _status(argv: list[str]) -> int:
    """main's exit status, argparse's own refusals (SystemExit) included."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)


def test_course_command_refuses_before_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "course"
    assert main(["course", str(dest)]) == 0
    assert main(["course", str(dest)]) == 2
    assert "already exists" in capsys.readouterr().err
    file = tmp_path / "a-file"
    file.write_text("mine\n")
    assert _status(["course", str(file / "course")]) == 2
    assert _status(["course", str(tmp_path / "x"), "--course-id", "no spaces"]) == 2
    assert _status(["course", str(tmp_path / "y"), "--repo", "sparsegrad-lab/sparsegrad_lab"]) == 2
    assert _status(["course", str(tmp_path / "z"), "--branch", "term1"]) == 2
    err = capsys.readouterr().err
    assert "instructor edition" in err and "--branch needs --repo" in err
    assert not any((tmp_path / d).exists() for d in ("x", "y", "z"))
    assert file.read_text() == "mine\n"


def test_course_badges_open_the_tutors_repository(tmp_path: Path) -> None:
    write_course(tmp_path, repo="tutor/course", branch="term1", folder="release/{lesson}")
    text = tmp_path / "source" / "02_gradient_derivation" / "02_gradient_derivation.ipynb"
    first = "".join(json.loads(text.read_text())["cells"][0]["source"])
    assert (
        "https://mybinder.org/v2/gh/tutor/course/term1?urlpath=lab/tree/"
        "release/02_gradient_derivation/02_gradient_derivation.ipynb" in first
    )
    assert (
        "https://colab.research.google.com/github/tutor/course/blob/term1/"
        "release/02_gradient_derivation/02_gradient_derivation.ipynb" in first
    )
    assert "sparsegrad-lab/sparsegrad_lab" not in first


def test_nbgrader_config_is_python_nbgrader_can_read() -> None:
    class Config(dict):  # what get_config() returns, enough for attribute assignment
        def __getattr__(self, name: str) -> Any:
            return self.setdefault(name, Config())

        def __setattr__(self, name: str, value: Any) -> None:
            self[name] = value

    config = Config()
    exec(
        compile(nbgrader_config("x"), "nbgrader_config.py", "exec"), {"get_config": lambda: config}
    )
    assert config["CourseDirectory"]["course_id"] == "x"
    assert config["Execute"]["timeout"] >= 300


def test_the_tutors_page_states_each_lesson_s_points_and_time() -> None:
    """docs/tutors.md's table agrees with the lessons' metadata and their first cells."""
    import re

    page = (Path(__file__).parent.parent / "docs" / "tutors.md").read_text(encoding="utf-8")
    totals = [0.0, 0.0]
    for name, lesson in LESSONS.items():
        row = re.search(
            rf"^\| `{name}` \| (.+?) \| (.+?) \| (\d+) \| (\d+) \| (\d+) \|$", page, re.M
        )
        assert row, f"the tutors' page has no row for {name}"
        graded = graded_cells(lesson)
        auto = sum(c.points for c in graded if not c.by_hand)
        by_hand = sum(c.points for c in graded if c.by_hand)
        assert (int(row[3]), int(row[4]), int(row[5])) == (auto, by_hand, auto + by_hand), name
        first = "".join(lesson["cells"][0]["source"]).replace("\n", " ")
        reading = re.search(r"(\d+) minutes to read and run", first)
        assert reading and row[1] == f"{reading[1]} min", name
        totals[0] += auto
        totals[1] += by_hand
    assert f"| **{totals[0]:.0f}** | **{totals[1]:.0f}** | **{sum(totals):.0f}** |" in page


# ------------------------------------------------------------- nbgrader in the locked JupyterLab


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_nbgrader_s_extension_works_in_the_locked_jupyterlab(tmp_path: Path) -> None:
    """The released lesson in JupyterLab: nbgrader's menus are there, its cells locked.

    jupyterlab is the lock's (4.6.6), nbgrader's lab and server extensions the lock's (0.9.6).
    """
    import urllib.request

    from support.browser_support import (
        find_chromium,
        launched_chromium,
        open_page,
        running_jupyter_lab,
    )

    chromium = find_chromium()
    if chromium is None:
        reason = "no Chromium found (Debian's `chromium`; .ci/run installs it)"
        if os.environ.get("SPARSEGRAD_REQUIRE_BROWSER") or os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    course = tmp_path / "course"
    write_course(course)
    released = course / "release" / "00_start_here"
    released.mkdir(parents=True)
    edition = student_notebook(LESSONS["00_start_here"], name="00_start_here")
    (released / "00_start_here.ipynb").write_text(json.dumps(edition), encoding="utf-8")
    with (
        running_jupyter_lab(course, tmp_path / "lab") as server,
        launched_chromium(chromium) as browser,
    ):
        formgrader = f"{server.base_url}/formgrader?token={server.token}"
        with urllib.request.urlopen(formgrader, timeout=60) as response:
            assert response.status == 200  # nbgrader's server extension answers
        page = open_page(browser)
        page.goto(
            f"{server.base_url}/lab/tree/release/00_start_here/00_start_here.ipynb"
            f"?token={server.token}"
        )
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
        # The first cell shows before the notebook's model has every cell: wait for the one
        # this test reads (an event, not a time; on a busy machine it comes later).
        page.wait_for_function(
            """() => {
            const app = window.jupyterapp;
            const panel = app && Array.from(app.shell.widgets('main'))
                .find(w => w.content && w.content.widgets);
            return !!panel && panel.content.widgets.some(
                c => (c.model.getMetadata('nbgrader') || {}).grade_id === 'ex1-dense-gib');
        }""",
            timeout=120_000,
        )
        found = page.evaluate(
            """() => {
            const app = window.jupyterapp;
            const panel = Array.from(app.shell.widgets('main'))
                .find(w => w.content && w.content.widgets);
            const ids = ['nbgrader:open-formgrader', 'nbgrader:open-create-assignment',
                         'nbgrader:open-assignment-list'];
            return {
                commands: ids.filter(id => app.commands.hasCommand(id)),
                readOnly: panel.content.widgets.map(c => c.readOnly),
                grade: panel.content.widgets.map(
                    c => (c.model.getMetadata('nbgrader') || {}).grade_id),
            };
        }"""
        )
    assert found["commands"] == [
        "nbgrader:open-formgrader",
        "nbgrader:open-create-assignment",
        "nbgrader:open-assignment-list",
    ]
    locked = dict(zip(found["grade"], found["readOnly"], strict=True))
    assert locked["ex1-dense-gib"] is False, "the student's answer cell is editable"
    assert locked["ex1-dense-gib-tests"] is True and locked["cell-743eb7f5"] is True
