"""The lessons as a learner meets them: JupyterLab in a real (headless) browser.

nbval proves the cells run; this proves what a learner sees. For every notebook in
``notebooks/`` a real ``jupyter lab`` (this environment's, on 127.0.0.1, a free port, a random
token) opens it in Chromium, runs every cell, and the test checks that no cell shows an error,
that every widget renders, and that moving each slider or dropdown changes its widget's plot or
text. A screenshot of each notebook goes to ``artifacts/browser/NAME.png``.

Scratch notebooks, written under ``artifacts/browser/`` and deleted afterwards, keep the checks
honest: a working widget must pass, and a widget whose callback raises, a callback that ignores
its control, a widget that cannot render and a failing cell must each fail.

Needs Chromium (``apt-get install chromium``, as ``.ci/run`` does). Without it the tests skip,
unless ``SPARSEGRAD_REQUIRE_BROWSER`` or ``CI`` is set, where they fail.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from playwright.sync_api import Browser
from playwright.sync_api import Error as PlaywrightError
from support.browser_support import (
    BrowserCheckError,
    LabNotebook,
    LabServer,
    Timeouts,
    find_chromium,
    launched_chromium,
    open_page,
    running_jupyter_lab,
)

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
ARTIFACTS = REPO / "artifacts" / "browser"

pytestmark = pytest.mark.slow

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


# ---------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        reason = (
            "no Chromium found (install Debian's `chromium`, or set SPARSEGRAD_CHROMIUM to a "
            "Chromium/Chrome executable); .ci/run installs it"
        )
        if os.environ.get("SPARSEGRAD_REQUIRE_BROWSER") or os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Browser]:
    with launched_chromium(chromium) as launched:
        yield launched


@pytest.fixture(scope="module")
def lab(browser: Browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    # The repository root is the server's root, so lessons open at /lab/tree/notebooks/NAME
    # (the path Binder links use) and the kernel runs in notebooks/, as under `make lab`.
    with running_jupyter_lab(REPO, tmp_path_factory.mktemp("jupyter-lab")) as server:
        yield server


@pytest.fixture(scope="module")
def scratch(lab: LabServer) -> Iterator[Path]:
    """A folder the server can reach (inside the git-ignored artifacts/), removed afterwards."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="scratch-", dir=ARTIFACTS))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ----------------------------------------------------------------------------------- helpers


def saved_widget_cells(notebook: Path) -> list[int]:
    """0-based indices of the cells whose saved outputs hold a widget view."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return [
        i
        for i, cell in enumerate(cells)
        if any(WIDGET_VIEW in output.get("data", {}) for output in cell.get("outputs", []))
    ]


@dataclass
class BrowserRun:
    """What one notebook's browser check did, and how long each stage took (seconds)."""

    open_s: float
    run_all_s: float
    widgets: int
    controls: int
    controls_s: float
    total_s: float

    def __str__(self) -> str:
        return (
            f"opened in {self.open_s:.1f} s, ran all cells in {self.run_all_s:.1f} s, "
            f"{self.widgets} widget(s), {self.controls} control(s) moved in "
            f"{self.controls_s:.1f} s; {self.total_s:.1f} s in all"
        )


def check_in_browser(
    browser: Browser,
    lab: LabServer,
    notebook: Path,
    timeouts: Timeouts,
    screenshot: Path | None = None,
) -> BrowserRun:
    """Open, run and check one notebook in JupyterLab; raises BrowserCheckError if it fails."""
    path = notebook.relative_to(REPO).as_posix()
    page = open_page(browser)
    lesson = LabNotebook(page, lab, path, timeouts)
    start = time.monotonic()
    passed = False
    try:
        opened = lesson.open(workspace=f"sgl-{os.urandom(6).hex()}")
        ran = lesson.run_all()
        lesson.check_no_errors("after running all cells")
        widgets = lesson.check_widgets_render(saved_widget_cells(notebook))
        moved = lesson.exercise_controls()
        lesson.check_no_errors("after moving the widgets' controls")
        passed = True
        return BrowserRun(
            opened,
            ran,
            widgets,
            len(moved),
            sum(report.seconds for report in moved),
            time.monotonic() - start,
        )
    finally:
        try:
            if screenshot is not None:
                # Taken on failure too (it shows what went wrong), where its own failure must
                # not hide the check's message.
                try:
                    lesson.screenshot(screenshot)
                except (PlaywrightError, BrowserCheckError):
                    if passed:
                        raise
        finally:
            page.context.close()
            with contextlib.suppress(OSError):  # a dead server is reported by the next test
                lab.shut_down_kernels()


def write_scratch(folder: Path, name: str, sources: list[str]) -> Path:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    path = folder / f"{name}.ipynb"
    nbformat.write(notebook, path)
    return path


# Hang guards only (every check below ends on an event): smaller than the lessons' bounds, as
# a scratch notebook runs in seconds, yet generous for a loaded 2-core machine.
SCRATCH_TIMEOUTS = Timeouts(run_all=180, widget_render=60, widget_change=60)

# pyplot is imported for what it switches on (the inline backend, which shows a Figure as a
# PNG), not to draw with: the callbacks draw on a Figure pyplot does not track. JupyterLab
# sends the widgets' state back to the kernel while a callback runs, and ipykernel 7 handles it
# in another thread (a subshell) whose post_execute hook, matplotlib-inline's flush_figures,
# draws and closes every figure pyplot holds -- a pyplot figure then sometimes came out blank,
# depending on the machine's speed, and a callback that ignores its control "changed" its plot.
IMPORTS = (
    "import ipywidgets as w\n"
    "import matplotlib.pyplot  # noqa: F401\n"
    "from IPython.display import display\n"
    "from matplotlib.figure import Figure"
)


def curve_widget(body: str) -> str:
    """An interactive slider over a callback that prints and plots (``body`` may break it)."""
    return f"""
def curve(k):
{body}
    fig = Figure(figsize=(3, 2))
    ax = fig.subplots()
    ax.plot(range(10), [x**k for x in range(10)])
    ax.set_title(f"k = {{k}}")
    print(f"k = {{k}}")
    display(fig)


w.interactive(curve, k=w.IntSlider(value=1, min=1, max=4, description="power k"))
"""


WORKING = [
    IMPORTS,
    curve_widget("    pass"),
    'w.interactive(lambda name: print(name.upper()), name=w.Dropdown(options=["a", "b"]))',
]

# Each case: the scratch notebook's cells, what the failure message must say, and the bounds.
BROKEN: dict[str, tuple[list[str], str, Timeouts]] = {
    "callback-raises": (
        [IMPORTS, curve_widget('    if k != 1:\n        raise ValueError("broken on purpose")')],
        "ValueError: broken on purpose",
        SCRATCH_TIMEOUTS,
    ),
    "callback-ignores-its-control": (
        [IMPORTS, curve_widget("    k = 1")],
        "left its output .* unchanged",
        SCRATCH_TIMEOUTS,
    ),
    "widget-cannot-render": (
        [
            "from IPython.display import display\n"
            f'display({{"{WIDGET_VIEW}": {{"model_id": "0" * 32, "version_major": 2, '
            '"version_minor": 0}}, raw=True)'
        ],
        'shows "Error displaying widget"',
        SCRATCH_TIMEOUTS,
    ),
    "cell-raises": (
        [IMPORTS, "1 / 0", curve_widget("    pass")],
        "ZeroDivisionError",
        SCRATCH_TIMEOUTS,
    ),
    # A kernel that never finishes: the wait runs out and says which cells never ran. The
    # first cell hangs, so which cells are unfinished does not depend on the machine's speed
    # (a cell counts as run once its reply arrives); the bound is what this case tests.
    "cell-hangs": (
        ["import time\n\ntime.sleep(600)", "print('never reached')"],
        r"timed out after 8 s waiting for every code cell to run.*cells not yet run: \[1, 2\]",
        Timeouts(run_all=8),
    ),
}


# ------------------------------------------------------------------------------------- tests


@pytest.mark.timeout(900)
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_lesson_runs_and_its_widgets_respond_in_jupyterlab(
    notebook: Path, browser: Browser, lab: LabServer
) -> None:
    before = notebook.read_bytes()
    run = check_in_browser(
        browser, lab, notebook, Timeouts(), screenshot=ARTIFACTS / f"{notebook.stem}.png"
    )
    # JupyterLab must not have saved anything (autosave is off and nothing saves). The lesson
    # is not written back: whoever else changed it meanwhile (an editor, a re-execution) would
    # lose that change.
    assert notebook.read_bytes() == before, (
        f"{notebook.name} changed on disk while the browser ran it (see `git diff "
        f"{notebook.relative_to(REPO)}`): JupyterLab saved it, or another program wrote it"
    )
    print(f"{notebook.name}: {run}")


@pytest.mark.timeout(600)
def test_browser_passes_a_working_widget(browser: Browser, lab: LabServer, scratch: Path) -> None:
    notebook = write_scratch(scratch, "working_widget", WORKING)
    digest = hashlib.sha256(notebook.read_bytes()).hexdigest()
    run = check_in_browser(browser, lab, notebook, SCRATCH_TIMEOUTS)
    assert run.widgets == 2
    assert run.controls == 2  # the slider and the dropdown
    assert hashlib.sha256(notebook.read_bytes()).hexdigest() == digest


@pytest.mark.timeout(600)
@pytest.mark.parametrize("case", sorted(BROKEN))
def test_browser_detects_a_broken_widget(
    case: str, browser: Browser, lab: LabServer, scratch: Path
) -> None:
    sources, message, timeouts = BROKEN[case]
    notebook = write_scratch(scratch, case.replace("-", "_"), sources)
    with pytest.raises(BrowserCheckError, match=message) as failure:
        check_in_browser(browser, lab, notebook, timeouts)
    assert notebook.name in str(failure.value)  # the message names the notebook
    print(f"{case}: {failure.value}")


@pytest.mark.timeout(600)
def test_browser_moves_the_attention_explorer(
    browser: Browser, lab: LabServer, scratch: Path
) -> None:
    """Lesson 05's explorer alone: its node slider (on release) and layer dropdown redraw it.

    Built before any cell has shown a pyplot figure, as in the lesson, where the figure it
    draws without pyplot must still arrive as an image.
    """
    notebook = write_scratch(
        scratch,
        "attention_explorer",
        [
            "import matplotlib.pyplot  # noqa: F401\n"
            "import torch\n"
            "from sparsegrad_lab.example_matrices import karate_club\n"
            "from sparsegrad_lab.widgets import attention_explorer\n"
            "\n"
            "A = karate_club(weighted=False, dtype=torch.float64)\n"
            "scores = {k: A * torch.rand(34, 34, dtype=torch.float64) for k in ('a', 'b')}\n"
            "weights = {k: torch.sparse.softmax(s.coalesce(), dim=1) for k, s in scores.items()}\n"
            "attention_explorer(weights, groups=torch.arange(34) % 2)",
        ],
    )
    run = check_in_browser(browser, lab, notebook, SCRATCH_TIMEOUTS)
    assert run.widgets == 1
    assert run.controls == 2  # the node slider and the layer dropdown


# Lesson 04's explorer on its own: a figure pyplot does not track, drawn by a callback on
# release, must render and change with each of its two sliders.
RECOVERY_EXPLORER = [
    IMPORTS,
    "import torch\n"
    "from sparsegrad_lab.example_matrices import karate_club\n"
    "from sparsegrad_lab.widgets import recovery_explorer\n\n"
    "recovery_explorer(karate_club(dtype=torch.float64), p=40, sigma=0.05)",
]


@pytest.mark.timeout(600)
def test_browser_moves_the_recovery_explorer(
    browser: Browser, lab: LabServer, scratch: Path
) -> None:
    notebook = write_scratch(scratch, "recovery_explorer", RECOVERY_EXPLORER)
    run = check_in_browser(browser, lab, notebook, SCRATCH_TIMEOUTS)
    assert run.widgets == 1
    assert run.controls == 2  # the number of signals and the noise level
    print(f"recovery explorer: {run}")
