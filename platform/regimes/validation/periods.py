"""Time bins for "over time" figures: about equal numbers of distinct bar times, so a
chart has a sane number of points whatever the timeframe and the window."""

from __future__ import annotations

import numpy as np
import pandas as pd


def period_of_bar(ts: pd.Series, periods: int = 60) -> pd.Series:
    """The start time of the period each bar falls in (at most ``periods`` periods of
    about equally many distinct bar times).

    Examples
    --------
    >>> ts = pd.Series(pd.date_range("2024-01-01", periods=10, freq="D", tz="UTC"))
    >>> period_of_bar(ts, 5).dt.day.tolist()
    [1, 1, 3, 3, 5, 5, 7, 7, 9, 9]
    """
    times = np.sort(ts.unique())
    if len(times) == 0:
        return ts.copy()
    starts = times[:: max(1, int(np.ceil(len(times) / periods)))]
    position = np.searchsorted(starts, ts.to_numpy(), side="right") - 1
    return pd.Series(starts[position], index=ts.index)
