"""Ray fan-out of the training grid: one task per (grid cell x fold).

Thin: what a task computes is ``regimes.training.evaluate_cell``. The training frame goes
into the object store once (``ray.put``) and every task reads it from there; tasks pin
BLAS to one thread (see ``runtime``), retry when their worker dies, and report progress
as they finish.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import ray

from regimes.jobs.runtime import ensure_ray
from regimes.training import CellResult, evaluate_cell


@ray.remote(num_cpus=1, max_retries=3, retry_exceptions=False)
def grid_task(frame, fold, cell, config, timeframe: str, seed: int) -> CellResult:
    return evaluate_cell(frame, fold, cell, config, timeframe, seed)


def ray_runner(progress: Callable[[int], Any] | None = None):
    """A runner for ``regimes.training.train_timeframe`` that evaluates the grid on Ray."""

    def run(frame, tasks: Sequence[tuple], config, timeframe: str, seed: int) -> list[CellResult]:
        ensure_ray()
        frame_ref = ray.put(frame)  # once, not once per task
        config_ref = ray.put(config)
        pending = {
            grid_task.remote(frame_ref, fold, cell, config_ref, timeframe, seed): (fold, cell)
            for fold, cell in tasks
        }
        results: list[CellResult] = []
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                fold, cell = pending.pop(ref)
                try:
                    results.append(ray.get(ref))
                except Exception as exc:  # the worker died on every retry
                    results.append(
                        CellResult(cell, fold.index, error=f"{type(exc).__name__}: {exc}")
                    )
                if progress is not None:
                    progress(1)
        order = {(cell.key, fold.index): i for i, (fold, cell) in enumerate(tasks)}
        return sorted(results, key=lambda r: order[(r.cell.key, r.fold)])

    return run
