"""Build hook: put the lessons and the results they read into the wheel.

The repository's ``notebooks/`` (the instructor edition, the source of truth) and
``benchmarks/results/`` (what lesson 03 draws) live outside the package. Rather than keep a
second copy in the package folder, ``build_py`` copies them into the built package as
``sparsegrad_lab/_course/{notebooks,benchmarks/results}``; ``sparsegrad_lab.lessons`` finds
that copy in a wheel install and the repository's own folders in a checkout or an editable
install. MANIFEST.in puts the same files in the sdist, so a wheel built from the sdist has them.
Everything else is declared in pyproject.toml.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# (source folder, glob) -> sparsegrad_lab/_course/<source folder>/
COURSE_FILES = [
    ("notebooks", "*.ipynb"),
    ("benchmarks/results", "*.json"),
    ("benchmarks/results", "*.png"),
]


class BuildPyWithLessons(build_py):
    """``build_py`` that also copies the lessons and benchmark results into the package."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            # An editable install imports from the checkout, where lessons.py reads the
            # repository's folders directly; a copy here could only go stale.
            return
        target = Path(self.build_lib) / "sparsegrad_lab" / "_course"
        copied = 0
        for folder, pattern in COURSE_FILES:
            for source in sorted((ROOT / folder).glob(pattern)):
                self.copy_file(str(source), str(target / folder / source.name), preserve_mode=False)
                copied += folder == "notebooks"
        if copied == 0:
            raise RuntimeError(f"build_py: no lessons found in {ROOT / 'notebooks'}")

    def copy_file(self, infile, outfile, *args, **kwargs):  # type: ignore[no-untyped-def]
        Path(outfile).parent.mkdir(parents=True, exist_ok=True)
        return super().copy_file(infile, outfile, *args, **kwargs)


setup(cmdclass={"build_py": BuildPyWithLessons})
