"""The Binder and Colab links point at lessons that exist, in one repository."""

import json
import re
from pathlib import Path

from sparsegrad_lab.notebook import BINDER_REPO, binder_url, colab_url

ROOT = Path(__file__).parent.parent
BINDER_LINK = re.compile(
    r"https://mybinder\.org/v2/gh/([^/]+/[^/]+)/HEAD\?urlpath=lab/tree/([^)\s\"']+)"
)
COLAB_LINK = re.compile(r"https://colab\.research\.google\.com/github/[^)\s\"']+")


def _markdown_of_notebooks() -> dict[str, str]:
    texts = {}
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        texts[path.name] = "\n".join(
            "".join(c["source"]) for c in cells if c["cell_type"] == "markdown"
        )
    return texts


def test_readme_badge_opens_the_first_lesson():
    assert binder_url("00_start_here.ipynb") in (ROOT / "README.md").read_text()


def test_every_binder_link_uses_one_repository_and_an_existing_lesson():
    sources = {"README.md": (ROOT / "README.md").read_text(), **_markdown_of_notebooks()}
    seen = 0
    for name, text in sources.items():
        for repo, target in BINDER_LINK.findall(text):
            seen += 1
            assert repo == BINDER_REPO, f"{name} links Binder to {repo}, not {BINDER_REPO}"
            assert (ROOT / target).is_file(), f"{name} links Binder to missing {target}"
    assert seen >= 1


def test_every_lesson_is_listed_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert f"`{path.stem}`" in readme, f"README does not list {path.stem}"


def test_every_lesson_has_its_binder_and_colab_links():
    for name, text in _markdown_of_notebooks().items():
        assert binder_url(name) in text, f"{name} has no link {binder_url(name)}"
        assert colab_url(name) in text, f"{name} has no 'Open in Colab' link {colab_url(name)}"
        # Any other Colab link must be built the same way, i.e. open an existing lesson.
        for link in COLAB_LINK.findall(text):
            lesson = link.rsplit("/", 1)[-1]
            assert link == colab_url(lesson), f"{name}: {link} is not colab_url({lesson!r})"
            assert (ROOT / "notebooks" / lesson).is_file(), f"{name} links Colab to {lesson}"
