"""Multi-timeframe synchronisation with validity TTL (plan 6.6).

Each timeframe's engine emits answers when its bars close. The synchroniser keeps, per
(symbol, timeframe), the latest answer that is *final* (its bar closed: ``ts +
timeframe``) and, at any moment, composes one record per symbol: for every timeframe the
carried-forward state, its probability and its age (time since that bar closed). A state
older than the timeframe's ``state_ttl`` is reported UNKNOWN for that timeframe, with its
age; a bar that has not closed yet is never used (no look-ahead).

Models are never mixed: the synchroniser is told which model is the champion of each
timeframe (:meth:`TimeframeSynchronizer.set_champion`, per symbol where a model was trained
per symbol) and keeps only that model's answers; answers of any other model_id (a
shadow's, a candidate's) are ignored, and a champion change starts the scope afresh.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pandas as pd

from regimes.answers import UNKNOWN
from regimes.errors import BadInputError
from regimes.timeframes import TIMEFRAME_DURATION, TIMEFRAMES, check_timeframe


class TimeframeSynchronizer:
    """Latest final state per (symbol, timeframe) of the champion model, composed per
    symbol with TTL checks.

    Parameters
    ----------
    ttl : dict
        Per timeframe, how long a state stays valid after its bar closed.
    calendars : mapping of str to MarketCalendar, optional
        Per symbol, its market's calendar: a state's age is then counted in market time
        (only while the market is open), so a daily state is not stale over an FX
        weekend or an equity holiday. Symbols not in it age in wall-clock time.

    Examples
    --------
    >>> sync = TimeframeSynchronizer({"1h": timedelta(hours=4)})
    >>> sync.set_champion("1h", "1h-model-a")
    >>> sync.champion("1h", "SPY")
    '1h-model-a'
    """

    def __init__(self, ttl: dict[str, timedelta], calendars: Mapping[str, Any] | None = None):
        for timeframe in ttl:
            check_timeframe(timeframe)
        self.ttl = dict(ttl)
        self.calendars = dict(calendars or {})
        self._champions: dict[tuple[str, str | None], str] = {}
        # (symbol, timeframe) -> (model_id, newest records of that model)
        self._latest: dict[tuple[str, str], tuple[str, list[dict]]] = {}

    @classmethod
    def from_config(cls, config, calendars=None) -> TimeframeSynchronizer:
        """TTLs of ``config``; ``calendars`` (symbol -> calendar, e.g.
        :meth:`regimes.data.markets.MarketBook.market_calendars`) count ages in market time."""
        return cls({tf: config.timeframe(tf).state_ttl for tf in TIMEFRAMES}, calendars)

    def set_champion(
        self,
        timeframe: str,
        model_id: str,
        symbol: str | None = None,
        ttl: timedelta | None = None,
    ) -> None:
        """Keep only ``model_id``'s answers for ``timeframe`` (for ``symbol`` only when
        given: a per-symbol champion wins over the timeframe's pooled one). A different
        model than before drops the states kept for the scope: it starts afresh.

        ``ttl`` is the champion's own state TTL (``LoadedModel.state_ttl``, from its
        artifact); given, it replaces the timeframe's TTL, so a config edit never makes
        an existing model's states stale sooner or later."""
        timeframe = check_timeframe(timeframe)
        if ttl is not None:
            if not isinstance(ttl, timedelta) or ttl <= timedelta(0):
                raise BadInputError(f"sync: ttl: expected a positive timedelta, got {ttl!r}")
            self.ttl[timeframe] = ttl
        if timeframe not in self.ttl:
            raise BadInputError(f"sync: no state TTL configured for {timeframe}")
        if not isinstance(model_id, str) or not model_id:
            raise BadInputError(f"sync: model_id: expected a non-empty string, got {model_id!r}")
        self._champions[(timeframe, symbol)] = model_id
        stale = [
            (key_symbol, key_timeframe)
            for (key_symbol, key_timeframe), (kept_model, _) in self._latest.items()
            if key_timeframe == timeframe
            and symbol in (None, key_symbol)
            and kept_model != self.champion(timeframe, key_symbol)
        ]
        for key in stale:
            del self._latest[key]

    def champion(self, timeframe: str, symbol: str) -> str | None:
        """The model whose answers are kept for (symbol, timeframe), or None."""
        return self._champions.get((timeframe, symbol)) or self._champions.get((timeframe, None))

    def knows(self, symbol: str) -> bool:
        """Whether any timeframe holds an answer of ``symbol`` (from its champion)."""
        return any(
            key_symbol == symbol and model_id == self.champion(timeframe, symbol)
            for (key_symbol, timeframe), (model_id, _) in self._latest.items()
        )

    def update(self, answers: pd.DataFrame) -> None:
        """Record the champion's engine answers (columns symbol, ts, timeframe, model_id,
        state_id, state_prob, is_unknown, ood_reason) as their bars close; answers of
        other models are ignored.

        Raises
        ------
        BadInputError
            A timeframe without a TTL, or without a champion set (:meth:`set_champion`);
            checked for the whole batch before any answer is kept.
        """
        if "model_id" not in answers.columns:
            raise BadInputError("sync: answers need a model_id column (whose answers they are)")
        for timeframe, symbol in (
            answers[["timeframe", "symbol"]].drop_duplicates().itertuples(index=False)
        ):
            if check_timeframe(timeframe) not in self.ttl:
                raise BadInputError(f"sync: no state TTL configured for {timeframe}")
            if self.champion(timeframe, symbol) is None:
                raise BadInputError(
                    f"sync: no champion model set for {timeframe} ({symbol}); call "
                    f"set_champion({timeframe!r}, model_id) before feeding its answers"
                )
        for row in answers.itertuples(index=False):
            timeframe = row.timeframe
            champion = self.champion(timeframe, row.symbol)
            if row.model_id != champion:
                continue  # a shadow's or candidate's answer: never mixed into the champion's
            record = {
                "ts": pd.Timestamp(row.ts),
                "final_at": pd.Timestamp(row.ts) + TIMEFRAME_DURATION[timeframe],
                "state_id": int(row.state_id),
                "state_prob": float(row.state_prob),
                "is_unknown": bool(row.is_unknown),
                "ood_reason": row.ood_reason,
            }
            model_id, kept = self._latest.get((row.symbol, timeframe), (champion, []))
            if model_id != champion:
                kept = []
            self._latest[(row.symbol, timeframe)] = (champion, kept)
            if kept and record["ts"] <= kept[-1]["ts"]:
                continue  # an older or repeated answer never replaces a newer one
            kept.append(record)
            del kept[:-2]  # the newest and the one before (for queries before it closed)

    def _market_age(self, symbol: str, since, at, age: float) -> tuple[float, str]:
        """A state's age in seconds for its TTL: market time on a market calendar."""
        calendar = self.calendars.get(symbol)
        if calendar is None or not hasattr(calendar, "open_time_between"):
            return age, ""
        return calendar.open_time_between(since, at).total_seconds(), " in market time"

    def composite(self, symbols, at) -> pd.DataFrame:
        """One record per symbol at time ``at`` (UTC): per timeframe the state, its
        probability, its age in seconds and why it is UNKNOWN (if it is)."""
        at = pd.Timestamp(at)
        if at.tzinfo is None:
            raise BadInputError(f"sync: expected a timezone-aware time, got {at!r}")
        rows = []
        for symbol in symbols:
            row = {"symbol": symbol, "at": at}
            for timeframe in self.ttl:
                model_id, kept = self._latest.get((symbol, timeframe), (None, []))
                if model_id != self.champion(timeframe, symbol):
                    kept = []  # the champion changed and has not answered yet
                usable = [r for r in kept if r["final_at"] <= at]
                state, prob, age, reason = UNKNOWN, None, None, "no state yet"
                if usable:
                    record = usable[-1]
                    age = (at - record["final_at"]).total_seconds()
                    market_age, clock = self._market_age(symbol, record["final_at"], at, age)
                    if record["is_unknown"]:
                        reason = record["ood_reason"] or "unknown"
                    elif market_age > self.ttl[timeframe].total_seconds():
                        reason = (
                            f"stale: {timedelta(seconds=market_age)} old{clock}, "
                            f"TTL {self.ttl[timeframe]}"
                        )
                    else:
                        state, prob, reason = record["state_id"], record["state_prob"], None
                row[f"state_{timeframe}"] = state
                row[f"prob_{timeframe}"] = prob
                row[f"age_s_{timeframe}"] = age
                row[f"reason_{timeframe}"] = reason
            rows.append(row)
        return pd.DataFrame(rows)
