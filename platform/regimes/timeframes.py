"""Timeframes, durations and the trading session.

A bar's ``ts`` is its open time in UTC; a bar is final at ``ts + duration``.
"""

from __future__ import annotations

import re
from datetime import timedelta

from regimes.errors import BadInputError

TIMEFRAMES: tuple[str, ...] = ("1m", "5m", "15m", "1h", "1d")
"""The five timeframes, lowest first."""

TIMEFRAME_DURATION: dict[str, timedelta] = {
    "1m": timedelta(minutes=1),
    "5m": timedelta(minutes=5),
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
}

_DURATION_RE = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w)\s*$")
_UNIT = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def check_timeframe(timeframe: str, *, what: str = "timeframe") -> str:
    """Return ``timeframe`` if it is one of :data:`TIMEFRAMES`, else raise.

    Raises
    ------
    BadInputError
        Naming the value and the allowed ones.
    """
    if timeframe not in TIMEFRAME_DURATION:
        raise BadInputError(
            f"{what}: unknown timeframe {timeframe!r}; expected one of {', '.join(TIMEFRAMES)}"
        )
    return timeframe


def parse_duration(text: str) -> timedelta:
    """Parse ``"90s"``, ``"5m"``, ``"4h"``, ``"2d"`` or ``"1w"`` into a ``timedelta``.

    >>> parse_duration("4h")
    datetime.timedelta(seconds=14400)
    """
    match = _DURATION_RE.match(str(text))
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"expected a positive duration like 5m, 4h or 2d, got {text!r}")
    return timedelta(**{_UNIT[match.group(2)]: int(match.group(1))})


def format_duration(value: timedelta) -> str:
    """Inverse of :func:`parse_duration` for whole units."""
    seconds = int(value.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
