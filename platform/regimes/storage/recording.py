"""Recording engine answers: the Delta state table and the ``current_states`` mirror."""

from __future__ import annotations

import pandas as pd

from regimes.data import sql as db
from regimes.storage.registry import Registry
from regimes.storage.state_store import StateStore, latest_per_symbol

DEFAULT_ROWS_PER_COMMIT = 50_000


def record_states(
    store: StateStore,
    engine,
    registry: Registry,
    answers: pd.DataFrame,
    d: int,
    K: int,
) -> int:
    """Merge ``answers`` into the state table, then mirror the champion's newest state per
    (symbol, timeframe) into ``current_states``; returns the rows merged.

    Every model's answers (champion, shadow or candidate) go to the state table under
    their own model_id; only champion answers reach ``current_states`` (see
    :func:`publishing_model`). The model must be in the registry. Nothing is mirrored
    when the merge fails.
    """
    written = store.write(answers, d, K, registry=registry)
    if written:
        _mirror(engine, registry, answers)
    return written


def publishing_model(registry: Registry, timeframe: str, symbol: str) -> str | None:
    """The model whose answers ``current_states`` holds for (symbol, timeframe): the
    champion of the symbol's own scope when it has one, else the timeframe's pooled
    champion; None when neither exists (then nothing is published)."""
    return registry.champion(timeframe, symbol) or registry.champion(timeframe)


def _mirror(engine, registry: Registry, answers: pd.DataFrame) -> None:
    """Newest state per (symbol, timeframe) into current_states, champion answers only
    (an older row never replaces a newer one there). A model that is not the champion
    of its scope never writes current_states, even while its timeframe has no champion."""
    for (timeframe, model_id), rows in answers.groupby(["timeframe", "model_id"]):
        symbols = rows["symbol"].unique()
        published = [s for s in symbols if publishing_model(registry, timeframe, s) == model_id]
        if published:
            db.upsert_current_states(
                engine, latest_per_symbol(rows[rows["symbol"].isin(published)])
            )
