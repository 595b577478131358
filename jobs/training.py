"""Ray fan-out of the training grid: one task per (grid cell x fold).

Thin: what a task computes is ``regimes.training.grid.evaluate_cell``. The training frame goes
into the object store once (``ray.put``) and every task reads it from there; tasks pin
BLAS to one thread (see ``runtime``), retry when their worker dies, and report progress
as they finish.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import ray

from regimes.jobs.runtime import as_completed, ensure_ray
from regimes.training.grid import CellResult, evaluate_cell


@ray.remote(num_cpus=1, max_retries=3, retry_exceptions=False)
def grid_task(
    frame, fold, cell, config, timeframe: str, seed: int, previous, keep_fit: bool
) -> CellResult:
    return evaluate_cell(frame, fold, cell, config, timeframe, seed, previous, keep_fit)


def ray_runner(progress: Callable[[int], Any] | None = None):
    """A runner for ``regimes.training.train.train_timeframe`` that evaluates the grid on Ray."""

    def run(
        frame,
        tasks: Sequence[tuple],
        config,
        timeframe: str,
        seed: int,
        previous=None,
        keep_fit_fold: int | None = None,
    ) -> list[CellResult]:
        ensure_ray()
        bar = None
        tick = progress
        if tick is None:  # a progress bar on stderr (hidden when it is not a terminal)
            import os
            import sys

            from tqdm.auto import tqdm

            forced = os.environ.get("REGIMES_PROGRESS") == "1"
            bar = tqdm(
                total=len(tasks),
                desc=f"grid {timeframe}",
                file=sys.stderr,
                disable=False if forced else None,
            )
            tick = bar.update
        frame_ref = ray.put(frame)  # once, not once per task
        config_ref = ray.put(config)
        previous_ref = ray.put(previous)
        # Largest cells first (more states, full covariances): with few workers the run
        # then ends on small tasks instead of waiting for one big straggler.
        by_size = sorted(tasks, key=lambda task: -_cost(task[1]))
        pending = {
            grid_task.remote(
                frame_ref,
                fold,
                cell,
                config_ref,
                timeframe,
                seed,
                previous_ref,
                fold.index == keep_fit_fold,
            ): (fold, cell)
            for fold, cell in by_size
        }
        results = [
            value if error is None else CellResult(cell, fold.index, error=error)
            for (fold, cell), value, error in as_completed(pending, tick)
        ]
        if bar is not None:
            bar.close()
        order = {(cell.key, fold.index): i for i, (fold, cell) in enumerate(tasks)}
        return sorted(results, key=lambda r: order[(r.cell.key, r.fold)])

    return run


def _cost(cell) -> float:
    d = cell.latent_dim or 8
    per_state = d * d if cell.covariance_type == "full" else d
    return cell.n_states * per_state * (4.0 if cell.encoder == "vae" else 1.0)
