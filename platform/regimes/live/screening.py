"""Refusing bad rows of a batch before the engine steps.

Whole-batch problems (not a DataFrame, a missing column, naive timestamps) raise
:class:`~regimes.errors.BadInputError`. Bad rows (a duplicate or out-of-order bar, a bar
of another timeframe or of another bar time than the batch, NaN/inf or non-positive
prices, an unsafe symbol) are refused one by one, each with its reason: they get no
answer and change no state, and the rest of the batch goes on.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from regimes.errors import BadInputError, UnsafeNameError
from regimes.features.batch import valid_bars
from regimes.features.online import OnlineFeatureBuffer
from regimes.paths import check_symbol

BAR_COLUMNS = ("symbol", "ts", "open", "high", "low", "close", "volume")
REJECTED_COLUMNS = ["row", "symbol", "ts", "reason"]
_NONE_REJECTED = pd.DataFrame(columns=REJECTED_COLUMNS)


def check_columns(bars: pd.DataFrame) -> pd.DataFrame:
    """Structural checks of a batch (whole-batch errors) and a normalised copy."""
    if not isinstance(bars, pd.DataFrame):
        raise BadInputError(f"step: expected a DataFrame of bars, got {type(bars).__name__}")
    missing = [c for c in BAR_COLUMNS if c not in bars.columns]
    if missing:
        raise BadInputError(f"step: bars lack column(s) {missing}; expected {list(BAR_COLUMNS)}")
    ts = pd.DatetimeIndex(bars["ts"])
    if ts.tz is None:
        raise BadInputError("step: ts must be timezone-aware (UTC)")
    frame = bars.reset_index(drop=True).copy(deep=False)
    if str(ts.tz) != "UTC" or bars["ts"].dtype != _UTC_NS:  # already UTC (ns): kept as is
        frame["ts"] = ts.tz_convert("UTC")
    for column in ("open", "high", "low", "close", "volume"):
        if frame[column].dtype.kind not in "fiu":  # a text cell: NaN, refused with its row
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    if "is_gap" not in frame.columns:
        frame["is_gap"] = False
    elif frame["is_gap"].dtype != bool:
        frame["is_gap"] = frame["is_gap"].fillna(False).astype(bool)
    return frame


_UTC_NS = pd.DatetimeTZDtype("ns", "UTC")


def screen(
    frame: pd.DataFrame, timeframe: str, buffer: OnlineFeatureBuffer
) -> tuple[np.ndarray, list[dict], np.ndarray]:
    """Accepted-row mask, a reason for every refused row, and each row's symbol row in the
    engine's state arrays (-1 = not seen yet). Changes no state.

    ``frame`` comes from :func:`check_columns`; ``buffer`` is the engine's feature buffer,
    whose rows every per-symbol array of the engine follows.
    """
    n = len(frame)
    refused = np.zeros(n, dtype=bool)
    reasons: dict[int, str] = {}
    ts_ns = frame["ts"].to_numpy(dtype="datetime64[ns]").astype(np.int64)

    def refuse(mask: np.ndarray, why: str) -> None:
        target = mask & ~refused
        for i in np.flatnonzero(target):
            reasons[int(i)] = why
        refused[target] = True

    refuse(frame["ts"].isna().to_numpy(), "missing ts")
    if "timeframe" in frame.columns:
        other = frame["timeframe"].to_numpy() != timeframe
        refuse(other, f"bar of another timeframe (this engine runs {timeframe})")
    symbols = frame["symbol"].to_numpy()
    rows = buffer.rows_of(symbols)
    for i in np.flatnonzero(rows < 0):  # only symbols not seen yet need the name check
        try:
            check_symbol(symbols[i])
        except UnsafeNameError as exc:
            refuse(np.arange(n) == i, f"unsafe symbol: {exc}")
    if n and (ts_ns == ts_ns[0]).all():
        batch_ts = ts_ns[0]
    else:
        values, counts = np.unique(ts_ns, return_counts=True)
        batch_ts = values[counts == counts.max()][-1] if n else 0
    refuse(
        ts_ns != batch_ts,
        f"ts differs from the batch's bar time {pd.Timestamp(batch_ts, tz='UTC').isoformat()}"
        " (one step is one bar time)",
    )
    refuse(_repeated(frame["symbol"], rows), "symbol appears twice in the batch")
    last = buffer.last_times(symbols, rows)
    refuse(ts_ns == last, "duplicate bar (this bar time was already processed)")
    refuse(ts_ns < last, "out-of-order bar (older than the symbol's last bar)")
    prices = [frame[c].to_numpy(dtype=float) for c in ("open", "high", "low", "close", "volume")]
    gap = frame["is_gap"].to_numpy(dtype=bool)
    refuse(
        ~gap & ~valid_bars(*prices),
        "invalid prices: NaN/inf, non-positive, low > high, open/close outside "
        "[low, high] or negative volume",
    )
    rejected = [
        {"row": i, "symbol": str(symbols[i]), "ts": frame["ts"].iloc[i], "reason": reasons[i]}
        for i in sorted(reasons)
    ]
    return ~refused, rejected, rows


def _repeated(symbols: pd.Series, rows: np.ndarray) -> np.ndarray:
    """Rows whose symbol came earlier in the batch (``duplicated()``, first kept). A
    tracked symbol has one row in the engine's state arrays, so when every symbol is
    tracked and no state row repeats (the usual step), no symbol does either; names are
    compared only otherwise."""
    if len(rows) and (rows >= 0).all() and np.bincount(rows).max() <= 1:
        return np.zeros(len(rows), dtype=bool)
    return symbols.duplicated().to_numpy()


def rejected_frame(rows: list[dict]) -> pd.DataFrame:
    """The refused rows of a step as a frame (row, symbol, ts, reason)."""
    if not rows:
        return _NONE_REJECTED  # shared and read-only by convention: most steps refuse nothing
    return pd.DataFrame(rows, columns=REJECTED_COLUMNS)
