"""The ``backfill`` flow: a registered model's states over the stored history, fanned
out on Ray, written to the Delta state store.

Thin: the task rebuilds the Workspace from plain parameters and runs the same planning
and units as the direct path (``regimes.app.backfill``). A user mistake comes back as
data (``regimes.app.failures``): no Prefect traceback, no retry of it.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from regimes.app.backfill import BackfillRequest, plan_units, run_backfill_units
from regimes.app.executors import executor_named
from regimes.app.failures import USER_MISTAKES, as_failure
from regimes.app.workspace import Workspace
from regimes.flows.recovery import refuse_endless_restarts


@task(retries=1, retry_delay_seconds=5, task_run_name="backfill-{timeframe}-{model_id}")
def backfill_model(
    timeframe: str,
    model_id: str,
    home: str,
    db_url: str,
    config_dir: str,
    symbols: list[str] | None = None,
    symbols_per_unit: int = 1,
    rows_per_commit: int = 50_000,
    executor: str = "ray",
) -> list[dict]:
    logger = get_run_logger()
    request = BackfillRequest(
        timeframe,
        model_id,
        tuple(symbols) if symbols else None,
        symbols_per_unit,
        rows_per_commit,
    )
    try:
        with Workspace.open(home, db_url, config_dir) as workspace:
            units = plan_units(workspace, request)
            results = run_backfill_units(
                workspace, units, rows_per_commit, executor_named(executor)
            )
    except USER_MISTAKES as exc:
        logger.info("%s %s: not backfilled: %s", timeframe, model_id, exc)
        return [as_failure(exc)]
    written = sum(r.rows_written for r in results)
    logger.info("%s %s: %d units, %d rows written", timeframe, model_id, len(results), written)
    return [r.as_dict() for r in results]


@flow(name="backfill", log_prints=False)
def backfill(
    timeframe: str,
    model_id: str,
    home: str,
    db_url: str,
    config_dir: str,
    symbols: list[str] | None = None,
    symbols_per_unit: int = 1,
    rows_per_commit: int = 50_000,
    executor: str = "ray",
) -> list[dict]:
    """Backfill one model's states; resumable (re-running writes what is missing)."""
    refuse_endless_restarts()  # a crashed run is rescheduled (recovery.py)
    return backfill_model(
        timeframe,
        model_id,
        home,
        db_url,
        config_dir,
        symbols,
        symbols_per_unit,
        rows_per_commit,
        executor,
    )
