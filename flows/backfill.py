"""The ``backfill`` flow: a registered model's states over the stored history, fanned
out on Ray, written to the Delta state store. Thin: the work is ``regimes.states``."""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from regimes.config.loading import load_config
from regimes.config.settings import resolve_settings
from regimes.data import sql as db
from regimes.storage.backfill import plan_backfill, run_backfill
from regimes.storage.registry import Registry
from regimes.storage.state_store import StateStore


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
    settings = resolve_settings(home, db_url, config_dir)
    config = load_config(settings.config_dir)
    engine = db.make_engine(settings.db_url)
    registry = Registry.at_home(settings.home)
    store = StateStore.from_env(settings.home)
    try:
        units = plan_backfill(
            engine, registry, settings.models_dir, timeframe, model_id, symbols, symbols_per_unit
        )
        if executor == "ray":
            from regimes.jobs.backfill import run_backfill_on_ray

            results = run_backfill_on_ray(
                settings.db_url, config, store, registry, units, rows_per_commit
            )
        else:
            results = run_backfill(engine, config, store, registry, units, rows_per_commit)
    finally:
        engine.dispose()
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
