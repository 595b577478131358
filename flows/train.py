"""The ``train`` flow: per timeframe, the Ray grid, the winner packaged, registered as a
candidate (plan phase 5). Thin: the work is ``regimes.training.units.train_and_register``."""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from regimes.config.loading import load_config
from regimes.config.settings import resolve_settings
from regimes.data import sql as db
from regimes.training.units import scope_units, train_and_register


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
) -> dict:
    logger = get_run_logger()
    settings = resolve_settings(home, db_url, config_dir)
    engine = db.make_engine(settings.db_url)
    runner = None
    if executor == "ray":
        from regimes.jobs.training import ray_runner

        runner = ray_runner()
    try:
        row = train_and_register(
            engine,
            load_config(settings.config_dir),
            settings.home,
            settings.models_dir,
            timeframe,
            symbols=symbols,
            grid=grid,
            seed=seed,
            runner=runner,
            actor="flow:train",
        )
    finally:
        engine.dispose()
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
) -> list[dict]:
    """Train each timeframe (and, with scope "symbol", each symbol) in turn; each unit's
    grid fans out on Ray."""
    engine = db.make_engine(resolve_settings(home, db_url, config_dir).db_url)
    try:
        units = scope_units(engine, timeframes, symbols, scope)
    finally:
        engine.dispose()
    return [
        train_one(tf, home, db_url, config_dir, unit_symbols, grid, seed, executor)
        for tf, unit_symbols in units
    ]
