"""Training scopes (pooled or per symbol) and the train-and-register unit the CLI and flows run."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from regimes.config.loading import PlatformConfig
from regimes.errors import BadInputError
from regimes.storage.registry import Registry
from regimes.training.grid import PreviousModel
from regimes.training.train import train_timeframe

logger = logging.getLogger(__name__)


SCOPES = frozenset({"pooled", "symbol"})


def scope_units(
    engine, timeframes: Sequence[str], symbols: Sequence[str] | None, scope: str
) -> list[tuple[str, list[str] | None]]:
    """What gets a model: one pooled model per timeframe (``pooled``, the default) over
    ``symbols`` (all with features when None), or one model per (timeframe, symbol)."""
    from regimes.data import sql as db

    if scope not in SCOPES:
        raise BadInputError(f"scope: expected one of {sorted(SCOPES)}, got {scope!r}")
    if scope == "pooled":
        return [(timeframe, list(symbols) if symbols else None) for timeframe in timeframes]
    stored = db.features_summary(engine)
    units = []
    for timeframe in timeframes:
        available = sorted(stored.loc[stored["timeframe"] == timeframe, "symbol"])
        chosen = list(symbols) if symbols else available
        missing = [s for s in chosen if s not in available]
        if missing:
            raise BadInputError(f"scope symbol: no {timeframe} features for {missing}")
        units.extend((timeframe, [symbol]) for symbol in chosen)
    return units


def train_and_register(
    engine,
    config: PlatformConfig,
    registry: Registry,
    models,
    timeframe: str,
    *,
    symbols: Sequence[str] | None,
    grid: dict | None,
    seed: int,
    runner=None,
    actor: str,
    scope: str = "pooled",
) -> dict:
    """One training unit as the CLI and the flow run it: align to the champion of the
    unit's scope when there is one, train, register the winner as a candidate of that
    scope (the timeframe, or the timeframe and its one symbol with ``scope="symbol"``),
    and return a summary row."""
    if scope not in SCOPES:
        raise BadInputError(f"scope: expected one of {sorted(SCOPES)}, got {scope!r}")
    if scope == "symbol" and (symbols is None or len(symbols) != 1):
        raise BadInputError(f"scope symbol: expected exactly one symbol, got {symbols}")
    symbol = symbols[0] if scope == "symbol" else None
    # A retrain of the same scope is aligned to its champion; a pooled model over a
    # chosen subset of symbols is not that champion's successor (as before).
    champion = registry.champion(timeframe, symbol) if scope == "symbol" or not symbols else None
    previous = None
    if champion:
        from regimes.model.store import ModelStore

        path = registry.artifact_path(timeframe, champion)
        previous = PreviousModel.load(ModelStore.of(models).artifact(timeframe, champion, path))
    result = train_timeframe(
        engine,
        config,
        timeframe,
        models,
        symbols=symbols,
        grid=grid,
        seed=seed,
        runner=runner,
        previous=previous,
    )
    if registry.role(timeframe, result.model_id) is None:
        registry.register(
            timeframe,
            result.model_id,
            artifact_path=str(result.path),
            actor=actor,
            reason=f"grid winner {result.winner['cell']}",
            symbol=symbol,
        )
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
        "symbol": symbol,
        "role": registry.role(timeframe, result.model_id),
        "k_note": result.metadata["metrics"].get("k_note"),
    }
