"""Print requirements.lock with torch replaced by another release, for ``make torch-check``.

Run by the Python of the environment being built, after ``pip install --no-deps torch==X
packaging``: torch's own requirements are read from the installed copy, every other locked
package's from pip's dry-run report (``--no-deps``, so nothing is resolved or installed).

The lock's pins are kept, except where the requested torch cannot be installed beside them:

* a pin that torch itself excludes is dropped, so pip picks a version torch accepts
  (torch 2.11.0 requires ``setuptools<82``; the lock has 84.2.1);
* a package that excludes the requested torch is left out (torchsparsegradutils 0.2.7
  requires ``torch>=2.5``), so the tests that need it skip.

Every change is reported on stderr; the requirements go to stdout.

    python tools/lock_for_torch.py requirements.lock 2.11.0 > requirements-torch-2.11.0.txt
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from importlib.metadata import requires
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version


def read_lock(path: Path) -> dict[str, str]:
    """Normalised name -> locked version, for every ``name==version`` line."""
    pins: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"(\S+?)\s*==\s*(\S+)", line)
        if match is None:
            sys.exit(f"{path}:{number}: expected 'name==version', got {line!r}")
        pins[canonicalize_name(match[1])] = match[2]
    return pins


def _applies(req: Requirement) -> bool:
    # An extra's requirement (`; extra == "docs"`) is not installed; evaluate() raises
    # for a marker naming `extra` unless it is given one, so give it none.
    return req.marker is None or req.marker.evaluate({"extra": ""})


def _requirements_of_locked(lock: dict[str, str]) -> dict[str, list[Requirement]]:
    """What each locked package (torch excepted) requires, from pip's dry-run report."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as reqs:
        reqs.write("".join(f"{n}=={v}\n" for n, v in lock.items() if n != "torch"))
        reqs.flush()
        pip = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps"]
        report = subprocess.run(
            [*pip, "--ignore-installed", "--quiet", "--report", "-", "-r", reqs.name],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    return {
        canonicalize_name(item["metadata"]["name"]): [
            Requirement(r) for r in item["metadata"].get("requires_dist") or []
        ]
        for item in json.loads(report)["install"]
    }


def lock_for_torch(lock: dict[str, str], torch_version: str) -> tuple[list[str], list[str]]:
    """The requirement lines for ``torch_version``, and one note per change to the lock."""
    torch_needs = [r for r in map(Requirement, requires("torch") or []) if _applies(r)]
    dropped: dict[str, str] = {}  # name -> why
    for req in torch_needs:
        name: str = canonicalize_name(req.name)
        if name in lock and not req.specifier.contains(lock[name], prereleases=True):
            dropped[name] = f"pin {name}=={lock[name]} dropped: torch {torch_version} needs {req}"
    for name, needs in _requirements_of_locked(lock).items():
        for req in filter(_applies, needs):
            if canonicalize_name(req.name) == "torch" and not req.specifier.contains(
                Version(torch_version), prereleases=True
            ):
                dropped[name] = f"{name}=={lock[name]} left out: it needs {req}"
    lines = [
        f"torch=={torch_version}" if name == "torch" else f"{name}=={version}"
        for name, version in lock.items()
        if name not in dropped
    ]
    return lines, list(dropped.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("lock", type=Path)
    parser.add_argument("torch_version")
    args = parser.parse_args()
    lines, notes = lock_for_torch(read_lock(args.lock), args.torch_version)
    for note in notes:
        print(f"lock_for_torch: {note}", file=sys.stderr)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
