"""A volatility shock on stored bars: the "drifted day" of the drift gate's demo and
tests — a market whose last days move ``factor`` times as much as before.

Examples
--------
>>> import pandas as pd
>>> bars = pd.DataFrame({"symbol": "A", "timeframe": "1h",
...     "ts": pd.date_range("2024-01-02 14:00", periods=3, freq="1h", tz="UTC"),
...     "open": [100.0, 101.0, 102.0], "high": [101.0, 102.0, 103.0],
...     "low": [99.0, 100.0, 101.0], "close": [101.0, 102.0, 101.0],
...     "volume": [10.0, 10.0, 10.0], "is_gap": False})
>>> shocked = scale_volatility(bars, pd.Timestamp("2024-01-02 15:00", tz="UTC"), 3.0)
>>> shocked["close"].round(4).tolist()  # the first bar is before the shock: unchanged
[101.0, 104.0298, 101.0]
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from regimes.errors import BadInputError

PRICES = ("open", "high", "low", "close")


def scale_volatility(bars: pd.DataFrame, start: pd.Timestamp, factor: float) -> pd.DataFrame:
    """The bars with every log move from ``start`` on multiplied by ``factor``.

    Per symbol, each bar at or after ``start`` is rebuilt from the previous (rebuilt)
    close: its open, high, low and close keep their log distance to that close times
    ``factor``, so a bar's range and its return both scale; volumes and gap rows (no
    prices) stay.
    Bars before ``start`` are unchanged.
    """
    if not np.isfinite(factor) or factor <= 0:
        raise BadInputError(f"volatility factor: expected a positive number, got {factor}")
    out = bars.sort_values(["symbol", "ts"], kind="stable").reset_index(drop=True).copy()
    prices = out[list(PRICES)].to_numpy(dtype=float)
    symbols = out["symbol"].to_numpy()
    shocked = (out["ts"] >= start).to_numpy()
    for symbol in pd.unique(symbols):
        rows = np.flatnonzero(symbols == symbol)
        first = rows[shocked[rows]]
        if first.size == 0:
            continue
        base = prices[first[0] - 1, 3] if first[0] > rows[0] else prices[first[0], 0]
        previous_original = base
        previous_rebuilt = base
        for row in first:
            if not np.isfinite(prices[row]).all():  # a gap row: no prices to move
                continue
            moves = np.log(prices[row] / previous_original)
            previous_original = prices[row, 3]
            prices[row] = previous_rebuilt * np.exp(factor * moves)
            previous_rebuilt = prices[row, 3]
    out[list(PRICES)] = prices
    return out
