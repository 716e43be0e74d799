"""Tests of the command line: every bad argument refused in one line, destinations first.

Each refusal is exit status 2 and one error line naming the argument (argparse's own usage
lines may come before it), never a traceback, and it comes before any work: the benchmark's
runner is replaced by one that fails the test if it is called.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from sparsegrad_lab import benchmark
from sparsegrad_lab.__main__ import main
from sparsegrad_lab.errors import InputValueError
from sparsegrad_lab.lessons import copy_lessons, lesson_paths

#: A grid small enough to run in a test: one tiny case, one implementation, no memory.
TINY = [
    "bench",
    "--sizes",
    "50:100:4",
    "--layouts",
    "csr",
    "--impls",
    "sddmm",
    "--repeats",
    "1",
    "--warmup",
    "0",
    "--threads",
    "1",
    "--no-memory",
    "--no-progress",
]

#: A folder no process can create files in, root included: procfs refuses new entries
#: (chmod would not do: the tests run as root, whom permission bits do not stop).
UNWRITABLE = Path("/proc/self")
needs_procfs = pytest.mark.skipif(not UNWRITABLE.is_dir(), reason="needs Linux's /proc")


@pytest.fixture
def restore_threads() -> object:
    """``--threads`` sets torch's global thread count: put it back after the test."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def no_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the benchmark starts: a refusal must come before any work."""

    def ran(*args: object, **kwargs: object) -> None:
        raise AssertionError("the benchmark ran before the refusal")

    monkeypatch.setattr(benchmark, "run_benchmark", ran)


def _refusal(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``main(argv)``; assert exit status 2 and no traceback; return the one error line."""
    code: int | str | None
    try:
        code = main(argv)
    except SystemExit as exit_info:  # argparse's own refusals exit
        code = exit_info.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and err.rstrip().endswith(errors[0]), err
    return errors[0]


# ------------------------------------------------------------------------ bad arguments


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--sizes", "100:inf:8", "not a whole number"),
        ("--sizes", "1e400:5:8", "2**63"),
        ("--sizes", "100.5:10:2", "not a whole number"),
        ("--sizes", "nan:10:2", "not a whole number"),
        ("--sizes", "10:200:2", "nnz <= n*n"),
        ("--sizes", "huge", "preset"),
        ("--sizes", "50:100:4,5e1:1e2:4", "twice"),
        ("--sizes", ",", "no sizes"),
        ("--memory-limit", "nan", "GiB"),
        ("--memory-limit", "inf", "GiB"),
        ("--memory-limit", "-1", "GiB"),
        ("--memory-limit", "0", "GiB"),
        ("--memory-limit", "1e300", "GiB"),
        ("--memory-limit", "lots", "GiB"),
        ("--batch", "0", ">= 1"),
        ("--batch", "x", "not a whole number"),
        ("--batch", "2,2", "twice"),
        ("--batch", ",", "no batch sizes"),
        ("--device", "bogus", "cpu, cuda or cuda:N"),
        ("--device", "", "cpu, cuda or cuda:N"),
        ("--device", "mps", "cpu, cuda or cuda:N"),
        ("--device", "cuda:99", "CUDA"),
        ("--repeats", "0", "integer >= 1"),
        ("--repeats", "-3", "integer >= 1"),
        ("--repeats", "many", "integer >= 1"),
        ("--warmup", "-2", "integer >= 0"),
        ("--warmup", "1.5", "integer >= 0"),
        ("--threads", "0", "integer from 1"),
        ("--threads", str((os.cpu_count() or 1) + 1), "integer from 1"),
        ("--impls", "sddmm,magic", "magic"),
        ("--impls", ",", "at least one"),
        ("--impls", "sddmm,sddmm", "twice"),
        ("--layouts", "bsr", "coo, csr"),
        ("--layouts", "", "at least one"),
        ("--layouts", "csr,csr", "twice"),
        ("--dtype", "float16", "CUDA only"),
        ("--dtype", "bfloat16", "CUDA only"),
        ("--out", "", "folder"),
        ("--out", "results.json", "folder"),
    ],
)
def test_bench_refuses_a_bad_argument_in_one_line(
    option: str,
    value: str,
    says: str,
    capsys: pytest.CaptureFixture[str],
    no_run: None,
    restore_threads: object,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if option == "--dtype" and torch.cuda.is_available():
        pytest.skip("half precision is refused only where there is no CUDA; --device is cpu")
    monkeypatch.chdir(tmp_path)  # where a relative --out would go
    argv = [*TINY, "--out", str(tmp_path), option, value]
    line = _refusal(argv, capsys)
    assert option in line and says in line and "<lambda>" not in line, line
    assert not any(tmp_path.iterdir()), "a refused run wrote files"


def test_bench_refuses_cuda_without_cuda(
    capsys: pytest.CaptureFixture[str], no_run: None, tmp_path: Path
) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here, so --device cuda is valid")
    line = _refusal([*TINY, "--out", str(tmp_path), "--device", "cuda"], capsys)
    assert "--device" in line and "no CUDA device" in line, line


# ------------------------------------------------------------------------- destinations

#: Destinations no file can be written to, each for a reason that stops root too.
UNUSABLE = [
    "a file",
    "under a file",
    pytest.param("unwritable", marks=needs_procfs),
    pytest.param("uncreatable", marks=needs_procfs),
]


def _unusable(where: str, tmp_path: Path) -> tuple[Path, Path]:
    """A file of the user's (which must survive) and a destination ``where`` says."""
    file = tmp_path / "notes.txt"
    file.write_text("mine\n")
    dest = {
        "a file": file,
        "under a file": file / "results",
        "unwritable": UNWRITABLE,  # exists, but procfs takes no new file
        "uncreatable": UNWRITABLE / "results",  # nor a new folder
    }[where]
    return file, dest


@pytest.mark.parametrize("where", UNUSABLE)
def test_bench_checks_out_before_running(
    where: str, capsys: pytest.CaptureFixture[str], no_run: None, tmp_path: Path
) -> None:
    file, out = _unusable(where, tmp_path)
    line = _refusal([*TINY, "--out", str(out)], capsys)
    assert "--out" in line and str(out) in line, line
    assert file.read_text() == "mine\n"


def test_a_second_run_keeps_the_first_runs_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_threads: object
) -> None:
    argv = [*TINY, "--out", str(tmp_path), "--no-plot"]
    assert main(argv) == 0
    (first,) = tmp_path.glob("*.json")
    before = first.read_text()
    assert main(argv) == 0
    out = capsys.readouterr().out
    second = first.with_name(f"{first.stem}-run2.json")
    assert first.read_text() == before and second.is_file()
    assert f"wrote {second}" in out and "--force" in out
    # Another grid on the same day has a name of its own.
    assert main([*argv, "--sizes", "60:100:4"]) == 0
    assert len(list(tmp_path.glob("*.json"))) == 3
    # --force replaces the default name's files instead.
    assert main([*argv, "--force"]) == 0
    assert json.loads(first.read_text())["meta"]["argv"] == [*argv, "--force"]
    assert len(list(tmp_path.glob("*.json"))) == 3


# ------------------------------------------------------------------------------ lessons


@pytest.mark.parametrize("where", [*UNUSABLE, "blank"])
def test_lessons_refuses_a_destination_it_cannot_write(
    where: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    file, dest = _unusable("a file", tmp_path) if where == "blank" else _unusable(where, tmp_path)
    here = tmp_path / "here"  # the working folder: a blank DEST once meant "copy here"
    here.mkdir()
    monkeypatch.chdir(here)
    line = _refusal(["lessons", "" if where == "blank" else str(dest), "--student"], capsys)
    assert "DEST" in line or f"dest={str(dest)!r}" in line, line
    assert file.read_text() == "mine\n" and not any(here.iterdir())


@pytest.mark.parametrize("where", [*UNUSABLE, "blank"])
def test_copy_lessons_refuses_what_it_cannot_write(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file, dest = _unusable("a file", tmp_path) if where == "blank" else _unusable(where, tmp_path)
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    with pytest.raises(InputValueError, match=r"^copy_lessons\(dest=.*(file|folder)"):
        copy_lessons("" if where == "blank" else dest, student=True)
    assert file.read_text() == "mine\n" and not any(here.iterdir())


def test_lessons_command_still_writes_and_refuses_clashes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "new" / "course"
    assert main(["lessons", str(dest)]) == 0
    assert sorted(p.name for p in dest.iterdir()) == sorted(p.name for p in lesson_paths())
    line = _refusal(["lessons", str(dest)], capsys)
    assert "already exists" in line and "--force" in line
    assert main(["lessons", str(dest), "--force", "--student"]) == 0
