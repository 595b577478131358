"""The ``train`` flow: per timeframe, the Ray grid, the winner packaged, registered as a
candidate (plan phase 5). Thin: the work is ``regimes.training.train_timeframe``."""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from regimes import db
from regimes.config import load_config, resolve_settings
from regimes.store import Registry
from regimes.training import PreviousModel, scope_units, train_timeframe


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
    config = load_config(settings.config_dir)
    engine = db.make_engine(settings.db_url)
    registry = Registry.at_home(settings.home)
    production = registry.production(timeframe) if symbols is None else None
    previous = (
        PreviousModel.load(registry.artifact_path(timeframe, production)) if production else None
    )
    runner = None
    if executor == "ray":
        from regimes.jobs.training import ray_runner

        runner = ray_runner()
    try:
        result = train_timeframe(
            engine,
            config,
            timeframe,
            settings.models_dir,
            symbols=symbols,
            grid=grid,
            seed=seed,
            runner=runner,
            previous=previous,
        )
    finally:
        engine.dispose()
    if registry.status(timeframe, result.model_id) is None:
        registry.transition(
            timeframe,
            result.model_id,
            "candidate",
            actor="flow:train",
            reason=f"grid winner {result.winner['cell']}",
            artifact_path=result.path,
        )
    logger.info("%s: %s (%s) -> %s", timeframe, result.model_id, result.winner["cell"], result.path)
    validation = result.metadata["metrics"]["validation"]
    return {
        "timeframe": timeframe,
        "model_id": result.model_id,
        "path": result.path,
        "cell": result.winner["cell"],
        "K": result.metadata["K"],
        "d": result.metadata["d"],
        "covariance": result.metadata["covariance_type"],
        "val_loglik_per_bar": validation["loglik_per_bar"],
        "val_bic": validation["bic"],
        "status": registry.status(timeframe, result.model_id),
    }


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
