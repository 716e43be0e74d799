"""Build the lessons' static website: ``python docs/build_site.py [--out _build/site]``.

What ``make site`` runs. It needs no network: the notebooks are rendered from their committed
outputs (never executed), and the browser assets the pages need -- MathJax 3, RequireJS and
the Jupyter widgets HTML manager -- are copied from ``node_modules/`` (``npm ci`` installs them
from package-lock.json) into the site, so a page loads nothing from a CDN.

The Sphinx sources are assembled in a staging folder next to the output (``_build/site-src``):

* ``docs/conf.py`` and ``docs/*.md`` (the home page, the tutors' page, the API reference);
* a copy of every lesson in ``notebooks/`` whose solution cells carry the ``hide-cell`` tag, so
  myst-nb renders each solution (source and output) inside a collapsed dropdown; the committed
  notebooks are never changed;
* the lesson table of the home page and the exercise list of the tutors' page, generated from
  the lessons themselves where the pages hold ``<!-- lesson-table -->`` and
  ``<!-- exercise-list -->``, with the lesson tags and exercise titles read by
  :mod:`sparsegrad_lab.lessons` (the student edition's own definitions);
* the API reference, generated when the site is built from the ``__all__`` of the package
  and of each module in :data:`LAB_MODULES` (``api.md``'s ``<!-- api-package -->`` and
  ``<!-- api-modules -->``, and one page ``api/<module>.md`` per lab module); autodoc and
  napoleon render the docstrings, imported from the installed package;
* the bundled assets under ``assets/`` (Sphinx copies them to ``_static/``), and local
  copies of the Binder and Colab badge images in place of the remote ones the lessons show.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path
from types import ModuleType
from typing import Any

from sphinx.pycode import ModuleAnalyzer

from sparsegrad_lab.lessons import SOLUTION_TAG, exercise_titles, student_notebook

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
# The tag myst-nb folds a cell under; the site adds it to every SOLUTION_TAG cell.
SITE_TAG = "hide-cell"
PACKAGE = "sparsegrad_lab"
# The lab modules the API reference documents after the package's top level: every module a
# lesson imports from (tests/test_site.py checks that no lesson imports from any other),
# in the order of the package's layers, bottom up. Each is documented by its own __all__.
# The routes and the byte model (footprint) are documented although they are core: lesson 03
# teaches the small-graph route and reads the model's stages.
# Left out on purpose: the core modules (ops, pattern, sddmm, batching, csr_from_values),
# whose public names the top level re-exports and whose other names are internals of the
# operation; third_party (the benchmark's comparison models, reached through memory_model
# and implementations); __main__ (the command line, documented by its --help); and the
# private _checks and _torch_util.
LAB_MODULES = (
    "errors",
    "routes",
    "footprint",
    "memory_guard",
    "example_matrices",
    "memory_model",
    "measurement",
    "timing",
    "implementations",
    "sweep",
    "allocations",
    "benchmark",
    "benchmark_report",
    "plots",
    "widgets",
    "distributed_demo",
    "notebook",
    "lessons",
)
# node_modules path -> path under the site's _static/. MathJax: the combined TeX+MathML
# -> CHTML file and what it loads on demand (TeX extensions, CHTML fonts, menu, a11y).
ASSETS = {
    "requirejs/require.js": "require.js",
    "@jupyter-widgets/html-manager/dist/embed-amd.js": "html-manager/embed-amd.js",
    "mathjax/es5/tex-mml-chtml.js": "mathjax/tex-mml-chtml.js",
    "mathjax/es5/input": "mathjax/input",
    "mathjax/es5/output/chtml": "mathjax/output/chtml",
    "mathjax/es5/ui": "mathjax/ui",
    "mathjax/es5/a11y": "mathjax/a11y",
    "mathjax/es5/adaptors": "mathjax/adaptors",
}
# Remote badge images the lessons show -> the site's own drawings (docs/badges/): a page that
# loads an image from another host is not offline. Links stay as they are.
BADGES = {
    "https://mybinder.org/badge_logo.svg": "binder.svg",
    "https://colab.research.google.com/assets/colab-badge.svg": "colab.svg",
}
# The widget manager's stylesheet refers to its icon fonts next to the script.
FONT_SUFFIXES = (".woff2", ".woff", ".ttf", ".eot", ".svg")


class SiteBuildError(RuntimeError):
    """The site cannot be built from what is on disk (assets missing, Sphinx failed)."""


def _text(source: str | list[str]) -> str:
    return source if isinstance(source, str) else "".join(source)


def lesson_info(path: Path) -> dict[str, Any]:
    """Title, estimated time and exercise headings of one lesson, read from the notebook.

    The title is the first ``#`` heading; the time is the first "N min", "N-M minutes" or
    "N hours" in the first markdown cell ("not stated" without one); the exercises are
    :func:`sparsegrad_lab.lessons.exercise_titles`.
    """
    notebook = json.loads(path.read_text(encoding="utf-8"))
    markdown = [_text(c["source"]) for c in notebook["cells"] if c["cell_type"] == "markdown"]
    first = markdown[0] if markdown else ""
    title = re.search(r"^#\s+(.+)$", first, re.M)
    minutes = re.search(
        r"(?:\d+(?:\.\d+)?\s*(?:[-–]|to)\s*)?\d+(?:\.\d+)?\s*(?:min(?:ute)?s?|h(?:ours?)?)\b",
        first,
    )
    return {
        "name": path.stem,
        "title": title[1].strip() if title else path.stem,
        "minutes": minutes[0] if minutes else "not stated",
        "exercises": exercise_titles(notebook),
    }


def lesson_table(infos: list[dict[str, Any]]) -> str:
    rows = [
        f"| [{info['title']}](notebooks/{info['name']}.ipynb) | {info['minutes']} | "
        f"{len(info['exercises'])} |"
        for info in infos
    ]
    return "\n".join(["| lesson | time | exercises |", "|---|---|---|", *rows])


def exercise_list(infos: list[dict[str, Any]]) -> str:
    lines = []
    for info in infos:
        lines.append(f"- **{info['title']}** ({info['minutes']})")
        lines += [f"  - {exercise}" for exercise in info["exercises"]]
    return "\n".join(lines)


# ------------------------------------------------------------------------- the API reference

# kind of object -> (section heading, autodoc directive, its options), in page order;
# constants and type aliases are written by _data_entry.
_KINDS = {
    "function": ("Functions", "autofunction", ()),
    "class": ("Classes", "autoclass", (":members:",)),
    "exception": ("Exceptions", "autoexception", (":show-inheritance:",)),
    "data": ("Constants and types", "", ()),
}
# A value longer than this is left out of a constant's entry (a registry of implementations
# is not read from its repr); its description says what it holds.
_VALUE_CHARS = 60


def _kind(obj: object) -> str:
    if inspect.isclass(obj):
        return "exception" if issubclass(obj, BaseException) else "class"
    return "function" if inspect.isroutine(obj) else "data"


def _summary(text: str) -> str:
    """The first sentence of a docstring's first paragraph, on one line (reStructuredText)."""
    paragraph = " ".join(text.strip().split("\n\n")[0].split())
    return re.split(r"(?<=\.)\s+(?=[A-Z])", paragraph, maxsplit=1)[0]


def _rst(text: str) -> str:
    """reStructuredText inside a MyST page: autodoc's output is reStructuredText, which
    MyST's own parser would print as it is."""
    return f"```{{eval-rst}}\n{text.strip()}\n```\n"


def _defining_module(module: ModuleType, name: str) -> ModuleType:
    """The module whose source assigns ``name``: ``module``, or the one it imports it from."""
    package = module.__name__ if hasattr(module, "__path__") else module.__package__
    for node in ast.parse(inspect.getsource(module)).body:
        if isinstance(node, ast.ImportFrom) and any(alias.name == name for alias in node.names):
            source = importlib.import_module("." * node.level + (node.module or ""), package)
            return _defining_module(source, name)
    return module


def _data_entry(module: ModuleType, name: str, obj: object) -> tuple[list[str], str]:
    """reStructuredText for a constant or a type alias, and its summary.

    Written here rather than by ``autodata``, which documents a constant without a comment
    by its type's docstring (``str``'s, ``tuple``'s) and reads only the module it is given:
    the description is the ``#:`` comment above the assignment, found where the name is
    defined (a re-export's comment sits in the defining module), and is shown as written.
    """
    home = _defining_module(module, name)
    comment = ModuleAnalyzer.for_module(home.__name__).find_attr_docs().get(("", name), [])
    doc = "\n".join(comment).strip()
    value = re.sub(r"\b(typing|collections\.abc)\.", "", repr(obj))
    if isinstance(obj, types.GenericAlias | types.UnionType) or type(obj).__module__ == "typing":
        lines = [f".. py:type:: {name}", f"   :canonical: {value}"]
    else:
        lines = [f".. py:data:: {name}"]
        annotation = inspect.get_annotations(home).get(name)
        if annotation:
            lines.append(f"   :type: {annotation}")
        if len(value) <= _VALUE_CHARS:
            lines.append(f"   :value: {value}")
    lines.append(f"   :module: {module.__name__}")
    lines += ["", *(f"   {line}" if line else "" for line in doc.splitlines())]
    short = f"``{value}``" if len(value) <= _VALUE_CHARS else ""
    return lines, _summary(doc) if doc else short


def api_entries(module: ModuleType) -> list[tuple[str, str, Any]]:
    """``(kind, name, object)`` for every name of ``module.__all__``, in page order: functions,
    classes, exceptions, then constants and types, each alphabetical."""
    if not hasattr(module, "__all__"):
        raise SiteBuildError(
            f"{module.__name__} has no __all__: the API reference documents exactly the names "
            "a module lists there; add one, or take the module out of LAB_MODULES"
        )
    order = list(_KINDS)
    entries = [
        (_kind(getattr(module, name)), name, getattr(module, name)) for name in module.__all__
    ]
    return sorted(entries, key=lambda entry: (order.index(entry[0]), entry[1].lower()))


def api_section(module: ModuleType, documented: dict[int, str], level: int = 2) -> str:
    """MyST documenting ``module.__all__``: a table of one-line summaries, then autodoc's
    entry for each name, under a heading per kind (``level`` is the headings' level).

    A class or function already documented under another name (``documented``: object id ->
    qualified name, updated here) is listed as importable from here too, not described twice.
    """
    rows: list[str] = []
    entries: dict[str, list[str]] = {kind: [] for kind in _KINDS}
    again = []
    for kind, name, obj in api_entries(module):
        qualified = f"{module.__name__}.{name}"
        if kind == "data":
            lines, summary = _data_entry(module, name, obj)
        elif id(obj) in documented:
            again.append(f":py:obj:`{name} <{documented[id(obj)]}>`")
            continue
        else:
            documented[id(obj)] = qualified
            _, directive, options = _KINDS[kind]
            lines = [f".. {directive}:: {qualified}", *(f"   {option}" for option in options)]
            summary = _summary(inspect.getdoc(obj) or "")
        rows += [f"   * - :py:obj:`{name} <{qualified}>`", f"     - {summary}"]
        entries[kind] += [*lines, ""]
    parts = [_rst("\n".join([".. list-table::", "   :widths: 1 3", "", *rows]))]
    if again:
        parts.append(_rst(f"Also importable from here: {', '.join(again)}."))
    for kind, lines in entries.items():
        if lines:
            parts += [f"{'#' * level} {_KINDS[kind][0]}\n", _rst("\n".join(lines))]
    return "\n".join(parts)


def api_reference(staging: Path) -> dict[str, str]:
    """The API reference: what replaces ``<!-- api-package -->`` (the package's top level)
    and ``<!-- api-modules -->`` (a table of :data:`LAB_MODULES`, each documented on its own
    page ``api/<module>.md``), generated from the ``__all__`` lists when the site is built.
    """
    package = importlib.import_module(PACKAGE)
    documented: dict[int, str] = {}
    top = _rst(f".. automodule:: {PACKAGE}") + "\n" + api_section(package, documented, 3)
    (staging / "api").mkdir()
    rows = []
    for name in LAB_MODULES:
        module = importlib.import_module(f"{PACKAGE}.{name}")
        page = [
            f"# {module.__name__}\n",
            _rst(f".. automodule:: {module.__name__}"),
            api_section(module, documented),
        ]
        (staging / "api" / f"{name}.md").write_text("\n".join(page), encoding="utf-8")
        rows += [
            f"   * - :doc:`{module.__name__} <api/{name}>`",
            f"     - {_summary(module.__doc__ or '')}",
        ]
    table = _rst("\n".join([".. list-table::", "   :widths: 1 3", "", *rows]))
    toctree = "\n".join(
        ["```{toctree}", ":hidden:", "", *(f"{name} <api/{name}>" for name in LAB_MODULES), "```"]
    )
    return {"<!-- api-package -->": top, "<!-- api-modules -->": f"{table}\n{toctree}"}


def site_notebook(path: Path, student: bool = False) -> dict[str, Any]:
    """The lesson as the site shows it: solutions tagged to render collapsed, local badges.

    ``student``: the student edition nbgrader releases instead (no solution, hidden test or
    model answer; no launch badges), with the lesson's own figures kept.
    """
    notebook = json.loads(path.read_text(encoding="utf-8"))
    if student:
        notebook = student_notebook(notebook, keep_outputs=True, name=path.name)
    for cell in notebook["cells"]:
        if cell["cell_type"] == "markdown":
            text = _text(cell["source"])
            for remote, local in BADGES.items():
                text = text.replace(f"]({remote})", f"](../badges/{local})")
            cell["source"] = text
        tags = cell.get("metadata", {}).get("tags", [])
        if SOLUTION_TAG in tags and SITE_TAG not in tags:
            cell["metadata"]["tags"] = [*tags, SITE_TAG]
    return notebook


def copy_assets(node_modules: Path, target: Path) -> None:
    missing = [src for src in ASSETS if not (node_modules / src).exists()]
    if missing:
        raise SiteBuildError(
            f"missing browser assets in {node_modules}: {missing}; run `npm ci` in {ROOT} "
            "(make site does) to install them from package-lock.json"
        )
    for src, dest in ASSETS.items():
        source, destination = node_modules / src, target / dest
        destination.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, destination)
        else:
            shutil.copyfile(source, destination)
    fonts = node_modules / "@jupyter-widgets/html-manager/dist"
    for font in fonts.iterdir():
        if font.suffix in FONT_SUFFIXES:
            shutil.copyfile(font, target / "html-manager" / font.name)


def stage(staging: Path, node_modules: Path, student: bool = False) -> None:
    """Assemble the Sphinx source folder (see the module docstring)."""
    if staging.exists():
        shutil.rmtree(staging)
    (staging / "notebooks").mkdir(parents=True)
    lessons = sorted((ROOT / "notebooks").glob("*.ipynb"))
    if not lessons:
        raise SiteBuildError(f"no lessons in {ROOT / 'notebooks'}")
    infos = [lesson_info(path) for path in lessons]
    for name in ("conf.py", "mathjax_config.js"):
        shutil.copyfile(DOCS / name, staging / name)
    shutil.copytree(DOCS / "badges", staging / "badges")
    generated = {
        "<!-- lesson-table -->": lesson_table(infos),
        "<!-- exercise-list -->": exercise_list(infos),
        **api_reference(staging),
    }
    for page in DOCS.glob("*.md"):
        text = page.read_text(encoding="utf-8")
        for marker, replacement in generated.items():
            text = text.replace(marker, replacement)
        (staging / page.name).write_text(text, encoding="utf-8")
    for path in lessons:
        (staging / "notebooks" / path.name).write_text(
            json.dumps(site_notebook(path, student), indent=1, ensure_ascii=False), encoding="utf-8"
        )
    copy_assets(node_modules, staging / "assets")


def build(out: Path, node_modules: Path, student: bool = False) -> None:
    staging = out.parent / f"{out.name}-src"
    stage(staging, node_modules, student)
    if out.exists():
        shutil.rmtree(out)
    # -E: read every source again (the staging folder is new each time anyway); -q: warnings only.
    command = [sys.executable, "-m", "sphinx", "-b", "html", "-E", "-q", str(staging), str(out)]
    edition = {"SPARSEGRAD_SITE_EDITION": "student" if student else "instructor"}
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, **edition}
    )
    if result.returncode != 0:
        raise SiteBuildError(f"sphinx-build failed:\n{result.stdout}\n{result.stderr}")
    if result.stderr.strip():
        print(result.stderr, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "site")
    parser.add_argument("--node-modules", type=Path, default=ROOT / "node_modules")
    parser.add_argument(
        "--student",
        action="store_true",
        help="the student edition: no solutions, hidden tests or model answers",
    )
    args = parser.parse_args(argv)
    try:
        build(args.out.resolve(), args.node_modules.resolve(), args.student)
    except SiteBuildError as err:
        print(err, file=sys.stderr)
        return 1
    print(f"site written to {args.out}/index.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
