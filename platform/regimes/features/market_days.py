"""Trading-day labels of bars: where a day-anchored window (``anchor: market_day``) resets.

A bar's trading day is its market's: the session's local date on the legacy session
(``timeframes.yaml``), the UTC date without a session, and the calendar's trading day on
a market calendar (FX: the 17:00-17:00 New York day, named after the day it ends; 24x7:
from ``day_start`` in its zone; an exchange: its session day). On the ``1d`` timeframe
every bar is a day of its own, so a window resetting there would hold one bar: day
anchoring applies to intraday timeframes only, and a ``1d`` window rolls.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from regimes.data.calendars import MarketCalendar
from regimes.data.markets import SymbolCalendars
from regimes.errors import BadInputError

DAY_NS = 86_400 * 10**9
DAILY_TIMEFRAME = "1d"
_FEW_TIMESTAMPS = 8


def anchors_reset(timeframe: str | None) -> bool:
    """Whether day-anchored windows reset on ``timeframe`` (every intraday one; ``None``,
    a buffer told no timeframe, counts as intraday)."""
    return timeframe != DAILY_TIMEFRAME


def trading_day_numbers(ts_ns: np.ndarray, calendar, symbols=None) -> np.ndarray:
    """Each bar's trading day as an integer (days since 1970-01-01 of the day's name).

    ``calendar`` is what features take: a legacy ``Session``, ``None``, a
    :class:`MarketCalendar`, or :class:`SymbolCalendars` with ``symbols`` naming each
    row's symbol.

    Examples
    --------
    >>> from regimes.config.markets import MarketConfig
    >>> fx = MarketCalendar("fx", MarketConfig(calendar="24x5"))
    >>> stamps = pd.DatetimeIndex(["2024-01-08 21:00", "2024-01-08 22:00"], tz="UTC")
    >>> [str(pd.Timestamp(int(d) * DAY_NS).date())
    ...  for d in trading_day_numbers(stamps.asi8, fx)]  # 17:00 New York starts a day
    ['2024-01-08', '2024-01-09']
    """
    ts_ns = np.asarray(ts_ns, dtype=np.int64)
    if isinstance(calendar, MarketCalendar):
        return calendar.day_numbers(ts_ns)
    if isinstance(calendar, SymbolCalendars):
        return _per_symbol(ts_ns, calendar, symbols)
    if calendar is None:
        return ts_ns // DAY_NS
    unique, inverse = np.unique(ts_ns, return_inverse=True)
    if len(unique) <= _FEW_TIMESTAMPS:
        # The live path: a few timestamps per step, where pandas costs more than the rest.
        zone = ZoneInfo(calendar.timezone)
        offsets = np.array([_offset_ns(value, zone) for value in unique.tolist()], dtype=np.int64)
        return ((unique + offsets) // DAY_NS)[inverse.reshape(-1)]
    local = pd.DatetimeIndex(ts_ns, tz="UTC").tz_convert(calendar.timezone).tz_localize(None)
    return local.as_unit("ns").asi8 // DAY_NS


def _offset_ns(value: int, zone: ZoneInfo) -> int:
    """The zone's UTC offset at UTC nanoseconds ``value``, in nanoseconds."""
    offset = datetime.fromtimestamp(value // 10**9, tz=UTC).astimezone(zone).utcoffset()
    return int(offset.total_seconds()) * 10**9


def _per_symbol(ts_ns: np.ndarray, calendars: SymbolCalendars, symbols) -> np.ndarray:
    if symbols is None or len(symbols) != len(ts_ns):
        raise BadInputError(
            "trading_day_numbers: a model over several markets needs each row's symbol"
        )
    out = np.empty(len(ts_ns), dtype=np.int64)
    groups: dict[int, tuple[object, list[int]]] = {}
    for position, symbol in enumerate(np.asarray(symbols, dtype=object)):
        calendar = calendars.of(symbol)
        groups.setdefault(id(calendar), (calendar, []))[1].append(position)
    for calendar, positions in groups.values():
        out[positions] = trading_day_numbers(ts_ns[positions], calendar)
    return out


def day_starts(days: np.ndarray) -> np.ndarray:
    """Whether each of a symbol's real bars (oldest first) opens a trading day."""
    return np.r_[True, days[1:] != days[:-1]] if len(days) else np.zeros(0, dtype=bool)
