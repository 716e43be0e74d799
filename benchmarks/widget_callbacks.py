"""Time each widget callback that runs while a slider is dragged, at the slider's two ends.

A slider left with ipywidgets' ``continuous_update`` calls its callback at every step of a drag,
so a callback slower than :data:`CONTINUOUS_BUDGET_S` makes the drag lag on a 2-core Binder
session (``sparsegrad_lab/widgets.py``: slower controls act on release or behind a button).
This builds every explorer as the lessons build it, moves each continuous slider between its
minimum and its maximum ``--repeats`` times (leaving it at its maximum, so the next slider is
timed with the earlier ones at their maxima), times each move with its figure rendered to PNG
as a front end would, and prints the median and the slowest move against the budget.

It exits with status 1 if a median is over the budget. Speed is a benchmark, not a test: the
test suite runs on shared machines, where seconds say more about the neighbours than about the
code. ``tests/test_widgets.py`` checks what does not depend on the machine, on the same moves
(:func:`continuous_moves`, :func:`move_slider`): each callback runs for its value, measures
nothing and leaves no figure open.

Run it on an otherwise idle machine::

    make widget-times                      # or: .venv/bin/python benchmarks/widget_callbacks.py
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot is imported (by the widgets): no window, no display

import ipywidgets
import torch

from sparsegrad_lab import widgets
from sparsegrad_lab.example_matrices import karate_club, les_miserables, uniform_random

__all__ = [
    "CONTINUOUS_BUDGET_S",
    "RELEASE_BUDGET_S",
    "Move",
    "continuous_moves",
    "karate_attention_weights",
    "lesson_explorers",
    "main",
    "move_slider",
    "release_explorers",
    "release_moves",
]

#: Longest a callback that runs while a slider is dragged may take, in seconds (widgets.py).
CONTINUOUS_BUDGET_S = 0.2


def lesson_explorers() -> dict[str, Any]:
    """The continuous explorers, built as their lessons build them (02; 01 and 03: defaults).

    Building runs each callback once (the memory explorer measures its starting setting), and
    what they print is swallowed.
    """
    # 02_gradient_derivation, section "explore": A10, G10, B10.
    torch.manual_seed(0)
    A = uniform_random(6, 8, nnz=14, seed=4, dtype=torch.float64)
    B = torch.randn(8, 5, dtype=torch.float64)
    G = torch.randn(6, 5, dtype=torch.float64)
    with contextlib.redirect_stdout(io.StringIO()):
        return {
            "gradient_entry": widgets.gradient_entry_explorer(A, G, B),
            "pattern": widgets.pattern_explorer(),
            "memory": widgets.memory_explorer(),
        }


@dataclass(frozen=True)
class Move:
    """One slider set to one value: which explorer, which slider, what value."""

    explorer_name: str
    explorer: Any
    slider: Any
    value: float

    @property
    def name(self) -> str:
        return f"{self.explorer_name}: {self.slider.description} = {self.value:g}"


def _end_to_end_moves(
    explorers: dict[str, Any], repeats: int, *, continuous: bool
) -> Iterator[Move]:
    """The moves of :func:`continuous_moves` (``continuous=True``) or :func:`release_moves`."""
    for name, explorer in explorers.items():
        for slider in explorer.kwargs_widgets:
            if not hasattr(slider, "min") or slider.continuous_update != continuous:
                continue
            low, high = slider.min, slider.max
            if isinstance(slider, ipywidgets.FloatLogSlider):
                low, high = slider.base**low, slider.base**high
            values = [high, low] * repeats if slider.value == low else [low, high] * repeats
            if values[-1] != high:
                values.append(high)
            for value in values:
                yield Move(name, explorer, slider, value)


def continuous_moves(explorers: dict[str, Any], repeats: int = 1) -> Iterator[Move]:
    """Each continuous slider to each end of its range ``repeats`` times, slider after slider.

    Every move changes the value (a slider set to the value it holds runs no callback): a slider
    starts with the end it is not at, alternates, and ends at its maximum, where it stays. A
    slider that acts on release (``continuous_update=False``) or a control without a range (a
    dropdown) is not moved. Log sliders are moved to ``base**min`` and ``base**max``. Lazy: each
    slider's first move is chosen when the moves before it have been made.
    """
    return _end_to_end_moves(explorers, repeats, continuous=True)


def move_slider(move: Move) -> str:
    """Set the slider (its callback runs at once) and return what the callback printed.

    The time includes rendering: every explorer renders its figure to PNG inside its callback
    (the explorers send a PNG image of a figure pyplot never holds), as the front end gets it.
    """
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        move.slider.value = move.value
    return printed.getvalue()


def _time_moves(repeats: int) -> dict[str, list[float]]:
    explorers = lesson_explorers()
    seconds: dict[str, list[float]] = {}
    for move in continuous_moves(explorers, repeats):
        start = time.perf_counter()
        move_slider(move)
        seconds.setdefault(move.name, []).append(time.perf_counter() - start)
    return seconds


def main(argv: list[str] | None = None) -> int:
    """Print each continuous callback's time against the budget; 1 if one is over it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeats", type=int, default=5, help="moves to each end of each slider (default 5)"
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")

    print(
        f"continuous widget callbacks, figure rendered to PNG; torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s); {args.repeats} move(s) to each end; "
        f"budget {CONTINUOUS_BUDGET_S:.2f} s (median)"
    )
    times = _time_moves(args.repeats)
    width = max(len(name) for name in times)
    over = []
    for name, seconds in times.items():
        median = statistics.median(seconds)
        verdict = "ok" if median <= CONTINUOUS_BUDGET_S else "OVER BUDGET"
        if median > CONTINUOUS_BUDGET_S:
            over.append(name)
        print(
            f"  {name:<{width}}  median {median:6.3f} s  slowest {max(seconds):6.3f} s  {verdict}"
        )
    over_on_release = _report_release_callbacks(args.repeats)
    if over:
        print(
            f"{len(over)} of {len(times)} over the {CONTINUOUS_BUDGET_S:.2f} s budget: "
            + ", ".join(over)
        )
        return 1
    print(f"all {len(times)} within the {CONTINUOUS_BUDGET_S:.2f} s budget")
    return 1 if over_on_release else 0


# ------------------------------------------------------------------- callbacks on release

#: Longest a callback that runs when a slider is released may take, in seconds: a learner
#: waits for it once per setting, not at every step of a drag.
RELEASE_BUDGET_S = 1.0


def release_explorers() -> dict[str, Any]:
    """The explorers whose sliders act on release, built as their lessons build them (04, 05)."""
    # 04_application, section 5: Les Misérables' weights, each row normalised to sum 1.
    graph = les_miserables(dtype=torch.float64)
    rows, magnitudes = graph.indices()[0], graph.values().abs()
    sums = torch.zeros(graph.shape[0], dtype=torch.float64).index_add_(0, rows, magnitudes)
    W = torch.sparse_coo_tensor(
        graph.indices(), magnitudes / sums[rows], graph.shape, check_invariants=True
    )
    with contextlib.redirect_stdout(io.StringIO()):
        return {
            "recovery": widgets.recovery_explorer(W.coalesce()),
            "attention": widgets.attention_explorer(
                karate_attention_weights(), groups=torch.arange(34) % 2
            ),
        }


def release_moves(explorers: dict[str, Any], repeats: int = 1) -> Iterator[Move]:
    """Each on-release slider to each end of its range, as :func:`continuous_moves` moves the
    continuous ones (a release runs the callback once, whatever the drag's length)."""
    return _end_to_end_moves(explorers, repeats, continuous=False)


def _report_release_callbacks(repeats: int) -> list[str]:
    """Print each on-release callback's time against its budget; the names over it."""
    seconds: dict[str, list[float]] = {}
    for move in release_moves(release_explorers(), repeats):
        start = time.perf_counter()
        move_slider(move)
        seconds.setdefault(move.name, []).append(time.perf_counter() - start)
    print(f"callbacks on release; budget {RELEASE_BUDGET_S:.2f} s (median)")
    width = max(len(name) for name in seconds)
    over = []
    for name, times in seconds.items():
        median = statistics.median(times)
        if median > RELEASE_BUDGET_S:
            over.append(name)
        verdict = "ok" if median <= RELEASE_BUDGET_S else "OVER BUDGET"
        print(f"  {name:<{width}}  median {median:6.3f} s  slowest {max(times):6.3f} s  {verdict}")
    return over


def karate_attention_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    """Two layers of attention weights on the karate club (self-loops added), as lesson 05 has.

    The lesson's weights come out of its training loop; these are an edge softmax of random
    scores on the same pattern, which costs the explorer the same to list and draw.
    """
    friends = karate_club(weighted=False, dtype=torch.float64)
    n = friends.shape[0]
    edges = torch.cat([friends.indices(), torch.arange(n).repeat(2, 1)], dim=1)
    gen = torch.Generator().manual_seed(seed)
    layers = {}
    for name in ("layer 1", "layer 2"):
        scores = torch.sparse_coo_tensor(
            edges,
            torch.randn(edges.shape[1], generator=gen, dtype=torch.float64),
            (n, n),
            check_invariants=True,
        )
        layers[name] = torch.sparse.softmax(scores.coalesce(), dim=1)
    return layers


if __name__ == "__main__":
    sys.exit(main())
