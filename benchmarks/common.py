"""Timing helpers shared by the benchmarks."""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable

from threadpoolctl import threadpool_limits


def best_of(function: Callable[[], object], repeats: int = 5) -> tuple[float, float]:
    """Run ``function`` ``repeats`` times; return (best, median) wall seconds."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times), statistics.median(times)


def table(rows: list[list[str]], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


@contextlib.contextmanager
def one_core():
    """Limit native thread pools to one thread and pin the process to one CPU."""
    pinned = hasattr(os, "sched_getaffinity")
    previous = os.sched_getaffinity(0) if pinned else None
    try:
        if pinned:
            os.sched_setaffinity(0, {min(previous)})
        with threadpool_limits(limits=1):
            yield
    finally:
        if pinned:
            os.sched_setaffinity(0, previous)
