"""Recording engine answers: the Delta state table and the ``current_states`` mirror."""

from __future__ import annotations

from collections.abc import Iterable

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
    :func:`publishing_models`). The model must be in the registry. Nothing is mirrored
    when the merge fails.
    """
    written = store.write(answers, d, K, registry=registry)
    if written:
        _mirror(engine, registry, answers)
    return written


def publishing_models(
    registry: Registry, timeframe: str, symbols: Iterable[str]
) -> dict[str, str | None]:
    """Per symbol, the model whose answers ``current_states`` holds for (symbol,
    timeframe): the champion of the symbol's own scope when it has one, else the
    timeframe's pooled champion; None when neither exists (nothing is published then).

    One registry read for all symbols (the live path calls this per bar batch).
    """
    current = registry.current(timeframe)
    champions = current[current["role"] == "champion"]
    per_symbol = dict(zip(champions["symbol"], champions["model_id"], strict=True))
    pooled = per_symbol.pop(None, None)
    return {symbol: per_symbol.get(symbol, pooled) for symbol in symbols}


def _mirror(engine, registry: Registry, answers: pd.DataFrame) -> None:
    """Newest state per (symbol, timeframe) into current_states, champion answers only
    (an older row never replaces a newer one there). A model that is not the champion
    of its scope never writes current_states, even while its timeframe has no champion."""
    for timeframe, answered in answers.groupby("timeframe"):
        publishers = publishing_models(registry, timeframe, answered["symbol"].unique())
        published = answered["model_id"] == answered["symbol"].map(publishers)
        for _, rows in answered[published].groupby("model_id"):
            db.upsert_current_states(engine, latest_per_symbol(rows))
