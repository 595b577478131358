"""Artifact and partition paths, and the names that go into them (plan task 1.6).

Symbols, timeframes and model ids become directory names and Delta partition values,
and later arrive from HTTP requests: every one is validated here before it touches a
path. The only layouts are::

    models/timeframe=<tf>/model_id=<id>/
    states/timeframe=<tf>/model_id=<id>/symbol=<sym>/date=YYYY-MM-DD/
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from regimes.errors import UnsafeNameError
from regimes.timeframes import TIMEFRAMES

MAX_NAME_LENGTH = 64
# Letters, digits and . _ - ^ (index tickers such as ^GSPC, class shares such as BRK.B).
# No path separators, no '=' (it separates partition key and value), no whitespace.
_SYMBOL_RE = re.compile(r"^[A-Za-z0-9^][A-Za-z0-9._^-]*$")
_MODEL_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _check_name(value: Any, what: str, pattern: re.Pattern[str], allowed: str) -> str:
    if not isinstance(value, str):
        raise UnsafeNameError(f"{what}: expected a string, got {type(value).__name__}")
    if value == "":
        raise UnsafeNameError(f"{what}: empty name")
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise UnsafeNameError(f"{what} {value!r}: contains control characters")
    if len(value) > MAX_NAME_LENGTH:
        raise UnsafeNameError(
            f"{what} {value[:20]!r}...: {len(value)} characters, at most {MAX_NAME_LENGTH} allowed"
        )
    if "/" in value or "\\" in value:
        raise UnsafeNameError(f"{what} {value!r}: contains a path separator")
    if ".." in value:
        raise UnsafeNameError(f"{what} {value!r}: contains '..'")
    if value.endswith("."):
        raise UnsafeNameError(f"{what} {value!r}: ends with '.'")
    if not pattern.match(value):
        raise UnsafeNameError(f"{what} {value!r}: only {allowed} are allowed")
    return value


def check_symbol(symbol: Any) -> str:
    """Return ``symbol`` if it is safe as a path component and partition value."""
    return _check_name(
        symbol, "symbol", _SYMBOL_RE, "letters, digits and . _ - ^ (not starting with . _ -)"
    )


def check_model_id(model_id: Any) -> str:
    """Return ``model_id`` if it is safe as a path component and partition value."""
    return _check_name(
        model_id, "model_id", _MODEL_ID_RE, "letters, digits and . _ - (starting alphanumeric)"
    )


def check_timeframe_name(timeframe: Any) -> str:
    """Return ``timeframe`` if it is one of the five timeframes."""
    if not isinstance(timeframe, str) or timeframe not in TIMEFRAMES:
        raise UnsafeNameError(
            f"timeframe {timeframe!r}: unknown; expected one of {', '.join(TIMEFRAMES)}"
        )
    return timeframe


def artifact_dir(models_root: str | Path, timeframe: str, model_id: str) -> Path:
    """``<models_root>/timeframe=<tf>/model_id=<id>/``."""
    return (
        Path(models_root)
        / f"timeframe={check_timeframe_name(timeframe)}"
        / f"model_id={check_model_id(model_id)}"
    )


def state_partition_dir(
    states_root: str | Path, timeframe: str, model_id: str, symbol: str, day: date | datetime
) -> Path:
    """``<states_root>/timeframe=<tf>/model_id=<id>/symbol=<sym>/date=YYYY-MM-DD/``.

    As Delta Lake writes it: partition values are Hive-escaped, so the ``^`` of an index
    ticker is ``%5E`` on disk (``symbol=%5EGSPC``); no other allowed character needs it.
    """
    if isinstance(day, datetime):
        if day.tzinfo is None or day.utcoffset() != timedelta(0):
            raise UnsafeNameError(f"date: expected a UTC timestamp or a date, got {day!r}")
        day = day.date()
    if not isinstance(day, date):
        raise UnsafeNameError(f"date: expected a date, got {type(day).__name__}")
    return (
        Path(states_root)
        / f"timeframe={check_timeframe_name(timeframe)}"
        / f"model_id={check_model_id(model_id)}"
        / f"symbol={check_symbol(symbol).replace('^', '%5E')}"
        / f"date={day.isoformat()}"
    )


def inputs_hash(config: Any, data_fingerprint: str, seed: int) -> str:
    """sha256 over the resolved config, the training data's fingerprint and the seed."""
    payload = json.dumps(
        {"config": config, "data": data_fingerprint, "seed": int(seed)},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def make_model_id(timeframe: str, train_end: datetime, digest: str) -> str:
    """A model_id derived from its inputs: ``<tf>-<train end UTC>-<12 hex of digest>``.

    The same timeframe, training-window end and input hash give the same id.

    >>> from datetime import datetime, timezone
    >>> make_model_id("1h", datetime(2024, 3, 1, tzinfo=timezone.utc), "ab" * 32)
    '1h-20240301T0000Z-abababababab'
    """
    check_timeframe_name(timeframe)
    if train_end.tzinfo is None or train_end.utcoffset() != timedelta(0):
        raise UnsafeNameError(f"train_end: expected a UTC timestamp, got {train_end!r}")
    if not re.fullmatch(r"[0-9a-f]{12,}", digest):
        raise UnsafeNameError(f"digest: expected at least 12 lowercase hex digits, got {digest!r}")
    return check_model_id(f"{timeframe}-{train_end:%Y%m%dT%H%M}Z-{digest[:12]}")
