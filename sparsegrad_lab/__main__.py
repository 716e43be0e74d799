"""Command line: ``python -m sparsegrad_lab bench|lessons|course [options]`` (see ``--help``)."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from . import benchmark, benchmark_report
from .benchmark import parse_batches, parse_sizes
from .course import add_course_command, run_course_command
from .errors import SparseGradLabError
from .implementations import IMPLEMENTATIONS, REGISTRY
from .lessons import (
    _check_folder,
    _folder_name,
    _make_writable_folder,
    add_lessons_command,
    run_lessons_command,
)
from .measurement import silence_torch_sparse_notices
from .memory_guard import PLANNING_FRACTION
from .operand_checks import check_dtype_and_device as _check_dtype_and_device
from .timing import measure_copy_bandwidth

_PROG = "python -m sparsegrad_lab"

_EPILOG = """\
what is measured, for each case and implementation:
  time      forward, backward and forward+backward: the median of --repeats runs after
            --warmup runs (CUDA: torch.cuda.Event timings, synchronised); "(min)" is the
            fastest backward. All implementations take turns run by run, so a busy
            spell on a shared machine slows them alike
  memory    peak extra memory above the inputs A, B and the upstream gradient:
            CPU in a fresh child process per case (resident-set high-water mark),
            CUDA from the allocator's peak; plus the in-process allocator peak ("alloc")
            and the analytic model ("model") for comparison
  floor     "xfloor" is the time over (bytes that must move / measured copy bandwidth);
            "GF/s" the useful flops (6 nnz p per fwd+bwd) per second
  check     the index validation sparse_mm runs on every call, timed on each case's A in
            the same rounds: ms per call and share of sparse_mm's forward+backward
  headline  sparse_mm's ratios to each implementation and to the fastest peer (the
            faster of torch.sparse.mm on CSR and torchsparsegradutils in each round),
            with the aims they are judged against (the small-graph aims: one thread)
A case whose predicted peak (with its inputs) does not fit in the memory available, or in
--memory-limit, is listed as "would need X GiB" and not run.

examples:
  python -m sparsegrad_lab bench                       # small grid, a few minutes
  python -m sparsegrad_lab bench --sizes reference     # n = m = 1e5, nnz = 1e6, p = 64
  python -m sparsegrad_lab bench --sizes small-graphs --threads 1 --repeats 100 --warmup 5
  python -m sparsegrad_lab bench --sizes large --impls sddmm --no-memory
                                                       # the validation's cost at nnz = 1e7
  python -m sparsegrad_lab bench --sizes 20000:2e5:32 --layouts csr --impls sddmm,tsgu
  python -m sparsegrad_lab bench --device cuda --sizes full
"""


# Type functions for argparse: each turns one argument's text into its value or raises
# ArgumentTypeError with what it accepts, which argparse prints as one line after
# "argument --name:" with exit status 2. Their names are what argparse would call the value
# in "invalid ... value" if one raised ValueError itself.


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _names(text: str, choices: Sequence[str]) -> list[str]:
    """Comma-separated names, each one of ``choices``, at least one, none twice."""
    names = _csv(text)
    if not names:
        raise argparse.ArgumentTypeError(
            f"expected at least one of {', '.join(choices)} (comma-separated), got {text!r}"
        )
    unknown = [name for name in names if name not in choices]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown {', '.join(map(repr, unknown))}; choose from {', '.join(choices)}"
        )
    twice = next((name for k, name in enumerate(names) if name in names[:k]), None)
    if twice is not None:
        raise argparse.ArgumentTypeError(f"{twice!r} is listed twice in {text!r}")
    return names


def _layouts(text: str) -> list[str]:
    return _names(text, ("coo", "csr"))


def _implementations(text: str) -> list[str]:
    return _names(text, IMPLEMENTATIONS)


def _integer_at_least(text: str, minimum: int) -> int:
    try:
        number = int(text)
    except ValueError:
        number = minimum - 1
    if number < minimum:
        raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
    return number


def _positive_int(text: str) -> int:
    return _integer_at_least(text, 1)


def _non_negative_int(text: str) -> int:
    return _integer_at_least(text, 0)


def _thread_count(text: str) -> int:
    # More threads than CPUs only measures oversubscription; far more, and creating them
    # fails inside OpenMP, which crashed the process.
    cpus = os.cpu_count() or 1
    try:
        threads = int(text)
    except ValueError:
        threads = 0
    if not 1 <= threads <= cpus:
        raise argparse.ArgumentTypeError(
            f"expected an integer from 1 to {cpus} (the CPUs here), got {text!r}"
        )
    return threads


#: The largest --memory-limit: 2**63 bytes, what a byte count in int64 holds.
_MOST_GIB = 2**33


def _gibibytes(text: str) -> float:
    try:
        gib = float(text)
    except ValueError:
        gib = math.nan
    if not 0 < gib <= _MOST_GIB:  # also refuses nan
        raise argparse.ArgumentTypeError(
            "expected a number of GiB above 0 and at most 2**33 (8 EiB; e.g. 4 or 0.5), "
            f"got {text!r}"
        )
    return gib


def _device(text: str) -> torch.device:
    expected = f"expected cpu, cuda or cuda:N, got {text!r}"
    try:
        device = torch.device(text.strip())
    except (RuntimeError, ValueError, TypeError):
        raise argparse.ArgumentTypeError(expected) from None
    if device.type == "cpu":
        return torch.device("cpu")  # an index means nothing on the CPU
    if device.type != "cuda":
        raise argparse.ArgumentTypeError(expected)
    if not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(
            f"{text!r} asks for CUDA, but no CUDA device is available to this torch; use cpu"
        )
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise argparse.ArgumentTypeError(
            f"{text!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
        )
    return device


def _grid(text: str) -> str:
    """The ``--sizes`` text, stripped, once :func:`parse_sizes` reads it."""
    try:
        parse_sizes(text, None)
    except SparseGradLabError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text.strip()


def _batch_sizes(text: str) -> list[int]:
    try:
        return parse_batches(text, None)
    except SparseGradLabError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _output_folder(text: str) -> Path:
    folder = _folder_name(text)
    if folder.suffix in (".json", ".png") and not folder.is_dir():
        raise argparse.ArgumentTypeError(
            f"expected the folder the .json and .png go into, got a file name {text!r}"
        )
    return folder


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="sparsegrad_lab command line tools.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    bench = sub.add_parser(
        "bench",
        help="benchmark sparse_mm against torch.sparse.mm and torchsparsegradutils",
        description=(
            "Benchmark sparse_mm's backward strategies (sddmm, gather, dense) against "
            "torch.sparse.mm autograd with COO and CSR and torchsparsegradutils.sparse_mm "
            "on the same inputs. Prints a table and writes JSON and a plot."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_argument(
        "--device",
        default="cpu",
        type=_device,
        help="where to run: cpu, cuda or cuda:N (default: cpu)",
    )
    bench.add_argument(
        "--sizes",
        default="small",
        type=_grid,
        help=(
            "a preset -- small (default: a few minutes on 2 cores), small-graphs (teaching "
            "graphs: n = 100, nnz = 500, p = 8; n = 1000, nnz = 1e4, p = 16; Cora's size, "
            "n = 2708, nnz = 10556, p = 16), reference (the size the CPU targets are set "
            "at: n = m = 100000, nnz = 1e6, p = 64), large (n = 1e6, nnz = 1e7, p = 64 "
            "alone) or full (up to n = 1e6, nnz = 1e7, with batched cases) -- or a "
            "comma-separated list of n:nnz:p with m = n, e.g. 10000:1e5:32,20000:2e5:64 "
            "(whole numbers: n, p >= 1, 0 <= nnz <= n*n)"
        ),
    )
    bench.add_argument(
        "--layouts",
        default="coo,csr",
        type=_layouts,
        help="comma-separated layouts of A: coo, csr (default: coo,csr)",
    )
    bench.add_argument(
        "--batch",
        default=None,
        type=_batch_sizes,
        help=(
            "comma-separated batch sizes b >= 1; every size runs at each (default: the "
            "preset's, 1 for explicit sizes). nnz is per batch item"
        ),
    )
    bench.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "float64", "complex64", "complex128", "float16", "bfloat16"],
        help="value dtype of A and B (default: float32; float16 and bfloat16 on CUDA only)",
    )
    bench.add_argument(
        "--index-dtype",
        default="int64",
        choices=["int32", "int64"],
        help="index dtype of a CSR A (COO is always int64; default: int64)",
    )
    bench.add_argument(
        "--repeats",
        type=_positive_int,
        default=5,
        help="timed runs per case, >= 1; the median is reported (default: 5)",
    )
    bench.add_argument(
        "--warmup",
        type=_non_negative_int,
        default=1,
        help="untimed runs before the timed ones, >= 0 (default: 1)",
    )
    bench.add_argument(
        "--impls",
        default=",".join(IMPLEMENTATIONS),
        type=_implementations,
        help=(
            "comma-separated implementations (default: all): "
            + ", ".join(f"{impl.name} = {impl.runs}" for impl in REGISTRY.values())
            + ". Each runs only on cases it supports (torch_coo on COO, torch_csr on "
            "CSR, both 2-D only) and is skipped when a package it needs is not installed; "
            "sddmm_kept keeps the pattern of its first call, as a training loop over a "
            "fixed pattern does, so it needs --warmup >= 1"
        ),
    )
    bench.add_argument(
        "--out",
        default="benchmarks/results",
        type=_output_folder,
        help=(
            "output folder, created if needed and checked before the run; the files are "
            "<device-tag>-<date>.json and .png, the tag being cpu-<threads>threads or the "
            "GPU's name, with -<preset> appended for grids other than small, or the sizes "
            "(-n2e4-nnz2e5-p32; a long list: -<count>sizes-<hash>). A name an earlier run "
            "took gets -run2, -run3, ...: results are never overwritten unless --force "
            "(default: benchmarks/results)"
        ),
    )
    bench.add_argument(
        "--force",
        action="store_true",
        help="write to the name itself, replacing an earlier run's files there",
    )
    bench.add_argument(
        "--threads",
        type=_thread_count,
        default=None,
        help="torch intra-op threads here and in the child processes, from 1 to the CPU "
        "count, recorded in the JSON (default: torch's current count; the small-graph aims "
        "are stated for 1)",
    )
    bench.add_argument(
        "--memory-limit",
        type=_gibibytes,
        default=None,
        metavar="GIB",
        help="skip cases predicted to need more than this many GiB, > 0 "
        f"(always: more than {PLANNING_FRACTION * 100:.0f}%% of the device's available memory)",
    )
    bench.add_argument(
        "--no-fresh-process",
        action="store_true",
        help="CPU: report the in-process allocator peak instead of starting a child "
        "process per case (faster; misses memory allocated outside torch)",
    )
    bench.add_argument(
        "--no-memory",
        action="store_true",
        help="time only: skip the peak-memory measurement, and the plot (quick at large sizes)",
    )
    bench.add_argument("--no-plot", action="store_true", help="do not write the .png plot")
    bench.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_lessons_command(sub)
    add_course_command(sub)
    return parser


def _refuse(message: str) -> int:
    """Print ``message`` as argparse prints an error of ``bench``, in one line; return 2."""
    print(f"{_PROG} bench: error: {message}", file=sys.stderr)
    return 2


def _bench(args: argparse.Namespace, argv: Sequence[str]) -> int:
    # Everything that can be refused is refused here, before the run: each argument alone
    # was checked by its type function; what depends on two of them or on the disk is next.
    device: torch.device = args.device
    try:
        _check_dtype_and_device("argument --dtype", getattr(torch, args.dtype), device, "A")
        _check_folder(args.out, "argument --out")
        _make_writable_folder(args.out, "argument --out")
    except SparseGradLabError as refusal:
        return _refuse(str(refusal))

    silence_torch_sparse_notices()  # torchsparsegradutils builds tensors without naming the checks
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = benchmark.make_cases(
        benchmark.parse_sizes(args.sizes),
        layouts=args.layouts,
        batches=args.batch,
        dtype=args.dtype,
        device=str(device),
        index_dtype=args.index_dtype,
    )
    bandwidth = measure_copy_bandwidth(device)
    limit = None if args.memory_limit is None else int(args.memory_limit * 2**30)
    results = benchmark.run_benchmark(
        cases,
        impls=args.impls,
        repeats=args.repeats,
        warmup=args.warmup,
        threads=args.threads,
        memory=not args.no_memory,
        fresh_process=not args.no_fresh_process,
        memory_limit_bytes=limit,
        bandwidth=bandwidth,
        progress=not args.no_progress,
    )
    print(benchmark_report.format_table(results))
    print()
    print(benchmark_report.format_headline(benchmark_report.headlines(results)))
    print()
    print(benchmark_report.format_validation(benchmark_report.validation_costs(results)))
    meta = benchmark_report.machine_info(device, bandwidth=bandwidth)
    meta.update(
        {
            "argv": list(argv),
            "sizes": args.sizes,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "memory_method": (
                "not measured (--no-memory)"
                if args.no_memory
                else "CUDA allocator peak"
                if device.type == "cuda"
                else "torch.profiler memory events"
                if args.no_fresh_process
                else "fresh child process: VmHWM minus VmRSS"
            ),
        }
    )
    # Named after the run: the tag holds the thread count it ran with.
    stem = base = benchmark_report.default_output_stem(args.out, device, args.sizes)
    while True:  # a name taken meanwhile (another run) moves on to the next free one
        if not args.force:
            stem = benchmark_report.free_stem(base)
        json_path = stem.with_name(f"{stem.name}.json")
        try:
            benchmark_report.write_json(results, json_path, meta, overwrite=args.force)
            break
        except benchmark_report.OutputExistsError:
            continue
        except OSError as err:  # a full disk: the table above is all that is left
            print(f"{_PROG} bench: error: writing {json_path} failed: {err}", file=sys.stderr)
            return 1
    taken = "" if stem == base else f" ({base.name} is an earlier run's; --force replaces it)"
    print(f"\nwrote {json_path}{taken}")
    if args.no_memory and not args.no_plot:
        # The plot's memory panel would be empty: it is the times alone, already in the JSON.
        print("no plot: memory was not measured (--no-memory)")
    elif not args.no_plot:
        try:
            from .plots import plot_benchmark

            png = stem.with_name(f"{stem.name}.png")
            plot_benchmark(results, png)
            print(f"wrote {png}")
        except ModuleNotFoundError as missing:
            print(f"no plot: {missing} (pip install matplotlib)", file=sys.stderr)
    return 1 if any(r.status == "error" for r in results) else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m sparsegrad_lab``; returns the exit status.

    0 on success, 1 when something failed while running, 2 when an argument was refused:
    argparse exits with 2 on one it cannot read, and the commands return 2 on one they
    refuse before doing any work. Either way the reason is one line on stderr.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _build_parser().parse_args(argv)
    if args.command == "bench":
        return _bench(args, argv)
    if args.command == "lessons":
        return run_lessons_command(args)
    if args.command == "course":
        return run_course_command(args)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
