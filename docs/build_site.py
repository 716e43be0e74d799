"""Build the lessons' static website: ``python docs/build_site.py [--out _build/site]``.

What ``make site`` runs. It needs no network: the notebooks are rendered from their committed
outputs (never executed), and the browser assets the pages need -- MathJax 3, RequireJS and
the Jupyter widgets HTML manager -- are copied from ``node_modules/`` (``npm ci`` installs them
from package-lock.json) into the site, so a page loads nothing from a CDN.

The Sphinx sources are assembled in a staging folder next to the output (``_build/site-src``):

* ``docs/conf.py`` and ``docs/*.md`` (the home page and the tutors' page);
* a copy of every lesson in ``notebooks/`` whose solution cells carry the ``hide-cell`` tag, so
  myst-nb renders each solution (source and output) inside a collapsed dropdown; the committed
  notebooks are never changed;
* the lesson table of the home page and the exercise list of the tutors' page, generated from
  the lessons themselves where the pages hold ``<!-- lesson-table -->`` and
  ``<!-- exercise-list -->``;
* the bundled assets under ``assets/`` (Sphinx copies them to ``_static/``), and local
  copies of the Binder and Colab badge images in place of the remote ones the lessons show.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SOLUTION_TAG = "solution"
SITE_TAG = "hide-cell"
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
    "N hours" in the first markdown cell ("not stated" without one); each exercise is named
    by the last heading before its solution cell.
    """
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    markdown = [_text(c["source"]) for c in cells if c["cell_type"] == "markdown"]
    first = markdown[0] if markdown else ""
    title = re.search(r"^#\s+(.+)$", first, re.M)
    minutes = re.search(
        r"(?:\d+(?:\.\d+)?\s*(?:[-–]|to)\s*)?\d+(?:\.\d+)?\s*(?:min(?:ute)?s?|h(?:ours?)?)\b",
        first,
    )
    exercises, heading = [], ""
    for cell in cells:
        if cell["cell_type"] == "markdown":
            found = re.findall(r"^#{2,4}\s+(.+)$", _text(cell["source"]), re.M)
            heading = found[-1] if found else heading
        elif SOLUTION_TAG in cell.get("metadata", {}).get("tags", []):
            exercises.append(heading or f"exercise {len(exercises) + 1}")
    return {
        "name": path.stem,
        "title": title[1].strip() if title else path.stem,
        "minutes": minutes[0] if minutes else "not stated",
        "exercises": exercises,
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


def site_notebook(path: Path) -> dict[str, Any]:
    """The lesson as the site shows it: solutions tagged to render collapsed, local badges."""
    notebook = json.loads(path.read_text(encoding="utf-8"))
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


def stage(staging: Path, node_modules: Path) -> None:
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
    for page in DOCS.glob("*.md"):
        text = page.read_text(encoding="utf-8")
        text = text.replace("<!-- lesson-table -->", lesson_table(infos))
        text = text.replace("<!-- exercise-list -->", exercise_list(infos))
        (staging / page.name).write_text(text, encoding="utf-8")
    for path in lessons:
        (staging / "notebooks" / path.name).write_text(
            json.dumps(site_notebook(path), indent=1, ensure_ascii=False), encoding="utf-8"
        )
    copy_assets(node_modules, staging / "assets")


def build(out: Path, node_modules: Path) -> None:
    staging = out.parent / f"{out.name}-src"
    stage(staging, node_modules)
    if out.exists():
        shutil.rmtree(out)
    # -E: read every source again (the staging folder is new each time anyway); -q: warnings only.
    command = [sys.executable, "-m", "sphinx", "-b", "html", "-E", "-q", str(staging), str(out)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SiteBuildError(f"sphinx-build failed:\n{result.stdout}\n{result.stderr}")
    if result.stderr.strip():
        print(result.stderr, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "site")
    parser.add_argument("--node-modules", type=Path, default=ROOT / "node_modules")
    args = parser.parse_args(argv)
    try:
        build(args.out.resolve(), args.node_modules.resolve())
    except SiteBuildError as err:
        print(err, file=sys.stderr)
        return 1
    print(f"site written to {args.out}/index.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
