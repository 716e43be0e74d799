"""The lessons' website, built by ``docs/build_site.py`` and read in a real browser, offline.

The site is built into a temporary folder the way ``make site`` builds it (from the committed
outputs, no execution), served from 127.0.0.1, and every page is opened in headless Chromium
with every request to another host blocked. Each page must then show

* its maths typeset by the bundled MathJax (every ``.math`` element holds MathJax output),
* every image loaded (``naturalWidth > 0``),
* the widgets rendered from their saved state wherever the notebook saved a widget view,
* every solution folded in a closed dropdown that opens on click,
* Binder and Colab launch links for the lesson, built from the same repository constant,

and no request may have tried to leave the machine. The API reference (``api.html`` and a page
per lab module under ``api/``) must document exactly the public API -- every name of each
documented module's ``__all__``, nothing private -- and every name a lesson imports, and
render ``sparse_mm``'s signature and maths. Needs the npm assets (``npm ci``; run here
when ``node_modules`` lacks them and npm exists) and Chromium, like tests/test_browser.py.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Route
from support.browser_support import find_chromium, launched_chromium

import sparsegrad_lab
from sparsegrad_lab import lessons
from sparsegrad_lab.notebook import colab_url

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted((ROOT / "notebooks").glob("*.ipynb"))
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
ASSET = "node_modules/@jupyter-widgets/html-manager/dist/embed-amd.js"

pytestmark = pytest.mark.slow


def _load_build_site() -> Any:
    spec = importlib.util.spec_from_file_location("build_site", ROOT / "docs" / "build_site.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build_site = _load_build_site()
# The modules the reference documents: the package's top level on api.html, each lab module on
# api/<name>.html.
API_PAGES: dict[str, ModuleType] = {
    "api.html": sparsegrad_lab,
    **{
        f"api/{name}.html": importlib.import_module(f"sparsegrad_lab.{name}")
        for name in build_site.LAB_MODULES
    },
}


def _required() -> bool:
    return bool(os.environ.get("SPARSEGRAD_REQUIRE_BROWSER") or os.environ.get("CI"))


def _skip_or_fail(reason: str) -> None:
    if _required():
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (ROOT / ASSET).exists():
        npm = shutil.which("npm")
        if npm is None:
            _skip_or_fail("the site's browser assets need npm (`npm ci`); .ci/run installs it")
        subprocess.run(
            [str(npm), "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
            cwd=ROOT,
            check=True,
            timeout=600,
        )
    out = tmp_path_factory.mktemp("site") / "site"
    result = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "build_site.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"the site did not build:\n{result.stderr[-4000:]}"
    assert (out / "index.html").is_file()
    assert (out / ".nojekyll").is_file(), "GitHub Pages would not serve _static/"
    return out


@pytest.fixture(scope="module")
def server(site: Path) -> Iterator[str]:
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=site))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = find_chromium()
    if chromium is None:
        _skip_or_fail("no Chromium found (Debian's `chromium`; .ci/run installs it)")
    with launched_chromium(chromium) as launched:
        yield launched


class OfflinePage:
    """A page whose requests to any host but 127.0.0.1 are blocked and recorded."""

    def __init__(self, browser: Browser) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.context.set_default_timeout(60_000)
        self.blocked: list[str] = []
        self.context.route("**/*", self._route)
        self.page: Page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

    def _route(self, route: Route) -> None:
        url = route.request.url
        if urlsplit(url).hostname in ("127.0.0.1", None) or url.startswith("data:"):
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort()

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def offline(browser: Browser) -> Iterator[OfflinePage]:
    page = OfflinePage(browser)
    try:
        yield page
    finally:
        page.close()


def _widget_views(lesson: Path) -> int:
    cells = json.loads(lesson.read_text(encoding="utf-8"))["cells"]
    return sum(
        WIDGET_VIEW in output.get("data", {})
        for cell in cells
        for output in cell.get("outputs", [])
    )


def _solutions(lesson: Path) -> int:
    cells = json.loads(lesson.read_text(encoding="utf-8"))["cells"]
    return sum("solution" in cell.get("metadata", {}).get("tags", []) for cell in cells)


_MATH_DONE = """() => {
    const maths = Array.from(document.querySelectorAll('.math'));
    return maths.length > 0 && maths.every(m => m.querySelector('mjx-container'));
}"""

_IMAGES = """() => Array.from(document.images).map(i => ({
    src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0}))"""


def _check_common(offline: OfflinePage, url: str, name: str, expect_math: bool) -> None:
    page = offline.page
    page.goto(url, wait_until="load")
    if expect_math:
        page.wait_for_function(_MATH_DONE, timeout=60_000)
    images = page.evaluate(_IMAGES)
    broken = [image["src"] for image in images if not image["ok"]]
    assert not broken, f"{name}: images that did not load: {broken}"
    assert not offline.blocked, f"{name}: the page tried to reach the network: {offline.blocked}"


def test_lesson_info_reads_title_time_and_exercises(tmp_path: Path) -> None:
    # The tag and the exercise parsing come from the package, not from a copy in the script.
    assert build_site.SOLUTION_TAG is lessons.SOLUTION_TAG
    assert build_site.exercise_titles is lessons.exercise_titles

    def exercise(number: int) -> list[dict[str, Any]]:
        """A solution cell and its autograded check, with nbgrader's metadata."""
        grader = {"grade_id": f"ex{number}", "grade": False, "solution": True}
        check = {"grade_id": f"ex{number}-tests", "grade": True, "solution": False, "points": 1}
        return [
            {
                "cell_type": "code",
                "source": "x = 1",
                "metadata": {"tags": ["solution"], "nbgrader": grader},
            },
            {"cell_type": "code", "source": "assert x == 1", "metadata": {"nbgrader": check}},
        ]

    notebook = {
        "cells": [
            {"cell_type": "markdown", "source": "# 07 · A title\n\nEstimated time: 30-40 minutes."},
            {"cell_type": "markdown", "source": "## Exercises\n\n### Exercise 1 — first"},
            *exercise(1),
            {"cell_type": "markdown", "source": "### Exercise 2 — second"},
            *exercise(2),
        ]
    }
    path = tmp_path / "07_x.ipynb"
    path.write_text(json.dumps(notebook))
    info = build_site.lesson_info(path)
    assert info == {
        "name": "07_x",
        "title": "07 · A title",
        "minutes": "30-40 minutes",
        "exercises": ["Exercise 1 — first", "Exercise 2 — second"],
    }
    assert "| [07 · A title](notebooks/07_x.ipynb) | 30-40 minutes | 2 |" in (
        build_site.lesson_table([info])
    )
    tagged = build_site.site_notebook(path)["cells"][2]["metadata"]["tags"]
    assert tagged == ["solution", "hide-cell"]


# ---------------------------------------------------------------------------- API reference

_ENTRY = re.compile(r'<dt class="sig sig-object py" id="([^"]+)"')
_LINK = re.compile(r'href="([^"]*#[^"]+)"')


def _private(qualified: str) -> bool:
    """A leading underscore in any part of the name; a dunder such as __version__ is public."""
    return any(
        part.startswith("_") and not (part.startswith("__") and part.endswith("__"))
        for part in qualified.split(".")
    )


def _lesson_imports() -> list[tuple[str, str, str]]:
    """``(lesson, module, name)`` for every ``from sparsegrad_lab[.module] import name``."""
    found = []
    for lesson in LESSONS:
        for cell in json.loads(lesson.read_text(encoding="utf-8"))["cells"]:
            if cell["cell_type"] != "code":
                continue
            # IPython lines (%pip, !ls) become `pass`, keeping an indented one inside its `if`.
            source = re.sub(r"(?m)^(\s*)[%!].*$", r"\1pass", "".join(cell["source"]))
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    "sparsegrad_lab"
                ):
                    found += [(lesson.stem, node.module or "", a.name) for a in node.names]
                elif isinstance(node, ast.Import):
                    found += [
                        (lesson.stem, a.name, "")
                        for a in node.names
                        if a.name.startswith("sparsegrad_lab.")
                    ]
    return found


def test_lessons_import_only_what_the_reference_documents() -> None:
    """Every module a lesson imports from has a reference page, and every name is public."""
    imports = _lesson_imports()
    assert any(module == "sparsegrad_lab" for _, module, _ in imports), "no imports found"
    modules = {module.__name__: module for module in API_PAGES.values()}
    for lesson, module, name in imports:
        assert module in modules, (
            f"{lesson} imports from {module}, which the API reference does not document: add "
            "it to LAB_MODULES in docs/build_site.py, or import it from a documented module"
        )
        if name:
            assert name in modules[module].__all__, (
                f"{lesson} imports {name} from {module}, which does not list it in __all__"
            )


def test_api_reference_documents_exactly_the_public_api(site: Path) -> None:
    """Each page has one entry per name of its module's ``__all__`` and nothing private.

    The top level's names are all on api.html. A lab module's name that is the same object
    as one documented on another page is linked there instead of described twice.
    """
    pages = {page: (site / page).read_text(encoding="utf-8") for page in API_PAGES}
    entries = {page: set(_ENTRY.findall(html)) for page, html in pages.items()}
    everywhere = set().union(*entries.values())
    for page, module in API_PAGES.items():
        private = sorted(e for e in entries[page] if _private(e))
        assert not private, f"{page} documents private names: {private}"
        prefix = f"{module.__name__}."
        listed = {e.removeprefix(prefix) for e in entries[page] if e.startswith(prefix)}
        top = {name for name in listed if "." not in name}
        missing = set(module.__all__) - top
        extra = top - set(module.__all__)
        assert not extra, f"{page} documents names outside {module.__name__}.__all__: {extra}"
        links = set(_LINK.findall(pages[page]))
        for name in sorted(missing):
            elsewhere = [
                entry
                for entry in everywhere
                if entry.rsplit(".", 1)[-1] == name
                and entry.rsplit(".", 1)[0] in sys.modules
                and getattr(sys.modules[entry.rsplit(".", 1)[0]], name, None)
                is getattr(module, name)
            ]
            assert elsewhere, f"{page} does not document {module.__name__}.{name}"
            assert any(link.endswith(f"#{elsewhere[0]}") for link in links), (
                f"{page}: {name} is documented as {elsewhere[0]} but the page does not link it"
            )
        # The summary table at the top links every entry of the page.
        for name in top:
            assert f'href="#{prefix}{name}"' in pages[page], f"{page}: {name} not in the table"
    # Every public top-level name, on the reference page itself.
    for name in sparsegrad_lab.__all__:
        assert f"sparsegrad_lab.{name}" in entries["api.html"], f"api.html lacks {name}"


def test_home_page_lists_every_lesson(offline: OfflinePage, server: str) -> None:
    # expect_math: lesson 02's title in the navigation holds maths, on every page.
    _check_common(offline, f"{server}/index.html", "index.html", expect_math=True)
    links = offline.page.eval_on_selector_all(
        "table a[href]", "links => links.map(a => a.getAttribute('href'))"
    )
    for lesson in LESSONS:
        assert f"notebooks/{lesson.stem}.html" in links, f"the lesson table lacks {lesson.stem}"
    assert "CC BY 4.0" in offline.page.inner_text("body")
    # The API reference: linked from the page's text and from the navigation.
    article = offline.page.eval_on_selector_all(
        "article a[href]", "links => links.map(a => a.getAttribute('href'))"
    )
    navigation = offline.page.eval_on_selector_all(
        "nav.bd-docs-nav a[href]", "links => links.map(a => a.getAttribute('href'))"
    )
    assert "api.html" in article, "the home page does not link the API reference"
    assert "api.html" in navigation, "the navigation does not list the API reference"


def test_tutors_page(offline: OfflinePage, server: str) -> None:
    _check_common(offline, f"{server}/tutors.html", "tutors.html", expect_math=True)
    text = offline.page.inner_text("body")
    for topic in ("Binder", "Colab", "--student", "memory guard", "NotImplementedError"):
        assert topic in text, f"the tutors' page does not mention {topic}"
    # The exercise list gives each lesson's time, read from the lesson's first cell.
    items = offline.page.eval_on_selector_all(
        "li strong", "els => els.map(e => e.parentNode.innerText)"
    )
    for lesson in LESSONS:
        title = json.loads(lesson.read_text())["cells"][0]["source"]
        heading = "".join(title).splitlines()[0].lstrip("# ").strip()
        (item,) = [i for i in items if i.startswith(heading[:20])] or [f"{heading}: missing"]
        assert "not stated" not in item and "missing" not in item, (
            f"tutors' page: {item.splitlines()[0]!r}; state the time in the first cell of "
            f"{lesson.name} (e.g. 'Estimated time: 40 min')"
        )


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_lesson_page(offline: OfflinePage, server: str, lesson: Path) -> None:
    name = f"notebooks/{lesson.stem}.html"
    _check_common(offline, f"{server}/{name}", name, expect_math=True)
    page = offline.page

    # The launch buttons open this lesson in this repository.
    hrefs = page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)")
    assert colab_url(lesson.name) in hrefs, f"{name}: no Colab launch link"
    binder = [h for h in hrefs if h.startswith("https://mybinder.org/v2/gh/")]
    assert any(h.endswith(f"urlpath=lab/tree/notebooks/{lesson.name}") for h in binder), (
        f"{name}: no Binder launch link to the lesson: {binder}"
    )
    # Navigation: every other lesson is one click away.
    for other in LESSONS:
        if other != lesson:
            assert any(h.endswith(f"/notebooks/{other.stem}.html") for h in hrefs), other.stem

    views = _widget_views(lesson)
    if views:
        page.wait_for_function(
            "n => document.querySelectorAll('.jupyter-widgets.widget-container, "
            ".jupyter-widgets.widget-inline-hbox, .jupyter-widgets.widget-box').length >= n",
            arg=views,
            timeout=60_000,
        )
        assert "Error displaying widget" not in page.inner_text("body"), name
        controls = page.locator(".widget-slider, .widget-dropdown, .widget-toggle-buttons")
        assert controls.count() >= 1, f"{name}: saved widgets show no control"
    assert not offline.errors, f"{name}: script errors: {offline.errors}"

    solutions = _solutions(lesson)
    dropdowns = page.locator("details.hide:has(summary:has-text('Show the solution'))")
    assert dropdowns.count() == solutions, f"{name}: {dropdowns.count()} of {solutions} folded"
    if solutions:
        assert all(not d.evaluate("el => el.open") for d in dropdowns.all()), f"{name}: open"
        first = dropdowns.first
        body = first.locator(".cell_input, .cell_output").first
        assert not body.is_visible(), f"{name}: a folded solution is visible"
        first.locator("summary").click()
        assert first.evaluate("el => el.open") and body.is_visible(), f"{name}: does not open"


# sparse_mm's entry: its signature, then its docstring's display maths, typeset.
_SPARSE_MM = """() => {
    const entry = document.getElementById('sparsegrad_lab.sparse_mm').closest('dl');
    const display = entry.querySelector('dd div.math mjx-container');
    const box = display ? display.getBoundingClientRect() : null;
    return {
        signature: entry.querySelector('dt').innerText,
        inline: entry.querySelectorAll('dd span.math mjx-container').length,
        display: box ? [box.width, box.height] : null,
        text: entry.querySelector('dd').innerText,
    };
}"""


def test_api_page(offline: OfflinePage, server: str) -> None:
    _check_common(offline, f"{server}/api.html", "api.html", expect_math=True)
    page = offline.page
    signature = page.locator('dt[id="sparsegrad_lab.sparse_mm"]')
    assert signature.is_visible(), "api.html: sparse_mm's signature is not shown"
    entry = page.evaluate(_SPARSE_MM)
    for part in ("sparse_mm(", "A", "B", "backward", "pattern", "Tensor"):
        assert part in entry["signature"], f"sparse_mm's signature lacks {part!r}: {entry}"
    assert entry["display"] and min(entry["display"]) > 0, f"no typeset display maths: {entry}"
    assert entry["inline"] >= 2, f"sparse_mm's inline maths is not typeset: {entry}"
    assert "\\nabla" not in entry["text"] and "Parameters" in entry["text"], entry["text"][:300]
    # Every lab module is one click away, in the table and the navigation.
    hrefs = page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)")
    for name in build_site.LAB_MODULES:
        assert f"{server}/api/{name}.html" in hrefs, f"api.html does not link api/{name}.html"
    assert not offline.errors, f"api.html: script errors: {offline.errors}"


@pytest.mark.parametrize("page", [p for p in API_PAGES if p != "api.html"])
def test_api_module_page(offline: OfflinePage, server: str, page: str) -> None:
    _check_common(offline, f"{server}/{page}", page, expect_math=True)
    module = API_PAGES[page]
    heading = offline.page.locator("article h1").first.inner_text()
    assert module.__name__ in heading, f"{page}: heading {heading!r}"
    assert not offline.errors, f"{page}: script errors: {offline.errors}"


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda path: path.stem)
def test_the_student_site_shows_no_solution_and_launches_nothing(lesson: Path) -> None:
    instructor = json.dumps(build_site.site_notebook(lesson))
    student = json.dumps(build_site.site_notebook(lesson, student=True))
    assert "### BEGIN SOLUTION" in instructor  # what the student edition must not keep
    for leftover in ("BEGIN SOLUTION", "BEGIN HIDDEN TESTS", "_hidden_tests", "mybinder.org/v2"):
        assert leftover not in student, f"{lesson.name}: the student site keeps {leftover!r}"
    assert "NotImplementedError" in student  # the stubs are there instead


def test_the_student_site_configuration_drops_the_launch_buttons() -> None:
    conf = (ROOT / "docs" / "conf.py").read_text(encoding="utf-8")
    options: dict[str, Any] = {}
    for edition in ("instructor", "student"):
        namespace: dict[str, Any] = {}
        previous = os.environ.get("SPARSEGRAD_SITE_EDITION")
        os.environ["SPARSEGRAD_SITE_EDITION"] = edition
        try:
            exec(compile(conf, "conf.py", "exec"), namespace)
        finally:
            if previous is None:
                del os.environ["SPARSEGRAD_SITE_EDITION"]
            else:
                os.environ["SPARSEGRAD_SITE_EDITION"] = previous
        options[edition] = namespace["html_theme_options"]
    assert "launch_buttons" in options["instructor"] and "repository_url" in options["instructor"]
    assert "launch_buttons" not in options["student"]
    assert "repository_url" not in options["student"]
