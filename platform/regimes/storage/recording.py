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
    """Merge ``answers`` into the state table, then mirror the newest state per
    (symbol, timeframe) into ``current_states``; returns the rows merged.

    The model must be in the registry. Nothing is mirrored when the merge fails.
    """
    written = store.write(answers, d, K, registry=registry)
    if written:
        _mirror(engine, registry, answers)
    return written


def _mirror(engine, registry: Registry, answers: pd.DataFrame) -> None:
    """Newest state per (symbol, timeframe) into current_states, for the model each
    timeframe publishes (an older row never replaces a newer one there)."""
    for (timeframe, model_id), rows in answers.groupby(["timeframe", "model_id"]):
        if registry.production(timeframe) in (None, model_id):
            db.upsert_current_states(engine, latest_per_symbol(rows))
