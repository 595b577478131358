"""The ``train`` flow: per timeframe (and symbol, with scope "symbol"), the grid on Ray,
the winner packaged and registered as a candidate (plan phase 5).

Thin: each task rebuilds the Workspace from plain parameters and runs
``regimes.app.training.train_unit``, the unit the direct path runs too. A user mistake
comes back as data (``regimes.app.failures``): no Prefect traceback, no retry of it; the
caller raises it as one line. Other errors fail the task and are retried once.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from regimes.app.executors import executor_named
from regimes.app.failures import FAILURE_KEY, USER_MISTAKES, as_failure
from regimes.app.training import train_unit
from regimes.app.workspace import Workspace
from regimes.flows.recovery import refuse_endless_restarts
from regimes.training.units import scope_units


@task(retries=1, retry_delay_seconds=5, task_run_name="train-{timeframe}-{symbols}")
def train_one(
    timeframe: str,
    home: str,
    db_url: str,
    config_dir: str,
    symbols: list[str] | None,
    grid: dict | None,
    seed: int,
    executor: str,
    scope: str = "pooled",
    report: bool = True,
) -> dict:
    logger = get_run_logger()
    try:
        with Workspace.open(home, db_url, config_dir) as workspace:
            row = train_unit(
                workspace,
                timeframe,
                symbols=symbols,
                grid=grid,
                seed=seed,
                executor=executor_named(executor),
                actor="flow:train",
                scope=scope,
                report=report,
            )
    except USER_MISTAKES as exc:
        logger.info("%s: not trained: %s", timeframe, exc)
        return as_failure(exc)
    logger.info("%s: %s (%s) -> %s", timeframe, row["model_id"], row["cell"], row["path"])
    return row


@flow(name="train", log_prints=False)
def train(
    timeframes: list[str],
    home: str,
    db_url: str,
    config_dir: str,
    symbols: list[str] | None = None,
    grid: dict | None = None,
    seed: int = 0,
    executor: str = "ray",
    scope: str = "pooled",
    report: bool = True,
) -> list[dict]:
    """Train each timeframe (and, with scope "symbol", each symbol) in turn; each unit's
    grid fans out on ``executor``; each model's validation report is written (unless
    ``report`` is False). A unit refused as a user mistake is returned as a
    failure record (``regimes.app.failures``) and stops the run."""
    refuse_endless_restarts()  # a crashed run is rescheduled (recovery.py)
    try:
        with Workspace.open(home, db_url, config_dir) as workspace:
            units = scope_units(workspace.engine, timeframes, symbols, scope)
    except USER_MISTAKES as exc:
        return [as_failure(exc)]
    rows = []
    for timeframe, unit_symbols in units:
        row = train_one(
            timeframe, home, db_url, config_dir, unit_symbols, grid, seed, executor, scope, report
        )
        rows.append(row)
        if FAILURE_KEY in row:
            break
    return rows
