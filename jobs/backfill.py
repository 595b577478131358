"""Ray fan-out of a backfill: one task per unit of symbols.

Thin: what a unit computes and writes lives in ``regimes.storage.backfill``; this module
only decides where units run. Units write to the Delta table concurrently (commit
conflicts are retried by the store). A unit that fails is reported by name; the others'
commits are kept, and running the backfill again resumes after what is stored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import ray

from regimes.app.workspace import Workspace
from regimes.config.loading import PlatformConfig
from regimes.config.settings import Settings
from regimes.jobs.runtime import as_completed, ensure_ray
from regimes.storage.backfill import BackfillResult, BackfillUnit, backfill_unit


@ray.remote(num_cpus=1, max_retries=2, retry_exceptions=False)
def backfill_task(
    settings: Settings, config: PlatformConfig, unit: BackfillUnit, rows_per_commit: int
) -> dict:
    # The driver checked the locations; a worker only opens them.
    with Workspace(settings, config) as workspace:
        try:
            return backfill_unit(
                workspace.engine,
                config,
                workspace.state_store,
                workspace.registry,
                unit,
                rows_per_commit,
            ).as_dict()
        except Exception as exc:  # reported by name to the driver, never lost silently
            return BackfillResult(
                unit.timeframe, unit.model_id, unit.symbols, error=f"{type(exc).__name__}: {exc}"
            ).as_dict()


def run_backfill_on_ray(
    settings: Settings,
    config: PlatformConfig,
    units: Sequence[BackfillUnit],
    rows_per_commit: int,
    progress: Callable[[int], Any] | None = None,
) -> list[BackfillResult]:
    """Run every unit as a Ray task; ``progress(n)`` is called as each one finishes."""
    ensure_ray()
    config_ref = ray.put(config)
    pending = {
        backfill_task.remote(settings, config_ref, unit, rows_per_commit): unit for unit in units
    }
    results = []
    for unit, value, error in as_completed(pending, progress):
        if error is None:
            results.append(BackfillResult.from_dict(value))
        else:
            results.append(BackfillResult(unit.timeframe, unit.model_id, unit.symbols, error=error))
    return results
