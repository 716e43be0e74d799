"""Command line: ``python -m sparsegrad_lab bench|lessons [options]`` (see ``--help``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .benchmark import PLANNING_FRACTION
from .implementations import IMPLEMENTATIONS, REGISTRY
from .lessons import add_lessons_command, run_lessons_command

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


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return int(text)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sparsegrad_lab",
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
        help="where to run: cpu, cuda or cuda:N (default: cpu)",
    )
    bench.add_argument(
        "--sizes",
        default="small",
        help=(
            "a preset -- small (default: a few minutes on 2 cores), small-graphs (teaching "
            "graphs: n = 100, nnz = 500, p = 8; n = 1000, nnz = 1e4, p = 16; Cora's size, "
            "n = 2708, nnz = 10556, p = 16), reference (the size the CPU targets are set "
            "at: n = m = 100000, nnz = 1e6, p = 64), large (n = 1e6, nnz = 1e7, p = 64 "
            "alone) or full (up to n = 1e6, nnz = 1e7, with batched cases) -- or a "
            "comma-separated list of n:nnz:p with m = n, e.g. 10000:1e5:32,20000:2e5:64"
        ),
    )
    bench.add_argument(
        "--layouts",
        default="coo,csr",
        type=_csv,
        help="comma-separated layouts of A: coo, csr (default: coo,csr)",
    )
    bench.add_argument(
        "--batch",
        default=None,
        type=lambda s: [int(x) for x in _csv(s)],
        help=(
            "comma-separated batch sizes b; every size runs at each (default: the preset's, "
            "1 for explicit sizes). nnz is per batch item"
        ),
    )
    bench.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "float64", "complex64", "complex128", "float16", "bfloat16"],
        help="value dtype of A and B (default: float32; half precision on CUDA only)",
    )
    bench.add_argument(
        "--index-dtype",
        default="int64",
        choices=["int32", "int64"],
        help="index dtype of a CSR A (COO is always int64; default: int64)",
    )
    bench.add_argument(
        "--repeats", type=int, default=5, help="timed runs per case; the median is reported (5)"
    )
    bench.add_argument(
        "--warmup", type=int, default=1, help="untimed runs before the timed ones (default: 1)"
    )
    bench.add_argument(
        "--impls",
        default=",".join(IMPLEMENTATIONS),
        type=_csv,
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
        help=(
            "output folder; the files are <device-tag>-<date>.json and .png, the tag "
            "being cpu-<threads>threads or the GPU's name, with -<preset> (or -custom) "
            "appended for grids other than small (default: benchmarks/results)"
        ),
    )
    bench.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="torch intra-op threads here and in the child processes, recorded in the JSON "
        "(default: torch's current count; the small-graph aims are stated for 1)",
    )
    bench.add_argument(
        "--memory-limit",
        type=float,
        default=None,
        metavar="GIB",
        help="skip cases predicted to need more than this many GiB "
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
    return parser


def _bench(args: argparse.Namespace) -> int:
    import torch

    from . import benchmark, benchmark_report
    from .measurement import silence_torch_sparse_notices
    from .timing import measure_copy_bandwidth

    silence_torch_sparse_notices()  # torchsparsegradutils builds tensors without naming the checks
    unknown = [impl for impl in args.impls if impl not in IMPLEMENTATIONS]
    if unknown:
        print(f"--impls: unknown {unknown}; choose from {list(IMPLEMENTATIONS)}", file=sys.stderr)
        return 2
    bad_layouts = [lay for lay in args.layouts if lay not in ("coo", "csr")]
    if bad_layouts:
        print(f"--layouts: unknown {bad_layouts}; choose from coo, csr", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device is available to this torch", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        sizes = benchmark.parse_sizes(args.sizes)
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    cases = benchmark.make_cases(
        sizes,
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
            "argv": sys.argv[1:],
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
    stem = benchmark_report.default_output_stem(args.out, device, args.sizes.strip())
    json_path = benchmark_report.write_json(results, stem.with_suffix(".json"), meta)
    print(f"\nwrote {json_path}")
    if args.no_memory and not args.no_plot:
        # The plot's memory panel would be empty: it is the times alone, already in the JSON.
        print("no plot: memory was not measured (--no-memory)")
    elif not args.no_plot:
        try:
            from .plots import plot_benchmark

            png = Path(stem.with_suffix(".png"))
            plot_benchmark(results, png)
            print(f"wrote {png}")
        except ModuleNotFoundError as missing:
            print(f"no plot: {missing} (pip install matplotlib)", file=sys.stderr)
    return 1 if any(r.status == "error" for r in results) else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m sparsegrad_lab``; returns the exit status."""
    args = _build_parser().parse_args(argv)
    if args.command == "bench":
        return _bench(args)
    if args.command == "lessons":
        return run_lessons_command(args)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
