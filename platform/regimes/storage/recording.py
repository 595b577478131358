"""Recording engine answers: the Delta state table and the ``current_states`` mirror."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from regimes.answers import CURRENT_STATE_COLUMNS
from regimes.data import sql as db
from regimes.errors import BadInputError
from regimes.storage.registry import Registry
from regimes.storage.state_store import StateStore
from regimes.storage.state_table import latest_per_symbol

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


def publish_champion(
    store: StateStore, engine, registry: Registry, timeframe: str, symbol: str | None = None
) -> int:
    """After the champion of a scope changed (promote, rollback): ``current_states`` of
    the scope holds the new champion's newest stored state per symbol, and no other
    model's; returns the rows published.

    Only each symbol's newest stored day is read (partition pruning on the date), so the
    cost does not grow with the history. A champion with no stored states yet leaves the
    scope empty until it answers; a symbol with a champion of its own keeps it when the
    pooled champion changes.
    """
    champion = registry.champion(timeframe, symbol)
    if champion is None:
        raise BadInputError(f"{timeframe} {symbol or ''}: no champion to publish".strip())
    latest = _newest_stored(store, timeframe, champion, None if symbol is None else [symbol])
    scope = [symbol] if symbol is not None else None
    if symbol is None:
        own = publishing_models(registry, timeframe, latest["symbol"].unique())
        latest = latest[latest["symbol"].map(own) == champion]
        others = registry.current(timeframe)
        # The pooled champion's scope: every symbol without a champion of its own.
        per_symbol = others[(others["role"] == "champion") & others["symbol"].notna()]
        if len(per_symbol):
            stored = db.read_current_states(engine, timeframe)
            scope = sorted(set(stored["symbol"]) - set(per_symbol["symbol"]))
    return db.publish_current_states(engine, timeframe, champion, latest, scope)


def _newest_stored(
    store: StateStore, timeframe: str, model_id: str, symbols: list[str] | None
) -> pd.DataFrame:
    """The newest stored state per symbol of ``model_id``: one pruned read per distinct
    newest day (usually one)."""
    from urllib.parse import unquote

    empty = pd.DataFrame(columns=list(CURRENT_STATE_COLUMNS))
    if not store.exists():
        return empty
    newest: dict[str, str] = {}
    for part in store.files(timeframe, model_id, symbols):
        name = unquote(part.split("symbol=", 1)[1].split("/", 1)[0])
        day = part.split("date=", 1)[1].split("/", 1)[0]
        newest[name] = max(newest.get(name, day), day)
    by_day: dict[str, list[str]] = {}
    for name, day in newest.items():
        by_day.setdefault(day, []).append(name)
    frames = [
        store.read(timeframe, model_id, sorted(names), start=f"{day}T00:00Z")
        for day, names in sorted(by_day.items())
    ]
    frames = [frame for frame in frames if len(frame)]
    return latest_per_symbol(pd.concat(frames, ignore_index=True)) if frames else empty


class LiveSink:
    """Where a live engine shard writes (:class:`regimes.live.shard.EngineShard`): bars to
    the database, answers to the state store (and, for champions, ``current_states``),
    and where it reads recent bars for cold starts.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
    store : StateStore
    registry : Registry
    timeframe : str
    """

    def __init__(self, engine, store: StateStore, registry: Registry, timeframe: str):
        self.engine = engine
        self.store = store
        self.registry = registry
        self.timeframe = timeframe

    def write_bars(self, bars: pd.DataFrame) -> int:
        return db.upsert_bars(self.engine, bars)

    def write_answers(self, answers: pd.DataFrame, d: int, K: int) -> int:
        """State store, then ``current_states`` (:func:`record_states`)."""
        return record_states(self.store, self.engine, self.registry, answers, d, K)

    def store_answers(self, answers: pd.DataFrame, d: int, K: int) -> int:
        """The state store only (one MERGE); ``current_states`` is :meth:`publish`'s."""
        return self.store.write(answers, d, K, registry=self.registry)

    def publish(self, answers: pd.DataFrame) -> None:
        """The champion's newest answer per symbol into ``current_states`` (other models'
        answers are left out; see :func:`record_states`)."""
        _mirror(self.engine, self.registry, answers)

    def recent_bars(self, symbols, before, bars_per_symbol: int) -> pd.DataFrame:
        return db.read_recent_bars(self.engine, self.timeframe, symbols, before, bars_per_symbol)
