"""Where a cold start finds a symbol's recent bars (plan 6.2).

A :data:`History` is any callable ``(symbols, before, bars_per_symbol) -> bars``; the
engine calls it once for the symbols it meets for the first time
(:meth:`regimes.live.engine.InferenceEngine.step`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd

from regimes.paths import check_timeframe_name

#: A source of recent bars for cold starts: (symbols, before, bars per symbol) -> bars.
History = Callable[[Sequence[str], pd.Timestamp, int], pd.DataFrame]


class DatabaseHistory:
    """Cold-start history from the ``bars`` table of a database (see :mod:`regimes.data.sql`)."""

    def __init__(self, engine, timeframe: str):
        self.engine = engine
        self.timeframe = check_timeframe_name(timeframe)

    def __call__(self, symbols, before, bars_per_symbol: int) -> pd.DataFrame:
        from regimes.data import sql as db

        return db.read_recent_bars(self.engine, self.timeframe, symbols, before, bars_per_symbol)
