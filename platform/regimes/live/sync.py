"""Multi-timeframe synchronisation with validity TTL (plan 6.6).

Each timeframe's engine emits answers when its bars close. The synchroniser keeps, per
(symbol, timeframe), the latest answer that is *final* (its bar closed: ``ts +
timeframe``) and, at any moment, composes one record per symbol: for every timeframe the
carried-forward state, its probability and its age (time since that bar closed). A state
older than the timeframe's ``state_ttl`` is reported UNKNOWN for that timeframe, with its
age; a bar that has not closed yet is never used (no look-ahead).
"""

from __future__ import annotations

from datetime import timedelta

import pandas as pd

from regimes.errors import BadInputError
from regimes.timeframes import TIMEFRAME_DURATION, TIMEFRAMES, check_timeframe


class TimeframeSynchronizer:
    """Latest final state per (symbol, timeframe), composed per symbol with TTL checks."""

    def __init__(self, ttl: dict[str, timedelta]):
        for timeframe in ttl:
            check_timeframe(timeframe)
        self.ttl = dict(ttl)
        self._latest: dict[tuple[str, str], list[dict]] = {}

    @classmethod
    def from_config(cls, config) -> TimeframeSynchronizer:
        return cls({tf: config.timeframe(tf).state_ttl for tf in TIMEFRAMES})

    def update(self, answers: pd.DataFrame) -> None:
        """Record engine answers (columns symbol, ts, timeframe, state_id, state_prob,
        is_unknown, ood_reason) as their bars close."""
        for row in answers.itertuples(index=False):
            timeframe = check_timeframe(row.timeframe)
            if timeframe not in self.ttl:
                raise BadInputError(f"sync: no state TTL configured for {timeframe}")
            record = {
                "ts": pd.Timestamp(row.ts),
                "final_at": pd.Timestamp(row.ts) + TIMEFRAME_DURATION[timeframe],
                "state_id": int(row.state_id),
                "state_prob": float(row.state_prob),
                "is_unknown": bool(row.is_unknown),
                "ood_reason": row.ood_reason,
            }
            kept = self._latest.setdefault((row.symbol, timeframe), [])
            if kept and record["ts"] <= kept[-1]["ts"]:
                continue  # an older or repeated answer never replaces a newer one
            kept.append(record)
            del kept[:-2]  # the newest and the one before (for queries before it closed)

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
                usable = [
                    r for r in self._latest.get((symbol, timeframe), []) if r["final_at"] <= at
                ]
                state, prob, age, reason = -1, None, None, "no state yet"
                if usable:
                    record = usable[-1]
                    age = (at - record["final_at"]).total_seconds()
                    if record["is_unknown"]:
                        reason = record["ood_reason"] or "unknown"
                    elif age > self.ttl[timeframe].total_seconds():
                        reason = f"stale: {timedelta(seconds=age)} old, TTL {self.ttl[timeframe]}"
                    else:
                        state, prob, reason = record["state_id"], record["state_prob"], None
                row[f"state_{timeframe}"] = state
                row[f"prob_{timeframe}"] = prob
                row[f"age_s_{timeframe}"] = age
                row[f"reason_{timeframe}"] = reason
            rows.append(row)
        return pd.DataFrame(rows)
